//! Comparing two runs (A, the baseline, and B, another frontend) scenario
//! by scenario and check by check: fixed, REGRESSED, unmasked, changed
//! evidence, and probe rates judged against their measured spread.

use crate::check::{CheckResult, FRONTEND_SURVIVES, Fact, facts_text};
use crate::listing::{committed_first, probe_counts};
use crate::scenario::ScenarioReport;
use crate::significance::{self, Counts};
use crate::verdict::Verdict;

/// What changed from a baseline run (A) to another frontend's run (B).
#[derive(Debug, Default)]
pub struct Comparison {
    /// `fixed: scenario/check ...`, `REGRESSED: ...`, `unmasked: ...`,
    /// `evidence changed: ...`, `no significant change: ...`, `inconclusive on A/B: ...`.
    pub lines: Vec<String>,
    pub fixed: usize,
    pub regressed: usize,
    pub changed: usize,
    /// Checks B ran and failed that A never reached (A died or erred first): no regression.
    pub unmasked: usize,
    /// The p-value below which a probe check's counts differ: 0.01 over the
    /// number of probe checks compared (so the whole comparison calls a
    /// change by chance with probability at most 1 %).
    pub level: f64,
}

/// Names in `a`, then those only in `b`.
fn union<'a>(a: impl Iterator<Item = &'a str>, b: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut names: Vec<&str> = a.collect();
    let more: Vec<&str> = b.filter(|n| !names.contains(n)).collect();
    names.extend(more);
    names
}

fn show_counts(c: &CheckResult) -> String {
    probe_counts(&c.facts).map(|k| format!("{}/{}", k.stale, k.n)).unwrap_or_default()
}

/// A probe check on both sides: fixed or regressed only when significant
/// at `level`, against the runs' own dispersion and the spread load makes
/// between runs (`significance::differ`).
fn compare_counts(c: &mut Comparison, at: &str, a: &Counts, b: &Counts) {
    let p = significance::differ(a, b);
    let (ka, na, kb, nb) = (a.stale, a.n, b.stale, b.n);
    let rates = format!("{ka}/{na} vs {kb}/{nb}, p = {p:.4}");
    if p >= c.level {
        c.lines.push(format!("no significant change: {at} ({rates})"));
    } else if (kb as f64) / (nb as f64) < (ka as f64) / (na as f64) {
        c.fixed += 1;
        c.lines.push(format!("fixed: {at}: fewer stale ({rates})"));
    } else {
        c.regressed += 1;
        c.lines.push(format!("REGRESSED: {at}: more stale ({rates})"));
    }
}

/// What a crash's facts say: signal or status, step, what QEMU said.
fn crash_of(c: &CheckResult) -> (Option<&Fact>, Option<&Fact>, Option<&Fact>) {
    (c.facts.get("exit"), c.facts.get("step"), c.facts.get("said"))
}

/// Whether most accepted requests' memory tables reached the backend before
/// the reply did, on the wire (`reaches-memory-table`'s `preceded` of `n`):
/// the order a frontend that commits before it replies shows. Most, not
/// all: the relay reads the two channels on two threads.
fn wire_table_first(c: &CheckResult) -> Option<bool> {
    let count = |k: &str| c.facts.get(k).and_then(Fact::count);
    match (count("n"), count("preceded")) {
        (Some(n), Some(p)) if c.check == "reaches-memory-table" && n > 0 => Some(2 * p > n),
        _ => None,
    }
}

/// `reaches-memory-table` on both sides: the order on the wire (a flip is
/// fixed or REGRESSED), else the lags as facts, never called a change
/// (they carry the relay's scheduling).
fn compare_wire(c: &mut Comparison, at: &str, x: &CheckResult, y: &CheckResult) -> Option<String> {
    let (fa, fb) = (wire_table_first(x)?, wire_table_first(y)?);
    let lag = |k: &CheckResult| {
        let f = |key: &str| k.facts.get(key).map(Fact::to_string).unwrap_or_default();
        format!("{}/{} preceded, lag {} / {} / {} us", f("preceded"), f("n"), f("lag_min_us"), f("lag_median_us"), f("lag_max_us"))
    };
    let (la, lb) = (lag(x), lag(y));
    Some(match (fa, fb) {
        (false, true) => {
            c.fixed += 1;
            format!("fixed: {at}: on the wire B's memory table reaches the backend before its reply (A {la}; B {lb})")
        }
        (true, false) => {
            c.regressed += 1;
            format!("REGRESSED: {at}: on the wire B replies before its memory table reaches the backend (A {la}; B {lb})")
        }
        _ if la != lb => format!("wire lag (facts, not judged): {at}: A {la}; B {lb}"),
        _ => return None,
    })
}

/// One check on both sides; `unreached_a`: A died or erred before the end;
/// `errs`: which side's scenario erred.
fn compare_check(c: &mut Comparison, at: &str, ca: Option<&CheckResult>, cb: Option<&CheckResult>, (unreached_a, errs): (bool, (bool, bool))) {
    let line = match (ca, cb) {
        (Some(x), Some(y)) if !x.passed && !y.passed && x.check == FRONTEND_SURVIVES && crash_of(x) != crash_of(y) => {
            c.regressed += 1;
            format!("REGRESSED: {at}: the crash changed: A {{{}}} / B {{{}}}", facts_text(&x.facts), facts_text(&y.facts))
        }
        (Some(x), Some(y)) if probe_counts(&x.facts).is_some() && committed_first(&x.facts) != committed_first(&y.facts) => {
            // The order on the wire changed: deterministic, whatever the rates did.
            let order = |f: &CheckResult| format!("{}/{}", f.facts.get("table_first").map(Fact::to_string).unwrap_or_default(), f.facts.get("acked").map(Fact::to_string).unwrap_or_default());
            if committed_first(&y.facts) {
                c.fixed += 1;
                format!("fixed: {at}: B commits before it replies (memory table before the ack: A {}, B {}); stale A {}, B {}", order(x), order(y), show_counts(x), show_counts(y))
            } else {
                c.regressed += 1;
                format!("REGRESSED: {at}: B replies before it commits (memory table before the ack: A {}, B {}); stale A {}, B {}", order(x), order(y), show_counts(x), show_counts(y))
            }
        }
        (Some(x), Some(y)) if x.passed && y.passed && wire_table_first(x).is_some() => match compare_wire(c, at, x, y) {
            Some(line) => line,
            None => return,
        },
        (Some(x), Some(y)) if let (Some(ka), Some(kb)) = (probe_counts(&x.facts), probe_counts(&y.facts)) => {
            return compare_counts(c, at, &ka, &kb);
        }
        (Some(x), Some(y)) if !x.passed && y.passed => {
            c.fixed += 1;
            format!("fixed: {at}: failed on A ({}), passes on B", facts_text(&x.facts))
        }
        (Some(x), Some(y)) if x.passed && !y.passed => {
            c.regressed += 1;
            format!("REGRESSED: {at}: passed on A, fails on B: {}", y.evidence)
        }
        (Some(x), Some(y)) if !x.passed && !y.passed && x.facts != y.facts => {
            c.changed += 1;
            format!("evidence changed: {at}: A {{{}}} / B {{{}}}", facts_text(&x.facts), facts_text(&y.facts))
        }
        (Some(x), None) if x.passed && !errs.0 && !errs.1 => {
            c.regressed += 1;
            format!("REGRESSED: {at}: passed on A, never ran on B")
        }
        (None, Some(y)) if !y.passed && unreached_a => {
            c.unmasked += 1;
            format!("unmasked: {at}: fails on B ({}); A never got that far", y.evidence)
        }
        (None, Some(y)) if !y.passed => {
            c.regressed += 1;
            format!("REGRESSED: {at}: fails on B ({}), did not run on A", y.evidence)
        }
        _ => return,
    };
    c.lines.push(line);
}

/// One scenario on both sides: its erring, then each check.
fn compare_scenario(c: &mut Comparison, name: &str, sa: Option<&ScenarioReport>, sb: Option<&ScenarioReport>) {
    let erred = |s: Option<&ScenarioReport>| s.is_some_and(|s| matches!(s.qemu, Verdict::Error(_)));
    let (ea, eb) = (erred(sa), erred(sb));
    if eb && !ea {
        c.regressed += 1;
        let why = sb.map(|s| if let Verdict::Error(e) = &s.qemu { format!("error: {e}") } else { String::new() });
        c.lines.push(format!("REGRESSED: {name}: {} on B", why.unwrap_or_default()));
    } else if ea && !eb {
        c.fixed += 1;
        c.lines.push(format!("fixed: {name}: runs to the end on B"));
    }
    let checks_a = sa.map(|s| s.qemu_checks.as_slice()).unwrap_or_default();
    let checks_b = sb.map(|s| s.qemu_checks.as_slice()).unwrap_or_default();
    let died_a = checks_a.iter().any(|x| x.check == FRONTEND_SURVIVES && !x.passed);
    for check in union(checks_a.iter().map(|x| x.check.as_str()), checks_b.iter().map(|x| x.check.as_str())) {
        let ca = checks_a.iter().find(|x| x.check == check);
        let cb = checks_b.iter().find(|x| x.check == check);
        compare_check(c, &format!("{name}/{check}"), ca, cb, (ea || died_a, (ea, eb)));
    }
    for (side, s) in [("A", sa), ("B", sb)] {
        for j in s.map(|s| s.qemu_inconclusive.as_slice()).unwrap_or_default() {
            c.lines.push(format!("inconclusive on {side}: {name}/{}: {}", j.check.check, j.check.evidence));
        }
    }
}

/// Compares the QEMU side of two runs check by check. Probe checks compare
/// the order on the wire first (a flip is fixed or REGRESSED), then their
/// rates against their measured spread (`significance::differ`; fixed or
/// REGRESSED only below p = 0.01 over the number of probe checks compared);
/// a crash whose signal, step or words change is a regression;
/// a check A never reached (it died or erred first) that fails on B is
/// unmasked, not regressed; listed inconclusive entries are named on both sides.
pub fn compare(a: &[ScenarioReport], b: &[ScenarioReport]) -> Comparison {
    let probes_of = |r: &[ScenarioReport]| -> Vec<String> { r.iter().flat_map(|s| s.qemu_checks.iter().filter(|x| probe_counts(&x.facts).is_some()).map(move |x| format!("{}/{}", s.name, x.check))).collect() };
    let in_b = probes_of(b);
    let m = probes_of(a).iter().filter(|p| in_b.contains(p)).count().max(1);
    let mut c = Comparison { level: significance::SIGNIFICANT / m as f64, ..Comparison::default() };
    for name in union(a.iter().map(|s| s.name.as_str()), b.iter().map(|s| s.name.as_str())) {
        let sa = a.iter().find(|s| s.name == name);
        let sb = b.iter().find(|s| s.name == name);
        compare_scenario(&mut c, name, sa, sb);
    }
    c
}

#[cfg(test)]
mod tests {
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
        let probe = |stale: u64, first: u64| CheckResult::new("rbc/map", stale == 0, "").with("n", 500u64).with("stale", stale).with("acked", 500u64).with("table_first", first);
        // Too few stale reads on A for a rate to tell a fix, yet the order flipped.
        let a = suite_report("a", vec![probe(3, 2)]);
        let b = suite_report("b", vec![probe(0, 500)]);
        let c = compare(&a, &b);
        assert_eq!((c.fixed, c.regressed), (1, 0), "{:?}", c.lines);
        assert!(c.lines[0].starts_with("fixed: s/rbc/map: B commits before it replies"), "{:?}", c.lines);
        let back = compare(&b, &a);
        assert_eq!((back.fixed, back.regressed), (0, 1), "{:?}", back.lines);
        // The same order on both sides: the counts decide, as before.
        assert!(compare(&a, &a).lines.iter().all(|l| l.starts_with("no significant change")));
    }

    #[test]
    fn the_order_on_the_wire_is_compared_and_its_lags_are_only_shown() {
        let wire = |preceded: u64, median: &str| {
            CheckResult::new("reaches-memory-table", true, "").with("n", 8u64).with("none", 0u64).with("preceded", preceded).with("lag_min_us", "-80").with("lag_median_us", median).with("lag_max_us", "900")
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
        assert!(compare(&suite_report("a", vec![wire(0, "310")]), &suite_report("a", vec![wire(0, "310")])).lines.is_empty());
    }

    #[test]
    fn compare_names_fixes_regressions_and_changed_evidence() {
        let crash = |sig: &str| CheckResult::new("frontend-survives", false, "").with("exit", sig);
        let a = suite_report("a", vec![crash("signal 11 (SIGSEGV)"), CheckResult::new("ro", false, "").with("ack", "0"), CheckResult::new("mt", true, ""), CheckResult::new("x", false, "").with("n", "1")]);
        let b = suite_report("b", vec![CheckResult::new("frontend-survives", true, ""), CheckResult::new("ro", false, "").with("ack", "0"), CheckResult::new("mt", false, "lost"), CheckResult::new("x", false, "").with("n", "2")]);
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
    fn probe_counts_change_only_when_the_difference_is_significant() {
        let c = compare(&one(vec![probe(1, 1000)], Verdict::Pass), &one(vec![probe(0, 1000)], Verdict::Pass));
        assert_eq!((c.fixed, c.regressed, c.changed), (0, 0, 0), "{:?}", c.lines);
        assert!(c.lines[0].starts_with("no significant change: s/rbc/map (1/1000 vs 0/1000"), "{:?}", c.lines);
        let c = compare(&one(vec![probe(12, 1000)], Verdict::Pass), &one(vec![probe(11, 1000)], Verdict::Pass));
        assert_eq!((c.fixed, c.regressed, c.changed), (0, 0, 0), "counts alone are no changed evidence: {:?}", c.lines);
        // 20 against 0 of 1000 is what load alone does between two runs (a coin would call it).
        let c = compare(&one(vec![probe(20, 1000)], Verdict::Pass), &one(vec![probe(0, 1000)], Verdict::Pass));
        assert_eq!((c.fixed, c.regressed), (0, 0), "{:?}", c.lines);
        // Far beyond the spread between runs: a change.
        let c = compare(&one(vec![probe(600, 1000)], Verdict::Pass), &one(vec![probe(0, 1000)], Verdict::Pass));
        assert_eq!((c.fixed, c.regressed), (1, 0), "{:?}", c.lines);
        let c = compare(&one(vec![probe(0, 1000)], Verdict::Pass), &one(vec![probe(600, 1000)], Verdict::Pass));
        assert_eq!((c.fixed, c.regressed), (0, 1), "{:?}", c.lines);
    }

    #[test]
    fn a_changed_crash_is_a_regression_and_a_check_a_never_reached_is_unmasked() {
        let crash = |exit: &str, step: &str| CheckResult::new(FRONTEND_SURVIVES, false, "").with("exit", exit).with("step", step);
        let c = compare(&one(vec![crash("signal 11 (SIGSEGV)", "map")], Verdict::Pass), &one(vec![crash("signal 6 (SIGABRT)", "map")], Verdict::Pass));
        assert_eq!(c.regressed, 1, "{:?}", c.lines);
        let c = compare(&one(vec![crash("signal 11 (SIGSEGV)", "map")], Verdict::Pass), &one(vec![crash("signal 11 (SIGSEGV)", "unmap")], Verdict::Pass));
        assert_eq!(c.regressed, 1, "another step: {:?}", c.lines);
        // A pure fix: A died at the map; B refuses it cleanly, goes on, and a later check fails.
        let a = one(vec![crash("signal 11 (SIGSEGV)", "map")], Verdict::Pass);
        let b = one(vec![CheckResult::new(FRONTEND_SURVIVES, true, ""), CheckResult::new("later", false, "lost")], Verdict::Pass);
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
        assert!(c.lines.iter().any(|l| l.starts_with("inconclusive on A: s/rbc/map")) && c.lines.iter().any(|l| l.starts_with("inconclusive on B: s/rbc/map")), "{:?}", c.lines);
    }
}
