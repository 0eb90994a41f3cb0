//! The mapping manager: owns the host files, sends map/unmap requests through
//! the backend channel, and keeps the ledger of what each region should show.
//! It records what the frontend answered; it never judges (verdicts do).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::channel::{BackendChannel, Reply, ShmemMsg, ShmemOp};
use crate::files::HostFile;
use crate::spec::DeviceSpec;

/// Flag bit 0 of SHMEM_MAP: map read-write (0 = read-only).
pub const MAP_RW: u64 = 1;

/// One mapping the frontend accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub shmid: u8,
    pub shm_offset: u64,
    pub len: u64,
    pub file: String,
    pub fd_offset: u64,
    pub rw: bool,
}

/// What one byte of a region should show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Nothing is mapped here.
    Unmapped,
    /// This byte of the file.
    Byte(u8),
}

/// Something the frontend accepted that the ledger cannot make sense of:
/// evidence of a wrong frontend, kept for the verdicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A map was accepted over an existing mapping.
    OverlapAccepted { new: LedgerEntry, existing: LedgerEntry },
    /// An unmap was accepted for a range that is not exactly one mapping.
    UnmapOfUnknownRange { shmid: u8, shm_offset: u64, len: u64 },
}

/// A request whose ack we have, with what it meant for the ledger.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub op: ShmemOp,
    pub msg: ShmemMsg,
    pub with_fd: bool,
    pub reply: Reply,
    pub anomaly: Option<Anomaly>,
}

impl Outcome {
    pub fn accepted(&self) -> bool {
        self.reply.ack == 0
    }
}

/// Why the manager could not do what it was asked (not a frontend verdict).
#[derive(Debug)]
pub enum ManagerError {
    UnknownFile(String),
    FileExists(String),
    Io { what: String, err: io::Error },
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::UnknownFile(n) => write!(f, "no host file named {n:?}"),
            ManagerError::FileExists(n) => write!(f, "a host file named {n:?} already exists"),
            ManagerError::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for ManagerError {}

fn io_ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> ManagerError {
    let what = what.into();
    move |err| ManagerError::Io { what, err }
}

/// Which fd to attach to a request.
#[derive(Clone, Copy, Debug)]
pub enum Attach<'a> {
    None,
    File(&'a str),
    /// The file re-opened read-only (through /proc/self/fd).
    ReadOnly(&'a str),
}

/// Owns files and the ledger; talks to one frontend through one channel.
pub struct MappingManager {
    spec: DeviceSpec,
    channel: Arc<BackendChannel>,
    files: BTreeMap<String, HostFile>,
    ledger: Vec<LedgerEntry>,
}

impl MappingManager {
    pub fn new(spec: DeviceSpec, channel: Arc<BackendChannel>) -> Self {
        MappingManager { spec, channel, files: BTreeMap::new(), ledger: Vec::new() }
    }

    pub fn spec(&self) -> &DeviceSpec {
        &self.spec
    }

    pub fn create_file(&mut self, name: &str, size: u64) -> Result<&HostFile, ManagerError> {
        if self.files.contains_key(name) {
            return Err(ManagerError::FileExists(name.into()));
        }
        let f = HostFile::create(name, size).map_err(io_ctx(format!("creating host file {name:?} ({size:#x} bytes)")))?;
        Ok(self.files.entry(name.to_string()).or_insert(f))
    }

    pub fn file(&self, name: &str) -> Result<&HostFile, ManagerError> {
        self.files.get(name).ok_or_else(|| ManagerError::UnknownFile(name.into()))
    }

    /// Asks the frontend to map `len` bytes of `file` at `fd_offset` into
    /// region `shmid` at `shm_offset`.
    pub fn map(&mut self, shmid: u8, file: &str, fd_offset: u64, shm_offset: u64, len: u64, rw: bool) -> Result<Outcome, ManagerError> {
        let msg = ShmemMsg { shmid, fd_offset, shm_offset, len, flags: if rw { MAP_RW } else { 0 } };
        self.send(ShmemOp::Map, msg, Attach::File(file))
    }

    /// Asks the frontend to unmap exactly the mapping at `shm_offset`, `len`.
    pub fn unmap(&mut self, shmid: u8, shm_offset: u64, len: u64) -> Result<Outcome, ManagerError> {
        let msg = ShmemMsg { shmid, shm_offset, len, ..ShmemMsg::default() };
        self.send(ShmemOp::Unmap, msg, Attach::None)
    }

    /// Sends any request, malformed ones included (no fd, len 0, overflow,
    /// unknown flags, unknown shmid), and updates the ledger from the ack.
    pub fn send(&mut self, op: ShmemOp, msg: ShmemMsg, attach: Attach<'_>) -> Result<Outcome, ManagerError> {
        let reopened;
        let (fd, file_name) = match attach {
            Attach::None => (None, None),
            Attach::File(name) => (Some(self.file(name)?.file().as_raw_fd()), Some(name.to_string())),
            Attach::ReadOnly(name) => {
                let path = format!("/proc/self/fd/{}", self.file(name)?.file().as_raw_fd());
                reopened = std::fs::File::open(&path).map_err(io_ctx(format!("re-opening {name:?} read-only")))?;
                (Some(reopened.as_raw_fd()), Some(name.to_string()))
            }
        };
        let reply = self
            .channel
            .request(op, &msg.to_bytes(), fd)
            .map_err(io_ctx(format!("sending {op:?} {msg:?} to the frontend")))?;
        let mut outcome = Outcome { op, msg, with_fd: fd.is_some(), reply, anomaly: None };
        if outcome.accepted() {
            outcome.anomaly = match op {
                ShmemOp::Map => self.record_map(msg, file_name.unwrap_or_default()),
                ShmemOp::Unmap => self.record_unmap(msg),
            };
        }
        Ok(outcome)
    }

    fn record_map(&mut self, msg: ShmemMsg, file: String) -> Option<Anomaly> {
        let new = LedgerEntry {
            shmid: msg.shmid,
            shm_offset: msg.shm_offset,
            len: msg.len,
            file,
            fd_offset: msg.fd_offset,
            rw: msg.flags & MAP_RW != 0,
        };
        let end = new.shm_offset.saturating_add(new.len);
        let existing = self
            .ledger
            .iter()
            .find(|e| e.shmid == new.shmid && e.shm_offset < end && new.shm_offset < e.shm_offset + e.len)
            .cloned();
        self.ledger.push(new.clone());
        existing.map(|existing| Anomaly::OverlapAccepted { new, existing })
    }

    fn record_unmap(&mut self, msg: ShmemMsg) -> Option<Anomaly> {
        match self.ledger.iter().position(|e| e.shmid == msg.shmid && e.shm_offset == msg.shm_offset && e.len == msg.len) {
            Some(i) => {
                self.ledger.remove(i);
                None
            }
            None => Some(Anomaly::UnmapOfUnknownRange { shmid: msg.shmid, shm_offset: msg.shm_offset, len: msg.len }),
        }
    }

    /// The backend channel, shared with whoever must be able to close it.
    pub fn channel(&self) -> &Arc<BackendChannel> {
        &self.channel
    }

    /// The frontend dropped every mapping (device reset): so does the ledger.
    pub fn forget_all(&mut self) {
        self.ledger.clear();
    }

    /// Live mappings, oldest first.
    pub fn ledger(&self) -> &[LedgerEntry] {
        &self.ledger
    }

    /// What `len` bytes of region `shmid` at `offset` should show now. Where
    /// accepted mappings overlap (a wrong frontend), the newest wins, as a
    /// fixed mapping over another would.
    pub fn expected(&self, shmid: u8, offset: u64, len: u64) -> Result<Vec<Expect>, ManagerError> {
        let mut out = vec![Expect::Unmapped; len as usize];
        for e in self.ledger.iter().filter(|e| e.shmid == shmid) {
            let lo = e.shm_offset.max(offset);
            let hi = (e.shm_offset + e.len).min(offset + len);
            if lo >= hi {
                continue;
            }
            let bytes = self.file(&e.file)?.read(e.fd_offset + (lo - e.shm_offset), hi - lo).map_err(io_ctx(format!(
                "reading file {:?} for the expected view of shmid {shmid}",
                e.file
            )))?;
            for (i, b) in bytes.into_iter().enumerate() {
                out[(lo - offset) as usize + i] = Expect::Byte(b);
            }
        }
        Ok(out)
    }
}
