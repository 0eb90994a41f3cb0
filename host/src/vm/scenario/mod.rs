//! Scenario and suite files (TOML, one scenario per file): the schema
//! (here and in step.rs) and loading with errors that name file:line:col
//! (load.rs). No execution and no judging here (the known-defects list is
//! the judge's).

mod load;
mod step;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::{DeviceSpec, parse_size};

pub use load::{RESERVED_CHECKS, read_text};
pub use step::{Fault, Party, Step, step_labels};

/// A size written as a number or as `"64K"`, `"1M"`, `"0x1000"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size(pub u64);

/// Written as `"0x1000"` (TOML integers stop at 2^63).
impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A capture session through QEMU's `vhost-user-test-device-pci` with two
/// queues against the virtio-media backend under test, the guest agent as
/// its driver; the model runs the same session.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MediaScenario {
    /// The device's virtio id: one the frontend knows (QEMU 11.1 aborts on
    /// 48, VIRTIO_ID_MEDIA; see `hazard-unknown-virtio-id`).
    pub virtio_id: u16,
    /// Buffers asked for with REQBUFS.
    pub buffers: u32,
    /// Frames read through the shared-memory BAR.
    pub frames: usize,
    /// Which build of the backend (default: as published).
    #[serde(default)]
    pub build: MediaBuild,
    /// Instead of a capture: MMAP and MUNMAP of one buffer this many times,
    /// each sent as soon as the last is answered (at most
    /// [`MAX_CHURN`]; the session also stops at its time bound).
    #[serde(default)]
    pub churn: Option<usize>,
    /// Instead of a plain capture: the recording relay refuses the k-th
    /// SHMEM_MAP (1-based) in QEMU's place (the model refuses it itself).
    #[serde(default)]
    pub refuse_map: Option<usize>,
    /// Instead of a plain capture: every ack to the backend is held this
    /// many milliseconds (by the relay behind QEMU, by the model itself).
    #[serde(default)]
    pub ack_delay_ms: Option<u64>,
    /// Instead of a plain capture: the device is reset after the first
    /// frame (by the guest agent, or the model), brought up again and
    /// captured from anew.
    #[serde(default)]
    pub reset_mid_stream: bool,
    /// Instead of a plain capture: the backend channel is closed after the
    /// first frame (by the relay on both its sides, or the model); one
    /// buffer left unmapped till then must get an errno.
    #[serde(default)]
    pub close_channel: bool,
}

/// The longest ack delay a media scenario may ask for.
pub const MAX_ACK_DELAY_MS: u64 = 2000;

/// The most buffers a media scenario may ask for: what a V4L2 queue holds.
pub const MAX_BUFFERS: u32 = shmem_virtio_media::driver::MAX_BUFFERS;

/// The most frames a media scenario may read through the BAR (each one a
/// command to the guest agent).
pub const MAX_FRAMES: usize = 1000;

/// The most MMAP/MUNMAP cycles a media scenario's churn may ask for.
pub const MAX_CHURN: usize = 100_000;

/// A build of the virtio-media backend under test.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum MediaBuild {
    /// As published.
    #[default]
    Published,
    /// With its buffer memfds sized to whole pages (a one-line change to
    /// virtio-media, made by xtask): the build QEMU 11.1.3 can map.
    PageRounded,
    /// Not vhost-device-media: the appliance's `fake-media-backend`, wrong
    /// on purpose: every frame one byte off the pattern.
    FakeWrongFrames,
    /// The same fake, wrong on purpose: a refused map reported to the driver as mapped.
    FakeHideRefusal,
}

impl MediaBuild {
    pub const ALL: [MediaBuild; 4] =
        [MediaBuild::Published, MediaBuild::PageRounded, MediaBuild::FakeWrongFrames, MediaBuild::FakeHideRefusal];

    /// As written in a scenario file and on a worker's command line.
    pub fn name(self) -> &'static str {
        match self {
            MediaBuild::Published => "published",
            MediaBuild::PageRounded => "page-rounded",
            MediaBuild::FakeWrongFrames => "fake-wrong-frames",
            MediaBuild::FakeHideRefusal => "fake-hide-refusal",
        }
    }

    /// The `--fault` of `fake-media-backend` a fake build runs with; `None`
    /// for vhost-device-media's builds.
    pub fn fake_fault(self) -> Option<&'static str> {
        match self {
            MediaBuild::Published | MediaBuild::PageRounded => None,
            MediaBuild::FakeWrongFrames => Some("wrong-frames"),
            MediaBuild::FakeHideRefusal => Some("hide-refusal"),
        }
    }
}

/// How the backend serves the frontend while a map or unmap waits for its ack.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BackendMode {
    /// Another thread serves the frontend meanwhile.
    #[default]
    MultiThreaded,
    /// Nothing does: the request goes out from the thread that serves the
    /// frontend and waits there (as libvhost-user's callers do).
    SingleThreaded,
}

fn one() -> u8 {
    1
}

fn one_u32() -> u32 {
    1
}

/// A loaded scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    pub own_boot: bool,
    pub device: Option<SuiteDevice>,
    pub init: bool,
    pub qemu_only: bool,
    pub smp: u8,
    pub boot_refusal_ok: bool,
    pub backend: BackendMode,
    pub media: Option<MediaScenario>,
    pub steps: Vec<Step>,
    /// Each step's label (see [`step_labels`]).
    pub labels: Vec<String>,
    /// The line of each step's `[[step]]` header (0 where unknown), for errors.
    pub lines: Vec<usize>,
}

impl Scenario {
    /// Whether it measures a race from the guest (the reply-before-commit
    /// probe): what it counts moves with the load beside it and with any hop
    /// between QEMU and the backend, so it runs without the recording relay
    /// and counts for two VMs in the own-boot pool.
    pub fn measures_a_race(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::ProbeReplyBeforeCommit { .. }))
    }
}

/// The device the whole suite boots with (one boot runs every scenario).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuiteDevice {
    pub virtio_id: u16,
    pub regions: Vec<Size>,
    /// Where the guest must find each region in the shared-memory BAR,
    /// stated by hand (`"SHMID@OFFSET+LEN"`): the check
    /// `layout-matches-spec` compares what the guest found with this, never
    /// with a layout computed by the rule a frontend follows.
    pub layout: Vec<Window>,
}

/// One region where the guest must find it: shmid, offset in the BAR,
/// length; written `"2@0xc0000+0x40000"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(pub u8, pub u64, pub u64);

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = |why: &str| {
            serde::de::Error::custom(format!(
                "window {text:?}: {why}; write SHMID@OFFSET+LEN, e.g. \"2@0xc0000+0x40000\""
            ))
        };
        let (id, rest) = text.split_once('@').ok_or_else(|| bad("no `@`"))?;
        let (off, len) = rest.split_once('+').ok_or_else(|| bad("no `+`"))?;
        let id = id.trim().parse().map_err(|_| bad("shmid is not a number below 256"))?;
        let size = |v: &str| parse_size(v).map_err(|e| bad(&e.to_string()));
        Ok(Window(id, size(off)?, size(len)?))
    }
}

impl SuiteDevice {
    /// The stated layout as (shmid, offset, length), in shmid order.
    pub fn layout(&self) -> Vec<(u8, u64, u64)> {
        let mut l: Vec<(u8, u64, u64)> = self.layout.iter().map(|w| (w.0, w.1, w.2)).collect();
        l.sort_unstable();
        l
    }

    /// The device spec as written, not validated (probes try bad layouts;
    /// callers that need a valid one call `validate`).
    pub fn spec(&self) -> DeviceSpec {
        DeviceSpec { virtio_id: self.virtio_id, num_queues: 1, regions: self.regions.iter().map(|s| s.0).collect() }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    pub device: SuiteDevice,
}

/// "11.1.3" -> (11, 1, 3); missing parts are 0.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    // A release candidate's tag ("11.2.0-rc1") ends after the last number.
    let v = v.trim();
    let numeric = v.split_once('-').map_or(v, |(n, _)| n);
    let mut it = numeric.split('.').map(|p| p.parse::<u32>());
    let major = it.next()?.ok()?;
    let minor = it.next().unwrap_or(Ok(0)).ok()?;
    let micro = it.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, micro))
}
