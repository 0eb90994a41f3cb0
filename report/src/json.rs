//! `--json`: the suite's report, a comparison's, or a run that could not
//! start, as one JSON document in the format of `docs/report.schema.json`
//! (`format` says its version). Formatting only.

use serde_json::{Value, json};

use super::differences;
use shmem_host::vm::SuiteReport;
use shmem_judge::check::CheckResult;
use shmem_judge::compare::Comparison;
use shmem_judge::verdict::{Judged, Verdict};

/// The version of the JSON report's format (`docs/report.schema.json`):
/// raised when a field is removed or changes meaning, not when one is added.
pub const FORMAT: u32 = 1;

fn checks_json(c: &[CheckResult]) -> Value {
    Value::Array(
        c.iter()
            .map(|c| json!({"check": c.check, "passed": c.passed, "evidence": c.evidence, "facts": c.facts}))
            .collect(),
    )
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
    let mut doc = suite_json(r);
    doc["format"] = json!(FORMAT);
    doc["kind"] = json!("suite");
    serde_json::to_string_pretty(&doc).unwrap_or_default()
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

/// `--json` for a `--compare` run: both runs and what changed.
pub fn json_compare(a: &SuiteReport, b: &SuiteReport, c: &Comparison) -> String {
    let doc = json!({"format": FORMAT, "kind": "compare", "a": suite_json(a), "b": suite_json(b), "compare": {"lines": c.lines, "fixed": c.fixed, "regressed": c.regressed, "unmasked": c.unmasked, "changed": c.changed}, "ok": c.regressed == 0});
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// `--json` for a run that could not start (no QEMU boot, bad artefacts).
pub fn json_error(error: &str) -> String {
    serde_json::to_string_pretty(&json!({"format": FORMAT, "kind": "error", "ok": false, "error": error}))
        .unwrap_or_default()
}
