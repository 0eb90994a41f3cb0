//! The mapping manager: owns the host files, sends map/unmap requests through
//! the backend channel, and keeps the ledger of what each region should show.
//! The ledger holds what the scenario expects, never what a frontend merely
//! accepted; the manager records answers, never judges them, and never
//! panics whatever a frontend answers.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use shmem_proto::MAP_RW;

use crate::channel::{BackendChannel, MmapBytes, Reply, ShmemMsg, ShmemOp};
use crate::files::HostFile;
use crate::spec::DeviceSpec;

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

impl LedgerEntry {
    /// Whether this mapping overlaps `len` bytes at `offset` of region `shmid`.
    pub fn overlaps(&self, shmid: u8, offset: u64, len: u64) -> bool {
        self.shmid == shmid && shmem_proto::overlaps((self.shm_offset, self.len), (offset, len))
    }
}

/// What one byte of a region should show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Nothing is mapped here.
    Unmapped,
    /// This byte of the file.
    Byte(u8),
}

/// What the scenario expects of a request. The ledger follows this: an
/// answer that differs is evidence for a check, never a new expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The request must be accepted: the ledger takes it whatever the ack.
    Accept,
    /// The request must be refused: the ledger ignores it whatever the ack.
    Refuse,
    /// Either is fine (probes that find a frontend's limits): the ledger
    /// takes an accepted request only if it is consistent with the ledger
    /// (inside its region, no overlap; an unmap of exactly one mapping).
    Either,
}

/// A request whose ack we have, with what it meant for the ledger.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub op: ShmemOp,
    pub msg: ShmemMsg,
    pub with_fd: bool,
    pub reply: Reply,
    pub want: Want,
    /// Where the answer and the expectation part, said for the evidence.
    pub surprise: Option<String>,
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
    /// A view asked of a range outside its region.
    OutOfRegion {
        shmid: u8,
        offset: u64,
        len: u64,
    },
    Io {
        what: String,
        err: io::Error,
    },
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::UnknownFile(n) => write!(f, "no host file named {n:?}"),
            ManagerError::FileExists(n) => write!(f, "a host file named {n:?} already exists"),
            ManagerError::OutOfRegion { shmid, offset, len } => {
                write!(f, "range {offset:#x}+{len:#x} is not inside region shmid {shmid}")
            }
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
        let f =
            HostFile::create(name, size).map_err(io_ctx(format!("creating host file {name:?} ({size:#x} bytes)")))?;
        Ok(self.files.entry(name.to_string()).or_insert(f))
    }

    /// Drops a host file (its fd closes; a frontend keeps its own dup).
    pub fn remove_file(&mut self, name: &str) -> Result<(), ManagerError> {
        self.files.remove(name).map(drop).ok_or_else(|| ManagerError::UnknownFile(name.into()))
    }

    pub fn file(&self, name: &str) -> Result<&HostFile, ManagerError> {
        self.files.get(name).ok_or_else(|| ManagerError::UnknownFile(name.into()))
    }

    /// Asks the frontend to map `len` bytes of `file` at `fd_offset` into
    /// region `shmid` at `shm_offset` (either answer is fine: [`Want::Either`]).
    pub fn map(
        &mut self,
        shmid: u8,
        file: &str,
        fd_offset: u64,
        shm_offset: u64,
        len: u64,
        rw: bool,
    ) -> Result<Outcome, ManagerError> {
        let msg = ShmemMsg { shmid, fd_offset, shm_offset, len, flags: if rw { MAP_RW } else { 0 } };
        self.send(ShmemOp::Map, msg, Attach::File(file), Want::Either)
    }

    /// Asks the frontend to unmap exactly the mapping at `shm_offset`, `len`.
    pub fn unmap(&mut self, shmid: u8, shm_offset: u64, len: u64) -> Result<Outcome, ManagerError> {
        let msg = ShmemMsg { shmid, shm_offset, len, ..ShmemMsg::default() };
        self.send(ShmemOp::Unmap, msg, Attach::None, Want::Either)
    }

    /// Sends any request, malformed ones included (no fd, len 0, overflow,
    /// unknown flags, unknown shmid), and updates the ledger from `want`.
    pub fn send(
        &mut self,
        op: ShmemOp,
        msg: ShmemMsg,
        attach: Attach<'_>,
        want: Want,
    ) -> Result<Outcome, ManagerError> {
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
            .map_err(io_ctx(format!("sending {op} {msg} to the frontend")))?;
        let accepted = reply.ack == 0;
        let entry = LedgerEntry {
            shmid: msg.shmid,
            shm_offset: msg.shm_offset,
            len: msg.len,
            file: file_name.unwrap_or_default(),
            fd_offset: msg.fd_offset,
            rw: msg.flags & MAP_RW != 0,
        };
        let conflict = match op {
            ShmemOp::Map => self.map_conflict(&entry),
            ShmemOp::Unmap => {
                self.position(&entry).is_none().then(|| "it is not exactly one mapping in the ledger".to_string())
            }
        };
        let take = match want {
            Want::Accept => true,
            Want::Refuse => false,
            Want::Either => accepted && conflict.is_none(),
        };
        let surprise = match (want, accepted, &conflict) {
            (Want::Accept, false, _) => {
                Some("refused a request the scenario expects accepted; the ledger keeps it as expected".to_string())
            }
            (Want::Refuse, true, _) => {
                Some("accepted a request the scenario expects refused; the ledger ignores it".to_string())
            }
            (Want::Either, true, Some(why)) => {
                Some(format!("accepted a request the ledger cannot hold ({why}); the ledger ignores it"))
            }
            (Want::Accept, true, Some(why)) => Some(format!("the scenario expects acceptance, but {why}")),
            _ => None,
        };
        if take {
            match op {
                ShmemOp::Map => self.ledger.push(entry),
                ShmemOp::Unmap => {
                    if let Some(i) = self.position(&entry) {
                        self.ledger.remove(i);
                    }
                }
            }
        }
        Ok(Outcome { op, msg, with_fd: fd.is_some(), reply, want, surprise })
    }

    /// Why a mapping could not be live beside the ledger's (none if it could).
    fn map_conflict(&self, new: &LedgerEntry) -> Option<String> {
        let size = self.spec.regions.get(usize::from(new.shmid)).copied().unwrap_or(0);
        if !new.shm_offset.checked_add(new.len).is_some_and(|end| new.len > 0 && end <= size) {
            return Some(format!(
                "{:#x}+{:#x} is not a non-empty range inside region shmid {} of {size:#x} bytes",
                new.shm_offset, new.len, new.shmid
            ));
        }
        self.ledger
            .iter()
            .find(|e| e.overlaps(new.shmid, new.shm_offset, new.len))
            .map(|e| format!("it overlaps the mapping at {:#x}+{:#x}", e.shm_offset, e.len))
    }

    fn position(&self, m: &LedgerEntry) -> Option<usize> {
        self.ledger.iter().position(|e| e.shmid == m.shmid && e.shm_offset == m.shm_offset && e.len == m.len)
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
        let size = self.spec.regions.get(usize::from(shmid)).copied().unwrap_or(0);
        let end = offset.checked_add(len).filter(|&end| end <= size).ok_or(ManagerError::OutOfRegion {
            shmid,
            offset,
            len,
        })?;
        let mut out = vec![Expect::Unmapped; len as usize];
        for e in self.ledger.iter().filter(|e| e.shmid == shmid) {
            let lo = e.shm_offset.max(offset);
            let hi = e.shm_offset.saturating_add(e.len).min(end);
            if lo >= hi {
                continue;
            }
            let at = e.fd_offset.saturating_add(lo - e.shm_offset);
            let bytes = self
                .file(&e.file)?
                .read(at, hi - lo)
                .map_err(io_ctx(format!("reading file {:?} for the expected view of shmid {shmid}", e.file)))?;
            for (i, b) in bytes.into_iter().enumerate() {
                out[(lo - offset) as usize + i] = Expect::Byte(b);
            }
        }
        Ok(out)
    }
}
