//! Backend conformance: the model frontend drives a vhost-user backend that
//! sends SHMEM_MAP (vhost-device-media as its virtio-media driver, or the
//! appliance's own backend through a scripted session), records what the
//! backend asked and what the driver saw (`session`), and a layer with no I/O
//! judges it (`shmem_judge::backend`). Fault variants make the frontend refuse, delay, reset
//! and hang up. It must not judge while recording, nor record while judging.

pub mod frontend;
pub mod judged;
pub mod own;
pub mod port;
pub mod process;
pub mod session;
pub mod transport;

use shmem_judge::backend::record::{HeldAtEnd, Served, SessionRecord};
use shmem_judge::defects::{KnownDefect, MODEL_ACCEL};
use shmem_judge::listing::Listing;
use shmem_judge::verdict::judge_listed;

use crate::model::ModelFrontend;

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
    pub const ALL: [Variant; 6] = [
        Variant::Stream,
        Variant::RefuseMap(2),
        Variant::AckDelay(300),
        Variant::ResetMidStream,
        Variant::CloseChannel,
        Variant::Churn(50000),
    ];

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

/// What the model frontend served and still holds, into the session's record.
pub fn record_frontend(model: &ModelFrontend, rec: &mut SessionRecord) {
    rec.live_at_end = HeldAtEnd::Read(model.mappings().len());
    rec.served =
        model.served_since(0).into_iter().map(|s| Served { sent: s.sent, accepted: s.result.is_ok() }).collect();
}

/// A backend under test: how to start it, and the version its known defects are keyed on.
pub struct BackendUnderTest {
    /// Command line with `{socket}` in it.
    pub command: String,
    pub version: String,
}

/// The appliance's own backend, as the backend list names it.
pub const OWN_BACKEND: &str = "shmem-backend (own)";

/// The own backend's session, run after the variants.
pub const OWN_SESSION: &str = "own-session";

/// Every session's name, in the order `run_all` runs them.
pub fn session_names() -> Vec<String> {
    Variant::ALL.iter().map(|v| v.name()).chain([OWN_SESSION.to_string()]).collect()
}

/// Every variant against `backend`, then the own backend's session (those
/// named in `only`, when it names any); each judged against `defects`.
pub fn run_all(
    backend: &BackendUnderTest,
    defects: &[KnownDefect],
    (dir, only): (&std::path::Path, &[String]),
    s: &session::Settings,
) -> Vec<judged::SessionVerdict> {
    let picked = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut out = Vec::new();
    for v in Variant::ALL.into_iter().filter(|v| picked(&v.name())) {
        let sub = dir.join(v.name());
        let rec = match std::fs::create_dir_all(&sub) {
            Ok(()) => session::run_media(&backend.command, v, &sub, s),
            Err(e) => SessionRecord {
                connect_error: Some(format!("create {}: {e}", sub.display())),
                ..SessionRecord::default()
            },
        };
        out.push(verdict(&backend.version, &v.name(), &rec, defects));
    }
    if picked(OWN_SESSION) {
        let rec = own::run_own(own::OwnFault::None, dir, s);
        out.push(verdict(OWN_BACKEND, OWN_SESSION, &rec, defects));
    }
    out
}

fn verdict(backend: &str, session: &str, rec: &SessionRecord, defects: &[KnownDefect]) -> judged::SessionVerdict {
    let checks = shmem_judge::backend::judge(rec);
    let listing = Listing::of_backend(defects, backend, "", MODEL_ACCEL, session);
    let judgement = judge_listed(Ok(checks.clone()), &listing);
    judged::SessionVerdict { backend: backend.into(), session: session.into(), checks, judgement }
}
