//! Verdicts against the known-defect lists: signatures (signal, step,
//! reason, kind), builds and accelerators, races, refusals, backend rows.

use shmem_host::vm::lists::load_known_defects;
use shmem_host::vm::steps::probe::rate_upper_bound;
use shmem_judge::check::CheckResult;
use shmem_judge::defects::KnownDefect;
use shmem_judge::listing::{Applies, Listing};
use shmem_judge::outcome::{ErrorKind, Failure};
use shmem_judge::verdict::{Verdict, judge};
use std::path::Path;

fn check(name: &str, passed: bool) -> CheckResult {
    CheckResult::new(name, passed, "")
}

fn defect(check: &str, signature: &[(&str, &str)]) -> KnownDefect {
    KnownDefect {
        id: format!("{check}-defect"),
        scenario: "s".into(),
        check: check.into(),
        qemu: vec!["11.1.3 (Debian 1:11.1.3+ds-1)".into()],
        frontend: Vec::new(),
        unmeasured: Vec::new(),
        accel: vec!["tcg".into()],
        signature: signature.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        rate: None,
        stale_kinds: Vec::new(),
        accel_specific: false,
        evidence: String::new(),
    }
}

fn crash(step: &str, exit: &str) -> CheckResult {
    check("frontend-survives", false).with("exit", exit).with("step", step).with("said", "qemu-system-x86_64: oops")
}

#[test]
fn verdicts_follow_the_known_defects_by_signature() {
    let d = defect("ro", &[("ack", "0")]);
    let listed = [&d];
    assert!(matches!(judge(Ok(vec![check("a", true)]), &[]).verdict, Verdict::Pass));
    assert!(matches!(judge(Ok(vec![check("ro", false).with("ack", "0")]), &listed).verdict, Verdict::KnownFailure(_)));
    // The same check failing with other facts is a failure, with the listing shown.
    match judge(Ok(vec![check("ro", false).with("ack", "7")]), &listed).verdict {
        Verdict::Fail(j) => assert_eq!(j[0].listed.as_ref().map(|l| l.1.as_str()), Some("ack=0")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        judge(Ok(vec![check("ro", false).with("ack", "0"), check("b", false)]), &listed).verdict,
        Verdict::Fail(_)
    ));
    assert!(matches!(judge(Ok(vec![check("ro", false)]), &[]).verdict, Verdict::Fail(_)));
    assert!(matches!(
        judge(Err(Failure { kind: ErrorKind::Io, message: "boom".into() }), &listed).verdict,
        Verdict::Error(_)
    ));
    assert!(!Verdict::UnexpectedPass(vec![]).ok() && !Verdict::Error(String::new()).ok());
}

#[test]
fn a_listed_defect_that_passes_or_never_runs_is_an_unexpected_pass_naming_the_entry() {
    let d = defect("ro", &[("ack", "0")]);
    for checks in [vec![check("ro", true)], vec![check("other", true)]] {
        match judge(Ok(checks), &[&d]).verdict {
            Verdict::UnexpectedPass(m) => assert!(m[0].contains("`ro-defect`") && m[0].contains("drop it"), "{m:?}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_crash_matches_only_its_signal_and_step() {
    let d = defect("frontend-survives", &[("exit", "signal 11 (SIGSEGV)"), ("step", "map-early"), ("said", "oops")]);
    assert!(matches!(
        judge(Ok(vec![crash("map-early", "signal 11 (SIGSEGV)")]), &[&d]).verdict,
        Verdict::KnownFailure(_)
    ));
    // A clean refusal, a guest panic (status 0 under -no-reboot), another
    // signal, another step: all fail, none hides behind the listed crash.
    for (step, exit) in [
        ("map-early", "status 1"),
        ("map-early", "status 0"),
        ("map-early", "signal 6 (SIGABRT)"),
        ("unmap", "signal 11 (SIGSEGV)"),
    ] {
        assert!(matches!(judge(Ok(vec![crash(step, exit)]), &[&d]).verdict, Verdict::Fail(_)), "{step} {exit}");
    }
    // A fixed QEMU survives: frontend-survives passes, the entry must go.
    assert!(matches!(judge(Ok(vec![check("frontend-survives", true)]), &[&d]).verdict, Verdict::UnexpectedPass(_)));
}

#[test]
fn an_intermittent_defect_not_seen_is_a_fix_only_when_a_quarter_of_its_rate_would_have_shown() {
    let mut d = defect("rbc/map", &[("stale_seen", "hole")]);
    d.rate = Some(0.008);
    let passed = |n: u32| check("rbc/map", true).with("n", n).with("stale", 0u64);
    // At a quarter of 0.8 %, 500 trials miss it with probability 37 %: inconclusive, listed as such.
    let j = judge(Ok(vec![passed(500)]), &[&d]);
    assert!(matches!(j.verdict, Verdict::KnownFailure(_)) && j.inconclusive.len() == 1, "{j:?}");
    // 3500 trials miss it with probability below 0.1 %: the defect is gone.
    assert!(matches!(judge(Ok(vec![passed(3500)]), &[&d]).verdict, Verdict::UnexpectedPass(_)));
    assert!(matches!(judge(Ok(vec![passed(3400)]), &[&d]).verdict, Verdict::KnownFailure(_)));
    // Seen: a known failure when it looks as listed.
    assert!(matches!(
        judge(Ok(vec![check("rbc/map", false).with("stale_seen", "hole")]), &[&d]).verdict,
        Verdict::KnownFailure(_)
    ));
    assert!(matches!(
        judge(Ok(vec![check("rbc/map", false).with("stale_seen", "other bytes")]), &[&d]).verdict,
        Verdict::Fail(_)
    ));
    assert!((rate_upper_bound(0, 2000) - 0.001497).abs() < 1e-5, "{}", rate_upper_bound(0, 2000));
    assert!(rate_upper_bound(3, 1000) > 0.003 && rate_upper_bound(3, 1000) < 0.01);
}

#[test]
fn a_defect_applies_only_to_its_build_accelerator_and_scenario() {
    let d = defect("ro", &[("ack", "0")]);
    assert!(d.applies("11.1.3 (Debian 1:11.1.3+ds-1)", "tcg", "s"));
    // Another build of the same upstream version: the entry carries over, measured on its build.
    assert_eq!(
        d.applies_to("11.1.3 (Debian 1:11.1.3+ds-2)", "tcg"),
        Applies::Carried("11.1.3 (Debian 1:11.1.3+ds-1)".into())
    );
    assert!(d.applies("11.1.3 (v11.1.3-dirty)", "tcg", "s"));
    assert!(!d.applies("11.1.4 (Debian 1:11.1.4+ds-1)", "tcg", "s"));
    // Under another accelerator it carries over, unless it is accelerator-specific.
    assert_eq!(
        d.applies_to("11.1.3 (Debian 1:11.1.3+ds-2)", "kvm"),
        Applies::OtherAccel("11.1.3 (Debian 1:11.1.3+ds-1)/tcg".into())
    );
    let mut specific = d.clone();
    specific.accel_specific = true;
    assert_eq!(specific.applies_to("11.1.3 (Debian 1:11.1.3+ds-1)", "kvm"), Applies::Elsewhere);
    assert_eq!(d.applies_to("11.1.4 (Debian 1:11.1.4+ds-1)", "kvm"), Applies::Elsewhere);
    assert!(!d.applies("11.1.3 (Debian 1:11.1.3+ds-1)", "tcg", "other"));
}

#[test]
fn a_known_defects_file_without_a_signature_or_with_a_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.toml");
    let entry = "[[defect]]\nid = \"x\"\nscenario = \"s\"\ncheck = \"c\"\nqemu = [\"11.1.3\"]\naccel = [\"tcg\"]\nevidence = \"e\"\n";
    std::fs::write(&p, format!("{entry}signature = {{}}\n")).unwrap();
    assert!(load_known_defects(&p).unwrap_err().to_string().contains("signature"));
    std::fs::write(&p, entry.replace("qemu = [\"11.1.3\"]", "since = \"11.1.0\"") + "signature = { ack = \"1\" }\n")
        .unwrap();
    assert!(load_known_defects(&p).unwrap_err().to_string().contains("since"));
    std::fs::write(&p, entry.replace("tcg", "hvf") + "signature = { ack = \"1\" }\n").unwrap();
    assert!(load_known_defects(&p).unwrap_err().to_string().contains("hvf"));
}

#[test]
fn a_race_matches_its_stale_kinds_at_any_count() {
    let mut d = defect("rbc/map", &[]);
    d.stale_kinds = vec!["hole".into()];
    let seen =
        |kinds: &str, k: u32, n: u32| check("rbc/map", false).with("stale_kinds", kinds).with("stale", k).with("n", n);
    // How often a race shows is a fact of the machine: any count is the listed race.
    for k in [1, 15, 80, 900] {
        assert!(
            matches!(judge(Ok(vec![seen("hole", k, 1000)]), &[&d]).verdict, Verdict::KnownFailure(_)),
            "{k} of 1000"
        );
    }
    // Another stale kind is another bug.
    match judge(Ok(vec![seen("an earlier mapping | hole", 15, 1000)]), &[&d]).verdict {
        Verdict::Fail(j) => assert!(j[0].worse.as_deref().is_some_and(|w| w.contains("an earlier mapping")), "{j:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_race_not_seen_is_a_fix_only_when_the_wire_order_says_commits_first() {
    let mut d = defect("rbc/map", &[]);
    d.stale_kinds = vec!["hole".into()];
    let clean = |acked: u32, first: u32| {
        check("rbc/map", true).with("stale", 0u32).with("n", 100_000u32).with("acked", acked).with("table_first", first)
    };
    // None in a hundred thousand, yet it still replies first: inconclusive, never a fix.
    let j = judge(Ok(vec![clean(100_000, 3)]), &[&d]);
    assert!(matches!(j.verdict, Verdict::KnownFailure(_)) && j.inconclusive.len() == 1, "{:?}", j.verdict);
    assert!(
        j.inconclusive[0].check.evidence.contains("a count is a fact of this machine"),
        "{}",
        j.inconclusive[0].check.evidence
    );
    // Every acked request committed first: fixed, UNEXPECTED-PASS.
    assert!(matches!(judge(Ok(vec![clean(500, 500)]), &[&d]).verdict, Verdict::UnexpectedPass(_)));
    // Too few acked requests to read the order: inconclusive.
    let j = judge(Ok(vec![clean(10, 10)]), &[&d]);
    assert!(
        j.inconclusive.len() == 1 && j.inconclusive[0].check.evidence.contains("fewer than the 50"),
        "{:?}",
        j.inconclusive
    );
}

#[test]
fn a_refusal_entry_matches_only_its_stated_reason() {
    let d = defect("map-ro/ack", &[("ack", "1"), ("said", "Permission denied")]);
    let refused = |said: &str| check("map-ro/ack", false).with("ack", 1u64).with("said", said);
    assert!(matches!(
        judge(Ok(vec![refused("qemu: mmap: Permission denied")]), &[&d]).verdict,
        Verdict::KnownFailure(_)
    ));
    assert!(
        matches!(judge(Ok(vec![refused("qemu: no free slot")]), &[&d]).verdict, Verdict::Fail(_)),
        "another reason is another bug"
    );
}

#[test]
fn backend_entries_apply_to_their_exact_version_and_qemu_row_entries_to_their_qemu() {
    let mut model_row = defect("map-valid", &[("problem", "not page aligned")]);
    model_row.qemu = vec!["vhost-device-media 0.1.1".into()];
    model_row.accel = vec!["model".into()];
    let mut qemu_row = defect("driver-steps", &[("errno", "22")]);
    qemu_row.qemu = vec!["vhost-device-media 0.1.1".into()];
    qemu_row.frontend = vec!["11.1.3 (Debian 1:11.1.3+ds-1)".into()];
    let all = [model_row, qemu_row];
    let applicable =
        |backend: &str, qemu: &str, accel: &str| Listing::of_backend(&all, backend, qemu, accel, "s").applicable.len();
    assert_eq!(applicable("vhost-device-media 0.1.1", "", "model"), 1);
    // Another version, or the same one with a change, is another backend.
    assert_eq!(applicable("vhost-device-media 0.2.0", "", "model"), 0);
    assert_eq!(applicable("vhost-device-media 0.1.1 + page-rounded memfds", "", "model"), 0);
    assert_eq!(applicable("vhost-device-media 0.1.1", "11.1.3 (Debian 1:11.1.3+ds-1)", "tcg"), 1);
    // QEMU's row carries over to another build of the same QEMU, not to another QEMU.
    let carried = Listing::of_backend(&all, "vhost-device-media 0.1.1", "11.1.3 (Debian 1:11.1.3+ds-2)", "tcg", "s");
    assert_eq!(carried.applicable[0].1.as_deref(), Some("11.1.3 (Debian 1:11.1.3+ds-1)"));
    let other = Listing::of_backend(&all, "vhost-device-media 0.1.1", "11.2.0", "tcg", "s");
    assert_eq!((other.applicable.len(), other.elsewhere.len()), (0, 2));
    assert_eq!(applicable("vhost-device-media 0.2.0", "11.1.3 (Debian 1:11.1.3+ds-1)", "tcg"), 0);
}

#[test]
fn the_backend_list_loads_and_a_qemu_row_entry_without_its_qemu_is_refused() {
    let accels = ["model", "tcg", "kvm"];
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/backend-defects.toml");
    let all = shmem_host::vm::lists::load_defect_list(&list, &accels).expect("the shipped list loads");
    assert!(all.iter().filter(|d| d.accel.iter().any(|a| a != "model")).all(|d| !d.frontend.is_empty()));
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("list.toml");
    let entry = "[[defect]]\nid = \"x\"\nscenario = \"media-stream\"\ncheck = \"frames\"\nbackend = [\"b 1\"]\naccel = [\"tcg\"]\nsignature = { frames = \"0\" }\nevidence = \"\"\n";
    std::fs::write(&bad, entry).expect("write");
    let e = shmem_host::vm::lists::load_defect_list(&bad, &accels).expect_err("no frontend named");
    assert!(e.to_string().contains("`frontend`"), "{e}");
}

#[test]
fn a_blessed_pair_whose_figures_were_copied_applies_as_measured_elsewhere() {
    let mut d = defect("rbc/map", &[("stale_seen", "hole")]);
    d.qemu.push("11.2.0".into());
    d.unmeasured = vec!["11.2.0/tcg".into()];
    assert_eq!(d.applies_to("11.2.0", "tcg"), Applies::Carried("11.1.3 (Debian 1:11.1.3+ds-1)/tcg".into()));
    assert_eq!(d.applies_to("11.1.3 (Debian 1:11.1.3+ds-1)", "tcg"), Applies::Exact);
}

#[test]
fn a_listed_crash_that_stopped_showing_is_named_beside_another_failure() {
    // A fixed QEMU refuses the map to a stopped device, but says no word: the
    // reason check fails (unlisted), and the listed crash is gone all the same.
    let crash_entry =
        defect("frontend-survives", &[("exit", "signal 11 (SIGSEGV)"), ("step", "map-to-stopped-device")]);
    let checks = vec![
        check("map-to-stopped-device/ack", true),
        check("map-to-stopped-device/reason", false),
        check("frontend-survives", true),
    ];
    let j = judge(Ok(checks), &[&crash_entry]);
    assert!(matches!(j.verdict, Verdict::Fail(_)), "{:?}", j.verdict);
    assert!(
        j.not_shown.iter().any(|g| g.contains("`frontend-survives-defect`") && g.contains("did not show")),
        "{:?}",
        j.not_shown
    );
}
