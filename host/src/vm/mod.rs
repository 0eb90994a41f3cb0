//! The VM runner: boots QEMU with the test device against our backend, runs
//! every scenario on it and on the reference model, records what it saw,
//! and has the verdict layer judge it. xtask only builds artefacts and calls
//! [`run_suite`]. Where each job lives:
//!
//! - [`suite`]: running a suite (shared boot, own boots, rows); [`own_boot`]: own boots in workers.
//! - [`boot`]: booting QEMU or the model as a target, and the boot checks; [`accel`]: KVM or TCG.
//! - [`steps`]: one function per step kind; [`probe`]: the doorbell probe; [`check`]: what a check records.
//! - [`guest`]: the guest trait, the QEMU guest (agent protocol, clock, pinning) and the model guest; [`qemu`]: the QEMU process.
//! - [`verdict`]: judging checks against known defects, comparing runs (no I/O); [`defects`]: the list's schema.
//! - [`scenario`]: scenario and suite files; [`report`]: human, JSON and JUnit output; [`bench`]: boot-alone measurements.
//! - [`fuzz`]: the differential fuzzer; [`leaks`]: the runner's self-check; [`error`]: error kinds.

pub mod accel;
pub mod bench;
pub mod boot;
pub mod bounds;
pub mod config;
pub mod lists;
pub mod error;
pub mod fuzz;
pub mod guest;
pub mod leaks;
pub mod conformance_boot;
pub mod own_boot;
pub mod own_run;
pub mod qemu;
pub mod report;
pub mod run;
pub mod scenario;
pub mod steps;
pub mod suite;

use std::sync::atomic::{AtomicBool, Ordering};

pub use accel::AccelChoice;
pub use bench::{BootAlone, boot_alone};
pub use boot::{BootError, model_target};
pub use error::RunError;
pub use config::{SuiteConfig, scenario_spec};
pub use own_run::OwnBootRun;
pub use run::run_on;
pub use suite::{Measurements, SHARED_BOOT, SuiteError, SuiteReport, run_suite};

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

/// A QEMU booted with the suite's device, initialised, as a target (the
/// fuzzer's subject); logs under `logs`, sockets under `sockets`.
pub fn qemu_target(cfg: &SuiteConfig, accel: qemu::Accel, logs: &std::path::Path, sockets: &std::path::Path) -> Result<steps::target::Target, BootError> {
    let device = (cfg.spec.clone(), cfg.layout.clone());
    boot::boot(&cfg.boot_spec(&device, None), accel, boot::Dirs { logs, sockets }).map(|qt| qt.target)
}
