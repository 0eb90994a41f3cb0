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
use super::defects::KnownDefect;
use super::error::RunError;
use super::guest::GuestError;
use super::steps::{StepError, Target};
use crate::manager::ManagerError;
use divergence::{Context, divergences, known_id};
use ops::{View, file_index, generate, resync, touched, FILES};
use oracle::{expect, fresh, run_one};
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
struct Replay {
    /// The first divergence not known, with the index of its operation.
    unknown: Option<(usize, Divergence)>,
    /// Known divergences seen, by id.
    known: BTreeMap<String, u32>,
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
#[allow(clippy::too_many_arguments)]
fn play(ops: &[Op], s: &mut Target, o: &mut Target, known: &[KnownDefect], target: Option<&str>, from: usize, cx: &mut Context) -> Result<Replay, FuzzError> {
    let mut r = Replay { unknown: None, known: BTreeMap::new(), died: false };
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::GuestWrite { shmid, offset, len, .. } => {
                for e in o.mgr.ledger().iter().filter(|e| !e.rw && e.overlaps(*shmid, *offset, *len)) {
                    cx.ro_written[file_index(&e.file)] = true;
                }
            }
            Op::HostWrite { file, offset: 0, len, .. } if *len == FILES[*file].1 => cx.ro_written[*file] = false,
            Op::Reset { init } => (cx.after_reset, cx.started) = (true, *init),
            Op::Map { .. } => cx.after_reset = false,
            _ => {}
        }
        let (step, said) = expect(op, from + i, o)?;
        let failed = run_one(s, step, "fuzz")?;
        for d in divergences(op, &said, failed, *cx) {
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
    pub known: BTreeMap<String, u32>,
    pub fresh_starts: u32,
    /// The divergence found, its shrunk sequence's length, the original
    /// length, and the scenario written.
    pub found: Option<Found>,
}

#[derive(Debug)]
pub struct Found {
    pub divergence: Divergence,
    pub original_len: usize,
    pub ops: Vec<Op>,
    pub minimal: bool,
    pub scenario: PathBuf,
}

/// The fuzz loop; see the module comment.
pub fn fuzz(cfg: &FuzzConfig, t: &mut Targets<'_>) -> Result<FuzzReport, FuzzError> {
    let start = Instant::now();
    let mut rng = Rng::new(cfg.seed);
    let mut report = FuzzReport::default();
    let mut states = HashSet::new();
    let (mut s, mut o) = fresh(t)?;
    report.fresh_starts = 1;
    // The operations since the targets were fresh: what a reproduction replays.
    let mut history: Vec<Op> = Vec::new();
    let mut cx = Context::fresh();
    let mut dropped = Vec::new();
    let mut last_progress = Instant::now();
    while start.elapsed() < cfg.time && report.ops < cfg.max_ops && !crate::vm::interrupted() {
        let regions = o.mgr.spec().regions.clone();
        let before = o.mgr.ledger().to_vec();
        let op = generate(&mut rng, &View { regions: &regions, ledger: &before, dropped: &dropped, started: cx.started });
        if matches!(op, Op::Reset { .. }) && !before.is_empty() {
            dropped = before.clone();
        }
        history.push(op.clone());
        let mut r = play(std::slice::from_ref(&op), &mut s, &mut o, &cfg.known, None, history.len() - 1, &mut cx)?;
        report.ops += 1;
        // After every change, a look at what it touched.
        for look in touched(&op, &before, o.mgr.ledger()) {
            if r.unknown.is_some() || !r.known.is_empty() || r.died {
                break;
            }
            history.push(look.clone());
            r = play(std::slice::from_ref(&look), &mut s, &mut o, &cfg.known, None, history.len() - 1, &mut cx)?;
            report.ops += 1;
        }
        let mut shape: Vec<(u8, u64, u64, bool)> = o.mgr.ledger().iter().map(|e| (e.shmid, e.shm_offset, e.len, e.rw)).collect();
        shape.sort_unstable();
        states.insert(format!("{}{shape:?}", cx.started));
        if !r.known.is_empty() && !r.died {
            let fix = resync(&mut rng);
            let again = play(&fix, &mut s, &mut o, &cfg.known, None, history.len(), &mut cx)?;
            history.extend(fix);
            if again.unknown.is_some() || again.died {
                return Err(FuzzError::OutOfStep);
            }
        }
        for (id, n) in r.known {
            *report.known.entry(id).or_insert(0) += n;
        }
        if r.died && r.unknown.is_none() {
            // A known death: start again from fresh frontends.
            (s, o) = fresh(t)?;
            report.fresh_starts += 1;
            history.clear();
            cx = Context::fresh();
            dropped.clear();
        }
        if let Some((_, d)) = r.unknown {
            if cfg.progress {
                println!("fuzz: divergence at operation {}: {}; shrinking for at most {}s", history.len(), d.key(), cfg.shrink_time.as_secs());
            }
            report.states = states.len();
            drop((s, o));
            report.found = Some(shrink(cfg, t, history, d)?);
            return Ok(report);
        }
        if cfg.progress && last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            let left = cfg.time.saturating_sub(start.elapsed());
            println!("fuzz: {} operations, {} distinct states, {} known divergences, {} fresh starts, {}s left", report.ops, states.len(), report.known.values().sum::<u32>(), report.fresh_starts, left.as_secs());
        }
    }
    report.states = states.len();
    Ok(report)
}

