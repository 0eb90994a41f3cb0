//! The two guests a scenario runs against: a real QEMU guest (through the
//! guest agent on its serial port) and the reference model. Both answer the
//! same questions; neither judges.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::qemu::{Qemu, describe_status};
use super::scenario::Fault;
use crate::backend::FileId;
use crate::files::HostMapping;
use crate::files::{fnv1a64, pattern_byte};
use crate::model::{MODEL_BAR_BASE, ModelFrontend};

/// Time one agent command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest chunk the agent digests or fills per command.
const CHUNK: u64 = 1 << 20;

/// What the guest saw in a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Bytes were readable: their digest, whether all were zero, the first few.
    Bytes { digest: u64, zero: bool, head: String },
    /// The range could not be read at all (the model's unmapped ranges).
    Inaccessible,
}

impl Observed {
    pub fn of(data: &[u8]) -> Self {
        let head = data.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Observed::Bytes { digest: fnv1a64(data), zero: data.iter().all(|&b| b == 0), head }
    }

    /// The digest of what was seen, a range where nothing is mapped counting
    /// as `len` zero bytes (QEMU reads zeros there, the model cannot read).
    pub fn digest_or_zeros(&self, len: u64) -> u64 {
        match self {
            Observed::Bytes { digest, .. } => *digest,
            Observed::Inaccessible => {
                let mut h = shmem_pattern::Fnv1a64::new();
                for _ in 0..len {
                    h.update(0);
                }
                h.value()
            }
        }
    }

    /// Short form for known-defect signatures: "zeros", "inaccessible", "digest X".
    pub fn fact(&self) -> String {
        match self {
            Observed::Bytes { zero: true, .. } => "zeros".into(),
            Observed::Bytes { digest, .. } => format!("digest {digest:016x}"),
            Observed::Inaccessible => "inaccessible".into(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Observed::Bytes { digest, zero, head } => format!("digest {digest:016x}{} first bytes {head}", if *zero { " (all zero)" } else { "" }),
            Observed::Inaccessible => "inaccessible".into(),
        }
    }
}

/// How a frontend ended (or failed to end cleanly): its exit as the
/// known-defect signatures name it ("signal 11 (SIGSEGV)", "status 1"),
/// and the tail of what it said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Death {
    pub exit: String,
    pub said: String,
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.said.as_str() {
            "" => write!(f, "{}; it said nothing", self.exit),
            said => write!(f, "{}; it said last:\n{said}", self.exit),
        }
    }
}

/// The guest's fine clock (its TSC), calibrated against the host's clock.
#[derive(Clone, Debug, PartialEq)]
pub struct GuestClock {
    pub hz: f64,
    /// Relative uncertainty of `hz`: half the round trips over the window.
    pub uncertainty: f64,
    pub window: Duration,
}

impl fmt::Display for GuestClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest TSC at {:.1} MHz, calibrated against the host over {:?} (±{:.3} %)", self.hz / 1e6, self.window, self.uncertainty * 100.0)
    }
}

/// How long the TSC calibration compares the guest's clock with the host's.
const CALIBRATION_WINDOW: Duration = Duration::from_millis(300);

/// One bandwidth measurement: `rounds` alternating timed copy runs of
/// `bytes` each through the mapping and in guest RAM, in guest TSC ticks.
#[derive(Clone, Debug, PartialEq)]
pub struct CopyRounds {
    pub clock: GuestClock,
    pub bytes: u64,
    pub shm_ticks: Vec<u64>,
    pub ram_ticks: Vec<u64>,
}

impl CopyRounds {
    fn mib_s(&self, ticks: &[u64]) -> Vec<f64> {
        ticks.iter().map(|&t| self.bytes as f64 / (1024.0 * 1024.0) / (t as f64 / self.clock.hz)).collect()
    }
    pub fn shm_mib_s(&self) -> Vec<f64> {
        self.mib_s(&self.shm_ticks)
    }
    pub fn ram_mib_s(&self) -> Vec<f64> {
        self.mib_s(&self.ram_ticks)
    }
    /// Mapping rate over guest-RAM rate, one per round (both halves of a
    /// ratio come from the same round of the same boot).
    pub fn ratios(&self) -> Vec<f64> {
        self.ram_ticks.iter().zip(&self.shm_ticks).map(|(&r, &s)| r as f64 / s as f64).collect()
    }
    /// The shortest timed copy, in clock ticks (the clock's resolution is one tick).
    pub fn shortest(&self) -> u64 {
        self.shm_ticks.iter().chain(&self.ram_ticks).copied().min().unwrap_or(0)
    }
}

/// What the guest saw of the probe's target on one ring: the first 8 bytes,
/// read first thing, then again at once, then after about 50 microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProbeReads {
    /// `None` where nothing readable is mapped (the model's holes).
    pub values: [Option<u64>; doorbell::READ_COUNT],
    /// How long each read took, when the guest has a clock (QEMU's does).
    pub micros: [Option<f64>; doorbell::READ_COUNT],
}

/// What the guest does first when rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingMode {
    Read,
    /// Write this marker into the target's first 8 bytes, then read.
    Write(u64),
}

/// How long the guest may take to start spinning on the doorbell.
const PROBE_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a ring may wait for the guest's answer.
const RING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the host spins for the guest's answer to a ring before it
/// sleeps `RING_POLL` between looks.
const RING_SPIN: Duration = Duration::from_micros(100);
const RING_POLL: Duration = Duration::from_micros(20);

/// One shared-memory region as the guest found it: shmid, offset in the
/// shared-memory BAR, length.
pub type RegionWindow = (u8, u64, u64);

pub trait Guest {
    /// "qemu" or "model".
    fn kind(&self) -> &'static str;
    fn observe(&mut self, shmid: u8, offset: u64, len: u64) -> Result<Observed, String>;
    /// Writes pattern `seed` as the guest CPU would. A write the frontend
    /// refuses (the model's read-only mappings) is no error: checks look at
    /// what the guest and the host see afterwards.
    fn fill(&mut self, shmid: u8, offset: u64, len: u64, seed: u8) -> Result<(), String>;
    /// Device reset (status 0), then, if `init`, re-initialisation to DRIVER_OK.
    fn reset(&mut self, init: bool) -> Result<(), String>;
    /// Guest-physical address of region `shmid`, from what the guest found
    /// (the BAR's address and the region's capability), never assumed.
    fn region_addr(&self, shmid: u8) -> Result<u64, String>;
    /// The regions as the guest found them, by shmid.
    fn layout(&self) -> Result<Vec<RegionWindow>, String>;
    /// A position in what the frontend says (QEMU's stderr, the model's reasons).
    fn log_mark(&self) -> u64;
    /// What the frontend said since `mark`.
    fn log_since(&self, mark: u64) -> String;
    /// Where the frontend still holds `file` (fds, memory mappings); empty when released.
    fn holds(&self, file: FileId) -> Result<Vec<String>, String>;
    /// How the frontend died, once it has.
    fn gone(&mut self) -> Option<Death>;
    /// The frontend's logs, for a report of a failure.
    fn log_text(&self) -> String;
    /// Guest copy timings through region `shmid` (mapped read-write, `len`
    /// bytes from offset 0) and in guest RAM, `rounds` rounds of `iterations`
    /// copies of half of `len`, on the guest's calibrated fine clock.
    fn bandwidth(&mut self, shmid: u8, len: u64, iterations: u32, rounds: u32) -> Result<CopyRounds, String>;
    /// Asks the frontend to quit (QEMU: the guest powers off) and says how
    /// it ended: `Ok(exit)` for a clean end (status 0, no signal), else how
    /// it ended instead. Nothing else may be asked after.
    fn shutdown(&mut self) -> Result<String, Death>;
    /// Fault injection on the frontend or guest side (`kill-backend` is the runner's).
    fn inject(&mut self, fault: Fault) -> Result<(), String>;
    /// Asks the guest for a sign of life, waiting at most `timeout`.
    fn ping(&mut self, timeout: Duration) -> Result<(), String>;
    /// Starts the guest side of the reply-before-commit probe: the guest
    /// spins on the doorbell word at `doorbell` (a read-write mapping of the
    /// file `host` maps) and reads `target` first thing on each ring. Until
    /// [`Guest::probe_stop`], only rings may be asked. Says under which
    /// conditions it runs (vCPUs, pinning).
    fn probe_start(&mut self, host: HostMapping, doorbell: (u8, u64), target: (u8, u64)) -> Result<String, String>;
    /// Rings the doorbell and waits, through shared memory only, for what
    /// the guest saw.
    fn probe_ring(&mut self, mode: RingMode) -> Result<ProbeReads, String>;
    /// Ends the probe: the guest answers commands again.
    fn probe_stop(&mut self) -> Result<(), String>;
}

/// A QEMU guest driven through the agent.
pub struct QemuGuest {
    pub qemu: Qemu,
    seq: u64,
    /// The guest's TSC, once calibrated.
    clock: Option<GuestClock>,
    /// The doorbell probe under way.
    probe: Option<Probe>,
    /// The agent was told to stop answering (fault injection).
    hung: bool,
}

impl QemuGuest {
    pub fn new(qemu: Qemu) -> Self {
        QemuGuest { qemu, seq: 0, clock: None, probe: None, hung: false }
    }

    /// Sends one command and returns the text after `ok`.
    pub fn command(&mut self, cmd: &str) -> Result<String, String> {
        self.command_within(cmd, COMMAND_TIMEOUT)
    }

    fn command_within(&mut self, cmd: &str, timeout: Duration) -> Result<String, String> {
        self.seq += 1;
        let id = self.seq.to_string();
        self.qemu.send_line(&format!("{id} {cmd}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.qemu.read_line(deadline, &format!("waiting for the agent's answer to `{cmd}`"))?;
            let Some(rest) = line.strip_prefix(&format!("{id} ")) else { continue };
            return match rest.split_once(' ').unwrap_or((rest, "")) {
                ("ok", text) => Ok(text.to_string()),
                ("err", text) => Err(format!("agent refused `{cmd}`: {text}")),
                _ => Err(format!("agent answered `{cmd}` with {line:?}")),
            };
        }
    }
}

/// The doorbell probe under way on a QEMU guest.
struct Probe {
    host: HostMapping,
    /// The last ring.
    seq: u64,
    /// The serial command id of the guest's `probe`, answered at the end.
    id: String,
    /// The host thread's CPU set before it was pinned, to restore.
    pinned_from: Option<libc::cpu_set_t>,
}

use shmem_pattern::doorbell;

/// The CPU set of the calling thread.
fn own_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: sched_getaffinity into a zeroed set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0).then_some(set)
    }
}

fn pin(tid: libc::pid_t, cpu: usize) -> bool {
    // SAFETY: sched_setaffinity with a set we filled.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

impl QemuGuest {
    /// Keeps the ringing thread and the vCPU the guest probe spins on (the
    /// last) on different host cores, where there are two: pins QEMU's last
    /// vCPU thread to the last core and this thread to core 0.
    fn pin_apart(&self) -> (Option<libc::cpu_set_t>, String) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let smp = self.qemu.smp;
        if cores < 2 || smp < 2 {
            return (None, format!("not pinned ({cores} host cores, {smp} vCPUs)"));
        }
        let Some(pid) = self.qemu.pid() else { return (None, "not pinned (QEMU gone)".into()) };
        let vcpu = format!("CPU {}/", smp - 1);
        let tid = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            comm.starts_with(&vcpu).then(|| t.file_name().to_string_lossy().parse::<libc::pid_t>().ok()).flatten()
        });
        let Some(tid) = tid else { return (None, format!("not pinned (no thread named {vcpu}... in QEMU)")) };
        let before = own_cpus();
        if pin(tid, cores - 1) && pin(0, 0) {
            (before, format!("QEMU's vCPU {} thread on host core {}, the ringing thread on core 0", smp - 1, cores - 1))
        } else {
            (None, "not pinned (sched_setaffinity refused)".into())
        }
    }

    /// One reading of the guest's TSC, taken at the midpoint of the quickest
    /// of five round trips: (host instant, TSC, round trip).
    fn tsc_reading(&mut self) -> Result<(Instant, u64, Duration), String> {
        let mut best: Option<(Instant, u64, Duration)> = None;
        for _ in 0..5 {
            let sent = Instant::now();
            let text = self.command("tsc")?;
            let rtt = sent.elapsed();
            let tsc = field(&text, "tsc").and_then(|v| v.parse().ok()).ok_or_else(|| format!("bad tsc reply {text:?}"))?;
            if best.is_none_or(|b| rtt < b.2) {
                best = Some((sent + rtt / 2, tsc, rtt));
            }
        }
        best.ok_or_else(|| "no tsc reading".into())
    }

    /// Calibrates the guest's TSC against the host's clock (once per boot).
    fn clock(&mut self) -> Result<GuestClock, String> {
        if let Some(c) = &self.clock {
            return Ok(c.clone());
        }
        let (t0, c0, rtt0) = self.tsc_reading()?;
        std::thread::sleep(CALIBRATION_WINDOW);
        let (t1, c1, rtt1) = self.tsc_reading()?;
        let window = t1 - t0;
        let ticks = c1.checked_sub(c0).filter(|&t| t > 0).ok_or_else(|| format!("the guest TSC did not advance ({c0} then {c1})"))?;
        let clock = GuestClock { hz: ticks as f64 / window.as_secs_f64(), uncertainty: (rtt0 + rtt1).as_secs_f64() / 2.0 / window.as_secs_f64(), window };
        self.clock = Some(clock.clone());
        Ok(clock)
    }
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn hex(v: &str) -> Option<u64> {
    u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

/// How long QEMU may take to exit once asked.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl Guest for QemuGuest {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn observe(&mut self, shmid: u8, offset: u64, len: u64) -> Result<Observed, String> {
        if len > CHUNK {
            return Err(format!("observe of {len:#x} bytes; at most {CHUNK:#x} per check"));
        }
        let text = self.command(&format!("digest {shmid} {offset:#x} {len:#x}"))?;
        let mut words = text.split_whitespace();
        let digest = words.next().and_then(|d| u64::from_str_radix(d, 16).ok()).ok_or_else(|| format!("bad digest reply {text:?}"))?;
        Ok(Observed::Bytes {
            digest,
            zero: field(&text, "zero") == Some("true"),
            head: field(&text, "head").unwrap_or("").to_string(),
        })
    }

    fn fill(&mut self, shmid: u8, offset: u64, len: u64, seed: u8) -> Result<(), String> {
        self.command(&format!("fill {shmid} {offset:#x} {len:#x} {seed}")).map(|_| ())
    }

    fn reset(&mut self, init: bool) -> Result<(), String> {
        self.command("reset")?;
        if !init {
            return Ok(());
        }
        let status = self.command("init")?;
        match status.as_str() {
            "status=0xf" => Ok(()),
            other => Err(format!("device status after init is {other}, want 0xf")),
        }
    }

    fn region_addr(&self, shmid: u8) -> Result<u64, String> {
        let bar = field(&self.qemu.ready_line, "bar_addr")
            .and_then(hex)
            .ok_or_else(|| format!("the agent's ready line names no BAR address: {:?}", self.qemu.ready_line))?;
        let (_, offset, _) = self.layout()?.into_iter().find(|r| r.0 == shmid).ok_or_else(|| format!("the guest found no capability for region shmid {shmid}"))?;
        Ok(bar + offset)
    }

    /// From the agent's ready line: `regions=SHMID:BAR:OFFSET:LEN,...`.
    fn layout(&self) -> Result<Vec<RegionWindow>, String> {
        let bad = || format!("the agent's ready line has no readable regions: {:?}", self.qemu.ready_line);
        let list = field(&self.qemu.ready_line, "regions").ok_or_else(bad)?;
        let window = |r: &str| -> Option<RegionWindow> {
            let f: Vec<&str> = r.split(':').collect();
            match f.as_slice() {
                [id, _bar, off, len] => Some((id.parse().ok()?, hex(off)?, hex(len)?)),
                _ => None,
            }
        };
        list.split(',').filter(|r| !r.is_empty()).map(|r| window(r).ok_or_else(bad)).collect()
    }

    fn log_mark(&self) -> u64 {
        std::fs::metadata(&self.qemu.stderr_log).map_or(0, |m| m.len())
    }

    fn log_since(&self, mark: u64) -> String {
        let text = std::fs::read(&self.qemu.stderr_log).unwrap_or_default();
        String::from_utf8_lossy(text.get(mark as usize..).unwrap_or_default()).trim().to_string()
    }

    fn holds(&self, file: FileId) -> Result<Vec<String>, String> {
        let pid = self.qemu.pid().ok_or("QEMU is not running")?;
        let mut found = Vec::new();
        let fd_dir = format!("/proc/{pid}/fd");
        for e in std::fs::read_dir(&fd_dir).map_err(|e| format!("{fd_dir}: {e}"))?.flatten() {
            if std::fs::metadata(e.path()).is_ok_and(|m| (m.dev(), m.ino()) == (file.dev, file.ino)) {
                found.push(format!("fd {}", e.file_name().to_string_lossy()));
            }
        }
        let maps_path = format!("/proc/{pid}/maps");
        let maps = std::fs::read_to_string(&maps_path).map_err(|e| format!("{maps_path}: {e}"))?;
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 6 && f[5].starts_with("/memfd:") && f[4].parse::<u64>().ok() == Some(file.ino) {
                found.push(format!("mapping {}", f[0]));
            }
        }
        Ok(found)
    }

    fn gone(&mut self) -> Option<Death> {
        self.qemu.check_running("running the scenario").err()?;
        let exit = self.qemu.exit.map_or_else(|| "ended".to_string(), describe_status);
        Some(Death { exit, said: self.qemu.stderr_tail() })
    }

    fn log_text(&self) -> String {
        let console = std::fs::read_to_string(&self.qemu.console_log).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(10).collect();
        format!("qemu stderr:\n{}\nguest console:\n{}", self.qemu.stderr_tail(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }

    fn bandwidth(&mut self, shmid: u8, len: u64, iterations: u32, rounds: u32) -> Result<CopyRounds, String> {
        let clock = self.clock()?;
        let text = self.command(&format!("bw {shmid} {len:#x} {iterations} {rounds}"))?;
        let ticks = |k: &str| -> Option<Vec<u64>> { field(&text, k)?.split(',').map(|t| t.parse().ok()).collect() };
        let bad = || format!("bad bandwidth reply {text:?}");
        let bytes = field(&text, "bytes").and_then(|b| b.parse().ok()).ok_or_else(bad)?;
        let (shm_ticks, ram_ticks) = ticks("shm_ticks").zip(ticks("ram_ticks")).ok_or_else(bad)?;
        if shm_ticks.iter().chain(&ram_ticks).any(|&t| t == 0) {
            return Err(bad());
        }
        Ok(CopyRounds { clock, bytes, shm_ticks, ram_ticks })
    }

    fn shutdown(&mut self) -> Result<String, Death> {
        let death = |exit: String, qemu: &Qemu| Death { exit, said: qemu.stderr_tail() };
        match self.qemu.stop(!self.hung, SHUTDOWN_TIMEOUT) {
            Ok(status) if status.success() => Ok(describe_status(status)),
            Ok(status) => Err(death(describe_status(status), &self.qemu)),
            Err(e) => Err(death(e, &self.qemu)),
        }
    }

    fn inject(&mut self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::KillQemu => self.qemu.kill_unannounced(),
            Fault::HangAgent => {
                self.hung = true;
                self.seq += 1;
                self.qemu.send_line(&format!("{} hang 600", self.seq))
            }
            Fault::KillBackend => Err("kill-backend is injected by the runner".into()),
        }
    }

    fn ping(&mut self, timeout: Duration) -> Result<(), String> {
        self.qemu.check_running("pinging the guest")?;
        self.command_within("ping", timeout).map(|_| ())
    }

    fn probe_start(&mut self, host: HostMapping, doorbell: (u8, u64), target: (u8, u64)) -> Result<String, String> {
        self.clock()?;
        // The guest announces it spins by answering ring 1 in DONE.
        host.write64(doorbell::DONE, 0);
        host.write64(doorbell::RING, 1);
        self.seq += 1;
        let id = self.seq.to_string();
        self.qemu.send_line(&format!("{id} probe {} {:#x} {} {:#x} 5000", doorbell.0, doorbell.1, target.0, target.1))?;
        let deadline = Instant::now() + PROBE_START_TIMEOUT;
        while host.read64(doorbell::DONE) != 1 {
            if Instant::now() > deadline {
                let said = self.qemu.read_line(Instant::now() + Duration::from_secs(6), "reading why the probe did not start").unwrap_or_default();
                return Err(format!("the guest probe did not start within {PROBE_START_TIMEOUT:?} (the agent said {said:?})"));
            }
            self.qemu.check_running("starting the guest probe")?;
            std::thread::sleep(Duration::from_millis(1));
        }
        let (pinned_from, pinning) = self.pin_apart();
        self.probe = Some(Probe { host, seq: 1, id, pinned_from });
        Ok(format!("{}, {} vCPUs, {pinning}", self.qemu.accel.name(), self.qemu.smp))
    }

    fn probe_ring(&mut self, mode: RingMode) -> Result<ProbeReads, String> {
        let hz = self.clock.as_ref().map(|c| c.hz).ok_or("the guest clock is not calibrated")?;
        let p = self.probe.as_mut().ok_or("no probe under way")?;
        p.seq += 1;
        let (m, marker) = match mode {
            RingMode::Read => (0, 0),
            RingMode::Write(v) => (1, v),
        };
        p.host.write64(doorbell::MODE, m);
        p.host.write64(doorbell::MARKER, marker);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        p.host.write64(doorbell::RING, p.seq);
        // The guest reads the moment it sees the ring. This thread spins
        // briefly for its answer, then sleeps between looks: the guest
        // usually answers only once QEMU has committed (about a millisecond),
        // and a thread spinning all that time held a core QEMU's main loop
        // needed: QEMU 11.1.3 then showed its stale states 3 to 10 times less
        // often, and the probe took twice as long.
        let start = Instant::now();
        let mut spins = 0u32;
        while p.host.read64(doorbell::DONE) != p.seq {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) {
                let waited = start.elapsed();
                if waited > RING_TIMEOUT {
                    return Err(format!("the guest did not answer ring {} within {RING_TIMEOUT:?}", p.seq));
                }
                if waited > RING_SPIN {
                    std::thread::sleep(RING_POLL);
                }
            }
            std::hint::spin_loop();
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let mut reads = ProbeReads::default();
        for i in 0..doorbell::READ_COUNT {
            reads.values[i] = Some(p.host.read64(doorbell::READS + 16 * i));
            reads.micros[i] = Some(p.host.read64(doorbell::READS + 16 * i + 8) as f64 / hz * 1e6);
        }
        Ok(reads)
    }

    fn probe_stop(&mut self) -> Result<(), String> {
        let p = self.probe.take().ok_or("no probe under way")?;
        if let Some(set) = p.pinned_from {
            // SAFETY: restoring the set sched_getaffinity gave us.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        }
        p.host.write64(doorbell::RING, doorbell::STOP);
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let line = self.qemu.read_line(deadline, "waiting for the guest probe to end")?;
            let Some(rest) = line.strip_prefix(&format!("{} ", p.id)) else { continue };
            return match rest.split_once(' ').unwrap_or((rest, "")) {
                ("ok", _) => Ok(()),
                (_, text) => Err(format!("the guest probe ended with {text:?}")),
            };
        }
    }
}

/// The reference model as a guest.
pub struct ModelGuest {
    pub model: ModelFrontend,
    /// The probe's target while a probe is under way.
    pub probe_target: Option<(u8, u64)>,
}

const SYNC: Duration = Duration::from_secs(5);

impl Guest for ModelGuest {
    fn kind(&self) -> &'static str {
        "model"
    }

    fn observe(&mut self, shmid: u8, offset: u64, len: u64) -> Result<Observed, String> {
        self.model.sync(SYNC).map_err(|e| e.to_string())?;
        match self.model.read(shmid, offset, len).map_err(|e| e.to_string())? {
            Ok(data) => Ok(Observed::of(&data)),
            Err(_) => Ok(Observed::Inaccessible),
        }
    }

    fn fill(&mut self, shmid: u8, offset: u64, len: u64, seed: u8) -> Result<(), String> {
        self.model.sync(SYNC).map_err(|e| e.to_string())?;
        let data: Vec<u8> = (0..len).map(|i| pattern_byte(seed, i)).collect();
        // A refused write (Err(Access)) is what a read-only mapping should do.
        self.model.write(shmid, offset, &data).map(|_| ()).map_err(|e| e.to_string())
    }

    fn reset(&mut self, init: bool) -> Result<(), String> {
        self.model.reset().map_err(|e| e.to_string())?;
        if init { self.model.start().map_err(|e| e.to_string()) } else { Ok(()) }
    }

    fn region_addr(&self, shmid: u8) -> Result<u64, String> {
        let (_, offset, _) = self.layout()?.into_iter().find(|r| r.0 == shmid).ok_or_else(|| format!("the model has no region shmid {shmid}"))?;
        Ok(MODEL_BAR_BASE + offset)
    }

    /// The regions GET_SHMEM_CONFIG gave the model, packed by shmid as QEMU packs them.
    fn layout(&self) -> Result<Vec<RegionWindow>, String> {
        let mut offset = 0;
        let mut out = Vec::new();
        for (id, size) in self.model.region_sizes().into_iter().enumerate() {
            if size != 0 {
                out.push((id as u8, offset, size));
                offset += size;
            }
        }
        Ok(out)
    }

    fn log_mark(&self) -> u64 {
        self.model.served_count() as u64
    }

    /// Rejection reasons, and failures to apply an acked request.
    fn log_since(&self, mark: u64) -> String {
        let mut said = Vec::new();
        for s in self.model.served_since(mark as usize) {
            if let Err(r) = s.result {
                said.push(r.reason.to_string());
            }
            if let Some(e) = s.apply_error {
                said.push(format!("after the ack: {e}"));
            }
        }
        said.join("\n")
    }

    fn holds(&self, file: FileId) -> Result<Vec<String>, String> {
        Ok(self.model.held_files().into_iter().filter(|f| *f == file).map(|_| "fd (model)".to_string()).collect())
    }

    fn gone(&mut self) -> Option<Death> {
        self.model.death().map(|exit| Death { exit, said: self.log_text() })
    }

    fn log_text(&self) -> String {
        self.log_since(0)
    }

    fn bandwidth(&mut self, _shmid: u8, _len: u64, _iterations: u32, _rounds: u32) -> Result<CopyRounds, String> {
        Err("the model has no guest CPU to measure".into())
    }

    fn shutdown(&mut self) -> Result<String, Death> {
        match self.model.shut_down(SHUTDOWN_TIMEOUT) {
            Ok(()) => Ok("status 0".into()),
            Err(exit) => Err(Death { exit, said: self.log_text() }),
        }
    }

    fn inject(&mut self, fault: Fault) -> Result<(), String> {
        Err(format!("{fault:?} is not injected into the model (fault scenarios are QEMU-only)"))
    }

    /// The model's guest side needs no doorbell: it reads the region at once.
    fn probe_start(&mut self, _host: HostMapping, _doorbell: (u8, u64), target: (u8, u64)) -> Result<String, String> {
        self.probe_target = Some(target);
        Ok("the model reads in the ringing thread, right after the ack".into())
    }

    /// Reads (and first writes) the target at once, without waiting for
    /// anything the model has still to apply: what a guest vCPU would see.
    fn probe_ring(&mut self, mode: RingMode) -> Result<ProbeReads, String> {
        let (shmid, off) = self.probe_target.ok_or("no probe under way")?;
        if let RingMode::Write(v) = mode {
            // A refused write (a hole, read-only) is what the guest would see too.
            let _ = self.model.write(shmid, off, &v.to_le_bytes()).map_err(|e| e.to_string())?;
        }
        let mut reads = ProbeReads::default();
        for v in &mut reads.values {
            *v = self.model.read(shmid, off, 8).map_err(|e| e.to_string())?.ok().map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        }
        Ok(reads)
    }

    fn probe_stop(&mut self) -> Result<(), String> {
        self.probe_target.take().map(|_| ()).ok_or_else(|| "no probe under way".into())
    }

    /// Alive when it has not died and applies what it acked in time.
    fn ping(&mut self, timeout: Duration) -> Result<(), String> {
        if let Some(d) = self.model.death() {
            return Err(format!("the model died: {d}"));
        }
        self.model.sync(timeout).map_err(|e| e.to_string())
    }
}
