//! Comparing two runs, on hand-made reports: each rule can fire.

use std::time::Duration;

use super::*;
use crate::verdict::Judged;

fn suite_report(_build: &str, checks: Vec<CheckResult>) -> Vec<ScenarioReport> {
    vec![ScenarioReport {
        name: "s".into(),
        description: String::new(),
        qemu: Verdict::Pass,
        qemu_inconclusive: Vec::new(),
        not_shown: [Vec::new(), Vec::new()],
        qemu_unseen: Vec::new(),
        model: Verdict::Pass,
        qemu_time: Duration::ZERO,
        model_time: Duration::ZERO,
        qemu_checks: checks,
        model_checks: Vec::new(),
        qemu_log: None,
        qemu_wire: None,
    }]
}

#[test]
fn a_change_of_order_on_the_wire_is_called_whatever_the_counts() {
    let probe = |stale: u64, first: u64| {
        CheckResult::new("rbc/map", stale == 0, "")
            .with("n", 500u64)
            .with("stale", stale)
            .with("acked", 500u64)
            .with("table_first", first)
    };
    // Too few stale reads on A for a rate to tell a fix, yet the order flipped.
    let a = suite_report("a", vec![probe(3, 2)]);
    let b = suite_report("b", vec![probe(0, 500)]);
    let c = compare(&a, &b);
    assert_eq!((c.fixed, c.regressed), (1, 0), "{:?}", c.lines);
    assert!(c.lines[0].starts_with("fixed: s/rbc/map: B commits before it replies"), "{:?}", c.lines);
    let back = compare(&b, &a);
    assert_eq!((back.fixed, back.regressed), (0, 1), "{:?}", back.lines);
    // The same order on both sides: the counts of one boot each are facts.
    let same = compare(&a, &a);
    assert!(
        same.lines.iter().all(|l| l.starts_with("probe (one boot each, facts only)"))
            && (same.fixed, same.regressed) == (0, 0),
        "{:?}",
        same.lines
    );
    // Too few acked requests on a side: the order is not read.
    let few = |first: u64| {
        CheckResult::new("rbc/map", true, "")
            .with("n", 500u64)
            .with("stale", 0u64)
            .with("acked", 3u64)
            .with("table_first", first)
    };
    let c = compare(&a, &suite_report("b", vec![few(3)]));
    assert_eq!((c.fixed, c.regressed), (0, 0), "{:?}", c.lines);
    assert!(c.lines[0].starts_with("inconclusive: s/rbc/map: too few acked requests"), "{:?}", c.lines);
}

#[test]
fn the_order_on_the_wire_is_compared_and_its_lags_are_only_shown() {
    let wire = |preceded: u64, median: &str| {
        CheckResult::new("reaches-memory-table", true, "")
            .with("n", 8u64)
            .with("none", 0u64)
            .with("preceded", preceded)
            .with("lag_min_us", "-80")
            .with("lag_median_us", median)
            .with("lag_max_us", "900")
    };
    let c = compare(&suite_report("a", vec![wire(0, "310")]), &suite_report("b", vec![wire(8, "-40")]));
    assert_eq!((c.fixed, c.regressed), (1, 0), "{:?}", c.lines);
    assert!(c.lines[0].starts_with("fixed: s/reaches-memory-table: on the wire B's memory table reaches the backend before its reply (A 0/8 preceded"), "{:?}", c.lines);
    let back = compare(&suite_report("b", vec![wire(8, "-40")]), &suite_report("a", vec![wire(1, "310")]));
    assert_eq!((back.fixed, back.regressed), (0, 1), "{:?}", back.lines);
    // The same order, other lags: shown, not counted.
    let c = compare(&suite_report("a", vec![wire(0, "310")]), &suite_report("b", vec![wire(1, "560")]));
    assert_eq!((c.fixed, c.regressed, c.changed), (0, 0, 0), "{:?}", c.lines);
    assert!(c.lines[0].starts_with("wire lag (facts, not judged)"), "{:?}", c.lines);
    assert!(
        compare(&suite_report("a", vec![wire(0, "310")]), &suite_report("a", vec![wire(0, "310")])).lines.is_empty()
    );
}

#[test]
fn compare_names_fixes_regressions_and_changed_evidence() {
    let crash = |sig: &str| CheckResult::new("frontend-survives", false, "").with("exit", sig);
    let a = suite_report(
        "a",
        vec![
            crash("signal 11 (SIGSEGV)"),
            CheckResult::new("ro", false, "").with("ack", "0"),
            CheckResult::new("mt", true, ""),
            CheckResult::new("x", false, "").with("n", "1"),
        ],
    );
    let b = suite_report(
        "b",
        vec![
            CheckResult::new("frontend-survives", true, ""),
            CheckResult::new("ro", false, "").with("ack", "0"),
            CheckResult::new("mt", false, "lost"),
            CheckResult::new("x", false, "").with("n", "2"),
        ],
    );
    let c = compare(&a, &b);
    assert_eq!((c.fixed, c.regressed, c.changed), (1, 1, 1), "{:#?}", c.lines);
    assert!(c.lines.iter().any(|l| l.starts_with("fixed: s/frontend-survives")));
    assert!(c.lines.iter().any(|l| l.starts_with("REGRESSED: s/mt")));
    assert!(c.lines.iter().any(|l| l.starts_with("evidence changed: s/x")));
    // A check that passed on A and never ran on B is a regression too.
    let b = suite_report("b", vec![crash("signal 11 (SIGSEGV)")]);
    assert!(compare(&a, &b).lines.iter().any(|l| l.starts_with("REGRESSED: s/mt: passed on A, never ran on B")));
    // The same run on both sides changes nothing.
    let same = compare(&a, &a);
    assert!(same.lines.is_empty(), "{:?}", same.lines);
}

/// A report of one scenario `s` with these QEMU checks (and verdict).
fn one(checks: Vec<CheckResult>, verdict: Verdict) -> Vec<ScenarioReport> {
    let mut r = suite_report("x", checks);
    r[0].qemu = verdict;
    r
}

fn probe(stale: u64, n: u64) -> CheckResult {
    CheckResult::new("rbc/map", stale == 0, "").with("stale", stale).with("n", n)
}

#[test]
fn one_boots_counts_are_never_a_call_and_a_new_failure_always_is() {
    for (ka, kb) in [(1, 0), (20, 0), (600, 0), (0, 600)] {
        let c = compare(&one(vec![probe(ka, 1000)], Verdict::Pass), &one(vec![probe(kb, 1000)], Verdict::Pass));
        let want = if ka == 0 { (0, 1) } else { (0, 0) };
        assert_eq!((c.fixed, c.regressed), want, "{ka} vs {kb}: {:?}", c.lines);
    }
    // Passed on A, fails on B, unlisted: REGRESSED, whatever a rate test would say.
    let c = compare(&one(vec![probe(0, 1000)], Verdict::Pass), &one(vec![probe(1, 1000)], Verdict::Pass));
    assert!(c.lines[0].starts_with("REGRESSED: s/rbc/map: passed on A, fails on B"), "{:?}", c.lines);
    // The listed race seen in B's boot and not in A's: a count, left to the replicated boots
    // (seen in 2 of 4 self-compares of one QEMU when this was called REGRESSED).
    let listed =
        Verdict::KnownFailure(vec![Judged { check: probe(1, 1000), defect: Some("rbc".into()), ..Judged::default() }]);
    let c = compare(&one(vec![probe(0, 1000)], Verdict::Pass), &one(vec![probe(1, 1000)], listed));
    assert_eq!((c.fixed, c.regressed), (0, 0), "{:?}", c.lines);
    // A listed race that B's verdict does not explain (another stale kind: worse than listed) stays REGRESSED.
    let worse =
        Verdict::Fail(vec![Judged { check: probe(1, 1000), worse: Some("stale kind".into()), ..Judged::default() }]);
    assert_eq!(compare(&one(vec![probe(0, 1000)], Verdict::Pass), &one(vec![probe(1, 1000)], worse)).regressed, 1);
}

#[test]
fn the_rate_family_is_every_probe_direction_not_a_plain_pass_on_both_sides() {
    let other = |name: &str, passed| CheckResult::new(name, passed, "").with("stale", 0u64).with("n", 200u64);
    // s/rbc/map: a stale read on A; s/single: passed on both; s/plain: not a probe check.
    let a = one(vec![probe(1, 1000), other("single", true), CheckResult::new("plain", false, "")], Verdict::Pass);
    let mut b = one(vec![probe(0, 1000), other("single", true), other("quiet", true)], Verdict::Pass);
    assert_eq!(rate_family(&a, &b).into_iter().collect::<Vec<_>>(), ["s/rbc/map"]);
    // A listed race not seen (inconclusive) is in the family, though it passed.
    b[0].qemu_inconclusive =
        vec![Judged { check: other("quiet", true), defect: Some("q".into()), ..Judged::default() }];
    assert_eq!(rate_family(&a, &b).into_iter().collect::<Vec<_>>(), ["s/quiet", "s/rbc/map"]);
}

#[test]
fn replicated_rates_are_called_with_their_interval() {
    let mut c = Comparison::default();
    let r = significance::Ratio { ratio: 0.3, low: 0.2, high: 0.5, boots: (6, 6) };
    c.add_rates("s/rbc/map", &RateCall::Fixed(r.clone()));
    c.add_rates("s/rbc/unmap", &RateCall::Regressed(r.clone()));
    c.add_rates("s/rbc/write", &RateCall::NoChange(r.clone()));
    c.add_rates("s/rbc/ro", &RateCall::Open(Some(r)));
    assert_eq!((c.fixed, c.regressed), (1, 1), "{:?}", c.lines);
    assert!(
        c.lines[0].starts_with("fixed: s/rbc/map: fewer stale, B/A = 0.30 (0.20-0.50, 6 boots of A, 6 of B)"),
        "{:?}",
        c.lines
    );
    assert!(c.lines[2].starts_with("no change beyond 2x: s/rbc/write"), "{:?}", c.lines);
    assert!(c.lines[3].starts_with("inconclusive: s/rbc/ro: B/A between 0.20 and 0.50"), "{:?}", c.lines);
}

#[test]
fn a_changed_crash_is_a_regression_and_a_check_a_never_reached_is_unmasked() {
    let crash =
        |exit: &str, step: &str| CheckResult::new(FRONTEND_SURVIVES, false, "").with("exit", exit).with("step", step);
    let c = compare(
        &one(vec![crash("signal 11 (SIGSEGV)", "map")], Verdict::Pass),
        &one(vec![crash("signal 6 (SIGABRT)", "map")], Verdict::Pass),
    );
    assert_eq!(c.regressed, 1, "{:?}", c.lines);
    let c = compare(
        &one(vec![crash("signal 11 (SIGSEGV)", "map")], Verdict::Pass),
        &one(vec![crash("signal 11 (SIGSEGV)", "unmap")], Verdict::Pass),
    );
    assert_eq!(c.regressed, 1, "another step: {:?}", c.lines);
    // A pure fix: A died at the map; B refuses it cleanly, goes on, and a later check fails.
    let a = one(vec![crash("signal 11 (SIGSEGV)", "map")], Verdict::Pass);
    let b = one(
        vec![CheckResult::new(FRONTEND_SURVIVES, true, ""), CheckResult::new("later", false, "lost")],
        Verdict::Pass,
    );
    let c = compare(&a, &b);
    assert_eq!((c.fixed, c.regressed, c.unmasked), (1, 0, 1), "{:?}", c.lines);
    assert!(c.lines.iter().any(|l| l.starts_with("unmasked: s/later")), "{:?}", c.lines);
}

#[test]
fn inconclusive_entries_are_named_on_both_sides() {
    let mut a = one(vec![probe(0, 500)], Verdict::KnownFailure(Vec::new()));
    let judged = Judged { check: probe(0, 500), defect: Some("rbc".into()), ..Judged::default() };
    a[0].qemu_inconclusive = vec![judged.clone()];
    let mut b = one(vec![probe(0, 500)], Verdict::UnexpectedPass(vec!["x".into()]));
    b[0].qemu_inconclusive = vec![judged];
    let c = compare(&a, &b);
    assert!(
        c.lines.iter().any(|l| l.starts_with("inconclusive on A: s/rbc/map"))
            && c.lines.iter().any(|l| l.starts_with("inconclusive on B: s/rbc/map")),
        "{:?}",
        c.lines
    );
}
