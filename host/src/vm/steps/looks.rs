//! The `expect-*` steps: each looks at one thing (the guest's view, a host
//! file, what the frontend holds, the backend's memory table, a sign of
//! life) and records one check with its evidence and facts.

use std::time::{Duration, Instant};

use super::target::{MEM_TABLE_TIMEOUT, RELEASE_TIMEOUT, StepError, Target, held_after_release, table_holds};
use crate::backend::MemTable;
use crate::files::{fnv1a64, pattern_byte};
use crate::manager::Expect;
use crate::vm::bounds::{FILE_LOOK_CAP, GUEST_LOOK_CAP};
use crate::vm::guest::{COMMAND_TIMEOUT, Observed};
use crate::vm::qemu::DEATH_GRACE;
use shmem_judge::check::CheckResult;
use shmem_judge::outcome::ErrorKind;

/// How long `expect-no-answer` waits.
const NO_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// `(shmid, offset, len)` of a look into a region.
type Range = (u8, u64, u64);

/// A look at the guest's view is checked at load (`bounds`); a step made
/// another way (the fuzzer, a test) is refused here before anything is
/// allocated for it.
fn guest_look_bounded(len: u64) -> Result<(), StepError> {
    if len > GUEST_LOOK_CAP {
        return Err(StepError::BadInput(format!("a look of {len:#x} bytes at the guest; at most {GUEST_LOOK_CAP:#x}")));
    }
    Ok(())
}

/// `expect-guest`: the guest's view equals what the ledger maps there, or
/// pattern `seed`.
pub fn expect_guest(
    t: &mut Target,
    check: &str,
    (shmid, offset, len): Range,
    seed: Option<u8>,
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
    guest_look_bounded(len)?;
    let bytes: Vec<u8> = match seed {
        Some(seed) => (0..len).map(|i| pattern_byte(seed, i)).collect(),
        None => {
            let want = t.mgr.expected(shmid, offset, len)?;
            let bytes: Option<Vec<u8>> =
                want.iter().map(|e| if let Expect::Byte(b) = e { Some(*b) } else { None }).collect();
            bytes.ok_or_else(|| {
                StepError::BadInput("the ledger has unmapped bytes in this range; use expect-guest-not".into())
            })?
        }
    };
    let want = Observed::of(&bytes);
    let got = t.guest.observe(shmid, offset, len)?;
    let of = seed.map_or("what the ledger maps there".to_string(), |s| format!("pattern {s:#04x}"));
    let evidence = format!("guest saw {}; expected {} ({of})", got.describe(), want.describe());
    checks.push(CheckResult::new(check, got == want, evidence).with("seen", got.fact()));
    Ok(())
}

/// The views of a range the ledger allows: the bytes mapped there with
/// holes as zeros (what QEMU shows), and, where any byte is unmapped, an
/// unreadable range (what the model shows). Each with its name.
fn allowed_views(t: &Target, (shmid, offset, len): Range) -> Result<Vec<(Observed, &'static str)>, StepError> {
    let want = t.mgr.expected(shmid, offset, len)?;
    let holes = want.contains(&Expect::Unmapped);
    let bytes: Vec<u8> = want.iter().map(|e| if let Expect::Byte(b) = e { *b } else { 0 }).collect();
    let mut views = vec![(
        Observed::of(&bytes),
        if holes { "what the ledger maps there, holes as zeros" } else { "what the ledger maps there" },
    )];
    if holes {
        views.push((Observed::Inaccessible, "unreadable where nothing is mapped"));
    }
    Ok(views)
}

/// `expect-guest-not`: the guest's view does not show these bytes of a
/// file, and shows what the ledger allows there instead (not just any
/// other bytes).
pub fn expect_guest_not(
    t: &mut Target,
    check: &str,
    range: Range,
    name: &str,
    fd_offset: u64,
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
    let (shmid, offset, len) = range;
    guest_look_bounded(len)?;
    let old = t.mgr.file(name)?.read(fd_offset, len).map_err(StepError::host_file(name))?;
    let old = Observed::of(&old);
    let allowed = allowed_views(t, range)?;
    let got = t.guest.observe(shmid, offset, len)?;
    let seen_as = if got == old {
        "the file's bytes"
    } else {
        allowed.iter().find(|(v, _)| *v == got).map_or("bytes the ledger does not allow there", |(_, what)| *what)
    };
    let evidence = format!(
        "guest saw {} ({seen_as}); the file's bytes are {}; the ledger allows {}",
        got.describe(),
        old.describe(),
        allowed.iter().map(|(v, what)| format!("{what}: {}", v.describe())).collect::<Vec<_>>().join(" or ")
    );
    let passed = got != old && allowed.iter().any(|(v, _)| *v == got);
    checks.push(CheckResult::new(check, passed, evidence).with("seen", got.fact()).with("seen_as", seen_as));
    Ok(())
}

/// `expect-file`: the host file holds pattern `seed`.
pub fn expect_file(
    t: &mut Target,
    check: &str,
    name: &str,
    (offset, len): (u64, u64),
    seed: u8,
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
    if len > FILE_LOOK_CAP {
        return Err(StepError::BadInput(format!("a look of {len:#x} bytes at a file; at most {FILE_LOOK_CAP:#x}")));
    }
    let data = t.mgr.file(name)?.read(offset, len).map_err(StepError::host_file(name))?;
    let want: Vec<u8> = (0..len).map(|i| pattern_byte(seed, i)).collect();
    let first_diff = data.iter().zip(&want).position(|(a, b)| a != b);
    let evidence = match first_diff {
        None => format!("file holds pattern {seed:#04x} (digest {:016x})", fnv1a64(&data)),
        Some(i) => format!(
            "file differs from pattern {seed:#04x} first at offset {:#x}: {:#04x} instead of {:#04x}",
            offset + i as u64,
            data[i],
            want[i]
        ),
    };
    let mut c = CheckResult::new(check, first_diff.is_none(), evidence).with("seen", Observed::of(&data).fact());
    if let Some(i) = first_diff {
        c = c.with("first_diff", format!("{:#x}", offset + i as u64));
    }
    checks.push(c);
    Ok(())
}

/// `expect-alive`: the guest gives a sign of life.
pub fn expect_alive(t: &mut Target, check: &str, checks: &mut Vec<CheckResult>) -> Result<(), StepError> {
    let res = t.guest.sign_of_life(COMMAND_TIMEOUT);
    let evidence = match &res {
        Ok(()) => format!("{} answers", t.guest.kind()),
        Err(e) => e.to_string(),
    };
    checks.push(CheckResult::new(check, res.is_ok(), evidence));
    Ok(())
}

/// `expect-digest`: the digest of the guest's view of a region (`shmid`) or
/// of a host file (`file`: its full name and its name in the scenario).
pub fn expect_digest(
    t: &mut Target,
    check: &str,
    of: (Option<u8>, Option<String>),
    (offset, len): (u64, u64),
    digest: &str,
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
    let (got, what) = match of {
        (Some(id), None) => {
            (t.guest.observe(id, offset, len)?.digest_or_zeros(len), format!("the guest's view of region {id}"))
        }
        (None, Some(name)) => (
            fnv1a64(&t.mgr.file(&name)?.read(offset, len).map_err(StepError::host_file(&name))?),
            format!("file {}", name.split_once('/').map_or(name.as_str(), |(_, f)| f)),
        ),
        _ => return Err(StepError::BadInput("expect-digest needs exactly one of `shmid` and `file`".into())),
    };
    let got = format!("{got:016x}");
    let evidence = format!("{what} at {offset:#x}+{len:#x} has digest {got}; expected {digest}");
    checks.push(CheckResult::new(check, got == digest, evidence).with("seen", format!("digest {got}")));
    Ok(())
}

/// `expect-released`: within a timeout, the frontend holds no fd and no
/// mapping of the file.
pub fn expect_released(
    t: &mut Target,
    check: &str,
    name: &str,
    shown: &str,
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
    let id = t.mgr.file(name)?.id();
    let start = Instant::now();
    let held = held_after_release(t.guest.as_ref(), &[id])?.concat();
    let evidence = if held.is_empty() {
        format!("{} holds no fd or mapping of {shown} ({:?} after the check began)", t.guest.kind(), start.elapsed())
    } else {
        format!("{} still holds {shown} after {RELEASE_TIMEOUT:?}: {}", t.guest.kind(), held.join(", "))
    };
    checks.push(CheckResult::new(check, held.is_empty(), evidence).with("held", held.len()));
    Ok(())
}

/// `expect-mem-table`: within a timeout, the backend's latest memory table
/// holds (or no longer holds) the mapping; reports the lag after the last ack.
pub fn expect_mem_table(
    t: &mut Target,
    check: &str,
    (shmid, shm_offset, len): Range,
    (name, shown): (&str, &str),
    present: bool,
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
    let id = t.mgr.file(name)?.id();
    let addr = t.guest.region_addr(shmid)? + shm_offset;
    let holds = |m: &MemTable| table_holds(m, addr, len, id);
    let since = t.last_ack.unwrap_or_else(Instant::now);
    let ok = t.recorder.wait_for(MEM_TABLE_TIMEOUT, |r| r.mem_tables.last().is_some_and(|m| holds(m) == present));
    let rec = t.recorder.lock();
    let lag = rec.mem_tables.iter().rev().find(|m| holds(m) == present && m.at >= since).map(|m| m.at - since);
    let latest = if rec.mem_tables.last().is_some_and(holds) { "holds" } else { "lacks" };
    let evidence = match (ok, lag) {
        (true, Some(lag)) => format!(
            "memory table {} {shown} at {addr:#x}+{len:#x} {lag:?} after the ack",
            if present { "holds" } else { "no longer holds" }
        ),
        (true, None) => format!("memory table already {} it before the ack", if present { "held" } else { "lacked" }),
        (false, _) => format!(
            "after {MEM_TABLE_TIMEOUT:?} the latest of {} memory tables {} {shown} at {addr:#x}+{len:#x}; its regions: {:?}",
            rec.mem_tables.len(),
            if present { "does not hold" } else { "still holds" },
            rec.mem_tables.last().map_or("none".to_string(), |m| m
                .regions
                .iter()
                .map(|r| format!("{:#x}+{:#x}", r.guest_addr, r.size))
                .collect::<Vec<_>>()
                .join(" "))
        ),
    };
    drop(rec);
    if let (true, Some(lag)) = (ok, lag) {
        t.table_lags.push(lag);
    }
    checks.push(CheckResult::new(check, ok, evidence).with("latest_table", latest));
    Ok(())
}

/// `expect-no-answer`: the guest does not answer because it hangs (a
/// timeout) or its frontend is dead, and the evidence says which; any other
/// error says nothing of either and fails the check.
pub fn expect_no_answer(t: &mut Target, check: &str, checks: &mut Vec<CheckResult>) -> Result<(), StepError> {
    let start = Instant::now();
    let res = t.guest.sign_of_life(NO_ANSWER_TIMEOUT);
    let cause = match &res {
        Ok(()) => "answered",
        // A dying QEMU breaks its sockets a moment before it can be reaped.
        Err(e) if e.kind() != ErrorKind::Timeout && t.gone_within(DEATH_GRACE).is_some() => "dead",
        Err(e) if e.kind() == ErrorKind::Timeout => "timeout",
        Err(e) if e.kind() == ErrorKind::Dead => "dead",
        Err(_) => "other error",
    };
    let evidence = match res {
        Ok(()) => format!("the guest answered within {:?}", start.elapsed()),
        Err(e) => format!("no answer after {:?} ({cause}): {e}", start.elapsed()),
    };
    checks.push(CheckResult::new(check, matches!(cause, "dead" | "timeout"), evidence).with("cause", cause));
    Ok(())
}
