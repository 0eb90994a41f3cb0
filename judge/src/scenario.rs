//! One scenario judged on both targets: QEMU's row and the model's, each
//! with its verdict, its checks and how long it ran.

use std::time::Duration;

use crate::backend::wire::WireRecord;
use crate::check::CheckResult;
use crate::listing::Listing;
use crate::outcome::RunOutcome;
use crate::verdict::{Judged, Judgement, Verdict, judge_listed};

/// One scenario on both targets.
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    pub qemu: Verdict,
    /// Listed intermittent defects of QEMU not seen in a run too short to tell a fix.
    pub qemu_inconclusive: Vec<Judged>,
    /// Listed entries that did not show behind a FAIL, QEMU's and the model's.
    pub not_shown: [Vec<String>; 2],
    /// QEMU's entries carried over from another accelerator that did not
    /// show under this one: named, not a failure.
    pub qemu_unseen: Vec<String>,
    pub model: Verdict,
    pub qemu_time: Duration,
    pub model_time: Duration,
    pub qemu_checks: Vec<CheckResult>,
    pub model_checks: Vec<CheckResult>,
    /// QEMU's stderr and console tails when the QEMU verdict is not PASS.
    pub qemu_log: Option<String>,
    /// What the recording relay saw between QEMU and the backend, where one ran.
    pub qemu_wire: Option<WireRecord>,
}

impl ScenarioReport {
    /// Whether neither verdict fails the run (PASS, KNOWN-FAIL or SKIPPED on both targets).
    pub fn ok(&self) -> bool {
        self.qemu.ok() && self.model.ok()
    }
}

/// One scenario's run on one target, and how long it took.
pub type Run = (RunOutcome, Duration);

/// A scenario's report row: both runs judged (the model by `model_defects`:
/// a backend's, for a media scenario; none else).
pub fn report(
    scn: (&str, &str),
    qemu_only: bool,
    q: Run,
    m: Run,
    defects: (&Listing<'_>, &Listing<'_>),
    qlog: impl FnOnce() -> String,
) -> ScenarioReport {
    let qemu_checks = q.0.clone().unwrap_or_default();
    let model_checks = m.0.clone().unwrap_or_default();
    let Judgement { verdict: qemu, inconclusive, not_shown: qemu_gone, unseen } = judge_listed(q.0, defects.0);
    let (model, model_gone) = if qemu_only {
        (Verdict::Skipped("fault scenario: QEMU only".into()), Vec::new())
    } else {
        let j = judge_listed(m.0, defects.1);
        (j.verdict, j.not_shown)
    };
    let qemu_log = (!matches!(qemu, Verdict::Pass)).then(qlog);
    ScenarioReport {
        name: scn.0.to_string(),
        description: scn.1.to_string(),
        qemu,
        qemu_inconclusive: inconclusive,
        not_shown: [qemu_gone, model_gone],
        qemu_unseen: unseen,
        model,
        qemu_time: q.1,
        model_time: m.1,
        qemu_checks,
        model_checks,
        qemu_log,
        qemu_wire: None,
    }
}
