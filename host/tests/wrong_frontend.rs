//! The shipped scenarios catch a wrong frontend: on the reference model they
//! all pass, and each of the model's fault switches makes the scenario that
//! covers it fail. Runs the real scenario files over real sockets, no QEMU.

use std::path::Path;

use shmem_host::model::Faults;
use shmem_host::spec::DeviceSpec;
use shmem_host::vm::scenario::{Scenario, SuiteFile};
use shmem_host::vm::{model_target, run_on, scenario_spec};
use shmem_judge::verdict::{Verdict, judge};

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
    judge(res, &[]).verdict
}

/// The verdict of every scenario on a model with `faults`.
fn verdicts(faults: Faults) -> Vec<(String, Verdict)> {
    let (spec, scenarios) = suite();
    scenarios
        .iter()
        .filter(|scn| !scn.qemu_only)
        .map(|scn| (scn.name.clone(), verdict_on_model(&spec, scn, faults)))
        .collect()
}

fn failing(faults: Faults) -> Vec<String> {
    verdicts(faults).into_iter().filter(|(_, v)| !v.ok()).map(|(n, v)| format!("{n}:{}", v.label())).collect()
}

#[test]
fn every_scenario_passes_on_the_correct_model() {
    let bad: Vec<String> = verdicts(Faults::default())
        .into_iter()
        .filter(|(_, v)| !matches!(v, Verdict::Pass))
        .map(|(n, v)| format!("{n}: {v:?}"))
        .collect();
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
fn a_frontend_that_crashes_on_an_early_map_fails_the_hazards_naming_the_step() {
    let (spec, scenarios) = suite();
    for name in ["hazard-map-before-driver-ok", "hazard-map-after-reset"] {
        let scn = scenarios.iter().find(|s| s.name == name).unwrap();
        assert!(matches!(verdict_on_model(&spec, scn, Faults::default()), Verdict::Pass), "{name}");
        match verdict_on_model(&spec, scn, Faults { crash_on_stopped_map: true, ..Faults::default() }) {
            Verdict::Fail(j) => {
                let c = &j[0].check;
                assert_eq!(c.check, "frontend-survives", "{name}: {j:?}");
                assert_eq!(
                    c.facts.get("step").map(ToString::to_string).as_deref(),
                    Some("map-to-stopped-device"),
                    "{name}: {c:?}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn the_hang_check_fails_when_the_guest_answers() {
    let (spec, scenarios) = suite();
    let scn = scenarios.iter().find(|s| s.name == "fault-hang-agent").expect("fault-hang-agent.toml");
    // Without the injection the guest answers: the check must fail.
    let mut healthy = scn.clone();
    let keep: Vec<bool> =
        healthy.steps.iter().map(|s| !matches!(s, shmem_host::vm::scenario::Step::Inject { .. })).collect();
    let mut k = keep.iter();
    healthy.steps.retain(|_| *k.next().unwrap());
    let mut k = keep.iter();
    healthy.labels.retain(|_| *k.next().unwrap());
    match verdict_on_model(&spec, &healthy, Faults::default()) {
        Verdict::Fail(j) => assert_eq!(j[0].check.check, "hung-agent-detected"),
        other => panic!("{other:?}"),
    }
}

/// A shipped probe scenario with fewer iterations (the model is fast, its
/// faults are not intermittent).
fn short_probe(name: &str) -> (DeviceSpec, Scenario) {
    let (spec, scenarios) = suite();
    let mut scn = scenarios.into_iter().find(|s| s.name == name).expect(name);
    for s in &mut scn.steps {
        if let shmem_host::vm::scenario::Step::ProbeReplyBeforeCommit { iterations, .. } = s {
            *iterations = 50;
        }
    }
    (spec, scn)
}

fn failed_checks(v: Verdict) -> Vec<String> {
    match v {
        Verdict::Fail(j) => j
            .into_iter()
            .map(|j| {
                format!(
                    "{}={}",
                    j.check.check,
                    j.check
                        .facts
                        .get("stale_seen")
                        .or(j.check.facts.get("deadlock"))
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            })
            .collect(),
        other => panic!("expected FAIL, got {other:?}"),
    }
}

#[test]
fn a_frontend_that_replies_before_it_commits_fails_the_probe_in_every_direction() {
    let (spec, scn) = short_probe("reply-before-commit");
    let f = failed_checks(verdict_on_model(&spec, &scn, Faults { reply_before_commit: true, ..Faults::default() }));
    for want in [
        "rbc-rw/map=hole",
        "rbc-rw/unmap=the unmapped file's bytes",
        "rbc-rw/write=lost: the write did not reach the file",
        "rbc-ro/map=hole",
        "rbc-ro/unmap=the unmapped file's bytes",
    ] {
        assert!(f.iter().any(|c| c == want), "{want} not in {f:?}");
    }
}

#[test]
fn a_frontend_that_commits_before_it_replies_deadlocks_only_a_single_threaded_backend() {
    let (spec, multi) = short_probe("reply-before-commit");
    let commit_first = Faults { commit_before_reply: true, ..Faults::default() };
    assert!(matches!(verdict_on_model(&spec, &multi, commit_first), Verdict::Pass));
    let (spec, single) = short_probe("reply-before-commit-single-threaded");
    let started = std::time::Instant::now();
    let f = failed_checks(verdict_on_model(&spec, &single, commit_first));
    assert_eq!(f, ["rbc-single/no-deadlock=no ack"]);
    // The watchdog names it within the ack timeout, and the run goes on.
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "{:?}", started.elapsed());
}

/// The failed checks of a verdict, with their facts.
fn failed_with_facts(v: Verdict) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    match v {
        Verdict::Fail(j) => j
            .into_iter()
            .map(|j| (j.check.check, j.check.facts.into_iter().map(|(k, v)| (k, v.to_string())).collect()))
            .collect(),
        other => panic!("expected FAIL, got {other:?}"),
    }
}

#[test]
fn a_frontend_that_stops_acking_mid_probe_fails_no_deadlock_naming_the_iteration() {
    let (spec, scn) = short_probe("reply-before-commit");
    // The doorbell map, then two requests per iteration: the 8th request is
    // iteration 3's map, the 9th its unmap.
    for (answered, iteration, direction) in [(7, "3", "map"), (8, "3", "unmap")] {
        let f = failed_with_facts(verdict_on_model(
            &spec,
            &scn,
            Faults { stop_acking_after: Some(answered), ..Faults::default() },
        ));
        let (_, facts) = f.iter().find(|(c, _)| c == "rbc-rw/no-deadlock").unwrap_or_else(|| panic!("{f:?}"));
        assert_eq!(
            (facts["iteration"].as_str(), facts["direction"].as_str(), facts["deadlock"].as_str()),
            (iteration, direction, "no ack"),
            "{facts:?}"
        );
        // What the probe recorded before the stall is kept.
        assert!(f.iter().all(|(c, _)| c.starts_with("rbc-rw/no-deadlock")), "only the stall fails: {f:?}");
    }
}

#[test]
fn an_unmap_that_takes_no_effect_fails_its_check_naming_the_iteration() {
    let (spec, scn) = short_probe("reply-before-commit");
    let f =
        failed_with_facts(verdict_on_model(&spec, &scn, Faults { unmap_without_effect: true, ..Faults::default() }));
    let (_, facts) = f.iter().find(|(c, _)| c == "rbc-rw/unmap-effect").unwrap_or_else(|| panic!("{f:?}"));
    assert_eq!(facts["iteration"], "1", "{facts:?}");
    assert!(facts["said"].contains("mapping overlap"), "{facts:?}");
    // The stale read after that UNMAP ack is recorded too, not lost to an error.
    assert!(
        f.iter().any(|(c, facts)| c == "rbc-rw/unmap" && facts["stale_seen"] == "the unmapped file's bytes"),
        "{f:?}"
    );
}

#[test]
fn a_frontend_that_refuses_every_map_fails_map_many() {
    let (spec, scenarios) = suite();
    let scn = scenarios.iter().find(|s| s.name == "hazard-many-mappings").unwrap();
    let f = failed_with_facts(verdict_on_model(&spec, scn, Faults { refuse_all_maps: true, ..Faults::default() }));
    let (_, facts) = f.iter().find(|(c, _)| c == "accepted-maps-reach-backend").unwrap_or_else(|| panic!("{f:?}"));
    assert_eq!((facts["accepted"].as_str(), facts["first_refused"].as_str()), ("0", "0"), "{facts:?}");
}

#[test]
fn a_frontend_that_shows_garbage_where_nothing_is_mapped_fails_expect_guest_not() {
    let (spec, scenarios) = suite();
    let scn = scenarios.iter().find(|s| s.name == "unmap-remap").unwrap();
    let f =
        failed_with_facts(verdict_on_model(&spec, scn, Faults { unmapped_reads_garbage: true, ..Faults::default() }));
    let (_, facts) =
        f.iter().find(|(c, _)| c == "unmapped-range-no-longer-shows-file").unwrap_or_else(|| panic!("{f:?}"));
    assert_eq!(facts["seen_as"], "bytes the ledger does not allow there", "{facts:?}");
}

#[test]
fn a_frontend_that_shows_garbage_after_an_unmap_fails_the_probe() {
    let (spec, scn) = short_probe("reply-before-commit");
    let f = failed_checks(verdict_on_model(&spec, &scn, Faults { unmapped_reads_garbage: true, ..Faults::default() }));
    assert!(f.iter().any(|c| c == "rbc-rw/unmap=other bytes, where nothing is mapped"), "{f:?}");
}

#[test]
fn the_single_threaded_probe_says_it_rings_after_the_memory_table() {
    let (spec, scn) = short_probe("reply-before-commit-single-threaded");
    let dir = tempfile::tempdir().unwrap();
    let mut target = model_target(&scenario_spec(&spec, &scn), Faults::default(), scn.init, dir.path()).unwrap();
    let checks = run_on(&scn, &mut target, false).0.unwrap();
    let map = checks.iter().find(|c| c.check.ends_with("/map")).expect("map direction");
    assert!(map.passed && map.evidence.contains("memory table that commits it"), "{map:?}");
}

/// The probe's checks on a fresh model with `faults`, judged by the shipped
/// race entries of `reply-before-commit` as if they applied.
fn probe_against_listed_races(faults: Faults) -> (Verdict, Vec<shmem_judge::check::CheckResult>) {
    let (spec, scn) = short_probe("reply-before-commit");
    let dir = tempfile::tempdir().unwrap();
    let mut target = model_target(&scenario_spec(&spec, &scn), faults, scn.init, dir.path()).unwrap();
    let checks = run_on(&scn, &mut target, false).0.unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let all = shmem_host::vm::lists::load_known_defects(&root.join("tests/known-defects.toml")).unwrap();
    let races: Vec<_> = all.iter().filter(|d| d.scenario == "reply-before-commit").collect();
    assert!(races.len() >= 5, "the race entries: {races:?}");
    (judge(Ok(checks.clone()), &races).verdict, checks)
}

#[test]
fn a_frontend_that_commits_before_it_replies_shows_it_on_the_wire_and_the_listed_races_as_fixed() {
    let (v, checks) = probe_against_listed_races(Faults { commit_before_reply: true, ..Faults::default() });
    for c in checks
        .iter()
        .filter(|c| ["rbc-rw/map", "rbc-rw/unmap", "rbc-ro/map", "rbc-ro/unmap"].contains(&c.check.as_str()))
    {
        assert_eq!(
            c.facts.get("table_first").map(ToString::to_string),
            c.facts.get("acked").map(ToString::to_string),
            "{c:?}"
        );
    }
    // 50 iterations are far too few for a rate to tell a fix; the order does.
    match v {
        Verdict::UnexpectedPass(drop) => {
            assert!(drop.iter().filter(|d| d.contains("did not show")).count() >= 5, "{drop:?}")
        }
        other => panic!("expected UNEXPECTED-PASS, got {other:?}"),
    }
}

#[test]
fn a_frontend_that_replies_first_shows_no_stale_read_and_stays_inconclusive() {
    // The correct model makes its view current before it replies, but sends the table after: no stale read,
    // no order to tell a fix by (a table can beat the backend's reading of the ack now and then, never
    // every time), so 50 iterations leave the listed races inconclusive.
    let (v, checks) = probe_against_listed_races(Faults::default());
    let count = |c: &shmem_judge::check::CheckResult, k: &str| {
        c.facts.get(k).and_then(|f| f.to_string().parse::<u32>().ok()).unwrap_or(0)
    };
    assert!(
        checks.iter().filter(|c| c.check.ends_with("/map")).all(|c| count(c, "table_first") < count(c, "acked")),
        "{checks:?}"
    );
    assert!(matches!(v, Verdict::KnownFailure(_)), "{v:?}");
}
