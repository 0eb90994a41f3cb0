//! How a known-defect entry relates to a run: which build, accelerator and
//! backend it applies to (exactly, or carried over from another build of the
//! same upstream version), whether a failure shows its signature, whether a
//! race is worse than listed, and the intermittent rule. Pure functions.

use crate::check::{Fact, Facts, facts_text};
use crate::defects::{KnownDefect, QEMU_ACCELS};
use crate::significance::Counts;

/// How a listed entry relates to a run's build and accelerator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applies {
    /// Listed for this exact build and accelerator.
    Exact,
    /// Listed for this accelerator and another build of the same upstream
    /// version (another Debian revision): it carries over, measured on that build.
    Carried(String),
    /// Listed for this build (or another of its upstream version) under
    /// another accelerator, and not accelerator-specific: it carries over,
    /// measured on the `"BUILD/ACCEL"` named. A failure that shows it is
    /// known; an entry that does not show is named, not a failure (the
    /// defect may need the other accelerator's timing).
    OtherAccel(String),
    /// Not listed for this build's upstream version, or accelerator-specific
    /// and not listed for this accelerator.
    Elsewhere,
}

/// The upstream version of a build: "11.1.3" of "11.1.3 (Debian 1:11.1.3+ds-1)".
pub fn upstream(build: &str) -> &str {
    build.split_whitespace().next().unwrap_or("")
}

/// How a list of builds relates to `build`: `Some(None)` when it names it,
/// `Some(Some(other))` when it names another of its upstream version.
fn build_relation(builds: &[String], build: &str) -> Option<Option<String>> {
    if builds.iter().any(|q| q == build) {
        return Some(None);
    }
    builds.iter().find(|q| upstream(q) == upstream(build)).map(|q| Some(q.clone()))
}

impl KnownDefect {
    /// How this entry relates to a run on `build` under `accel`.
    pub fn applies_to(&self, build: &str, accel: &str) -> Applies {
        let Some(on) = build_relation(&self.qemu, build) else { return Applies::Elsewhere };
        if !self.accel.iter().any(|a| a == accel) {
            return self.other_accel(on.as_deref().unwrap_or(build), accel);
        }
        if self.unmeasured.iter().any(|u| *u == format!("{build}/{accel}")) {
            return Applies::Carried(self.measured_pairs().into_iter().next().unwrap_or_default());
        }
        on.map_or(Applies::Exact, Applies::Carried)
    }

    /// An entry of `build` not listed for `accel` (a QEMU accelerator):
    /// carried over from the accelerators it lists, unless its signature is
    /// accelerator-specific.
    fn other_accel(&self, build: &str, accel: &str) -> Applies {
        let qemu_accels: Vec<&str> =
            self.accel.iter().map(String::as_str).filter(|a| QEMU_ACCELS.contains(a)).collect();
        if self.accel_specific || !QEMU_ACCELS.contains(&accel) || qemu_accels.is_empty() {
            return Applies::Elsewhere;
        }
        Applies::OtherAccel(format!("{build}/{}", qemu_accels.join(" or ")))
    }

    /// How this backend-list entry relates to `backend` (its exact
    /// `--version` line: no carry-over) behind `frontend` (QEMU's build,
    /// carried over as QEMU entries are; ignored on the model's row) under
    /// `accel` (carried over between QEMU's accelerators as QEMU entries are).
    pub fn applies_to_backend(&self, backend: &str, frontend: &str, accel: &str) -> Applies {
        if !self.qemu.iter().any(|b| b == backend) {
            return Applies::Elsewhere;
        }
        let on = if self.frontend.is_empty() { Some(None) } else { build_relation(&self.frontend, frontend) };
        let Some(on) = on else { return Applies::Elsewhere };
        if !self.accel.iter().any(|a| a == accel) {
            return self.other_accel(on.as_deref().unwrap_or(frontend), accel);
        }
        on.map_or(Applies::Exact, Applies::Carried)
    }

    /// Whether this entry is about this scenario and applies (exactly or
    /// carried over) to this build and accelerator.
    pub fn applies(&self, build: &str, accel: &str, scenario: &str) -> bool {
        self.scenario == scenario && self.applies_to(build, accel) != Applies::Elsewhere
    }

    /// For a race entry: why what the check saw is worse than listed, if it
    /// is: a stale kind it does not cover. Never a count: how often a race
    /// shows is a fact of the machine, not a threshold on another.
    pub fn worse_than_listed(&self, facts: &Facts) -> Option<String> {
        if self.stale_kinds.is_empty() {
            return None;
        }
        let kinds_text = facts.get("stale_kinds").map(Fact::to_string).unwrap_or_default();
        let kinds: Vec<&str> = kinds_text.split(" | ").filter(|k| !k.is_empty()).collect();
        let k = kinds.iter().find(|k| !self.stale_kinds.iter().any(|l| l == *k))?;
        Some(format!("stale kind {k:?} is not one the entry lists ({})", self.stale_kinds.join(", ")))
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
        let behind =
            if self.frontend.is_empty() { String::new() } else { format!(" behind {}", self.frontend.join(" or ")) };
        format!("{}{behind}", self.pairs().collect::<Vec<_>>().join(", "))
    }

    /// Whether a failed check's facts show this signature: every fact of
    /// it, `said` as a substring, every other fact exactly.
    pub fn matches(&self, facts: &Facts) -> bool {
        self.signature.iter().all(|(k, want)| {
            facts
                .get(k)
                .map(Fact::to_string)
                .is_some_and(|got| if k == "said" { got.contains(want.as_str()) } else { got == *want })
        })
    }

    /// The signature as `key=value, ...`.
    pub fn signature_text(&self) -> String {
        facts_text(&self.signature)
    }

    /// Whether a listed entry whose check passed (`passed`, its facts) is
    /// inconclusive rather than an unexpected pass.
    ///
    /// A race (an entry with `stale_kinds`): inconclusive unless the order
    /// on the wire tells a fix (every acked request of at least
    /// [`MIN_ACKED`] committed before its ack): a count of none in `n` is a
    /// fact of this machine, never a fix by itself.
    ///
    /// Another intermittent defect (the fuzzer's, with a `rate`): the run
    /// tells a fix only when a defect still there, at a quarter of its
    /// listed rate, would have shown with probability at least 99.9 %; so a
    /// false UNEXPECTED-PASS has probability at most 0.1 % per entry and run
    /// while the true rate is at least a quarter of the listed one.
    pub fn inconclusive(&self, passed: &Facts) -> bool {
        if !self.stale_kinds.is_empty() {
            return wire_order(passed) != Some(true);
        }
        let n = passed.get("n").and_then(Fact::count).map(|n| n as f64);
        match (self.rate, n) {
            (Some(rate), Some(n)) => miss_probability(rate / 4.0, n) > FALSE_PASS,
            _ => false,
        }
    }
}

/// The fewest acked requests a probe check needs before its order on the
/// wire is read: with fewer (a probe that stalled early), neither "commits
/// first" nor "replies first" is called.
pub const MIN_ACKED: u64 = 50;

/// A probe check's order on the wire: `Some(true)` when every acked request
/// had its memory table reach the backend before the ack (`table_first` =
/// `acked`: the window the race needs was never open), `Some(false)` when
/// some did not, `None` with fewer than [`MIN_ACKED`] acked requests.
pub fn wire_order(facts: &Facts) -> Option<bool> {
    let count = |k: &str| facts.get(k).and_then(Fact::count);
    match (count("acked"), count("table_first")) {
        (Some(a), Some(t)) if a >= MIN_ACKED => Some(t == a),
        _ => None,
    }
}

/// A probe check's counts from its facts: `stale` of `n`.
pub fn probe_counts(facts: &Facts) -> Option<Counts> {
    Some(Counts { stale: facts.get("stale")?.count()?, n: facts.get("n")?.count()? })
}

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
    /// Entries carried over from another accelerator, each with the
    /// `"BUILD/ACCEL"` it was measured on: a failure showing one is known,
    /// one not shown is named without failing.
    pub other_accel: Vec<(&'a KnownDefect, String)>,
    /// Entries of this scenario for other upstream versions (or, accelerator-specific, accelerators).
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
                Applies::OtherAccel(on) => l.other_accel.push((d, on)),
                Applies::Elsewhere => l.elsewhere.push(d),
            }
        }
        l
    }

    /// Entries that all apply exactly (a run of the build they list).
    pub fn exact(defects: &[&'a KnownDefect]) -> Self {
        Listing { applicable: defects.iter().map(|d| (*d, None)).collect(), ..Listing::default() }
    }

    /// This listing and `other`'s together (a frontend's and a backend's entries for one run).
    pub fn and(mut self, other: Listing<'a>) -> Self {
        self.applicable.extend(other.applicable);
        self.other_accel.extend(other.other_accel);
        self.elsewhere.extend(other.elsewhere);
        self
    }
}
