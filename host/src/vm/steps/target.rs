//! What every step acts on (`Target`: one frontend, its mapping manager,
//! guest and backend recorder) and what a step that cannot be carried out
//! raises (`StepError`), with the waits the steps share.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmem_judge::outcome::ErrorKind;

use crate::backend::{FileId, MemTable, Recorder};
use crate::channel::ShmemOp;
use crate::manager::{ManagerError, MappingManager, Outcome};
use crate::server::BackendServer;
use crate::vm::guest::{Death, Guest, GuestError};
use crate::vm::scenario::Scenario;

/// How long a memory-table update may take to arrive after an ack: QEMU's
/// follow its replies by 0.05-5 ms on the wire (the relay's record, under
/// the suite's load; 5 ms the most in a 25800-request churn), so 1 s is
/// two hundred times the slowest seen; it is
/// also how long a check waits to call a table that never comes absent.
pub const MEM_TABLE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a frontend may take to release a file after a reset or unmap.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `guest` still holds of each of `files` (its fd and mapping words),
/// once it has had [`RELEASE_TIMEOUT`] to let them go, polled every 20 ms;
/// the files it let go are left out.
pub fn held_after_release<G: Guest + ?Sized>(guest: &G, files: &[FileId]) -> Result<Vec<Vec<String>>, GuestError> {
    let start = Instant::now();
    loop {
        let held: Vec<Vec<String>> = files
            .iter()
            .map(|&f| guest.holds(f))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|h| !h.is_empty())
            .collect();
        if held.is_empty() || start.elapsed() >= RELEASE_TIMEOUT {
            return Ok(held);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Why a step could not be carried out (a check that fails is no error).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// A host file could not be read or written.
    #[error("host file {name:?}: {source}")]
    HostFile { name: String, source: io::Error },
    /// The backend could not be stopped (`kill-backend`).
    #[error("stopping the backend: {0}")]
    Backend(String),
    /// A request the step needs accepted was refused.
    #[error("{0}")]
    Refused(String),
    /// The step cannot be carried out as written.
    #[error("{0}")]
    BadInput(String),
    /// The frontend died in the middle of a step that cannot record it.
    #[error("{0}")]
    FrontendDied(String),
    #[error("interrupted")]
    Interrupted,
}

impl StepError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StepError::Guest(g) => g.kind(),
            StepError::Manager(ManagerError::Io { .. }) | StepError::HostFile { .. } | StepError::Backend(_) => {
                ErrorKind::Io
            }
            StepError::Manager(_) | StepError::BadInput(_) => ErrorKind::BadInput,
            StepError::Refused(_) => ErrorKind::Refused,
            StepError::FrontendDied(_) => ErrorKind::Dead,
            StepError::Interrupted => ErrorKind::Interrupted,
        }
    }

    /// For a host file operation's `map_err`.
    pub fn host_file(name: &str) -> impl FnOnce(io::Error) -> StepError + '_ {
        move |source| StepError::HostFile { name: name.to_string(), source }
    }
}

/// One frontend with what the runner needs to drive and observe it.
pub struct Target {
    pub mgr: MappingManager,
    pub guest: Box<dyn Guest>,
    pub recorder: Arc<Recorder>,
    /// The backend; `None` once a `kill-backend` fault stopped it.
    pub server: Option<BackendServer>,
    /// A fault was injected that kills the frontend: its death is no failure.
    pub(super) expected_death: bool,
    /// Ack latencies of accepted maps and unmaps, for the benchmarks.
    pub map_latencies: Vec<Duration>,
    pub unmap_latencies: Vec<Duration>,
    /// Ack-to-memory-table lags measured by `expect-mem-table`.
    pub table_lags: Vec<Duration>,
    pub(super) last_ack: Option<Instant>,
    /// The backend sends requests from the thread that serves the frontend.
    pub single_threaded: bool,
    /// The recording relay QEMU talks to the backend through, where one runs.
    pub relay: Option<crate::relay::Relay>,
}

/// How long a single-threaded backend serves the frontend after an accepted
/// request, waiting for the memory table that commits it.
const SETTLE: Duration = Duration::from_secs(1);

impl Target {
    pub fn new(mgr: MappingManager, guest: Box<dyn Guest>, server: BackendServer) -> Self {
        let recorder = server.recorder().clone();
        Target {
            mgr,
            guest,
            recorder,
            server: Some(server),
            expected_death: false,
            map_latencies: Vec::new(),
            unmap_latencies: Vec::new(),
            table_lags: Vec::new(),
            last_ack: None,
            single_threaded: false,
            relay: None,
        }
    }

    /// Whether a fault was injected that kills the frontend on purpose.
    pub fn expected_death(&self) -> bool {
        self.expected_death
    }

    /// Records an answered request: its ack latency, and the moment of the
    /// last ack. A single-threaded backend then serves the frontend until
    /// the memory table that commits an accepted request has arrived (it
    /// waits up to [`SETTLE`] here), as a careful one does before its next
    /// request: only a frontend that waits for that table before it replies
    /// deadlocks it.
    pub fn record_answer_and_settle(&mut self, o: &Outcome) {
        if self.single_threaded && o.accepted() {
            self.recorder.wait_for(SETTLE, |r| r.mem_tables.last().is_some_and(|m| m.at >= o.reply.at));
        }
        self.last_ack = Some(o.reply.at);
        if o.accepted() {
            match o.op {
                ShmemOp::Map => self.map_latencies.push(o.reply.latency),
                ShmemOp::Unmap => self.unmap_latencies.push(o.reply.latency),
            }
        }
    }

    /// The scenario's name for one of its host files (files are per scenario).
    pub(super) fn file_name(scn: &Scenario, name: &str) -> String {
        format!("{}/{name}", scn.name)
    }

    /// How the frontend died, waiting up to `grace` for a dying one to show
    /// as gone (it closes its sockets before it can be reaped).
    pub(super) fn gone_within(&mut self, grace: Duration) -> Option<Death> {
        let deadline = Instant::now() + grace;
        loop {
            if let Some(d) = self.guest.gone() {
                return Some(d);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// As [`Self::gone_within`], but none when the death was injected on purpose.
    pub(super) fn death_within(&mut self, grace: Duration) -> Option<Death> {
        if self.expected_death { None } else { self.gone_within(grace) }
    }
}

/// Whether a memory table maps `len` bytes of file `id` at guest address `addr`.
pub(crate) fn table_holds(m: &MemTable, addr: u64, len: u64, id: FileId) -> bool {
    m.regions.iter().any(|r| r.guest_addr == addr && r.size == len && r.file == Some(id))
}
