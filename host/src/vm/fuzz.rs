//! The stateful differential fuzzer. A seeded generator picks map, unmap,
//! reset and guest/host access operations, weighted towards the states where
//! bugs live (edges, full regions, just after a reset). Each operation runs
//! first on the oracle (the correct reference model), whose answer becomes
//! its expectation, so every operation is an ordinary scenario step; the
//! step then runs on the subject (QEMU, or a model with a fault switch).
//! A failed check that is not a listed known divergence (scenario `fuzz`,
//! matched by signature) stops the run and is shrunk by delta debugging on
//! fresh frontends into a scenario file. It judges nothing by itself.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::boot::BootError;
use super::check::{CheckResult, facts_text};
use super::defects::KnownDefect;
use super::error::RunError;
use super::guest::GuestError;
use super::scenario::{BackendMode, Scenario, Size, Step, step_labels};
use super::steps::{StepError, Target, run_steps, table_holds};
use crate::channel::{ShmemMsg, ShmemOp};
use crate::files::fnv1a64;
use crate::manager::{Attach, MAP_RW, ManagerError, Want};

/// Why a fuzz run could not go on (a divergence is a finding, not this).
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("starting a frontend: {0}")]
    Boot(#[from] BootError),
    #[error("the oracle: {0}")]
    Oracle(#[from] StepError),
    #[error("the subject: {0}")]
    Subject(#[from] RunError),
    /// The frontends stayed apart after a known divergence was put right.
    #[error("the frontends did not come back in step after a known divergence")]
    OutOfStep,
    #[error("the divergence did not recur on fresh frontends ({0}); it is not reproducible from the operations alone")]
    NotReproducible(String),
    #[error("writing the scenario: {0}")]
    Write(String),
}

impl From<GuestError> for FuzzError {
    fn from(e: GuestError) -> Self {
        FuzzError::Oracle(e.into())
    }
}

impl From<ManagerError> for FuzzError {
    fn from(e: ManagerError) -> Self {
        FuzzError::Oracle(e.into())
    }
}

/// The files every fuzz run maps: name and size.
const FILES: [(&str, u64); 3] = [("f0", 0x10000), ("f1", 0x10000), ("f2", 0x4000)];
const PAGE: u64 = 0x1000;

/// splitmix64: small, seedable, the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How a map's fd is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachKind {
    File,
    NoFd,
    ReadOnlyFd,
}

impl AttachKind {
    /// As the fact `attach` names it (the known-defects list matches on it).
    pub fn name(self) -> &'static str {
        match self {
            AttachKind::File => "File",
            AttachKind::NoFd => "NoFd",
            AttachKind::ReadOnlyFd => "ReadOnlyFd",
        }
    }
}

/// One generated operation (the oracle supplies its expectation).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Map { shmid: u8, file: usize, fd_offset: u64, shm_offset: u64, len: u64, rw: bool, attach: AttachKind, flags: Option<u64> },
    Unmap { shmid: u8, shm_offset: u64, len: u64 },
    GuestRead { shmid: u8, offset: u64, len: u64 },
    GuestWrite { shmid: u8, offset: u64, len: u64, seed: u8 },
    HostWrite { file: usize, offset: u64, len: u64, seed: u8 },
    FileRead { file: usize, offset: u64, len: u64 },
    Reset { init: bool },
    MemTable { shmid: u8, file: usize, shm_offset: u64, len: u64 },
    Released { file: usize },
    Alive,
}

/// The operation as the fact `op` shows it: its kind and its values.
impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = |i: usize| FILES[i].0;
        match *self {
            Op::Map { shmid, file: i, fd_offset, shm_offset, len, rw, attach, flags } => {
                write!(f, "map {shmid}:{shm_offset:#x}+{len:#x} of {}@{fd_offset:#x} {} attach={}", file(i), if rw { "rw" } else { "ro" }, attach.name())?;
                flags.map_or(Ok(()), |fl| write!(f, " flags={fl:#x}"))
            }
            Op::Unmap { shmid, shm_offset, len } => write!(f, "unmap {shmid}:{shm_offset:#x}+{len:#x}"),
            Op::GuestRead { shmid, offset, len } => write!(f, "guest-read {shmid}:{offset:#x}+{len:#x}"),
            Op::GuestWrite { shmid, offset, len, seed } => write!(f, "guest-write {shmid}:{offset:#x}+{len:#x} seed={seed:#04x}"),
            Op::HostWrite { file: i, offset, len, seed } => write!(f, "host-write {}@{offset:#x}+{len:#x} seed={seed:#04x}", file(i)),
            Op::FileRead { file: i, offset, len } => write!(f, "file-read {}@{offset:#x}+{len:#x}", file(i)),
            Op::Reset { init } => write!(f, "reset init={init}"),
            Op::MemTable { shmid, file: i, shm_offset, len } => write!(f, "mem-table {shmid}:{shm_offset:#x}+{len:#x} of {}", file(i)),
            Op::Released { file: i } => write!(f, "released {}", file(i)),
            Op::Alive => write!(f, "alive"),
        }
    }
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Map { .. } => "map",
            Op::Unmap { .. } => "unmap",
            Op::GuestRead { .. } => "guest-read",
            Op::GuestWrite { .. } => "guest-write",
            Op::HostWrite { .. } => "host-write",
            Op::FileRead { .. } => "file-read",
            Op::Reset { .. } => "reset",
            Op::MemTable { .. } => "mem-table",
            Op::Released { .. } => "released",
            Op::Alive => "alive",
        }
    }
}

/// What the generator knows of the oracle's state.
struct View<'a> {
    regions: &'a [u64],
    ledger: &'a [crate::manager::LedgerEntry],
    /// The mappings the last reset dropped (the backend may still believe in them).
    dropped: &'a [crate::manager::LedgerEntry],
    started: bool,
}

fn file_index(name: &str) -> usize {
    FILES.iter().position(|(n, _)| name.ends_with(&format!("/{n}"))).unwrap_or(0)
}

/// Picks the next operation, weighted towards edges, full regions, overlaps
/// and resets.
fn generate(rng: &mut Rng, v: &View<'_>) -> Op {
    let live: Vec<u8> = (0..v.regions.len() as u8).filter(|&i| v.regions[usize::from(i)] > 0).collect();
    let shmid = rng.pick(&live);
    let size = v.regions[usize::from(shmid)];
    let file = rng.below(FILES.len() as u64) as usize;
    let fsize = FILES[file].1;
    let len = rng.pick(&[PAGE, 2 * PAGE, 4 * PAGE, 16 * PAGE]).min(fsize);
    let edge = |rng: &mut Rng, len: u64| match rng.below(4) {
        0 => 0,
        1 => size.saturating_sub(len),
        _ => rng.below(size.saturating_sub(len) / PAGE + 1) * PAGE,
    };
    let existing = (!v.ledger.is_empty()).then(|| v.ledger[rng.below(v.ledger.len() as u64) as usize].clone());
    let map = |rng: &mut Rng, shm_offset: u64, len: u64| Op::Map {
        shmid,
        file,
        fd_offset: rng.below((fsize.saturating_sub(len)) / PAGE + 1) * PAGE,
        shm_offset,
        len,
        rw: rng.chance(60),
        attach: AttachKind::File,
        flags: None,
    };
    match rng.below(100) {
        0..=21 => {
            let off = edge(rng, len);
            map(rng, off, len)
        }
        22..=25 => match &existing {
            // Overlap: inside an existing mapping.
            Some(e) => {
                let inside = e.shm_offset + rng.below(e.len / PAGE) * PAGE;
                map(rng, inside, len)
            }
            None => map(rng, 0, len),
        },
        26..=27 => map(rng, size.saturating_sub(PAGE), 2 * PAGE),
        28 => Op::Map { shmid: rng.pick(&[1, 7]), file, fd_offset: 0, shm_offset: 0, len: PAGE, rw: false, attach: AttachKind::File, flags: None },
        29 => Op::Map { shmid, file, fd_offset: 0, shm_offset: edge(rng, PAGE), len: PAGE, rw: false, attach: AttachKind::NoFd, flags: None },
        30 => Op::Map { shmid, file, fd_offset: 0, shm_offset: edge(rng, PAGE), len: 0, rw: false, attach: AttachKind::File, flags: None },
        31 => Op::Map { shmid, file, fd_offset: 0, shm_offset: edge(rng, PAGE) + 0x100, len: 0x100, rw: true, attach: AttachKind::File, flags: None },
        32 => Op::Map { shmid, file, fd_offset: 0, shm_offset: edge(rng, PAGE), len: PAGE, rw: true, attach: AttachKind::File, flags: Some(0x80 | MAP_RW) },
        33..=34 => Op::Map { shmid, file, fd_offset: 0, shm_offset: edge(rng, len), len, rw: rng.chance(50), attach: AttachKind::ReadOnlyFd, flags: None },
        35..=50 => match &existing {
            Some(e) if rng.chance(80) => Op::Unmap { shmid: e.shmid, shm_offset: e.shm_offset, len: e.len },
            Some(e) if e.len > PAGE => Op::Unmap { shmid: e.shmid, shm_offset: e.shm_offset, len: PAGE },
            _ => Op::Unmap { shmid, shm_offset: edge(rng, PAGE), len: PAGE },
        },
        51..=64 => match &existing {
            Some(e) if rng.chance(75) => {
                let l = rng.pick(&[8, 256, PAGE]).min(e.len);
                Op::GuestRead { shmid: e.shmid, offset: e.shm_offset + rng.below((e.len - l) / 8 + 1) * 8, len: l }
            }
            _ => Op::GuestRead { shmid, offset: edge(rng, PAGE), len: PAGE },
        },
        65..=72 => match &existing {
            Some(e) => {
                let l = rng.pick(&[8, 64, PAGE]).min(e.len);
                Op::GuestWrite { shmid: e.shmid, offset: e.shm_offset + rng.below((e.len - l) / 8 + 1) * 8, len: l, seed: rng.below(256) as u8 }
            }
            None => Op::GuestWrite { shmid, offset: edge(rng, PAGE), len: 64, seed: rng.below(256) as u8 },
        },
        73..=76 => {
            let len = 8 * (1 + rng.below(64));
            Op::HostWrite { file, offset: rng.below((fsize - len) / 8 + 1) * 8, len, seed: rng.below(256) as u8 }
        }
        77..=82 => Op::FileRead { file, offset: 0, len: fsize },
        83..=87 => Op::Reset { init: !(v.started && rng.chance(15)) },
        88..=94 => {
            let gone = (!v.dropped.is_empty() && rng.chance(50)).then(|| v.dropped[rng.below(v.dropped.len() as u64) as usize].clone());
            match gone.or(existing) {
                Some(e) => Op::MemTable { shmid: e.shmid, file: file_index(&e.file), shm_offset: e.shm_offset, len: e.len },
                None => Op::MemTable { shmid, file, shm_offset: 0, len },
            }
        }
        95..=97 => Op::Released { file },
        _ => Op::Alive,
    }
}

/// The looks that follow a change: for a mapping made or dropped, the
/// guest's view of it and whether the backend's memory table has it; for a
/// guest write, the guest's view of the range (when it lies in one mapping
/// or in none); for a host write, that file range.
fn touched(op: &Op, before: &[crate::manager::LedgerEntry], after: &[crate::manager::LedgerEntry]) -> Vec<Op> {
    let find = |l: &[crate::manager::LedgerEntry], shmid: u8, off: u64, len: u64| l.iter().find(|e| e.shmid == shmid && e.shm_offset == off && e.len == len).cloned();
    let mapping = |e: crate::manager::LedgerEntry| {
        vec![
            Op::GuestRead { shmid: e.shmid, offset: e.shm_offset, len: e.len.min(PAGE) },
            Op::MemTable { shmid: e.shmid, file: file_index(&e.file), shm_offset: e.shm_offset, len: e.len },
        ]
    };
    match *op {
        Op::Map { shmid, shm_offset, len, .. } if find(before, shmid, shm_offset, len).is_none() => find(after, shmid, shm_offset, len).map(mapping).unwrap_or_default(),
        Op::Unmap { shmid, shm_offset, len } if find(after, shmid, shm_offset, len).is_none() => find(before, shmid, shm_offset, len).map(mapping).unwrap_or_default(),
        Op::GuestWrite { shmid, offset, len, .. } => {
            let end = offset + len;
            let overlapping: Vec<_> = after.iter().filter(|e| e.overlaps(shmid, offset, len)).collect();
            let inside_one = overlapping.len() == 1 && overlapping[0].shm_offset <= offset && end <= overlapping[0].shm_offset + overlapping[0].len;
            if overlapping.is_empty() || inside_one { vec![Op::GuestRead { shmid, offset, len }] } else { Vec::new() }
        }
        Op::HostWrite { file, offset, len, .. } => vec![Op::FileRead { file, offset, len }],
        _ => Vec::new(),
    }
}

/// The part of a frontend's stated reason both QEMU and the model say.
fn reason_keyword(said: &str) -> Option<&'static str> {
    ["mapping overlap", "Bad offset/len", "not found or uninitialized", "Bad fd for map", "size cannot be zero", "too small", "Permission denied", "mapping not found"]
        .into_iter()
        .find(|k| said.contains(k))
}

/// The oracle's side of an operation: carried out on the correct model, the
/// answer becomes the step's expectation. Also returns the oracle's words
/// (its reason) for the divergence's facts.
fn expect(op: &Op, n: usize, oracle: &mut Target) -> Result<(Step, String), FuzzError> {
    let name = |f: usize| FILES[f].0.to_string();
    let full = |f: usize| format!("fuzz/{}", FILES[f].0);
    let check = format!("op{n}");
    Ok(match *op {
        Op::Map { shmid, file, fd_offset, shm_offset, len, rw, attach, flags } => {
            let msg = ShmemMsg { shmid, fd_offset, shm_offset, len, flags: flags.unwrap_or(if rw { MAP_RW } else { 0 }) };
            let f = full(file);
            let how = match attach {
                AttachKind::File => Attach::File(&f),
                AttachKind::NoFd => Attach::None,
                AttachKind::ReadOnlyFd => Attach::ReadOnly(&f),
            };
            let mark = oracle.guest.log_mark();
            let o = oracle.mgr.send(ShmemOp::Map, msg, how, Want::Either)?;
            oracle.guest.sign_of_life(Duration::from_secs(5))?;
            let said = oracle.guest.log_since(mark);
            let step = Step::Map {
                check: Some(check),
                shmid,
                file: name(file),
                fd_offset: Size(fd_offset),
                shm_offset: Size(shm_offset),
                len: Size(len),
                rw,
                ack: o.reply.ack,
                attach: attach != AttachKind::NoFd,
                readonly_fd: attach == AttachKind::ReadOnlyFd,
                flags,
                reason: (o.reply.ack != 0).then(|| reason_keyword(&said).map(str::to_string)).flatten(),
                stated: false,
            };
            (step, said)
        }
        Op::Unmap { shmid, shm_offset, len } => {
            let mark = oracle.guest.log_mark();
            let o = oracle.mgr.unmap(shmid, shm_offset, len)?;
            oracle.guest.sign_of_life(Duration::from_secs(5))?;
            let said = oracle.guest.log_since(mark);
            let reason = (o.reply.ack != 0).then(|| reason_keyword(&said).map(str::to_string)).flatten();
            (Step::Unmap { check: Some(check), shmid, shm_offset: Size(shm_offset), len: Size(len), ack: o.reply.ack, reason, stated: false }, said)
        }
        Op::GuestRead { shmid, offset, len } => {
            let digest = oracle.guest.observe(shmid, offset, len)?.digest_or_zeros(len);
            (Step::ExpectDigest { check, shmid: Some(shmid), file: None, offset: Size(offset), len: Size(len), digest: format!("{digest:016x}") }, String::new())
        }
        Op::FileRead { file, offset, len } => {
            let data = oracle.mgr.file(&full(file))?.read(offset, len).map_err(StepError::host_file(&full(file)))?;
            (Step::ExpectDigest { check, shmid: None, file: Some(name(file)), offset: Size(offset), len: Size(len), digest: format!("{:016x}", fnv1a64(&data)) }, String::new())
        }
        Op::GuestWrite { shmid, offset, len, seed } => {
            oracle.guest.fill(shmid, offset, len, seed)?;
            (Step::GuestWrite { shmid, offset: Size(offset), len: Size(len), seed }, String::new())
        }
        Op::HostWrite { file, offset, len, seed } => {
            oracle.mgr.file(&full(file))?.fill(offset, len, seed).map_err(StepError::host_file(&full(file)))?;
            (Step::HostWrite { file: name(file), offset: Size(offset), len: Size(len), seed }, String::new())
        }
        Op::Reset { init } => {
            oracle.guest.reset(init)?;
            oracle.mgr.forget_all();
            (Step::GuestReset { init }, String::new())
        }
        Op::MemTable { shmid, file, shm_offset, len } => {
            let id = oracle.mgr.file(&full(file))?.id();
            let addr = oracle.guest.region_addr(shmid)? + shm_offset;
            // Once the oracle has applied what it acked, its latest table is current.
            oracle.guest.sign_of_life(Duration::from_secs(5))?;
            let present = oracle.recorder.lock().mem_tables.last().is_some_and(|m| table_holds(m, addr, len, id));
            (Step::ExpectMemTable { check, shmid, shm_offset: Size(shm_offset), len: Size(len), file: name(file), present }, String::new())
        }
        Op::Released { file } => {
            let id = oracle.mgr.file(&full(file))?.id();
            let held = oracle.guest.holds(id)?;
            // Only "released" can be checked: a file the oracle holds says nothing.
            let step = if held.is_empty() { Step::ExpectReleased { check, file: name(file) } } else { Step::ExpectAlive { check } };
            (step, String::new())
        }
        Op::Alive => (Step::ExpectAlive { check }, String::new()),
    })
}

/// Runs one step on the subject; its failed checks (a passing
/// `frontend-survives` is dropped).
fn run_one(subject: &mut Target, step: Step, name: &str) -> Result<Vec<CheckResult>, FuzzError> {
    let labels = step_labels(std::slice::from_ref(&step));
    let scn = Scenario {
        name: name.into(),
        description: String::new(),
        path: PathBuf::new(),
        own_boot: true,
        device: None,
        init: true,
        qemu_only: false,
        smp: 1,
        boot_refusal_ok: false,
        backend: BackendMode::MultiThreaded,
        steps: vec![step],
        labels,
        lines: vec![0],
    };
    Ok(run_steps(&scn, subject)?.into_iter().filter(|c| !c.passed).collect())
}

/// A failed check, classified: its kind (`map/ack`, `guest-read`, ...) and
/// facts, the oracle's words added.
#[derive(Clone, Debug)]
pub struct Divergence {
    pub kind: String,
    pub check: CheckResult,
}

impl Divergence {
    /// What must recur for a shorter sequence to reproduce it.
    pub fn key(&self) -> String {
        let f = |k: &str| self.check.facts.get(k).cloned().unwrap_or_default();
        format!("{} ack={} oracle={} attach={} exit={} table={} device={}", self.kind, f("ack"), f("oracle_said"), f("attach"), f("exit"), f("latest_table"), f("device"))
    }
}

/// Classifies the subject's failed checks for `op`, with the facts known
/// defects match on: `oracle_said`, `attach`, `ro_write`, `after_reset`.
fn divergences(op: &Op, said: &str, failed: Vec<CheckResult>, cx: Context) -> Vec<Divergence> {
    failed
        .into_iter()
        .map(|mut c| {
            let suffix = c.check.split_once('/').map(|(_, s)| format!("/{s}")).unwrap_or_default();
            let kind = if c.check == "frontend-survives" { c.check.clone() } else { format!("{}{suffix}", op.kind()) };
            c = c.with("op", op).with("oracle_said", said.lines().next().unwrap_or("")).with("device", if cx.started { "started" } else { "stopped" });
            if let Op::Map { attach, .. } = op {
                c = c.with("attach", attach.name());
            }
            if cx.ro_written.iter().any(|&w| w) {
                c = c.with("ro_write", "yes");
            }
            if cx.after_reset {
                c = c.with("after_reset", "yes");
            }
            Divergence { kind, check: c }
        })
        .collect()
}

/// Makes fresh targets: the subject and the oracle.
pub struct Targets<'a> {
    pub subject: &'a mut dyn FnMut() -> Result<Target, BootError>,
    pub oracle: &'a mut dyn FnMut() -> Result<Target, BootError>,
}

/// Both targets, fresh, with the fuzz files created and filled alike.
fn fresh(t: &mut Targets<'_>) -> Result<(Target, Target), FuzzError> {
    let (mut s, mut o) = ((t.subject)()?, (t.oracle)()?);
    create_files(&mut s)?;
    create_files(&mut o)?;
    Ok((s, o))
}

/// The fuzz files' first fill pattern.
fn first_seed(i: usize) -> u8 {
    0x10 * (i as u8 + 1)
}

/// Creates the fuzz files on a target, each filled with its first pattern.
fn create_files(t: &mut Target) -> Result<(), FuzzError> {
    for (i, (name, size)) in FILES.iter().enumerate() {
        let name = format!("fuzz/{name}");
        t.mgr.create_file(&name, *size)?.fill(0, *size, first_seed(i)).map_err(StepError::host_file(&name))?;
    }
    Ok(())
}

/// What a sequence of operations shows when replayed on fresh targets.
struct Replay {
    /// The first divergence not known, with the index of its operation.
    unknown: Option<(usize, Divergence)>,
    /// Known divergences seen, by id.
    known: BTreeMap<String, u32>,
    /// The subject died (a known death needs fresh targets).
    died: bool,
}

/// Settings of a fuzz run.
pub struct FuzzConfig {
    pub seed: u64,
    pub time: Duration,
    /// Operations to generate at most (the looks after the last one come on top).
    pub max_ops: u64,
    /// Known divergences of this subject (entries of scenario `fuzz`).
    pub known: Vec<KnownDefect>,
    /// How long shrinking may take.
    pub shrink_time: Duration,
    /// Where to write the found scenario (`found-HASH.toml`).
    pub out_dir: PathBuf,
    /// Says what is going on now and then.
    pub progress: bool,
}

fn known_id(known: &[KnownDefect], d: &Divergence) -> Option<String> {
    known.iter().find(|k| k.check == d.kind && k.matches(&d.check.facts)).map(|k| k.id.clone())
}

/// Carries out `ops` on the targets, stopping at the first unknown
/// divergence (or, with `target`, at that divergence only).
/// What the divergences' facts need of the past operations.
#[derive(Clone, Copy, Debug)]
struct Context {
    /// Which files a guest write reached through a read-only mapping (until
    /// the host fills the whole file anew).
    ro_written: [bool; FILES.len()],
    /// A reset happened since the last map.
    after_reset: bool,
    /// The device is started (DRIVER_OK since the last reset).
    started: bool,
}

impl Context {
    fn fresh() -> Self {
        Context { ro_written: [false; FILES.len()], after_reset: false, started: true }
    }
}

#[allow(clippy::too_many_arguments)]
fn play(ops: &[Op], s: &mut Target, o: &mut Target, known: &[KnownDefect], target: Option<&str>, from: usize, cx: &mut Context) -> Result<Replay, FuzzError> {
    let mut r = Replay { unknown: None, known: BTreeMap::new(), died: false };
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::GuestWrite { shmid, offset, len, .. } => {
                for e in o.mgr.ledger().iter().filter(|e| !e.rw && e.overlaps(*shmid, *offset, *len)) {
                    cx.ro_written[file_index(&e.file)] = true;
                }
            }
            Op::HostWrite { file, offset: 0, len, .. } if *len == FILES[*file].1 => cx.ro_written[*file] = false,
            Op::Reset { init } => (cx.after_reset, cx.started) = (true, *init),
            Op::Map { .. } => cx.after_reset = false,
            _ => {}
        }
        let (step, said) = expect(op, from + i, o)?;
        let failed = run_one(s, step, "fuzz")?;
        for d in divergences(op, &said, failed, *cx) {
            if let Some(t) = target {
                if d.key() == t {
                    r.unknown = Some((i, d));
                    return Ok(r);
                }
                continue;
            }
            match known_id(known, &d) {
                Some(id) => *r.known.entry(id).or_insert(0) += 1,
                None => {
                    r.unknown = Some((i, d));
                    return Ok(r);
                }
            }
        }
        if s.guest.gone().is_some() {
            r.died = true;
            return Ok(r);
        }
    }
    Ok(r)
}

/// The operations that put both targets back in step after a known
/// divergence: a reset with re-initialisation, and every file filled anew.
fn resync(rng: &mut Rng) -> Vec<Op> {
    let mut ops = vec![Op::Reset { init: true }];
    for (i, (_, size)) in FILES.iter().enumerate() {
        ops.push(Op::HostWrite { file: i, offset: 0, len: *size, seed: rng.below(256) as u8 });
    }
    ops
}

/// What a fuzz run found and covered.
#[derive(Debug, Default)]
pub struct FuzzReport {
    pub ops: u64,
    pub states: usize,
    pub known: BTreeMap<String, u32>,
    pub fresh_starts: u32,
    /// The divergence found, its shrunk sequence's length, the original
    /// length, and the scenario written.
    pub found: Option<Found>,
}

#[derive(Debug)]
pub struct Found {
    pub divergence: Divergence,
    pub original_len: usize,
    pub ops: Vec<Op>,
    pub minimal: bool,
    pub scenario: PathBuf,
}

/// The fuzz loop; see the module comment.
pub fn fuzz(cfg: &FuzzConfig, t: &mut Targets<'_>) -> Result<FuzzReport, FuzzError> {
    let start = Instant::now();
    let mut rng = Rng::new(cfg.seed);
    let mut report = FuzzReport::default();
    let mut states = HashSet::new();
    let (mut s, mut o) = fresh(t)?;
    report.fresh_starts = 1;
    // The operations since the targets were fresh: what a reproduction replays.
    let mut history: Vec<Op> = Vec::new();
    let mut cx = Context::fresh();
    let mut dropped = Vec::new();
    let mut last_progress = Instant::now();
    while start.elapsed() < cfg.time && report.ops < cfg.max_ops && !super::interrupted() {
        let regions = o.mgr.spec().regions.clone();
        let before = o.mgr.ledger().to_vec();
        let op = generate(&mut rng, &View { regions: &regions, ledger: &before, dropped: &dropped, started: cx.started });
        if matches!(op, Op::Reset { .. }) && !before.is_empty() {
            dropped = before.clone();
        }
        history.push(op.clone());
        let mut r = play(std::slice::from_ref(&op), &mut s, &mut o, &cfg.known, None, history.len() - 1, &mut cx)?;
        report.ops += 1;
        // After every change, a look at what it touched.
        for look in touched(&op, &before, o.mgr.ledger()) {
            if r.unknown.is_some() || !r.known.is_empty() || r.died {
                break;
            }
            history.push(look.clone());
            r = play(std::slice::from_ref(&look), &mut s, &mut o, &cfg.known, None, history.len() - 1, &mut cx)?;
            report.ops += 1;
        }
        let mut shape: Vec<(u8, u64, u64, bool)> = o.mgr.ledger().iter().map(|e| (e.shmid, e.shm_offset, e.len, e.rw)).collect();
        shape.sort_unstable();
        states.insert(format!("{}{shape:?}", cx.started));
        if !r.known.is_empty() && !r.died {
            let fix = resync(&mut rng);
            let again = play(&fix, &mut s, &mut o, &cfg.known, None, history.len(), &mut cx)?;
            history.extend(fix);
            if again.unknown.is_some() || again.died {
                return Err(FuzzError::OutOfStep);
            }
        }
        for (id, n) in r.known {
            *report.known.entry(id).or_insert(0) += n;
        }
        if r.died && r.unknown.is_none() {
            // A known death: start again from fresh frontends.
            (s, o) = fresh(t)?;
            report.fresh_starts += 1;
            history.clear();
            cx = Context::fresh();
            dropped.clear();
        }
        if let Some((_, d)) = r.unknown {
            if cfg.progress {
                println!("fuzz: divergence at operation {}: {}; shrinking for at most {}s", history.len(), d.key(), cfg.shrink_time.as_secs());
            }
            report.states = states.len();
            drop((s, o));
            report.found = Some(shrink(cfg, t, history, d)?);
            return Ok(report);
        }
        if cfg.progress && last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            let left = cfg.time.saturating_sub(start.elapsed());
            println!("fuzz: {} operations, {} distinct states, {} known divergences, {} fresh starts, {}s left", report.ops, states.len(), report.known.values().sum::<u32>(), report.fresh_starts, left.as_secs());
        }
    }
    report.states = states.len();
    Ok(report)
}

/// Whether `ops`, replayed on fresh targets, shows the divergence `key`.
fn reproduces(t: &mut Targets<'_>, ops: &[Op], key: &str) -> Result<bool, FuzzError> {
    let (mut s, mut o) = fresh(t)?;
    Ok(play(ops, &mut s, &mut o, &[], Some(key), 0, &mut Context::fresh())?.unknown.is_some())
}

/// Delta debugging (ddmin): drops chunks of operations while the shorter
/// sequence, replayed on fresh frontends, still shows the divergence.
fn shrink(cfg: &FuzzConfig, t: &mut Targets<'_>, history: Vec<Op>, d: Divergence) -> Result<Found, FuzzError> {
    let key = d.key();
    let original_len = history.len();
    let deadline = Instant::now() + cfg.shrink_time;
    let mut ops = history;
    let mut minimal = false;
    if !reproduces(t, &ops, &key)? {
        return Err(FuzzError::NotReproducible(key));
    }
    let mut n = 2usize;
    let mut out_of_time = false;
    while ops.len() >= 2 && !out_of_time {
        let chunk = ops.len().div_ceil(n);
        let mut shorter = None;
        for i in 0..n {
            if Instant::now() > deadline || super::interrupted() {
                out_of_time = true;
                break;
            }
            let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(ops.len()));
            if lo >= hi {
                continue;
            }
            let candidate: Vec<Op> = ops[..lo].iter().chain(&ops[hi..]).cloned().collect();
            if !candidate.is_empty() && reproduces(t, &candidate, &key)? {
                shorter = Some(candidate);
                break;
            }
        }
        match shorter {
            Some(c) => {
                ops = c;
                n = (n - 1).max(2);
            }
            None if out_of_time => {}
            None if n >= ops.len() => {
                minimal = true;
                break;
            }
            None => n = (n * 2).min(ops.len()),
        }
    }
    if ops.len() == 1 {
        minimal = true;
    }
    let scenario = write_scenario(cfg, t, &ops, &d, original_len, minimal)?;
    Ok(Found { divergence: d, original_len, ops, minimal, scenario })
}

#[derive(Serialize)]
struct ScenarioOut {
    description: String,
    own_boot: bool,
    step: Vec<Step>,
}

/// Writes `found-HASH.toml`: the files, then each operation as a step with
/// the oracle's expectation. It fails where the subject diverged and passes
/// on the correct model.
fn write_scenario(cfg: &FuzzConfig, t: &mut Targets<'_>, ops: &[Op], d: &Divergence, original_len: usize, minimal: bool) -> Result<PathBuf, FuzzError> {
    let mut oracle = (t.oracle)()?;
    let mut steps = Vec::new();
    create_files(&mut oracle)?;
    for (i, (name, size)) in FILES.iter().enumerate() {
        steps.push(Step::File { name: name.to_string(), size: Size(*size) });
        steps.push(Step::Fill { file: name.to_string(), seed: first_seed(i), offset: Size(0), len: None });
    }
    for (i, op) in ops.iter().enumerate() {
        steps.push(expect(op, i, &mut oracle)?.0);
    }
    steps.push(Step::ExpectAlive { check: "alive-at-the-end".into() });
    let mut facts = d.check.facts.clone();
    facts.retain(|k, _| !matches!(k.as_str(), "said" | "op"));
    let description = format!(
        "found by cargo xtask fuzz (seed {}, {original_len} operations, shrunk to {}{}): {} failed ({})",
        cfg.seed,
        ops.len(),
        if minimal { "" } else { ", not minimal: shrinking ran out of time" },
        d.kind,
        facts_text(&facts)
    );
    let text = toml::to_string(&ScenarioOut { description, own_boot: true, step: steps }).map_err(|e| FuzzError::Write(e.to_string()))?;
    let name = format!("found-{:08x}", fnv1a64(text.as_bytes()) as u32);
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| FuzzError::Write(format!("create {}: {e}", cfg.out_dir.display())))?;
    let path = cfg.out_dir.join(format!("{name}.toml"));
    Scenario::parse(&path, &text).map_err(|e| FuzzError::Write(format!("the written scenario does not load: {e}")))?;
    std::fs::write(&path, text).map_err(|e| FuzzError::Write(format!("write {}: {e}", path.display())))?;
    Ok(path)
}
