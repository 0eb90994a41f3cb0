//! `--compare`'s replicated probe boots: the race-measuring scenarios booted
//! for A and for B in turn (A B B A A B B A ..., so a load that rises or
//! falls during the comparison meets both alike), each boot alone, each
//! giving one stale count per probe direction, until the judge's sequential
//! rule (`shmem_judge::significance::call_rates`) has called every
//! direction, both sides have `MAX_BOOTS`, or the time budget is spent.
//! Runs and records; the calls are the judge's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use shmem_judge::listing::probe_counts;
use shmem_judge::significance::{MAX_BOOTS, RateCall, call_rates};

use super::interrupted;
use super::pool::{WORKER_LIMIT, run_worker};
use super::qemu::Accel;
use super::scenario::Scenario;

/// The side of each boot, in turn: A B B A, again and again.
const ORDER: [usize; 4] = [0, 1, 1, 0];

/// What the replicated boots recorded: per `scenario/check`, each side's
/// counts (`stale`, `n`) boot by boot; the boots that failed, in words.
#[derive(Debug, Default)]
pub struct Replicates {
    pub counts: BTreeMap<String, [Vec<(u64, u64)>; 2]>,
    pub boots: [usize; 2],
    pub failed: Vec<String>,
    pub took: Duration,
}

impl Replicates {
    /// Each direction's call from the counts so far.
    pub fn calls(&self) -> Vec<(String, RateCall)> {
        let directions = self.counts.len();
        self.counts.iter().map(|(at, [a, b])| (at.clone(), call_rates(a, b, directions))).collect()
    }

    /// Whether more boots could still change a call.
    fn open(&self) -> bool {
        self.counts.is_empty() || self.calls().iter().any(|(_, c)| c.open())
    }

    /// One boot's counts of `side`, or why it gave none.
    fn add(&mut self, side: usize, scn: &Scenario, run: super::OwnBootRun) {
        self.boots[side] += 1;
        let name = ["A", "B"][side];
        match run.qemu {
            Ok(checks) => {
                for c in checks {
                    if let Some(k) = probe_counts(&c.facts) {
                        self.counts.entry(format!("{}/{}", scn.name, c.check)).or_default()[side].push((k.stale, k.n));
                    }
                }
            }
            Err(f) => self.failed.push(format!("{} boot {} of {name}: {}", scn.name, self.boots[side], f.message)),
        }
    }
}

/// Boots `probes` for A (`workers[0]`) and B (`workers[1]`) in turn, one VM
/// at a time, within `budget` (a boot is not started when the last one's
/// time would overrun it); `progress` hears of each boot.
pub fn replicate(workers: [&[String]; 2], probes: &[&Scenario], accel: Accel, logs: &Path, budget: Duration, mut progress: impl FnMut(&str)) -> Replicates {
    let start = Instant::now();
    let mut r = Replicates::default();
    let mut last = Duration::ZERO;
    for (i, &side) in ORDER.iter().cycle().enumerate() {
        let spent = start.elapsed();
        let full = r.boots[side] >= MAX_BOOTS * probes.len();
        if probes.is_empty() || interrupted() || spent + last > budget || (r.boots[0] > 0 && !r.open()) || full {
            break;
        }
        let boot_start = Instant::now();
        for scn in probes {
            let dir = logs.join(format!("replicate-{i}"));
            let run = run_worker(workers[side], scn, accel, &dir, WORKER_LIMIT.min(budget));
            r.add(side, scn, run);
        }
        last = boot_start.elapsed();
        progress(&format!("replicated boot {} ({}): {:.1} s, {:.0} s of {:.0} s spent", i + 1, ["A", "B"][side], last.as_secs_f64(), start.elapsed().as_secs_f64(), budget.as_secs_f64()));
    }
    r.took = start.elapsed();
    r
}
