//! The shipped scenarios catch a wrong frontend: on the reference model they
//! all pass, and each of the model's fault switches makes the scenario that
//! covers it fail. Runs the real scenario files over real sockets, no QEMU.

use std::path::Path;

use shmem_host::model::Faults;
use shmem_host::spec::DeviceSpec;
use shmem_host::vm::scenario::{Scenario, SuiteFile};
use shmem_host::vm::{Verdict, judge, model_target, run_on, scenario_spec};

fn suite() -> (DeviceSpec, Vec<Scenario>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let suite = SuiteFile::load(&root.join("tests/suite.toml")).unwrap();
    let spec = suite.device.spec();
    spec.validate().unwrap();
    (spec, Scenario::load_dir(&root.join("tests/scenarios")).unwrap())
}

/// One scenario's verdict on a fresh model with `faults`.
fn verdict_on_model(suite_spec: &DeviceSpec, scn: &Scenario, faults: Faults) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    let mut target = model_target(&scenario_spec(suite_spec, scn), faults, scn.init, dir.path()).unwrap();
    let (res, _) = run_on(scn, &mut target, false);
    judge(res, &scn.name, &[])
}

/// The verdict of every scenario on a model with `faults`.
fn verdicts(faults: Faults) -> Vec<(String, Verdict)> {
    let (spec, scenarios) = suite();
    scenarios.iter().filter(|scn| !scn.qemu_only).map(|scn| (scn.name.clone(), verdict_on_model(&spec, scn, faults))).collect()
}

fn failing(faults: Faults) -> Vec<String> {
    verdicts(faults).into_iter().filter(|(_, v)| !v.ok()).map(|(n, v)| format!("{n}:{}", v.label())).collect()
}

#[test]
fn every_scenario_passes_on_the_correct_model() {
    let bad: Vec<String> = verdicts(Faults::default()).into_iter().filter(|(_, v)| !matches!(v, Verdict::Pass)).map(|(n, v)| format!("{n}: {v:?}")).collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn a_frontend_that_ignores_read_only_fails_ro_basic() {
    let f = failing(Faults { ignore_readonly: true, ..Faults::default() });
    assert!(f.contains(&"ro-basic:FAIL".to_string()), "{f:?}");
}

#[test]
fn a_frontend_that_skips_the_overlap_check_fails_the_error_matrix() {
    let f = failing(Faults { skip_overlap_check: true, ..Faults::default() });
    assert!(f.contains(&"error-matrix:FAIL".to_string()), "{f:?}");
}

#[test]
fn a_frontend_that_keeps_fds_fails_reset_cleanup() {
    let f = failing(Faults { keep_fd_after_unmap: true, ..Faults::default() });
    assert!(f.contains(&"reset-cleanup:FAIL".to_string()), "{f:?}");
}

#[test]
fn the_fault_checks_fail_when_no_fault_is_injected() {
    let (spec, scenarios) = suite();
    let scn = scenarios.iter().find(|s| s.name == "fault-kill-backend").expect("fault-kill-backend.toml");
    // As shipped (the runner kills the model's backend, as it would QEMU's): passes.
    assert!(matches!(verdict_on_model(&spec, scn, Faults::default()), Verdict::Pass));
    // Without the injection the backend still answers: the check must fail.
    let mut healthy = scn.clone();
    healthy.steps.retain(|s| !matches!(s, shmem_host::vm::scenario::Step::Inject { .. }));
    match verdict_on_model(&spec, &healthy, Faults::default()) {
        Verdict::Fail(c) => assert_eq!(c[0].check, "map-after-backend-death-unanswered"),
        other => panic!("{other:?}"),
    }
}
