//! What the bench measures on a boot with nothing else running: boot to
//! agent ready and guest copy bandwidth through a mapping against guest RAM.
//! Measures; the bench report (`report`) summarises.

use std::time::Duration;

use super::boot::{BootError, Dirs, boot, shutdown_check};
use super::guest::{CopyRounds, GuestError};
use super::qemu::Accel;
use super::steps::Target;
use super::suite::SuiteConfig;
use crate::manager::ManagerError;

/// Why a boot alone gave no figures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("bandwidth not measured: {0}")]
    Guest(#[from] GuestError),
    #[error("bandwidth not measured: {0}")]
    Manager(#[from] ManagerError),
    /// The measurement itself is not good enough to report.
    #[error("bandwidth not measured: {0}")]
    Unfit(String),
    #[error("{0}")]
    Shutdown(String),
}

/// What the bench measures on a boot with nothing else running.
pub struct BootAlone {
    /// Boot to agent ready.
    pub boot_time: Duration,
    /// Guest copy timings through a read-write mapping and in guest RAM.
    pub bandwidth: CopyRounds,
}

/// One boot with nothing else running, for the bench: boot to agent ready
/// with the suite's device, copy bandwidth, then a clean shutdown (else an
/// error).
pub fn boot_alone(cfg: &SuiteConfig, accel: Accel) -> Result<BootAlone, BenchError> {
    let logs = tempfile::Builder::new().prefix("boot-alone-").tempdir_in(&cfg.work_dir).map_err(|source| BenchError::Io { what: "log dir", source })?;
    let sockets = tempfile::Builder::new().prefix("shmem-boot-").tempdir().map_err(|source| BenchError::Io { what: "socket dir", source })?;
    let device = (cfg.spec.clone(), cfg.layout.clone());
    let mut qt = boot(&cfg.boot_spec(&device, None), accel, Dirs { logs: logs.path(), sockets: sockets.path() })?;
    let bandwidth = measure_bandwidth(&mut qt.target)?;
    let shutdown = shutdown_check(qt.target.guest.as_mut());
    if !shutdown.passed {
        return Err(BenchError::Shutdown(shutdown.evidence));
    }
    Ok(BootAlone { boot_time: qt.boot_time, bandwidth })
}

/// Each timed copy must last at least this many ticks of the clock that times it.
const MIN_TICKS_PER_COPY: u64 = 100;

/// Measures guest copy bandwidth through a read-write mapping and in guest
/// RAM, in alternating rounds of one boot, on the guest's calibrated TSC.
fn measure_bandwidth(t: &mut Target) -> Result<CopyRounds, BenchError> {
    const LEN: u64 = 512 << 10;
    t.guest.reset(true)?;
    t.mgr.forget_all();
    if t.mgr.file("bench/bw").is_err() {
        t.mgr.create_file("bench/bw", LEN)?;
    }
    let o = t.mgr.map(0, "bench/bw", 0, 0, LEN, true)?;
    if o.reply.ack != 0 {
        return Err(BenchError::Unfit(format!("bandwidth mapping refused (ack {})", o.reply.ack)));
    }
    let res = t.guest.bandwidth(0, LEN, 64, 7);
    let _ = t.mgr.unmap(0, 0, LEN);
    let rounds = res?;
    if rounds.shortest() < MIN_TICKS_PER_COPY {
        return Err(BenchError::Unfit(format!("a timed copy took {} ticks of the guest clock; at least {MIN_TICKS_PER_COPY} are needed", rounds.shortest())));
    }
    Ok(rounds)
}
