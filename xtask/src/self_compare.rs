//! `bench --self-compare N`: how `--compare` behaves, measured. The same
//! QEMU is compared with itself N times on an idle machine, then N times
//! with a CPU hog on every core that starts partway through each comparison
//! (the false-alarm rate). With `--hold-reply-us US`, B is the same QEMU
//! with each SHMEM reply held US microseconds at the backend's end of its
//! socket (`SHMEM_APPLIANCE_EMULATE=hold-reply-us=US@B`, a QEMU whose race
//! window the guest sees narrowed), compared N times idle (the power).
//! Prints each comparison's calls and a tally. Orchestration only: the
//! comparison is `compare::compare` and the replicated boots' calls.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shmem_judge::compare::Comparison;

use crate::exit::Failure;
use crate::opts::{BenchArgs, VmTestArgs};

/// When the hog starts, counted from the start of the comparison.
const HOG_AFTER: Duration = Duration::from_secs(12);

/// A busy loop on every core, killed and reaped when dropped.
struct Hog(Vec<Child>);

impl Hog {
    fn start() -> Result<Self, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spawn = || {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting the CPU hog: {e}"))
        };
        (0..cores).map(|_| spawn()).collect::<Result<Vec<_>, _>>().map(Hog)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the comparisons of one condition (idle, hog, held) showed.
#[derive(Default)]
struct Tally {
    runs: usize,
    /// Comparisons that called any change (fixed or REGRESSED).
    called: usize,
    /// Per `scenario/check` and outcome word ("fixed", "REGRESSED", "no change beyond 2x", "inconclusive"): how many comparisons.
    outcomes: BTreeMap<String, BTreeMap<String, usize>>,
    secs: Vec<f64>,
}

impl Tally {
    fn add(&mut self, c: &Comparison, secs: f64) {
        self.runs += 1;
        self.secs.push(secs);
        let calls: Vec<&String> =
            c.lines.iter().filter(|l| l.starts_with("fixed:") || l.starts_with("REGRESSED:")).collect();
        self.called += usize::from(!calls.is_empty());
        for l in &c.lines {
            let Some((word, rest)) = l.split_once(": ") else { continue };
            if ["fixed", "REGRESSED", "no change beyond 2x", "inconclusive"].contains(&word) {
                let at = rest.split(": ").next().unwrap_or("").to_string();
                *self.outcomes.entry(at).or_default().entry(word.to_string()).or_default() += 1;
            }
        }
        for l in c.lines.iter().filter(|l| l.starts_with("replicated") || l.contains("B/A")) {
            println!("bench:   {l}");
        }
        println!(
            "bench:   {secs:.0} s; called: {}",
            if calls.is_empty() {
                "nothing".to_string()
            } else {
                calls.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("; ")
            }
        );
    }

    fn json(&self) -> serde_json::Value {
        let mut secs = self.secs.clone();
        secs.sort_by(f64::total_cmp);
        serde_json::json!({
            "comparisons": self.runs,
            "called_a_change": self.called,
            "outcomes": self.outcomes,
            "seconds_min_median_max": [secs.first(), secs.get(secs.len() / 2), secs.last()],
        })
    }
}

/// B for a power run: a wrapper that execs A's QEMU, at a path of its own,
/// so the emulation applies to B alone.
fn held_b(qemu: &std::path::Path, us: u64, dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let link = dir.join("qemu-held");
    crate::shell::exec_wrapper(&link, qemu).map_err(|e| format!("B's wrapper: {e}"))?;
    // SAFETY: set before any thread of this command is started; the workers inherit it.
    unsafe { std::env::set_var(shmem_host::vm::boot::EMULATE_VAR, format!("hold-reply-us={us}@{}", link.display())) };
    Ok(link)
}

/// N comparisons of the QEMU of `a` with itself (idle, then with the
/// hog), or with itself with held replies (`--hold-reply-us`, idle).
pub fn run(n: usize, a: &BenchArgs) -> Result<bool, Failure> {
    let hold = a.hold_reply_us;
    let mut o = VmTestArgs::plain(a.guest.clone(), a.suite.clone());
    let (cfg, _) = crate::suite_setup::suite_config(&o)?;
    let links = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    o.guest.qemu = Some(cfg.qemu.path.clone());
    o.compare = Some(match hold {
        Some(us) => held_b(&cfg.qemu.path, us, links.path())?,
        None => cfg.qemu.path.clone(),
    });
    let conditions: &[&str] = if hold.is_some() { &["held"] } else { &["idle", "hog"] };
    let mut out = serde_json::Map::new();
    for &cond in conditions {
        let mut t = Tally::default();
        for k in 1..=n {
            println!(
                "bench: self-compare {k} of {n}, {cond}{}",
                if cond == "hog" { " (a busy loop on every core from 12 s on)" } else { "" }
            );
            let start = Instant::now();
            let hog_thread = (cond == "hog").then(|| {
                std::thread::spawn(|| {
                    std::thread::sleep(HOG_AFTER);
                    Hog::start()
                })
            });
            let res = crate::vm_test::prepare_and_run(&o);
            drop(hog_thread.map(|h| h.join()));
            let outcome = res?;
            let Some((_, c)) = &outcome.baseline else {
                return Err(Failure::Run("self-compare ran no baseline".into()));
            };
            t.add(c, start.elapsed().as_secs_f64());
        }
        out.insert(cond.into(), t.json());
    }
    println!("{}", serde_json::to_string_pretty(&serde_json::Value::Object(out)).unwrap_or_default());
    Ok(true)
}
