//! A KVM run judged against the shipped list, whose entries were measured
//! under TCG: the failures that show an entry are KNOWN-FAIL carried over
//! ("measured on BUILD/tcg"), an entry that does not show is named and is
//! no failure, an accelerator-specific entry does not carry over, and the
//! race entries carry no count that another machine's run is held to.

use std::path::Path;

use shmem_host::vm::lists::load_known_defects;
use shmem_judge::check::CheckResult;
use shmem_judge::defects::KnownDefect;
use shmem_judge::listing::Listing;
use shmem_judge::verdict::{Judgement, Verdict, judge_listed};

const BUILD: &str = "11.1.3 (Debian 1:11.1.3+ds-1)";

fn shipped() -> Vec<KnownDefect> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    load_known_defects(&root.join("tests/known-defects.toml")).expect("the shipped list loads")
}

fn under_kvm(all: &[KnownDefect], scenario: &str, checks: Vec<CheckResult>) -> Judgement {
    judge_listed(Ok(checks), &Listing::of(all, BUILD, "kvm", scenario))
}

#[test]
fn a_kvm_crash_that_shows_a_tcg_entry_is_known_and_carried_over() {
    let all = shipped();
    let crash = CheckResult::new("frontend-survives", false, "QEMU died")
        .with("exit", "signal 11 (SIGSEGV)")
        .with("step", "map-to-stopped-device");
    let j = under_kvm(&all, "hazard-map-before-driver-ok", vec![crash]);
    match &j.verdict {
        Verdict::KnownFailure(judged) => {
            assert_eq!(judged[0].defect.as_deref(), Some("map-before-driver-ok-segfaults"));
            assert_eq!(judged[0].measured_on.as_deref(), Some(&*format!("{BUILD}/tcg")));
            assert!(judged[0].other_accel, "--bless adds kvm to it");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tcg_entry_that_does_not_show_under_kvm_is_named_not_failed() {
    let all = shipped();
    let alive = CheckResult::new("frontend-survives", true, "alive");
    let j = under_kvm(&all, "hazard-map-before-driver-ok", vec![alive]);
    assert!(matches!(j.verdict, Verdict::Pass), "{:?}", j.verdict);
    assert!(j.verdict.ok());
    assert_eq!(j.unseen.len(), 1, "{:?}", j.unseen);
    assert!(
        j.unseen[0].contains("map-before-driver-ok-segfaults") && j.unseen[0].contains("listed for tcg"),
        "{}",
        j.unseen[0]
    );
}

#[test]
fn an_accelerator_specific_entry_does_not_carry_over() {
    let all = shipped();
    let seen =
        CheckResult::new("guest-write-dropped", false, "the write shows").with("seen", "digest 8ef0903fef797725");
    let j = under_kvm(&all, "ro-basic", vec![seen]);
    match &j.verdict {
        Verdict::Fail(judged) => {
            let (id, listed_for) = judged[0].listed_elsewhere.clone().expect("named for --bless");
            assert_eq!(id, "readonly-map-writable-guest-view");
            assert!(listed_for.ends_with("/tcg"), "{listed_for}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_race_under_kvm_is_known_at_any_count_and_named_when_not_seen() {
    let all = shipped();
    let rbc = |stale: u64| {
        CheckResult::new("rbc-rw/unmap", stale == 0, "")
            .with("stale", stale)
            .with("n", 1000u64)
            .with("stale_kinds", if stale == 0 { "" } else { "the unmapped file's bytes" })
            .with("acked", 1000u64)
            .with("table_first", 0u64)
    };
    for stale in [1, 174, 900] {
        assert!(
            matches!(under_kvm(&all, "reply-before-commit", vec![rbc(stale)]).verdict, Verdict::KnownFailure(_)),
            "{stale} of 1000"
        );
    }
    // Not seen under KVM: named, never a failure (the race may need TCG's timing).
    let j = under_kvm(&all, "reply-before-commit", vec![rbc(0)]);
    assert!(j.verdict.ok(), "{:?}", j.verdict);
    assert!(j.unseen.iter().any(|u| u.contains("reply-before-commit-unmap-shows-old-bytes")), "{:?}", j.unseen);
}
