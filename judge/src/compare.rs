//! Comparing two runs (A, the baseline, and B, another frontend) scenario
//! by scenario and check by check: fixed, REGRESSED, unmasked, changed
//! evidence, the order on the wire, and (from boots of both in one
//! invocation) probe rates.

use std::collections::BTreeSet;

use crate::check::{CheckResult, FRONTEND_SURVIVES, Fact, facts_text};
use crate::listing::{MIN_ACKED, probe_counts, wire_order};
use crate::scenario::ScenarioReport;
use crate::significance::{self, RateCall};
use crate::verdict::Verdict;

/// What changed from a baseline run (A) to another frontend's run (B).
#[derive(Debug, Default)]
pub struct Comparison {
    /// `fixed: scenario/check ...`, `REGRESSED: ...`, `unmasked: ...`,
    /// `evidence changed: ...`, `no change beyond 2x: ...`, `inconclusive: ...`,
    /// `inconclusive on A/B: ...`, facts (`probe ...`, `wire lag ...`).
    pub lines: Vec<String>,
    pub fixed: usize,
    pub regressed: usize,
    pub changed: usize,
    /// Checks B ran and failed that A never reached (A died or erred first): no regression.
    pub unmasked: usize,
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

/// A probe check's order on the wire, for people: "table first T of A acked".
fn show_order(c: &CheckResult) -> String {
    let f = |k: &str| c.facts.get(k).map(Fact::to_string).unwrap_or_else(|| "?".into());
    format!("memory table first for {} of {} acked", f("table_first"), f("acked"))
}

/// A probe check on both sides, both run to the end: the order on the wire
/// where both sides acked enough requests to read it (a flip is fixed or
/// REGRESSED); the counts of one boot each are facts, never a call (the
/// replicated boots judge rates: [`Comparison::add_rates`]).
fn compare_probe(c: &mut Comparison, at: &str, x: &CheckResult, y: &CheckResult) -> String {
    let facts = format!("A {}, {}; B {}, {}", show_counts(x), show_order(x), show_counts(y), show_order(y));
    match (wire_order(&x.facts), wire_order(&y.facts)) {
        (Some(false), Some(true)) => {
            c.fixed += 1;
            format!("fixed: {at}: B commits before it replies ({facts})")
        }
        (Some(true), Some(false)) => {
            c.regressed += 1;
            format!("REGRESSED: {at}: B replies before it commits ({facts})")
        }
        (None, _) | (_, None) => format!("inconclusive: {at}: too few acked requests to read the order on the wire (at least {MIN_ACKED} a side; {facts})"),
        _ => format!("probe (one boot each, facts only): {at}: {facts}"),
    }
}

impl Comparison {
    /// A direction's rates from the replicated boots of A and B, as
    /// `significance::call_rates` called them: fixed or REGRESSED with the
    /// ratio and its interval, no change beyond [`significance::BAND`]x,
    /// or inconclusive when the boots ran out first.
    pub fn add_rates(&mut self, at: &str, call: &RateCall) {
        let line = match call {
            RateCall::Fixed(r) => {
                self.fixed += 1;
                format!("fixed: {at}: fewer stale, {r}")
            }
            RateCall::Regressed(r) => {
                self.regressed += 1;
                format!("REGRESSED: {at}: more stale, {r}")
            }
            RateCall::NoChange(r) => format!("no change beyond {}x: {at}: {r}", significance::BAND),
            RateCall::Open(Some(r)) => format!("inconclusive: {at}: B/A between {:.2} and {:.2} ({r})", r.low, r.high),
            RateCall::Open(None) => format!("inconclusive: {at}: too few boots to estimate the spread between them (at least {} a side)", significance::MIN_BOOTS),
        };
        self.lines.push(line);
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
/// `errs`: which side's scenario erred; `listed_race_b`: B's failure of it
/// is a listed race (a probe count of the stale kinds an applicable entry
/// covers), whose one-boot pass or fail is a rate, not a change.
fn compare_check(c: &mut Comparison, at: &str, ca: Option<&CheckResult>, cb: Option<&CheckResult>, (unreached_a, errs, listed_race_b): (bool, (bool, bool), bool)) {
    let line = match (ca, cb) {
        (Some(x), Some(y)) if !x.passed && !y.passed && x.check == FRONTEND_SURVIVES && crash_of(x) != crash_of(y) => {
            c.regressed += 1;
            format!("REGRESSED: {at}: the crash changed: A {{{}}} / B {{{}}}", facts_text(&x.facts), facts_text(&y.facts))
        }
        (Some(x), Some(y)) if x.passed && y.passed && wire_table_first(x).is_some() => match compare_wire(c, at, x, y) {
            Some(line) => line,
            None => return,
        },
        (Some(x), Some(y)) if x.passed && !y.passed && !listed_race_b => {
            c.regressed += 1;
            format!("REGRESSED: {at}: passed on A, fails on B: {}", y.evidence)
        }
        (Some(x), Some(y)) if probe_counts(&x.facts).is_some() && probe_counts(&y.facts).is_some() => compare_probe(c, at, x, y),
        (Some(x), Some(y)) if !x.passed && y.passed => {
            c.fixed += 1;
            format!("fixed: {at}: failed on A ({}), passes on B", facts_text(&x.facts))
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

/// The probe checks a verdict explains as a listed race: failed with
/// only the stale kinds of an entry that applies. Whether one boot saw
/// such a race at all is a count (a rate of 1 in 1000 shows in about half
/// the boots), judged by the replicated boots, never by one pass or fail.
fn listed_races(v: &Verdict) -> Vec<&str> {
    match v {
        Verdict::KnownFailure(judged) | Verdict::Fail(judged) => judged.iter().filter(|j| j.defect.is_some() && probe_counts(&j.check.facts).is_some()).map(|j| j.check.check.as_str()).collect(),
        _ => Vec::new(),
    }
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
    let races_b = sb.map(|s| listed_races(&s.qemu)).unwrap_or_default();
    for check in union(checks_a.iter().map(|x| x.check.as_str()), checks_b.iter().map(|x| x.check.as_str())) {
        let ca = checks_a.iter().find(|x| x.check == check);
        let cb = checks_b.iter().find(|x| x.check == check);
        compare_check(c, &format!("{name}/{check}"), ca, cb, (ea || died_a, (ea, eb), races_b.contains(&check)));
    }
    for (side, s) in [("A", sa), ("B", sb)] {
        for j in s.map(|s| s.qemu_inconclusive.as_slice()).unwrap_or_default() {
            c.lines.push(format!("inconclusive on {side}: {name}/{}: {}", j.check.check, j.check.evidence));
        }
    }
}

/// The probe directions (`scenario/check`) whose rates the replicated
/// boots compare: those that were not a plain pass on both sides (a stale
/// read, or a listed race not seen, on A or on B). A direction that passed
/// on both has nothing to compare, and a stale read on B alone is already
/// REGRESSED ([`compare`]); leaving it out of the replicated boots gives
/// the others their time and their share of the level. Chosen from the
/// suites' runs, never from the replicated boots it is then judged by.
pub fn rate_family(a: &[ScenarioReport], b: &[ScenarioReport]) -> BTreeSet<String> {
    let mut family = BTreeSet::new();
    for s in a.iter().chain(b) {
        for c in s.qemu_checks.iter().filter(|c| probe_counts(&c.facts).is_some()) {
            if !c.passed || s.qemu_inconclusive.iter().any(|j| j.check.check == c.check) {
                family.insert(format!("{}/{}", s.name, c.check));
            }
        }
    }
    family
}

/// Compares the QEMU side of two runs check by check. A check that passed
/// on A and fails on B is REGRESSED, whatever else; probe checks compare
/// the order on the wire (a flip is fixed or REGRESSED), their counts of
/// one boot each are facts (rates are judged from replicated boots,
/// [`Comparison::add_rates`]); a crash whose signal, step or words change is a regression;
/// a check A never reached (it died or erred first) that fails on B is
/// unmasked, not regressed; listed inconclusive entries are named on both sides.
pub fn compare(a: &[ScenarioReport], b: &[ScenarioReport]) -> Comparison {
    let mut c = Comparison::default();
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
        let probe = |stale: u64, first: u64| CheckResult::new("rbc/map", stale == 0, "").with("n", 500u64).with("stale", stale).with("acked", 500u64).with("table_first", first);
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
        assert!(same.lines.iter().all(|l| l.starts_with("probe (one boot each, facts only)")) && (same.fixed, same.regressed) == (0, 0), "{:?}", same.lines);
        // Too few acked requests on a side: the order is not read.
        let few = |first: u64| CheckResult::new("rbc/map", true, "").with("n", 500u64).with("stale", 0u64).with("acked", 3u64).with("table_first", first);
        let c = compare(&a, &suite_report("b", vec![few(3)]));
        assert_eq!((c.fixed, c.regressed), (0, 0), "{:?}", c.lines);
        assert!(c.lines[0].starts_with("inconclusive: s/rbc/map: too few acked requests"), "{:?}", c.lines);
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
        let listed = Verdict::KnownFailure(vec![Judged { check: probe(1, 1000), defect: Some("rbc".into()), ..Judged::default() }]);
        let c = compare(&one(vec![probe(0, 1000)], Verdict::Pass), &one(vec![probe(1, 1000)], listed));
        assert_eq!((c.fixed, c.regressed), (0, 0), "{:?}", c.lines);
        // A listed race that B's verdict does not explain (another stale kind: worse than listed) stays REGRESSED.
        let worse = Verdict::Fail(vec![Judged { check: probe(1, 1000), worse: Some("stale kind".into()), ..Judged::default() }]);
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
        b[0].qemu_inconclusive = vec![Judged { check: other("quiet", true), defect: Some("q".into()), ..Judged::default() }];
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
        assert!(c.lines[0].starts_with("fixed: s/rbc/map: fewer stale, B/A = 0.30 (0.20-0.50, 6 boots of A, 6 of B)"), "{:?}", c.lines);
        assert!(c.lines[2].starts_with("no change beyond 2x: s/rbc/write"), "{:?}", c.lines);
        assert!(c.lines[3].starts_with("inconclusive: s/rbc/ro: B/A between 0.20 and 0.50"), "{:?}", c.lines);
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
