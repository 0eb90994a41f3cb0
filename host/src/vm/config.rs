//! What xtask hands the runner (`SuiteConfig`): QEMU, kernel, scenarios,
//! known-defect lists, the backends under test; and what a scenario takes
//! of it: its device, its boot, the entries listed for it. Data and lookups
//! only; nothing here runs.

use std::path::PathBuf;

use shmem_judge::defects::KnownDefect;
use shmem_judge::listing::Listing;

use super::accel::AccelChoice;
use super::boot::BootSpec;
use super::guest::RegionWindow;
use super::qemu::{Accel, QemuInfo};
use super::scenario::{MediaBuild, Scenario, SuiteDevice};
use crate::conformance::BackendUnderTest;
use crate::spec::DeviceSpec;

/// Everything xtask hands the runner.
pub struct SuiteConfig {
    pub qemu: QemuInfo,
    /// What the report's first line says of how this QEMU was chosen (a
    /// provisioned build other than the pinned one, say).
    pub qemu_note: Option<String>,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: AccelChoice,
    pub spec: DeviceSpec,
    /// Where the guest must find the suite device's regions (`tests/suite.toml`'s `layout`).
    pub layout: Vec<RegionWindow>,
    pub scenarios: Vec<Scenario>,
    /// The known defects to judge by (empty with `--known-defects none`).
    pub known_defects: Vec<KnownDefect>,
    /// Where they came from, for the report ("none" for none).
    pub known_defects_source: String,
    /// A command that runs one own boot in a process of its own (completed
    /// with `--scenario PATH --accel NAME --logs DIR`; prints an
    /// [`super::own_run::OwnBootRun`] as JSON): own boots then run in parallel, each
    /// with its own leak self-check. `None`: one after another in this process.
    pub worker: Option<Vec<String>>,
    /// Parent of the run directory (kept there when the run fails).
    pub work_dir: PathBuf,
    /// The builds of the virtio-media backend media scenarios run against,
    /// each with why there is none where there is none (each media scenario
    /// of that build then reports it as an error).
    pub media_backends: Vec<(MediaBuild, Result<BackendUnderTest, NoBackend>)>,
    /// Its known defects, keyed on its version (`tests/backend-defects.toml`).
    pub backend_defects: Vec<KnownDefect>,
}

/// Why a media scenario has no backend of its build.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NoBackend {
    /// Finding or building it failed, as the runner's caller said.
    #[error("{0}")]
    Unavailable(String),
    #[error("no {0} build of the virtio-media backend was given to this run")]
    NotGiven(&'static str),
}

impl SuiteConfig {
    /// The backend of a media scenario's build, or why there is none.
    pub fn media_backend(&self, build: MediaBuild) -> Result<&BackendUnderTest, NoBackend> {
        match self.media_backends.iter().find(|(b, _)| *b == build) {
            Some((_, Ok(b))) => Ok(b),
            Some((_, Err(why))) => Err(why.clone()),
            None => Err(NoBackend::NotGiven(build.name())),
        }
    }

    /// What a boot of scenario `scn` needs (its own device, or the suite's).
    pub fn boot_spec<'a>(
        &'a self,
        device: &'a (DeviceSpec, Vec<RegionWindow>),
        scn: Option<&Scenario>,
    ) -> BootSpec<'a> {
        BootSpec {
            qemu: &self.qemu,
            kernel: &self.kernel,
            initramfs: &self.initramfs,
            spec: &device.0,
            layout: &device.1,
            init: scn.is_none_or(|s| s.init),
            smp: scn.map_or(1, |s| s.smp),
            // Not on the shared boot: its latencies are compared with the model's, which has no relay.
            relay: scn.is_some_and(|s| !s.measures_a_race()),
        }
    }

    /// The device a scenario runs with (its own, unvalidated, or the
    /// suite's) and where the guest must find its regions.
    pub fn device_of(&self, scn: &Scenario) -> (DeviceSpec, Vec<RegionWindow>) {
        (scenario_spec(&self.spec, scn), scn.device.as_ref().map_or_else(|| self.layout.clone(), SuiteDevice::layout))
    }
}

/// The known-defect entries of a scenario, as they relate to this build and
/// accelerator; for a media scenario, the backend's entries too.
pub fn defects_for<'a>(cfg: &'a SuiteConfig, accel: Accel, scn: &Scenario) -> Listing<'a> {
    let qemu = Listing::of(&cfg.known_defects, &cfg.qemu.build, accel.name(), &scn.name);
    qemu.and(backend_defects_for(cfg, accel.name(), scn))
}

/// The backend's known-defect entries of a media scenario on frontend
/// `accel` (an accelerator, or `model`); none for any other scenario.
pub fn backend_defects_for<'a>(cfg: &'a SuiteConfig, accel: &str, scn: &Scenario) -> Listing<'a> {
    match scn.media.map(|m| cfg.media_backend(m.build)) {
        Some(Ok(b)) => Listing::of_backend(&cfg.backend_defects, &b.version, &cfg.qemu.build, accel, &scn.name),
        _ => Listing::default(),
    }
}

/// The device a scenario runs with: its own (unvalidated) or the suite's.
pub fn scenario_spec(suite: &DeviceSpec, scn: &Scenario) -> DeviceSpec {
    scn.device.as_ref().map_or_else(|| suite.clone(), |d| d.spec())
}
