//! The reply-before-commit probe (`probe-reply-before-commit`), host side.
//! Per iteration: a fresh tag in the file to map (two files take turns, so
//! the old mapping is told from the new one), map, ring the guest at once,
//! classify its first read; unmap, ring at once, classify again. Nothing
//! crosses the serial port inside the loop. Records checks; judges nothing.

mod stats;

use std::io;
use std::time::Instant;

pub use stats::{Tally, rate_upper_bound};

use super::check::CheckResult;
use super::guest::RingMode;
use super::scenario::Step;
use super::steps::{StepError, Target};
use crate::channel::{ShmemMsg, ShmemOp};
use crate::manager::{Attach, MAP_RW, ManagerError, Want};

const TAG: u64 = 0x7a67_0000_0000_0000;
const MARK: u64 = 0x6d6b_0000_0000_0000;

/// What a probe step asks for.
struct Plan<'a> {
    check: &'a str,
    target: (u8, u64),
    doorbell: (u8, u64),
    iterations: u32,
    rw: bool,
    writes: bool,
}

/// The three directions' tallies.
#[derive(Default)]
struct Tallies {
    map: Tally,
    unmap: Tally,
    write: Tally,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_else(|_| "?".into())
}

fn page_msg(shmid: u8, shm_offset: u64, rw: bool) -> ShmemMsg {
    ShmemMsg { shmid, shm_offset, len: 0x1000, flags: if rw { MAP_RW } else { 0 }, ..ShmemMsg::default() }
}

/// The failed `no-deadlock` check: a request got no ack within the backend's watchdog.
fn deadlock(check: &str, what: String) -> CheckResult {
    CheckResult::new(format!("{check}/no-deadlock"), false, format!("deadlock: {what}; the backend could not serve the frontend meanwhile")).with("deadlock", "no ack")
}

/// Whether a request's error is the watchdog's: no ack in time. Any other
/// channel error (the frontend closed it: it died) is no deadlock.
fn no_ack_in_time(e: &ManagerError) -> bool {
    matches!(e, ManagerError::Io { err, .. } if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Sends one probe request that must be accepted. `Ok(Some(why))` when it
/// got no ack in time (a deadlock); a refusal or a dead channel is an error.
fn request(t: &mut Target, i: u32, op: ShmemOp, msg: ShmemMsg, attach: Attach<'_>) -> Result<Option<String>, StepError> {
    match t.mgr.send(op, msg, attach, Want::Accept) {
        Err(e) if no_ack_in_time(&e) => Ok(Some(format!("iteration {i}: {op} got no ack: {e}"))),
        Err(e) => Err(e.into()),
        Ok(o) if o.reply.ack != 0 => Err(StepError::Refused(format!("iteration {i}: {op} refused (ack {})", o.reply.ack))),
        Ok(o) => {
            t.record_answer_and_settle(&o);
            Ok(None)
        }
    }
}

/// Runs the probe step and records `CHECK/map`, `CHECK/unmap` (and
/// `CHECK/write`) and `CHECK/no-deadlock`.
pub fn run(t: &mut Target, scn: &str, step: &Step, checks: &mut Vec<CheckResult>) -> Result<(), StepError> {
    let Step::ProbeReplyBeforeCommit { check, shmid, shm_offset, doorbell_shmid, doorbell_offset, iterations, rw, writes } = step else {
        return Err(StepError::BadInput(format!("not a probe step: {}", step.kind())));
    };
    let plan = Plan { check, target: (*shmid, shm_offset.0), doorbell: (*doorbell_shmid, doorbell_offset.0), iterations: *iterations, rw: *rw, writes: *writes };
    let name = |n: &str| format!("{scn}/{check}.{n}");
    let (db_name, files) = (name("doorbell"), [name("a"), name("b")]);
    for f in [&db_name, &files[0], &files[1]] {
        t.mgr.create_file(f, 0x1000)?;
    }
    let o = match t.mgr.send(ShmemOp::Map, page_msg(plan.doorbell.0, plan.doorbell.1, true), Attach::File(&db_name), Want::Accept) {
        Ok(o) => o,
        Err(e) if no_ack_in_time(&e) => {
            checks.push(deadlock(check, format!("mapping the doorbell: SHMEM_MAP got no ack: {e}")));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if o.reply.ack != 0 {
        return Err(StepError::Refused(format!("the doorbell mapping was refused (ack {})", o.reply.ack)));
    }
    t.record_answer_and_settle(&o);
    let host = crate::files::HostMapping::of(t.mgr.file(&db_name)?).map_err(StepError::host_file(&db_name))?;
    let load_before = loadavg();
    let pinning = t.guest.probe_start(host, plan.doorbell, plan.target)?;
    let started = Instant::now();
    let mut tallies = Tallies::default();
    let looped = ring_loop(t, &plan, &files, &mut tallies);
    let stopped = t.guest.probe_stop();
    let no_ack = looped?;
    let conditions = format!("{} iterations in {:.1} s on {}; {pinning}; load average {load_before} before, {} after", plan.iterations, started.elapsed().as_secs_f64(), t.guest.kind(), loadavg());
    record(&plan, &tallies, no_ack, &conditions, checks);
    stopped.map_err(|e| StepError::BadInput(format!("ending the guest probe: {e}")))?;
    Ok(())
}

/// The loop; `Ok(Some(why))` when a request got no ack in time.
fn ring_loop(t: &mut Target, plan: &Plan<'_>, files: &[String; 2], tallies: &mut Tallies) -> Result<Option<String>, StepError> {
    let mut prev: Option<u64> = None;
    for i in 0..plan.iterations {
        let file = &files[i as usize % 2];
        let tag = TAG | u64::from(i);
        t.mgr.file(file)?.write(0, &tag.to_le_bytes()).map_err(StepError::host_file(file))?;
        if let Some(e) = request(t, i, ShmemOp::Map, page_msg(plan.target.0, plan.target.1, plan.rw), Attach::File(file))? {
            return Ok(Some(e));
        }
        if plan.rw && plan.writes && i % 2 == 1 {
            ring_write(t, i, file, &mut tallies.write)?;
        } else {
            ring_read(t, i, tag, prev, &mut tallies.map)?;
        }
        if let Some(e) = request(t, i, ShmemOp::Unmap, page_msg(plan.target.0, plan.target.1, false), Attach::None)? {
            return Ok(Some(e));
        }
        let reads = t.guest.probe_ring(RingMode::Read)?;
        let kind = match reads.values[0] {
            Some(0) | None => "fresh: the hole",
            Some(v) if v == tag || v == (MARK | u64::from(i)) => "the unmapped file's bytes",
            Some(_) => "other bytes",
        };
        tallies.unmap.add(i, kind, !kind.starts_with("fresh"), reads.micros[0]);
        prev = Some(tag);
        if super::interrupted() {
            return Err(StepError::Interrupted);
        }
    }
    Ok(None)
}

/// After a MAP ack: the guest's first read.
fn ring_read(t: &mut Target, i: u32, tag: u64, prev: Option<u64>, tally: &mut Tally) -> Result<(), StepError> {
    let reads = t.guest.probe_ring(RingMode::Read)?;
    let kind = match reads.values[0] {
        Some(v) if v == tag => "fresh",
        Some(0) | None => "hole",
        Some(v) if Some(v) == prev || v == (MARK | u64::from(i.wrapping_sub(1))) => "the previous mapping",
        Some(_) => "other bytes",
    };
    tally.add(i, kind, kind != "fresh", reads.micros[0]);
    Ok(())
}

/// After a MAP ack: a guest write, read back, and whether it reached the file.
fn ring_write(t: &mut Target, i: u32, file: &str, tally: &mut Tally) -> Result<(), StepError> {
    let marker = MARK | u64::from(i);
    let reads = t.guest.probe_ring(RingMode::Write(marker))?;
    let landed = t.mgr.file(file)?.read(0, 8).map_err(StepError::host_file(file))? == marker.to_le_bytes();
    let kind = match (reads.values[0], landed) {
        (Some(v), true) if v == marker => "fresh: written and read back",
        (_, false) => "lost: the write did not reach the file",
        (_, true) => "reached the file, but the guest read back something else",
    };
    tally.add(i, kind, !kind.starts_with("fresh"), reads.micros[0]);
    Ok(())
}

/// The probe's checks: one per direction that got a ring, and `no-deadlock`.
fn record(plan: &Plan<'_>, tallies: &Tallies, no_ack: Option<String>, conditions: &str, checks: &mut Vec<CheckResult>) {
    let directions = [
        (&tallies.map, "map", "the guest's first read right after a MAP ack"),
        (&tallies.unmap, "unmap", "the guest's first read right after an UNMAP ack"),
        (&tallies.write, "write", "a guest write right after a MAP ack"),
    ];
    // A direction that got no ring (a deadlock at once) records no check.
    checks.extend(directions.into_iter().filter(|(tally, _, _)| tally.n > 0).map(|(tally, dir, what)| tally.check(format!("{}/{dir}", plan.check), what, conditions)));
    checks.push(match no_ack {
        Some(e) => deadlock(plan.check, e),
        None => CheckResult::new(format!("{}/no-deadlock", plan.check), true, format!("every one of {} requests was acked", 2 * u64::from(plan.iterations) + 1)),
    });
}
