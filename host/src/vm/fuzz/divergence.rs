//! A divergence: a check the subject failed where the oracle's answer was
//! the expectation, with the facts known defects are matched on (the
//! operation's kind and context, the oracle's words), and the context the
//! fuzzer keeps from the model's state to give those facts.

use super::ops::{FILES, Op};
use shmem_judge::check::{CheckResult, FRONTEND_SURVIVES, Fact, Facts};
use shmem_judge::defects::KnownDefect;
use shmem_judge::listing::FALSE_PASS;

/// A failed check, classified: its kind (`map/ack`, `guest-read`, ...) and
/// facts, the oracle's words added.
#[derive(Clone, Debug)]
pub struct Divergence {
    pub kind: String,
    pub check: CheckResult,
}

/// Facts that change with the history without being the bug: the step's
/// label (it holds the operation's index), content digests (they follow
/// whatever the files were filled with), how many fds are held (it grows
/// with every leak before), and what the subject said (its words come when
/// they come, before or after the ack).
const VOLATILE: [&str; 5] = ["step", "seen", "first_diff", "held", "said"];

impl Divergence {
    /// What must recur for a shorter sequence to reproduce it: its kind and
    /// every fact but the volatile ones (context included, so shrinking
    /// never lands on another bug, a listed one say).
    pub fn key(&self) -> String {
        let facts: Vec<String> = self
            .check
            .facts
            .iter()
            .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{} {}", self.kind, facts.join(" "))
    }
}

/// The signature keys that say when a divergence can happen (the operation
/// and its context), as opposed to what the subject then did.
const CONTEXT_KEYS: [&str; 6] = ["op_kind", "oracle_said", "device", "attach", "ro_write", "after_reset"];

/// What is known of an operation before the subject answers: its kind, what
/// the oracle said, whether the device is started, how a map's fd is
/// attached, whether a file it concerns was written through a read-only
/// mapping, and whether a reset came after the last accepted map.
pub(super) fn context_facts(op: &Op, said: &str, cx: &Context, concerned: &[usize]) -> Facts {
    let mut f = Facts::new();
    f.insert("op_kind".to_string(), op.kind().into());
    f.insert("oracle_said".to_string(), said.lines().next().unwrap_or("").into());
    f.insert("device".to_string(), if cx.started { "started" } else { "stopped" }.into());
    if let Op::Map { attach, .. } = op {
        f.insert("attach".to_string(), attach.name().into());
    }
    if concerned.iter().any(|&i| cx.ro_written[i]) {
        f.insert("ro_write".to_string(), "yes".into());
    }
    if cx.after_reset {
        f.insert("after_reset".to_string(), "yes".into());
    }
    f
}

/// Whether an operation with this context exercises `entry`: the same kind
/// of operation, and every context fact of its signature as listed.
pub(super) fn exercises(entry: &KnownDefect, op: &Op, context: &Facts) -> bool {
    let kind_ok = entry.check == FRONTEND_SURVIVES || entry.check.split('/').next() == Some(op.kind());
    kind_ok
        && CONTEXT_KEYS
            .iter()
            .filter_map(|k| Some((*k, entry.signature.get(*k)?)))
            .all(|(k, v)| context.get(k).map_or(String::new(), Fact::to_string) == *v)
}

/// How many times an entry must be exercised without showing before it is
/// reported as not seen: a defect still there, at a quarter of its listed
/// rate (1 when none is listed: it showed every time), goes unseen that
/// long with probability at most `verdict::FALSE_PASS`.
pub fn exercises_needed(entry: &KnownDefect) -> u64 {
    let q = entry.rate.unwrap_or(1.0) / 4.0;
    (FALSE_PASS.ln() / (1.0 - q).ln()).ceil() as u64
}

/// Classifies the subject's failed checks for `op`, with the operation and
/// its context as facts.
pub(super) fn divergences(op: &Op, context: &Facts, failed: Vec<CheckResult>) -> Vec<Divergence> {
    failed
        .into_iter()
        .map(|mut c| {
            let suffix = c.check.split_once('/').map(|(_, s)| format!("/{s}")).unwrap_or_default();
            let kind = if c.check == FRONTEND_SURVIVES { c.check.clone() } else { format!("{}{suffix}", op.kind()) };
            c = c.with("op", op.to_string());
            c.facts.extend(context.clone());
            Divergence { kind, check: c }
        })
        .collect()
}

pub(super) fn known_id(known: &[KnownDefect], d: &Divergence) -> Option<String> {
    known.iter().find(|k| k.check == d.kind && k.matches(&d.check.facts)).map(|k| k.id.clone())
}

/// What the divergences' facts need of the past operations.
#[derive(Clone, Copy, Debug)]
pub(super) struct Context {
    /// Which files a guest write reached through a read-only mapping (until
    /// the host fills the whole file anew).
    pub ro_written: [bool; FILES.len()],
    /// A reset happened since the last map the oracle accepted (a refused
    /// map changes nothing the reset left behind).
    pub after_reset: bool,
    /// The device is started (DRIVER_OK since the last reset).
    pub started: bool,
}

impl Context {
    pub fn fresh() -> Self {
        Context { ro_written: [false; FILES.len()], after_reset: false, started: true }
    }
}

#[cfg(test)]
mod tests {
    //! Fuzz entries are scoped: another operation, another file or another
    //! context is another bug.

    use super::*;
    use crate::vm::fuzz::ops::AttachKind;

    fn entry(check: &str, signature: &[(&str, &str)]) -> KnownDefect {
        let sig = signature.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        KnownDefect {
            id: "e".into(),
            scenario: "fuzz".into(),
            check: check.into(),
            qemu: vec![],
            frontend: vec![],
            accel: vec![],
            unmeasured: vec![],
            signature: sig,
            rate: None,
            stale_kinds: vec![],
            accel_specific: false,
            evidence: String::new(),
        }
    }

    #[test]
    fn a_read_only_taint_follows_the_file_an_operation_concerns() {
        let mut cx = Context::fresh();
        cx.ro_written[1] = true;
        let read = Op::GuestRead { shmid: 0, offset: 0, len: 8 };
        let tainted = context_facts(&read, "", &cx, &[1]);
        let clean = context_facts(&read, "", &cx, &[0]);
        let e = entry("guest-read", &[("ro_write", "yes")]);
        assert!(exercises(&e, &read, &tainted) && e.matches(&tainted));
        assert!(!exercises(&e, &read, &clean) && !e.matches(&clean), "a read of another file is another bug");
    }

    #[test]
    fn a_crash_entry_covers_only_its_operation_and_device_state() {
        let mut cx = Context::fresh();
        cx.started = false;
        let map = Op::Map {
            shmid: 0,
            file: 0,
            fd_offset: 0,
            shm_offset: 0,
            len: 0x1000,
            rw: false,
            attach: AttachKind::File,
            flags: None,
        };
        let write = Op::HostWrite { file: 0, offset: 0, len: 8, seed: 1 };
        let e = entry(FRONTEND_SURVIVES, &[("exit", "signal 11 (SIGSEGV)"), ("device", "stopped"), ("op_kind", "map")]);
        let crash = |op: &Op, cx: &Context| {
            let mut f = context_facts(op, "", cx, &[0]);
            f.insert("exit".into(), "signal 11 (SIGSEGV)".into());
            f
        };
        assert!(e.matches(&crash(&map, &cx)) && exercises(&e, &map, &context_facts(&map, "", &cx, &[0])));
        assert!(!e.matches(&crash(&write, &cx)), "a crash on a host write is another bug");
        assert!(!e.matches(&crash(&map, &Context::fresh())), "a crash on a started device is another bug");
    }

    #[test]
    fn entries_shown_every_time_are_dropped_after_25_quiet_exercisings() {
        assert_eq!(exercises_needed(&entry("map/ack", &[])), 25);
        let mut rare = entry("mem-table", &[]);
        rare.rate = Some(0.009);
        assert!(exercises_needed(&rare) > 3000);
    }
}
