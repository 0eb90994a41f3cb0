//! Carries out scenario steps on one target (QEMU or the model) and records
//! each check's outcome with its evidence. One function per step kind, in
//! `setup` (files, writes, resets, faults), `requests` (map, unmap,
//! map-many) and `looks` (every `expect-*`); the doorbell probe is
//! `vm::probe`. Checks never stop a scenario; a step that cannot be carried
//! out does. Nothing here judges: verdicts are `vm::verdict`'s.

mod looks;
mod requests;
mod setup;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmem_judge::check::{CheckResult, FRONTEND_SURVIVES};
use super::error::RunError;
use shmem_judge::outcome::ErrorKind;
use super::guest::{Guest, GuestError};
use super::qemu::DEATH_GRACE;
use super::scenario::{Scenario, Step};
use crate::backend::{FileId, MemTable, Recorder};
use crate::channel::ShmemOp;
use crate::manager::{ManagerError, MappingManager, Outcome};
use crate::server::BackendServer;

/// How long a memory-table update may take to arrive after an ack.
pub const MEM_TABLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a frontend may take to release a file after a reset or unmap.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

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
            StepError::Manager(ManagerError::Io { .. }) | StepError::HostFile { .. } | StepError::Backend(_) => ErrorKind::Io,
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
    expected_death: bool,
    /// Ack latencies of accepted maps and unmaps, for the benchmarks.
    pub map_latencies: Vec<Duration>,
    pub unmap_latencies: Vec<Duration>,
    /// Ack-to-memory-table lags measured by `expect-mem-table`.
    pub table_lags: Vec<Duration>,
    last_ack: Option<Instant>,
    /// The backend sends requests from the thread that serves the frontend.
    pub single_threaded: bool,
}

/// How long a single-threaded backend serves the frontend after an accepted
/// request, waiting for the memory table that commits it.
const SETTLE: Duration = Duration::from_secs(1);

impl Target {
    pub fn new(mgr: MappingManager, guest: Box<dyn Guest>, server: BackendServer) -> Self {
        let recorder = server.recorder().clone();
        Target { mgr, guest, recorder, server: Some(server), expected_death: false, map_latencies: Vec::new(), unmap_latencies: Vec::new(), table_lags: Vec::new(), last_ack: None, single_threaded: false }
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
    fn file_name(scn: &Scenario, name: &str) -> String {
        format!("{}/{name}", scn.name)
    }

    /// How the frontend died, waiting up to `grace` for a dying one to show
    /// as gone (it closes its sockets before it can be reaped).
    fn gone_within(&mut self, grace: Duration) -> Option<super::guest::Death> {
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
    fn death_within(&mut self, grace: Duration) -> Option<super::guest::Death> {
        if self.expected_death { None } else { self.gone_within(grace) }
    }
}

/// Runs the scenario's steps. A frontend that dies is recorded as the
/// failed check `frontend-survives` (with the step that killed it) and ends
/// the scenario; one that lives to the end passes it. Any other step error
/// is returned as an error.
pub fn run_steps(scn: &Scenario, t: &mut Target) -> Result<Vec<CheckResult>, RunError> {
    let mut checks = Vec::new();
    let mut ended = format!("the {} ran through every step", t.guest.kind());
    for (n, (step, label)) in scn.steps.iter().zip(&scn.labels).enumerate() {
        let res = run_step(scn, label, step, t, &mut checks);
        if let Some(death) = t.death_within(if res.is_err() { DEATH_GRACE } else { Duration::ZERO }) {
            checks.push(death.check(label));
            return Ok(checks);
        }
        res.map_err(|source| RunError::Step { n: n + 1, label: label.clone(), kind: step.kind(), source })?;
        // After a deadlock the backend channel is unusable (a late ack would
        // be taken for the next request's): no later step could say anything.
        if checks.iter().any(|c| !c.passed && c.facts.contains_key("deadlock")) {
            ended = format!("the {} lived until a deadlock at step {} ({label:?}) ended the scenario", t.guest.kind(), n + 1);
            break;
        }
    }
    if !t.expected_death {
        checks.push(CheckResult::new(FRONTEND_SURVIVES, true, ended));
    }
    Ok(checks)
}

/// Whether a memory table maps `len` bytes of file `id` at guest address `addr`.
pub(super) fn table_holds(m: &MemTable, addr: u64, len: u64, id: FileId) -> bool {
    m.regions.iter().any(|r| r.guest_addr == addr && r.size == len && r.file == Some(id))
}

/// Carries out one step: the function of its kind.
fn run_step(scn: &Scenario, label: &str, step: &Step, t: &mut Target, checks: &mut Vec<CheckResult>) -> Result<(), StepError> {
    let file = |name: &str| Target::file_name(scn, name);
    match step {
        Step::File { name, size } => setup::file(t, &file(name), size.0),
        Step::Fill { file: f, seed, offset, len } => setup::fill(t, &file(f), *seed, offset.0, len.map(|l| l.0)),
        Step::GuestReset { init } => setup::guest_reset(t, *init),
        Step::GuestWrite { shmid, offset, len, seed } => Ok(t.guest.fill(*shmid, offset.0, len.0, *seed)?),
        Step::HostWrite { file: f, offset, len, seed } => setup::host_write(t, &file(f), offset.0, len.0, *seed),
        Step::Inject { fault } => setup::inject(t, *fault),
        Step::Map { .. } => requests::map(t, &file, label, step, checks),
        Step::Unmap { .. } => requests::unmap(t, label, step, checks),
        Step::MapMany { check, shmid, file: f, count, len, expect_accepted } => requests::map_many(t, check, (*shmid, &file(f)), (*count, len.0, *expect_accepted), checks),
        Step::ExpectGuest { check, shmid, offset, len, seed } => looks::expect_guest(t, check, (*shmid, offset.0, len.0), *seed, checks),
        Step::ExpectGuestNot { check, shmid, offset, len, file: f, fd_offset } => looks::expect_guest_not(t, check, (*shmid, offset.0, len.0), &file(f), fd_offset.0, checks),
        Step::ExpectFile { check, file: f, offset, len, seed } => looks::expect_file(t, check, &file(f), (offset.0, len.0), *seed, checks),
        Step::ExpectAlive { check } => looks::expect_alive(t, check, checks),
        Step::ExpectDigest { check, shmid, file: f, offset, len, digest } => looks::expect_digest(t, check, (*shmid, f.as_deref().map(file)), (offset.0, len.0), digest, checks),
        Step::ExpectReleased { check, file: f } => looks::expect_released(t, check, &file(f), f, checks),
        Step::ExpectMemTable { check, shmid, shm_offset, len, file: f, present } => looks::expect_mem_table(t, check, (*shmid, shm_offset.0, len.0), (&file(f), f), *present, checks),
        Step::ExpectNoAnswer { check, .. } => looks::expect_no_answer(t, check, checks),
        Step::ProbeReplyBeforeCommit { .. } => super::probe::run(t, &scn.name, step, checks),
    }
}
