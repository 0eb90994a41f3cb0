//! The differential fuzzer on the model: a correct subject shows no
//! divergence, and each semantic fault switch is found within a bounded
//! number of operations, shrunk, and written as a scenario that fails on
//! that switch and passes on the correct model.

use std::path::Path;
use std::time::Duration;

use shmem_host::model::Faults;
use shmem_host::spec::DeviceSpec;
use shmem_host::vm::fuzz::{FuzzConfig, FuzzReport, Targets, fuzz};
use shmem_host::vm::lists::load_known_defects;
use shmem_host::vm::scenario::{Scenario, SuiteFile};
use shmem_host::vm::{model_target, run_on, scenario_spec};
use shmem_judge::defects::KnownDefect;
use shmem_judge::verdict::{Verdict, judge};

const MAX_OPS: u64 = 4000;

fn spec() -> DeviceSpec {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    SuiteFile::load(&root.join("tests/suite.toml")).unwrap().device.spec()
}

fn run(faults: Faults, out: &Path) -> FuzzReport {
    run_knowing(faults, out, Vec::new())
}

/// The fuzz entries of the shipped known-defects list whose id contains `part`.
fn listed(part: &str) -> Vec<KnownDefect> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    load_known_defects(&root.join("tests/known-defects.toml"))
        .unwrap()
        .into_iter()
        .filter(|d| d.scenario == "fuzz" && d.id.contains(part))
        .collect()
}

/// A fuzz run on a model subject with `faults`, judged by `known` (entries of
/// scenario `fuzz`, taken as applying: the subject is no QEMU build).
fn run_knowing(faults: Faults, out: &Path, known: Vec<KnownDefect>) -> FuzzReport {
    let spec = spec();
    let sockets = tempfile::tempdir().unwrap();
    let mut subject = || model_target(&spec, faults, true, sockets.path());
    let mut oracle = || model_target(&spec, Faults::default(), true, sockets.path());
    let cfg = FuzzConfig {
        seed: 7,
        time: Duration::from_secs(120),
        max_ops: MAX_OPS,
        known,
        shrink_time: Duration::from_secs(60),
        out_dir: out.to_path_buf(),
        progress: false,
    };
    fuzz(&cfg, &mut Targets { subject: &mut subject, oracle: &mut oracle }).unwrap()
}

fn verdict(scn: &Scenario, faults: Faults) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    let mut t = model_target(&scenario_spec(&spec(), scn), faults, scn.init, dir.path()).unwrap();
    judge(run_on(scn, &mut t, false).0, &[]).verdict
}

#[test]
fn a_correct_subject_shows_no_divergence() {
    let out = tempfile::tempdir().unwrap();
    let r = run(Faults::default(), out.path());
    assert!(r.found.is_none(), "{:?}", r.found);
    assert!(r.ops >= MAX_OPS, "stopped after {} operations", r.ops);
    assert!(r.states > 50, "only {} distinct states", r.states);
}

#[test]
fn each_fault_switch_is_found_and_its_scenario_fails_only_on_it() {
    let switches = [
        ("ignore_readonly", Faults { ignore_readonly: true, ..Faults::default() }),
        ("skip_overlap_check", Faults { skip_overlap_check: true, ..Faults::default() }),
        ("keep_fd_after_unmap", Faults { keep_fd_after_unmap: true, ..Faults::default() }),
        ("crash_on_stopped_map", Faults { crash_on_stopped_map: true, ..Faults::default() }),
        ("zero_length_as_overlap", Faults { zero_length_as_overlap: true, ..Faults::default() }),
    ];
    for (name, faults) in switches {
        let out = tempfile::tempdir().unwrap();
        let r = run(faults, out.path());
        let found = r.found.unwrap_or_else(|| panic!("{name}: nothing found in {} operations", r.ops));
        // Shrunk to a handful of operations (2 or 3 when this was written).
        assert!(
            found.ops.len() <= 6 && found.ops.len() <= found.original_len,
            "{name}: {} operations left of {}",
            found.ops.len(),
            found.original_len
        );
        let text = std::fs::read_to_string(&found.scenario).unwrap();
        let scn = Scenario::parse(&found.scenario, &text).unwrap();
        shmem_host::vm::bounds::check(&scn, &spec().regions)
            .unwrap_or_else(|e| panic!("{name}: the written scenario is out of bounds: {e}"));
        assert!(
            matches!(verdict(&scn, Faults::default()), Verdict::Pass),
            "{name}: the found scenario must pass on the correct model:\n{text}"
        );
        assert!(
            matches!(verdict(&scn, faults), Verdict::Fail(_)),
            "{name}: the found scenario must fail on the switch:\n{text}"
        );
        eprintln!(
            "{name}: {} after {} operations, shrunk from {} to {} (minimal: {})",
            found.divergence.kind,
            r.ops,
            found.original_len,
            found.ops.len(),
            found.minimal
        );
    }
}

#[test]
fn a_fixed_stopped_device_crash_is_reported_as_not_seen() {
    let out = tempfile::tempdir().unwrap();
    let known = listed("stopped-device-segfaults");
    assert_eq!(known.len(), 2, "the map and the unmap entries");
    // The correct model refuses requests to a stopped device: the listed crash never shows.
    let r = run_knowing(Faults::default(), out.path(), known);
    assert!(r.found.is_none(), "{:?}", r.found);
    let not_seen: Vec<&str> = r.not_seen.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        not_seen,
        ["fuzz-map-to-stopped-device-segfaults", "fuzz-unmap-to-stopped-device-segfaults"],
        "{:?}",
        r.exercised
    );
}

#[test]
fn a_stale_table_after_reset_stays_known_across_a_refused_map() {
    let out = tempfile::tempdir().unwrap();
    let r = run_knowing(
        Faults { keep_table_after_reset: true, ..Faults::default() },
        out.path(),
        listed("backend-table-stale"),
    );
    assert!(r.found.is_none(), "stopped on {:?}", r.found.map(|f| f.divergence.key()));
    assert!(r.known.values().sum::<u32>() > 0, "the listed entry showed: {:?}", r.exercised);
    assert!(r.not_seen.is_empty());
}

#[test]
fn an_entry_for_another_file_or_operation_does_not_cover_a_divergence() {
    // A guest-read divergence of a file nobody wrote through a read-only
    // mapping is not the listed read-only write: the fuzzer stops on it.
    let out = tempfile::tempdir().unwrap();
    let r = run_knowing(Faults { ignore_readonly: true, ..Faults::default() }, out.path(), listed("stopped-device"));
    let found = r.found.expect("the read-only write is not covered by another entry");
    assert!(["guest-read", "file-read"].contains(&found.divergence.kind.as_str()), "{}", found.divergence.key());
}
