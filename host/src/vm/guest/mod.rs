//! The guest side of a scenario, as one trait with two implementations: a
//! real QEMU guest driven through the agent on its serial port
//! ([`qemu_guest`]) and the reference model ([`model_guest`]). Both answer
//! the same questions; neither judges. The agent's line protocol, the guest
//! clock and CPU pinning live in their own modules.

pub mod agent;
pub mod clock;
pub mod model_guest;
pub mod pinning;
pub mod qemu_guest;

use std::fmt;
use std::io;
use std::time::Duration;

use super::qemu::QemuError;
use super::scenario::Fault;
use crate::backend::FileId;
use crate::files::{HostMapping, fnv1a64};
use shmem_judge::check::{CheckResult, FRONTEND_SURVIVES, said_fact};
use shmem_judge::outcome::ErrorKind;

pub use clock::{CopyRounds, GuestClock};
pub use model_guest::ModelGuest;
pub use qemu_guest::QemuGuest;
use shmem_pattern::doorbell;

/// Time one agent command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a guest could not answer a question (never a verdict).
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The QEMU process: it ended, timed out, was interrupted, or its socket failed.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// The agent answered `err`.
    #[error("agent refused `{cmd}`: {text}")]
    AgentRefused { cmd: String, text: String },
    /// An answer that does not read as the protocol says.
    #[error("{what}: {text:?}")]
    BadAnswer { what: String, text: String },
    /// Waited for the guest through shared memory, in vain.
    #[error("{what} within {after:?}")]
    Timeout { what: String, after: Duration },
    /// The reference model failed to do what was asked.
    #[error("the model, {what}: {source}")]
    Model { what: &'static str, source: io::Error },
    /// The model died.
    #[error("the model died: {0}")]
    ModelDead(String),
    /// A request this guest cannot carry out (too large, out of order, not supported).
    #[error("{0}")]
    BadRequest(String),
}

impl GuestError {
    /// The kind of failure, for callers that decide by kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GuestError::Qemu(q) => q.kind(),
            GuestError::AgentRefused { .. } => ErrorKind::Refused,
            GuestError::BadAnswer { .. } => ErrorKind::Protocol,
            GuestError::Timeout { .. } => ErrorKind::Timeout,
            GuestError::Model { .. } => ErrorKind::Io,
            GuestError::ModelDead(_) => ErrorKind::Dead,
            GuestError::BadRequest(_) => ErrorKind::BadInput,
        }
    }

    fn model(what: &'static str) -> impl FnOnce(io::Error) -> GuestError {
        move |source| GuestError::Model { what, source }
    }
}

/// What the guest saw in a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Bytes were readable: their digest, whether all were zero, the first few.
    Bytes { digest: u64, zero: bool, head: String },
    /// The range could not be read at all (the model's unmapped ranges).
    Inaccessible,
}

impl Observed {
    pub fn of(data: &[u8]) -> Self {
        let head = data.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Observed::Bytes { digest: fnv1a64(data), zero: data.iter().all(|&b| b == 0), head }
    }

    /// The digest of what was seen, a range where nothing is mapped counting
    /// as `len` zero bytes (QEMU reads zeros there, the model cannot read).
    pub fn digest_or_zeros(&self, len: u64) -> u64 {
        match self {
            Observed::Bytes { digest, .. } => *digest,
            Observed::Inaccessible => {
                let mut h = shmem_pattern::Fnv1a64::new();
                for _ in 0..len {
                    h.update(0);
                }
                h.value()
            }
        }
    }

    /// Short form for known-defect signatures: "zeros", "inaccessible", "digest X".
    pub fn fact(&self) -> String {
        match self {
            Observed::Bytes { zero: true, .. } => "zeros".into(),
            Observed::Bytes { digest, .. } => format!("digest {digest:016x}"),
            Observed::Inaccessible => "inaccessible".into(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Observed::Bytes { digest, zero, head } => {
                format!("digest {digest:016x}{} first bytes {head}", if *zero { " (all zero)" } else { "" })
            }
            Observed::Inaccessible => "inaccessible".into(),
        }
    }
}

/// How a frontend ended (or failed to end cleanly): its exit as the
/// known-defect signatures name it ("signal 11 (SIGSEGV)", "status 1"),
/// and the tail of what it said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Death {
    pub exit: String,
    pub said: String,
}

impl Death {
    /// `frontend-survives`, failed: how the frontend died and at which step.
    pub fn check(&self, step: &str) -> CheckResult {
        CheckResult::new(FRONTEND_SURVIVES, false, format!("died at step {step:?}: {self}"))
            .with("exit", &self.exit)
            .with("step", step)
            .with("said", said_fact(&self.said))
    }
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.said.as_str() {
            "" => write!(f, "{}; it said nothing", self.exit),
            said => write!(f, "{}; it said last:\n{said}", self.exit),
        }
    }
}

/// What the guest saw of the probe's target on one ring: the first 8 bytes,
/// read first thing, then again at once, then after about 50 microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProbeReads {
    /// `None` where nothing readable is mapped (the model's holes).
    pub values: [Option<u64>; doorbell::READ_COUNT],
    /// How long each read took, when the guest has a clock (QEMU's does).
    pub micros: [Option<f64>; doorbell::READ_COUNT],
}

/// What the guest does first when rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingMode {
    Read,
    /// Write this marker into the target's first 8 bytes, then read.
    Write(u64),
}

/// One shared-memory region as the guest found it: shmid, offset in the
/// shared-memory BAR, length.
pub type RegionWindow = (u8, u64, u64);

/// The guest-physical address of region `shmid`, given the BAR's address
/// and the regions as the guest found them.
fn region_addr_in(bar: u64, layout: &[RegionWindow], shmid: u8) -> Result<u64, GuestError> {
    let (_, offset, _) = layout
        .iter()
        .find(|r| r.0 == shmid)
        .ok_or_else(|| GuestError::BadRequest(format!("the guest found no region shmid {shmid}")))?;
    Ok(bar + offset)
}

pub trait Guest {
    /// "qemu" or "model".
    fn kind(&self) -> &'static str;
    fn observe(&mut self, shmid: u8, offset: u64, len: u64) -> Result<Observed, GuestError>;
    /// Writes pattern `seed` as the guest CPU would. A write the frontend
    /// refuses (the model's read-only mappings) is no error: checks look at
    /// what the guest and the host see afterwards.
    fn fill(&mut self, shmid: u8, offset: u64, len: u64, seed: u8) -> Result<(), GuestError>;
    /// Device reset (status 0), then, if `init`, re-initialisation to DRIVER_OK.
    fn reset(&mut self, init: bool) -> Result<(), GuestError>;
    /// Guest-physical address of region `shmid`, from what the guest found
    /// (the BAR's address and the region's capability), never assumed.
    fn region_addr(&self, shmid: u8) -> Result<u64, GuestError>;
    /// The regions as the guest found them, by shmid.
    fn layout(&self) -> Result<Vec<RegionWindow>, GuestError>;
    /// A position in what the frontend says (QEMU's stderr, the model's reasons).
    fn log_mark(&self) -> u64;
    /// What the frontend said since `mark`.
    fn log_since(&self, mark: u64) -> String;
    /// Where the frontend still holds `file` (fds, memory mappings); empty when released.
    fn holds(&self, file: FileId) -> Result<Vec<String>, GuestError>;
    /// How the frontend died, once it has.
    fn gone(&mut self) -> Option<Death>;
    /// The frontend's logs, for a report of a failure.
    fn log_text(&self) -> String;
    /// Guest copy timings through region `shmid` (mapped read-write, `len`
    /// bytes from offset 0) and in guest RAM, `rounds` rounds of `iterations`
    /// copies of half of `len`, on the guest's calibrated fine clock.
    fn bandwidth(&mut self, shmid: u8, len: u64, iterations: u32, rounds: u32) -> Result<CopyRounds, GuestError>;
    /// Drops the clock calibration the copy timings use, so the next
    /// `bandwidth` calibrates anew (a guest without one has nothing to drop).
    fn forget_clock(&mut self) {}
    /// Asks the frontend to quit (QEMU: the guest powers off) and says how
    /// it ended: `Ok(exit)` for a clean end (status 0, no signal), else how
    /// it ended instead. Nothing else may be asked after.
    fn shutdown(&mut self) -> Result<String, Death>;
    /// Fault injection on the frontend or guest side (`kill-backend` is the runner's).
    fn inject(&mut self, fault: Fault) -> Result<(), GuestError>;
    /// Asks for a sign of life within `timeout`: the QEMU guest's agent
    /// answers a ping; the model has not died and has applied everything it
    /// acked (a sync).
    fn sign_of_life(&mut self, timeout: Duration) -> Result<(), GuestError>;
    /// Starts the guest side of the reply-before-commit probe: the guest
    /// spins on the doorbell word at `doorbell` (a read-write mapping of the
    /// file `host` maps) and reads `target` first thing on each ring. Until
    /// [`Guest::probe_stop`], only rings may be asked. Says under which
    /// conditions it runs (vCPUs, pinning).
    fn probe_start(&mut self, host: HostMapping, doorbell: (u8, u64), target: (u8, u64)) -> Result<String, GuestError>;
    /// Rings the doorbell and waits, through shared memory only, for what
    /// the guest saw.
    fn probe_ring(&mut self, mode: RingMode) -> Result<ProbeReads, GuestError>;
    /// Ends the probe: the guest answers commands again. Also what a
    /// dropped probe guard calls, so it must be harmless when no probe runs.
    fn probe_stop(&mut self) -> Result<(), GuestError>;
}
