//! A divergence: a check the subject failed where the oracle's answer was
//! the expectation, with the facts known defects are matched on (the
//! operation's kind and context, the oracle's words), and the context the
//! fuzzer keeps from the model's state to give those facts.

use super::ops::{FILES, Op};
use crate::vm::check::CheckResult;
use crate::vm::defects::KnownDefect;

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
pub(super) fn divergences(op: &Op, said: &str, failed: Vec<CheckResult>, cx: Context) -> Vec<Divergence> {
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

pub(super) fn known_id(known: &[KnownDefect], d: &Divergence) -> Option<String> {
    known.iter().find(|k| k.check == d.kind && k.matches(&d.check.facts)).map(|k| k.id.clone())
}

/// What the divergences' facts need of the past operations.
#[derive(Clone, Copy, Debug)]
pub(super) struct Context {
    /// Which files a guest write reached through a read-only mapping (until
    /// the host fills the whole file anew).
    pub ro_written: [bool; FILES.len()],
    /// A reset happened since the last map.
    pub after_reset: bool,
    /// The device is started (DRIVER_OK since the last reset).
    pub started: bool,
}

impl Context {
    pub fn fresh() -> Self {
        Context { ro_written: [false; FILES.len()], after_reset: false, started: true }
    }
}

