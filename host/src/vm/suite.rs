//! Running a suite: one shared QEMU boot and one model for the shared
//! scenarios, own boots (in worker processes) for the rest; each scenario's
//! checks recorded on both targets and handed to the judge (`shmem_judge`). The
//! runner decides nothing itself.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmem_judge::listing::Listing;
use shmem_judge::outcome::{ErrorKind, Failure};
use shmem_judge::scenario::{ScenarioReport, report};

use super::accel::AccelPlan;
use super::boot::{BootError, Dirs, QemuTarget, boot_with_fallback, layout_check, model_target, shutdown_check};
use super::config::{SuiteConfig, defects_for};
use super::interrupted;
use super::own_boot::{own_boot_report, own_boot_run};
use super::own_run::OwnBootRun;
use super::pool::Pool;
use super::qemu::{Accel, QemuInfo};
use super::run::run_on;
use super::scenario::Scenario;
use super::steps::target::Target;
use crate::model::Faults;

/// Why a suite could not be run (its scenarios' failures are verdicts, not this).
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("interrupted")]
    Interrupted,
    #[error("an own-boot pool thread panicked: {0}")]
    PoolPanicked(String),
    #[error("{source}\nlogs kept in {}", kept.display())]
    LogsKept { source: Box<SuiteError>, kept: PathBuf },
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
    pub qemu_note: Option<String>,
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
        !self.scenarios.is_empty() && self.scenarios.iter().all(ScenarioReport::ok)
    }
}

/// The report row of the shared boot's own checks (layout at boot, clean shutdown).
pub const SHARED_BOOT: &str = "shared-boot";

/// What is told of each scenario's row as soon as it is judged (the
/// progress lines): called from any thread, in the order rows finish.
pub type OnRow<'a> = &'a (dyn Fn(&ScenarioReport) + Sync);

/// Boots once for the shared scenarios (own-boot ones get their own QEMU),
/// runs each on QEMU and on the model, reports (each row to `on_row` as it
/// is judged). The run directory is kept when something failed.
pub fn run_suite(cfg: &SuiteConfig, on_row: OnRow<'_>) -> Result<SuiteReport, SuiteError> {
    let io = |what: String| move |source| SuiteError::Io { what, source };
    std::fs::create_dir_all(&cfg.work_dir).map_err(io(format!("create {}", cfg.work_dir.display())))?;
    let run_dir = tempfile::Builder::new().prefix("run-").tempdir_in(&cfg.work_dir).map_err(io("run dir".into()))?;
    // Sockets go under the system temp dir: a Unix socket path must stay
    // below 108 bytes, and a clone's target/ may be deep.
    let sockets = tempfile::Builder::new().prefix("shmem-vm-").tempdir().map_err(io("socket dir".into()))?;
    let suite_start = Instant::now();
    let result = run_in(cfg, Dirs { logs: run_dir.path(), sockets: sockets.path() }, suite_start, on_row);
    if result.as_ref().is_ok_and(SuiteReport::ok) {
        return result;
    }
    let kept = run_dir.keep();
    match result {
        Ok(mut r) => {
            r.kept_logs = Some(kept);
            Ok(r)
        }
        Err(e) => Err(SuiteError::LogsKept { source: Box::new(e), kept }),
    }
}

/// The own boots' rows as their runs end (from the pool's threads, or
/// here one after another when there is no worker), judged at once and
/// told to `on_row`; the boot times into `boot_times`.
struct OwnRows<'a> {
    cfg: &'a SuiteConfig,
    own: &'a [&'a Scenario],
    rows: Mutex<Vec<Option<ScenarioReport>>>,
    boot_times: Mutex<Vec<Duration>>,
    on_row: OnRow<'a>,
}

impl<'a> OwnRows<'a> {
    fn new(cfg: &'a SuiteConfig, own: &'a [&'a Scenario], on_row: OnRow<'a>) -> Self {
        let rows = Mutex::new(own.iter().map(|_| None).collect());
        OwnRows { cfg, own, rows, boot_times: Mutex::new(Vec::new()), on_row }
    }

    /// Judges the run of `own[i]` into its row.
    fn done(&self, i: usize, accel: Accel, run: OwnBootRun) {
        let mut times = self.boot_times.lock().unwrap_or_else(|p| p.into_inner());
        let row = own_boot_report(self.cfg, self.own[i], accel, run, &mut times);
        drop(times);
        (self.on_row)(&row);
        self.rows.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(row);
    }

    /// Without a pool: each own boot here, one after another.
    fn run_here(&self, accel: Accel, dirs: Dirs<'_>) -> Result<(), SuiteError> {
        for (i, scn) in self.own.iter().enumerate() {
            if interrupted() {
                return Err(SuiteError::Interrupted);
            }
            self.done(i, accel, own_boot_run(self.cfg, scn, accel, dirs.logs, dirs.sockets));
        }
        Ok(())
    }

    /// The rows in the scenarios' order (one never run says so), and the boot times.
    fn finish(&self, accel: Accel, m: &mut Measurements) -> Vec<ScenarioReport> {
        m.boot_times.extend(std::mem::take(&mut *self.boot_times.lock().unwrap_or_else(|p| p.into_inner())));
        let rows = std::mem::take(&mut *self.rows.lock().unwrap_or_else(|p| p.into_inner()));
        let not_run = |scn: &Scenario| {
            let run = OwnBootRun::failed(ErrorKind::Appliance, "not run".into());
            own_boot_report(self.cfg, scn, accel, run, &mut Vec::new())
        };
        rows.into_iter().zip(self.own).map(|(row, scn)| row.unwrap_or_else(|| not_run(scn))).collect()
    }
}

fn run_in(
    cfg: &SuiteConfig,
    dirs: Dirs<'_>,
    suite_start: Instant,
    on_row: OnRow<'_>,
) -> Result<SuiteReport, SuiteError> {
    let shared: Vec<&Scenario> = cfg.scenarios.iter().filter(|s| !s.own_boot).collect();
    let own: Vec<&Scenario> = cfg.scenarios.iter().filter(|s| s.own_boot).collect();
    let mut measurements = Measurements::default();
    let mut reports = Vec::new();
    // Two VMs more than there are cores keep the cores busy while guests
    // wait on the host (a timeout, a held ack, a hang's answer timeout, a
    // shutdown); a reply-before-commit probe takes the whole budget
    // (`pool::Budget`), so nothing runs beside it.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = cfg.worker.as_deref().map(|w| Pool::new(w, &own, dirs.logs, cores + 2));
    let plan = AccelPlan::of(cfg.accel);
    let own_rows = OwnRows::new(cfg, &own, on_row);
    let own_rows = &own_rows;
    std::thread::scope(|scope| {
        // Own boots go to worker processes beside the shared boot, which
        // holds a VM of the budget till it is done; then this thread joins
        // them. They start at once when the accelerator is settled without
        // a boot (TCG, or KVM that cannot fall back), else once the shared
        // boot has chosen it.
        let shared_share = pool.as_ref().filter(|_| !shared.is_empty()).map(Pool::share);
        let start_pool = |accel: Accel| {
            let threads = (cores + 1).min(own.len());
            pool.as_ref().map_or_else(Vec::new, |p| {
                (0..threads)
                    .map(|_| scope.spawn(move || p.work(accel, &|i, run| own_rows.done(i, accel, run))))
                    .collect()
            })
        };
        let mut workers = plan.settled().map(start_pool).unwrap_or_default();
        let (accel, accel_note, boot_time) = if shared.is_empty() {
            // A filtered run without shared scenarios: no boot chose the accelerator.
            if plan.settled().is_none() {
                workers = start_pool(plan.first);
            }
            (plan.first, plan.note.clone(), None)
        } else {
            let device = (cfg.spec.clone(), cfg.layout.clone());
            let booted = boot_with_fallback(&cfg.boot_spec(&device, None), &plan, dirs)
                .map_err(SuiteError::from)
                .and_then(|(qt, accel, note)| {
                    if plan.settled().is_none() {
                        workers = start_pool(accel);
                    }
                    let boot_time = qt.boot_time;
                    run_shared(cfg, dirs, qt, accel, &shared, (&mut reports, &mut measurements), on_row)
                        .map(|()| (accel, note, Some(boot_time)))
                });
            // No own boot starts after the shared one failed (those under way end on their own).
            booted.inspect_err(|_| {
                if let Some(p) = &pool {
                    p.cancel.store(true, Ordering::SeqCst);
                }
            })?
        };
        drop(shared_share);
        if let Some(p) = &pool {
            p.work(accel, &|i, run| own_rows.done(i, accel, run));
        } else {
            own_rows.run_here(accel, dirs)?;
        }
        for w in workers {
            w.join().map_err(|p| SuiteError::PoolPanicked(crate::panic_text(p.as_ref())))?;
        }
        reports.extend(own_rows.finish(accel, &mut measurements));
        if interrupted() {
            return Err(SuiteError::Interrupted);
        }
        Ok(SuiteReport {
            qemu: cfg.qemu.clone(),
            qemu_note: cfg.qemu_note.clone(),
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
fn run_shared(
    cfg: &SuiteConfig,
    dirs: Dirs<'_>,
    mut qt: QemuTarget,
    a: Accel,
    shared: &[&Scenario],
    (reports, measurements): (&mut Vec<ScenarioReport>, &mut Measurements),
    on_row: OnRow<'_>,
) -> Result<(), SuiteError> {
    measurements.boot_times.push(qt.boot_time);
    let model_start = Instant::now();
    let mut model = model_target(&cfg.spec, Faults::default(), true, dirs.sockets)?;
    let mut model_boot = vec![layout_check(&cfg.layout, model.guest.as_ref())];
    let model_boot_time = model_start.elapsed();
    let mut qemu_dead: Option<String> = None;
    let mut rows = Vec::new();
    for scn in shared {
        if interrupted() {
            return Err(SuiteError::Interrupted);
        }
        let defects = defects_for(cfg, a, scn);
        let q = match &qemu_dead {
            Some(name) => (
                Err(Failure { kind: ErrorKind::Dead, message: format!("not run: QEMU died in scenario {name}") }),
                Duration::ZERO,
            ),
            None => run_on(scn, &mut qt.target, true),
        };
        let m = run_on(scn, &mut model, true);
        if qemu_dead.is_none() && qt.target.guest.gone().is_some() {
            qemu_dead = Some(scn.name.clone());
        }
        let guest = &qt.target.guest;
        let row = report((&scn.name, &scn.description), scn.qemu_only, q, m, (&defects, &Listing::default()), || {
            guest.log_text()
        });
        on_row(&row);
        rows.push(row);
    }
    take_measurements(measurements, &mut qt.target, &mut model);
    // The shared boot's own row: a QEMU that died in a scenario has its
    // death reported there; one that lives must quit cleanly.
    let mut qemu_boot = std::mem::take(&mut qt.boot_checks);
    if qemu_dead.is_none() {
        qemu_boot.push(shutdown_check(qt.target.guest.as_mut()));
    }
    model_boot.push(shutdown_check(model.guest.as_mut()));
    let defects = Listing::of(&cfg.known_defects, &cfg.qemu.build, a.name(), SHARED_BOOT);
    let guest = &qt.target.guest;
    let description =
        "the boot the shared scenarios run in: regions where the device file states them, a clean shutdown";
    let row = report(
        (SHARED_BOOT, description),
        false,
        (Ok(qemu_boot), qt.boot_time),
        (Ok(model_boot), model_boot_time),
        (&defects, &Listing::default()),
        || guest.log_text(),
    );
    on_row(&row);
    reports.push(row);
    reports.extend(rows);
    Ok(())
}

/// Moves the targets' latencies into the run's measurements.
fn take_measurements(m: &mut Measurements, qemu: &mut Target, model: &mut Target) {
    m.qemu_map = std::mem::take(&mut qemu.map_latencies);
    m.qemu_unmap = std::mem::take(&mut qemu.unmap_latencies);
    m.qemu_table_lag = std::mem::take(&mut qemu.table_lags);
    m.model_map = std::mem::take(&mut model.map_latencies);
    m.model_unmap = std::mem::take(&mut model.unmap_latencies);
    m.model_table_lag = std::mem::take(&mut model.table_lags);
}
