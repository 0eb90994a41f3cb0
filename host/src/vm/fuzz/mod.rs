//! The stateful differential fuzzer. A seeded generator picks map, unmap,
//! reset and guest/host access operations, weighted towards the states where
//! bugs live (edges, full regions, just after a reset). Each operation runs
//! first on the oracle (the correct reference model), whose answer becomes
//! its expectation, so every operation is an ordinary scenario step; the
//! step then runs on the subject (QEMU, or a model with a fault switch).
//! A failed check that is not a listed known divergence (scenario `fuzz`,
//! matched by signature) stops the run and is shrunk by delta debugging on
//! fresh frontends into a scenario file. It judges nothing by itself.

mod divergence;
mod ops;
mod oracle;
mod shrink;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use divergence::Divergence;
pub use ops::{AttachKind, Op, Rng};
pub use oracle::Targets;

use super::boot::BootError;
use super::error::RunError;
use super::guest::GuestError;
use super::scenario::Step;
use super::steps::target::{StepError, Target};
use crate::manager::LedgerEntry;
use crate::manager::ManagerError;
use divergence::{Context, context_facts, divergences, exercises, exercises_needed, known_id};
use ops::{FILES, View, concerned_files, file_index, generate, resync, touched};
use oracle::{expect, fresh, run_one};
use shmem_judge::defects::KnownDefect;
use shrink::shrink;

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

/// What a sequence of operations shows when replayed on fresh targets.
#[derive(Default)]
struct Replay {
    /// The first divergence not known, with the index of its operation.
    unknown: Option<(usize, Divergence)>,
    /// Known divergences seen, by id.
    known: BTreeMap<String, u32>,
    /// How often each known entry's precondition was exercised, by id.
    exercised: BTreeMap<String, u64>,
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

/// Carries out `ops` on the targets, stopping at the first unknown
/// divergence (or, with `target`, at that divergence only).
/// Follows the model's state into the context: a read-only write taints a
/// file (until the host fills it whole), a reset stops the device (or not)
/// and counts as after-reset until the oracle accepts a map.
fn follow(cx: &mut Context, op: &Op, step: &Step, ledger: &[LedgerEntry]) {
    match op {
        Op::GuestWrite { shmid, offset, len, .. } => {
            for e in ledger.iter().filter(|e| !e.rw && e.overlaps(*shmid, *offset, *len)) {
                cx.ro_written[file_index(&e.file)] = true;
            }
        }
        Op::HostWrite { file, offset: 0, len, .. } if *len == FILES[*file].1 => cx.ro_written[*file] = false,
        Op::Reset { init } => (cx.after_reset, cx.started) = (true, *init),
        _ => {}
    }
    if matches!(step, Step::Map { ack: 0, .. }) {
        cx.after_reset = false;
    }
}

#[allow(clippy::too_many_arguments)]
fn play(
    ops: &[Op],
    s: &mut Target,
    o: &mut Target,
    known: &[KnownDefect],
    target: Option<&str>,
    from: usize,
    cx: &mut Context,
) -> Result<Replay, FuzzError> {
    let mut r = Replay::default();
    for (i, op) in ops.iter().enumerate() {
        let ledger = o.mgr.ledger().to_vec();
        let (step, said) = expect(op, from + i, o)?;
        let context = context_facts(op, &said, cx, &concerned_files(op, &ledger));
        follow(cx, op, &step, &ledger);
        for e in known.iter().filter(|e| exercises(e, op, &context)) {
            *r.exercised.entry(e.id.clone()).or_insert(0) += 1;
        }
        let failed = run_one(s, step, "fuzz")?;
        for d in divergences(op, &context, failed) {
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

/// What a fuzz run found and covered.
#[derive(Debug, Default)]
pub struct FuzzReport {
    pub ops: u64,
    pub states: usize,
    /// Known divergences seen, by entry id.
    pub known: BTreeMap<String, u32>,
    /// How often each listed entry's precondition was exercised, by id.
    pub exercised: BTreeMap<String, u64>,
    /// Listed entries exercised enough that never showed: the defect looks
    /// fixed (the run fails, naming them).
    pub not_seen: Vec<NotSeen>,
    pub fresh_starts: u32,
    /// The divergence found, its shrunk sequence's length, the original
    /// length, and the scenario written.
    pub found: Option<Found>,
}

/// A listed entry that did not show although exercised enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSeen {
    pub id: String,
    pub exercised: u64,
    pub needed: u64,
}

#[derive(Debug)]
pub struct Found {
    pub divergence: Divergence,
    pub original_len: usize,
    pub ops: Vec<Op>,
    pub minimal: bool,
    pub scenario: PathBuf,
}

/// The fuzzer between operations: both frontends, what happened since they
/// were fresh, and what the run has covered so far.
struct Session<'c> {
    cfg: &'c FuzzConfig,
    rng: Rng,
    report: FuzzReport,
    states: HashSet<String>,
    s: Target,
    o: Target,
    /// The operations since the targets were fresh: what a reproduction replays.
    history: Vec<Op>,
    cx: Context,
    /// The mappings the last reset dropped.
    dropped: Vec<LedgerEntry>,
}

impl<'c> Session<'c> {
    fn new(cfg: &'c FuzzConfig, t: &mut Targets<'_>) -> Result<Self, FuzzError> {
        let (s, o) = fresh(t)?;
        let report = FuzzReport { fresh_starts: 1, ..FuzzReport::default() };
        Ok(Session {
            cfg,
            rng: Rng::new(cfg.seed),
            report,
            states: HashSet::new(),
            s,
            o,
            history: Vec::new(),
            cx: Context::fresh(),
            dropped: Vec::new(),
        })
    }

    /// Plays `ops` and adds what they exercised and showed to the report.
    fn play(&mut self, ops: &[Op]) -> Result<Replay, FuzzError> {
        let r = play(ops, &mut self.s, &mut self.o, &self.cfg.known, None, self.history.len(), &mut self.cx)?;
        self.history.extend(ops.iter().cloned());
        for (id, n) in &r.exercised {
            *self.report.exercised.entry(id.clone()).or_insert(0) += n;
        }
        for (id, n) in &r.known {
            *self.report.known.entry(id.clone()).or_insert(0) += n;
        }
        Ok(r)
    }

    /// One generated operation and the looks after it; the first unknown
    /// divergence, if one showed.
    fn next(&mut self, t: &mut Targets<'_>) -> Result<Option<Divergence>, FuzzError> {
        let before = self.o.mgr.ledger().to_vec();
        let regions = self.o.mgr.spec().regions.clone();
        let op = generate(
            &mut self.rng,
            &View { regions: &regions, ledger: &before, dropped: &self.dropped, started: self.cx.started },
        );
        if matches!(op, Op::Reset { .. }) && !before.is_empty() {
            self.dropped = before.clone();
        }
        let mut r = self.play(std::slice::from_ref(&op))?;
        self.report.ops += 1;
        // After every change, a look at what it touched.
        for look in touched(&op, &before, self.o.mgr.ledger()) {
            if r.unknown.is_some() || !r.known.is_empty() || r.died {
                break;
            }
            r = self.play(std::slice::from_ref(&look))?;
            self.report.ops += 1;
        }
        let mut shape: Vec<(u8, u64, u64, bool)> =
            self.o.mgr.ledger().iter().map(|e| (e.shmid, e.shm_offset, e.len, e.rw)).collect();
        shape.sort_unstable();
        self.states.insert(format!("{}{shape:?}", self.cx.started));
        if !r.known.is_empty() && !r.died {
            let fix = resync(&mut self.rng);
            let again = self.play(&fix)?;
            if again.unknown.is_some() || again.died {
                return Err(FuzzError::OutOfStep);
            }
        }
        if r.died && r.unknown.is_none() {
            // A known death: start again from fresh frontends.
            (self.s, self.o) = fresh(t)?;
            self.report.fresh_starts += 1;
            self.history.clear();
            self.cx = Context::fresh();
            self.dropped.clear();
        }
        Ok(r.unknown.map(|(_, d)| d))
    }

    /// The listed entries exercised enough that never showed.
    fn not_seen(&self) -> Vec<NotSeen> {
        let shown = |id: &str| self.report.known.get(id).copied().unwrap_or(0) > 0;
        self.cfg
            .known
            .iter()
            .map(|e| NotSeen {
                id: e.id.clone(),
                exercised: self.report.exercised.get(&e.id).copied().unwrap_or(0),
                needed: exercises_needed(e),
            })
            .filter(|n| n.exercised >= n.needed && !shown(&n.id))
            .collect()
    }
}

/// The fuzz loop; see the module comment.
pub fn fuzz(cfg: &FuzzConfig, t: &mut Targets<'_>) -> Result<FuzzReport, FuzzError> {
    let start = Instant::now();
    let mut ses = Session::new(cfg, t)?;
    let mut last_progress = Instant::now();
    while start.elapsed() < cfg.time && ses.report.ops < cfg.max_ops && !crate::vm::interrupted() {
        if let Some(d) = ses.next(t)? {
            if cfg.progress {
                println!(
                    "fuzz: divergence at operation {} (the {}th since the last fresh start, which shrinking replays): {}; shrinking for at most {}s",
                    ses.report.ops,
                    ses.history.len(),
                    d.key(),
                    cfg.shrink_time.as_secs()
                );
            }
            let Session { mut report, states, s, o, history, .. } = ses;
            report.states = states.len();
            drop((s, o));
            report.found = Some(shrink(cfg, t, history, d)?);
            return Ok(report);
        }
        if cfg.progress && last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            let left = cfg.time.saturating_sub(start.elapsed());
            println!(
                "fuzz: {} operations, {} distinct states, {} known divergences, {} fresh starts, {}s left",
                ses.report.ops,
                ses.states.len(),
                ses.report.known.values().sum::<u32>(),
                ses.report.fresh_starts,
                left.as_secs()
            );
        }
    }
    ses.report.not_seen = ses.not_seen();
    ses.report.states = ses.states.len();
    Ok(ses.report)
}
