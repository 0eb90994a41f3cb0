//! Host half of the vhost-user shared-memory test appliance.
//!
//! - [`spec`]: what the test device advertises (validated).
//! - [`backend`] + [`server`]: the vhost-user backend on a private socket,
//!   recording what the frontend tells it.
//! - [`channel`] + [`manager`] + [`files`]: map/unmap requests, host files,
//!   and the ledger of what each region should show.
//! - [`model`]: the in-process reference frontend (QEMU's stand-in and oracle).
//!
//! Nothing here starts QEMU or a guest; the VM runner builds on these parts.

pub mod backend;
pub mod channel;
pub mod files;
pub mod manager;
pub mod memprobe;
pub mod model;
pub mod server;
pub mod spec;
pub mod wire;
pub mod vm;

/// The message a panic carried, for reporting a caught panic.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_default()
}
