//! The VM runner's pure parts: scenario parsing errors with file:line:col,
//! verdicts against the known-defects list, and the QEMU probe refusing
//! things that are not a suitable QEMU.

use std::path::Path;

use shmem_host::vm::qemu::probe;
use shmem_host::vm::scenario::{KnownDefect, Scenario, Step, load_known_defects};
use shmem_host::vm::{CheckResult, Verdict, judge};

#[test]
fn an_unknown_key_is_refused_with_file_line_and_column() {
    let text = "description = \"x\"\n\n[[step]]\ndo = \"map\"\nshmid = 0\nfile = \"f\"\nshm_offset = 0\nlen = \"4K\"\nrw = true\ncolour = 3\n";
    let err = Scenario::parse(Path::new("tests/scenarios/bad.toml"), text).unwrap_err().to_string();
    assert!(err.starts_with("tests/scenarios/bad.toml:3:1:") || err.starts_with("tests/scenarios/bad.toml:10:"), "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn a_bad_size_is_refused_naming_the_value_and_line() {
    let text = "description = \"x\"\n[[step]]\ndo = \"file\"\nname = \"f\"\nsize = \"12Q\"\n";
    let err = Scenario::parse(Path::new("s.toml"), text).unwrap_err().to_string();
    // serde reports errors inside a tagged step at the step's [[step]] line.
    assert!(err.starts_with("s.toml:2:1:"), "{err}");
    assert!(err.contains("12Q"), "{err}");
}

#[test]
fn the_shipped_scenarios_and_defects_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let all = Scenario::load_dir(&root.join("tests/scenarios")).unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    for want in ["ro-basic", "rw-basic", "two-regions", "unmap-remap", "error-matrix", "reset-cleanup", "mem-table", "reply-before-commit"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let defects = load_known_defects(&root.join("tests/known-defects.toml")).unwrap();
    for d in &defects {
        let scn = all.iter().find(|s| s.name == d.scenario).expect("defect names a scenario");
        // Checks are named by `check`, or implicit: the ack (and reason) of
        // map/unmap step N, and whether the frontend survived.
        let step_n = |prefix: &str| d.check.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok());
        let implicit = d.check == "frontend-survives"
            || step_n("ack-step-").or(step_n("reason-step-")).is_some_and(|n| {
                matches!(scn.steps.get(n.wrapping_sub(1)), Some(Step::Map { .. } | Step::Unmap { .. }))
            });
        assert!(implicit || scn.steps.iter().filter_map(Step::check).any(|c| c == d.check), "defect names no check of its scenario: {d:?}");
    }
}

fn check(name: &str, passed: bool) -> CheckResult {
    CheckResult { check: name.into(), passed, evidence: String::new() }
}

fn defect(check: &str) -> KnownDefect {
    KnownDefect { since: "11.1.0".into(), fixed_in: Some("11.2.0".into()), scenario: "s".into(), check: check.into(), evidence: String::new() }
}

#[test]
fn verdicts_follow_the_known_defects_list() {
    let d = defect("ro");
    let listed = [&d];
    assert!(matches!(judge(Ok(vec![check("a", true)]), "s", &listed), Verdict::Pass));
    assert!(matches!(judge(Ok(vec![check("ro", false)]), "s", &listed), Verdict::KnownFailure(_)));
    assert!(matches!(judge(Ok(vec![check("ro", true)]), "s", &listed), Verdict::UnexpectedPass(_)));
    assert!(matches!(judge(Ok(vec![check("ro", false), check("b", false)]), "s", &listed), Verdict::Fail(_)));
    assert!(matches!(judge(Ok(vec![check("ro", false)]), "s", &[]), Verdict::Fail(_)));
    assert!(matches!(judge(Err("boom".into()), "s", &listed), Verdict::Error(_)));
    assert!(!Verdict::UnexpectedPass(vec![]).ok() && !Verdict::Error(String::new()).ok());
}

#[test]
fn a_defect_applies_only_to_its_version_range() {
    let d = defect("ro");
    assert!(d.applies((11, 1, 3), "s", "ro"));
    assert!(!d.applies((11, 2, 0), "s", "ro"));
    assert!(!d.applies((11, 0, 9), "s", "ro"));
    assert!(!d.applies((11, 1, 3), "other", "ro"));
}

#[test]
fn the_probe_refuses_a_path_that_is_not_a_qemu() {
    let err = probe(Path::new("/bin/true")).unwrap_err();
    assert!(err.contains("is not a QEMU"), "{err}");
    let err = probe(Path::new("/nonexistent/qemu")).unwrap_err();
    assert!(err.contains("cannot be run"), "{err}");
}

#[test]
fn the_probe_refuses_an_old_qemu_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("qemu-system-x86_64");
    std::fs::write(&fake, "#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)'\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let err = probe(&fake).unwrap_err();
    assert!(err.contains("7.2.15") && err.contains(">= 11.1.0"), "{err}");
}
