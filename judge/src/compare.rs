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
        (None, _) | (_, None) => format!(
            "inconclusive: {at}: too few acked requests to read the order on the wire (at least {MIN_ACKED} a side; {facts})"
        ),
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
            RateCall::Open(None) => format!(
                "inconclusive: {at}: too few boots to estimate the spread between them (at least {} a side)",
                significance::MIN_BOOTS
            ),
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
        format!(
            "{}/{} preceded, lag {} / {} / {} us",
            f("preceded"),
            f("n"),
            f("lag_min_us"),
            f("lag_median_us"),
            f("lag_max_us")
        )
    };
    let (la, lb) = (lag(x), lag(y));
    Some(match (fa, fb) {
        (false, true) => {
            c.fixed += 1;
            format!("fixed: {at}: on the wire B's memory table reaches the backend before its reply (A {la}; B {lb})")
        }
        (true, false) => {
            c.regressed += 1;
            format!(
                "REGRESSED: {at}: on the wire B replies before its memory table reaches the backend (A {la}; B {lb})"
            )
        }
        _ if la != lb => format!("wire lag (facts, not judged): {at}: A {la}; B {lb}"),
        _ => return None,
    })
}

/// One check on both sides; `unreached_a`: A died or erred before the end;
/// `errs`: which side's scenario erred; `listed_race_b`: B's failure of it
/// is a listed race (a probe count of the stale kinds an applicable entry
/// covers), whose one-boot pass or fail is a rate, not a change.
fn compare_check(
    c: &mut Comparison,
    at: &str,
    ca: Option<&CheckResult>,
    cb: Option<&CheckResult>,
    (unreached_a, errs, listed_race_b): (bool, (bool, bool), bool),
) {
    let line = match (ca, cb) {
        (Some(x), Some(y)) if !x.passed && !y.passed && x.check == FRONTEND_SURVIVES && crash_of(x) != crash_of(y) => {
            c.regressed += 1;
            format!(
                "REGRESSED: {at}: the crash changed: A {{{}}} / B {{{}}}",
                facts_text(&x.facts),
                facts_text(&y.facts)
            )
        }
        (Some(x), Some(y)) if x.passed && y.passed && wire_table_first(x).is_some() => {
            match compare_wire(c, at, x, y) {
                Some(line) => line,
                None => return,
            }
        }
        (Some(x), Some(y)) if x.passed && !y.passed && !listed_race_b => {
            c.regressed += 1;
            format!("REGRESSED: {at}: passed on A, fails on B: {}", y.evidence)
        }
        (Some(x), Some(y)) if probe_counts(&x.facts).is_some() && probe_counts(&y.facts).is_some() => {
            compare_probe(c, at, x, y)
        }
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
        Verdict::KnownFailure(judged) | Verdict::Fail(judged) => judged
            .iter()
            .filter(|j| j.defect.is_some() && probe_counts(&j.check.facts).is_some())
            .map(|j| j.check.check.as_str())
            .collect(),
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
mod tests;
