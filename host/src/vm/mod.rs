//! The VM runner: boots QEMU with the test device against our backend, runs
//! every scenario on it and on the reference model, and turns what was seen
//! into verdicts (with the known-defects list). xtask only builds artefacts
//! and calls [`run_suite`]. Step execution is in `steps`, reports in `report`.

pub mod guest;
pub mod leaks;
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
use guest::{Guest, ModelGuest, QemuGuest};
use qemu::{Accel, BootConfig, Qemu, QemuInfo};
use scenario::{KnownDefect, Scenario, SuiteDevice};
pub use steps::CheckResult;
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
    pub known_defects: Vec<KnownDefect>,
    /// Parent of the run directory (kept there when the run fails).
    pub work_dir: PathBuf,
}

/// One scenario's verdict on one target.
#[derive(Clone, Debug)]
pub enum Verdict {
    Pass,
    /// Every failed check is a listed known defect.
    KnownFailure(Vec<CheckResult>),
    Fail(Vec<CheckResult>),
    /// A listed defect did not show: the list is out of date.
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
    /// QEMU's stderr and console tails when the QEMU verdict is not ok.
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
    /// Guest copy rate (MiB/s) through a read-write mapping and in guest RAM.
    pub bandwidth: Option<(f64, f64)>,
}

pub struct SuiteReport {
    pub qemu: QemuInfo,
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

fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map(|_| ()).map_err(|e| format!("/dev/kvm: {e}"))
}

/// What went wrong while booting: QEMU died (a verdict) or something else (an error).
enum BootError {
    Died(String),
    Other(String),
}

impl BootError {
    fn text(&self) -> &str {
        match self {
            BootError::Died(s) | BootError::Other(s) => s,
        }
    }
}

/// A booted QEMU target (its backend server lives in the target).
struct QemuTarget {
    target: Target,
    boot_time: Duration,
}

/// Where a boot keeps its logs, and the short directory its sockets live under.
#[derive(Clone, Copy)]
struct Dirs<'a> {
    logs: &'a Path,
    sockets: &'a Path,
}

fn boot(cfg: &SuiteConfig, spec: &DeviceSpec, accel: Accel, init: bool, dirs: Dirs<'_>) -> Result<QemuTarget, BootError> {
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
    };
    let qemu = Qemu::boot(&boot).map_err(|(e, died)| if died { BootError::Died(e) } else { other(e) })?;
    let boot_time = qemu.boot_time;
    let chan = server.channel(CHANNEL_TIMEOUT).map_err(|e| other(format!("backend channel: {e}")))?;
    let mut guest = QemuGuest::new(qemu);
    if !guest.qemu.ready_line.contains(" device ") {
        return Err(other(format!("the guest agent found no test device: {}", guest.qemu.ready_line)));
    }
    guest.reset(init).map_err(|e| other(format!("initialising the device: {e}")))?;
    let target = Target::new(MappingManager::new(spec.clone(), chan), Box::new(guest), server);
    Ok(QemuTarget { target, boot_time })
}

fn boot_with_fallback(cfg: &SuiteConfig, dirs: Dirs<'_>) -> Result<(QemuTarget, Accel, Option<String>), String> {
    let try_kvm = match cfg.accel {
        AccelChoice::Tcg => false,
        AccelChoice::Kvm => true,
        AccelChoice::Auto => kvm_usable().is_ok(),
    };
    if try_kvm {
        match boot(cfg, &cfg.spec, Accel::Kvm, true, dirs) {
            Ok(t) => return Ok((t, Accel::Kvm, None)),
            Err(e) if cfg.accel == AccelChoice::Kvm || interrupted() => return Err(format!("KVM boot failed: {}", e.text())),
            Err(e) => {
                let note = format!("KVM boot failed ({}); fell back to TCG", e.text());
                eprintln!("vm-test: {note}");
                let t = boot(cfg, &cfg.spec, Accel::Tcg, true, dirs).map_err(|e| e.text().to_string())?;
                return Ok((t, Accel::Tcg, Some(note)));
            }
        }
    }
    let note = (cfg.accel == AccelChoice::Auto).then(|| format!("TCG: {}", kvm_usable().err().unwrap_or_default()));
    let t = boot(cfg, &cfg.spec, Accel::Tcg, true, dirs).map_err(|e| e.text().to_string())?;
    Ok((t, Accel::Tcg, note))
}

/// The reference model behind its own backend (socket under `sockets`), as a target.
pub fn model_target(spec: &DeviceSpec, faults: Faults, init: bool, sockets: &Path) -> Result<Target, String> {
    let server = BackendServer::start_unvalidated_in(spec.clone(), sockets).map_err(|e| format!("starting the model's backend: {e}"))?;
    let model = ModelFrontend::connect(server.socket_path(), u64::from(spec.num_queues), faults).map_err(|e| e.to_string())?;
    if init {
        model.start().map_err(|e| e.to_string())?;
    }
    let chan = server.channel(CHANNEL_TIMEOUT).map_err(|e| e.to_string())?;
    Ok(Target::new(MappingManager::new(spec.clone(), chan), Box::new(ModelGuest { model }), server))
}

/// Turns check results into a verdict; `defects` are those that apply here.
pub fn judge(result: Result<Vec<CheckResult>, String>, scenario: &str, defects: &[&KnownDefect]) -> Verdict {
    let checks = match result {
        Ok(c) => c,
        Err(e) => return Verdict::Error(e),
    };
    let listed = |c: &str| defects.iter().any(|d| d.scenario == scenario && d.check == c);
    let failed: Vec<CheckResult> = checks.iter().filter(|c| !c.passed).cloned().collect();
    let unexpected: Vec<String> = checks.iter().filter(|c| c.passed && listed(&c.check)).map(|c| c.check.clone()).collect();
    if failed.iter().any(|c| !listed(&c.check)) {
        Verdict::Fail(failed)
    } else if !unexpected.is_empty() {
        Verdict::UnexpectedPass(unexpected)
    } else if !failed.is_empty() {
        Verdict::KnownFailure(failed)
    } else {
        Verdict::Pass
    }
}

/// Runs one scenario on a target (after a device reset when `prepare`);
/// returns its checks or an error, and how long it took.
pub fn run_on(scn: &Scenario, t: &mut Target, prepare: bool) -> (Result<Vec<CheckResult>, String>, Duration) {
    let start = Instant::now();
    let res = if prepare {
        t.guest.reset(scn.init).map_err(|e| format!("resetting the device before the scenario: {e}"))
    } else {
        Ok(())
    };
    let res = res.and_then(|()| {
        t.mgr.forget_all();
        run_steps(scn, t)
    });
    (res, start.elapsed())
}

fn defects_for<'a>(cfg: &'a SuiteConfig, scn: &Scenario) -> Vec<&'a KnownDefect> {
    cfg.known_defects.iter().filter(|d| d.applies(cfg.qemu.version, &scn.name, &d.check)).collect()
}

fn report(scn: &Scenario, q: (Result<Vec<CheckResult>, String>, Duration), m: (Result<Vec<CheckResult>, String>, Duration), defects: &[&KnownDefect], qlog: impl FnOnce() -> String) -> ScenarioReport {
    let qemu_checks = q.0.clone().unwrap_or_default();
    let model_checks = m.0.clone().unwrap_or_default();
    let qemu = judge(q.0, &scn.name, defects);
    let model = if scn.qemu_only { Verdict::Skipped("fault scenario: QEMU only".into()) } else { judge(m.0, &scn.name, &[]) };
    let qemu_log = (!qemu.ok()).then(qlog);
    ScenarioReport {
        name: scn.name.clone(),
        description: scn.description.clone(),
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

/// A scenario with a QEMU and a model of its own (probes that may kill QEMU).
fn run_own_boot(cfg: &SuiteConfig, scn: &Scenario, accel: Accel, run_dir: &Path, sockets: &Path) -> Result<ScenarioReport, String> {
    let spec = scenario_spec(&cfg.spec, scn);
    // Inside the run directory, which is kept when the run fails.
    let dir = run_dir.join(&scn.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let defects = defects_for(cfg, scn);
    let start = Instant::now();
    let before = leaks::Snapshot::take();
    let (mut q, qlog) = match boot(cfg, &spec, accel, scn.init, Dirs { logs: &dir, sockets }) {
        Ok(mut qt) => {
            let r = run_on(scn, &mut qt.target, false);
            let log = qt.target.guest.log_text();
            qt.target.guest.shutdown();
            (r, log)
        }
        Err(BootError::Died(e)) => {
            let check = CheckResult { check: "frontend-survives".into(), passed: false, evidence: format!("QEMU died while booting with regions {:?}: {e}", spec.regions) };
            ((Ok(vec![check]), start.elapsed()), e)
        }
        Err(BootError::Other(e)) => ((Err(e), start.elapsed()), String::new()),
    };
    // Everything of that boot is torn down now: nothing of it may remain.
    let mut leaks = before.leaks_after(&dir, Duration::from_secs(1));
    leaks.extend(before.leftovers_in(sockets));
    if let Ok(checks) = &mut q.0 {
        checks.push(CheckResult {
            check: "no-leaks".into(),
            passed: leaks.is_empty(),
            evidence: if leaks.is_empty() { "no child process, fd, socket or temp dir left".into() } else { leaks.join("; ") },
        });
    }
    let m = if scn.qemu_only {
        (Ok(Vec::new()), Duration::ZERO)
    } else {
        match model_target(&spec, Faults::default(), scn.init, sockets) {
            Ok(mut t) => run_on(scn, &mut t, false),
            Err(e) => (Err(e), Duration::ZERO),
        }
    };
    Ok(report(scn, q, m, &defects, || qlog))
}

/// Measures guest copy bandwidth through a read-write mapping and in guest RAM.
fn measure_bandwidth(t: &mut Target) -> Result<(f64, f64), String> {
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
    let text = t.guest.bandwidth(0, LEN, 64)?;
    let field = |k: &str| text.split_whitespace().find_map(|w| w.strip_prefix(k)?.strip_prefix('=')?.parse::<f64>().ok());
    let res = field("shm_mib_s").zip(field("ram_mib_s")).ok_or_else(|| format!("bad bandwidth reply {text:?}"));
    let _ = t.mgr.unmap(0, 0, LEN);
    res
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

fn run_in(cfg: &SuiteConfig, dirs: Dirs<'_>, suite_start: Instant) -> Result<SuiteReport, String> {
    let (mut qt, accel, accel_note) = boot_with_fallback(cfg, dirs)?;
    let mut model = model_target(&cfg.spec, Faults::default(), true, dirs.sockets)?;
    let mut reports = Vec::new();
    let mut qemu_dead: Option<String> = None;
    for scn in cfg.scenarios.iter().filter(|s| !s.own_boot) {
        if interrupted() {
            return Err("interrupted".into());
        }
        let defects = defects_for(cfg, scn);
        let q = match &qemu_dead {
            Some(name) => (Err(format!("not run: QEMU died in scenario {name}")), Duration::ZERO),
            None => run_on(scn, &mut qt.target, true),
        };
        let m = run_on(scn, &mut model, true);
        if qemu_dead.is_none() && qt.target.guest.gone().is_some() {
            qemu_dead = Some(scn.name.clone());
        }
        let guest = &qt.target.guest;
        reports.push(report(scn, q, m, &defects, || guest.log_text()));
    }
    let mut measurements = Measurements::default();
    if qemu_dead.is_none() {
        measurements.bandwidth = measure_bandwidth(&mut qt.target).map_err(|e| eprintln!("vm-test: bandwidth not measured: {e}")).ok();
    }
    measurements.qemu_map = std::mem::take(&mut qt.target.map_latencies);
    measurements.qemu_unmap = std::mem::take(&mut qt.target.unmap_latencies);
    measurements.qemu_table_lag = std::mem::take(&mut qt.target.table_lags);
    measurements.model_map = std::mem::take(&mut model.map_latencies);
    measurements.model_unmap = std::mem::take(&mut model.unmap_latencies);
    measurements.model_table_lag = std::mem::take(&mut model.table_lags);
    let boot_time = qt.boot_time;
    qt.target.guest.shutdown();
    // Own boots check that nothing is left under the socket dir: the shared
    // targets go first.
    drop(qt);
    drop(model);
    for scn in cfg.scenarios.iter().filter(|s| s.own_boot) {
        if interrupted() {
            return Err("interrupted".into());
        }
        reports.push(run_own_boot(cfg, scn, accel, dirs.logs, dirs.sockets)?);
    }
    Ok(SuiteReport {
        qemu: cfg.qemu.clone(),
        accel,
        accel_note,
        boot_time,
        suite_time: suite_start.elapsed(),
        scenarios: reports,
        measurements,
        kept_logs: None,
    })
}
