//! How a known-defect entry relates to a run: which build, accelerator and
//! backend it applies to (exactly, or carried over from another build of the
//! same upstream version), whether a failure shows its signature, whether a
//! race is worse than listed, and the intermittent rule. Pure functions.

use crate::check::{Fact, Facts, facts_text};
use crate::defects::KnownDefect;
use crate::significance::{self, Counts};

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
        let p = significance::above_highest(&run, (highest.stale, highest.of));
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
pub fn probe_counts(facts: &Facts) -> Option<Counts> {
    let blocks = facts.get("blocks").and_then(|b| significance::blocks_parse(&b.to_string())).unwrap_or_default();
    Some(Counts { stale: facts.get("stale")?.count()?, n: facts.get("n")?.count()?, blocks })
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

