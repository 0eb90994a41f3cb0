//! The backend request channel (backend -> frontend): sends SHMEM_MAP and
//! SHMEM_UNMAP, well-formed or deliberately malformed, and returns the exact
//! REPLY_ACK value and its latency. Message layouts come from the `vhost`
//! crate; it keeps no state about mappings (the ledger does).

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserMMap;
use vm_memory::ByteValued;

use crate::wire;

/// Default time a frontend gets to answer one request.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

pub use shmem_proto::{ShmemMsg, ShmemOp};

/// A SHMEM payload's bytes on the wire, in the `vhost` crate's layout.
pub trait MmapBytes: Sized {
    fn to_bytes(self) -> Vec<u8>;
    fn from_bytes(body: &[u8]) -> Option<Self>;
}

impl MmapBytes for ShmemMsg {
    fn to_bytes(self) -> Vec<u8> {
        let m = VhostUserMMap {
            shmid: self.shmid,
            padding: [0; 7],
            fd_offset: self.fd_offset,
            shm_offset: self.shm_offset,
            len: self.len,
            flags: self.flags,
        };
        m.as_slice().to_vec()
    }

    fn from_bytes(body: &[u8]) -> Option<Self> {
        let m = VhostUserMMap::from_slice(body)?;
        Some(ShmemMsg { shmid: m.shmid, fd_offset: m.fd_offset, shm_offset: m.shm_offset, len: m.len, flags: m.flags })
    }
}

/// What the frontend answered and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The REPLY_ACK payload: 0 success, anything else failure.
    pub ack: u64,
    pub latency: Duration,
    /// When the ack arrived (to measure what happens after it).
    pub at: Instant,
}

/// One end of the backend channel, owned by the backend side.
#[derive(Debug)]
pub struct BackendChannel {
    /// The socket, or why it can no longer be used.
    sock: Mutex<Result<UnixStream, String>>,
    timeout: Duration,
    /// Set for a single-threaded backend: the gate the thread serving the
    /// frontend passes for each message, held while a request waits for its
    /// ack, so no frontend message is served meanwhile.
    gate: Mutex<Option<Arc<Mutex<()>>>>,
    /// Set to emulate another frontend at the socket: called for each
    /// accepted request, it holds the ack until it returns (`false`: it
    /// never came in time, as if the frontend never answered).
    hold: Mutex<Option<ReplyHold>>,
}

/// What a held ack is about: when its request was sent, and the file it
/// maps (`None` for an unmap).
#[derive(Clone, Copy, Debug)]
pub struct Held {
    pub sent: Instant,
    pub file: Option<crate::backend::FileId>,
}

/// See [`BackendChannel::set_reply_hold`].
#[derive(Clone)]
pub struct ReplyHold(pub Arc<dyn Fn(Held) -> bool + Send + Sync>);

impl fmt::Debug for ReplyHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyHold")
    }
}

impl BackendChannel {
    pub fn new(sock: UnixStream) -> Self {
        BackendChannel {
            sock: Mutex::new(Ok(sock)),
            timeout: ACK_TIMEOUT,
            gate: Mutex::new(None),
            hold: Mutex::new(None),
        }
    }

    /// Makes the backend single-threaded (`Some(gate)`: the frontend is not
    /// served while a request waits for its ack, as when a backend sends
    /// SHMEM_MAP from the thread that serves the frontend) or not (`None`).
    pub fn set_serve_gate(&self, gate: Option<Arc<Mutex<()>>>) {
        *self.gate.lock().unwrap_or_else(|p| p.into_inner()) = gate;
    }

    /// Holds every accepted ack until `hold` returns, as a relay on the
    /// socket would: the backend then sees the frontend answer later (see
    /// `vm::boot::Emulation`). `None`: acks pass as they come.
    pub fn set_reply_hold(&self, hold: Option<ReplyHold>) {
        *self.hold.lock().unwrap_or_else(|p| p.into_inner()) = hold;
    }

    /// Closes our end, as a backend that dies would.
    pub fn close(&self) {
        *self.sock.lock().unwrap_or_else(|p| p.into_inner()) = Err("the backend closed the channel (it died)".into());
    }

    /// Sends one request with NEED_REPLY and waits for its ack. `fd` is
    /// attached as SCM_RIGHTS when given. A timeout or a malformed reply
    /// leaves the channel unusable (a late ack would be taken for the next
    /// request's), so every later call fails with the first error.
    pub fn request(&self, op: ShmemOp, body: &[u8], fd: Option<RawFd>) -> io::Result<Reply> {
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _serving = gate.as_ref().map(|g| g.lock().unwrap_or_else(|p| p.into_inner()));
        let mut guard = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let sock = guard
            .as_ref()
            .map_err(|why| io::Error::new(io::ErrorKind::NotConnected, format!("backend channel unusable: {why}")))?;
        let fds: Vec<RawFd> = fd.into_iter().collect();
        let start = Instant::now();
        let res = wire::send(sock, op.code(), wire::VERSION_1 | wire::FLAG_NEED_REPLY, body, &fds)
            .and_then(|()| wire::recv_ack(sock, op.code(), self.timeout));
        let hold = self.hold.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let res = match (res, hold) {
            (Ok(0), Some(hold))
                if !(hold.0)(Held { sent: start, file: fd.and_then(|f| crate::backend::FileId::of(&f).ok()) }) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no ack in time: the emulated frontend holds its reply until the memory table that commits the request has reached the backend, and none came",
                ))
            }
            (res, _) => res,
        };
        match res {
            Ok(ack) => Ok(Reply { ack, latency: start.elapsed(), at: Instant::now() }),
            Err(e) => {
                let e = io::Error::new(e.kind(), format!("{op:?}: {e}"));
                *guard = Err(format!("an earlier request failed: {e}"));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vhost::vhost_user::message::BackendReq;

    use super::*;

    #[test]
    fn the_request_codes_are_the_vhost_crates() {
        assert_eq!(ShmemOp::Map.code(), BackendReq::SHMEM_MAP as u32);
        assert_eq!(ShmemOp::Unmap.code(), BackendReq::SHMEM_UNMAP as u32);
        let m = ShmemMsg { shmid: 1, fd_offset: 0x1000, shm_offset: 0x2000, len: 0x3000, flags: 1 };
        assert_eq!(ShmemMsg::from_bytes(&m.to_bytes()), Some(m));
    }
}
