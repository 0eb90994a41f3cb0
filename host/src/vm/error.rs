//! The error of running one scenario on one target. Each layer has its own
//! error enum (`QemuError`, `GuestError`, `StepError`, `RunError`); each
//! says its kind (`shmem_judge::outcome::ErrorKind`), and a `RunError`
//! reaches the judge as a `Failure`.

use shmem_judge::outcome::{ErrorKind, Failure};

use super::guest::GuestError;
use super::steps::target::StepError;

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

impl From<RunError> for Failure {
    fn from(e: RunError) -> Self {
        Failure { kind: e.kind(), message: e.to_string() }
    }
}
