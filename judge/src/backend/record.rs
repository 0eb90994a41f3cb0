//! What a backend session recorded, for the judge: what the backend offered
//! and advertised, every backend request the frontend served, the driver's
//! steps and frames, what was left at the end. Data only; the recorders are
//! the conformance runner's (the model frontend's session, or QEMU's).

use shmem_proto::BackendRequest;
use shmem_virtio_media::driver::MediaError;

/// One backend request as the frontend served it.
#[derive(Clone, Debug, Default)]
pub struct Served {
    pub sent: BackendRequest,
    /// Whether the frontend accepted it (acked 0 and applied it).
    pub accepted: bool,
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

/// How long after the reply to an accepted SHMEM request the memory table
/// that carries its change reached the backend, in microseconds (negative:
/// before the reply); `None`: no such table came. Read off a relay's record
/// by `wire::lags`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lag {
    pub request: u32,
    /// Index of the request in the relay's record.
    pub at: usize,
    pub micros: Option<f64>,
    /// Index of the frontend's reply, and of the memory table that carries
    /// the change, in the relay's record (when they are there).
    #[serde(default)]
    pub reply: Option<usize>,
    #[serde(default)]
    pub table: Option<usize>,
}

/// What each side of a session is left waiting for, and since how long:
/// the frontend for the backend's answer to one of its messages (named as
/// the vhost crate names it, "SET_MEM_TABLE"), the backend for the
/// frontend's answer to one of its requests ("SHMEM_MAP"). Either may be
/// unknown: the model says only what it waits for itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    pub frontend: Option<(String, std::time::Duration)>,
    pub backend: Option<(String, std::time::Duration)>,
}

/// Everything one session recorded, for the judge.
/// How many mappings the frontend still held at a session's end, or why
/// that was not read (the default: nothing read is no evidence).
#[derive(Clone, Debug, PartialEq)]
pub enum HeldAtEnd {
    Read(usize),
    Unread(String),
}

impl Default for HeldAtEnd {
    fn default() -> Self {
        HeldAtEnd::Unread("never read".into())
    }
}

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
    /// How many mappings the frontend still held at the end, after CLOSE,
    /// or why that could not be read (then `all-unmapped` cannot pass).
    pub live_at_end: HeldAtEnd,
    /// memfds the backend process held before OPEN and after CLOSE (an
    /// external process only), or why they could not be counted.
    pub memfds: Option<Result<(usize, usize), String>>,
    /// What each side was left waiting for when the driver's first wait timed out.
    pub waiting_at_timeout: Option<Waiting>,
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
    /// Every accepted request's lag to the memory table that carries it,
    /// from a recording relay's record, where one ran between the two.
    pub wire_lags: Option<Vec<Lag>>,
    /// The frontend's side was not in view (QEMU without a relay's record):
    /// what the backend asked of it (negotiation, regions, maps, unmaps) was
    /// not recorded and is not judged.
    pub frontend_unseen: bool,
}
