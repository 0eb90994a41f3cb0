//! The oracle's side of an operation: carried out on the correct model, its
//! answer becomes an ordinary step's expectation, which then runs on the
//! subject; and the fresh frontends every run and replay starts from.

use std::path::PathBuf;
use std::time::Duration;

use super::FuzzError;
use super::ops::{AttachKind, FILES, Op};
use crate::channel::{ShmemMsg, ShmemOp};
use crate::files::fnv1a64;
use crate::manager::{Attach, Want};
use crate::vm::boot::BootError;
use crate::vm::scenario::{BackendMode, Scenario, Size, Step, step_labels};
use crate::vm::steps::run_steps;
use crate::vm::steps::target::{StepError, Target, table_holds};
use shmem_judge::check::CheckResult;
use shmem_proto::MAP_RW;

/// The part of a frontend's stated reason both QEMU and the model say.
fn reason_keyword(said: &str) -> Option<&'static str> {
    [
        "mapping overlap",
        "Bad offset/len",
        "not found or uninitialized",
        "Bad fd for map",
        "size cannot be zero",
        "too small",
        "Permission denied",
        "mapping not found",
    ]
    .into_iter()
    .find(|k| said.contains(k))
}

/// A fuzz file's name in a scenario file.
fn name(f: usize) -> String {
    FILES[f].0.to_string()
}

/// A fuzz file's name in the manager (under `fuzz/`).
fn full(f: usize) -> String {
    format!("fuzz/{}", FILES[f].0)
}

/// The oracle's side of an operation: carried out on the correct model, the
/// answer becomes the step's expectation. Also returns the oracle's words
/// (its reason) for the divergence's facts.
pub(super) fn expect(op: &Op, n: usize, oracle: &mut Target) -> Result<(Step, String), FuzzError> {
    let check = format!("op{n}");
    Ok(match *op {
        Op::Map { shmid, file, fd_offset, shm_offset, len, rw, attach, flags } => {
            let msg =
                ShmemMsg { shmid, fd_offset, shm_offset, len, flags: flags.unwrap_or(if rw { MAP_RW } else { 0 }) };
            expect_map(msg, (file, attach), rw, flags, check, oracle)?
        }
        Op::Unmap { shmid, shm_offset, len } => {
            let mark = oracle.guest.log_mark();
            let o = oracle.mgr.unmap(shmid, shm_offset, len)?;
            oracle.guest.sign_of_life(Duration::from_secs(5))?;
            let said = oracle.guest.log_since(mark);
            let reason = (o.reply.ack != 0).then(|| reason_keyword(&said).map(str::to_string)).flatten();
            (
                Step::Unmap {
                    check: Some(check),
                    shmid,
                    shm_offset: Size(shm_offset),
                    len: Size(len),
                    ack: o.reply.ack,
                    reason,
                    stated: false,
                },
                said,
            )
        }
        Op::GuestRead { shmid, offset, len } => {
            let digest = oracle.guest.observe(shmid, offset, len)?.digest_or_zeros(len);
            (
                Step::ExpectDigest {
                    check,
                    shmid: Some(shmid),
                    file: None,
                    offset: Size(offset),
                    len: Size(len),
                    digest: format!("{digest:016x}"),
                },
                String::new(),
            )
        }
        Op::FileRead { file, offset, len } => {
            let data = oracle.mgr.file(&full(file))?.read(offset, len).map_err(StepError::host_file(&full(file)))?;
            (
                Step::ExpectDigest {
                    check,
                    shmid: None,
                    file: Some(name(file)),
                    offset: Size(offset),
                    len: Size(len),
                    digest: format!("{:016x}", fnv1a64(&data)),
                },
                String::new(),
            )
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
        Op::MemTable { shmid, file, shm_offset, len } => expect_table(shmid, file, (shm_offset, len), check, oracle)?,
        Op::Released { file } => {
            let id = oracle.mgr.file(&full(file))?.id();
            let held = oracle.guest.holds(id)?;
            // Only "released" can be checked: a file the oracle holds says nothing.
            let step = if held.is_empty() {
                Step::ExpectReleased { check, file: name(file) }
            } else {
                Step::ExpectAlive { check }
            };
            (step, String::new())
        }
        Op::Alive => (Step::ExpectAlive { check }, String::new()),
    })
}

/// The oracle's side of a SHMEM_MAP: sent, its answer and its words read.
fn expect_map(
    msg: ShmemMsg,
    (file, attach): (usize, AttachKind),
    rw: bool,
    flags: Option<u64>,
    check: String,
    oracle: &mut Target,
) -> Result<(Step, String), FuzzError> {
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
        shmid: msg.shmid,
        file: name(file),
        fd_offset: Size(msg.fd_offset),
        shm_offset: Size(msg.shm_offset),
        len: Size(msg.len),
        rw,
        ack: o.reply.ack,
        attach: attach != AttachKind::NoFd,
        readonly_fd: attach == AttachKind::ReadOnlyFd,
        flags,
        reason: (o.reply.ack != 0).then(|| reason_keyword(&said).map(str::to_string)).flatten(),
        stated: false,
    };
    Ok((step, said))
}

/// The oracle's latest memory table: does it hold the file at that place?
fn expect_table(
    shmid: u8,
    file: usize,
    (shm_offset, len): (u64, u64),
    check: String,
    oracle: &mut Target,
) -> Result<(Step, String), FuzzError> {
    let id = oracle.mgr.file(&full(file))?.id();
    let addr = oracle.guest.region_addr(shmid)? + shm_offset;
    // Once the oracle has applied what it acked, its latest table is current.
    oracle.guest.sign_of_life(Duration::from_secs(5))?;
    let present = oracle.recorder.lock().mem_tables.last().is_some_and(|m| table_holds(m, addr, len, id));
    Ok((
        Step::ExpectMemTable { check, shmid, shm_offset: Size(shm_offset), len: Size(len), file: name(file), present },
        String::new(),
    ))
}

/// Runs one step on the subject; its failed checks (a passing
/// `frontend-survives` is dropped).
pub(super) fn run_one(subject: &mut Target, step: Step, name: &str) -> Result<Vec<CheckResult>, FuzzError> {
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
        media: None,
        steps: vec![step],
        labels,
        lines: vec![0],
    };
    Ok(run_steps(&scn, subject)?.into_iter().filter(|c| !c.passed).collect())
}

/// Makes fresh targets: the subject and the oracle.
pub struct Targets<'a> {
    pub subject: &'a mut dyn FnMut() -> Result<Target, BootError>,
    pub oracle: &'a mut dyn FnMut() -> Result<Target, BootError>,
}

/// Both targets, fresh, with the fuzz files created and filled alike.
pub(super) fn fresh(t: &mut Targets<'_>) -> Result<(Target, Target), FuzzError> {
    let (mut s, mut o) = ((t.subject)()?, (t.oracle)()?);
    create_files(&mut s)?;
    create_files(&mut o)?;
    Ok((s, o))
}

/// The fuzz files' first fill pattern.
pub(super) fn first_seed(i: usize) -> u8 {
    0x10 * (i as u8 + 1)
}

/// Creates the fuzz files on a target, each filled with its first pattern.
pub(super) fn create_files(t: &mut Target) -> Result<(), FuzzError> {
    for (i, (name, size)) in FILES.iter().enumerate() {
        let name = format!("fuzz/{name}");
        t.mgr.create_file(&name, *size)?.fill(0, *size, first_seed(i)).map_err(StepError::host_file(&name))?;
    }
    Ok(())
}
