//! The frontend's side of a session, whoever plays it: the model frontend
//! itself, or the recording relay in front of QEMU. What a session asks of
//! it: how far the backend got, a closed channel, what is left unanswered.
//! Records nothing; the session does.

use std::time::Duration;

use shmem_judge::backend::record::Waiting;

use crate::model::ModelFrontend;
use crate::relay::Relay;

/// What a session needs of the frontend's side, beside the driver's steps.
pub trait FrontendSide {
    /// SHMEM_MAP requests the backend has sent so far.
    fn maps_seen(&self) -> usize;
    /// Requests of any kind the backend has sent on its channel so far.
    fn requests_seen(&self) -> usize;
    /// Closes the backend's request channel, as a frontend that hangs it up.
    fn close_backend_channel(&self);
    /// Waits until every acked request is applied and its memory table
    /// answered, where the frontend's side can tell (the model); else returns.
    fn settle(&self, timeout: Duration);
    /// What each side is left waiting for, and for how long, as far as
    /// the frontend's side can tell.
    fn waiting_for(&self) -> Waiting;
}

impl FrontendSide for ModelFrontend {
    fn maps_seen(&self) -> usize {
        self.maps_served()
    }
    fn requests_seen(&self) -> usize {
        self.served_count()
    }
    fn close_backend_channel(&self) {
        ModelFrontend::close_backend_channel(self);
    }
    fn settle(&self, timeout: Duration) {
        let _ = self.sync(timeout);
    }
    /// The model knows what it waits for itself, not what the backend waits for.
    fn waiting_for(&self) -> Waiting {
        Waiting { frontend: ModelFrontend::waiting_for(self).map(|(w, d)| (w.to_string(), d)), backend: None }
    }
}

/// QEMU behind the relay: QEMU applies what it acked on its own time, so
/// there is nothing to settle; what is left unanswered is read off the wire.
impl FrontendSide for Relay {
    fn maps_seen(&self) -> usize {
        Relay::maps_seen(self)
    }
    fn requests_seen(&self) -> usize {
        Relay::requests_seen(self)
    }
    fn close_backend_channel(&self) {
        Relay::close_backend_channel(self);
    }
    fn settle(&self, _timeout: Duration) {}
    fn waiting_for(&self) -> Waiting {
        Relay::waiting_for(self)
    }
}
