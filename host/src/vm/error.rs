//! The kinds of failure the runner's callers decide by, and the error of
//! running one scenario on one target. Each layer has its own error enum
//! (`QemuError`, `GuestError`, `StepError`, `RunError`); each says its kind.

use serde::{Deserialize, Serialize};

use super::guest::GuestError;
use super::steps::StepError;

/// What kind of failure an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Waited in vain.
    Timeout,
    /// The frontend (QEMU or the model) is gone.
    Dead,
    /// Asked, and refused (the agent said `err`, a request was nacked where it must not be).
    Refused,
    /// A scenario, option or request that cannot be carried out as written.
    BadInput,
    /// An answer that does not follow the protocol.
    Protocol,
    /// The host's own I/O.
    Io,
    /// Ctrl-C.
    Interrupted,
    /// The appliance itself failed (a panic, a worker that did not report).
    Appliance,
}

/// Why a scenario could not be run to its end on one target.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A step could not be carried out.
    #[error("step {n} ({label:?}, `do = \"{kind}\"`): {source}")]
    Step { n: usize, label: String, kind: &'static str, source: StepError },
    /// The device reset before the scenario failed.
    #[error("resetting the device before the scenario: {0}")]
    Prepare(GuestError),
    /// The runner panicked: a bug of the appliance.
    #[error("the runner panicked (a bug of the appliance, please report it): {0}")]
    Panicked(String),
    /// Setting the target up failed (boot, backend, model), or the scenario did not run.
    #[error("{message}")]
    Setup { kind: ErrorKind, message: String },
}

impl RunError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunError::Step { source, .. } => source.kind(),
            RunError::Prepare(g) => g.kind(),
            RunError::Panicked(_) => ErrorKind::Appliance,
            RunError::Setup { kind, .. } => *kind,
        }
    }

    pub fn setup(kind: ErrorKind, message: impl Into<String>) -> Self {
        RunError::Setup { kind, message: message.into() }
    }
}

/// A [`RunError`] as it crosses a process boundary (own-boot workers) and
/// reaches the verdict: its kind and its words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Self {
        Failure { kind: e.kind(), message: e.to_string() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What running a scenario on one target gave: its checks, or why it could not finish.
pub type RunOutcome = Result<Vec<super::check::CheckResult>, Failure>;
