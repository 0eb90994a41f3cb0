//! Steps that send SHMEM_MAP / SHMEM_UNMAP: one request with the ack it
//! must get (checks `LABEL/ack` and `LABEL/reason`), or many maps side by
//! side (`map-many`).

use std::time::Instant;

use super::target::{MEM_TABLE_TIMEOUT, StepError, Target, table_holds};
use crate::backend::MemTable;
use crate::channel::{ShmemMsg, ShmemOp};
use crate::manager::{Attach, Outcome, Want};
use crate::vm::scenario::Step;
use shmem_judge::check::{CheckResult, said_fact};
use shmem_proto::MAP_RW;

/// The checks of one answered request: its ack, and what the frontend said.
fn ack_checks(
    label: &str,
    kind: &str,
    o: &Outcome,
    (want, reason, stated): (u64, Option<&str>, bool),
    said: &str,
    checks: &mut Vec<CheckResult>,
) {
    let evidence = format!(
        "{} {}{}: ack {} (expected {want}) after {:.3} ms{}",
        o.op,
        o.msg,
        if o.with_fd { "" } else { " without an fd" },
        o.reply.ack,
        o.reply.latency.as_secs_f64() * 1e3,
        o.surprise.as_ref().map(|s| format!("; {s}")).unwrap_or_default()
    );
    checks.push(
        CheckResult::new(format!("{label}/ack"), o.reply.ack == want, evidence)
            .with("ack", o.reply.ack)
            .with("said", said_fact(said)),
    );
    let reason_check = match reason {
        Some(reason) => {
            Some((said.contains(reason), format!("{kind} said {said:?}; expected it to mention {reason:?}")))
        }
        None if stated => Some((
            stated_reason(said).is_some(),
            format!("{kind} said {said:?}; expected it to state a reason, any reason (a line that is no warning)"),
        )),
        None => None,
    };
    if let Some((passed, evidence)) = reason_check {
        checks.push(CheckResult::new(format!("{label}/reason"), passed, evidence).with("said", said_fact(said)));
    }
}

/// The first line of what a frontend said that states a reason: not blank
/// and no warning (QEMU prints `warning:` before those, as before "the
/// backend offers PROTOCOL_F_CONFIG", which is about no request).
fn stated_reason(said: &str) -> Option<&str> {
    said.lines().map(str::trim).find(|l| !l.is_empty() && !l.contains("warning:"))
}

/// Sends one request, records its answer, and checks ack and reason.
fn request(
    t: &mut Target,
    label: &str,
    op: ShmemOp,
    msg: ShmemMsg,
    how: Attach<'_>,
    (ack, reason, stated): (u64, Option<&str>, bool),
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
    let mark = t.guest.log_mark();
    let want = if ack == 0 { Want::Accept } else { Want::Refuse };
    let o = t.mgr.send(op, msg, how, want)?;
    t.record_answer_and_settle(&o);
    let said = t.guest.log_since(mark);
    ack_checks(label, t.guest.kind(), &o, (ack, reason, stated), &said, checks);
    Ok(())
}

/// `map`: SHMEM_MAP, with the file, without an fd, or with the file
/// re-opened read-only; `flags` override what `rw` implies.
pub fn map(
    t: &mut Target,
    file: &dyn Fn(&str) -> String,
    label: &str,
    step: &Step,
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
    let Step::Map {
        shmid,
        file: f,
        fd_offset,
        shm_offset,
        len,
        rw,
        ack,
        attach,
        readonly_fd,
        flags,
        reason,
        stated,
        ..
    } = step
    else {
        return Err(StepError::BadInput(format!("not a map step: {}", step.kind())));
    };
    let name = file(f);
    let msg = ShmemMsg {
        shmid: *shmid,
        fd_offset: fd_offset.0,
        shm_offset: shm_offset.0,
        len: len.0,
        flags: flags.unwrap_or(if *rw { MAP_RW } else { 0 }),
    };
    let how = match (attach, readonly_fd) {
        (false, _) => Attach::None,
        (true, false) => Attach::File(&name),
        (true, true) => Attach::ReadOnly(&name),
    };
    request(t, label, ShmemOp::Map, msg, how, (*ack, reason.as_deref(), *stated), checks)
}

/// `unmap`: SHMEM_UNMAP of a range.
pub fn unmap(t: &mut Target, label: &str, step: &Step, checks: &mut Vec<CheckResult>) -> Result<(), StepError> {
    let Step::Unmap { shmid, shm_offset, len, ack, reason, stated, .. } = step else {
        return Err(StepError::BadInput(format!("not an unmap step: {}", step.kind())));
    };
    let msg = ShmemMsg { shmid: *shmid, shm_offset: shm_offset.0, len: len.0, ..ShmemMsg::default() };
    request(t, label, ShmemOp::Unmap, msg, Attach::None, (*ack, reason.as_deref(), *stated), checks)
}

/// `map-many`: `count` read-only maps of `len` bytes side by side from
/// offset 0; the first `expect_accepted` must be accepted, and every
/// accepted one must reach the backend's memory table.
pub fn map_many(
    t: &mut Target,
    check: &str,
    (shmid, name): (u8, &str),
    (count, len, expect_accepted): (u32, u64, u32),
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
    let id = t.mgr.file(name)?.id();
    let base = t.guest.region_addr(shmid)?;
    let mark = t.guest.log_mark();
    let start = Instant::now();
    let mut accepted = Vec::new();
    let mut refused_early = None;
    for i in 0..u64::from(count) {
        let o = t.mgr.map(shmid, name, 0, i * len, len, false)?;
        t.record_answer_and_settle(&o);
        if o.reply.ack == 0 {
            accepted.push(base + i * len);
        } else if i < u64::from(expect_accepted) {
            refused_early.get_or_insert(i);
        }
        if t.guest.gone().is_some() {
            return Err(StepError::FrontendDied(format!("frontend died at mapping {i} of {count}")));
        }
    }
    let elapsed = start.elapsed();
    let in_table = |m: &MemTable, addr: u64| table_holds(m, addr, len, id);
    let all_there = |m: &MemTable| accepted.iter().all(|&a| in_table(m, a));
    t.recorder.wait_for(MEM_TABLE_TIMEOUT, |r| r.mem_tables.last().is_some_and(all_there));
    let missing = t
        .recorder
        .lock()
        .mem_tables
        .last()
        .map_or(accepted.len(), |m| accepted.iter().filter(|&&a| !in_table(m, a)).count());
    let said = t.guest.log_since(mark);
    let refused = count as usize - accepted.len();
    let early = refused_early
        .map(|i| format!("; map {i} was refused, but the first {expect_accepted} must be accepted"))
        .unwrap_or_default();
    let evidence = format!(
        "{count} maps of {len:#x} bytes in {elapsed:?}: {} accepted, {refused} refused{early}; {missing} accepted mappings missing from the backend's memory table{}",
        accepted.len(),
        said.lines().next().map(|l| format!("; {} said: {l}", t.guest.kind())).unwrap_or_default()
    );
    let mut c = CheckResult::new(check, missing == 0 && refused_early.is_none(), evidence)
        .with("accepted", accepted.len())
        .with("refused", refused)
        .with("missing", missing)
        .with("said", said_fact(&said));
    if let Some(i) = refused_early {
        c = c.with("first_refused", i);
    }
    checks.push(c);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::stated_reason;

    #[test]
    fn a_warning_or_nothing_states_no_reason() {
        assert_eq!(stated_reason(""), None);
        assert_eq!(stated_reason("  \n"), None);
        assert_eq!(
            stated_reason(
                "qemu-system-x86_64: warning: vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not."
            ),
            None
        );
        assert_eq!(
            stated_reason("qemu-system-x86_64: warning: x\nqemu-system-x86_64: device not started"),
            Some("qemu-system-x86_64: device not started")
        );
    }
}
