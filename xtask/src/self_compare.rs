//! `bench --self-compare N`: the false-alarm rate of `--compare`, measured.
//! The same QEMU is compared with itself N times on an idle machine, then N
//! times with a CPU hog (a busy shell loop) that starts partway through each
//! comparison, so A and B meet different load. Prints how many comparisons
//! called any change, the share per check, and the spread of the probe's
//! log rates between the two runs of each comparison. Orchestration only:
//! the comparison is `verdict::compare`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shmem_judge::significance::log_rate;
use shmem_judge::compare::Comparison;
use shmem_judge::listing::probe_counts;
use shmem_host::vm::SuiteReport;
use shmem_judge::scenario::ScenarioReport;

/// When the hog starts, counted from the start of the comparison.
const HOG_AFTER: Duration = Duration::from_secs(12);

/// A busy loop on one core, killed and reaped when dropped.
struct Hog(Child);

impl Hog {
    fn start() -> Result<Self, String> {
        Command::new("sh").args(["-c", "while :; do :; done"]).stdin(Stdio::null()).spawn().map(Hog).map_err(|e| format!("starting the CPU hog: {e}"))
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the comparisons of one condition (idle, hog) showed.
#[derive(Default)]
struct Tally {
    runs: usize,
    called: usize,
    /// Per `scenario/check`: how many comparisons called it fixed or REGRESSED.
    per_check: BTreeMap<String, usize>,
    /// Per probe check: ln(rate B / rate A) of each comparison, and the highest count seen.
    log_ratios: BTreeMap<String, Vec<f64>>,
    highest: BTreeMap<String, (u64, u64)>,
    lowest: BTreeMap<String, (u64, u64)>,
}

impl Tally {
    fn add(&mut self, a: &SuiteReport, b: &SuiteReport, c: &Comparison) {
        self.runs += 1;
        let calls: Vec<&String> = c.lines.iter().filter(|l| l.starts_with("fixed:") || l.starts_with("REGRESSED:")).collect();
        self.called += usize::from(!calls.is_empty());
        println!("bench:   called: {}", if calls.is_empty() { "nothing".to_string() } else { calls.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("; ") });
        for l in calls {
            let at = l.split_once(": ").map_or("", |(_, r)| r).split(": ").next().unwrap_or("").split(' ').next().unwrap_or("");
            *self.per_check.entry(at.to_string()).or_default() += 1;
        }
        for sa in &a.scenarios {
            let Some(sb) = b.scenarios.iter().find(|s| s.name == sa.name) else { continue };
            self.probe_pairs(sa, sb);
        }
    }

    fn probe_pairs(&mut self, sa: &ScenarioReport, sb: &ScenarioReport) {
        for ca in &sa.qemu_checks {
            let (Some(x), Some(y)) = (probe_counts(&ca.facts), sb.qemu_checks.iter().find(|c| c.check == ca.check).and_then(|c| probe_counts(&c.facts))) else { continue };
            let at = format!("{}/{}", sa.name, ca.check);
            self.log_ratios.entry(at.clone()).or_default().push(log_rate(&y).0 - log_rate(&x).0);
            println!("bench:   {at}: A {}/{}, B {}/{}", x.stale, x.n, y.stale, y.n);
            for run in [&x, &y] {
                let h = self.highest.entry(at.clone()).or_insert((0, run.n));
                if run.stale * h.1 > h.0 * run.n {
                    *h = (run.stale, run.n);
                }
                let l = self.lowest.entry(at.clone()).or_insert((run.stale, run.n));
                if run.stale * l.1 < l.0 * run.n {
                    *l = (run.stale, run.n);
                }
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        let spread: BTreeMap<&String, f64> = self.log_ratios.iter().map(|(k, v)| (k, (v.iter().map(|d| d * d).sum::<f64>() / v.len().max(1) as f64 / 2.0).sqrt())).collect();
        serde_json::json!({
            "comparisons": self.runs,
            "called_a_change": self.called,
            "false_alarm_rate": self.called as f64 / self.runs.max(1) as f64,
            "called_per_check": self.per_check,
            "log_rate_spread_between_runs": spread,
            "highest_count": self.highest.iter().map(|(k, (s, n))| (k.clone(), format!("{s}/{n}"))).collect::<BTreeMap<_, _>>(),
            "lowest_count": self.lowest.iter().map(|(k, (s, n))| (k.clone(), format!("{s}/{n}"))).collect::<BTreeMap<_, _>>(),
        })
    }
}

/// N comparisons of the QEMU of `rest` with itself, idle then with the hog.
pub fn run(n: usize, rest: &[String]) -> Result<bool, String> {
    let mut o = crate::opts::parse_opts(rest)?;
    if o.compare.is_some() || o.bless {
        return Err("bench --self-compare compares one QEMU with itself: no --compare or --bless".into());
    }
    let (cfg, _) = crate::suite_setup::suite_config(&o)?;
    o.qemu = Some(cfg.qemu.path.clone());
    o.compare = Some(cfg.qemu.path.clone());
    let mut out = serde_json::Map::new();
    for hog in [false, true] {
        let mut t = Tally::default();
        for k in 1..=n {
            println!("bench: self-compare {k} of {n}{}", if hog { ", CPU hog from 12 s on" } else { ", idle" });
            let hog_thread = hog.then(|| std::thread::spawn(|| {
                std::thread::sleep(HOG_AFTER);
                Hog::start()
            }));
            let res = crate::vm_test::prepare_and_run(&o);
            let hog = hog_thread.map(|h| h.join());
            drop(hog);
            let outcome = res?;
            let Some((a, c)) = &outcome.baseline else { return Err("self-compare ran no baseline".into()) };
            t.add(a, &outcome.run, c);
        }
        out.insert(if hog { "hog".into() } else { "idle".into() }, t.json());
    }
    println!("{}", serde_json::to_string_pretty(&serde_json::Value::Object(out)).unwrap_or_default());
    Ok(true)
}
