//! The VM runner: boots QEMU with the test device against our backend, runs
//! every scenario on it and on the reference model, and turns what was seen
//! into verdicts (with the known-defects list). xtask only builds artefacts
//! and calls [`run_suite`].

pub mod guest;
pub mod qemu;
pub mod scenario;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::files::{fnv1a64, pattern_byte};
use crate::manager::{Expect, MappingManager};
use crate::model::{Faults, ModelFrontend};
use crate::server::BackendServer;
use crate::spec::DeviceSpec;
use guest::{Guest, ModelGuest, Observed, QemuGuest};
use qemu::{Accel, BootConfig, Qemu, QemuInfo};
use scenario::{KnownDefect, Scenario, Step};

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

/// The outcome of one check.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub evidence: String,
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
    /// The scenario could not be run to the end (infrastructure, timeout, crash).
    Error(String),
}

impl Verdict {
    pub fn ok(&self) -> bool {
        matches!(self, Verdict::Pass | Verdict::KnownFailure(_))
    }
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::KnownFailure(_) => "KNOWN-FAIL",
            Verdict::Fail(_) => "FAIL",
            Verdict::UnexpectedPass(_) => "UNEXPECTED-PASS",
            Verdict::Error(_) => "ERROR",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

pub struct ScenarioReport {
    pub name: String,
    pub qemu: Verdict,
    pub model: Verdict,
    pub qemu_time: Duration,
    pub model_time: Duration,
    pub checks: Vec<(String, Vec<CheckResult>)>,
}

pub struct SuiteReport {
    pub qemu: QemuInfo,
    pub accel: Accel,
    pub accel_note: Option<String>,
    pub boot_time: Duration,
    pub suite_time: Duration,
    pub scenarios: Vec<ScenarioReport>,
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

/// One booted QEMU with its backend and mapping manager.
struct QemuRig {
    guest: QemuGuest,
    mgr: MappingManager,
    _server: BackendServer,
}

fn boot(cfg: &SuiteConfig, accel: Accel, run_dir: &Path) -> Result<QemuRig, String> {
    let server = BackendServer::start_in(cfg.spec.clone(), run_dir).map_err(|e| format!("starting the backend: {e}"))?;
    let boot = BootConfig {
        qemu: cfg.qemu.path.clone(),
        kernel: cfg.kernel.clone(),
        initramfs: cfg.initramfs.clone(),
        accel,
        vhost_socket: server.socket_path().to_path_buf(),
        virtio_id: cfg.spec.virtio_id,
        run_dir: run_dir.to_path_buf(),
        ready_timeout: if accel == Accel::Kvm { READY_KVM } else { READY_TCG },
    };
    let _ = std::fs::remove_file(run_dir.join("agent.sock"));
    let qemu = Qemu::boot(&boot)?;
    let chan = server.channel(CHANNEL_TIMEOUT).map_err(|e| format!("backend channel: {e}"))?;
    let mut guest = QemuGuest::new(qemu);
    if !guest.qemu.ready_line.contains(" device ") {
        return Err(format!("the guest agent found no test device: {}", guest.qemu.ready_line));
    }
    guest.reinit().map_err(|e| format!("initialising the device: {e}"))?;
    Ok(QemuRig { guest, mgr: MappingManager::new(cfg.spec.clone(), chan), _server: server })
}

fn boot_with_fallback(cfg: &SuiteConfig, run_dir: &Path) -> Result<(QemuRig, Accel, Option<String>), String> {
    let try_kvm = match cfg.accel {
        AccelChoice::Tcg => false,
        AccelChoice::Kvm => true,
        AccelChoice::Auto => kvm_usable().is_ok(),
    };
    if try_kvm {
        match boot(cfg, Accel::Kvm, run_dir) {
            Ok(rig) => return Ok((rig, Accel::Kvm, None)),
            Err(e) if cfg.accel == AccelChoice::Kvm || interrupted() => return Err(format!("KVM boot failed: {e}")),
            Err(e) => {
                let note = format!("KVM boot failed ({e}); fell back to TCG");
                eprintln!("vm-test: {note}");
                let rig = boot(cfg, Accel::Tcg, run_dir)?;
                return Ok((rig, Accel::Tcg, Some(note)));
            }
        }
    }
    let note = (cfg.accel == AccelChoice::Auto).then(|| format!("TCG: {}", kvm_usable().err().unwrap_or_default()));
    Ok((boot(cfg, Accel::Tcg, run_dir)?, Accel::Tcg, note))
}

fn model_rig(spec: &DeviceSpec, run_dir: &Path) -> Result<(ModelGuest, MappingManager, BackendServer), String> {
    let server = BackendServer::start_in(spec.clone(), run_dir).map_err(|e| format!("starting the model's backend: {e}"))?;
    let model = ModelFrontend::connect(server.socket_path(), u64::from(spec.num_queues), Faults::default())
        .map_err(|e| e.to_string())?;
    model.start().map_err(|e| e.to_string())?;
    let chan = server.channel(CHANNEL_TIMEOUT).map_err(|e| e.to_string())?;
    Ok((ModelGuest { model }, MappingManager::new(spec.clone(), chan), server))
}

/// Runs the steps of one scenario; checks never stop the run, errors do.
pub fn run_steps(scn: &Scenario, mgr: &mut MappingManager, guest: &mut dyn Guest) -> Result<Vec<CheckResult>, String> {
    let mut checks = Vec::new();
    let file = |name: &str| format!("{}/{name}", scn.name);
    for (n, step) in scn.steps.iter().enumerate() {
        let at = |e: String| format!("step {} ({:?}): {e}", n + 1, step_kind(step));
        match step {
            Step::File { name, size } => {
                mgr.create_file(&file(name), size.0).map_err(|e| at(e.to_string()))?;
            }
            Step::Fill { file: f, seed, offset, len } => {
                let hf = mgr.file(&file(f)).map_err(|e| at(e.to_string()))?;
                let len = len.map_or(hf.size().saturating_sub(offset.0), |l| l.0);
                hf.fill(offset.0, len, *seed).map_err(|e| at(e.to_string()))?;
            }
            Step::Map { shmid, file: f, fd_offset, shm_offset, len, rw, ack } => {
                let o = mgr.map(*shmid, &file(f), fd_offset.0, shm_offset.0, len.0, *rw).map_err(|e| at(e.to_string()))?;
                checks.push(CheckResult {
                    check: format!("ack-step-{}", n + 1),
                    passed: o.reply.ack == *ack,
                    evidence: format!("map shmid {shmid} offset {:#x} len {:#x} rw {rw}: ack {} (expected {ack}) in {:?}", shm_offset.0, len.0, o.reply.ack, o.reply.latency),
                });
            }
            Step::Unmap { shmid, shm_offset, len, ack } => {
                let o = mgr.unmap(*shmid, shm_offset.0, len.0).map_err(|e| at(e.to_string()))?;
                checks.push(CheckResult {
                    check: format!("ack-step-{}", n + 1),
                    passed: o.reply.ack == *ack,
                    evidence: format!("unmap shmid {shmid} offset {:#x} len {:#x}: ack {} (expected {ack})", shm_offset.0, len.0, o.reply.ack),
                });
            }
            Step::GuestWrite { shmid, offset, len, seed } => {
                guest.fill(*shmid, offset.0, len.0, *seed).map_err(at)?;
            }
            Step::HostWrite { file: f, offset, len, seed } => {
                mgr.file(&file(f)).map_err(|e| at(e.to_string()))?.fill(offset.0, len.0, *seed).map_err(|e| at(e.to_string()))?;
            }
            Step::ExpectGuest { check, shmid, offset, len, seed } => {
                let bytes: Vec<u8> = match seed {
                    Some(seed) => (0..len.0).map(|i| pattern_byte(*seed, i)).collect(),
                    None => {
                        let want = mgr.expected(*shmid, offset.0, len.0).map_err(|e| at(e.to_string()))?;
                        let bytes: Option<Vec<u8>> = want.iter().map(|e| if let Expect::Byte(b) = e { Some(*b) } else { None }).collect();
                        bytes.ok_or_else(|| at("the ledger has unmapped bytes in this range; use expect-guest-not".into()))?
                    }
                };
                let want = Observed::of(&bytes);
                let got = guest.observe(*shmid, offset.0, len.0).map_err(at)?;
                checks.push(CheckResult {
                    check: check.clone(),
                    passed: got == want,
                    evidence: format!(
                        "guest saw {}; expected {} ({})",
                        got.describe(),
                        want.describe(),
                        seed.map_or("what the ledger maps there".to_string(), |s| format!("pattern {s}"))
                    ),
                });
            }
            Step::ExpectGuestNot { check, shmid, offset, len, file: f, fd_offset } => {
                let old = mgr.file(&file(f)).map_err(|e| at(e.to_string()))?.read(fd_offset.0, len.0).map_err(|e| at(e.to_string()))?;
                let old = Observed::of(&old);
                let got = guest.observe(*shmid, offset.0, len.0).map_err(at)?;
                checks.push(CheckResult {
                    check: check.clone(),
                    passed: got != old,
                    evidence: format!("guest saw {}; the file's bytes are {}", got.describe(), old.describe()),
                });
            }
            Step::ExpectFile { check, file: f, offset, len, seed } => {
                let data = mgr.file(&file(f)).map_err(|e| at(e.to_string()))?.read(offset.0, len.0).map_err(|e| at(e.to_string()))?;
                let want: Vec<u8> = (0..len.0).map(|i| pattern_byte(*seed, i)).collect();
                let first_diff = data.iter().zip(&want).position(|(a, b)| a != b);
                checks.push(CheckResult {
                    check: check.clone(),
                    passed: first_diff.is_none(),
                    evidence: match first_diff {
                        None => format!("file holds pattern {seed} (digest {:016x})", fnv1a64(&data)),
                        Some(i) => format!(
                            "file differs from pattern {seed} first at offset {:#x}: {:#04x} instead of {:#04x}",
                            offset.0 + i as u64,
                            data[i],
                            want[i]
                        ),
                    },
                });
            }
            Step::ExpectAlive { check } => {
                let res = guest.alive();
                checks.push(CheckResult {
                    check: check.clone(),
                    passed: res.is_ok(),
                    evidence: res.err().unwrap_or_else(|| format!("{} answers", guest.kind())),
                });
            }
        }
    }
    Ok(checks)
}

fn step_kind(step: &Step) -> &'static str {
    match step {
        Step::File { .. } => "file",
        Step::Fill { .. } => "fill",
        Step::Map { .. } => "map",
        Step::Unmap { .. } => "unmap",
        Step::GuestWrite { .. } => "guest-write",
        Step::HostWrite { .. } => "host-write",
        Step::ExpectGuest { .. } => "expect-guest",
        Step::ExpectGuestNot { .. } => "expect-guest-not",
        Step::ExpectFile { .. } => "expect-file",
        Step::ExpectAlive { .. } => "expect-alive",
    }
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

fn run_one(scn: &Scenario, mgr: &mut MappingManager, guest: &mut dyn Guest, defects: &[&KnownDefect]) -> (Verdict, Vec<CheckResult>, Duration) {
    let start = Instant::now();
    let res = guest.reinit().map_err(|e| format!("re-initialising the device before the scenario: {e}")).and_then(|()| {
        mgr.forget_all();
        run_steps(scn, mgr, guest)
    });
    let checks = res.clone().unwrap_or_default();
    (judge(res, &scn.name, defects), checks, start.elapsed())
}

/// Boots once, runs every scenario on QEMU and on the model, reports.
pub fn run_suite(cfg: &SuiteConfig) -> Result<SuiteReport, String> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| format!("create {}: {e}", cfg.work_dir.display()))?;
    let run_dir = tempfile::Builder::new().prefix("run-").tempdir_in(&cfg.work_dir).map_err(|e| e.to_string())?;
    let suite_start = Instant::now();
    let result = run_in(cfg, run_dir.path(), suite_start);
    let failed = result.as_ref().map_or(true, |r| !r.ok());
    if failed {
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

fn run_in(cfg: &SuiteConfig, run_dir: &Path, suite_start: Instant) -> Result<SuiteReport, String> {
    let (mut rig, accel, accel_note) = boot_with_fallback(cfg, run_dir)?;
    let boot_time = rig.guest.qemu.boot_time;
    let (mut model, mut model_mgr, _model_server) = model_rig(&cfg.spec, run_dir)?;
    let defects: Vec<&KnownDefect> = cfg.known_defects.iter().collect();
    let mut reports = Vec::new();
    for scn in &cfg.scenarios {
        if interrupted() {
            return Err("interrupted".into());
        }
        let applicable: Vec<&KnownDefect> =
            defects.iter().copied().filter(|d| d.applies(cfg.qemu.version, &scn.name, &d.check)).collect();
        let (qv, qchecks, qt) = run_one(scn, &mut rig.mgr, &mut rig.guest, &applicable);
        let (mv, mchecks, mt) = run_one(scn, &mut model_mgr, &mut model, &[]);
        if let Verdict::Error(e) = &qv {
            eprintln!("vm-test: {} on QEMU: {e}\n{}", scn.name, rig.guest.qemu.stderr_tail());
        }
        reports.push(ScenarioReport {
            name: scn.name.clone(),
            qemu: qv,
            model: mv,
            qemu_time: qt,
            model_time: mt,
            checks: vec![("qemu".into(), qchecks), ("model".into(), mchecks)],
        });
    }
    rig.guest.qemu.stop(Duration::from_secs(10));
    Ok(SuiteReport {
        qemu: cfg.qemu.clone(),
        accel,
        accel_note,
        boot_time,
        suite_time: suite_start.elapsed(),
        scenarios: reports,
        kept_logs: None,
    })
}

/// The human report: one line per scenario, details of what failed, a summary.
pub fn print_report(r: &SuiteReport) {
    println!("QEMU {} ({}), accel {:?}{}", r.qemu.version_text, r.qemu.path.display(), r.accel, r.accel_note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default());
    println!("{:<16} {:<18} {:<12} {:>8} {:>8}", "scenario", "qemu", "model", "qemu-t", "model-t");
    for s in &r.scenarios {
        println!("{:<16} {:<18} {:<12} {:>7.2}s {:>7.2}s", s.name, s.qemu.label(), s.model.label(), s.qemu_time.as_secs_f64(), s.model_time.as_secs_f64());
        for (target, v) in [("qemu", &s.qemu), ("model", &s.model)] {
            match v {
                Verdict::Fail(c) | Verdict::KnownFailure(c) => {
                    for c in c {
                        println!("    {target}: {}/{} failed: {}", s.name, c.check, c.evidence);
                    }
                }
                Verdict::UnexpectedPass(c) => println!("    {target}: listed known defects did not show: {} (update tests/known-defects.toml)", c.join(", ")),
                Verdict::Error(e) => println!("    {target}: error: {e}"),
                Verdict::Pass => {}
            }
        }
    }
    let verdicts = r.scenarios.iter().flat_map(|s| [&s.qemu, &s.model]);
    let (mut pass, mut known, mut fail) = (0, 0, 0);
    for v in verdicts {
        match v {
            Verdict::Pass => pass += 1,
            Verdict::KnownFailure(_) => known += 1,
            _ => fail += 1,
        }
    }
    println!("boot to agent ready {:.2}s, whole suite {:.2}s", r.boot_time.as_secs_f64(), r.suite_time.as_secs_f64());
    if let Some(p) = &r.kept_logs {
        println!("logs kept in {}", p.display());
    }
    println!("{known} known failures (listed defects of this QEMU)");
    println!("vm-test: {} passed, {fail} failed", pass + known);
}
