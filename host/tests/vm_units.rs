//! The VM runner's pure parts: scenario parsing errors with file:line:col,
//! step labels, verdicts against the known defects' signatures, and the
//! QEMU probe refusing things that are not a suitable QEMU.

use std::path::Path;

use shmem_host::vm::bounds;
use shmem_host::vm::lists::load_known_defects;
use shmem_host::vm::qemu::probe;
use shmem_host::vm::scenario::{RESERVED_CHECKS, Scenario, Step};

#[test]
fn an_unknown_key_is_refused_with_file_line_and_column() {
    let text = "description = \"x\"\n\n[[step]]\ndo = \"map\"\nshmid = 0\nfile = \"f\"\nshm_offset = 0\nlen = \"4K\"\nrw = true\ncolour = 3\n";
    let err = Scenario::parse(Path::new("tests/scenarios/bad.toml"), text).unwrap_err().to_string();
    assert!(
        err.starts_with("tests/scenarios/bad.toml:3:1:") || err.starts_with("tests/scenarios/bad.toml:10:"),
        "{err}"
    );
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
    for want in [
        "ro-basic",
        "rw-basic",
        "two-regions",
        "unmap-remap",
        "error-matrix",
        "reset-cleanup",
        "mem-table",
        "reply-before-commit",
    ] {
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
    let kinds = [
        "map/ack",
        "map/reason",
        "unmap/ack",
        "unmap/reason",
        "guest-read",
        "file-read",
        "mem-table",
        "released",
        "alive",
        "frontend-survives",
    ];
    for d in load_known_defects(&root.join("tests/known-defects.toml")).unwrap().iter().filter(|d| d.scenario == "fuzz")
    {
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
        s.steps
            .iter()
            .filter_map(
                |st| if let Step::ProbeReplyBeforeCommit { iterations, .. } = st { Some(*iterations) } else { None },
            )
            .collect()
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
    let err =
        refused("do = \"expect-guest\"\ncheck = \"c\"\nshmid = 0\noffset = 0\nlen = \"0x10000000000\"\nseed = 1\n");
    assert!(err.starts_with("big.toml:7:1:") && err.contains("0x100000 bytes"), "{err}");
    let err = refused("do = \"fill\"\nfile = \"f\"\nseed = 1\noffset = \"0xffffffffffffffff\"\nlen = 2\n");
    assert!(err.starts_with("big.toml:7:1:") && err.contains("not inside file"), "{err}");
    let err = refused("do = \"guest-write\"\nshmid = 1\noffset = 0\nlen = 8\nseed = 1\n");
    assert!(err.contains("shmid 1 is no region"), "{err}");
    let err = refused("do = \"file\"\nname = \"g\"\nsize = \"0x10000000000\"\n");
    assert!(err.contains("at most 0x100000000"), "{err}");
    let err = refused("do = \"map-many\"\ncheck = \"m\"\nshmid = 0\nfile = \"f\"\ncount = 4294967295\nlen = \"4K\"\n");
    assert!(err.contains("at most 4096 maps"), "{err}");
    let err = refused(
        "do = \"map\"\nshmid = 0\nfile = \"f\"\nshm_offset = 0\nlen = \"4K\"\nrw = true\nack = 1\nreason = \"\"\n",
    );
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
    assert!(
        err.contains("reply-before-commit.toml:")
            && err.contains("--probe-scale 4294967295")
            && err.contains("at most 1000000"),
        "{err}"
    );
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
        (
            format!("description = \"m\"\nown_boot = true\n{media}{step}"),
            "m.toml:3:1: `[media]` runs a session of its own",
        ),
        (
            format!("description = \"m\"\nown_boot = true\n{}", media.replace("frames = 3", "frames = 0")),
            "m.toml:3:1: `frames` is 1 to 1000",
        ),
        (
            format!("description = \"m\"\nown_boot = true\n{}", media.replace("frames = 3", "frames = 1001")),
            "m.toml:3:1: `frames` is 1 to 1000",
        ),
        (
            format!("description = \"m\"\nown_boot = true\n{}", media.replace("buffers = 4", "buffers = 4000000000")),
            "m.toml:3:1: `buffers` is 1 to 32",
        ),
        (
            format!("description = \"m\"\nown_boot = true\n{media}churn = 0\n"),
            "m.toml:3:1: `churn` is a number of MMAP/MUNMAP cycles, 1 to 100000",
        ),
        (format!("description = \"m\"\nown_boot = true\n{media}churn = 100001\n"), "m.toml:3:1: `churn`"),
        (
            format!("description = \"m\"\nown_boot = true\n{media}refuse_map = 2\nchurn = 5\n"),
            "m.toml:3:1: `churn`, `refuse_map`, `ack_delay_ms`, `reset_mid_stream` and `close_channel` are sessions of their own",
        ),
        (
            format!("description = \"m\"\nown_boot = true\n{media}reset_mid_stream = true\nclose_channel = true\n"),
            "m.toml:3:1: `churn`, `refuse_map`",
        ),
        (
            format!(
                "description = \"m\"\nown_boot = true\n{}close_channel = true\n",
                media.replace("frames = 3", "frames = 1")
            ),
            "m.toml:3:1: `reset_mid_stream` and `close_channel` act after the first frame",
        ),
        (
            format!("description = \"m\"\nown_boot = true\n{media}ack_delay_ms = 0\n"),
            "m.toml:3:1: `ack_delay_ms` is 1 to 2000",
        ),
        ("description = \"m\"\n".to_string(), "m.toml:1:1: no `[[step]]`"),
        (format!("description = \"m\"\nown_boot = true\n{media}build = \"patched\"\n"), "m.toml:"),
    ] {
        let err = Scenario::parse(Path::new("m.toml"), &text).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err}");
    }
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
fn development_builds_and_release_candidates_are_parsed_and_named() {
    use shmem_host::vm::qemu::development_kind;
    use shmem_host::vm::scenario::parse_version;
    assert_eq!(parse_version("11.2.0-rc1"), Some((11, 2, 0)));
    assert_eq!(parse_version("11.1.50"), Some((11, 1, 50)));
    assert_eq!(
        development_kind("11.1.50 (v11.1.0-611-g1a2b3c4d)").as_deref(),
        Some("a development build after 11.1.0 (v11.1.0-611-g1a2b3c4d)")
    );
    assert_eq!(development_kind("11.2.0-rc1").as_deref(), Some("release candidate 1 of 11.2.0"));
    assert_eq!(
        development_kind("11.1.91 (v11.2.0-rc1)").as_deref(),
        Some("a release candidate of 11.2.0 (v11.2.0-rc1)")
    );
    assert_eq!(development_kind("11.1.3 (Debian 1:11.1.3+ds-1)"), None);
    assert_eq!(development_kind("11.1.3"), None);
}

#[test]
fn the_examples_load_as_what_they_show() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("examples/scenarios/minimal-scenario.toml");
    let scn = Scenario::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(scn.name, "minimal-scenario");
    let entry = load_known_defects(&root.join("examples/known-defect.toml")).unwrap();
    let listed = load_known_defects(&root.join("tests/known-defects.toml")).unwrap();
    let same = listed.iter().find(|d| d.id == entry[0].id).expect("the example is a listed entry");
    assert_eq!((&same.signature, &same.check, &same.qemu), (&entry[0].signature, &entry[0].check, &entry[0].qemu));
}
