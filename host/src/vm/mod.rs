//! The VM runner: boots QEMU with the test device against our backend, runs
//! every scenario on it and on the reference model, records what it saw,
//! and hands it to the judge (`shmem_judge`, no I/O). xtask only builds
//! artefacts and calls [`run_suite`]. Where each job lives:
//!
//! - [`suite`]: running a suite (shared boot, own boots, rows); [`config`]: what a suite runs with;
//!   [`run`]: one scenario on one target; [`own_boot`] + [`own_run`]: own boots in workers.
//! - [`boot`]: booting QEMU or the model as a target, and the boot checks; [`accel`]: KVM or TCG.
//! - [`steps`]: the step target and one function per step kind, the doorbell probe among them.
//! - [`guest`]: the guest trait, the QEMU guest (agent protocol, clock, pinning) and the model guest; [`qemu`]: the QEMU process.
//! - [`conformance_boot`]: a backend under test behind QEMU, driven by the guest agent.
//! - [`scenario`]: scenario and suite files; [`bounds`]: their values bounded; [`lists`]: reading the known-defect lists.
//! - [`report`]: human, JSON and JUnit output; [`bench`]: boot-alone measurements;
//!   [`replicate`]: `--compare`'s probe boots of A and B in turn.
//! - [`fuzz`]: the differential fuzzer; [`leaks`]: the runner's self-check; [`error`]: a scenario's run error.

pub mod accel;
pub mod bench;
pub mod boot;
pub mod bounds;
pub mod config;
pub mod conformance_boot;
pub mod error;
pub mod fuzz;
pub mod guest;
pub mod leaks;
pub mod lists;
pub mod own_boot;
pub mod own_run;
pub mod pool;
pub mod qemu;
pub mod qemu_exit;
pub mod replicate;
pub mod run;
pub mod scenario;
pub mod steps;
pub mod suite;

use std::sync::atomic::{AtomicBool, Ordering};

pub use accel::AccelChoice;
pub use bench::{BootAlone, boot_alone};
pub use boot::{BootError, model_target};
pub use config::{SuiteConfig, scenario_spec};
pub use error::RunError;
pub use own_run::OwnBootRun;
pub use run::run_on;
pub use suite::{Measurements, SHARED_BOOT, SuiteError, SuiteReport, run_suite};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C (SIGINT) and SIGTERM (a CI job cancelled) end the run
/// cleanly: every wait checks [`interrupted`], every child is reaped.
pub fn install_interrupt_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_sigint as *const () as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A QEMU booted with the suite's device, initialised, as a target (the
/// fuzzer's subject); logs under `logs`, sockets under `sockets`.
pub fn qemu_target(
    cfg: &SuiteConfig,
    accel: qemu::Accel,
    logs: &std::path::Path,
    sockets: &std::path::Path,
) -> Result<steps::target::Target, BootError> {
    let device = (cfg.spec.clone(), cfg.layout.clone());
    boot::boot(&cfg.boot_spec(&device, None), accel, boot::Dirs { logs, sockets }).map(|qt| qt.target)
}
