//! Raw vhost-user framing (12-byte header, body, SCM_RIGHTS fds) on a Unix
//! stream. The `vhost` crate keeps its endpoint private and refuses to send or
//! answer malformed messages, so the message tap, the raw request path and the
//! model's backend channel use this. It knows framing only, no semantics.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Size of the vhost-user message header: request u32, flags u32, size u32.
pub const HEADER_LEN: usize = 12;
/// Largest body we accept (the spec caps messages well below this).
pub const MAX_BODY: usize = 0x1000_0000;
/// Most fds one message may carry (vhost-user's limit is 8; leave room).
const MAX_FDS: usize = 32;

/// Header flag: this message is a reply.
pub const FLAG_REPLY: u32 = 0x4;
/// Header flag: the sender wants a REPLY_ACK.
pub const FLAG_NEED_REPLY: u32 = 0x8;
/// Protocol version 1 in the low bits of the flags.
pub const VERSION_1: u32 = 0x1;

/// One framed message with its fds.
#[derive(Debug)]
pub struct Message {
    pub request: u32,
    pub flags: u32,
    pub body: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Message {
    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }
    pub fn needs_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }
    /// The body read as a little-endian u64 (for REPLY_ACK and u64 payloads).
    pub fn body_u64(&self) -> Option<u64> {
        (self.body.len() == 8).then(|| u64::from_le_bytes(self.body[..8].try_into().unwrap_or([0; 8])))
    }
}

/// One `recvmsg`: bytes into `buf`, fds onto `fds`, each close-on-exec from
/// the moment it is installed (`MSG_CMSG_CLOEXEC`: no child forked by
/// another thread meanwhile inherits it).
fn recv_chunk(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(got.bytes)
}

fn recv_exact(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match recv_chunk(sock, &mut buf[got..], fds) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed mid-message")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Receives one message; `Ok(None)` when the peer closed cleanly between messages.
pub fn recv(sock: &UnixStream) -> io::Result<Option<Message>> {
    let mut hdr = [0u8; HEADER_LEN];
    let mut fds = Vec::new();
    if !recv_exact(sock, &mut hdr, &mut fds)? {
        return Ok(None);
    }
    let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    let (request, flags, size) = (word(0), word(4), word(8) as usize);
    if size > MAX_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message {request} announces a body of {size} bytes (limit {MAX_BODY})"),
        ));
    }
    let mut body = vec![0u8; size];
    if size > 0 && !recv_exact(sock, &mut body, &mut fds)? {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed before the message body"));
    }
    Ok(Some(Message { request, flags, body, fds }))
}

/// Sends one message with optional fds attached to its first byte.
pub fn send(sock: &UnixStream, request: u32, flags: u32, body: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&request.to_le_bytes());
    frame.extend_from_slice(&flags.to_le_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    let mut sent = sock.send_with_fds(&[&frame[..]], fds).map_err(io::Error::from)?;
    while sent < frame.len() {
        sent += sock.send_with_fds(&[&frame[sent..]], &[]).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Forwards a received message unchanged, fds included.
pub fn forward(sock: &UnixStream, msg: &Message) -> io::Result<()> {
    let fds: Vec<RawFd> = msg.fds.iter().map(AsRawFd::as_raw_fd).collect();
    send(sock, msg.request, msg.flags, &msg.body, &fds)
}

/// Waits for a REPLY_ACK to `request` for at most `timeout`; returns its u64.
pub fn recv_ack(sock: &UnixStream, request: u32, timeout: Duration) -> io::Result<u64> {
    sock.set_read_timeout(Some(timeout))?;
    let res = recv(sock);
    sock.set_read_timeout(None)?;
    let msg = match res {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "frontend closed the backend channel"));
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no REPLY_ACK for backend request {request} within {timeout:?}"),
            ));
        }
        Err(e) => return Err(e),
    };
    if msg.request != request || !msg.is_reply() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected a reply to request {request}, got request {} flags {:#x}", msg.request, msg.flags),
        ));
    }
    msg.body_u64().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("REPLY_ACK body is {} bytes, not 8", msg.body.len()))
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_received_fd_is_close_on_exec() {
        let (a, b) = UnixStream::pair().expect("a socket pair");
        // A memfd without close-on-exec on the sending side.
        let sent = rustix::fs::memfd_create("received", rustix::fs::MemfdFlags::empty()).expect("a memfd");
        send(&a, 5, VERSION_1, &[0u8; 8], &[sent.as_raw_fd()]).expect("sent");
        let msg = recv(&b).expect("received").expect("a message");
        assert_eq!((msg.request, msg.fds.len()), (5, 1));
        let flags = rustix::io::fcntl_getfd(msg.fds[0].as_fd()).expect("its flags");
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC), "{flags:?}");
    }
}
