//! Media scenarios: QEMU's `vhost-user-test-device-pci` with two queues
//! against the virtio-media backend under test (a process of its own), the
//! guest agent as the device's driver; then the same session on the model
//! frontend. Records what each side saw (`conformance::session`); the judge
//! decides (`shmem_judge::backend` for the session's checks,
//! `shmem_judge::verdict` against the lists). Must not judge.

use std::path::Path;
use std::time::Instant;

use shmem_virtio_media::driver::MediaError;
use shmem_virtio_media::proto::{BufferInfo, Event};
use shmem_virtio_media::wire as agent_wire;

use super::boot::{ready_timeout, shutdown_check};
use super::config::SuiteConfig;
use super::guest::{Guest, GuestError, QemuGuest};
use super::own_run::{OwnBootRun, finish_relay, leak_checked};
use super::qemu::{Accel, BootConfig, BootFailure, Qemu};
use super::scenario::MediaScenario;
use super::steps::target::held_after_release;
use crate::backend::FileId;
use crate::conformance::port::MediaPort;
use crate::conformance::process::BackendProcess;
use crate::conformance::session::{self, Settings};
use crate::relay::{Relay, RelayFaults};
use shmem_judge::backend::record::{FrameSeen, HeldAtEnd};
use shmem_judge::backend::wire::{self, WireRecord};
use shmem_judge::check::CheckResult;
use shmem_judge::outcome::{ErrorKind, Failure, RunOutcome};

use crate::conformance::{BackendUnderTest, Variant};

/// virtio-media's queues: commands and events.
const MEDIA_QUEUES: u16 = 2;

/// The driver's steps carried out by the guest agent (`media-*` commands).
struct AgentPort<'a> {
    guest: &'a mut QemuGuest,
}

impl AgentPort<'_> {
    /// One agent command; the agent's driver errors read back as they were.
    fn ask(&mut self, cmd: &str) -> Result<String, MediaError> {
        self.guest.command(cmd).map_err(|e| match e {
            GuestError::AgentRefused { text, .. } => agent_wire::error_parse(&text),
            e if e.kind() == ErrorKind::Timeout => MediaError::Timeout(format!("`{cmd}`: {e}")),
            e => MediaError::Malformed(format!("`{cmd}`: {e}")),
        })
    }

    fn field(&mut self, cmd: &str, key: &str) -> Result<String, MediaError> {
        let text = self.ask(cmd)?;
        super::guest::agent::field(&text, key)
            .map(str::to_string)
            .ok_or_else(|| MediaError::Malformed(format!("`{cmd}` answered {text:?}, no {key}=")))
    }
}

impl MediaPort for AgentPort<'_> {
    fn open(&mut self) -> Result<u32, MediaError> {
        let v = self.field("media-open", "session")?;
        v.parse().map_err(|_| MediaError::Malformed(format!("OPEN: session {v:?}")))
    }
    fn setup_capture(&mut self, count: u32) -> Result<Vec<BufferInfo>, MediaError> {
        let v = self.field(&format!("media-setup {count}"), "buffers")?;
        v.split(',')
            .filter(|b| !b.is_empty())
            .map(|b| agent_wire::buffer_parse(b).ok_or_else(|| MediaError::Malformed(format!("QUERYBUF: {b:?}"))))
            .collect()
    }
    fn mmap(&mut self, offset: u32, rw: bool) -> Result<(u64, u64), MediaError> {
        let cmd = format!("media-mmap {offset:#x} {}", if rw { "rw" } else { "ro" });
        let text = self.ask(&cmd)?;
        let num = |k: &str| super::guest::agent::field(&text, k).and_then(super::guest::agent::hex);
        num("addr").zip(num("len")).ok_or_else(|| MediaError::Malformed(format!("`{cmd}` answered {text:?}")))
    }
    fn munmap(&mut self, addr: u64) -> Result<(), MediaError> {
        self.ask(&format!("media-munmap {addr:#x}")).map(|_| ())
    }
    fn qbuf(&mut self, index: u32) -> Result<(), MediaError> {
        self.ask(&format!("media-qbuf {index}")).map(|_| ())
    }
    fn stream(&mut self, on: bool) -> Result<(), MediaError> {
        self.ask(if on { "media-stream on" } else { "media-stream off" }).map(|_| ())
    }
    fn close(&mut self) -> Result<(), MediaError> {
        self.ask("media-close").map(|_| ())
    }
    fn next_event(&mut self) -> Result<Event, MediaError> {
        let v = self.field("media-event", "event")?;
        agent_wire::event_parse(&v).ok_or_else(|| MediaError::Malformed(format!("event {v:?}")))
    }
    fn churn(&mut self, offset: u32, cycles: usize, time: std::time::Duration) -> Result<usize, (usize, MediaError)> {
        // The loop runs in the guest (no serial round trip between commands); the answer comes at its end.
        let cmd = format!("media-churn {offset:#x} {cycles} {}", time.as_secs());
        let text = self
            .guest
            .command_within(&cmd, time + CHURN_SLACK)
            .map_err(|e| (0, MediaError::Timeout(format!("`{cmd}`: {e}"))))?;
        let done = super::guest::agent::field(&text, "done")
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| (0, MediaError::Malformed(format!("`{cmd}` answered {text:?}"))))?;
        match text.split_once("error=") {
            Some((_, e)) => Err((done, agent_wire::error_parse(e.trim()))),
            None => Ok(done),
        }
    }
    fn reset(&mut self) -> Result<(), MediaError> {
        self.ask("reset")?;
        self.ask("media-up").map(|_| ())
    }
    fn see_frame(&mut self, addr: u64, b: BufferInfo) -> FrameSeen {
        let mut f =
            FrameSeen { index: b.index, sequence: b.sequence, shm_offset: addr, mismatch: None, unreadable: None };
        match self
            .ask(&format!("media-frame {addr:#x} {}", b.sequence))
            .map(|t| super::guest::agent::field(&t, "mismatch").map(str::to_string))
        {
            Ok(Some(m)) if m == "none" => {}
            Ok(Some(m)) => match m.split(':').map(str::parse).collect::<Result<Vec<usize>, _>>().as_deref() {
                Ok([at, want, got]) => f.mismatch = Some((*at, *want as u8, *got as u8)),
                _ => f.unreadable = Some(format!("unreadable mismatch {m:?}")),
            },
            Ok(None) => f.unreadable = Some("the agent's answer has no mismatch=".into()),
            Err(e) => f.unreadable = Some(e.to_string()),
        }
        f
    }
}

/// The session's settings from the scenario's `[media]` table.
fn settings(m: &MediaScenario) -> Settings {
    Settings { buffers: m.buffers, frames: m.frames, churn_time: CHURN_TIME, ..Settings::default() }
}

/// One driver wait on the model half: the backend answers the model over
/// a local socket (seen: whole model sessions of 20 to 30 driver steps in
/// 0.02 to 0.09 s under the suite's load), so 2 s without an answer is a
/// hang, not a slow answer; behind QEMU each wait is the agent's.
const MODEL_ANSWER: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a churn behind QEMU may go on.
const CHURN_TIME: std::time::Duration = std::time::Duration::from_secs(60);
/// How much longer than its time bound the host waits for a churn's answer:
/// a command the agent still waits for (10 s) and the serial port.
const CHURN_SLACK: std::time::Duration = std::time::Duration::from_secs(20);

/// The session a `[media]` table asks for: a capture, a churn, a refused
/// map, held acks, a reset or a closed channel mid-stream.
fn variant(m: &MediaScenario) -> Variant {
    match (m.churn, m.refuse_map, m.ack_delay_ms) {
        (Some(n), _, _) => Variant::Churn(n),
        (_, Some(k), _) => Variant::RefuseMap(k),
        (_, _, Some(ms)) => Variant::AckDelay(ms),
        _ if m.reset_mid_stream => Variant::ResetMidStream,
        _ if m.close_channel => Variant::CloseChannel,
        _ => Variant::Stream,
    }
}

/// What the relay does in QEMU's place for the session's fault.
fn relay_faults(variant: Variant) -> RelayFaults {
    match variant {
        Variant::RefuseMap(k) => RelayFaults { refuse_map_number: Some(k), ..RelayFaults::default() },
        Variant::AckDelay(ms) => {
            RelayFaults { ack_delay: Some(std::time::Duration::from_millis(ms)), ..RelayFaults::default() }
        }
        _ => RelayFaults::default(),
    }
}

/// Both halves of a media scenario: QEMU with the agent as driver, then the model.
pub fn conformance_boot_run(
    cfg: &SuiteConfig,
    m: &MediaScenario,
    accel: Accel,
    dir: &Path,
    sockets: &Path,
) -> OwnBootRun {
    let backend = match cfg.media_backend(m.build) {
        Ok(b) => b,
        Err(why) => {
            return OwnBootRun::failed(
                ErrorKind::BadInput,
                format!("a media scenario needs the virtio-media backend under test, and there is none: {why}"),
            );
        }
    };
    let s = settings(m);
    let start = Instant::now();
    let (qemu, (qemu_log, boot_secs, qemu_wire)) =
        leak_checked(dir, sockets, || qemu_half(cfg, backend, m, accel, dir, sockets, &s));
    let qemu_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let model_dir = dir.join("model");
    let (model, ()) = leak_checked(dir, sockets, || {
        let made = std::fs::create_dir_all(&model_dir)
            .map_err(|e| Failure { kind: ErrorKind::Io, message: format!("create {}: {e}", model_dir.display()) });
        let on_model = Settings { answer: MODEL_ANSWER, ..s };
        (
            made.map(|()| {
                shmem_judge::backend::judge(&session::run_media(&backend.command, variant(m), &model_dir, &on_model))
            }),
            (),
        )
    });
    OwnBootRun { qemu, qemu_secs, model, model_secs: start.elapsed().as_secs_f64(), qemu_log, boot_secs, qemu_wire }
}

/// What QEMU's half leaves beside its outcome: QEMU's logs (the relay's
/// tail after them), the boot time, and the relay's record.
type QemuSide = (String, Option<f64>, Option<WireRecord>);

/// QEMU against a fresh backend process through the recording relay, the
/// agent's session, QEMU's clean shutdown; the checks, and what QEMU's side left.
fn qemu_half(
    cfg: &SuiteConfig,
    backend: &BackendUnderTest,
    m: &MediaScenario,
    accel: Accel,
    dir: &Path,
    sockets: &Path,
    s: &Settings,
) -> (RunOutcome, QemuSide) {
    let fail = |kind, message: String| (Err(Failure { kind, message }), (String::new(), None, None));
    let socks = match tempfile::Builder::new().prefix("media-").tempdir_in(sockets) {
        Ok(d) => d,
        Err(e) => return fail(ErrorKind::Io, format!("socket dir under {}: {e}", sockets.display())),
    };
    let socket = socks.path().join("backend.sock");
    let mut proc = match BackendProcess::start(&backend.command, &socket, dir, s.start) {
        Ok(p) => p,
        Err(e) => return fail(ErrorKind::Dead, format!("starting the backend under test: {e}")),
    };
    let relay = match Relay::start_faulty(&socks.path().join("relay.sock"), &socket, relay_faults(variant(m))) {
        Ok(r) => r,
        Err(e) => return fail(ErrorKind::Io, format!("starting the recording relay: {e}")),
    };
    let boot = BootConfig {
        qemu: cfg.qemu.path.clone(),
        kernel: cfg.kernel.clone(),
        initramfs: cfg.initramfs.clone(),
        accel,
        vhost_socket: relay.socket_path().to_path_buf(),
        virtio_id: m.virtio_id,
        num_vqs: MEDIA_QUEUES,
        log_dir: dir.to_path_buf(),
        agent_socket: socks.path().join("agent.sock"),
        ready_timeout: ready_timeout(accel),
        smp: 1,
    };
    let (outcome, mut log, boot_secs) = boot_and_session(&boot, &mut proc, &relay, variant(m), s);
    let wire = finish_relay(relay, &mut log);
    (outcome, (log, boot_secs, Some(wire)))
}

/// QEMU booted against `boot`, the agent's session, QEMU's clean shutdown:
/// the checks, QEMU's logs, and the boot time.
fn boot_and_session(
    boot: &BootConfig,
    proc: &mut BackendProcess,
    relay: &Relay,
    variant: Variant,
    s: &Settings,
) -> (RunOutcome, String, Option<f64>) {
    let mut guest = match Qemu::boot(boot) {
        Ok(q) => QemuGuest::new(q),
        Err(BootFailure::Died { exit, said }) => {
            let death = super::guest::Death { exit, said };
            return (Ok(vec![death.check("boot")]), death.said, None);
        }
        Err(BootFailure::Other(e)) => {
            return (Err(Failure { kind: e.kind(), message: format!("booting QEMU: {e}") }), String::new(), None);
        }
    };
    let boot_secs = Some(guest.qemu.boot_time.as_secs_f64());
    if !guest.ready().has_device() {
        return (
            Err(Failure {
                kind: ErrorKind::Protocol,
                message: format!("the guest agent found no device: {}", guest.qemu.ready_line),
            }),
            guest.log_text(),
            boot_secs,
        );
    }
    let mut checks = session_checks(&mut guest, proc, relay, variant, s);
    // What QEMU said is the reason a driver step failed (a refused SHMEM_MAP is only on its stderr).
    let said = shmem_judge::check::said_fact(&guest.qemu.stderr_tail());
    for c in checks.iter_mut().filter(|c| c.check == "driver-steps" && !c.passed) {
        *c = c.clone().with("said", said.as_str());
    }
    match guest.gone() {
        Some(death) => checks.push(death.check("media session")),
        None => checks.push(shutdown_check(&mut guest)),
    }
    (Ok(checks), guest.log_text(), boot_secs)
}

/// `media-up` (queues, DRIVER_OK), then the session through the agent; the
/// frontend's side of it read from the relay's record (what the backend
/// offered and asked, what QEMU answered, which of the mapped files QEMU
/// still holds), judged as the model's session is, and the wire order.
fn session_checks(
    guest: &mut QemuGuest,
    proc: &mut BackendProcess,
    relay: &Relay,
    variant: Variant,
    s: &Settings,
) -> Vec<CheckResult> {
    let mut port = AgentPort { guest };
    let up = port.ask("media-up");
    let mut rec = session::run_port(&mut port, up, proc, relay, variant, s);
    rec.dead = proc.gone();
    let msgs = relay.record();
    wire::read_session(&msgs, &mut rec);
    // Only judged when the session reached its end: else no wait for QEMU to let go.
    if shmem_judge::backend::reached_its_end(&rec) {
        rec.live_at_end = still_held(guest, &wire::files_mapped(&msgs));
    }
    rec.wire_lags = Some(wire::lags(&msgs));
    shmem_judge::backend::judge(&rec)
}

/// How many of `files` QEMU still holds (an fd or a mapping, from
/// `/proc/PID`), once it has had the release timeout to let them go: QEMU
/// may drop a region's file a little after its reply (seen: one of the
/// churn's, in some runs, right after CLOSE); why, when `/proc` could not
/// be read.
fn still_held(guest: &QemuGuest, files: &[(u64, u64)]) -> HeldAtEnd {
    let ids: Vec<FileId> = files.iter().map(|&(dev, ino)| FileId { dev, ino }).collect();
    held_after_release(guest, &ids)
        .map_or_else(|e| HeldAtEnd::Unread(format!("QEMU's /proc: {e}")), |h| HeldAtEnd::Read(h.len()))
}
