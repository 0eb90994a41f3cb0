//! What QEMU does at device realize, up to GET_SHMEM_CONFIG, and the
//! watchdog that bounds every wait for the backend's answers on the main
//! socket. Must not serve the backend channel (serve.rs does).

use std::io;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use vhost::VhostBackend;
use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserShMemConfig};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};

use crate::backend::offered_features;

/// How long the model waits for the backend's answers on the main socket
/// while it sets the backend up, starts, or resets it: longer than a
/// driver's wait, so a hang is named by the step that met it first; a
/// bound, so a stalled backend never hangs the runner. (The memory tables
/// after a map have their own bound: `shut_down` hangs up on a backend
/// that never answers one.)
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Hangs up on the backend (shuts the main socket down, so a blocked read
/// returns) when it is not disarmed within [`REPLY_TIMEOUT`]. The vhost
/// crate retries a read that times out, so a socket timeout cannot do this.
pub(super) struct Watchdog {
    disarm: mpsc::Sender<()>,
    thread: thread::JoinHandle<bool>,
}

impl Watchdog {
    pub(super) fn arm(sock: &UnixStream) -> io::Result<Self> {
        let sock = sock.try_clone()?;
        let (disarm, rx) = mpsc::channel();
        let thread = thread::Builder::new().name("model-watchdog".into()).spawn(move || {
            let fired = matches!(rx.recv_timeout(REPLY_TIMEOUT), Err(mpsc::RecvTimeoutError::Timeout));
            if fired {
                let _ = sock.shutdown(Shutdown::Both);
            }
            fired
        })?;
        Ok(Watchdog { disarm, thread })
    }

    /// Stops the watch; an error of kind `TimedOut` naming `what` if it had fired.
    pub(super) fn disarm(self, what: &str) -> io::Result<()> {
        let _ = self.disarm.send(());
        match self.thread.join() {
            Ok(false) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "model frontend: {what}: the backend did not answer within {REPLY_TIMEOUT:?}, so the model hung up"
                ),
            )),
        }
    }
}

pub(super) fn ctx(what: &str) -> impl FnOnce(vhost::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("model frontend: {what}: {e}"))
}

/// What QEMU does at device realize, up to GET_SHMEM_CONFIG: the model's
/// end of the backend channel, and the backend's regions.
pub(super) fn handshake(
    fe: &mut Frontend,
    offered: &mut Option<(u64, u64)>,
) -> io::Result<(UnixStream, VhostUserShMemConfig)> {
    let features = fe.get_features().map_err(ctx("GET_FEATURES"))?;
    if features & offered_features() != offered_features() {
        return Err(io::Error::other(format!(
            "model frontend: backend offers features {features:#x}, VERSION_1 and PROTOCOL_FEATURES are needed"
        )));
    }
    let wanted = VhostUserProtocolFeatures::SHMEM
        | VhostUserProtocolFeatures::BACKEND_REQ
        | VhostUserProtocolFeatures::BACKEND_SEND_FD
        | VhostUserProtocolFeatures::REPLY_ACK;
    let offered_protocol = fe.get_protocol_features().map_err(ctx("GET_PROTOCOL_FEATURES"))?;
    *offered = Some((features, offered_protocol.bits()));
    let offered = offered_protocol;
    if !offered.contains(wanted) {
        return Err(io::Error::other(format!(
            "model frontend: backend offers protocol features {offered:?}, {wanted:?} are needed"
        )));
    }
    fe.set_protocol_features(wanted).map_err(ctx("SET_PROTOCOL_FEATURES"))?;
    // NEED_REPLY first, so SET_BACKEND_REQ_FD is acked and the backend's
    // channel exists when this returns.
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    let (ours, theirs) = UnixStream::pair()?;
    fe.set_backend_request_fd(&theirs).map_err(ctx("SET_BACKEND_REQ_FD"))?;
    drop(theirs);
    fe.set_owner().map_err(ctx("SET_OWNER"))?;
    let config: VhostUserShMemConfig = fe.get_shmem_config().map_err(ctx("GET_SHMEM_CONFIG"))?;
    Ok((ours, config))
}
