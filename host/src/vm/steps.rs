//! Executes scenario steps on one target (QEMU or the model) and records
//! each check's outcome with its evidence. Checks never stop a scenario; a
//! step that cannot be carried out does. Verdicts are made elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::guest::{COMMAND_TIMEOUT, Guest, Observed, RingMode};
use super::qemu::DEATH_GRACE;
use super::scenario::{Fault, Party, Scenario, Step};
use crate::server::BackendServer;
use crate::backend::{FileId, MemTable, Recorder};
use crate::channel::{ShmemMsg, ShmemOp};
use crate::files::{fnv1a64, pattern_byte};
use crate::manager::{Attach, Expect, MAP_RW, MappingManager, Outcome, Want};

/// How long a memory-table update may take to arrive after an ack.
pub const MEM_TABLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a frontend may take to release a file after a reset or unmap.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `expect-no-answer` waits.
const NO_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// The outcome of one check: the evidence for people, and the facts a
/// known-defect signature is matched against (`exit`, `step`, `ack`,
/// `said`, `seen`, counts...).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub evidence: String,
    pub facts: BTreeMap<String, String>,
}

/// What a frontend said, as a fact: its distinct lines, at most 5, in order.
pub fn said_fact(said: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for l in said.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !lines.contains(&l) && lines.len() < 5 {
            lines.push(l);
        }
    }
    lines.join("\n")
}

impl CheckResult {
    pub fn new(check: impl Into<String>, passed: bool, evidence: impl Into<String>) -> Self {
        CheckResult { check: check.into(), passed, evidence: evidence.into(), facts: BTreeMap::new() }
    }

    /// Adds a fact.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.facts.insert(key.to_string(), value.to_string());
        self
    }

    /// `frontend-survives`, failed: how the frontend died and at which step.
    pub fn died(step: &str, death: &super::guest::Death) -> Self {
        CheckResult::new("frontend-survives", false, format!("died at step {step:?}: {death}")).with("exit", &death.exit).with("step", step).with("said", said_fact(&death.said))
    }
}

/// One frontend with what the runner needs to drive and observe it.
pub struct Target {
    pub mgr: MappingManager,
    pub guest: Box<dyn Guest>,
    pub recorder: Arc<Recorder>,
    /// The backend; `None` once a `kill-backend` fault stopped it.
    pub server: Option<BackendServer>,
    /// A fault was injected that kills the frontend: its death is no failure.
    expected_death: bool,
    /// Ack latencies of accepted maps and unmaps, for the benchmarks.
    pub map_latencies: Vec<Duration>,
    pub unmap_latencies: Vec<Duration>,
    /// Ack-to-memory-table lags measured by `expect-mem-table`.
    pub table_lags: Vec<Duration>,
    last_ack: Option<Instant>,
    /// The backend sends requests from the thread that serves the frontend.
    pub single_threaded: bool,
}

/// How long a single-threaded backend serves the frontend after an accepted
/// request, waiting for the memory table that commits it.
const SETTLE: Duration = Duration::from_secs(1);

impl Target {
    pub fn new(mgr: MappingManager, guest: Box<dyn Guest>, server: BackendServer) -> Self {
        let recorder = server.recorder().clone();
        Target { mgr, guest, recorder, server: Some(server), expected_death: false, map_latencies: Vec::new(), unmap_latencies: Vec::new(), table_lags: Vec::new(), last_ack: None, single_threaded: false }
    }

    /// Whether a fault was injected that kills the frontend on purpose.
    pub fn expected_death(&self) -> bool {
        self.expected_death
    }

    /// Records an answered request. A single-threaded backend then serves
    /// the frontend until the memory table that commits an accepted request
    /// has arrived (at most [`SETTLE`]), as a careful one does before its
    /// next request: only a frontend that waits for that table before it
    /// replies deadlocks it.
    fn note(&mut self, o: &Outcome) {
        if self.single_threaded && o.accepted() {
            self.recorder.wait_for(SETTLE, |r| r.mem_tables.last().is_some_and(|m| m.at >= o.reply.at));
        }
        self.last_ack = Some(o.reply.at);
        if o.accepted() {
            match o.op {
                ShmemOp::Map => self.map_latencies.push(o.reply.latency),
                ShmemOp::Unmap => self.unmap_latencies.push(o.reply.latency),
            }
        }
    }
}

/// Runs the scenario's steps. A frontend that dies is recorded as the
/// failed check `frontend-survives` (with the step that killed it) and ends
/// the scenario; one that lives to the end passes it. Any other step error
/// is returned as an error.
pub fn run_steps(scn: &Scenario, t: &mut Target) -> Result<Vec<CheckResult>, String> {
    let mut checks = Vec::new();
    for (n, (step, label)) in scn.steps.iter().zip(&scn.labels).enumerate() {
        let res = run_step(scn, label, step, t, &mut checks);
        // A dying QEMU closes its sockets before it can be reaped: after a
        // failed step, give it a moment to show as gone.
        let deadline = Instant::now() + if res.is_err() { DEATH_GRACE } else { Duration::ZERO };
        let mut gone = if t.expected_death { None } else { t.guest.gone() };
        while gone.is_none() && !t.expected_death && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            gone = t.guest.gone();
        }
        if let Some(death) = gone {
            checks.push(CheckResult::died(label, &death));
            return Ok(checks);
        }
        res.map_err(|e| format!("step {} ({label:?}, `do = \"{}\"`): {e}", n + 1, step.kind()))?;
    }
    if !t.expected_death {
        checks.push(CheckResult::new("frontend-survives", true, format!("the {} ran through every step", t.guest.kind())));
    }
    Ok(checks)
}

/// Whether a memory table maps `len` bytes of file `id` at guest address `addr`.
pub(super) fn table_holds(m: &MemTable, addr: u64, len: u64, id: FileId) -> bool {
    m.regions.iter().any(|r| r.guest_addr == addr && r.size == len && r.file == Some(id))
}

fn ack_checks(label: &str, t: &Target, o: &Outcome, want: u64, reason: Option<&str>, said: &str, checks: &mut Vec<CheckResult>) {
    checks.push(
        CheckResult::new(
            format!("{label}/ack"),
            o.reply.ack == want,
            format!(
                "{} {}{}: ack {} (expected {want}) after {:.3} ms{}",
                o.op,
                o.msg,
                if o.with_fd { "" } else { " without an fd" },
                o.reply.ack,
                o.reply.latency.as_secs_f64() * 1e3,
                o.surprise.as_ref().map(|s| format!("; {s}")).unwrap_or_default()
            ),
        )
        .with("ack", o.reply.ack),
    );
    if let Some(reason) = reason {
        checks.push(
            CheckResult::new(format!("{label}/reason"), said.contains(reason), format!("{} said {said:?}; expected it to mention {reason:?}", t.guest.kind()))
                .with("said", said_fact(said)),
        );
    }
}

fn run_step(scn: &Scenario, label: &str, step: &Step, t: &mut Target, checks: &mut Vec<CheckResult>) -> Result<(), String> {
    let file = |name: &str| format!("{}/{name}", scn.name);
    let e2s = |e: crate::manager::ManagerError| e.to_string();
    match step {
        Step::File { name, size } => {
            t.mgr.create_file(&file(name), size.0).map_err(e2s)?;
        }
        Step::Fill { file: f, seed, offset, len } => {
            let hf = t.mgr.file(&file(f)).map_err(e2s)?;
            let len = len.map_or(hf.size().saturating_sub(offset.0), |l| l.0);
            hf.fill(offset.0, len, *seed).map_err(|e| e.to_string())?;
        }
        Step::Map { check: _, shmid, file: f, fd_offset, shm_offset, len, rw, ack, attach, readonly_fd, flags, reason } => {
            let name = file(f);
            let msg = ShmemMsg {
                shmid: *shmid,
                fd_offset: fd_offset.0,
                shm_offset: shm_offset.0,
                len: len.0,
                flags: flags.unwrap_or(if *rw { MAP_RW } else { 0 }),
            };
            let mark = t.guest.log_mark();
            let how = match (attach, readonly_fd) {
                (false, _) => Attach::None,
                (true, false) => Attach::File(&name),
                (true, true) => Attach::ReadOnly(&name),
            };
            let want = if *ack == 0 { Want::Accept } else { Want::Refuse };
            let o = t.mgr.send(ShmemOp::Map, msg, how, want).map_err(e2s)?;
            t.note(&o);
            let said = t.guest.log_since(mark);
            ack_checks(label, t, &o, *ack, reason.as_deref(), &said, checks);
        }
        Step::MapMany { check, shmid, file: f, count, len } => {
            let name = file(f);
            let id = t.mgr.file(&name).map_err(e2s)?.id();
            let base = t.guest.region_addr(*shmid)?;
            let mark = t.guest.log_mark();
            let start = Instant::now();
            let mut accepted = Vec::new();
            for i in 0..u64::from(*count) {
                let o = t.mgr.map(*shmid, &name, 0, i * len.0, len.0, false).map_err(e2s)?;
                t.note(&o);
                if o.reply.ack == 0 {
                    accepted.push(base + i * len.0);
                }
                if t.guest.gone().is_some() {
                    return Err(format!("frontend died at mapping {i} of {count}"));
                }
            }
            let elapsed = start.elapsed();
            let in_table = |m: &MemTable, addr: u64| table_holds(m, addr, len.0, id);
            let all_there = |m: &MemTable| accepted.iter().all(|&a| in_table(m, a));
            t.recorder.wait_for(MEM_TABLE_TIMEOUT, |r| r.mem_tables.last().is_some_and(all_there));
            let missing = t.recorder.lock().mem_tables.last().map_or(accepted.len(), |m| accepted.iter().filter(|&&a| !in_table(m, a)).count());
            let said = t.guest.log_since(mark);
            let refused = *count as usize - accepted.len();
            let evidence = format!(
                "{count} maps of {:#x} bytes in {elapsed:?}: {} accepted, {refused} refused; {missing} accepted mappings missing from the backend's memory table{}",
                len.0,
                accepted.len(),
                said.lines().next().map(|l| format!("; {} said: {l}", t.guest.kind())).unwrap_or_default()
            );
            checks.push(
                CheckResult::new(check, missing == 0, evidence)
                    .with("accepted", accepted.len())
                    .with("refused", refused)
                    .with("missing", missing)
                    .with("said", said_fact(&said)),
            );
        }
        Step::Unmap { check: _, shmid, shm_offset, len, ack, reason } => {
            let mark = t.guest.log_mark();
            let msg = ShmemMsg { shmid: *shmid, shm_offset: shm_offset.0, len: len.0, ..ShmemMsg::default() };
            let want = if *ack == 0 { Want::Accept } else { Want::Refuse };
            let o = t.mgr.send(ShmemOp::Unmap, msg, Attach::None, want).map_err(e2s)?;
            t.note(&o);
            let said = t.guest.log_since(mark);
            ack_checks(label, t, &o, *ack, reason.as_deref(), &said, checks);
        }
        Step::GuestReset { init } => {
            t.guest.reset(*init)?;
            t.mgr.forget_all();
        }
        Step::GuestWrite { shmid, offset, len, seed } => {
            t.guest.fill(*shmid, offset.0, len.0, *seed)?;
        }
        Step::HostWrite { file: f, offset, len, seed } => {
            t.mgr.file(&file(f)).map_err(e2s)?.fill(offset.0, len.0, *seed).map_err(|e| e.to_string())?;
        }
        Step::ExpectGuest { check, shmid, offset, len, seed } => {
            let bytes: Vec<u8> = match seed {
                Some(seed) => (0..len.0).map(|i| pattern_byte(*seed, i)).collect(),
                None => {
                    let want = t.mgr.expected(*shmid, offset.0, len.0).map_err(e2s)?;
                    let bytes: Option<Vec<u8>> = want.iter().map(|e| if let Expect::Byte(b) = e { Some(*b) } else { None }).collect();
                    bytes.ok_or("the ledger has unmapped bytes in this range; use expect-guest-not")?
                }
            };
            let want = Observed::of(&bytes);
            let got = t.guest.observe(*shmid, offset.0, len.0)?;
            let evidence = format!(
                "guest saw {}; expected {} ({})",
                got.describe(),
                want.describe(),
                seed.map_or("what the ledger maps there".to_string(), |s| format!("pattern {s:#04x}"))
            );
            checks.push(CheckResult::new(check, got == want, evidence).with("seen", got.fact()));
        }
        Step::ExpectGuestNot { check, shmid, offset, len, file: f, fd_offset } => {
            let old = t.mgr.file(&file(f)).map_err(e2s)?.read(fd_offset.0, len.0).map_err(|e| e.to_string())?;
            let old = Observed::of(&old);
            let got = t.guest.observe(*shmid, offset.0, len.0)?;
            let evidence = format!("guest saw {}; the file's bytes are {}", got.describe(), old.describe());
            checks.push(CheckResult::new(check, got != old, evidence).with("seen", got.fact()));
        }
        Step::ExpectFile { check, file: f, offset, len, seed } => {
            let data = t.mgr.file(&file(f)).map_err(e2s)?.read(offset.0, len.0).map_err(|e| e.to_string())?;
            let want: Vec<u8> = (0..len.0).map(|i| pattern_byte(*seed, i)).collect();
            let first_diff = data.iter().zip(&want).position(|(a, b)| a != b);
            let evidence = match first_diff {
                None => format!("file holds pattern {seed:#04x} (digest {:016x})", fnv1a64(&data)),
                Some(i) => format!(
                    "file differs from pattern {seed:#04x} first at offset {:#x}: {:#04x} instead of {:#04x}",
                    offset.0 + i as u64,
                    data[i],
                    want[i]
                ),
            };
            let mut c = CheckResult::new(check, first_diff.is_none(), evidence).with("seen", Observed::of(&data).fact());
            if let Some(i) = first_diff {
                c = c.with("first_diff", format!("{:#x}", offset.0 + i as u64));
            }
            checks.push(c);
        }
        Step::ExpectAlive { check } => {
            let res = t.guest.ping(COMMAND_TIMEOUT);
            checks.push(CheckResult::new(check, res.is_ok(), res.err().unwrap_or_else(|| format!("{} answers", t.guest.kind()))));
        }
        Step::ExpectDigest { check, shmid, file: f, offset, len, digest } => {
            let (got, of) = match (shmid, f) {
                (Some(id), None) => (t.guest.observe(*id, offset.0, len.0)?.digest_or_zeros(len.0), format!("the guest's view of region {id}")),
                (None, Some(f)) => (fnv1a64(&t.mgr.file(&file(f)).map_err(e2s)?.read(offset.0, len.0).map_err(|e| e.to_string())?), format!("file {f}")),
                _ => return Err("expect-digest needs exactly one of `shmid` and `file`".into()),
            };
            let got = format!("{got:016x}");
            let evidence = format!("{of} at {:#x}+{:#x} has digest {got}; expected {digest}", offset.0, len.0);
            checks.push(CheckResult::new(check, got == *digest, evidence).with("seen", format!("digest {got}")));
        }
        Step::ExpectReleased { check, file: f } => {
            let id = t.mgr.file(&file(f)).map_err(e2s)?.id();
            let start = Instant::now();
            let mut held = t.guest.holds(id)?;
            while !held.is_empty() && start.elapsed() < RELEASE_TIMEOUT {
                std::thread::sleep(Duration::from_millis(20));
                held = t.guest.holds(id)?;
            }
            let evidence = if held.is_empty() {
                format!("{} holds no fd or mapping of {f} ({:?} after the check began)", t.guest.kind(), start.elapsed())
            } else {
                format!("{} still holds {f} after {RELEASE_TIMEOUT:?}: {}", t.guest.kind(), held.join(", "))
            };
            checks.push(CheckResult::new(check, held.is_empty(), evidence).with("held", held.len()));
        }
        Step::ExpectMemTable { check, shmid, shm_offset, len, file: f, present } => {
            let id = t.mgr.file(&file(f)).map_err(e2s)?.id();
            let addr = t.guest.region_addr(*shmid)? + shm_offset.0;
            let holds = |m: &MemTable| table_holds(m, addr, len.0, id);
            let since = t.last_ack.unwrap_or_else(Instant::now);
            let ok = t.recorder.wait_for(MEM_TABLE_TIMEOUT, |r| r.mem_tables.last().is_some_and(|m| holds(m) == *present));
            let rec = t.recorder.lock();
            let lag = rec.mem_tables.iter().rev().find(|m| holds(m) == *present && m.at >= since).map(|m| m.at - since);
            let rec_holds = rec.mem_tables.last().is_some_and(holds);
            let evidence = match (ok, lag) {
                (true, Some(lag)) => format!("memory table {} {f} at {addr:#x}+{:#x} {lag:?} after the ack", if *present { "holds" } else { "no longer holds" }, len.0),
                (true, None) => format!("memory table already {} it before the ack", if *present { "held" } else { "lacked" }),
                (false, _) => format!(
                    "after {MEM_TABLE_TIMEOUT:?} the latest of {} memory tables {} {f} at {addr:#x}+{:#x}; its regions: {:?}",
                    rec.mem_tables.len(),
                    if *present { "does not hold" } else { "still holds" },
                    len.0,
                    rec.mem_tables.last().map_or("none".to_string(), |m| m.regions.iter().map(|r| format!("{:#x}+{:#x}", r.guest_addr, r.size)).collect::<Vec<_>>().join(" "))
                ),
            };
            drop(rec);
            if let (true, Some(lag)) = (ok, lag) {
                t.table_lags.push(lag);
            }
            let latest = if rec_holds { "holds" } else { "lacks" };
            checks.push(CheckResult::new(check, ok, evidence).with("latest_table", latest));
        }
        Step::Inject { fault } => match fault {
            Fault::KillBackend => {
                // A dead backend's sockets close: the daemon's and the channel.
                if let Some(server) = t.server.take() {
                    server.shutdown()?;
                }
                t.mgr.channel().close();
            }
            Fault::KillQemu => {
                t.expected_death = true;
                t.guest.inject(*fault)?;
            }
            Fault::HangAgent => t.guest.inject(*fault)?,
        },
        Step::ExpectNoAnswer { check, from: Party::Guest } => {
            // Only a hang (a timeout) or a dead frontend counts, and the
            // evidence says which; any other error says nothing of either.
            let start = Instant::now();
            let res = t.guest.ping(NO_ANSWER_TIMEOUT);
            let cause = match &res {
                Ok(()) => "answered",
                Err(_) if t.guest.gone().is_some() => "dead",
                Err(e) if e.contains("timed out") => "timeout",
                Err(_) => "other error",
            };
            let evidence = match res {
                Ok(()) => format!("the guest answered within {:?}", start.elapsed()),
                Err(e) => format!("no answer after {:?} ({cause}): {e}", start.elapsed()),
            };
            checks.push(CheckResult::new(check, matches!(cause, "dead" | "timeout"), evidence).with("cause", cause));
        }
        Step::ProbeReplyBeforeCommit { check, shmid, shm_offset, doorbell_shmid, doorbell_offset, iterations, rw, writes } => {
            let found = probe_reply_before_commit(t, &scn.name, check, (*shmid, shm_offset.0), (*doorbell_shmid, doorbell_offset.0), *iterations, *rw, *writes)?;
            checks.extend(found);
        }
    }
    Ok(())
}

/// Upper bound of a rate at 95 % confidence after `k` events in `n` trials:
/// exact (one-sided Clopper-Pearson) for k = 0, Wilson's score otherwise.
pub fn upper95(k: u32, n: u32) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let n = f64::from(n);
    if k == 0 {
        return 1.0 - 0.05f64.powf(1.0 / n);
    }
    let (p, z) = (f64::from(k) / n, 1.96f64);
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre + spread) / (1.0 + z * z / n)).min(1.0)
}

/// First-read latency buckets of the probe, upper bounds in microseconds.
const LATENCY_BUCKETS: [f64; 6] = [2.0, 5.0, 20.0, 100.0, 500.0, 2000.0];

fn histogram(us: &[f64]) -> String {
    if us.is_empty() {
        return "none".into();
    }
    let mut counts = [0u32; LATENCY_BUCKETS.len() + 1];
    for &u in us {
        counts[LATENCY_BUCKETS.iter().position(|&b| u < b).unwrap_or(LATENCY_BUCKETS.len())] += 1;
    }
    let mut parts: Vec<String> = LATENCY_BUCKETS.iter().zip(&counts).map(|(b, c)| format!("<{b}us:{c}")).collect();
    parts.push(format!(">={}us:{}", LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1], counts[LATENCY_BUCKETS.len()]));
    parts.join(" ")
}

/// One direction of the probe: how many rings, how many stale, what was seen.
#[derive(Default)]
struct Tally {
    n: u32,
    stale: u32,
    seen: BTreeMap<&'static str, u32>,
    first_stale: Option<String>,
    fresh_us: Vec<f64>,
    stale_us: Vec<f64>,
}

impl Tally {
    fn add(&mut self, i: u32, kind: &'static str, stale: bool, us: Option<f64>) {
        self.n += 1;
        *self.seen.entry(kind).or_insert(0) += 1;
        if stale {
            self.stale += 1;
            self.first_stale.get_or_insert_with(|| format!("iteration {i}: {kind}"));
        }
        if let Some(us) = us {
            if stale { self.stale_us.push(us) } else { self.fresh_us.push(us) }
        }
    }

    fn check(&self, name: String, what: &str, conditions: &str) -> CheckResult {
        let rate = if self.n == 0 { 0.0 } else { f64::from(self.stale) / f64::from(self.n) };
        let bound = upper95(self.stale, self.n);
        let seen: Vec<String> = self.seen.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let verdict = if self.stale == 0 {
            format!("not observed in {} (rate < {:.3} % at 95 %)", self.n, bound * 100.0)
        } else {
            format!("{} stale of {} ({:.3} %, < {:.3} % at 95 %); first at {}", self.stale, self.n, rate * 100.0, bound * 100.0, self.first_stale.as_deref().unwrap_or("?"))
        };
        let evidence = format!(
            "{what}: {verdict}; seen: {}; first-read latency, fresh: {}; stale: {}; {conditions}",
            seen.join(", "),
            histogram(&self.fresh_us),
            histogram(&self.stale_us)
        );
        let mut c = CheckResult::new(name, self.stale == 0 && self.n > 0, evidence)
            .with("n", self.n)
            .with("stale", self.stale)
            .with("upper95", format!("{bound:.6}"));
        // What a stale read showed most often (ties: the first by name).
        if let Some((kind, _)) = self.seen.iter().filter(|(k, _)| !k.starts_with("fresh")).max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k))) {
            c = c.with("stale_seen", kind);
        }
        c
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_else(|_| "?".into())
}

/// Sends one probe request that must be accepted. `Ok(Some(why))` when it
/// got no ack at all (the watchdog's deadlock); a refusal is an error.
fn probe_request(t: &mut Target, i: u32, op: ShmemOp, msg: ShmemMsg, attach: Attach<'_>) -> Result<Option<String>, String> {
    match t.mgr.send(op, msg, attach, Want::Accept) {
        Err(e) => Ok(Some(format!("iteration {i}: {op} got no ack: {e}"))),
        Ok(o) if o.reply.ack != 0 => Err(format!("iteration {i}: {op} refused (ack {})", o.reply.ack)),
        Ok(o) => {
            t.note(&o);
            Ok(None)
        }
    }
}

/// The reply-before-commit probe, host side (see `Step::ProbeReplyBeforeCommit`).
/// Per iteration: a fresh tag in the file to map (two files take turns, so
/// the old mapping is told from the new one), map, ring at once, classify
/// the guest's first read; unmap, ring at once, classify again. Nothing
/// crosses the serial port inside the loop.
#[allow(clippy::too_many_arguments)]
fn probe_reply_before_commit(t: &mut Target, scn: &str, check: &str, target: (u8, u64), doorbell: (u8, u64), iterations: u32, rw: bool, writes: bool) -> Result<Vec<CheckResult>, String> {
    const TAG: u64 = 0x7a67_0000_0000_0000;
    const MARK: u64 = 0x6d6b_0000_0000_0000;
    let e2s = |e: crate::manager::ManagerError| e.to_string();
    let name = |n: &str| format!("{scn}/{check}.{n}");
    let (db_name, files) = (name("doorbell"), [name("a"), name("b")]);
    t.mgr.create_file(&db_name, 0x1000).map_err(e2s)?;
    for f in &files {
        t.mgr.create_file(f, 0x1000).map_err(e2s)?;
    }
    let map_msg = |shmid: u8, shm_offset: u64, rw: bool| ShmemMsg { shmid, shm_offset, len: 0x1000, flags: if rw { MAP_RW } else { 0 }, ..ShmemMsg::default() };
    let deadlock = |e: String| CheckResult::new(format!("{check}/no-deadlock"), false, format!("deadlock: {e}; the backend could not serve the frontend meanwhile")).with("deadlock", "no ack");
    let o = match t.mgr.send(ShmemOp::Map, map_msg(doorbell.0, doorbell.1, true), Attach::File(&db_name), Want::Accept) {
        Ok(o) => o,
        Err(e) => return Ok(vec![deadlock(format!("mapping the doorbell: SHMEM_MAP got no ack: {e}"))]),
    };
    if o.reply.ack != 0 {
        return Err(format!("the doorbell mapping was refused (ack {})", o.reply.ack));
    }
    t.note(&o);
    let host = crate::files::HostMapping::of(t.mgr.file(&db_name).map_err(e2s)?).map_err(|e| format!("mapping the doorbell on the host: {e}"))?;
    let load_before = loadavg();
    let pinning = t.guest.probe_start(host, doorbell, target)?;
    let (mut map, mut unmap, mut write) = (Tally::default(), Tally::default(), Tally::default());
    let mut no_ack: Option<String> = None;
    let mut prev: Option<u64> = None;
    let started = Instant::now();
    for i in 0..iterations {
        let file = &files[i as usize % 2];
        let tag = TAG | u64::from(i);
        t.mgr.file(file).map_err(e2s)?.write(0, &tag.to_le_bytes()).map_err(|e| e.to_string())?;
        let writing = rw && writes && i % 2 == 1;
        if let Some(e) = probe_request(t, i, ShmemOp::Map, map_msg(target.0, target.1, rw), Attach::File(file))? {
            no_ack = Some(e);
            break;
        }
        let marker = MARK | u64::from(i);
        let reads = t.guest.probe_ring(if writing { RingMode::Write(marker) } else { RingMode::Read })?;
        let (first, us) = (reads.values[0], reads.micros[0]);
        if writing {
            let landed = t.mgr.file(file).map_err(e2s)?.read(0, 8).map_err(|e| e.to_string())? == marker.to_le_bytes();
            let kind = match (first, landed) {
                (Some(v), true) if v == marker => "fresh: written and read back",
                (_, false) => "lost: the write did not reach the file",
                (_, true) => "reached the file, but the guest read back something else",
            };
            write.add(i, kind, !kind.starts_with("fresh"), us);
        } else {
            let kind = match first {
                Some(v) if v == tag => "fresh",
                Some(0) | None => "hole",
                Some(v) if Some(v) == prev || v == (MARK | u64::from(i.wrapping_sub(1))) => "the previous mapping",
                Some(_) => "other bytes",
            };
            map.add(i, kind, kind != "fresh", us);
        }
        if let Some(e) = probe_request(t, i, ShmemOp::Unmap, map_msg(target.0, target.1, false), Attach::None)? {
            no_ack = Some(e);
            break;
        }
        let reads = t.guest.probe_ring(RingMode::Read)?;
        let kind = match reads.values[0] {
            Some(0) | None => "fresh: the hole",
            Some(v) if v == tag || v == marker => "the unmapped file's bytes",
            Some(_) => "other bytes",
        };
        unmap.add(i, kind, !kind.starts_with("fresh"), reads.micros[0]);
        prev = Some(tag);
        if super::interrupted() {
            return Err("interrupted".into());
        }
    }
    let elapsed = started.elapsed();
    let stopped = t.guest.probe_stop();
    let conditions = format!(
        "{} iterations in {:.1} s on {}; {pinning}; load average {load_before} before, {} after",
        iterations,
        elapsed.as_secs_f64(),
        t.guest.kind(),
        loadavg()
    );
    // A direction that got no ring (a deadlock at once) records no check.
    let mut checks: Vec<CheckResult> = [
        (&map, "map", "the guest's first read right after a MAP ack"),
        (&unmap, "unmap", "the guest's first read right after an UNMAP ack"),
        (&write, "write", "a guest write right after a MAP ack"),
    ]
    .into_iter()
    .filter(|(tally, _, _)| tally.n > 0)
    .map(|(tally, dir, what)| tally.check(format!("{check}/{dir}"), what, &conditions))
    .collect();
    checks.push(match no_ack {
        Some(e) => deadlock(e),
        None => CheckResult::new(format!("{check}/no-deadlock"), true, format!("every one of {} requests was acked", 2 * iterations + 1)),
    });
    stopped.map_err(|e| format!("ending the guest probe: {e}"))?;
    Ok(checks)
}
