//! The differential fuzzer on the model: a correct subject shows no
//! divergence, and each semantic fault switch is found within a bounded
//! number of operations, shrunk, and written as a scenario that fails on
//! that switch and passes on the correct model.

use std::path::Path;
use std::time::Duration;

use shmem_host::model::Faults;
use shmem_host::spec::DeviceSpec;
use shmem_host::vm::fuzz::{FuzzConfig, FuzzReport, Targets, fuzz};
use shmem_host::vm::scenario::{Scenario, SuiteFile};
use shmem_host::vm::{Verdict, judge, model_target, run_on, scenario_spec};

const MAX_OPS: u64 = 4000;

fn spec() -> DeviceSpec {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    SuiteFile::load(&root.join("tests/suite.toml")).unwrap().device.spec()
}

fn run(faults: Faults, out: &Path) -> FuzzReport {
    let spec = spec();
    let sockets = tempfile::tempdir().unwrap();
    let mut subject = || model_target(&spec, faults, true, sockets.path());
    let mut oracle = || model_target(&spec, Faults::default(), true, sockets.path());
    let cfg = FuzzConfig {
        seed: 7,
        time: Duration::from_secs(120),
        max_ops: MAX_OPS,
        known: Vec::new(),
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
    ];
    for (name, faults) in switches {
        let out = tempfile::tempdir().unwrap();
        let r = run(faults, out.path());
        let found = r.found.unwrap_or_else(|| panic!("{name}: nothing found in {} operations", r.ops));
        // Shrunk to a handful of operations (2 or 3 when this was written).
        assert!(found.ops.len() <= 6 && found.ops.len() <= found.original_len, "{name}: {} operations left of {}", found.ops.len(), found.original_len);
        let text = std::fs::read_to_string(&found.scenario).unwrap();
        let scn = Scenario::parse(&found.scenario, &text).unwrap();
        shmem_host::vm::bounds::check(&scn, &spec().regions).unwrap_or_else(|e| panic!("{name}: the written scenario is out of bounds: {e}"));
        assert!(matches!(verdict(&scn, Faults::default()), Verdict::Pass), "{name}: the found scenario must pass on the correct model:\n{text}");
        assert!(matches!(verdict(&scn, faults), Verdict::Fail(_)), "{name}: the found scenario must fail on the switch:\n{text}");
        eprintln!("{name}: {} after {} operations, shrunk from {} to {} (minimal: {})", found.divergence.kind, r.ops, found.original_len, found.ops.len(), found.minimal);
    }
}
