//! What one boot of its own produced, before judging (`OwnBootRun`: both
//! halves' outcomes, QEMU's log, the boot time), and the `no-leaks`
//! self-check around each half. Shared by own boots of the own backend and
//! of a backend under test.

use std::path::Path;
use std::time::Duration;

use shmem_judge::backend::wire::WireRecord;
use shmem_judge::check::CheckResult;
use shmem_judge::outcome::{ErrorKind, Failure, RunOutcome};

use super::leaks;
use crate::relay::Relay;

/// What one own boot produced, before judging: passed between a worker
/// process and the runner as JSON.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct OwnBootRun {
    pub qemu: RunOutcome,
    pub qemu_secs: f64,
    pub model: RunOutcome,
    pub model_secs: f64,
    pub qemu_log: String,
    /// Boot to agent ready, when the guest got there.
    pub boot_secs: Option<f64>,
    /// What the recording relay saw between QEMU and the backend, where one ran.
    #[serde(default)]
    pub qemu_wire: Option<WireRecord>,
}

impl OwnBootRun {
    /// A run that could not happen, on both targets.
    pub fn failed(kind: ErrorKind, why: String) -> Self {
        let f = Failure { kind, message: why };
        OwnBootRun {
            qemu: Err(f.clone()),
            qemu_secs: 0.0,
            model: Err(f),
            model_secs: 0.0,
            qemu_log: String::new(),
            boot_secs: None,
            qemu_wire: None,
        }
    }
}

/// How many of the relay's last messages a failing scenario's log shows.
const RELAY_TAIL: usize = 16;

/// Ends the recording relay of a QEMU half: its record for the report,
/// and its last messages (and any error of its own) at the end of `log`.
pub fn finish_relay(relay: Relay, log: &mut String) -> WireRecord {
    let (msgs, relayed) = relay.finish(crate::relay::FINISH_WITHIN);
    let wire = WireRecord::of(&msgs);
    log.push_str(&format!(
        "\n-- the relay's last {RELAY_TAIL} messages of {} --\n{}",
        msgs.len(),
        wire.tail(RELAY_TAIL)
    ));
    if let Err(e) = relayed {
        log.push_str(&format!("\n-- the relay: {e}"));
    }
    wire
}

/// One half of an own boot (QEMU's or the model's), then its `no-leaks`
/// check: once the half is torn down, nothing of it may remain.
pub fn leak_checked<T>(dir: &Path, sockets: &Path, half: impl FnOnce() -> (RunOutcome, T)) -> (RunOutcome, T) {
    let before = leaks::Snapshot::take();
    let (mut res, rest) = half();
    if let Ok(checks) = &mut res {
        checks.push(no_leaks(&before, dir, sockets));
    }
    (res, rest)
}

/// Check `no-inherited-fds`: the worker that ran the boot held no fd of
/// its parent's at its start (`inherited`, from `leaks::inherited`), so
/// neither its QEMU nor its backend could hold the shared boot's memory
/// table, eventfds or mapped files.
pub fn no_inherited_fds(inherited: &[String]) -> CheckResult {
    let evidence = if inherited.is_empty() {
        "the worker started with its stdio and no other fd".into()
    } else {
        format!("the worker inherited {}", inherited.join("; "))
    };
    CheckResult::new("no-inherited-fds", inherited.is_empty(), evidence).with("inherited", inherited.len())
}

/// Check `no-leaks`: nothing of a torn-down boot remains in this process
/// (children, fds) or under its directories (sockets, temp dirs).
fn no_leaks(before: &leaks::Snapshot, dir: &Path, sockets: &Path) -> CheckResult {
    let mut leaks = before.leaks_after(dir, Duration::from_secs(1));
    leaks.extend(before.leftovers_in(sockets));
    let evidence =
        if leaks.is_empty() { "no child process, fd, socket or temp dir left".into() } else { leaks.join("; ") };
    CheckResult::new("no-leaks", leaks.is_empty(), evidence).with("leaks", leaks.len())
}
