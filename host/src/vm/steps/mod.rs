//! Carries out scenario steps on one target (QEMU or the model) and records
//! each check's outcome with its evidence. One function per step kind, in
//! `setup` (files, writes, resets, faults), `requests` (map, unmap,
//! map-many) and `looks` (every `expect-*`); the doorbell probe is
//! `probe`; what they all act on (`Target`) and their error are `target`.
//! Checks never stop a scenario; a step that cannot be carried out does.
//! Nothing here judges: verdicts are the judge's (`shmem_judge`).

mod looks;
pub mod probe;
mod requests;
mod setup;
pub mod target;

use std::time::Duration;

use shmem_judge::check::{CheckResult, FRONTEND_SURVIVES};

use super::error::RunError;
use super::qemu::DEATH_GRACE;
use super::scenario::{Scenario, Step};
use target::{StepError, Target};

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
            ended = format!(
                "the {} lived until a deadlock at step {} ({label:?}) ended the scenario",
                t.guest.kind(),
                n + 1
            );
            break;
        }
    }
    if !t.expected_death {
        checks.push(CheckResult::new(FRONTEND_SURVIVES, true, ended));
    }
    Ok(checks)
}

/// Carries out one step: the function of its kind.
fn run_step(
    scn: &Scenario,
    label: &str,
    step: &Step,
    t: &mut Target,
    checks: &mut Vec<CheckResult>,
) -> Result<(), StepError> {
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
        Step::MapMany { check, shmid, file: f, count, len, expect_accepted } => {
            requests::map_many(t, check, (*shmid, &file(f)), (*count, len.0, *expect_accepted), checks)
        }
        Step::ExpectGuest { check, shmid, offset, len, seed } => {
            looks::expect_guest(t, check, (*shmid, offset.0, len.0), *seed, checks)
        }
        Step::ExpectGuestNot { check, shmid, offset, len, file: f, fd_offset } => {
            looks::expect_guest_not(t, check, (*shmid, offset.0, len.0), &file(f), fd_offset.0, checks)
        }
        Step::ExpectFile { check, file: f, offset, len, seed } => {
            looks::expect_file(t, check, &file(f), (offset.0, len.0), *seed, checks)
        }
        Step::ExpectAlive { check } => looks::expect_alive(t, check, checks),
        Step::ExpectDigest { check, shmid, file: f, offset, len, digest } => {
            looks::expect_digest(t, check, (*shmid, f.as_deref().map(file)), (offset.0, len.0), digest, checks)
        }
        Step::ExpectReleased { check, file: f } => looks::expect_released(t, check, &file(f), f, checks),
        Step::ExpectMemTable { check, shmid, shm_offset, len, file: f, present } => {
            looks::expect_mem_table(t, check, (*shmid, shm_offset.0, len.0), (&file(f), f), *present, checks)
        }
        Step::ExpectNoAnswer { check, .. } => looks::expect_no_answer(t, check, checks),
        Step::ProbeReplyBeforeCommit { .. } => probe::run(t, &scn.name, step, checks),
    }
}
