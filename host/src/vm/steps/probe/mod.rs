//! The reply-before-commit probe (`probe-reply-before-commit`), host side.
//! Per iteration: a file no earlier iteration mapped, holding a tag that
//! names the iteration; map it, ring the guest at once, classify its first
//! read; unmap, ring at once, classify again. Nothing crosses the serial
//! port inside the loop. Records checks; judges nothing.

mod classify;
mod stats;

use std::io;
use std::time::Instant;

pub use stats::{Tally, rate_upper_bound};

use super::target::{StepError, Target};
use crate::channel::{ShmemMsg, ShmemOp};
use crate::manager::{Attach, ManagerError, Want};
use crate::vm::guest::{GuestError, RingMode};
use crate::vm::scenario::Step;
use classify::{MARK, TAG};
use shmem_judge::check::{CheckResult, said_fact};
use shmem_proto::MAP_RW;

/// Blocks of consecutive iterations each direction's count is kept in.
const BLOCKS: u64 = 10;

/// What a probe step asks for.
struct Plan<'a> {
    check: &'a str,
    /// The scenario's name, for the probe's file names.
    scn: &'a str,
    target: (u8, u64),
    doorbell: (u8, u64),
    iterations: u32,
    rw: bool,
    writes: bool,
}

impl Plan<'_> {
    fn file(&self, what: &str) -> String {
        format!("{}/{}.{what}", self.scn, self.check)
    }
}

/// The directions' tallies.
#[derive(Default)]
struct Tallies {
    map: Tally,
    unmap: Tally,
    write: Tally,
    /// Requests sent (the doorbell's map included).
    sent: u64,
    /// Per request kind (map, unmap): acked, and of those how many had
    /// their memory table (with the file, or without it) reach the backend
    /// before the ack: the order on the wire, which a rate cannot tell.
    order: [(u32, u32); 2],
}

/// Whether the memory table that commits `op` of `file` reached the backend
/// after the request was sent and before the backend had its ack (a table
/// sent just after the ack can beat the backend's reading of it now and
/// then: only every request of a run, ordered so, tells the order).
fn table_first(t: &Target, op: ShmemOp, file: crate::backend::FileId, reply: &crate::channel::Reply) -> bool {
    let sent = reply.at.checked_sub(reply.latency).unwrap_or(reply.at);
    let holds = |m: &crate::backend::MemTable| m.regions.iter().any(|r| r.file == Some(file));
    // The newest first, back to the request's sending: a long probe has thousands of tables.
    t.recorder
        .lock()
        .mem_tables
        .iter()
        .rev()
        .take_while(|m| m.at > sent)
        .any(|m| m.at <= reply.at && holds(m) == (op == ShmemOp::Map))
}

/// Records the order on the wire of an acked request, once the guest has
/// been rung (never between the ack and the ring: that is the race's window).
fn record_order(
    t: &Target,
    tallies: &mut Tallies,
    op: ShmemOp,
    file: &str,
    reply: &crate::channel::Reply,
) -> Result<(), StepError> {
    let first = table_first(t, op, t.mgr.file(file)?.id(), reply);
    let order = &mut tallies.order[usize::from(op == ShmemOp::Unmap)];
    order.0 += 1;
    order.1 += u32::from(first);
    Ok(())
}

/// Why the loop ended before its last iteration (a finding, not an error).
enum Stop {
    /// A request got no ack, or a ring no answer, in time.
    Stall { i: u32, request: &'static str, direction: &'static str, why: String },
    /// The map after an acked unmap of the same range was refused.
    Remap { i: u32, ack: u64, said: String },
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn page_msg(shmid: u8, shm_offset: u64, rw: bool) -> ShmemMsg {
    ShmemMsg { shmid, shm_offset, len: 0x1000, flags: if rw { MAP_RW } else { 0 }, ..ShmemMsg::default() }
}

/// Whether a request's error is the watchdog's: no ack in time. Any other
/// channel error (the frontend closed it: it died) is no deadlock.
fn no_ack_in_time(e: &ManagerError) -> bool {
    matches!(e, ManagerError::Io { err, .. } if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Sends one probe request. `Ok(Err(stop))` when it got no ack in time, or
/// when a map after an acked unmap was refused; any other refusal or a dead
/// channel is an error. The ack's reply, for its order on the wire.
fn request(
    t: &mut Target,
    tallies: &mut Tallies,
    i: u32,
    op: ShmemOp,
    msg: ShmemMsg,
    attach: Attach<'_>,
) -> Result<Result<crate::channel::Reply, Stop>, StepError> {
    let mark = t.guest.log_mark();
    tallies.sent += 1;
    let (request, direction) = if op == ShmemOp::Map { ("SHMEM_MAP", "map") } else { ("SHMEM_UNMAP", "unmap") };
    match t.mgr.send(op, msg, attach, Want::Accept) {
        Err(e) if no_ack_in_time(&e) => {
            Ok(Err(Stop::Stall { i, request, direction, why: format!("{request} got no ack: {e}") }))
        }
        Err(e) => Err(e.into()),
        Ok(o) if o.reply.ack != 0 && op == ShmemOp::Map && i > 0 => {
            Ok(Err(Stop::Remap { i, ack: o.reply.ack, said: t.guest.log_since(mark) }))
        }
        Ok(o) if o.reply.ack != 0 => {
            Err(StepError::Refused(format!("iteration {i}: {op} refused (ack {})", o.reply.ack)))
        }
        Ok(o) => {
            t.record_answer_and_settle(&o);
            Ok(Ok(o.reply))
        }
    }
}

/// A ring the guest did not answer in time is a stall; other errors stay errors.
fn ring(
    t: &mut Target,
    i: u32,
    direction: &'static str,
    mode: RingMode,
) -> Result<Result<crate::vm::guest::ProbeReads, Stop>, StepError> {
    match t.guest.probe_ring(mode) {
        Ok(r) => Ok(Ok(r)),
        Err(e @ GuestError::Timeout { .. }) => Ok(Err(Stop::Stall {
            i,
            request: "ring",
            direction,
            why: format!("{e} (after the {} ack)", direction.to_uppercase()),
        })),
        Err(e) => Err(e.into()),
    }
}

/// Runs the probe step and records `CHECK/map`, `CHECK/unmap` (and
/// `CHECK/write`), `CHECK/unmap-effect` and `CHECK/no-deadlock`.
pub fn run(t: &mut Target, scn: &str, step: &Step, checks: &mut Vec<CheckResult>) -> Result<(), StepError> {
    let Step::ProbeReplyBeforeCommit {
        check,
        shmid,
        shm_offset,
        doorbell_shmid,
        doorbell_offset,
        iterations,
        rw,
        writes,
    } = step
    else {
        return Err(StepError::BadInput(format!("not a probe step: {}", step.kind())));
    };
    let plan = Plan {
        check,
        scn,
        target: (*shmid, shm_offset.0),
        doorbell: (*doorbell_shmid, doorbell_offset.0),
        iterations: *iterations,
        rw: *rw,
        writes: *writes,
    };
    let mut tallies = Tallies { sent: 1, ..Tallies::default() };
    let db_name = plan.file("doorbell");
    t.mgr.create_file(&db_name, 0x1000)?;
    let o = match t.mgr.send(
        ShmemOp::Map,
        page_msg(plan.doorbell.0, plan.doorbell.1, true),
        Attach::File(&db_name),
        Want::Accept,
    ) {
        Ok(o) => o,
        Err(e) if no_ack_in_time(&e) => {
            let stop = Stop::Stall {
                i: 0,
                request: "SHMEM_MAP",
                direction: "map",
                why: format!("mapping the doorbell: SHMEM_MAP got no ack: {e}"),
            };
            checks.push(deadlock_check(&plan, &tallies, Some(&stop)));
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
    let looped = ring_loop(t, &plan, &mut tallies);
    let stopped = t.guest.probe_stop();
    let stop = looped?;
    let conditions = format!(
        "{} iterations in {:.1} s on {}; {pinning}; load average {load_before} before, {} after",
        plan.iterations,
        started.elapsed().as_secs_f64(),
        t.guest.kind(),
        loadavg()
    );
    record(&plan, &tallies, stop.as_ref(), (&conditions, t.single_threaded), checks);
    stopped.map_err(|e| StepError::BadInput(format!("ending the guest probe: {e}")))?;
    Ok(())
}

/// The loop; `Ok(Some(stop))` when it ended early on a finding.
fn ring_loop(t: &mut Target, plan: &Plan<'_>, tallies: &mut Tallies) -> Result<Option<Stop>, StepError> {
    for i in 0..plan.iterations {
        // A file no earlier iteration mapped: a stale mapping cannot show this tag.
        let file = plan.file(&format!("i{i}"));
        let tag = TAG | u64::from(i);
        t.mgr.create_file(&file, 0x1000)?.write(0, &tag.to_le_bytes()).map_err(StepError::host_file(&file))?;
        let res = iteration(t, plan, tallies, i, &file);
        t.mgr.remove_file(&file)?;
        if let Some(stop) = res? {
            return Ok(Some(stop));
        }
        if crate::vm::interrupted() {
            return Err(StepError::Interrupted);
        }
    }
    Ok(None)
}

/// One iteration: map, ring, classify; unmap, ring, classify.
fn iteration(
    t: &mut Target,
    plan: &Plan<'_>,
    tallies: &mut Tallies,
    i: u32,
    file: &str,
) -> Result<Option<Stop>, StepError> {
    let mapped = match request(
        t,
        tallies,
        i,
        ShmemOp::Map,
        page_msg(plan.target.0, plan.target.1, plan.rw),
        Attach::File(file),
    )? {
        Ok(reply) => reply,
        Err(stop) => return Ok(Some(stop)),
    };
    let marker = MARK | u64::from(i);
    // Ten blocks of consecutive iterations: how much the rate moves within the run.
    let at = (i, (u64::from(i) * BLOCKS / u64::from(plan.iterations.max(1))) as usize);
    let writing = plan.rw && plan.writes && i % 2 == 1;
    let reads = match ring(t, i, "map", if writing { RingMode::Write(marker) } else { RingMode::Read })? {
        Ok(r) => r,
        Err(stop) => return Ok(Some(stop)),
    };
    record_order(t, tallies, ShmemOp::Map, file, &mapped)?;
    if writing {
        let landed = t.mgr.file(file)?.read(0, 8).map_err(StepError::host_file(file))? == marker.to_le_bytes();
        let kind = classify::after_write(reads.values[0], marker, landed);
        tallies.write.add(at, kind, !kind.starts_with("fresh"), reads.micros[0]);
    } else {
        let kind = classify::after_map(reads.values[0], i);
        tallies.map.add(at, kind, kind != "fresh", reads.micros[0]);
    }
    let unmapped =
        match request(t, tallies, i, ShmemOp::Unmap, page_msg(plan.target.0, plan.target.1, false), Attach::None)? {
            Ok(reply) => reply,
            Err(stop) => return Ok(Some(stop)),
        };
    let reads = match ring(t, i, "unmap", RingMode::Read)? {
        Ok(r) => r,
        Err(stop) => return Ok(Some(stop)),
    };
    record_order(t, tallies, ShmemOp::Unmap, file, &unmapped)?;
    let kind = classify::after_unmap(reads.values[0], i);
    tallies.unmap.add(at, kind, !kind.starts_with("fresh"), reads.micros[0]);
    Ok(None)
}

/// `CHECK/no-deadlock`: every request got its ack and every ring its answer.
fn deadlock_check(plan: &Plan<'_>, tallies: &Tallies, stop: Option<&Stop>) -> CheckResult {
    let name = format!("{}/no-deadlock", plan.check);
    match stop {
        Some(Stop::Stall { i, request, direction, why }) => {
            let what = if *request == "ring" { "no ring answer" } else { "no ack" };
            CheckResult::new(
                name,
                false,
                format!(
                    "deadlock at iteration {i} ({direction}): {why}; the backend could not serve the frontend meanwhile"
                ),
            )
            .with("deadlock", what)
            .with("iteration", *i)
            .with("request", *request)
            .with("direction", *direction)
        }
        _ => CheckResult::new(
            name,
            true,
            format!("every one of {} requests was acked, every ring answered", tallies.sent),
        ),
    }
}

/// `CHECK/unmap-effect`: after every UNMAP ack, the range could be mapped again.
fn unmap_effect_check(plan: &Plan<'_>, tallies: &Tallies, stop: Option<&Stop>) -> CheckResult {
    let name = format!("{}/unmap-effect", plan.check);
    match stop {
        Some(Stop::Remap { i, ack, said }) => CheckResult::new(
            name,
            false,
            format!("iteration {i}: the SHMEM_MAP of the range acked as unmapped at iteration {} was refused (ack {ack}): the UNMAP did not take effect; the frontend said {said:?}", i - 1),
        )
        .with("iteration", *i)
        .with("ack", *ack)
        .with("said", said_fact(said)),
        _ => CheckResult::new(name, true, format!("after each of {} UNMAP acks the range could be mapped again", tallies.unmap.n)),
    }
}

/// The probe's checks: one per direction that got a ring, `unmap-effect`
/// once an unmap was acked, and `no-deadlock`.
fn record(
    plan: &Plan<'_>,
    tallies: &Tallies,
    stop: Option<&Stop>,
    (conditions, single): (&str, bool),
    checks: &mut Vec<CheckResult>,
) {
    // A single-threaded backend rings only once the table that commits the
    // request has arrived (or a second has passed): that is what it measures.
    let after = if single {
        "ack and the memory table that commits it (single-threaded backend: it rings once that table arrived, or after 1 s)"
    } else {
        "ack"
    };
    let directions = [
        (&tallies.map, "map", format!("the guest's first read right after a MAP {after}"), tallies.order[0]),
        (&tallies.unmap, "unmap", format!("the guest's first read right after an UNMAP {after}"), tallies.order[1]),
        (&tallies.write, "write", format!("a guest write right after a MAP {after}"), tallies.order[0]),
    ];
    // A direction that got no ring (a deadlock at once) records no check.
    checks.extend(
        directions
            .into_iter()
            .filter(|(tally, ..)| tally.n > 0)
            .map(|(tally, dir, what, order)| tally.check(format!("{}/{dir}", plan.check), &what, conditions, order)),
    );
    if tallies.unmap.n > 0 || matches!(stop, Some(Stop::Remap { .. })) {
        checks.push(unmap_effect_check(plan, tallies, stop));
    }
    checks.push(deadlock_check(plan, tallies, stop));
}
