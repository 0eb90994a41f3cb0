//! Reports of a suite run: the human table, `--json`, `--junit`, `--compare`
//! and the benchmark summary. Formatting only: verdicts and comparisons are
//! made by the judge (`shmem_judge`). Strings are the edge here.

use std::time::Duration;

use serde_json::{Value, json};

use super::bench::BootAlone;
use shmem_judge::check::CheckResult;
use super::guest::CopyRounds;
use super::suite::{Measurements, SuiteReport};
use shmem_judge::compare::Comparison;
use shmem_judge::scenario::ScenarioReport;
use shmem_judge::verdict::{Judged, Verdict};
use shmem_judge::words::target_lines;

/// How many of the relay's last messages the human report shows under a
/// failing QEMU row (the JSON has them all, the log the last 16).
const TEXT_TAIL: usize = 6;

/// The human report: one line per scenario, what failed, a summary line.
pub fn print_report(r: &SuiteReport) {
    println!(
        "QEMU {} at {}{}, accel {}{}; known defects: {}",
        r.qemu.build,
        r.qemu.path.display(),
        r.qemu_note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default(),
        r.accel.name(),
        r.accel_note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default(),
        r.known_defects
    );
    println!("{:<28} {:<16} {:<12} {:>8} {:>8}", "scenario", "qemu", "model", "qemu-t", "model-t");
    for s in &r.scenarios {
        println!("{:<28} {:<16} {:<12} {:>7.2}s {:>7.2}s", s.name, s.qemu.label(), s.model.label(), s.qemu_time.as_secs_f64(), s.model_time.as_secs_f64());
        let qemu_gone: Vec<String> = s.not_shown[0].iter().chain(&s.qemu_unseen).cloned().collect();
        for (target, v, inc, gone) in [("qemu", &s.qemu, s.qemu_inconclusive.as_slice(), &qemu_gone), ("model", &s.model, &[], &s.not_shown[1])] {
            for line in target_lines(v, inc, gone) {
                println!("    {target}: {}", line.replace('\n', "\n        "));
            }
        }
        for d in differences(s) {
            println!("    differs: {d}");
        }
        if let Some(w) = s.qemu_wire.as_ref().filter(|_| !s.qemu.ok()) {
            println!("    qemu: the relay's last {TEXT_TAIL} of {} messages:", w.messages.len() + w.left_out);
            for line in w.tail(TEXT_TAIL).lines() {
                println!("        {line}");
            }
        }
    }
    let (mut pass, mut known, mut fail, mut skipped) = (0, 0, 0, 0);
    for v in r.scenarios.iter().flat_map(|s| [&s.qemu, &s.model]) {
        match v {
            Verdict::Pass => pass += 1,
            Verdict::KnownFailure(_) => known += 1,
            Verdict::Skipped(_) => skipped += 1,
            _ => fail += 1,
        }
    }
    println!("boot to agent ready {:.2}s, whole suite {:.2}s", r.boot_time.as_secs_f64(), r.suite_time.as_secs_f64());
    if let Some(p) = &r.kept_logs {
        println!("logs kept in {}", p.display());
    }
    println!("{known} known failures (listed defects of this QEMU build, matched by signature)");
    println!("vm-test: {} passed, {fail} failed, {skipped} skipped", pass + known);
}

/// Checks whose outcome differs between QEMU and the model.
pub fn differences(s: &ScenarioReport) -> Vec<String> {
    s.qemu_checks
        .iter()
        .filter_map(|q| {
            let m = s.model_checks.iter().find(|m| m.check == q.check)?;
            (m.passed != q.passed).then(|| format!("{}: QEMU {} / model {}", q.check, passed_word(q.passed), passed_word(m.passed)))
        })
        .collect()
}

fn passed_word(p: bool) -> &'static str {
    if p { "passed" } else { "failed" }
}

fn checks_json(c: &[CheckResult]) -> Value {
    Value::Array(c.iter().map(|c| json!({"check": c.check, "passed": c.passed, "evidence": c.evidence, "facts": c.facts})).collect())
}

fn judged_json(j: &[Judged]) -> Value {
    j.iter()
        .map(|j| {
            json!({
                "check": j.check.check,
                "known_defect": j.defect,
                "measured_on": j.measured_on,
                "listed_but_differs": j.listed.as_ref().map(|(id, sig)| json!({"id": id, "signature": sig, "worse_than_listed": j.worse})),
                "matches_entry_listed_elsewhere": j.listed_elsewhere.as_ref().map(|(id, on)| json!({"id": id, "listed_for": on})),
            })
        })
        .collect()
}

/// A verdict as JSON, with the inconclusive entries and the entries that
/// did not show behind a FAIL (both always present, maybe empty).
fn verdict_json(v: &Verdict, inconclusive: &[Judged], not_shown: &[String]) -> Value {
    let mut out = match v {
        Verdict::Error(e) | Verdict::Skipped(e) => json!({"verdict": v.label(), "why": e}),
        Verdict::UnexpectedPass(c) => json!({"verdict": v.label(), "drop": c}),
        Verdict::Fail(j) | Verdict::KnownFailure(j) => json!({"verdict": v.label(), "failed": judged_json(j)}),
        Verdict::Pass => json!({"verdict": v.label()}),
    };
    out["inconclusive"] = judged_json(inconclusive);
    out["not_shown"] = json!(not_shown);
    out
}

/// `--json`: every scenario with both verdicts, all checks, and the logs of failing ones.
pub fn json_report(r: &SuiteReport) -> String {
    serde_json::to_string_pretty(&suite_json(r)).unwrap_or_default()
}

fn suite_json(r: &SuiteReport) -> Value {
    let scenarios: Vec<Value> = r
        .scenarios
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "description": s.description,
                "qemu": verdict_json(&s.qemu, &s.qemu_inconclusive, &s.not_shown[0]),
                "qemu_unseen_other_accel": s.qemu_unseen,
                "model": verdict_json(&s.model, &[], &s.not_shown[1]),
                "qemu_seconds": s.qemu_time.as_secs_f64(),
                "model_seconds": s.model_time.as_secs_f64(),
                "qemu_checks": checks_json(&s.qemu_checks),
                "model_checks": checks_json(&s.model_checks),
                "differences": differences(s),
                "qemu_log": s.qemu_log,
                "qemu_wire": s.qemu_wire,
            })
        })
        .collect();
    json!({
        "qemu": {"path": r.qemu.path.display().to_string(), "version": r.qemu.version_text, "build": r.qemu.build, "note": r.qemu_note},
        "accel": r.accel.name(),
        "accel_note": r.accel_note,
        "known_defects": r.known_defects,
        "ok": r.ok(),
        "boot_to_agent_ready_s": r.boot_time.as_secs_f64(),
        "suite_s": r.suite_time.as_secs_f64(),
        "scenarios": scenarios,
    })
}

/// The comparison as printed after both runs.
pub fn print_comparison(a: &SuiteReport, b: &SuiteReport, c: &Comparison) {
    println!("compare: A = QEMU {} ({}), B = QEMU {} ({})", a.qemu.build, a.qemu.path.display(), b.qemu.build, b.qemu.path.display());
    for l in &c.lines {
        println!("  {l}");
    }
    println!("compare: {} fixed, {} regressed, {} unmasked (B reached checks A never did), {} with changed evidence", c.fixed, c.regressed, c.unmasked, c.changed);
}

/// `--json` for a `--compare` run: both runs and what changed.
pub fn json_compare(a: &SuiteReport, b: &SuiteReport, c: &Comparison) -> String {
    let doc = json!({"a": suite_json(a), "b": suite_json(b), "compare": {"lines": c.lines, "fixed": c.fixed, "regressed": c.regressed, "unmasked": c.unmasked, "changed": c.changed}, "ok": c.regressed == 0});
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => format!("&#{};", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// `--junit`: one test case per scenario and target; known failures pass
/// with their evidence in system-out, so CI stays green only when it should.
pub fn junit_report(r: &SuiteReport) -> String {
    let mut cases = String::new();
    let mut failures = 0;
    for s in &r.scenarios {
        for (target, v, checks, t, inc, gone) in [("qemu", &s.qemu, &s.qemu_checks, s.qemu_time, s.qemu_inconclusive.as_slice(), &s.not_shown[0]), ("model", &s.model, &s.model_checks, s.model_time, &[], &s.not_shown[1])] {
            let detail: String = checks.iter().map(|c| format!("{} {}: {}\n", if c.passed { "PASS" } else { "FAIL" }, c.check, c.evidence)).collect();
            cases.push_str(&format!(
                "  <testcase classname=\"vm-test.{target}\" name=\"{}\" time=\"{:.3}\">\n",
                xml(&s.name),
                t.as_secs_f64()
            ));
            if !v.ok() {
                failures += 1;
                let msg = match v {
                    Verdict::Error(e) => e.clone(),
                    _ => format!("{}: {}", v.label(), target_lines(v, inc, gone).join("; ")),
                };
                let log = if target == "qemu" { s.qemu_log.clone().unwrap_or_default() } else { String::new() };
                cases.push_str(&format!("    <failure message=\"{}\">{}{}</failure>\n", xml(&msg), xml(&detail), xml(&log)));
            } else if let Verdict::Skipped(why) = v {
                cases.push_str(&format!("    <skipped message=\"{}\"/>\n", xml(why)));
            } else if matches!(v, Verdict::KnownFailure(_)) {
                let known = target_lines(v, inc, gone).join("\n");
                cases.push_str(&format!("    <system-out>KNOWN-FAIL (listed defects, matched by signature)\n{}\n{}</system-out>\n", xml(&known), xml(&detail)));
            }
            cases.push_str("  </testcase>\n");
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"vm-test\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n{cases}</testsuite>\n",
        r.scenarios.len() * 2,
        r.suite_time.as_secs_f64()
    )
}

/// `--json` for a run that could not start (no QEMU boot, bad artefacts).
pub fn json_error(error: &str) -> String {
    serde_json::to_string_pretty(&json!({"ok": false, "error": error, "scenarios": []})).unwrap_or_default()
}

/// `--junit` for a run that could not start: one failing test case.
pub fn junit_error(error: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"vm-test\" tests=\"1\" failures=\"1\">\n  <testcase classname=\"vm-test\" name=\"run\">\n    <failure message=\"{}\"/>\n  </testcase>\n</testsuite>\n",
        xml(error)
    )
}

fn percentile(v: &[Duration], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    s.sort_by(f64::total_cmp);
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    Some(s[idx.min(s.len() - 1)])
}

/// n, min, median and max of some measurements (null when there are none).
fn spread(v: impl IntoIterator<Item = f64>) -> Value {
    let mut s: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return Value::Null;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    json!({"n": n, "min": s[0], "median": median, "max": s[n - 1]})
}

/// A figure of one run, from its QEMU and model samples.
type RunFigure<'a> = &'a dyn Fn(&[Duration], &[Duration]) -> Option<f64>;

/// Per run: the p50 and p99 of a latency on QEMU and the model, and their ratio in that run.
fn latency(runs: &[SuiteReport], pick: impl Fn(&Measurements) -> (&[Duration], &[Duration])) -> Value {
    let per = |f: RunFigure<'_>| spread(runs.iter().filter_map(|r| {
        let (q, m) = pick(&r.measurements);
        f(q, m)
    }));
    json!({
        "qemu_p50_ms": per(&|q, _| percentile(q, 50.0)),
        "qemu_p99_ms": per(&|q, _| percentile(q, 99.0)),
        "model_p50_ms": per(&|_, m| percentile(m, 50.0)),
        "qemu_over_model_p50": per(&|q, m| Some(percentile(q, 50.0)? / percentile(m, 50.0)?)),
    })
}

/// The benchmark summary of `runs` (each a whole suite run that passed), as
/// one JSON document: every figure as n/min/median/max over the runs, and
/// ratios only from figures measured in the same run (bandwidth: the same
/// round of the same boot). Boot to agent ready is measured alone
/// (`boots_alone`) and, sharing the cores, inside the suite; copy bandwidth
/// on the boots alone.
///
/// The bench's JSON: every figure that could be measured, and
/// `not_measured`, what could not and why (a failed run, a boot alone that
/// failed, bandwidth on a clock too coarse). `None` when nothing at all was measured.
pub fn bench_report(runs: &[SuiteReport], boots_alone: &[BootAlone], not_measured: &[String], verdicts_failed: &[String]) -> Option<String> {
    if runs.is_empty() && boots_alone.is_empty() {
        return None;
    }
    let rounds: Vec<&CopyRounds> = boots_alone.iter().filter_map(|b| b.bandwidth.as_ref().ok()).collect();
    let unfit: Vec<String> = boots_alone.iter().filter_map(|b| b.bandwidth.as_ref().err().map(ToString::to_string)).collect();
    let bw = if rounds.is_empty() {
        unfit.first().map(|why| json!({ "not_measured": why }))
    } else {
        Some(json!({
            "clock": rounds.iter().map(|c| c.clock.to_string()).collect::<Vec<_>>(),
            "bytes_per_copy_run": rounds[0].bytes,
            "shortest_copy_ticks": rounds.iter().map(|c| c.shortest()).min(),
            "mapping_mib_s": spread(rounds.iter().flat_map(|c| c.shm_mib_s())),
            "guest_ram_mib_s": spread(rounds.iter().flat_map(|c| c.ram_mib_s())),
            "ratio_mapping_over_ram": spread(rounds.iter().flat_map(|c| c.ratios())),
            "boots_not_measured": unfit,
        }))
    };
    let first = runs.first();
    let doc = json!({
        "bench": "vm-suite",
        "runs": runs.len(),
        "qemu": first.map(|r| r.qemu.version_text.clone()),
        "accel": first.map(|r| r.accel.name()),
        "scenarios": first.map(|r| r.scenarios.len()),
        "boot_to_agent_ready_s": spread(boots_alone.iter().map(|b| b.boot_time.as_secs_f64())),
        "boot_to_agent_ready_in_suite_s": spread(runs.iter().flat_map(|r| r.measurements.boot_times.iter().map(Duration::as_secs_f64))),
        "suite_s": spread(runs.iter().map(|r| r.suite_time.as_secs_f64())),
        "map_ack": latency(runs, |m| (&m.qemu_map, &m.model_map)),
        "unmap_ack": latency(runs, |m| (&m.qemu_unmap, &m.model_unmap)),
        "ack_to_mem_table": latency(runs, |m| (&m.qemu_table_lag, &m.model_table_lag)),
        "copy_bandwidth": bw,
        "not_measured": not_measured,
        "runs_whose_verdicts_failed": verdicts_failed,
    });
    Some(serde_json::to_string_pretty(&doc).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::BootAlone;

    #[test]
    fn a_bench_whose_clock_was_too_coarse_still_reports_its_boots() {
        let coarse = || BootAlone { boot_time: Duration::from_millis(900), bandwidth: Err(crate::vm::bench::Unfit::Coarse { shortest: 20_000_000, uncertainty: 0.01502, clock: "2.0 GHz".into(), error: 0.01502 }) };
        let json = bench_report(&[], &[coarse(), coarse()], &["run 1: could not run".into()], &["run 2: verdicts failed: x".into()]).expect("boot figures were measured");
        let v: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(v["boot_to_agent_ready_s"]["n"], 2, "{v}");
        assert!(v["copy_bandwidth"]["not_measured"].as_str().is_some_and(|w| w.contains("1.502")), "{v}");
        assert_eq!(v["not_measured"][0], "run 1: could not run");
        assert_eq!(v["runs_whose_verdicts_failed"][0], "run 2: verdicts failed: x");
        assert!(bench_report(&[], &[], &[], &[]).is_none(), "nothing measured, nothing reported");
    }
}
