//! The VM runner's pure parts: scenario parsing errors with file:line:col,
//! step labels, verdicts against the known defects' signatures, and the
//! QEMU probe refusing things that are not a suitable QEMU.

use std::path::Path;

use shmem_host::vm::qemu::probe;
use shmem_host::vm::bounds;
use shmem_host::vm::lists::load_known_defects;
use shmem_judge::defects::KnownDefect;
use shmem_host::vm::steps::probe::rate_upper_bound;
use shmem_host::vm::scenario::{RESERVED_CHECKS, Scenario, Step};
use shmem_judge::listing::{Applies, Listing};
use shmem_judge::check::CheckResult;
use shmem_judge::outcome::{ErrorKind, Failure};
use shmem_judge::verdict::{Verdict, judge};

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
    for d in defects.iter().filter(|d| d.scenario != "fuzz") {
        let scn = all.iter().find(|s| s.name == d.scenario).expect("defect names a scenario");
        // A defect names a step's check, a map/unmap label's ack or reason,
        // or a check the runner adds to every scenario.
        let named = scn.steps.iter().zip(&scn.labels).any(|(s, l)| s.produced_checks(l).contains(&d.check))
            || RESERVED_CHECKS.contains(&d.check.as_str());
        assert!(named, "defect names no check of its scenario: {d:?}");
    }
}

#[test]
fn the_fuzzers_known_divergences_name_kinds_it_records() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let kinds = ["map/ack", "map/reason", "unmap/ack", "unmap/reason", "guest-read", "file-read", "mem-table", "released", "alive", "frontend-survives"];
    for d in load_known_defects(&root.join("tests/known-defects.toml")).unwrap().iter().filter(|d| d.scenario == "fuzz") {
        assert!(kinds.contains(&d.check.as_str()), "{d:?}");
    }
}

#[test]
fn labels_follow_content_not_position() {
    let text = |extra: &str| {
        format!(
            "description = \"x\"\n{extra}[[step]]\ndo = \"file\"\nname = \"f\"\nsize = \"4K\"\n[[step]]\ndo = \"map\"\nshmid = 0\nfile = \"f\"\nshm_offset = 0\nlen = \"4K\"\nrw = true\n[[step]]\ndo = \"map\"\ncheck = \"second\"\nshmid = 0\nfile = \"f\"\nshm_offset = 0\nlen = \"4K\"\nrw = true\nack = 1\n"
        )
    };
    let a = Scenario::parse(Path::new("a.toml"), &text("")).unwrap();
    let b = Scenario::parse(Path::new("b.toml"), &text("[[step]]\ndo = \"guest-reset\"\n")).unwrap();
    assert_eq!(a.labels, ["file", "map 0:0x0+0x1000", "second"]);
    // Inserting a step renames no other step's checks.
    assert_eq!(b.labels[1..], a.labels[..]);
}

#[test]
fn probe_scale_multiplies_the_probes_iterations_and_nothing_else() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("tests/scenarios/reply-before-commit.toml");
    let shipped = Scenario::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut scaled = shipped.clone();
    shmem_host::vm::bounds::scale_probes(&mut scaled, 10).unwrap();
    let iterations = |s: &Scenario| -> Vec<u32> {
        s.steps.iter().filter_map(|st| if let Step::ProbeReplyBeforeCommit { iterations, .. } = st { Some(*iterations) } else { None }).collect()
    };
    assert!(!iterations(&shipped).is_empty());
    assert_eq!(iterations(&scaled), iterations(&shipped).iter().map(|n| n * 10).collect::<Vec<_>>());
    assert_eq!(scaled.labels, shipped.labels);
}

#[test]
fn probe_scale_lengthens_a_media_churn_within_its_bound() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("tests/scenarios/media-churn-page-rounded.toml");
    let shipped = Scenario::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let n = shipped.media.and_then(|m| m.churn).expect("a churn");
    let mut scaled = shipped.clone();
    shmem_host::vm::bounds::scale_probes(&mut scaled, 43).unwrap();
    assert_eq!(scaled.media.and_then(|m| m.churn), Some(n * 43));
    let mut past = shipped;
    let err = shmem_host::vm::bounds::scale_probes(&mut past, 100_000).unwrap_err().to_string();
    assert!(err.contains("media-churn-page-rounded.toml") && err.contains("at most 100000"), "{err}");
}

#[test]
fn a_check_name_used_twice_or_reserved_is_refused() {
    let twice = "description = \"x\"\n[[step]]\ndo = \"expect-alive\"\ncheck = \"a\"\n[[step]]\ndo = \"expect-alive\"\ncheck = \"a\"\n";
    let err = Scenario::parse(Path::new("t.toml"), twice).unwrap_err().to_string();
    assert!(err.contains("step 2") && err.contains("used twice"), "{err}");
    let reserved = "description = \"x\"\n[[step]]\ndo = \"expect-alive\"\ncheck = \"frontend-survives\"\n";
    let err = Scenario::parse(Path::new("t.toml"), reserved).unwrap_err().to_string();
    assert!(err.contains("reserved"), "{err}");
}

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
    assert!(matches!(judge(Ok(vec![check("ro", false).with("ack", "0"), check("b", false)]), &listed).verdict, Verdict::Fail(_)));
    assert!(matches!(judge(Ok(vec![check("ro", false)]), &[]).verdict, Verdict::Fail(_)));
    assert!(matches!(judge(Err(Failure { kind: ErrorKind::Io, message: "boom".into() }), &listed).verdict, Verdict::Error(_)));
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
    assert!(matches!(judge(Ok(vec![crash("map-early", "signal 11 (SIGSEGV)")]), &[&d]).verdict, Verdict::KnownFailure(_)));
    // A clean refusal, a guest panic (status 0 under -no-reboot), another
    // signal, another step: all fail, none hides behind the listed crash.
    for (step, exit) in [("map-early", "status 1"), ("map-early", "status 0"), ("map-early", "signal 6 (SIGABRT)"), ("unmap", "signal 11 (SIGSEGV)")] {
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
    assert!(matches!(judge(Ok(vec![check("rbc/map", false).with("stale_seen", "hole")]), &[&d]).verdict, Verdict::KnownFailure(_)));
    assert!(matches!(judge(Ok(vec![check("rbc/map", false).with("stale_seen", "other bytes")]), &[&d]).verdict, Verdict::Fail(_)));
    assert!((rate_upper_bound(0, 2000) - 0.001497).abs() < 1e-5, "{}", rate_upper_bound(0, 2000));
    assert!(rate_upper_bound(3, 1000) > 0.003 && rate_upper_bound(3, 1000) < 0.01);
}

#[test]
fn a_defect_applies_only_to_its_build_accelerator_and_scenario() {
    let d = defect("ro", &[("ack", "0")]);
    assert!(d.applies("11.1.3 (Debian 1:11.1.3+ds-1)", "tcg", "s"));
    // Another build of the same upstream version: the entry carries over, measured on its build.
    assert_eq!(d.applies_to("11.1.3 (Debian 1:11.1.3+ds-2)", "tcg"), Applies::Carried("11.1.3 (Debian 1:11.1.3+ds-1)".into()));
    assert!(d.applies("11.1.3 (v11.1.3-dirty)", "tcg", "s"));
    assert!(!d.applies("11.1.4 (Debian 1:11.1.4+ds-1)", "tcg", "s"));
    // Under another accelerator it carries over, unless it is accelerator-specific.
    assert_eq!(d.applies_to("11.1.3 (Debian 1:11.1.3+ds-2)", "kvm"), Applies::OtherAccel("11.1.3 (Debian 1:11.1.3+ds-1)/tcg".into()));
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
    std::fs::write(&p, entry.replace("qemu = [\"11.1.3\"]", "since = \"11.1.0\"") + "signature = { ack = \"1\" }\n").unwrap();
    assert!(load_known_defects(&p).unwrap_err().to_string().contains("since"));
    std::fs::write(&p, entry.replace("tcg", "hvf") + "signature = { ack = \"1\" }\n").unwrap();
    assert!(load_known_defects(&p).unwrap_err().to_string().contains("hvf"));
}

#[test]
fn the_probe_refuses_a_path_that_is_not_a_qemu() {
    let err = probe(Path::new("/bin/true")).unwrap_err().to_string();
    assert!(err.contains("is not a QEMU"), "{err}");
    let err = probe(Path::new("/nonexistent/qemu")).unwrap_err().to_string();
    assert!(err.contains("cannot be run"), "{err}");
}

#[test]
fn the_probe_refuses_an_old_qemu_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("qemu-system-x86_64");
    std::fs::write(&fake, "#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)'\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let err = probe(&fake).unwrap_err().to_string();
    assert!(err.contains("7.2.15") && err.contains(">= 11.1.0"), "{err}");
}

/// The suite's device, and a scenario file's text with one more step.
fn suite_regions() -> Vec<u64> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    shmem_host::vm::scenario::SuiteFile::load(&root.join("tests/suite.toml")).unwrap().device.spec().regions
}

#[test]
fn every_shipped_scenario_stays_inside_its_bounds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for s in Scenario::load_dir(&root.join("tests/scenarios")).unwrap() {
        let regions = s.device.as_ref().map_or_else(suite_regions, |d| d.spec().regions);
        bounds::check(&s, &regions).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_value_past_its_bound_is_refused_naming_file_line_and_limit() {
    let head = "description = \"x\"\n[[step]]\ndo = \"file\"\nname = \"f\"\nsize = \"64K\"\n";
    let refused = |step: &str| {
        let s = Scenario::parse(Path::new("big.toml"), &format!("{head}\n[[step]]\n{step}")).expect("parses");
        bounds::check(&s, &suite_regions()).expect_err(step).to_string()
    };
    let err = refused("do = \"expect-guest\"\ncheck = \"c\"\nshmid = 0\noffset = 0\nlen = \"0x10000000000\"\nseed = 1\n");
    assert!(err.starts_with("big.toml:7:1:") && err.contains("0x100000 bytes"), "{err}");
    let err = refused("do = \"fill\"\nfile = \"f\"\nseed = 1\noffset = \"0xffffffffffffffff\"\nlen = 2\n");
    assert!(err.starts_with("big.toml:7:1:") && err.contains("not inside file"), "{err}");
    let err = refused("do = \"guest-write\"\nshmid = 1\noffset = 0\nlen = 8\nseed = 1\n");
    assert!(err.contains("shmid 1 is no region"), "{err}");
    let err = refused("do = \"file\"\nname = \"g\"\nsize = \"0x10000000000\"\n");
    assert!(err.contains("at most 0x100000000"), "{err}");
    let err = refused("do = \"map-many\"\ncheck = \"m\"\nshmid = 0\nfile = \"f\"\ncount = 4294967295\nlen = \"4K\"\n");
    assert!(err.contains("at most 4096 maps"), "{err}");
    let err = refused("do = \"map\"\nshmid = 0\nfile = \"f\"\nshm_offset = 0\nlen = \"4K\"\nrw = true\nack = 1\nreason = \"\"\n");
    assert!(err.contains("would match anything"), "{err}");
    let err = refused("do = \"expect-file\"\ncheck = \"c\"\nfile = \"nope\"\noffset = 0\nlen = 8\nseed = 1\n");
    assert!(err.contains("no earlier `file` step creates \"nope\""), "{err}");
}

#[test]
fn a_probe_scale_past_the_cap_is_refused_naming_the_option_and_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("tests/scenarios/reply-before-commit.toml");
    let mut s = Scenario::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let err = bounds::scale_probes(&mut s, u32::MAX).unwrap_err().to_string();
    assert!(err.contains("reply-before-commit.toml:") && err.contains("--probe-scale 4294967295") && err.contains("at most 1000000"), "{err}");
}

#[test]
fn a_race_matches_its_stale_kinds_at_any_count() {
    let mut d = defect("rbc/map", &[]);
    d.stale_kinds = vec!["hole".into()];
    let seen = |kinds: &str, k: u32, n: u32| check("rbc/map", false).with("stale_kinds", kinds).with("stale", k).with("n", n);
    // How often a race shows is a fact of the machine: any count is the listed race.
    for k in [1, 15, 80, 900] {
        assert!(matches!(judge(Ok(vec![seen("hole", k, 1000)]), &[&d]).verdict, Verdict::KnownFailure(_)), "{k} of 1000");
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
    let clean = |acked: u32, first: u32| check("rbc/map", true).with("stale", 0u32).with("n", 100_000u32).with("acked", acked).with("table_first", first);
    // None in a hundred thousand, yet it still replies first: inconclusive, never a fix.
    let j = judge(Ok(vec![clean(100_000, 3)]), &[&d]);
    assert!(matches!(j.verdict, Verdict::KnownFailure(_)) && j.inconclusive.len() == 1, "{:?}", j.verdict);
    assert!(j.inconclusive[0].check.evidence.contains("a count is a fact of this machine"), "{}", j.inconclusive[0].check.evidence);
    // Every acked request committed first: fixed, UNEXPECTED-PASS.
    assert!(matches!(judge(Ok(vec![clean(500, 500)]), &[&d]).verdict, Verdict::UnexpectedPass(_)));
    // Too few acked requests to read the order: inconclusive.
    let j = judge(Ok(vec![clean(10, 10)]), &[&d]);
    assert!(j.inconclusive.len() == 1 && j.inconclusive[0].check.evidence.contains("fewer than the 50"), "{:?}", j.inconclusive);
}

#[test]
fn a_refusal_entry_matches_only_its_stated_reason() {
    let d = defect("map-ro/ack", &[("ack", "1"), ("said", "Permission denied")]);
    let refused = |said: &str| check("map-ro/ack", false).with("ack", 1u64).with("said", said);
    assert!(matches!(judge(Ok(vec![refused("qemu: mmap: Permission denied")]), &[&d]).verdict, Verdict::KnownFailure(_)));
    assert!(matches!(judge(Ok(vec![refused("qemu: no free slot")]), &[&d]).verdict, Verdict::Fail(_)), "another reason is another bug");
}

#[test]
fn a_media_table_is_refused_where_it_cannot_run_naming_the_line() {
    let media = "[media]\nvirtio_id = 45\nbuffers = 4\nframes = 3\n";
    let ok = format!("description = \"m\"\nown_boot = true\n{media}");
    let scn = Scenario::parse(Path::new("m.toml"), &ok).unwrap();
    assert_eq!(scn.media.map(|m| (m.virtio_id, m.buffers, m.frames)), Some((45, 4, 3)));
    let step = "[[step]]\ndo = \"file\"\nname = \"f\"\nsize = \"4K\"\n";
    for (text, want) in [
        (format!("description = \"m\"\n{media}"), "m.toml:2:1: `[media]` needs `own_boot = true`"),
        (format!("description = \"m\"\nown_boot = true\n{media}{step}"), "m.toml:3:1: `[media]` runs a session of its own"),
        (format!("description = \"m\"\nown_boot = true\n{}", media.replace("frames = 3", "frames = 0")), "m.toml:3:1: `frames` is 1 to 1000"),
        (format!("description = \"m\"\nown_boot = true\n{}", media.replace("frames = 3", "frames = 1001")), "m.toml:3:1: `frames` is 1 to 1000"),
        (format!("description = \"m\"\nown_boot = true\n{}", media.replace("buffers = 4", "buffers = 4000000000")), "m.toml:3:1: `buffers` is 1 to 32"),
        (format!("description = \"m\"\nown_boot = true\n{media}churn = 0\n"), "m.toml:3:1: `churn` is a number of MMAP/MUNMAP cycles, 1 to 100000"),
        (format!("description = \"m\"\nown_boot = true\n{media}churn = 100001\n"), "m.toml:3:1: `churn`"),
        (format!("description = \"m\"\nown_boot = true\n{media}refuse_map = 2\nchurn = 5\n"), "m.toml:3:1: `churn`, `refuse_map`, `ack_delay_ms`, `reset_mid_stream` and `close_channel` are sessions of their own"),
        (format!("description = \"m\"\nown_boot = true\n{media}reset_mid_stream = true\nclose_channel = true\n"), "m.toml:3:1: `churn`, `refuse_map`"),
        (format!("description = \"m\"\nown_boot = true\n{}close_channel = true\n", media.replace("frames = 3", "frames = 1")), "m.toml:3:1: `reset_mid_stream` and `close_channel` act after the first frame"),
        (format!("description = \"m\"\nown_boot = true\n{media}ack_delay_ms = 0\n"), "m.toml:3:1: `ack_delay_ms` is 1 to 2000"),
        ("description = \"m\"\n".to_string(), "m.toml:1:1: no `[[step]]`"),
        (format!("description = \"m\"\nown_boot = true\n{media}build = \"patched\"\n"), "m.toml:"),
    ] {
        let err = Scenario::parse(Path::new("m.toml"), &text).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err}");
    }
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
    let applicable = |backend: &str, qemu: &str, accel: &str| Listing::of_backend(&all, backend, qemu, accel, "s").applicable.len();
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
fn a_program_that_stalls_on_version_is_refused_within_the_probe_timeout() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let prog = dir.path().join("stalls");
    std::fs::write(&prog, "#!/bin/sh\nsleep 600\n").expect("write");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let started = std::time::Instant::now();
    let p = prog.clone();
    let backend = std::thread::spawn(move || shmem_host::bounded::version_line(&p.display().to_string()));
    let qemu = probe(&prog).expect_err("a QEMU that never answers is unusable");
    let backend = backend.join().expect("no panic").expect_err("a backend that never answers has no version");
    let bound = shmem_host::bounded::PROBE_TIMEOUT + std::time::Duration::from_secs(3);
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    assert!(qemu.to_string().contains("gave no answer within"), "{qemu}");
    assert!(backend.contains("did not end within"), "{backend}");
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
    let crash_entry = defect("frontend-survives", &[("exit", "signal 11 (SIGSEGV)"), ("step", "map-to-stopped-device")]);
    let checks = vec![check("map-to-stopped-device/ack", true), check("map-to-stopped-device/reason", false), check("frontend-survives", true)];
    let j = judge(Ok(checks), &[&crash_entry]);
    assert!(matches!(j.verdict, Verdict::Fail(_)), "{:?}", j.verdict);
    assert!(j.not_shown.iter().any(|g| g.contains("`frontend-survives-defect`") && g.contains("did not show")), "{:?}", j.not_shown);
}

#[test]
fn development_builds_and_release_candidates_are_parsed_and_named() {
    use shmem_host::vm::qemu::development_kind;
    use shmem_host::vm::scenario::parse_version;
    assert_eq!(parse_version("11.2.0-rc1"), Some((11, 2, 0)));
    assert_eq!(parse_version("11.1.50"), Some((11, 1, 50)));
    assert_eq!(development_kind("11.1.50 (v11.1.0-611-g1a2b3c4d)").as_deref(), Some("a development build after 11.1.0 (v11.1.0-611-g1a2b3c4d)"));
    assert_eq!(development_kind("11.2.0-rc1").as_deref(), Some("release candidate 1 of 11.2.0"));
    assert_eq!(development_kind("11.1.91 (v11.2.0-rc1)").as_deref(), Some("a release candidate of 11.2.0 (v11.2.0-rc1)"));
    assert_eq!(development_kind("11.1.3 (Debian 1:11.1.3+ds-1)"), None);
    assert_eq!(development_kind("11.1.3"), None);
}
