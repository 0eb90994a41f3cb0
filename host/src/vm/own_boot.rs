//! Own boots: a scenario with a QEMU (through the recording relay, unless it
//! measures a race) and a model of its own (probes that may kill QEMU, other
//! devices, fault injection), run in this process or in a worker process
//! each (`pool`), with the self-check that nothing of the boot remains.
//! Judging stays with the runner (`vm`).

use std::path::Path;
use std::time::{Duration, Instant};

use super::boot::{BootError, Dirs, boot, finish};
use super::config::{SuiteConfig, backend_defects_for, defects_for};
use super::own_run::{OwnBootRun, finish_relay, leak_checked};
use super::qemu::Accel;
use super::run::{run_model_boot, run_on};
use super::scenario::Scenario;
use shmem_judge::check::CheckResult;
use shmem_judge::outcome::{ErrorKind, Failure};
use shmem_judge::scenario::{Run, ScenarioReport, report};

/// A scenario with a QEMU and a model of its own (probes that may kill
/// QEMU), then the self-check that nothing of that boot remains. The leak
/// check looks at the whole process: run one own boot at a time per process.
pub fn own_boot_run(cfg: &SuiteConfig, scn: &Scenario, accel: Accel, run_dir: &Path, sockets: &Path) -> OwnBootRun {
    let device = cfg.device_of(scn);
    // Inside the run directory, which is kept when the run fails.
    let dir = run_dir.join(&scn.name);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return OwnBootRun::failed(ErrorKind::Io, format!("create {}: {e}", dir.display()));
    }
    if let Some(m) = &scn.media {
        return super::conformance_boot::conformance_boot_run(cfg, m, accel, &dir, sockets);
    }
    let start = Instant::now();
    let mut boot_secs = None;
    let (qemu, (took, qemu_log, qemu_wire)) = leak_checked(&dir, sockets, || {
        match boot(&cfg.boot_spec(&device, Some(scn)), accel, Dirs { logs: &dir, sockets }) {
            Ok(mut qt) => {
                boot_secs = Some(qt.boot_time.as_secs_f64());
                let (res, took) = run_on(scn, &mut qt.target, false);
                let res = res.map(|checks| {
                    let mut all = std::mem::take(&mut qt.boot_checks);
                    all.extend(checks);
                    finish(&mut qt.target, &mut all);
                    all
                });
                let mut log = qt.target.guest.log_text();
                let wire = qt.target.relay.take().map(|r| finish_relay(r, &mut log));
                (res, (took, log, wire))
            }
            Err(BootError::Died(death)) => (Ok(vec![boot_death(scn, &death)]), (start.elapsed(), death.said, None)),
            Err(e) => (Err(Failure { kind: e.kind(), message: e.to_string() }), (start.elapsed(), String::new(), None)),
        }
    });
    let m = if scn.qemu_only { (Ok(Vec::new()), Duration::ZERO) } else { model_half(&device, scn, &dir, sockets) };
    OwnBootRun {
        qemu,
        qemu_secs: took.as_secs_f64(),
        model: m.0,
        model_secs: m.1.as_secs_f64(),
        qemu_log,
        boot_secs,
        qemu_wire,
    }
}

/// What QEMU prefixes the error of a `-device` option it could not realize with.
const DEVICE_REFUSAL: &str = "-device vhost-user-test-device-pci";

/// What a QEMU that ended while booting means: a clean refusal of the
/// device at realize (a non-zero status, no signal, and QEMU's error about
/// the test device's `-device` option) passes `boot-refused-cleanly` where
/// the scenario allows one; anything else (a signal, a silent exit, a
/// startup failure about something else) is a failed `frontend-survives`
/// at step "boot".
fn boot_death(scn: &Scenario, death: &super::guest::Death) -> CheckResult {
    let status = death.exit.strip_prefix("status ").and_then(|c| c.parse::<i32>().ok());
    let said = shmem_judge::check::said_fact(&death.said);
    if scn.boot_refusal_ok && status.is_some_and(|c| c != 0) && death.said.contains(DEVICE_REFUSAL) {
        let evidence =
            format!("QEMU refused the device at realize and exited cleanly ({}); it said: {said}", death.exit);
        return CheckResult::new("boot-refused-cleanly", true, evidence).with("exit", &death.exit).with("said", said);
    }
    death.check("boot")
}

/// The model half of an own boot, then its own `no-leaks` check.
pub fn model_half(
    device: &(crate::spec::DeviceSpec, Vec<super::guest::RegionWindow>),
    scn: &Scenario,
    dir: &Path,
    sockets: &Path,
) -> Run {
    leak_checked(dir, sockets, || run_model_boot(device, scn, sockets))
}

/// Judges an own boot's run into its report row.
pub(super) fn own_boot_report(
    cfg: &SuiteConfig,
    scn: &Scenario,
    accel: Accel,
    run: OwnBootRun,
    boot_times: &mut Vec<Duration>,
) -> ScenarioReport {
    boot_times.extend(run.boot_secs.map(Duration::from_secs_f64));
    let defects = defects_for(cfg, accel, scn);
    let model_defects = backend_defects_for(cfg, shmem_judge::defects::MODEL_ACCEL, scn);
    let (q, m) =
        ((run.qemu, Duration::from_secs_f64(run.qemu_secs)), (run.model, Duration::from_secs_f64(run.model_secs)));
    let log = run.qemu_log;
    let row = report((&scn.name, &scn.description), scn.qemu_only, q, m, (&defects, &model_defects), || log);
    ScenarioReport { qemu_wire: run.qemu_wire, ..row }
}
