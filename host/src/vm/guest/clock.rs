//! The guest's fine clock (its TSC) calibrated against the host's clock, and
//! the copy timings measured on it. Arithmetic over readings; the readings
//! themselves come from the agent (the caller passes how to take one).

use std::fmt;
use std::time::{Duration, Instant};

use super::GuestError;

/// The guest's TSC, calibrated against the host's clock.
#[derive(Clone, Debug, PartialEq)]
pub struct GuestClock {
    pub hz: f64,
    /// Relative uncertainty of `hz`: half the round trips over the window.
    pub uncertainty: f64,
    pub window: Duration,
}

impl fmt::Display for GuestClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest TSC at {:.1} MHz, calibrated against the host over {:?} (±{:.3} %)",
            self.hz / 1e6,
            self.window,
            self.uncertainty * 100.0
        )
    }
}

/// How long the calibration compares the guest's clock with the host's.
pub const CALIBRATION_WINDOW: Duration = Duration::from_millis(300);

/// One reading of the guest's TSC, taken at the midpoint of the quickest of
/// five round trips of `read_tsc`: (host instant, TSC, round trip).
fn reading(read_tsc: &mut dyn FnMut() -> Result<u64, GuestError>) -> Result<(Instant, u64, Duration), GuestError> {
    let mut best: Option<(Instant, u64, Duration)> = None;
    for _ in 0..5 {
        let sent = Instant::now();
        let tsc = read_tsc()?;
        let rtt = sent.elapsed();
        if best.is_none_or(|b| rtt < b.2) {
            best = Some((sent + rtt / 2, tsc, rtt));
        }
    }
    best.ok_or_else(|| GuestError::BadRequest("no tsc reading".into()))
}

/// Calibrates the guest's TSC against the host's clock: two readings
/// `window` apart (the longer, the smaller the uncertainty the round trips leave).
pub fn calibrate(
    read_tsc: &mut dyn FnMut() -> Result<u64, GuestError>,
    window: Duration,
) -> Result<GuestClock, GuestError> {
    let (t0, c0, rtt0) = reading(read_tsc)?;
    std::thread::sleep(window);
    let (t1, c1, rtt1) = reading(read_tsc)?;
    let window = t1 - t0;
    let ticks = c1.checked_sub(c0).filter(|&t| t > 0).ok_or_else(|| GuestError::BadAnswer {
        what: "the guest TSC did not advance".into(),
        text: format!("{c0} then {c1}"),
    })?;
    Ok(GuestClock {
        hz: ticks as f64 / window.as_secs_f64(),
        uncertainty: (rtt0 + rtt1).as_secs_f64() / 2.0 / window.as_secs_f64(),
        window,
    })
}

/// One bandwidth measurement: `rounds` alternating timed copy runs of
/// `bytes` each through the mapping and in guest RAM, in guest TSC ticks.
#[derive(Clone, Debug, PartialEq)]
pub struct CopyRounds {
    pub clock: GuestClock,
    pub bytes: u64,
    pub shm_ticks: Vec<u64>,
    pub ram_ticks: Vec<u64>,
}

impl CopyRounds {
    fn mib_s(&self, ticks: &[u64]) -> Vec<f64> {
        ticks.iter().map(|&t| self.bytes as f64 / (1024.0 * 1024.0) / (t as f64 / self.clock.hz)).collect()
    }
    pub fn shm_mib_s(&self) -> Vec<f64> {
        self.mib_s(&self.shm_ticks)
    }
    pub fn ram_mib_s(&self) -> Vec<f64> {
        self.mib_s(&self.ram_ticks)
    }
    /// Mapping rate over guest-RAM rate, one per round (both halves of a
    /// ratio come from the same round of the same boot).
    pub fn ratios(&self) -> Vec<f64> {
        self.ram_ticks.iter().zip(&self.shm_ticks).map(|(&r, &s)| r as f64 / s as f64).collect()
    }
    /// The shortest timed copy, in clock ticks (the clock's resolution is one tick).
    pub fn shortest(&self) -> u64 {
        self.shm_ticks.iter().chain(&self.ram_ticks).copied().min().unwrap_or(0)
    }
}
