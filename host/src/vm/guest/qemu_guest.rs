//! The QEMU guest: each question becomes an agent command on the serial
//! port (or, for the doorbell probe, words in shared memory); what QEMU
//! holds is read from `/proc/PID`. Asks and reports; never judges.

use std::time::{Duration, Instant};

use super::agent::{self, ReadyLine};
use super::clock::{self, CopyRounds, GuestClock};
use super::pinning::{self, Pinned};
use super::{COMMAND_TIMEOUT, Death, Guest, GuestError, Observed, ProbeReads, RegionWindow, RingMode, region_addr_in};
use crate::backend::FileId;
use crate::files::HostMapping;
use crate::vm::qemu::{Qemu, QemuError, describe_status};
use crate::vm::scenario::Fault;
use shmem_pattern::doorbell;

/// Largest chunk the agent digests or fills per command.
const CHUNK: u64 = 1 << 20;
/// How long QEMU may take to exit once asked.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest may take to start spinning on the doorbell.
const PROBE_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest probe spins without a ring before it gives up: longer
/// than the backend's watchdog (`channel::ACK_TIMEOUT`), so a request the
/// frontend never acks is named by the watchdog, not by the guest leaving.
const PROBE_IDLE: Duration = Duration::from_secs(15);
/// How long a ring may wait for the guest's answer.
const RING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the host spins for the guest's answer to a ring before it
/// sleeps `RING_POLL` between looks.
const RING_SPIN: Duration = Duration::from_micros(100);
const RING_POLL: Duration = Duration::from_micros(20);

/// A QEMU guest driven through the agent.
pub struct QemuGuest {
    pub qemu: Qemu,
    seq: u64,
    /// The guest's TSC, once calibrated.
    clock: Option<GuestClock>,
    /// How many calibrations were dropped (`forget_clock`): the next one takes a longer window.
    recalibrations: u32,
    /// The doorbell probe under way.
    probe: Option<Probe>,
    /// The agent was told to stop answering (fault injection).
    hung: bool,
}

/// The doorbell probe under way on a QEMU guest.
struct Probe {
    host: HostMapping,
    /// The last ring.
    seq: u64,
    /// The serial command id of the guest's `probe`, answered at the end.
    id: String,
    /// The ringing thread's pinning, undone when the probe ends.
    _pinned: Pinned,
}

impl QemuGuest {
    pub fn new(qemu: Qemu) -> Self {
        QemuGuest { qemu, seq: 0, clock: None, recalibrations: 0, probe: None, hung: false }
    }

    /// What the agent's ready line says.
    pub fn ready(&self) -> ReadyLine<'_> {
        ReadyLine(&self.qemu.ready_line)
    }

    /// Sends one command and returns the text after `ok`.
    pub fn command(&mut self, cmd: &str) -> Result<String, GuestError> {
        self.command_within(cmd, COMMAND_TIMEOUT)
    }

    /// As [`Self::command`], waiting up to `timeout` for the answer.
    pub fn command_within(&mut self, cmd: &str, timeout: Duration) -> Result<String, GuestError> {
        self.seq += 1;
        let id = self.seq.to_string();
        self.qemu.send_line(&format!("{id} {cmd}"))?;
        self.await_answer(&id, cmd, Instant::now() + timeout)
    }

    /// Reads lines until the answer to command `id`.
    fn await_answer(&mut self, id: &str, cmd: &str, deadline: Instant) -> Result<String, GuestError> {
        loop {
            let line = self.qemu.read_line(deadline, &format!("waiting for the agent's answer to `{cmd}`"))?;
            if let Some(a) = agent::answer(id, &line) {
                return a.map(str::to_string).map_err(|r| r.into_error(cmd));
            }
        }
    }

    /// The guest's TSC, calibrated against the host's clock once per boot.
    fn clock(&mut self) -> Result<GuestClock, GuestError> {
        if let Some(c) = &self.clock {
            return Ok(c.clone());
        }
        // Each calibration dropped doubles the next one's window (at most 8 times 300 ms).
        let window = clock::CALIBRATION_WINDOW * (1 << self.recalibrations.min(3));
        let clock = clock::calibrate(
            &mut || {
                let text = self.command("tsc")?;
                agent::field(&text, "tsc")
                    .and_then(|v| v.parse().ok())
                    .ok_or(GuestError::BadAnswer { what: "bad tsc reply".into(), text })
            },
            window,
        )?;
        self.clock = Some(clock.clone());
        Ok(clock)
    }

    /// Waits until the guest answers ring `seq` in the doorbell page.
    fn await_ring(host: &HostMapping, seq: u64) -> Result<(), GuestError> {
        // The guest reads the moment it sees the ring. This thread spins
        // briefly for its answer, then sleeps between looks: the guest
        // usually answers only once QEMU has committed (about a millisecond),
        // and a thread spinning all that time held a core QEMU's main loop
        // needed: QEMU 11.1.3 then showed its stale states 3 to 10 times less
        // often, and the probe took twice as long.
        let start = Instant::now();
        let mut spins = 0u32;
        while host.read64(doorbell::DONE) != seq {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) {
                let waited = start.elapsed();
                if waited > RING_TIMEOUT {
                    return Err(GuestError::Timeout {
                        what: format!("the guest did not answer ring {seq}"),
                        after: RING_TIMEOUT,
                    });
                }
                if waited > RING_SPIN {
                    std::thread::sleep(RING_POLL);
                }
            }
            std::hint::spin_loop();
        }
        Ok(())
    }
}

impl Guest for QemuGuest {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn observe(&mut self, shmid: u8, offset: u64, len: u64) -> Result<Observed, GuestError> {
        if len > CHUNK {
            return Err(GuestError::BadRequest(format!("observe of {len:#x} bytes; at most {CHUNK:#x} per check")));
        }
        let text = self.command(&format!("digest {shmid} {offset:#x} {len:#x}"))?;
        let digest = text.split_whitespace().next().and_then(|d| u64::from_str_radix(d, 16).ok());
        let digest =
            digest.ok_or_else(|| GuestError::BadAnswer { what: "bad digest reply".into(), text: text.clone() })?;
        Ok(Observed::Bytes {
            digest,
            zero: agent::field(&text, "zero") == Some("true"),
            head: agent::field(&text, "head").unwrap_or("").to_string(),
        })
    }

    fn fill(&mut self, shmid: u8, offset: u64, len: u64, seed: u8) -> Result<(), GuestError> {
        self.command(&format!("fill {shmid} {offset:#x} {len:#x} {seed}")).map(|_| ())
    }

    fn reset(&mut self, init: bool) -> Result<(), GuestError> {
        self.command("reset")?;
        if !init {
            return Ok(());
        }
        match self.command("init")?.as_str() {
            "status=0xf" => Ok(()),
            other => Err(GuestError::BadAnswer {
                what: "device status after init is not 0xf".into(),
                text: other.to_string(),
            }),
        }
    }

    fn region_addr(&self, shmid: u8) -> Result<u64, GuestError> {
        region_addr_in(self.ready().bar_addr()?, &self.layout()?, shmid)
    }

    /// From the agent's ready line.
    fn layout(&self) -> Result<Vec<RegionWindow>, GuestError> {
        self.ready().regions()
    }

    fn log_mark(&self) -> u64 {
        std::fs::metadata(&self.qemu.stderr_log).map_or(0, |m| m.len())
    }

    fn log_since(&self, mark: u64) -> String {
        let text = std::fs::read(&self.qemu.stderr_log).unwrap_or_default();
        String::from_utf8_lossy(text.get(mark as usize..).unwrap_or_default()).trim().to_string()
    }

    /// What QEMU holds of `file`, in every process of its tree (a wrapper
    /// that does not `exec` holds nothing of it; the QEMU under it does).
    fn holds(&self, file: FileId) -> Result<Vec<String>, GuestError> {
        let pid =
            self.qemu.pid().ok_or_else(|| QemuError::NotRunning { during: "looking at what QEMU holds".into() })?;
        let found = crate::spawn::holding(pid, (file.dev, file.ino))
            .map_err(|source| QemuError::Io { what: format!("what QEMU's processes (from {pid}) hold"), source })?;
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
        format!(
            "qemu stderr:\n{}\nguest console:\n{}",
            self.qemu.stderr_tail(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    fn bandwidth(&mut self, shmid: u8, len: u64, iterations: u32, rounds: u32) -> Result<CopyRounds, GuestError> {
        let clock = self.clock()?;
        let text = self.command(&format!("bw {shmid} {len:#x} {iterations} {rounds}"))?;
        let ticks =
            |k: &str| -> Option<Vec<u64>> { agent::field(&text, k)?.split(',').map(|t| t.parse().ok()).collect() };
        let bad = || GuestError::BadAnswer { what: "bad bandwidth reply".into(), text: text.clone() };
        let bytes = agent::field(&text, "bytes").and_then(|b| b.parse().ok()).ok_or_else(bad)?;
        let (shm_ticks, ram_ticks) = ticks("shm_ticks").zip(ticks("ram_ticks")).ok_or_else(bad)?;
        if shm_ticks.iter().chain(&ram_ticks).any(|&t| t == 0) {
            return Err(bad());
        }
        Ok(CopyRounds { clock, bytes, shm_ticks, ram_ticks })
    }

    fn forget_clock(&mut self) {
        self.clock = None;
        self.recalibrations += 1;
    }

    fn shutdown(&mut self) -> Result<String, Death> {
        let death = |exit: String, qemu: &Qemu| Death { exit, said: qemu.stderr_tail() };
        match self.qemu.stop(!self.hung, SHUTDOWN_TIMEOUT) {
            Ok(status) if status.success() => Ok(describe_status(status)),
            Ok(status) => Err(death(describe_status(status), &self.qemu)),
            Err(e) => Err(death(e.to_string(), &self.qemu)),
        }
    }

    fn inject(&mut self, fault: Fault) -> Result<(), GuestError> {
        match fault {
            Fault::KillQemu => Ok(self.qemu.kill_unannounced()?),
            Fault::HangAgent => {
                self.hung = true;
                self.seq += 1;
                Ok(self.qemu.send_line(&format!("{} hang 600", self.seq))?)
            }
            Fault::KillBackend => Err(GuestError::BadRequest("kill-backend is injected by the runner".into())),
        }
    }

    /// The agent answers a ping.
    fn sign_of_life(&mut self, timeout: Duration) -> Result<(), GuestError> {
        self.qemu.check_running("pinging the guest")?;
        self.command_within("ping", timeout).map(|_| ())
    }

    fn probe_start(&mut self, host: HostMapping, doorbell: (u8, u64), target: (u8, u64)) -> Result<String, GuestError> {
        self.clock()?;
        // The guest announces it spins by answering ring 1 in DONE.
        host.write64(doorbell::DONE, 0);
        host.write64(doorbell::RING, 1);
        self.seq += 1;
        let id = self.seq.to_string();
        self.qemu.send_line(&format!(
            "{id} probe {} {:#x} {} {:#x} {}",
            doorbell.0,
            doorbell.1,
            target.0,
            target.1,
            PROBE_IDLE.as_millis()
        ))?;
        let deadline = Instant::now() + PROBE_START_TIMEOUT;
        while host.read64(doorbell::DONE) != 1 {
            if Instant::now() > deadline {
                let said = self
                    .qemu
                    .read_line(Instant::now() + Duration::from_secs(6), "reading why the probe did not start")
                    .unwrap_or_default();
                return Err(GuestError::Timeout {
                    what: format!("the guest probe did not start (the agent said {said:?})"),
                    after: PROBE_START_TIMEOUT,
                });
            }
            self.qemu.check_running("starting the guest probe")?;
            std::thread::sleep(Duration::from_millis(1));
        }
        let (pinned, pinning) = pinning::pin_apart(self.qemu.qemu_pid(), self.qemu.smp);
        self.probe = Some(Probe { host, seq: 1, id, _pinned: pinned });
        Ok(format!("{}, {} vCPUs, {pinning}", self.qemu.accel.name(), self.qemu.smp))
    }

    fn probe_ring(&mut self, mode: RingMode) -> Result<ProbeReads, GuestError> {
        let hz = self
            .clock
            .as_ref()
            .map(|c| c.hz)
            .ok_or_else(|| GuestError::BadRequest("the guest clock is not calibrated".into()))?;
        let p = self.probe.as_mut().ok_or_else(|| GuestError::BadRequest("no probe under way".into()))?;
        p.seq += 1;
        let (m, marker) = match mode {
            RingMode::Read => (0, 0),
            RingMode::Write(v) => (1, v),
        };
        p.host.write64(doorbell::MODE, m);
        p.host.write64(doorbell::MARKER, marker);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        p.host.write64(doorbell::RING, p.seq);
        Self::await_ring(&p.host, p.seq)?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let mut reads = ProbeReads::default();
        for i in 0..doorbell::READ_COUNT {
            reads.values[i] = Some(p.host.read64(doorbell::READS + 16 * i));
            reads.micros[i] = Some(p.host.read64(doorbell::READS + 16 * i + 8) as f64 / hz * 1e6);
        }
        Ok(reads)
    }

    /// Unpins the ringing thread (the probe's guard), tells the guest to
    /// stop, and reads its answer to the `probe` command. No probe: nothing to do.
    fn probe_stop(&mut self) -> Result<(), GuestError> {
        let Some(p) = self.probe.take() else { return Ok(()) };
        let Probe { host, id, _pinned: pinned, .. } = p;
        drop(pinned);
        host.write64(doorbell::RING, doorbell::STOP);
        self.await_answer(&id, "probe", Instant::now() + COMMAND_TIMEOUT).map(|_| ())
    }
}
