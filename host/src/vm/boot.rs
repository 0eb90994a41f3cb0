//! Booting a target: a QEMU with the test device against a fresh backend
//! (with KVM-to-TCG fallback), or the reference model behind its own
//! backend; and the checks every boot makes of itself (`layout-matches-spec`
//! at boot, `clean-shutdown` at the end). Records checks; judges nothing.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::accel::AccelPlan;
use super::guest::{Death, Guest, GuestError, ModelGuest, QemuGuest, RegionWindow};
use super::interrupted;
use super::qemu::{Accel, BootConfig, BootFailure, Qemu, QemuError, QemuInfo};
use super::steps::target::Target;
use crate::backend::Recorder;
use crate::channel::{Held, ReplyHold};
use crate::manager::MappingManager;
use crate::model::{Faults, ModelFrontend};
use crate::relay::Relay;
use crate::server::BackendServer;
use crate::spec::DeviceSpec;
use shmem_judge::check::{CheckResult, FRONTEND_SURVIVES, said_fact};
use shmem_judge::outcome::ErrorKind;

const READY_TCG: Duration = Duration::from_secs(120);
/// A KVM guest reaches its agent in about a second; past this, fall back to TCG.
const READY_KVM: Duration = Duration::from_secs(10);

/// How long a boot under `accel` may take to reach the agent.
pub fn ready_timeout(accel: Accel) -> Duration {
    if accel == Accel::Kvm { READY_KVM } else { READY_TCG }
}
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a target could not be booted: QEMU died (a verdict) or something
/// else went wrong (an error).
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("QEMU died while booting ({0})")]
    Died(Death),
    #[error(transparent)]
    Qemu(QemuError),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: io::Error },
    #[error("initialising the device: {0}")]
    Init(GuestError),
    #[error("the guest agent cannot use the test device: {0}")]
    NoDevice(String),
    #[error("{accel} boot failed: {source}")]
    Accel { accel: &'static str, source: Box<BootError> },
    #[error(transparent)]
    Emulation(#[from] UnknownEmulation),
}

impl BootError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BootError::Died(_) => ErrorKind::Dead,
            BootError::Qemu(q) => q.kind(),
            BootError::Io { .. } => ErrorKind::Io,
            BootError::Init(g) => g.kind(),
            BootError::NoDevice(_) => ErrorKind::Protocol,
            BootError::Accel { source, .. } => source.kind(),
            BootError::Emulation(_) => ErrorKind::BadInput,
        }
    }

    fn io(what: &'static str) -> impl FnOnce(io::Error) -> BootError {
        move |source| BootError::Io { what, source }
    }
}

/// Where a boot keeps its logs, and the short directory its sockets live under.
#[derive(Clone, Copy)]
pub struct Dirs<'a> {
    pub logs: &'a Path,
    pub sockets: &'a Path,
}

/// What a QEMU boot needs besides its directories.
pub struct BootSpec<'a> {
    pub qemu: &'a QemuInfo,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub spec: &'a DeviceSpec,
    /// Where the guest must find each region (stated in the suite or scenario file).
    pub layout: &'a [RegionWindow],
    /// Initialise the device to DRIVER_OK; guest vCPUs.
    pub init: bool,
    pub smp: u8,
    /// QEMU talks to the backend through the recording relay (the target keeps it).
    pub relay: bool,
}

/// A booted QEMU target (its backend server lives in the target), with the
/// checks its boot already made.
pub struct QemuTarget {
    pub target: Target,
    pub boot_time: Duration,
    pub boot_checks: Vec<CheckResult>,
}

/// Check `layout-matches-spec`: the regions the guest found (capabilities in
/// the shared-memory BAR) are where the suite or scenario file says.
pub fn layout_check(want: &[RegionWindow], guest: &dyn Guest) -> CheckResult {
    let show = |l: &[RegionWindow]| {
        l.iter().map(|(id, off, len)| format!("{id}@{off:#x}+{len:#x}")).collect::<Vec<_>>().join(" ")
    };
    match guest.layout() {
        Ok(mut got) => {
            got.sort();
            let evidence =
                format!("{} found regions [{}]; the device file states [{}]", guest.kind(), show(&got), show(want));
            CheckResult::new("layout-matches-spec", got == want, evidence).with("found", show(&got))
        }
        Err(e) => CheckResult::new("layout-matches-spec", false, e.to_string()),
    }
}

/// Check `clean-shutdown`: asked to quit, the frontend ends with status 0
/// and no signal (QEMU unrealizes the device, live mappings and all).
pub fn shutdown_check(guest: &mut dyn Guest) -> CheckResult {
    match guest.shutdown() {
        Ok(exit) => CheckResult::new("clean-shutdown", true, format!("{} quit on request ({exit})", guest.kind()))
            .with("exit", exit),
        Err(d) => {
            CheckResult::new("clean-shutdown", false, format!("asked to quit, the {} ended badly: {d}", guest.kind()))
                .with("exit", &d.exit)
                .with("said", said_fact(&d.said))
        }
    }
}

/// Ends a target that ran `checks`: the clean-shutdown check, unless the
/// frontend already died (that is `frontend-survives`) or was killed on purpose.
pub fn finish(t: &mut Target, checks: &mut Vec<CheckResult>) {
    let died = checks.iter().any(|c| c.check == FRONTEND_SURVIVES && !c.passed);
    if !died && !t.expected_death() {
        checks.push(shutdown_check(t.guest.as_mut()));
    }
}

/// Boots QEMU with `b`'s device under `accel`, connects the backend
/// channel, checks the layout and initialises the device.
pub fn boot(b: &BootSpec<'_>, accel: Accel, dirs: Dirs<'_>) -> Result<QemuTarget, BootError> {
    let server = BackendServer::start_unvalidated_in(b.spec.clone(), dirs.sockets)
        .map_err(BootError::io("starting the backend"))?;
    let relay = if b.relay {
        Some(
            Relay::start(&server.private_dir().join("relay.sock"), server.socket_path())
                .map_err(BootError::io("starting the recording relay"))?,
        )
    } else {
        None
    };
    let cfg = BootConfig {
        qemu: b.qemu.path.clone(),
        kernel: b.kernel.to_path_buf(),
        initramfs: b.initramfs.to_path_buf(),
        accel,
        vhost_socket: relay.as_ref().map_or(server.socket_path(), Relay::socket_path).to_path_buf(),
        virtio_id: b.spec.virtio_id,
        num_vqs: 1,
        log_dir: dirs.logs.to_path_buf(),
        agent_socket: server.private_dir().join("agent.sock"),
        ready_timeout: ready_timeout(accel),
        smp: b.smp,
    };
    let qemu = Qemu::boot(&cfg).map_err(|e| match e {
        BootFailure::Died { exit, said } => BootError::Died(Death { exit, said }),
        BootFailure::Other(q) => BootError::Qemu(q),
    })?;
    let boot_time = qemu.boot_time;
    let chan = server.channel(CHANNEL_TIMEOUT).map_err(BootError::io("backend channel"))?;
    let mut guest = QemuGuest::new(qemu);
    if !guest.ready().has_device() {
        // The agent says why with its spaces as underscores (`ready nodevice WHY`).
        let line = &guest.qemu.ready_line;
        let why = line.trim().strip_prefix("ready nodevice ").map_or_else(|| line.clone(), |w| w.replace('_', " "));
        return Err(BootError::NoDevice(why));
    }
    let mut layout = layout_check(b.layout, &guest);
    // Which guest kernel driver the agent took the device from ("none" when no driver held it).
    if let Some(t) = super::guest::agent::field(&guest.qemu.ready_line, "taken_from") {
        layout = layout.with("taken_from", t);
    }
    let boot_checks = vec![layout];
    guest.reset(b.init).map_err(BootError::Init)?;
    match Emulation::for_qemu(&b.qemu.path)? {
        Some(Emulation::CommitBeforeReply) => {
            chan.set_reply_hold(Some(Emulation::commit_before_reply(server.recorder().clone())))
        }
        Some(Emulation::HoldReply(d)) => chan.set_reply_hold(Some(ReplyHold(Arc::new(move |_| {
            std::thread::sleep(d);
            true
        })))),
        None => {}
    }
    let mut target = Target::new(MappingManager::new(b.spec.clone(), chan), Box::new(guest), server);
    target.relay = relay;
    Ok(QemuTarget { target, boot_time, boot_checks })
}

/// Another frontend's behaviour emulated at the backend end of QEMU's
/// socket, to see how the verdicts react to a QEMU that behaves so
/// (`SHMEM_APPLIANCE_EMULATE=NAME` for every QEMU, `NAME@PATH` for the
/// QEMU at PATH only, say the B of a `--compare`; the report's first line
/// says it is on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulation {
    /// `commit-before-reply`: each accepted SHMEM reply is held until the
    /// memory table that commits the request has reached the backend (QEMU
    /// sends it after replying, so the backend, and the guest it tells,
    /// then see the request committed: a QEMU that commits first). A
    /// backend that cannot take that table while it waits (single-threaded)
    /// gets no ack in time, as it would from such a QEMU.
    CommitBeforeReply,
    /// `hold-reply-us=N`: each accepted SHMEM reply held N microseconds
    /// before the backend sees it: a QEMU whose race window the guest sees
    /// narrowed by that much (the power measurement of `--compare`'s rates).
    HoldReply(Duration),
}

/// `SHMEM_APPLIANCE_EMULATE` names no emulation there is.
#[derive(Debug, thiserror::Error)]
#[error(
    "{EMULATE_VAR}={value:?}: the emulations are \"commit-before-reply\" and \"hold-reply-us=N\" (N up to 1000000); for one QEMU add @PATH"
)]
pub struct UnknownEmulation {
    pub value: String,
}

/// The environment variable that turns an [`Emulation`] on.
pub const EMULATE_VAR: &str = "SHMEM_APPLIANCE_EMULATE";

impl Emulation {
    /// The emulation `SHMEM_APPLIANCE_EMULATE` asks for the QEMU at `qemu`, if any.
    pub fn for_qemu(qemu: &Path) -> Result<Option<Self>, UnknownEmulation> {
        let Some(v) = std::env::var(EMULATE_VAR).ok().filter(|v| !v.is_empty()) else { return Ok(None) };
        let (name, only) = v.split_once('@').map_or((v.as_str(), None), |(n, p)| (n, Some(Path::new(p))));
        let hold = name.strip_prefix("hold-reply-us=").map(|us| us.parse::<u64>().ok().filter(|&us| us <= 1_000_000));
        let e = match (name, hold) {
            ("commit-before-reply", _) => Emulation::CommitBeforeReply,
            (_, Some(Some(us))) => Emulation::HoldReply(Duration::from_micros(us)),
            (other, _) => return Err(UnknownEmulation { value: other.to_string() }),
        };
        Ok(only.is_none_or(|p| p == qemu).then_some(e))
    }

    /// Holds each ack until a memory table sent after its request arrived
    /// (for a map, one that holds the mapped file).
    fn commit_before_reply(recorder: Arc<Recorder>) -> ReplyHold {
        ReplyHold(Arc::new(move |h: Held| {
            let commits = |m: &crate::backend::MemTable| {
                m.at > h.sent && h.file.is_none_or(|f| m.regions.iter().any(|r| r.file == Some(f)))
            };
            recorder.wait_for(crate::channel::ACK_TIMEOUT, |r| r.mem_tables.iter().rev().any(commits))
        }))
    }
}

/// Boots as `plan` says: KVM first where planned, TCG after a failed KVM
/// boot when the plan falls back. Returns the accelerator and why it was chosen.
pub fn boot_with_fallback(
    b: &BootSpec<'_>,
    plan: &AccelPlan,
    dirs: Dirs<'_>,
) -> Result<(QemuTarget, Accel, Option<String>), BootError> {
    if plan.first == Accel::Kvm {
        match boot(b, Accel::Kvm, dirs) {
            Ok(t) => return Ok((t, Accel::Kvm, None)),
            Err(e) if !plan.fallback || interrupted() => {
                return Err(BootError::Accel { accel: "KVM", source: Box::new(e) });
            }
            Err(e) => {
                let note = format!("KVM boot failed ({e}); fell back to TCG");
                eprintln!("vm-test: {note}");
                return boot(b, Accel::Tcg, dirs).map(|t| (t, Accel::Tcg, Some(note)));
            }
        }
    }
    boot(b, Accel::Tcg, dirs).map(|t| (t, Accel::Tcg, plan.note.clone()))
}

/// The reference model behind its own backend (socket under `sockets`), as a target.
pub fn model_target(spec: &DeviceSpec, faults: Faults, init: bool, sockets: &Path) -> Result<Target, BootError> {
    let server = BackendServer::start_unvalidated_in(spec.clone(), sockets)
        .map_err(BootError::io("starting the model's backend"))?;
    let model = ModelFrontend::connect(server.socket_path(), u64::from(spec.num_queues), faults)
        .map_err(BootError::io("connecting the model"))?;
    if init {
        model.start().map_err(BootError::io("starting the model"))?;
    }
    let chan = server.channel(CHANNEL_TIMEOUT).map_err(BootError::io("the model's backend channel"))?;
    Ok(Target::new(MappingManager::new(spec.clone(), chan), Box::new(ModelGuest::new(model)), server))
}

#[cfg(test)]
mod tests {
    //! The boot checks against a stub guest: each can fail.

    use super::*;
    use crate::backend::FileId;
    use crate::files::HostMapping;
    use crate::vm::guest::{CopyRounds, Observed, ProbeReads, RingMode};
    use crate::vm::scenario::Fault;

    /// A guest that finds `layout` and ends with `exit`; asked anything else, it refuses.
    struct Stub {
        layout: Vec<RegionWindow>,
        exit: Result<String, Death>,
    }

    fn no() -> GuestError {
        GuestError::BadRequest("stub".into())
    }

    impl Guest for Stub {
        fn kind(&self) -> &'static str {
            "stub"
        }
        fn observe(&mut self, _: u8, _: u64, _: u64) -> Result<Observed, GuestError> {
            Err(no())
        }
        fn fill(&mut self, _: u8, _: u64, _: u64, _: u8) -> Result<(), GuestError> {
            Err(no())
        }
        fn reset(&mut self, _: bool) -> Result<(), GuestError> {
            Ok(())
        }
        fn region_addr(&self, _: u8) -> Result<u64, GuestError> {
            Err(no())
        }
        fn layout(&self) -> Result<Vec<RegionWindow>, GuestError> {
            Ok(self.layout.clone())
        }
        fn log_mark(&self) -> u64 {
            0
        }
        fn log_since(&self, _: u64) -> String {
            String::new()
        }
        fn holds(&self, _: FileId) -> Result<Vec<String>, GuestError> {
            Ok(Vec::new())
        }
        fn gone(&mut self) -> Option<Death> {
            None
        }
        fn log_text(&self) -> String {
            String::new()
        }
        fn bandwidth(&mut self, _: u8, _: u64, _: u32, _: u32) -> Result<CopyRounds, GuestError> {
            Err(no())
        }
        fn shutdown(&mut self) -> Result<String, Death> {
            self.exit.clone()
        }
        fn inject(&mut self, _: Fault) -> Result<(), GuestError> {
            Err(no())
        }
        fn sign_of_life(&mut self, _: Duration) -> Result<(), GuestError> {
            Ok(())
        }
        fn probe_start(&mut self, _: HostMapping, _: (u8, u64), _: (u8, u64)) -> Result<String, GuestError> {
            Err(no())
        }
        fn probe_ring(&mut self, _: RingMode) -> Result<ProbeReads, GuestError> {
            Err(no())
        }
        fn probe_stop(&mut self) -> Result<(), GuestError> {
            Ok(())
        }
    }

    /// As `tests/suite.toml` states it, by hand.
    const STATED: [RegionWindow; 2] = [(0, 0, 0xc0000), (2, 0xc0000, 0x40000)];

    #[test]
    fn the_layout_check_fails_when_the_guest_finds_other_regions() {
        let mut g = Stub { layout: vec![(2, 0xc0000, 0x40000), (0, 0, 0xc0000)], exit: Ok("status 0".into()) };
        assert!(layout_check(&STATED, &g).passed, "the order of the capabilities does not matter");
        g.layout = vec![(0, 0x40000, 0xc0000), (2, 0, 0x40000)];
        assert!(!layout_check(&STATED, &g).passed, "offsets swapped, sizes right");
        g.layout = vec![(0, 0, 0xc0000), (2, 0xd0000, 0x40000)];
        assert!(!layout_check(&STATED, &g).passed, "one offset off");
        g.layout.clear();
        assert!(!layout_check(&STATED, &g).passed);
    }

    #[test]
    fn the_shutdown_check_fails_on_a_signal_a_status_or_a_hang() {
        let mut g = Stub { layout: Vec::new(), exit: Ok("status 0".into()) };
        assert!(shutdown_check(&mut g).passed);
        for exit in ["status 1", "signal 11 (SIGSEGV)", "QEMU did not exit within 10s of the agent's power-off; killed"]
        {
            g.exit = Err(Death { exit: exit.into(), said: "bye".into() });
            let c = shutdown_check(&mut g);
            assert!(!c.passed && c.facts["exit"] == exit, "{c:?}");
        }
    }
}
