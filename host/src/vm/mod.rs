//! The VM runner: boots QEMU with the test device against our backend, runs
//! every scenario on it and on the reference model, and turns what was seen
//! into verdicts (with the known-defects list). xtask only builds artefacts
//! and calls [`run_suite`]. Step execution is in `steps`, reports in `report`.

pub mod fuzz;
pub mod guest;
pub mod leaks;
pub mod own_boot;
pub mod qemu;
pub mod report;
pub mod scenario;
pub mod steps;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::model::{Faults, ModelFrontend};
use crate::manager::MappingManager;
use crate::server::BackendServer;
use crate::spec::DeviceSpec;
use guest::{Death, Guest, ModelGuest, QemuGuest, RegionWindow};
use qemu::{Accel, BootConfig, Qemu, QemuInfo};
use scenario::{BackendMode, KnownDefect, Scenario, SuiteDevice};
pub use steps::CheckResult;
use own_boot::{Pool, own_boot_report, own_boot_run};
pub use own_boot::OwnBootRun;
use steps::{Target, run_steps};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C end the run cleanly (every wait checks [`interrupted`]).
pub fn install_interrupt_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `--accel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

/// Everything xtask hands the runner.
pub struct SuiteConfig {
    pub qemu: QemuInfo,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: AccelChoice,
    pub spec: DeviceSpec,
    pub scenarios: Vec<Scenario>,
    /// The known defects to judge by (empty with `--known-defects none`).
    pub known_defects: Vec<KnownDefect>,
    /// Where they came from, for the report ("none" for none).
    pub known_defects_source: String,
    /// A command that runs one own boot in a process of its own (completed
    /// with `--scenario PATH --accel NAME --logs DIR`; prints an
    /// [`OwnBootRun`] as JSON): own boots then run in parallel, each with its
    /// own leak self-check. `None`: one after another in this process.
    pub worker: Option<Vec<String>>,
    /// Parent of the run directory (kept there when the run fails).
    pub work_dir: PathBuf,
}

/// A failed check as judged against the known defects.
#[derive(Clone, Debug)]
pub struct Judged {
    pub check: CheckResult,
    /// The known defect whose signature this failure shows.
    pub defect: Option<String>,
    /// A listed defect of this check whose signature it does NOT show: its
    /// id and signature, printed beside what was seen.
    pub listed: Option<(String, String)>,
}

/// One scenario's verdict on one target.
#[derive(Clone, Debug)]
pub enum Verdict {
    Pass,
    /// Every failed check shows the signature of a listed known defect.
    KnownFailure(Vec<Judged>),
    /// A failed check is not listed, or fails differently from its listing.
    Fail(Vec<Judged>),
    /// Listed defects did not show (the check passed or never ran): each
    /// message names the entry to drop.
    UnexpectedPass(Vec<String>),
    /// The scenario could not be run to the end (infrastructure, timeout).
    Error(String),
    /// Not run on this target, and why (fault scenarios on the model).
    Skipped(String),
}

impl Verdict {
    /// Whether the run may still succeed with this verdict.
    pub fn ok(&self) -> bool {
        matches!(self, Verdict::Pass | Verdict::KnownFailure(_) | Verdict::Skipped(_))
    }
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::KnownFailure(_) => "KNOWN-FAIL",
            Verdict::Fail(_) => "FAIL",
            Verdict::UnexpectedPass(_) => "UNEXPECTED-PASS",
            Verdict::Error(_) => "ERROR",
            Verdict::Skipped(_) => "SKIPPED",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One scenario on both targets.
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    pub qemu: Verdict,
    pub model: Verdict,
    pub qemu_time: Duration,
    pub model_time: Duration,
    pub qemu_checks: Vec<CheckResult>,
    pub model_checks: Vec<CheckResult>,
    /// QEMU's stderr and console tails when the QEMU verdict is not PASS.
    pub qemu_log: Option<String>,
}

/// Raw measurements for the benchmark report.
#[derive(Default)]
pub struct Measurements {
    pub qemu_map: Vec<Duration>,
    pub qemu_unmap: Vec<Duration>,
    pub model_map: Vec<Duration>,
    pub model_unmap: Vec<Duration>,
    pub qemu_table_lag: Vec<Duration>,
    pub model_table_lag: Vec<Duration>,
    /// Boot to agent ready, of every QEMU boot that got there.
    pub boot_times: Vec<Duration>,
}

pub struct SuiteReport {
    pub qemu: QemuInfo,
    /// Where the known defects came from ("none" when not used).
    pub known_defects: String,
    pub accel: Accel,
    pub accel_note: Option<String>,
    pub boot_time: Duration,
    pub suite_time: Duration,
    pub scenarios: Vec<ScenarioReport>,
    pub measurements: Measurements,
    /// Where logs were kept (only when something failed).
    pub kept_logs: Option<PathBuf>,
}

impl SuiteReport {
    pub fn ok(&self) -> bool {
        !self.scenarios.is_empty() && self.scenarios.iter().all(|s| s.qemu.ok() && s.model.ok())
    }
}

const READY_TCG: Duration = Duration::from_secs(120);
/// A KVM guest reaches its agent in about a second; past this, fall back to TCG.
const READY_KVM: Duration = Duration::from_secs(10);
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether KVM can run a guest at native speed: `/dev/kvm` opens, and it is
/// hardware-backed. A `/dev/kvm` from `kvm_pvm`, or on a CPU without
/// vmx/svm, emulates every guest instruction (about 1000x slower than
/// native, measured): a boot would never finish, so TCG is used at once.
fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map_err(|e| format!("/dev/kvm: {e}"))?;
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err("/dev/kvm comes from kvm_pvm, not hardware virtualization".into());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").map_err(|e| format!("/proc/cpuinfo: {e}"))?;
    let hw = cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw {
        return Err("/dev/kvm exists but the CPU has no vmx/svm flag: not hardware virtualization".into());
    }
    Ok(())
}

/// What went wrong while booting: QEMU died (a verdict) or something else (an error).
enum BootError {
    Died(Death),
    Other(String),
}

impl BootError {
    fn text(&self) -> String {
        match self {
            BootError::Died(d) => format!("QEMU died while booting ({})", d),
            BootError::Other(s) => s.clone(),
        }
    }
}

/// A booted QEMU target (its backend server lives in the target), with the
/// checks its boot already made.
struct QemuTarget {
    target: Target,
    boot_time: Duration,
    boot_checks: Vec<CheckResult>,
}

/// Where a boot keeps its logs, and the short directory its sockets live under.
#[derive(Clone, Copy)]
struct Dirs<'a> {
    logs: &'a Path,
    sockets: &'a Path,
}

/// Check `layout-matches-spec`: the regions the guest found (capabilities in
/// the shared-memory BAR) are the ones the backend advertised, packed by shmid.
fn layout_check(spec: &DeviceSpec, guest: &dyn Guest) -> CheckResult {
    let want: Vec<RegionWindow> =
        (0..spec.regions.len()).filter_map(|i| spec.bar_offset(i as u8).map(|off| (i as u8, off, spec.regions[i]))).collect();
    let show = |l: &[RegionWindow]| l.iter().map(|(id, off, len)| format!("{id}@{off:#x}+{len:#x}")).collect::<Vec<_>>().join(" ");
    match guest.layout() {
        Ok(mut got) => {
            got.sort();
            CheckResult::new("layout-matches-spec", got == want, format!("{} found regions [{}]; the backend advertised [{}]", guest.kind(), show(&got), show(&want)))
            .with("found", show(&got))
        }
        Err(e) => CheckResult::new("layout-matches-spec", false, e),
    }
}

/// Check `clean-shutdown`: asked to quit, the frontend ends with status 0
/// and no signal (QEMU unrealizes the device, live mappings and all).
fn shutdown_check(guest: &mut dyn Guest) -> CheckResult {
    match guest.shutdown() {
        Ok(exit) => CheckResult::new("clean-shutdown", true, format!("{} quit on request ({exit})", guest.kind())).with("exit", exit),
        Err(d) => CheckResult::new("clean-shutdown", false, format!("asked to quit, the {} ended badly: {d}", guest.kind())).with("exit", &d.exit).with("said", steps::said_fact(&d.said)),
    }
}

/// Ends a target that ran `checks`: the clean-shutdown check, unless the
/// frontend already died (that is `frontend-survives`) or was killed on purpose.
fn finish(t: &mut Target, checks: &mut Vec<CheckResult>) {
    let died = checks.iter().any(|c| c.check == "frontend-survives" && !c.passed);
    if !died && !t.expected_death() {
        checks.push(shutdown_check(t.guest.as_mut()));
    }
}

fn boot(cfg: &SuiteConfig, spec: &DeviceSpec, accel: Accel, (init, smp): (bool, u8), dirs: Dirs<'_>) -> Result<QemuTarget, BootError> {
    let other = BootError::Other;
    let server = BackendServer::start_unvalidated_in(spec.clone(), dirs.sockets).map_err(|e| other(format!("starting the backend: {e}")))?;
    let boot = BootConfig {
        qemu: cfg.qemu.path.clone(),
        kernel: cfg.kernel.clone(),
        initramfs: cfg.initramfs.clone(),
        accel,
        vhost_socket: server.socket_path().to_path_buf(),
        virtio_id: spec.virtio_id,
        log_dir: dirs.logs.to_path_buf(),
        agent_socket: server.private_dir().join("agent.sock"),
        ready_timeout: if accel == Accel::Kvm { READY_KVM } else { READY_TCG },
        smp,
    };
    let qemu = Qemu::boot(&boot).map_err(|(e, exit)| match exit {
        Some(exit) => BootError::Died(Death { exit, said: e }),
        None => other(e),
    })?;
    let boot_time = qemu.boot_time;
    let chan = server.channel(CHANNEL_TIMEOUT).map_err(|e| other(format!("backend channel: {e}")))?;
    let mut guest = QemuGuest::new(qemu);
    if !guest.qemu.ready_line.contains(" device ") {
        return Err(other(format!("the guest agent found no test device: {}", guest.qemu.ready_line)));
    }
    let boot_checks = vec![layout_check(spec, &guest)];
    guest.reset(init).map_err(|e| other(format!("initialising the device: {e}")))?;
    let target = Target::new(MappingManager::new(spec.clone(), chan), Box::new(guest), server);
    Ok(QemuTarget { target, boot_time, boot_checks })
}

fn boot_with_fallback(cfg: &SuiteConfig, dirs: Dirs<'_>) -> Result<(QemuTarget, Accel, Option<String>), String> {
    let try_kvm = match cfg.accel {
        AccelChoice::Tcg => false,
        AccelChoice::Kvm => true,
        AccelChoice::Auto => kvm_usable().is_ok(),
    };
    if try_kvm {
        match boot(cfg, &cfg.spec, Accel::Kvm, (true, 1), dirs) {
            Ok(t) => return Ok((t, Accel::Kvm, None)),
            Err(e) if cfg.accel == AccelChoice::Kvm || interrupted() => return Err(format!("KVM boot failed: {}", e.text())),
            Err(e) => {
                let note = format!("KVM boot failed ({}); fell back to TCG", e.text());
                eprintln!("vm-test: {note}");
                let t = boot(cfg, &cfg.spec, Accel::Tcg, (true, 1), dirs).map_err(|e| e.text())?;
                return Ok((t, Accel::Tcg, Some(note)));
            }
        }
    }
    let note = (cfg.accel == AccelChoice::Auto).then(|| format!("TCG: {}", kvm_usable().err().unwrap_or_default()));
    let t = boot(cfg, &cfg.spec, Accel::Tcg, (true, 1), dirs).map_err(|e| e.text())?;
    Ok((t, Accel::Tcg, note))
}

/// A QEMU booted with the suite's device, initialised, as a target (the
/// fuzzer's subject); logs under `logs`, sockets under `sockets`.
pub fn qemu_target(cfg: &SuiteConfig, accel: Accel, logs: &Path, sockets: &Path) -> Result<Target, String> {
    boot(cfg, &cfg.spec, accel, (true, 1), Dirs { logs, sockets }).map(|qt| qt.target).map_err(|e| e.text())
}

/// What the bench measures on a boot with nothing else running.
pub struct BootAlone {
    /// Boot to agent ready.
    pub boot_time: Duration,
    /// Guest copy timings through a read-write mapping and in guest RAM.
    pub bandwidth: guest::CopyRounds,
}

/// One boot with nothing else running, for the bench: boot to agent ready
/// with the suite's device, copy bandwidth, then a clean shutdown (else an
/// error).
pub fn boot_alone(cfg: &SuiteConfig, accel: Accel) -> Result<BootAlone, String> {
    let logs = tempfile::Builder::new().prefix("boot-alone-").tempdir_in(&cfg.work_dir).map_err(|e| format!("log dir: {e}"))?;
    let sockets = tempfile::Builder::new().prefix("shmem-boot-").tempdir().map_err(|e| format!("socket dir: {e}"))?;
    let mut qt = boot(cfg, &cfg.spec, accel, (true, 1), Dirs { logs: logs.path(), sockets: sockets.path() }).map_err(|e| e.text())?;
    let bandwidth = measure_bandwidth(&mut qt.target).map_err(|e| format!("bandwidth not measured: {e}"))?;
    let shutdown = shutdown_check(qt.target.guest.as_mut());
    if !shutdown.passed {
        return Err(shutdown.evidence);
    }
    Ok(BootAlone { boot_time: qt.boot_time, bandwidth })
}

/// The accelerator `--accel` asks for, without trying a boot: auto takes
/// KVM when it is usable (hardware-backed), else TCG, and says why.
pub fn choose_accel(choice: AccelChoice) -> (Accel, Option<String>) {
    let mut note = None;
    let accel = match choice {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto => match kvm_usable() {
            Ok(()) => Accel::Kvm,
            Err(e) => {
                note = Some(format!("TCG: {e}"));
                Accel::Tcg
            }
        },
    };
    (accel, note)
}

/// The reference model behind its own backend (socket under `sockets`), as a target.
pub fn model_target(spec: &DeviceSpec, faults: Faults, init: bool, sockets: &Path) -> Result<Target, String> {
    let server = BackendServer::start_unvalidated_in(spec.clone(), sockets).map_err(|e| format!("starting the model's backend: {e}"))?;
    let model = ModelFrontend::connect(server.socket_path(), u64::from(spec.num_queues), faults).map_err(|e| e.to_string())?;
    if init {
        model.start().map_err(|e| e.to_string())?;
    }
    let chan = server.channel(CHANNEL_TIMEOUT).map_err(|e| e.to_string())?;
    Ok(Target::new(MappingManager::new(spec.clone(), chan), Box::new(ModelGuest { model, probe_target: None }), server))
}

/// Turns check results into a verdict. `defects` are the entries that apply
/// to this scenario on this build and accelerator. A failed check is known
/// only when a listed entry's signature matches its facts; a listed entry
/// whose check passed or never ran is an unexpected pass.
pub fn judge(result: Result<Vec<CheckResult>, String>, defects: &[&KnownDefect]) -> Verdict {
    let checks = match result {
        Ok(c) => c,
        Err(e) => return Verdict::Error(e),
    };
    let failed: Vec<Judged> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| {
            let listed: Vec<&&KnownDefect> = defects.iter().filter(|d| d.check == c.check).collect();
            let matched = listed.iter().find(|d| d.matches(&c.facts));
            Judged {
                check: c.clone(),
                defect: matched.map(|d| d.id.clone()),
                listed: if matched.is_none() { listed.first().map(|d| (d.id.clone(), d.signature_text())) } else { None },
            }
        })
        .collect();
    let mut unexpected = Vec::new();
    let mut inconclusive = Vec::new();
    for d in defects.iter().filter(|d| !failed.iter().any(|j| j.check.check == d.check)) {
        match checks.iter().find(|c| c.check == d.check) {
            // An intermittent defect a run did not see, but too short to tell.
            Some(c) if d.inconclusive(&c.facts) => {
                let mut c = c.clone();
                c.evidence = format!("intermittent, not seen in this run, too few to tell a fix (listed rate {:.3} %): {}", d.rate.unwrap_or(0.0) * 100.0, c.evidence);
                inconclusive.push(Judged { check: c, defect: Some(d.id.clone()), listed: None });
            }
            found => {
                let how = if found.is_some() { "the check passed" } else { "the check never ran" };
                unexpected.push(format!("known defect `{}` ({}) did not show: {how}; drop it from the known-defects list", d.id, d.check));
            }
        }
    }
    if failed.iter().any(|j| j.defect.is_none()) {
        Verdict::Fail(failed)
    } else if !unexpected.is_empty() {
        Verdict::UnexpectedPass(unexpected)
    } else if !failed.is_empty() || !inconclusive.is_empty() {
        Verdict::KnownFailure(failed.into_iter().chain(inconclusive).collect())
    } else {
        Verdict::Pass
    }
}

/// Runs one scenario on a target (after a device reset when `prepare`);
/// returns its checks or an error, and how long it took. A panic of the
/// runner itself (whatever a frontend answered) is an error, never a crash.
pub fn run_on(scn: &Scenario, t: &mut Target, prepare: bool) -> (Result<Vec<CheckResult>, String>, Duration) {
    let start = Instant::now();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if prepare {
            t.guest.reset(scn.init).map_err(|e| format!("resetting the device before the scenario: {e}"))?;
        }
        t.mgr.forget_all();
        let gate = t.server.as_ref().filter(|_| scn.backend == BackendMode::SingleThreaded).map(BackendServer::serve_gate);
        t.single_threaded = gate.is_some();
        t.mgr.channel().set_serve_gate(gate);
        let res = run_steps(scn, t);
        t.mgr.channel().set_serve_gate(None);
        t.single_threaded = false;
        res
    }));
    let res = res.unwrap_or_else(|p| {
        let what = crate::panic_text(p.as_ref());
        Err(format!("the runner panicked (a bug of the appliance, please report it): {what}"))
    });
    (res, start.elapsed())
}

fn defects_for<'a>(cfg: &'a SuiteConfig, accel: Accel, scenario: &str) -> Vec<&'a KnownDefect> {
    cfg.known_defects.iter().filter(|d| d.applies(&cfg.qemu.build, accel.name(), scenario)).collect()
}

type Run = (Result<Vec<CheckResult>, String>, Duration);

fn report(name: &str, description: &str, qemu_only: bool, q: Run, m: Run, defects: &[&KnownDefect], qlog: impl FnOnce() -> String) -> ScenarioReport {
    let qemu_checks = q.0.clone().unwrap_or_default();
    let model_checks = m.0.clone().unwrap_or_default();
    let qemu = judge(q.0, defects);
    let model = if qemu_only { Verdict::Skipped("fault scenario: QEMU only".into()) } else { judge(m.0, &[]) };
    let qemu_log = (!matches!(qemu, Verdict::Pass)).then(qlog);
    ScenarioReport {
        name: name.to_string(),
        description: description.to_string(),
        qemu,
        model,
        qemu_time: q.1,
        model_time: m.1,
        qemu_checks,
        model_checks,
        qemu_log,
    }
}

/// The device a scenario runs with: its own (unvalidated) or the suite's.
pub fn scenario_spec(suite: &DeviceSpec, scn: &Scenario) -> DeviceSpec {
    scn.device.as_ref().map_or_else(|| suite.clone(), SuiteDevice::spec)
}

/// The model as a target for a scenario's own boot: its layout check, the
/// scenario, its clean shutdown.
fn run_model_boot(spec: &DeviceSpec, scn: &Scenario, sockets: &Path) -> Run {
    let start = Instant::now();
    match model_target(spec, Faults::default(), scn.init, sockets) {
        Ok(mut t) => {
            let layout = layout_check(spec, t.guest.as_ref());
            let (res, _) = run_on(scn, &mut t, false);
            let res = res.map(|checks| {
                let mut all = vec![layout];
                all.extend(checks);
                finish(&mut t, &mut all);
                all
            });
            (res, start.elapsed())
        }
        Err(e) => (Err(e), start.elapsed()),
    }
}

/// Each timed copy must last at least this many ticks of the clock that times it.
const MIN_TICKS_PER_COPY: u64 = 100;

/// Measures guest copy bandwidth through a read-write mapping and in guest
/// RAM, in alternating rounds of one boot, on the guest's calibrated TSC.
fn measure_bandwidth(t: &mut Target) -> Result<guest::CopyRounds, String> {
    const LEN: u64 = 512 << 10;
    t.guest.reset(true)?;
    t.mgr.forget_all();
    if t.mgr.file("bench/bw").is_err() {
        t.mgr.create_file("bench/bw", LEN).map_err(|e| e.to_string())?;
    }
    let o = t.mgr.map(0, "bench/bw", 0, 0, LEN, true).map_err(|e| e.to_string())?;
    if o.reply.ack != 0 {
        return Err(format!("bandwidth mapping refused (ack {})", o.reply.ack));
    }
    let res = t.guest.bandwidth(0, LEN, 64, 7);
    let _ = t.mgr.unmap(0, 0, LEN);
    let rounds = res?;
    if rounds.shortest() < MIN_TICKS_PER_COPY {
        return Err(format!("a timed copy took {} ticks of the guest clock; at least {MIN_TICKS_PER_COPY} are needed", rounds.shortest()));
    }
    Ok(rounds)
}

/// Boots once for the shared scenarios (own-boot ones get their own QEMU),
/// runs each on QEMU and on the model, reports.
pub fn run_suite(cfg: &SuiteConfig) -> Result<SuiteReport, String> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| format!("create {}: {e}", cfg.work_dir.display()))?;
    let run_dir = tempfile::Builder::new().prefix("run-").tempdir_in(&cfg.work_dir).map_err(|e| e.to_string())?;
    // Sockets go under the system temp dir: a Unix socket path must stay
    // below 108 bytes, and a clone's target/ may be deep.
    let sockets = tempfile::Builder::new().prefix("shmem-vm-").tempdir().map_err(|e| format!("socket dir: {e}"))?;
    let suite_start = Instant::now();
    let result = run_in(cfg, Dirs { logs: run_dir.path(), sockets: sockets.path() }, suite_start);
    if result.as_ref().map_or(true, |r| !r.ok()) {
        let kept = run_dir.keep();
        return match result {
            Ok(mut r) => {
                r.kept_logs = Some(kept);
                Ok(r)
            }
            Err(e) => Err(format!("{e}\nlogs kept in {}", kept.display())),
        };
    }
    result
}

/// The report row of the shared boot's own checks (layout at boot, clean shutdown).
pub const SHARED_BOOT: &str = "shared-boot";

fn run_in(cfg: &SuiteConfig, dirs: Dirs<'_>, suite_start: Instant) -> Result<SuiteReport, String> {
    let shared: Vec<&Scenario> = cfg.scenarios.iter().filter(|s| !s.own_boot).collect();
    let own: Vec<&Scenario> = cfg.scenarios.iter().filter(|s| s.own_boot).collect();
    let mut measurements = Measurements::default();
    let mut reports = Vec::new();
    let pool = cfg.worker.as_deref().map(|w| Pool::new(w, &own, dirs.logs));
    std::thread::scope(|scope| {
        // Own boots go to worker processes, one per core, beside the shared
        // boot; this thread joins them once the shared boot is done. They
        // start at once when the accelerator is settled without a boot (TCG,
        // or KVM that cannot fall back), else once the shared boot has chosen
        // it. One VM more than there are cores keeps the cores busy while a
        // guest waits on the host (a timeout, an ack, a shutdown).
        let start_pool = |accel: Accel| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(own.len());
            pool.as_ref().map_or_else(Vec::new, |p| (0..threads).map(|_| scope.spawn(move || p.work(accel))).collect())
        };
        let settled = match cfg.accel {
            AccelChoice::Tcg => Some(Accel::Tcg),
            AccelChoice::Kvm => Some(Accel::Kvm),
            AccelChoice::Auto => kvm_usable().is_err().then_some(Accel::Tcg),
        };
        let mut workers = settled.map(start_pool).unwrap_or_default();
        let (accel, accel_note, boot_time) = if shared.is_empty() {
            // A filtered run without shared scenarios: no boot chose the accelerator.
            let (accel, note) = choose_accel(cfg.accel);
            if settled.is_none() {
                workers = start_pool(accel);
            }
            (accel, note, None)
        } else {
            let booted = boot_with_fallback(cfg, dirs).and_then(|(qt, accel, note)| {
                if settled.is_none() {
                    workers = start_pool(accel);
                }
                let boot_time = qt.boot_time;
                run_shared(cfg, dirs, qt, accel, &shared, &mut reports, &mut measurements).map(|()| (accel, note, Some(boot_time)))
            });
            // No own boot starts after the shared one failed (those under way end on their own).
            booted.inspect_err(|_| {
                if let Some(p) = &pool {
                    p.cancel.store(true, Ordering::SeqCst);
                }
            })?
        };
        match &pool {
            Some(p) => {
                p.work(accel);
                for w in workers {
                    w.join().map_err(|p| format!("an own-boot pool thread panicked: {}", crate::panic_text(p.as_ref())))?;
                }
                for (scn, run) in own.iter().zip(p.take_results()) {
                    reports.push(own_boot_report(cfg, scn, accel, run, &mut measurements.boot_times));
                }
            }
            None => {
                for scn in &own {
                    if interrupted() {
                        return Err("interrupted".into());
                    }
                    let run = own_boot_run(cfg, scn, accel, dirs.logs, dirs.sockets);
                    reports.push(own_boot_report(cfg, scn, accel, run, &mut measurements.boot_times));
                }
            }
        }
        if interrupted() {
            return Err("interrupted".into());
        }
        Ok(SuiteReport {
            qemu: cfg.qemu.clone(),
            known_defects: cfg.known_defects_source.clone(),
            accel,
            accel_note,
            // Without a shared boot, the quickest own boot.
            boot_time: boot_time.or_else(|| measurements.boot_times.iter().min().copied()).unwrap_or_default(),
            suite_time: suite_start.elapsed(),
            scenarios: reports,
            measurements,
            kept_logs: None,
        })
    })
}

/// The shared scenarios on one QEMU boot and one model, and the shared
/// boot's own row (first in `reports`).
fn run_shared(cfg: &SuiteConfig, dirs: Dirs<'_>, mut qt: QemuTarget, a: Accel, shared: &[&Scenario], reports: &mut Vec<ScenarioReport>, measurements: &mut Measurements) -> Result<(), String> {
    measurements.boot_times.push(qt.boot_time);
    let model_start = Instant::now();
    let mut model = model_target(&cfg.spec, Faults::default(), true, dirs.sockets)?;
    let mut model_boot = vec![layout_check(&cfg.spec, model.guest.as_ref())];
    let model_boot_time = model_start.elapsed();
    let mut qemu_dead: Option<String> = None;
    let mut rows = Vec::new();
    for scn in shared {
        if interrupted() {
            return Err("interrupted".into());
        }
        let defects = defects_for(cfg, a, &scn.name);
        let q = match &qemu_dead {
            Some(name) => (Err(format!("not run: QEMU died in scenario {name}")), Duration::ZERO),
            None => run_on(scn, &mut qt.target, true),
        };
        let m = run_on(scn, &mut model, true);
        if qemu_dead.is_none() && qt.target.guest.gone().is_some() {
            qemu_dead = Some(scn.name.clone());
        }
        let guest = &qt.target.guest;
        rows.push(report(&scn.name, &scn.description, scn.qemu_only, q, m, &defects, || guest.log_text()));
    }
    measurements.qemu_map = std::mem::take(&mut qt.target.map_latencies);
    measurements.qemu_unmap = std::mem::take(&mut qt.target.unmap_latencies);
    measurements.qemu_table_lag = std::mem::take(&mut qt.target.table_lags);
    measurements.model_map = std::mem::take(&mut model.map_latencies);
    measurements.model_unmap = std::mem::take(&mut model.unmap_latencies);
    measurements.model_table_lag = std::mem::take(&mut model.table_lags);
    // The shared boot's own row: a QEMU that died in a scenario has its
    // death reported there; one that lives must quit cleanly.
    let mut qemu_boot = std::mem::take(&mut qt.boot_checks);
    if qemu_dead.is_none() {
        qemu_boot.push(shutdown_check(qt.target.guest.as_mut()));
    }
    model_boot.push(shutdown_check(model.guest.as_mut()));
    let defects = defects_for(cfg, a, SHARED_BOOT);
    let guest = &qt.target.guest;
    let description = "the boot the shared scenarios run in: regions where the backend advertised them, a clean shutdown";
    reports.push(report(SHARED_BOOT, description, false, (Ok(qemu_boot), qt.boot_time), (Ok(model_boot), model_boot_time), &defects, || guest.log_text()));
    reports.extend(rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The runner's boot checks and the comparison, against a stub guest
    //! and hand-made reports: each can fail.

    use super::*;
    use crate::backend::FileId;

    /// A guest that finds `layout` and ends with `exit`.
    struct Stub {
        layout: Vec<RegionWindow>,
        exit: Result<String, Death>,
    }

    impl Guest for Stub {
        fn kind(&self) -> &'static str {
            "stub"
        }
        fn observe(&mut self, _: u8, _: u64, _: u64) -> Result<guest::Observed, String> {
            Err("stub".into())
        }
        fn fill(&mut self, _: u8, _: u64, _: u64, _: u8) -> Result<(), String> {
            Err("stub".into())
        }
        fn reset(&mut self, _: bool) -> Result<(), String> {
            Ok(())
        }
        fn region_addr(&self, _: u8) -> Result<u64, String> {
            Err("stub".into())
        }
        fn layout(&self) -> Result<Vec<RegionWindow>, String> {
            Ok(self.layout.clone())
        }
        fn log_mark(&self) -> u64 {
            0
        }
        fn log_since(&self, _: u64) -> String {
            String::new()
        }
        fn holds(&self, _: FileId) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }
        fn gone(&mut self) -> Option<Death> {
            None
        }
        fn log_text(&self) -> String {
            String::new()
        }
        fn bandwidth(&mut self, _: u8, _: u64, _: u32, _: u32) -> Result<guest::CopyRounds, String> {
            Err("stub".into())
        }
        fn shutdown(&mut self) -> Result<String, Death> {
            self.exit.clone()
        }
        fn inject(&mut self, _: scenario::Fault) -> Result<(), String> {
            Err("stub".into())
        }
        fn ping(&mut self, _: Duration) -> Result<(), String> {
            Ok(())
        }
        fn probe_start(&mut self, _: crate::files::HostMapping, _: (u8, u64), _: (u8, u64)) -> Result<String, String> {
            Err("stub".into())
        }
        fn probe_ring(&mut self, _: guest::RingMode) -> Result<guest::ProbeReads, String> {
            Err("stub".into())
        }
        fn probe_stop(&mut self) -> Result<(), String> {
            Err("stub".into())
        }
    }

    fn spec() -> DeviceSpec {
        DeviceSpec { virtio_id: 45, num_queues: 1, regions: vec![0xc0000, 0, 0x40000] }
    }

    #[test]
    fn the_layout_check_fails_when_the_guest_finds_other_regions() {
        let mut g = Stub { layout: vec![(2, 0xc0000, 0x40000), (0, 0, 0xc0000)], exit: Ok("status 0".into()) };
        assert!(layout_check(&spec(), &g).passed, "the order of the capabilities does not matter");
        g.layout = vec![(0, 0x40000, 0xc0000), (2, 0, 0x40000)];
        assert!(!layout_check(&spec(), &g).passed);
        g.layout.clear();
        assert!(!layout_check(&spec(), &g).passed);
    }

    #[test]
    fn the_shutdown_check_fails_on_a_signal_a_status_or_a_hang() {
        let mut g = Stub { layout: Vec::new(), exit: Ok("status 0".into()) };
        assert!(shutdown_check(&mut g).passed);
        for exit in ["status 1", "signal 11 (SIGSEGV)", "QEMU did not exit within 10s of the agent's power-off; killed"] {
            g.exit = Err(Death { exit: exit.into(), said: "bye".into() });
            let c = shutdown_check(&mut g);
            assert!(!c.passed && c.facts["exit"] == exit, "{c:?}");
        }
    }

    fn suite_report(build: &str, checks: Vec<CheckResult>) -> SuiteReport {
        let qemu = QemuInfo { path: PathBuf::from("qemu"), version: (11, 1, 3), version_text: String::new(), build: build.into() };
        let s = ScenarioReport {
            name: "s".into(),
            description: String::new(),
            qemu: Verdict::Pass,
            model: Verdict::Pass,
            qemu_time: Duration::ZERO,
            model_time: Duration::ZERO,
            qemu_checks: checks,
            model_checks: Vec::new(),
            qemu_log: None,
        };
        SuiteReport {
            qemu,
            known_defects: "none".into(),
            accel: Accel::Tcg,
            accel_note: None,
            boot_time: Duration::ZERO,
            suite_time: Duration::ZERO,
            scenarios: vec![s],
            measurements: Measurements::default(),
            kept_logs: None,
        }
    }

    #[test]
    fn compare_names_fixes_regressions_and_changed_evidence() {
        let crash = |sig: &str| CheckResult::new("frontend-survives", false, "").with("exit", sig);
        let a = suite_report("a", vec![crash("signal 11 (SIGSEGV)"), CheckResult::new("ro", false, "").with("ack", "0"), CheckResult::new("mt", true, ""), CheckResult::new("x", false, "").with("n", "1")]);
        let b = suite_report("b", vec![CheckResult::new("frontend-survives", true, ""), CheckResult::new("ro", false, "").with("ack", "0"), CheckResult::new("mt", false, "lost"), CheckResult::new("x", false, "").with("n", "2")]);
        let c = report::compare(&a, &b);
        assert_eq!((c.fixed, c.regressed, c.changed), (1, 1, 1), "{:#?}", c.lines);
        assert!(c.lines.iter().any(|l| l.starts_with("fixed: s/frontend-survives")));
        assert!(c.lines.iter().any(|l| l.starts_with("REGRESSED: s/mt")));
        assert!(c.lines.iter().any(|l| l.starts_with("evidence changed: s/x")));
        // A check that passed on A and never ran on B is a regression too.
        let b = suite_report("b", vec![crash("signal 11 (SIGSEGV)")]);
        assert!(report::compare(&a, &b).lines.iter().any(|l| l.starts_with("REGRESSED: s/mt: passed on A, never ran on B")));
        // The same run on both sides changes nothing.
        let same = report::compare(&a, &a);
        assert!(same.lines.is_empty(), "{:?}", same.lines);
    }
}
