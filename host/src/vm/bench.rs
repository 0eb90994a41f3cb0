//! What the bench measures on a boot with nothing else running: boot to
//! agent ready and guest copy bandwidth through a mapping against guest RAM.
//! Measures; the bench report (`report`) summarises.

use std::time::Duration;

use super::boot::{BootError, Dirs, boot, shutdown_check};
use super::config::SuiteConfig;
use super::guest::{CopyRounds, GuestError};
use super::qemu::Accel;
use super::steps::target::Target;
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
    Unfit(#[from] Unfit),
    #[error("{0}")]
    Shutdown(String),
}

/// Why a boot's copy timings are not good enough to report.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Unfit {
    #[error("bandwidth mapping refused (ack {0})")]
    Refused(u64),
    #[error("the shortest timed copy took {shortest} ticks and the clock is known to ±{:.3} % ({clock}): a copy's timing could be off by {:.3} %, more than {:.1} %", uncertainty * 100.0, error * 100.0, MAX_TIMING_ERROR * 100.0)]
    Coarse { shortest: u64, uncertainty: f64, clock: String, error: f64 },
    /// Still unfit after every attempt: the last attempt's reason.
    #[error("{last} (attempt {attempt} of {BANDWIDTH_ATTEMPTS})")]
    Attempt { last: Box<Unfit>, attempt: usize },
    #[error("not measured")]
    NotMeasured,
}

/// What the bench measures on a boot with nothing else running.
pub struct BootAlone {
    /// Boot to agent ready.
    pub boot_time: Duration,
    /// Guest copy timings through a read-write mapping and in guest RAM,
    /// or why they could not be measured (the boot's time still counts).
    pub bandwidth: Result<CopyRounds, Unfit>,
}

/// How many times a boot alone measures bandwidth (each attempt calibrates
/// the guest's clock anew) before it says why it could not.
const BANDWIDTH_ATTEMPTS: usize = 3;

/// One boot with nothing else running, for the bench: boot to agent ready
/// with the suite's device, copy bandwidth (tried again with a new clock
/// calibration when the clock was too coarse), then a clean shutdown (else
/// an error).
pub fn boot_alone(cfg: &SuiteConfig, accel: Accel) -> Result<BootAlone, BenchError> {
    let logs = tempfile::Builder::new()
        .prefix("boot-alone-")
        .tempdir_in(&cfg.work_dir)
        .map_err(|source| BenchError::Io { what: "log dir", source })?;
    let sockets = tempfile::Builder::new()
        .prefix("shmem-boot-")
        .tempdir()
        .map_err(|source| BenchError::Io { what: "socket dir", source })?;
    let device = (cfg.spec.clone(), cfg.layout.clone());
    let mut qt = boot(&cfg.boot_spec(&device, None), accel, Dirs { logs: logs.path(), sockets: sockets.path() })?;
    let mut bandwidth = Err(Unfit::NotMeasured);
    for attempt in 1..=BANDWIDTH_ATTEMPTS {
        bandwidth = match measure_bandwidth(&mut qt.target) {
            Ok(r) => Ok(r),
            Err(BenchError::Unfit(why)) => {
                qt.target.guest.forget_clock();
                Err(Unfit::Attempt { last: Box::new(why), attempt })
            }
            Err(e) => return Err(e),
        };
        if bandwidth.is_ok() {
            break;
        }
    }
    let shutdown = shutdown_check(qt.target.guest.as_mut());
    if !shutdown.passed {
        return Err(BenchError::Shutdown(shutdown.evidence));
    }
    Ok(BootAlone { boot_time: qt.boot_time, bandwidth })
}

/// The most a timed copy's duration may be off: one tick of resolution
/// over its length, plus the clock calibration's relative uncertainty.
const MAX_TIMING_ERROR: f64 = 0.01;

/// Whether copy timings are good enough to report: the shortest copy's
/// resolution error and the calibration's uncertainty together stay within
/// [`MAX_TIMING_ERROR`]. Err says by how much they are not.
pub fn timing_fit(rounds: &CopyRounds) -> Result<(), Unfit> {
    let shortest = rounds.shortest();
    let error = if shortest == 0 { f64::INFINITY } else { 1.0 / shortest as f64 } + rounds.clock.uncertainty;
    if error <= MAX_TIMING_ERROR {
        return Ok(());
    }
    Err(Unfit::Coarse { shortest, uncertainty: rounds.clock.uncertainty, clock: rounds.clock.to_string(), error })
}

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
        return Err(Unfit::Refused(o.reply.ack).into());
    }
    let res = t.guest.bandwidth(0, LEN, 64, 7);
    let _ = t.mgr.unmap(0, 0, LEN);
    let rounds = res?;
    timing_fit(&rounds)?;
    Ok(rounds)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::vm::guest::GuestClock;

    fn rounds(ticks: u64, uncertainty: f64) -> CopyRounds {
        let clock = GuestClock { hz: 2e9, uncertainty, window: Duration::from_millis(300) };
        CopyRounds { clock, bytes: 1 << 18, shm_ticks: vec![ticks; 3], ram_ticks: vec![ticks * 2; 3] }
    }

    #[test]
    fn copy_timings_are_refused_when_the_clock_or_the_copy_is_too_coarse() {
        assert!(timing_fit(&rounds(20_000_000, 0.001)).is_ok());
        let err = timing_fit(&rounds(20_000_000, 0.02)).unwrap_err().to_string();
        assert!(err.contains("±2.000 %"), "an uncertain calibration: {err}");
        assert!(timing_fit(&rounds(50, 0.001)).is_err(), "a copy of a few ticks");
    }
}
