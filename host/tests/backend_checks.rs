//! Each backend check fails on a backend wrong in its way: the appliance's
//! own backend with a fault switch, behind the model frontend, over real
//! sockets. The correct own backend passes every check.

use shmem_host::media::judge::judge;
use shmem_host::media::own::{OwnFault, run_own};
use shmem_host::media::session::Settings;
use shmem_host::vm::check::CheckResult;

fn checks(fault: OwnFault) -> Vec<CheckResult> {
    let dir = tempfile::tempdir().expect("temp dir");
    let rec = run_own(fault, dir.path(), &Settings::default());
    judge(&rec)
}

fn failed<'a>(checks: &'a [CheckResult], name: &str) -> &'a CheckResult {
    let c = checks.iter().find(|c| c.check == name).unwrap_or_else(|| panic!("no check {name} in {checks:?}"));
    assert!(!c.passed, "{name} should fail: {c:?}");
    c
}

fn fact(c: &CheckResult, key: &str) -> String {
    c.facts.get(key).map(ToString::to_string).unwrap_or_default()
}

#[test]
fn the_correct_own_backend_passes_every_check() {
    let all = checks(OwnFault::None);
    assert!(all.len() >= 5, "{all:?}");
    assert!(all.iter().all(|c| c.passed), "{all:?}");
}

#[test]
fn a_map_past_the_region_fails_map_valid() {
    let all = checks(OwnFault::OutsideRegion);
    assert_eq!(fact(failed(&all, "map-valid"), "problem"), "outside the region");
}

#[test]
fn an_overlapping_map_fails_map_valid() {
    let all = checks(OwnFault::Overlap);
    assert_eq!(fact(failed(&all, "map-valid"), "problem"), "overlaps a live mapping");
}

#[test]
fn a_mapping_never_unmapped_fails_all_unmapped() {
    let all = checks(OwnFault::LeakMapping);
    assert_eq!(fact(failed(&all, "all-unmapped"), "left"), "1");
    assert!(all.iter().filter(|c| c.check != "all-unmapped").all(|c| c.passed), "{all:?}");
}

#[test]
fn a_double_unmap_fails_unmap_valid() {
    let all = checks(OwnFault::DoubleUnmap);
    let c = failed(&all, "unmap-valid");
    assert!(c.evidence.contains("is not a live mapping"), "{c:?}");
}

#[test]
fn shmem_at_bit_21_fails_negotiation() {
    let all = checks(OwnFault::Bit21);
    assert_eq!(fact(failed(&all, "negotiation"), "shmem_bit"), "21");
}
