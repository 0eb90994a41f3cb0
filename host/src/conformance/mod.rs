//! Backend conformance: the model frontend drives a vhost-user backend that
//! sends SHMEM_MAP (vhost-device-media as its virtio-media driver, or the
//! appliance's own backend through a scripted session), records what the
//! backend asked and what the driver saw (`session`), and a layer with no I/O
//! judges it (`judge`). Fault variants make the frontend refuse, delay, reset
//! and hang up. It must not judge while recording, nor record while judging.

pub mod judge;
pub mod own;
pub mod port;
pub mod process;
pub mod report;
pub mod session;
pub mod transport;

use crate::model::{MappingInfo, Served};
use shmem_virtio_media::driver::MediaError;

/// What the frontend does to the backend during a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// A whole capture session, nothing injected.
    Stream,
    /// The frontend refuses the k-th SHMEM_MAP (ack 1).
    RefuseMap(usize),
    /// Every ack is held this many milliseconds.
    AckDelay(u64),
    /// The device is reset after the first frame, then driven again.
    ResetMidStream,
    /// The frontend closes the backend channel after the first frame.
    CloseChannel,
    /// MMAP and MUNMAP of one buffer this many times, each command sent as
    /// soon as the previous one is answered (every other variant waits for
    /// the frontend's memory table to be answered first): a backend that
    /// holds a lock across a SHMEM request, which its memory-table handler
    /// needs too, hangs here.
    Churn(usize),
}

impl Variant {
    pub const ALL: [Variant; 6] = [Variant::Stream, Variant::RefuseMap(2), Variant::AckDelay(300), Variant::ResetMidStream, Variant::CloseChannel, Variant::Churn(50000)];

    /// The variant's name: the "scenario" its checks and known defects belong to.
    pub fn name(self) -> String {
        match self {
            Variant::Stream => "media-stream".into(),
            Variant::RefuseMap(k) => format!("media-refuse-map-{k}"),
            Variant::AckDelay(ms) => format!("media-ack-delay-{ms}ms"),
            Variant::ResetMidStream => "media-reset-mid-stream".into(),
            Variant::CloseChannel => "media-close-channel".into(),
            Variant::Churn(n) => format!("media-map-churn-{n}"),
        }
    }
}

/// What the driver expects of one step, decided by the variant before the step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Success,
    /// The frontend refused or could not carry the step's SHMEM_MAP: the
    /// driver must get an errno, in time.
    Errno,
}

/// One driver step: what it was, what was expected, what came back.
#[derive(Clone, Debug)]
pub struct Step {
    pub what: String,
    pub expect: Expect,
    pub outcome: Result<String, MediaError>,
}

/// A frame read through the frontend's view of a mapping.
#[derive(Clone, Debug)]
pub struct FrameSeen {
    pub index: u32,
    pub sequence: u32,
    pub shm_offset: u64,
    /// First byte off the pattern: (offset, expected, found); or why it could not be read.
    pub mismatch: Option<(usize, u8, u8)>,
    pub unreadable: Option<String>,
}

/// Everything one session recorded, for the judge.
#[derive(Clone, Debug, Default)]
pub struct SessionRecord {
    /// (features, protocol features) the backend offered, raw.
    pub offered: Option<(u64, u64)>,
    /// Why the frontend could not connect, if it could not.
    pub connect_error: Option<String>,
    /// Region sizes from GET_SHMEM_CONFIG, by shmid.
    pub regions: Vec<u64>,
    /// Every backend request the frontend served, in order.
    pub served: Vec<Served>,
    /// Index into `served` at which each device reset happened.
    pub resets: Vec<usize>,
    /// Whether the driver asked for writable mappings.
    pub asked_rw: bool,
    /// Driver steps, in order (empty for a backend without a driver).
    pub steps: Vec<Step>,
    pub frames: Vec<FrameSeen>,
    /// The frontend's live mappings at the end, after CLOSE.
    pub live_at_end: Vec<MappingInfo>,
    /// memfds the backend process held before OPEN and after CLOSE (an
    /// external process only), or why they could not be counted.
    pub memfds: Option<Result<(usize, usize), String>>,
    /// What the frontend was waiting for the backend to answer when the
    /// driver's first wait timed out (e.g. "SET_MEM_TABLE"), and for how long.
    pub waiting_at_timeout: Option<(String, std::time::Duration)>,
    /// Why the backend is not alive at the end, if it is not.
    pub dead: Option<String>,
    /// The SHMEM_MAP the frontend refused on purpose (k-th, 1-based), if any:
    /// a driver step must have met it, or the refusal tested nothing.
    pub refused_map: Option<usize>,
    /// Whether the frontend closed the backend channel (nothing can be unmapped after).
    pub channel_closed: bool,
    /// Whether the session was driven as a media device.
    pub media: bool,
    /// Whether it set out to capture (frames expected); the churn only maps.
    pub captures: bool,
    /// The frontend's side was not in view (QEMU): what the backend asked
    /// of it (negotiation, regions, maps, unmaps) was not recorded and is not judged.
    pub frontend_unseen: bool,
}

/// A backend under test: how to start it, and the version its known defects are keyed on.
pub struct BackendUnderTest {
    /// Command line with `{socket}` in it.
    pub command: String,
    pub version: String,
}

/// The accelerator name the backend list uses: its sessions run on the model.
pub use crate::vm::defects::MODEL_ACCEL;
/// The appliance's own backend, as the backend list names it.
pub const OWN_BACKEND: &str = "shmem-backend (own)";

/// Every variant against `backend`, then the own backend's session; each judged against `defects`.
pub fn run_all(backend: &BackendUnderTest, defects: &[crate::vm::defects::KnownDefect], dir: &std::path::Path, s: &session::Settings) -> Vec<report::SessionVerdict> {
    let mut out = Vec::new();
    for v in Variant::ALL {
        let sub = dir.join(v.name());
        let rec = match std::fs::create_dir_all(&sub) {
            Ok(()) => session::run_media(&backend.command, v, &sub, s),
            Err(e) => SessionRecord { connect_error: Some(format!("create {}: {e}", sub.display())), ..SessionRecord::default() },
        };
        out.push(verdict(&backend.version, &v.name(), &rec, defects));
    }
    let rec = own::run_own(own::OwnFault::None, dir, s);
    out.push(verdict(OWN_BACKEND, "own-session", &rec, defects));
    out
}

fn verdict(backend: &str, session: &str, rec: &SessionRecord, defects: &[crate::vm::defects::KnownDefect]) -> report::SessionVerdict {
    let checks = judge::judge(rec);
    let listing = crate::vm::verdict::Listing::of_backend(defects, backend, "", MODEL_ACCEL, session);
    let judgement = crate::vm::verdict::judge_listed(Ok(checks.clone()), &listing);
    report::SessionVerdict { backend: backend.into(), session: session.into(), checks, judgement }
}
