//! A run's verdict: what its recorded checks mean against the known-defect
//! entries listed for it. A failed check is known only when an applicable
//! entry's signature matches; an entry that did not show is an unexpected
//! pass unless the intermittent rule calls the run inconclusive. The runner
//! records; this decides; reports only format.

use crate::check::{CheckResult, Fact};
use crate::defects::KnownDefect;
use crate::listing::{FALSE_PASS, Listing, MIN_ACKED, wire_order};
use crate::outcome::RunOutcome;

/// A failed check as judged against the known defects.
#[derive(Clone, Debug, Default)]
pub struct Judged {
    pub check: CheckResult,
    /// The known defect whose signature this failure shows.
    pub defect: Option<String>,
    /// The build that defect was measured on, when it is another build of
    /// the same upstream version (the entry carried over), or the
    /// `"BUILD/ACCEL"` when it was measured under another accelerator.
    pub measured_on: Option<String>,
    /// Whether the entry was carried over from another accelerator
    /// (`--bless` then adds this run's accelerator to it).
    pub other_accel: bool,
    /// A listed defect of this check whose signature it does NOT show: its
    /// id and signature, printed beside what was seen.
    pub listed: Option<(String, String)>,
    /// An entry for another upstream version or accelerator whose signature
    /// this failure shows: its id and what it is listed for (`--bless` adds
    /// this build and accelerator to it).
    pub listed_elsewhere: Option<(String, String)>,
    /// Why a race this failure's signature matches is worse than listed (a
    /// stale kind the entry does not cover): then it is a FAIL.
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
    /// Entries carried over from another accelerator that did not show
    /// under this one: named, never a failure (the defect may need the
    /// other accelerator's timing; `--bless` records where it does show).
    pub unseen: Vec<String>,
}

impl From<Verdict> for Judgement {
    fn from(verdict: Verdict) -> Self {
        Judgement { verdict, inconclusive: Vec::new(), not_shown: Vec::new(), unseen: Vec::new() }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A failed check against the entries listed for it (those carried over
/// from another accelerator among them).
fn judge_failed(c: &CheckResult, listing: &Listing<'_>) -> Judged {
    let carried = listing.other_accel.iter().map(|(d, on)| (*d, Some(on.clone())));
    let listed: Vec<(&KnownDefect, Option<String>)> =
        listing.applicable.iter().cloned().chain(carried).filter(|(d, _)| d.check == c.check).collect();
    let shows = listed.iter().find(|(d, _)| d.matches(&c.facts));
    let worse = shows.and_then(|(d, _)| d.worse_than_listed(&c.facts));
    let matched = shows.filter(|_| worse.is_none());
    let elsewhere = listing
        .elsewhere
        .iter()
        .find(|d| d.check == c.check && d.matches(&c.facts) && d.worse_than_listed(&c.facts).is_none());
    Judged {
        check: c.clone(),
        defect: matched.map(|(d, _)| d.id.clone()),
        measured_on: matched.and_then(|(_, on)| on.clone()),
        other_accel: matched.is_some_and(|(d, _)| listing.other_accel.iter().any(|(o, _)| o.id == d.id)),
        listed: if matched.is_none() {
            shows.or(listed.first()).map(|(d, _)| (d.id.clone(), d.signature_text()))
        } else {
            None
        },
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
    let not_failed = |d: &KnownDefect| !failed.iter().any(|j| j.check.check == d.check);
    for (d, on) in listing.applicable.iter().filter(|(d, _)| not_failed(d)) {
        let measured = on.as_ref().map(|b| format!(", measured on {b}")).unwrap_or_default();
        match checks.iter().find(|c| c.check == d.check) {
            Some(c) if d.inconclusive(&c.facts) => inconclusive.push(Judged {
                check: not_told(c, d, &measured),
                defect: Some(d.id.clone()),
                measured_on: on.clone(),
                ..Judged::default()
            }),
            found => {
                let how = if found.is_some() { "the check passed" } else { "the check never ran" };
                unexpected.push(format!(
                    "known defect `{}` ({}{measured}) did not show: {how}; drop it from the known-defects list",
                    d.id, d.check
                ));
            }
        }
    }
    let unseen = listing
        .other_accel
        .iter()
        .filter(|(d, _)| not_failed(d))
        .map(|(d, on)| format!("known defect `{}` ({}) not shown under this accelerator, listed for {} (measured on {on}): not a failure", d.id, d.check, d.accel.join(" or ")))
        .collect();
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
    Judgement { verdict, inconclusive, not_shown, unseen }
}

/// A listed entry's passed check, its evidence saying why the run does not
/// tell a fix: a race's count is a fact of this machine and the order on
/// the wire did not say "commits first"; another intermittent defect's run
/// was too short for its listed rate.
fn not_told(c: &CheckResult, d: &KnownDefect, measured: &str) -> CheckResult {
    let mut c = c.clone();
    let n = c.facts.get("n").map(Fact::to_string).unwrap_or_default();
    let fact = |k: &str| c.facts.get(k).map(Fact::to_string).unwrap_or_else(|| "?".into());
    c.evidence = if d.stale_kinds.is_empty() {
        format!(
            "intermittent, not seen in {n} trials: too few to tell a fix (listed rate {:.3} %{measured}; a defect at a quarter of it would go unseen with probability above {:.1} %): {}",
            d.rate.unwrap_or(0.0) * 100.0,
            FALSE_PASS * 100.0,
            c.evidence
        )
    } else {
        let order = match wire_order(&c.facts) {
            Some(_) => format!(
                "the memory table reached the backend before the ack for {} of {} acked requests",
                fact("table_first"),
                fact("acked")
            ),
            None => format!("{} acked requests, fewer than the {MIN_ACKED} the order on the wire needs", fact("acked")),
        };
        format!(
            "race not seen in {n} trials{measured}: a count is a fact of this machine, not a fix; {order}; `--compare` against a baseline tells a change of rate: {}",
            c.evidence
        )
    };
    c
}
