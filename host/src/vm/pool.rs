//! The own boots of a run as a queue of worker processes (each its own
//! `xtask own-boot-worker`, its own fd table, killed with everything it
//! started past its limit), the most expensive first, run by any number of
//! threads within a budget of VMs at a time. Runs; judges nothing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::interrupted;
use super::own_run::OwnBootRun;
use super::qemu::{self, Accel};
use super::scenario::{self, Scenario};
use shmem_judge::outcome::ErrorKind;

/// How long one own-boot worker process may take before it is killed.
pub(super) const WORKER_LIMIT: Duration = Duration::from_secs(900);

/// Runs one own boot in a worker process (`cfg.worker` + scenario, accel,
/// log dir), which has its own fd table, so its leak self-check is its own.
pub(super) fn run_worker(worker: &[String], scn: &Scenario, accel: Accel, logs: &Path, limit: Duration) -> OwnBootRun {
    let failed = OwnBootRun::failed;
    let Some((program, args)) = worker.split_first() else {
        return failed(ErrorKind::Appliance, "no own-boot worker command".into());
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .arg("--scenario")
        .arg(&scn.path)
        .args(["--accel", accel.name()])
        .arg("--logs")
        .arg(logs)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    crate::spawn::stdio_only(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(ErrorKind::Io, format!("starting the own-boot worker {program}: {e}")),
    };
    let mut out = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    // Detached: a process that escaped with the pipe's write end can keep
    // the read open, but not this run.
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(o) = out.as_mut() {
            let _ = std::io::Read::read_to_string(o, &mut text);
        }
        let _ = tx.send(text);
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                break Err((
                    ErrorKind::Timeout,
                    format!(
                        "the own-boot worker for {} did not end within {limit:?}; it and its QEMU were killed",
                        scn.name
                    ),
                ));
            }
            Err(e) => break Err((ErrorKind::Io, format!("waiting for the own-boot worker: {e}"))),
        }
    };
    if status.is_err() {
        // QEMU runs in a process group of its own: kill the worker's whole
        // tree, not just the worker, so nothing of the run outlives it.
        kill_tree(child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    match status {
        Err((kind, e)) => failed(kind, e),
        Ok(s) => serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            failed(
                ErrorKind::Appliance,
                format!(
                    "the own-boot worker for {} ended ({}) without a readable result: {e}",
                    scn.name,
                    qemu::describe_status(s)
                ),
            )
        }),
    }
}

/// The parent of every process, from `/proc/N/stat`.
fn parents() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // `PID (COMM) STATE PPID ...`; COMM may hold spaces and parentheses.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        out.extend(ppid.map(|pp| (pid, pp)));
    }
    out
}

/// SIGKILLs every descendant of `pid` (whatever its process group), deepest last.
fn kill_tree(pid: u32) {
    let parents = parents();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    for &p in &tree[1..] {
        // SAFETY: kill(2) on a pid we just found below our own child.
        unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
    }
}

/// A rough cost of a scenario in milliseconds, to start the longest own
/// boots first (a boot, plus what its steps or its media session are known
/// to take: both halves of a churn, a hang's answer timeout on the model
/// among them; held acks on both; a capture about 1.5 s more than a boot:
/// measured 1.3-2.5 s beside three other VMs, against 0.8-1.6 s for a boot
/// with a few steps), so the short ones fill the end.
fn expected_cost(scn: &Scenario) -> u64 {
    use scenario::Step;
    let media = scn.media.map_or(0, |m| match (m.churn, m.ack_delay_ms) {
        (Some(n), _) => n as u64 * 8 + 2000,
        (_, Some(ms)) => ms * 2 * u64::from(m.buffers) * 2 + 1500,
        // A capture: two backend processes and the model's session beside the boot.
        _ => 1500,
    });
    2000 + media
        + scn
            .steps
            .iter()
            .map(|s| match s {
                Step::ProbeReplyBeforeCommit { iterations, .. } => u64::from(*iterations) * 4,
                Step::MapMany { count, .. } => u64::from(*count) * 5,
                Step::ExpectNoAnswer { .. } => 1000,
                Step::ExpectMemTable { .. } | Step::ExpectReleased { .. } => 500,
                _ => 10,
            })
            .sum::<u64>()
}

/// VMs at a time: a thread takes its share before it boots and gives it
/// back after. A reply-before-commit probe (`Scenario::measures_a_race`)
/// takes the whole budget, so it runs with no other VM beside it (in
/// practice last, once the other boots are done): its stale rate rose
/// 10-20x with what ran beside it (seen: 172 of 1000 in a suite where the
/// probe alone saw 9-16), and a rate that depends on the neighbours
/// measures the pool, not QEMU.
struct Budget {
    total: usize,
    free: Mutex<usize>,
    freed: Condvar,
}

impl Budget {
    fn new(total: usize) -> Self {
        Budget { total, free: Mutex::new(total), freed: Condvar::new() }
    }

    /// The share a scenario's boot takes: the whole budget for one that
    /// measures a race, one VM for any other.
    fn share_for(&self, scn: &Scenario) -> Share<'_> {
        self.share(if scn.measures_a_race() { self.total } else { 1 })
    }

    /// Waits for `n` VMs of the budget; they go back when the share drops.
    /// No timeout of its own: every share is held by a boot whose worker is
    /// killed past its limit.
    fn share(&self, n: usize) -> Share<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free < n {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= n;
        Share { budget: self, n }
    }

    fn give(&self, n: usize) {
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += n;
        self.freed.notify_all();
    }
}

/// A share of the pool's budget, given back on drop.
pub(super) struct Share<'p> {
    budget: &'p Budget,
    n: usize,
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.budget.give(self.n);
    }
}

/// What a pool hands each run to as it ends: the scenario's index in
/// `own`, and its run.
pub(super) type Done<'d> = &'d (dyn Fn(usize, OwnBootRun) + Sync);

/// The own boots of a run, as a queue of worker-process runs, the most
/// expensive first, that any number of threads take from, within a budget
/// of VMs at a time (the shared boot's among them).
pub(super) struct Pool<'a> {
    worker: &'a [String],
    own: &'a [&'a Scenario],
    logs: &'a Path,
    order: Vec<usize>,
    next: AtomicUsize,
    /// Once set (the shared boot failed), no further own boot starts.
    pub cancel: AtomicBool,
    /// How long one worker may take before it (and its QEMU) is killed.
    pub limit: Duration,
    budget: Budget,
}

impl<'a> Pool<'a> {
    /// A pool of `own` that runs at most `vms` VMs at a time (at least 2; a
    /// race's probe alone: [`Budget`]).
    pub fn new(worker: &'a [String], own: &'a [&'a Scenario], logs: &'a Path, vms: usize) -> Self {
        let mut order: Vec<usize> = (0..own.len()).collect();
        // The most expensive first; a race's probe, which runs alone, last.
        order.sort_by_key(|&i| (own[i].measures_a_race(), std::cmp::Reverse(expected_cost(own[i]))));
        let budget = Budget::new(vms.max(2));
        Pool {
            worker,
            own,
            logs,
            order,
            next: AtomicUsize::new(0),
            cancel: AtomicBool::new(false),
            limit: WORKER_LIMIT,
            budget,
        }
    }

    /// One VM of the budget, for a boot outside the pool (the shared boot).
    pub fn share(&self) -> Share<'_> {
        self.budget.share(1)
    }

    /// Runs own boots, one at a time, until none is left to start; hands
    /// each run to `done` with its scenario's index in `own` as it ends.
    pub fn work(&self, accel: Accel, done: Done<'_>) {
        while let Some(&i) = self.order.get(self.next.fetch_add(1, Ordering::SeqCst)) {
            let run = if interrupted() {
                OwnBootRun::failed(ErrorKind::Interrupted, "interrupted".into())
            } else if self.cancel.load(Ordering::SeqCst) {
                OwnBootRun::failed(ErrorKind::Appliance, "not run: the shared boot failed".into())
            } else {
                let _share = self.budget.share_for(self.own[i]);
                run_worker(self.worker, self.own[i], accel, self.logs, self.limit)
            };
            done(i, run);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pool against a stand-in worker (a shell line that names the
    //! scenario it was given): every scenario runs once, its result lands in
    //! its own slot, and a cancelled pool starts nothing.

    use super::*;

    /// Five scenarios, each more expensive than the one before (the pool
    /// starts them in reverse).
    fn scenarios(dir: &Path) -> Vec<Scenario> {
        (0..5)
            .map(|n| {
                let steps: String =
                    (0..=n).map(|k| format!("[[step]]\ndo = \"expect-alive\"\ncheck = \"alive{k}\"\n")).collect();
                Scenario::parse(
                    &dir.join(format!("s{n}.toml")),
                    &format!("description = \"x\"\nown_boot = true\n{steps}"),
                )
                .expect("scenario")
            })
            .collect()
    }

    /// Prints an OwnBootRun whose qemu error is the `--scenario` it got.
    fn stand_in() -> Vec<String> {
        let script = r#"printf '{"qemu":{"Err":{"kind":"bad-input","message":"%s"}},"qemu_secs":0,"model":{"Err":{"kind":"bad-input","message":""}},"model_secs":0,"qemu_log":"","boot_secs":null}' "$2""#;
        ["sh", "-c", script, "worker"].iter().map(|s| s.to_string()).collect()
    }

    /// Runs `pool` on this thread and `helpers` more; the runs in the scenarios' order.
    fn runs(pool: &Pool<'_>, helpers: usize) -> Vec<OwnBootRun> {
        let slots: Vec<Mutex<Option<OwnBootRun>>> = pool.own.iter().map(|_| Mutex::new(None)).collect();
        let done = |i: usize, run: OwnBootRun| *slots[i].lock().expect("slot") = Some(run);
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..helpers).map(|_| s.spawn(|| pool.work(Accel::Tcg, &done))).collect();
            pool.work(Accel::Tcg, &done);
            threads.into_iter().for_each(|h| h.join().expect("pool thread"));
        });
        slots.into_iter().map(|m| m.into_inner().expect("slot").expect("every scenario ran")).collect()
    }

    /// Calls `f` with a pool of the five scenarios and the stand-in worker.
    fn with_pool(f: impl FnOnce(&Pool<'_>, &[Scenario])) {
        let dir = tempfile::tempdir().expect("tempdir");
        let all = scenarios(dir.path());
        let own: Vec<&Scenario> = all.iter().collect();
        let worker = stand_in();
        f(&Pool::new(&worker, &own, dir.path(), 3), &all);
    }

    #[test]
    fn every_scenario_runs_once_and_its_result_lands_in_its_slot() {
        with_pool(|pool, all| {
            let got: Vec<String> =
                runs(pool, 2).into_iter().map(|r| r.qemu.expect_err("stand-in result").message).collect();
            let want: Vec<String> = all.iter().map(|s| s.path.display().to_string()).collect();
            assert_eq!(got, want);
        });
    }

    #[test]
    fn a_cancelled_pool_starts_no_worker() {
        with_pool(|pool, _| {
            pool.cancel.store(true, Ordering::SeqCst);
            for r in runs(pool, 0) {
                assert_eq!(r.qemu.expect_err("not run").message, "not run: the shared boot failed");
            }
        });
    }

    #[test]
    fn a_worker_past_its_limit_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let all = scenarios(dir.path());
        let own: Vec<&Scenario> = all[..1].iter().collect();
        // Like QEMU, the grandchild runs in a session (and process group) of its own.
        let marker = format!("{}.{}", 300 + std::process::id() % 100, std::process::id());
        let script = format!("setsid sleep {marker} & sleep {marker}");
        let worker: Vec<String> = ["sh", "-c", &script, "worker"].iter().map(|s| s.to_string()).collect();
        let mut pool = Pool::new(&worker, &own, dir.path(), 3);
        pool.limit = Duration::from_secs(1);
        let run = runs(&pool, 0).pop().expect("one run");
        let err = run.qemu.expect_err("killed");
        assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}");
        std::thread::sleep(Duration::from_millis(200));
        let left: Vec<u32> = parents()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .collect();
        assert!(left.is_empty(), "left running: {left:?}");
    }
}
