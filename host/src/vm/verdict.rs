//! The verdict layer: what recorded checks mean. Pure functions, no I/O:
//! matching a failed check against known-defect signatures, the
//! intermittent rule, judging one scenario on one target, and comparing two
//! runs. The runner records; this decides. Reports only format.


use super::check::{CheckResult, FRONTEND_SURVIVES, Fact, Facts, facts_text};
use super::defects::KnownDefect;
use super::error::RunOutcome;
use super::suite::{ScenarioReport, SuiteReport};

/// A failed check as judged against the known defects.
#[derive(Clone, Debug, Default)]
pub struct Judged {
    pub check: CheckResult,
    /// The known defect whose signature this failure shows.
    pub defect: Option<String>,
    /// The build that defect was measured on, when it is another build of
    /// the same upstream version (the entry carried over).
    pub measured_on: Option<String>,
    /// A listed defect of this check whose signature it does NOT show: its
    /// id and signature, printed beside what was seen.
    pub listed: Option<(String, String)>,
    /// An entry for another upstream version or accelerator whose signature
    /// this failure shows: its id and what it is listed for (`--bless` adds
    /// this build and accelerator to it).
    pub listed_elsewhere: Option<(String, String)>,
    /// Why a race this failure's signature matches is worse than listed (a
    /// stale kind the entry does not cover, or a rate significantly above
    /// the highest measured): then it is a FAIL.
    pub worse: Option<String>,
}

/// One scenario's verdict on one target.
#[derive(Clone, Debug)]
pub enum Verdict {
    Pass,
    /// Every failed check shows the signature of a listed known defect, or
    /// a listed intermittent defect was not seen in a run too short to tell
    /// a fix (see [`Judgement::inconclusive`]).
    KnownFailure(Vec<Judged>),
    /// A failed check is not listed, or fails differently from its listing.
    Fail(Vec<Judged>),
    /// Listed defects did not show (the check passed or never ran): each
    /// message names the entry to drop.
    UnexpectedPass(Vec<String>),
    /// The scenario could not be run to the end (infrastructure, timeout).
    Error(String),
    /// Not run on this target, and why (fault scenarios on the model).
    Skipped(String),
}

impl Verdict {
    /// Whether the run may still succeed with this verdict.
    pub fn ok(&self) -> bool {
        matches!(self, Verdict::Pass | Verdict::KnownFailure(_) | Verdict::Skipped(_))
    }
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::KnownFailure(_) => "KNOWN-FAIL",
            Verdict::Fail(_) => "FAIL",
            Verdict::UnexpectedPass(_) => "UNEXPECTED-PASS",
            Verdict::Error(_) => "ERROR",
            Verdict::Skipped(_) => "SKIPPED",
        }
    }
}

/// A verdict, and the listed intermittent defects whose checks passed in a
/// run too short to tell a fix: listed whatever the verdict, so they never
/// vanish from a report.
#[derive(Clone, Debug)]
pub struct Judgement {
    pub verdict: Verdict,
    pub inconclusive: Vec<Judged>,
    /// Listed entries that did not show although the verdict is a FAIL for
    /// another reason (an UNEXPECTED-PASS says them itself): named whatever
    /// else fails, so a fix is never hidden behind another failure.
    pub not_shown: Vec<String>,
}

impl From<Verdict> for Judgement {
    fn from(verdict: Verdict) -> Self {
        Judgement { verdict, inconclusive: Vec::new(), not_shown: Vec::new() }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How a listed entry relates to a run's build and accelerator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applies {
    /// Listed for this exact build and accelerator.
    Exact,
    /// Listed for this accelerator and another build of the same upstream
    /// version (another Debian revision): it carries over, measured on that build.
    Carried(String),
    /// Not listed for this build's upstream version or this accelerator.
    Elsewhere,
}

/// The upstream version of a build: "11.1.3" of "11.1.3 (Debian 1:11.1.3+ds-1)".
pub fn upstream(build: &str) -> &str {
    build.split_whitespace().next().unwrap_or("")
}

impl KnownDefect {
    /// How this entry relates to a run on `build` under `accel`.
    pub fn applies_to(&self, build: &str, accel: &str) -> Applies {
        if !self.accel.iter().any(|a| a == accel) {
            return Applies::Elsewhere;
        }
        if self.unmeasured.iter().any(|u| *u == format!("{build}/{accel}")) {
            return Applies::Carried(self.measured_pairs().into_iter().next().unwrap_or_default());
        }
        if self.qemu.iter().any(|q| q == build) {
            return Applies::Exact;
        }
        match self.qemu.iter().find(|q| upstream(q) == upstream(build)) {
            Some(q) => Applies::Carried(q.clone()),
            None => Applies::Elsewhere,
        }
    }

    /// How this backend-list entry relates to `backend` (its exact
    /// `--version` line: no carry-over) behind `frontend` (QEMU's build,
    /// carried over as QEMU entries are; ignored on the model's row) under `accel`.
    pub fn applies_to_backend(&self, backend: &str, frontend: &str, accel: &str) -> Applies {
        if !self.accel.iter().any(|a| a == accel) || !self.qemu.iter().any(|b| b == backend) {
            return Applies::Elsewhere;
        }
        if self.frontend.is_empty() || self.frontend.iter().any(|q| q == frontend) {
            return Applies::Exact;
        }
        match self.frontend.iter().find(|q| upstream(q) == upstream(frontend)) {
            Some(q) => Applies::Carried(q.clone()),
            None => Applies::Elsewhere,
        }
    }

    /// Whether this entry is about this scenario and applies (exactly or
    /// carried over) to this build and accelerator.
    pub fn applies(&self, build: &str, accel: &str, scenario: &str) -> bool {
        self.scenario == scenario && self.applies_to(build, accel) != Applies::Elsewhere
    }

    /// For a race entry: why what the check saw is worse than listed, if it
    /// is (a stale kind it does not cover, or a rate significantly above
    /// the highest measured: `significance::above_highest` at p < 0.001).
    pub fn worse_than_listed(&self, facts: &Facts) -> Option<String> {
        let highest = self.highest?;
        let kinds_text = facts.get("stale_kinds").map(Fact::to_string).unwrap_or_default();
        let kinds: Vec<&str> = kinds_text.split(" | ").filter(|k| !k.is_empty()).collect();
        if let Some(k) = kinds.iter().find(|k| !self.stale_kinds.iter().any(|l| l == *k)) {
            return Some(format!("stale kind {k:?} is not one the entry lists ({})", self.stale_kinds.join(", ")));
        }
        let run = probe_counts(facts)?;
        let p = crate::vm::significance::above_highest(&run, (highest.stale, highest.of));
        (p < WORSE).then(|| format!("{} of {} is significantly more than the highest listed, {} of {} (p = {p:.5}, with the run's own dispersion between its blocks)", run.stale, run.n, highest.stale, highest.of))
    }

    /// Every `"BUILD/ACCEL"` pair the entry lists.
    fn pairs(&self) -> impl Iterator<Item = String> + '_ {
        self.qemu.iter().flat_map(|q| self.accel.iter().map(move |a| format!("{q}/{a}")))
    }

    /// The `"BUILD/ACCEL"` pairs its figures were measured on (not `unmeasured`).
    pub fn measured_pairs(&self) -> Vec<String> {
        self.pairs().filter(|p| !self.unmeasured.contains(p)).collect()
    }

    /// What the entry is listed for, for people: "BUILD/ACCEL, ...".
    pub fn listed_for(&self) -> String {
        let behind = if self.frontend.is_empty() { String::new() } else { format!(" behind {}", self.frontend.join(" or ")) };
        format!("{}{behind}", self.pairs().collect::<Vec<_>>().join(", "))
    }

    /// Whether a failed check's facts show this signature: every fact of
    /// it, `said` as a substring, every other fact exactly.
    pub fn matches(&self, facts: &Facts) -> bool {
        self.signature.iter().all(|(k, want)| facts.get(k).map(Fact::to_string).is_some_and(|got| if k == "said" { got.contains(want.as_str()) } else { got == *want }))
    }

    /// The signature as `key=value, ...`.
    pub fn signature_text(&self) -> String {
        facts_text(&self.signature)
    }

    /// The intermittent rule, for a listed intermittent defect whose check
    /// passed with no stale observation in `n` trials (fact `n`): the run
    /// tells a fix only when a defect still there, at a quarter of its
    /// listed rate, would have shown with probability at least 99.9 %; else
    /// it is inconclusive. So a false UNEXPECTED-PASS has probability at
    /// most 0.1 % per entry and run while the true rate is at least a
    /// quarter of the listed one.
    /// A probe check whose every request had its memory table reach the
    /// backend before the ack (`table_first` = `acked`) tells a fix at any
    /// length: the window the race needs was never open.
    pub fn inconclusive(&self, passed: &Facts) -> bool {
        if committed_first(passed) {
            return false;
        }
        let n = passed.get("n").and_then(Fact::count).map(|n| n as f64);
        match (self.rate, n) {
            (Some(rate), Some(n)) => miss_probability(rate / 4.0, n) > FALSE_PASS,
            _ => false,
        }
    }
}

/// Whether a probe check saw every acked request committed before its ack
/// (the memory table carrying it reached the backend first): the order on
/// the wire, deterministic where a rate is not.
pub fn committed_first(facts: &Facts) -> bool {
    let count = |k: &str| facts.get(k).and_then(Fact::count);
    matches!((count("acked"), count("table_first")), (Some(a), Some(t)) if a > 0 && t == a)
}

/// A probe check's counts from its facts: `stale` of `n`, and its blocks.
pub fn probe_counts(facts: &Facts) -> Option<crate::vm::significance::Counts> {
    let blocks = facts.get("blocks").and_then(|b| crate::vm::significance::blocks_parse(&b.to_string())).unwrap_or_default();
    Some(crate::vm::significance::Counts { stale: facts.get("stale")?.count()?, n: facts.get("n")?.count()?, blocks })
}

/// The p-value below which a race's rate is worse than its highest listed.
pub const WORSE: f64 = 0.001;

/// The most a run may risk calling a present intermittent defect fixed.
pub const FALSE_PASS: f64 = 0.001;

/// The probability that a defect showing at `rate` per trial shows in none of `n`.
pub fn miss_probability(rate: f64, n: f64) -> f64 {
    (1.0 - rate.clamp(0.0, 1.0)).powf(n)
}

/// Whether any entry applies to `build` (exactly or carried over from
/// another build of its upstream version), under some accelerator.
pub fn lists_build(all: &[KnownDefect], build: &str) -> bool {
    all.iter().any(|d| d.qemu.iter().any(|q| q == build || upstream(q) == upstream(build)))
}

/// The known-defect entries of one scenario, as they relate to a run.
#[derive(Clone, Debug, Default)]
pub struct Listing<'a> {
    /// Entries that apply, each with the build it was measured on when carried over.
    pub applicable: Vec<(&'a KnownDefect, Option<String>)>,
    /// Entries of this scenario for other upstream versions or accelerators.
    pub elsewhere: Vec<&'a KnownDefect>,
}

impl<'a> Listing<'a> {
    /// The entries of `scenario` sorted by how they relate to `build` and `accel`.
    pub fn of(all: &'a [KnownDefect], build: &str, accel: &str, scenario: &str) -> Self {
        Self::sorted(all, scenario, |d| d.applies_to(build, accel))
    }

    /// The backend list's entries of `scenario` for `backend` behind
    /// `frontend` (a QEMU build; `accel` "model" for the model's row).
    pub fn of_backend(all: &'a [KnownDefect], backend: &str, frontend: &str, accel: &str, scenario: &str) -> Self {
        Self::sorted(all, scenario, |d| d.applies_to_backend(backend, frontend, accel))
    }

    fn sorted(all: &'a [KnownDefect], scenario: &str, applies: impl Fn(&KnownDefect) -> Applies) -> Self {
        let mut l = Listing::default();
        for d in all.iter().filter(|d| d.scenario == scenario) {
            match applies(d) {
                Applies::Exact => l.applicable.push((d, None)),
                Applies::Carried(on) => l.applicable.push((d, Some(on))),
                Applies::Elsewhere => l.elsewhere.push(d),
            }
        }
        l
    }

    /// Entries that all apply exactly (a run of the build they list).
    pub fn exact(defects: &[&'a KnownDefect]) -> Self {
        Listing { applicable: defects.iter().map(|d| (*d, None)).collect(), elsewhere: Vec::new() }
    }

    /// This listing and `other`'s together (a frontend's and a backend's entries for one run).
    pub fn and(mut self, other: Listing<'a>) -> Self {
        self.applicable.extend(other.applicable);
        self.elsewhere.extend(other.elsewhere);
        self
    }
}

/// A failed check against the entries listed for it.
fn judge_failed(c: &CheckResult, listing: &Listing<'_>) -> Judged {
    let listed: Vec<&(&KnownDefect, Option<String>)> = listing.applicable.iter().filter(|(d, _)| d.check == c.check).collect();
    let shows = listed.iter().find(|(d, _)| d.matches(&c.facts));
    let worse = shows.and_then(|(d, _)| d.worse_than_listed(&c.facts));
    let matched = shows.filter(|_| worse.is_none());
    let elsewhere = listing.elsewhere.iter().find(|d| d.check == c.check && d.matches(&c.facts) && d.worse_than_listed(&c.facts).is_none());
    Judged {
        check: c.clone(),
        defect: matched.map(|(d, _)| d.id.clone()),
        measured_on: matched.and_then(|(_, on)| on.clone()),
        listed: if matched.is_none() { shows.or(listed.first()).map(|(d, _)| (d.id.clone(), d.signature_text())) } else { None },
        listed_elsewhere: if matched.is_none() { elsewhere.map(|d| (d.id.clone(), d.listed_for())) } else { None },
        worse,
    }
}

/// Turns check results into a verdict against exactly these entries (see [`judge_listed`]).
pub fn judge(result: RunOutcome, defects: &[&KnownDefect]) -> Judgement {
    judge_listed(result, &Listing::exact(defects))
}

/// Turns check results into a verdict. A failed check is known only when
/// an applicable entry's signature matches its facts; an applicable entry
/// whose check passed or never ran is an unexpected pass, unless the
/// intermittent rule calls the run inconclusive. A failure that shows the
/// signature of an entry listed elsewhere stays a FAIL and names it.
pub fn judge_listed(result: RunOutcome, listing: &Listing<'_>) -> Judgement {
    let checks = match result {
        Ok(c) => c,
        Err(e) => return Verdict::Error(e.message).into(),
    };
    let failed: Vec<Judged> = checks.iter().filter(|c| !c.passed).map(|c| judge_failed(c, listing)).collect();
    let mut unexpected = Vec::new();
    let mut inconclusive = Vec::new();
    for (d, on) in listing.applicable.iter().filter(|(d, _)| !failed.iter().any(|j| j.check.check == d.check)) {
        let measured = on.as_ref().map(|b| format!(", measured on {b}")).unwrap_or_default();
        match checks.iter().find(|c| c.check == d.check) {
            Some(c) if d.inconclusive(&c.facts) => {
                let mut c = c.clone();
                let n = c.facts.get("n").map(Fact::to_string).unwrap_or_default();
                c.evidence = format!(
                    "intermittent, not seen in {n} trials: too few to tell a fix (listed rate {:.3} %{measured}; a defect at a quarter of it would go unseen with probability above {:.1} %): {}",
                    d.rate.unwrap_or(0.0) * 100.0,
                    FALSE_PASS * 100.0,
                    c.evidence
                );
                inconclusive.push(Judged { check: c, defect: Some(d.id.clone()), measured_on: on.clone(), ..Judged::default() });
            }
            found => {
                let how = if found.is_some() { "the check passed" } else { "the check never ran" };
                unexpected.push(format!("known defect `{}` ({}{measured}) did not show: {how}; drop it from the known-defects list", d.id, d.check));
            }
        }
    }
    let mut not_shown = Vec::new();
    let verdict = if failed.iter().any(|j| j.defect.is_none()) {
        not_shown = unexpected;
        Verdict::Fail(failed)
    } else if !unexpected.is_empty() {
        Verdict::UnexpectedPass(unexpected)
    } else if !failed.is_empty() || !inconclusive.is_empty() {
        Verdict::KnownFailure(failed)
    } else {
        Verdict::Pass
    };
    Judgement { verdict, inconclusive, not_shown }
}

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
fn compare_counts(c: &mut Comparison, at: &str, a: &crate::vm::significance::Counts, b: &crate::vm::significance::Counts) {
    let p = crate::vm::significance::differ(a, b);
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
pub fn compare(a: &SuiteReport, b: &SuiteReport) -> Comparison {
    let probes_of = |r: &SuiteReport| -> Vec<String> { r.scenarios.iter().flat_map(|s| s.qemu_checks.iter().filter(|x| probe_counts(&x.facts).is_some()).map(move |x| format!("{}/{}", s.name, x.check))).collect() };
    let in_b = probes_of(b);
    let m = probes_of(a).iter().filter(|p| in_b.contains(p)).count().max(1);
    let mut c = Comparison { level: crate::vm::significance::SIGNIFICANT / m as f64, ..Comparison::default() };
    for name in union(a.scenarios.iter().map(|s| s.name.as_str()), b.scenarios.iter().map(|s| s.name.as_str())) {
        let sa = a.scenarios.iter().find(|s| s.name == name);
        let sb = b.scenarios.iter().find(|s| s.name == name);
        compare_scenario(&mut c, name, sa, sb);
    }
    c
}

#[cfg(test)]
mod tests {
    //! Comparing two runs, on hand-made reports: each rule can fire.

    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::vm::qemu::{Accel, QemuInfo};
    use crate::vm::suite::{Measurements, ScenarioReport};

    fn suite_report(build: &str, checks: Vec<CheckResult>) -> SuiteReport {
        let qemu = QemuInfo { path: PathBuf::from("qemu"), version: (11, 1, 3), version_text: String::new(), build: build.into() };
        let s = ScenarioReport {
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
        };
        SuiteReport {
            qemu,
            qemu_note: None,
            known_defects: "none".into(),
            accel: Accel::Tcg,
            accel_note: None,
            boot_time: Duration::ZERO,
            suite_time: Duration::ZERO,
            scenarios: vec![s],
            measurements: Measurements::default(),
            kept_logs: None,
        }
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
    fn one(checks: Vec<CheckResult>, verdict: Verdict) -> SuiteReport {
        let mut r = suite_report("x", checks);
        r.scenarios[0].qemu = verdict;
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
        a.scenarios[0].qemu_inconclusive = vec![judged.clone()];
        let mut b = one(vec![probe(0, 500)], Verdict::UnexpectedPass(vec!["x".into()]));
        b.scenarios[0].qemu_inconclusive = vec![judged];
        let c = compare(&a, &b);
        assert!(c.lines.iter().any(|l| l.starts_with("inconclusive on A: s/rbc/map")) && c.lines.iter().any(|l| l.starts_with("inconclusive on B: s/rbc/map")), "{:?}", c.lines);
    }
}
