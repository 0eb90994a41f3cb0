//! Reports of a suite run: the human table, `--json`, `--junit`, and the
//! benchmark summary. Formatting only; verdicts are made in `vm`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{CheckResult, ScenarioReport, SuiteReport, Verdict};

/// The human report: one line per scenario, what failed, a summary line.
pub fn print_report(r: &SuiteReport) {
    println!(
        "QEMU {} ({}), accel {:?}{}",
        r.qemu.version_text,
        r.qemu.path.display(),
        r.accel,
        r.accel_note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default()
    );
    println!("{:<26} {:<16} {:<12} {:>8} {:>8}", "scenario", "qemu", "model", "qemu-t", "model-t");
    for s in &r.scenarios {
        println!("{:<26} {:<16} {:<12} {:>7.2}s {:>7.2}s", s.name, s.qemu.label(), s.model.label(), s.qemu_time.as_secs_f64(), s.model_time.as_secs_f64());
        for (target, v) in [("qemu", &s.qemu), ("model", &s.model)] {
            match v {
                Verdict::Fail(c) | Verdict::KnownFailure(c) => {
                    for c in c {
                        println!("    {target}: {}/{} failed: {}", s.name, c.check, c.evidence);
                    }
                }
                Verdict::UnexpectedPass(c) => {
                    println!("    {target}: listed known defects did not show: {} (update tests/known-defects.toml)", c.join(", "))
                }
                Verdict::Error(e) => println!("    {target}: error: {e}"),
                Verdict::Pass | Verdict::Skipped(_) => {}
            }
        }
        for d in differences(s) {
            println!("    differs: {d}");
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
    println!("{known} known failures (listed defects of this QEMU)");
    println!("vm-test: {} passed, {fail} failed, {skipped} skipped", pass + known);
}

/// Checks whose outcome differs between QEMU and the model.
pub fn differences(s: &ScenarioReport) -> Vec<String> {
    s.qemu_checks
        .iter()
        .filter_map(|q| {
            let m = s.model_checks.iter().find(|m| m.check == q.check)?;
            (m.passed != q.passed).then(|| {
                format!("{}: QEMU {} / model {}", q.check, if q.passed { "passed" } else { "failed" }, if m.passed { "passed" } else { "failed" })
            })
        })
        .collect()
}

fn checks_json(c: &[CheckResult]) -> Value {
    Value::Array(c.iter().map(|c| json!({"check": c.check, "passed": c.passed, "evidence": c.evidence})).collect())
}

fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::Error(e) | Verdict::Skipped(e) => json!({"verdict": v.label(), "why": e}),
        Verdict::UnexpectedPass(c) => json!({"verdict": v.label(), "checks": c}),
        _ => json!({"verdict": v.label()}),
    }
}

/// `--json`: every scenario with both verdicts, all checks, and the logs of failing ones.
pub fn json_report(r: &SuiteReport) -> String {
    let scenarios: Vec<Value> = r
        .scenarios
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "description": s.description,
                "qemu": verdict_json(&s.qemu),
                "model": verdict_json(&s.model),
                "qemu_seconds": s.qemu_time.as_secs_f64(),
                "model_seconds": s.model_time.as_secs_f64(),
                "qemu_checks": checks_json(&s.qemu_checks),
                "model_checks": checks_json(&s.model_checks),
                "differences": differences(s),
                "qemu_log": s.qemu_log,
            })
        })
        .collect();
    let doc = json!({
        "qemu": {"path": r.qemu.path.display().to_string(), "version": r.qemu.version_text},
        "accel": format!("{:?}", r.accel),
        "accel_note": r.accel_note,
        "ok": r.ok(),
        "boot_to_agent_ready_s": r.boot_time.as_secs_f64(),
        "suite_s": r.suite_time.as_secs_f64(),
        "scenarios": scenarios,
    });
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
        for (target, v, checks, t) in [("qemu", &s.qemu, &s.qemu_checks, s.qemu_time), ("model", &s.model, &s.model_checks, s.model_time)] {
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
                    Verdict::UnexpectedPass(c) => format!("known defects did not show: {}", c.join(", ")),
                    _ => v.label().to_string(),
                };
                let log = if target == "qemu" { s.qemu_log.clone().unwrap_or_default() } else { String::new() };
                cases.push_str(&format!("    <failure message=\"{}\">{}{}</failure>\n", xml(&msg), xml(&detail), xml(&log)));
            } else if let Verdict::Skipped(why) = v {
                cases.push_str(&format!("    <skipped message=\"{}\"/>\n", xml(why)));
            } else if matches!(v, Verdict::KnownFailure(_)) {
                cases.push_str(&format!("    <system-out>KNOWN-FAIL (listed defect)\n{}</system-out>\n", xml(&detail)));
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

fn lat(v: &[Duration]) -> Value {
    json!({"n": v.len(), "p50_ms": percentile(v, 50.0), "p99_ms": percentile(v, 99.0)})
}

/// The benchmark summary (one JSON document), measured in this one run.
pub fn bench_report(r: &SuiteReport) -> String {
    let m = &r.measurements;
    let bw = m.bandwidth.map(|(shm, ram)| json!({"mapping_mib_s": shm, "guest_ram_mib_s": ram, "ratio": shm / ram}));
    let doc = json!({
        "bench": "vm-suite",
        "qemu": r.qemu.version_text,
        "accel": format!("{:?}", r.accel),
        "boot_to_agent_ready_s": r.boot_time.as_secs_f64(),
        "suite_s": r.suite_time.as_secs_f64(),
        "scenarios": r.scenarios.len(),
        "map_ack": {"qemu": lat(&m.qemu_map), "model": lat(&m.model_map)},
        "unmap_ack": {"qemu": lat(&m.qemu_unmap), "model": lat(&m.model_unmap)},
        "ack_to_mem_table": {"qemu": lat(&m.qemu_table_lag), "model": lat(&m.model_table_lag)},
        "copy_bandwidth": bw,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
