//! What running a scenario on one target gave the judge: its checks, or a
//! failure with the kind callers decide by (timeout, dead, refused, bad
//! input, ...) and its words. Data only.

use serde::{Deserialize, Serialize};

use crate::check::CheckResult;

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

/// Why a run could not finish, as it reaches the verdict (and crosses a
/// process boundary from an own-boot worker): its kind and its words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What running a scenario on one target gave: its checks, or why it could not finish.
pub type RunOutcome = Result<Vec<CheckResult>, Failure>;
