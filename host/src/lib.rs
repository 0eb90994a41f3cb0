//! Host half of the vhost-user shared-memory test appliance.
//!
//! - [`spec`]: what the test device advertises (validated).
//! - [`backend`] + [`server`]: the vhost-user backend on a private socket,
//!   recording what the frontend tells it.
//! - [`channel`] + [`manager`] + [`files`]: map/unmap requests, host files,
//!   and the ledger of what each region should show.
//! - [`fake_media`]: a virtio-media backend wrong on purpose, one way at a
//!   time: the subject of the tests that show each backend check failing.
//! - [`model`]: the in-process reference frontend (QEMU's stand-in and oracle).
//! - [`relay`]: a recording relay between a frontend and a backend, both channels.
//! - [`bounded`]: short commands (version probes) run with a time bound.
//! - [`spawn`]: children inherit their stdio and no other fd of ours.
//! - [`conformance`]: the backend-conformance runner (`backend-test`): a
//!   backend under test as a process, sessions through a virtio-media
//!   driver, recorded for the judge.
//! - [`vm`]: the VM runner, the only part that starts QEMU and a guest: it
//!   boots them, drives scenarios on QEMU and the model, and records what
//!   it saw (see its module map). The parts above know nothing of it.
//!
//! Nothing here judges: the judge is its own crate (`shmem-judge`), below
//! every runner; the runners hand it their records.

pub mod backend;
pub mod bounded;
pub mod channel;
pub mod conformance;
pub mod fake_media;
pub mod files;
pub mod manager;
pub mod memprobe;
pub mod model;
pub mod relay;
pub mod server;
pub mod spawn;
pub mod spec;
pub mod vm;
pub mod wire;

/// The message a panic carried, for reporting a caught panic.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
