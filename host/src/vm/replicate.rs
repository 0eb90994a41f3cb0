//! `--compare`'s replicated probe boots: the race-measuring scenarios booted
//! for A and B in turn (A B B A A B B A ..., so a load that rises or
//! falls during the comparison meets both alike), each boot alone, each
//! giving one stale count per compared direction. The judge's rule
//! (`shmem_judge::significance::call_rates`) looks twice: halfway (half the
//! budget or half of `MAX_BOOTS`), when a clear change stops the boots,
//! and when the budget or `MAX_BOOTS` ends them. Runs and records; the
//! calls are the judge's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use shmem_judge::listing::probe_counts;
use shmem_judge::significance::{Look, MAX_BOOTS, RateCall, call_rates};

use super::interrupted;
use super::pool::{WORKER_LIMIT, run_worker};
use super::qemu::Accel;
use super::scenario::Scenario;

/// The side of each boot, in turn: A B B A, again and again.
const ORDER: [usize; 4] = [0, 1, 1, 0];

/// What the replicated boots recorded: per compared `scenario/check`, each
/// side's counts (`stale`, `n`) boot by boot; the calls of the looks; the
/// boots that failed, in words.
#[derive(Debug, Default)]
pub struct Replicates {
    pub counts: BTreeMap<String, [Vec<(u64, u64)>; 2]>,
    calls: BTreeMap<String, RateCall>,
    family: BTreeSet<String>,
    pub boots: [usize; 2],
    pub failed: Vec<String>,
    pub took: Duration,
}

impl Replicates {
    /// Each direction's call, as the looks left it (a direction no boot
    /// counted, or none looked at yet: open with no ratio).
    pub fn calls(&self) -> Vec<(String, RateCall)> {
        self.family.iter().map(|at| (at.clone(), self.calls.get(at).cloned().unwrap_or(RateCall::Open(None)))).collect()
    }

    /// Judges every direction still open at `look`; whether any stays open.
    fn look(&mut self, look: Look) -> bool {
        let directions = self.family.len();
        for (at, [a, b]) in &self.counts {
            if self.calls.get(at).is_none_or(RateCall::open) {
                self.calls.insert(at.clone(), call_rates(a, b, directions, look));
            }
        }
        self.calls().iter().any(|(_, c)| c.open())
    }

    /// One boot's counts of `side`, or why it gave none.
    fn add(&mut self, side: usize, scn: &Scenario, run: super::OwnBootRun) {
        let name = ["A", "B"][side];
        match run.qemu {
            Ok(checks) => {
                for c in checks {
                    let at = format!("{}/{}", scn.name, c.check);
                    if let Some(k) = probe_counts(&c.facts).filter(|_| self.family.contains(&at)) {
                        self.counts.entry(at).or_default()[side].push((k.stale, k.n));
                    }
                }
            }
            Err(f) => self.failed.push(format!("{} boot {} of {name}: {}", scn.name, self.boots[side], f.message)),
        }
    }
}

/// Boots the scenarios of `probes` that hold a direction of `family`
/// (`scenario/check`, compare::rate_family) for A (`workers[0]`) and B
/// (`workers[1]`) in turn, one VM at a time, within `budget` (a boot is
/// not started when the last one's time would overrun it); `progress`
/// hears of each boot.
pub fn replicate(
    workers: [&[String]; 2],
    probes: &[&Scenario],
    family: BTreeSet<String>,
    accel: Accel,
    logs: &Path,
    budget: Duration,
    mut progress: impl FnMut(&str),
) -> Replicates {
    let probes: Vec<&Scenario> = probes
        .iter()
        .copied()
        .filter(|s| family.iter().any(|at| at.strip_prefix(s.name.as_str()).is_some_and(|c| c.starts_with('/'))))
        .collect();
    let start = Instant::now();
    let mut r = Replicates { family, ..Replicates::default() };
    let (mut last, mut halfway) = (Duration::ZERO, false);
    for (i, &side) in ORDER.iter().cycle().enumerate() {
        if probes.is_empty() || interrupted() || start.elapsed() + last > budget || r.boots[side] >= MAX_BOOTS {
            r.look(Look::Final);
            break;
        }
        let boot_start = Instant::now();
        r.boots[side] += 1;
        for scn in &probes {
            let run =
                run_worker(workers[side], scn, accel, &logs.join(format!("replicate-{i}")), WORKER_LIMIT.min(budget));
            r.add(side, scn, run);
        }
        last = boot_start.elapsed();
        progress(&format!(
            "replicated boot {} ({}): {:.1} s, {:.0} s of {:.0} s spent",
            i + 1,
            ["A", "B"][side],
            last.as_secs_f64(),
            start.elapsed().as_secs_f64(),
            budget.as_secs_f64()
        ));
        if !halfway && (start.elapsed() * 2 >= budget || r.boots.iter().all(|&n| n >= MAX_BOOTS / 2)) {
            halfway = true;
            if !r.look(Look::Interim) {
                progress("replicated boots: every direction called at the halfway look");
                break;
            }
        }
    }
    r.took = start.elapsed();
    r
}
