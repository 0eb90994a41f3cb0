//! Executes scenario steps on one target (QEMU or the model) and records
//! each check's outcome with its evidence. Checks never stop a scenario; a
//! step that cannot be carried out does. Verdicts are made elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::guest::{COMMAND_TIMEOUT, Guest, Observed};
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
const NO_ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// An operation slower than this counts as a stall in the probes.
const STALL: Duration = Duration::from_secs(1);

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
}

impl Target {
    pub fn new(mgr: MappingManager, guest: Box<dyn Guest>, server: BackendServer) -> Self {
        let recorder = server.recorder().clone();
        Target { mgr, guest, recorder, server: Some(server), expected_death: false, map_latencies: Vec::new(), unmap_latencies: Vec::new(), table_lags: Vec::new(), last_ack: None }
    }

    /// Whether a fault was injected that kills the frontend on purpose.
    pub fn expected_death(&self) -> bool {
        self.expected_death
    }

    fn note(&mut self, o: &Outcome) {
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
fn table_holds(m: &MemTable, addr: u64, len: u64, id: FileId) -> bool {
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
        Step::ProbeReplyBeforeCommit { check, shmid, shm_offset, file: f, iterations } => {
            checks.push(probe_reply_before_commit(t, check, *shmid, shm_offset.0, &file(f), *iterations)?);
        }
    }
    Ok(())
}

/// Map, read at once from the guest, unmap, `iterations` times. A read that
/// does not show the file right after the ack is stale; an operation slower
/// than [`STALL`] is a stall. Reports counts and an ack-latency histogram.
fn probe_reply_before_commit(t: &mut Target, check: &str, shmid: u8, shm_offset: u64, file: &str, iterations: u32) -> Result<CheckResult, String> {
    let hf = t.mgr.file(file).map_err(|e| e.to_string())?;
    let len = hf.size();
    let want = Observed::of(&hf.read(0, len).map_err(|e| e.to_string())?);
    let (mut stale, mut stalls, mut first_stale) = (0u32, 0u32, None);
    let mut hist = [0u32; 6]; // <0.1 ms, <0.3, <1, <3, <10, >=10 ms
    let bucket = |d: Duration| match d.as_micros() {
        0..100 => 0,
        100..300 => 1,
        300..1000 => 2,
        1000..3000 => 3,
        3000..10000 => 4,
        _ => 5,
    };
    for i in 0..iterations {
        let o = t.mgr.map(shmid, file, 0, shm_offset, len, false).map_err(|e| e.to_string())?;
        if o.reply.ack != 0 {
            return Err(format!("iteration {i}: map refused (ack {})", o.reply.ack));
        }
        t.note(&o);
        hist[bucket(o.reply.latency)] += 1;
        let read_start = Instant::now();
        let got = t.guest.observe(shmid, shm_offset, len)?;
        let read_time = read_start.elapsed();
        if got != want {
            stale += 1;
            first_stale.get_or_insert((i, got.describe()));
        }
        let u = t.mgr.unmap(shmid, shm_offset, len).map_err(|e| e.to_string())?;
        if u.reply.ack != 0 {
            return Err(format!("iteration {i}: unmap refused (ack {})", u.reply.ack));
        }
        t.note(&u);
        if o.reply.latency > STALL || u.reply.latency > STALL || read_time > STALL {
            stalls += 1;
        }
        if super::interrupted() {
            return Err("interrupted".into());
        }
    }
    let mut evidence = format!(
        "{iterations} iterations: {stale} stale reads, {stalls} stalls (> {STALL:?}); map ack latency histogram <0.1ms:{} <0.3ms:{} <1ms:{} <3ms:{} <10ms:{} >=10ms:{}",
        hist[0], hist[1], hist[2], hist[3], hist[4], hist[5]
    );
    if let Some((i, what)) = first_stale {
        evidence.push_str(&format!("; first stale read at iteration {i}: {what}"));
    }
    Ok(CheckResult::new(check, stale == 0 && stalls == 0, evidence).with("stale", stale).with("stalls", stalls))
}
