//! A recording relay on a vhost-user connection: the frontend (QEMU)
//! connects to the relay's socket, the relay to the backend's; it passes
//! every message on unchanged, fds included, and takes over
//! SET_BACKEND_REQ_FD so the backend's request channel runs through it too.
//! Each message is recorded (channel, sender, request, flags, size, fds, the
//! decoded payload, a CLOCK_MONOTONIC time) for the judge
//! (`shmem_judge::backend::wire`). It must not judge, and it changes nothing
//! it relays unless a fault switch (`RelayFaults`) says so: then it is the
//! frontend wrong on purpose, behind a real one (a refused map, a held ack).

mod decode;

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shmem_judge::backend::wire::{Channel, Sender, WireMsg};
use vhost::vhost_user::message::FrontendReq;

use crate::wire::{self, Message};

/// SET_BACKEND_REQ_FD: the frontend hands the backend its request channel.
const SET_BACKEND_REQ_FD: u32 = FrontendReq::SET_BACKEND_REQ_FD as u32;

/// Ways the relay makes the frontend look wrong to the backend, on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayFaults {
    /// Refuse the k-th SHMEM_MAP (1-based): the relay acks it 1 itself and
    /// never passes it on, so the frontend never maps it.
    pub refuse_map_number: Option<usize>,
    /// Hold each of the frontend's replies on the backend channel this long.
    pub ack_delay: Option<Duration>,
}

#[derive(Default)]
struct Shared {
    faults: RelayFaults,
    /// SHMEM_MAP requests the backend sent so far.
    maps: AtomicUsize,
    /// Requests of any kind the backend sent on its channel so far.
    requests: AtomicUsize,
    /// Held while writing to the backend's end of its channel: the relay's
    /// own refusals and the frontend's replies go there from two threads.
    to_backend_channel: Mutex<()>,
    record: Mutex<Vec<WireMsg>>,
    /// Clones of every live socket, so `finish` can unblock every thread.
    sockets: Mutex<Vec<UnixStream>>,
    /// Clones of the backend channel's two sockets, for [`Relay::close_backend_channel`].
    backend_channel: Mutex<Vec<UnixStream>>,
    /// The backend channel was closed on purpose: its pumps' errors are not the relay's.
    channel_closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<Result<(), String>>>>,
    stop: AtomicBool,
}

impl Shared {
    /// Keeps a clone of `s` for [`Relay::finish`]; one kept after the
    /// relay was told to stop (a channel handed over while it hung up) is
    /// shut down at once, so no pump of it outlives the relay.
    fn keep(&self, s: &UnixStream, channel: Channel) -> io::Result<()> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        sockets.push(s.try_clone()?);
        if channel == Channel::Backend {
            self.backend_channel.lock().unwrap_or_else(|p| p.into_inner()).push(s.try_clone()?);
        }
        if self.stop.load(Ordering::SeqCst) {
            let _ = s.shutdown(Shutdown::Both);
        }
        Ok(())
    }

    /// Sleeps `d`, or less once the relay is told to stop.
    fn hold(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stop.load(Ordering::SeqCst) && Instant::now() < until {
            thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(5)));
        }
    }

    /// Records `msg`; the time is taken under the record's lock, so the
    /// record is in the order the relay read the messages.
    fn note(&self, msg: &Message, channel: Channel, sender: Sender) {
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        record.push(decode::record(msg, channel, sender, monotonic_ns()));
    }

    /// Runs `f` on a thread of its own, joined by [`Relay::finish`].
    fn spawn(&self, name: &str, f: impl FnOnce() -> Result<(), String> + Send + 'static) -> io::Result<()> {
        let t = thread::Builder::new().name(name.into()).spawn(f)?;
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).push(t);
        Ok(())
    }
}

/// How long a caller gives the relay's threads to end once both sides are
/// gone ([`Relay::finish`]).
pub const FINISH_WITHIN: Duration = Duration::from_secs(5);

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A running relay for one frontend connection.
pub struct Relay {
    socket: PathBuf,
    shared: Arc<Shared>,
}

impl Relay {
    /// Listens at `socket` (in a directory the caller keeps private) and, once
    /// a frontend connects, connects it to the backend listening at `backend`.
    pub fn start(socket: &Path, backend: &Path) -> io::Result<Self> {
        Self::start_faulty(socket, backend, RelayFaults::default())
    }

    /// As [`Self::start`], wrong on purpose as `faults` says.
    pub fn start_faulty(socket: &Path, backend: &Path, faults: RelayFaults) -> io::Result<Self> {
        let listener = UnixListener::bind(socket)
            .map_err(|e| io::Error::new(e.kind(), format!("relay: bind {}: {e}", socket.display())))?;
        let shared = Arc::new(Shared { faults, ..Shared::default() });
        let backend = backend.to_path_buf();
        let sh = shared.clone();
        shared.spawn("relay-accept", move || accept(&listener, &backend, &sh))?;
        Ok(Relay { socket: socket.to_path_buf(), shared })
    }

    /// Where the frontend connects.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// How many SHMEM_MAP requests the backend has sent so far.
    pub fn maps_seen(&self) -> usize {
        self.shared.maps.load(Ordering::SeqCst)
    }

    /// How many requests of any kind the backend has sent on its channel so far.
    pub fn requests_seen(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Closes the backend channel on both its sides, as a frontend that
    /// hangs it up: the backend's next request meets a closed socket, and
    /// the frontend sees its channel end.
    pub fn close_backend_channel(&self) {
        self.shared.channel_closed.store(true, Ordering::SeqCst);
        for s in self.shared.backend_channel.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// What each side is left waiting for on the wire now, and since when (`shmem_judge::backend::wire::waiting`).
    pub fn waiting_for(&self) -> shmem_judge::backend::record::Waiting {
        shmem_judge::backend::wire::waiting(&self.record(), monotonic_ns())
    }

    /// Everything recorded so far, in the order the relay read it.
    pub fn record(&self) -> Vec<WireMsg> {
        self.shared.record.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Hangs up on both sides, joins every thread (each within `timeout`),
    /// removes the socket; the record, and the first error a thread met.
    /// Every thread ends once hung up on (its sockets shut down, a held
    /// reply let go); one that did not within `timeout` is an error here.
    pub fn finish(self, timeout: Duration) -> (Vec<WireMsg>, Result<(), String>) {
        self.hang_up();
        let deadline = Instant::now() + timeout;
        let mut result = Ok(());
        while let Some(t) = self.shared.threads.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
            let ended = if t.is_finished() {
                t.join().unwrap_or_else(|_| Err("a relay thread panicked".into()))
            } else {
                Err(format!("a relay thread did not end within {timeout:?}"))
            };
            if result.is_ok() {
                result = ended;
            }
        }
        (self.record(), result)
    }

    /// Stops every thread's work: both sides hung up on, a waiting accept
    /// woken, the socket removed.
    fn hang_up(&self) {
        // Under the sockets' lock: a socket kept meanwhile is shut down by `keep`.
        let sockets = self.shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in sockets.iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        drop(sockets);
        let _ = UnixStream::connect(&self.socket);
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.hang_up();
    }
}

/// Accepts one frontend, connects to the backend, starts the main channel's two pumps.
fn accept(listener: &UnixListener, backend: &Path, shared: &Arc<Shared>) -> Result<(), String> {
    let (frontend, _) = listener.accept().map_err(|e| format!("relay: accept: {e}"))?;
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let to_backend = UnixStream::connect(backend)
        .map_err(|e| format!("relay: connect to the backend at {}: {e}", backend.display()))?;
    start_pumps(shared, frontend, to_backend, Channel::Main).map_err(|e| format!("relay: {e}"))
}

/// Both directions of one channel, the frontend's end and the backend's.
fn start_pumps(shared: &Arc<Shared>, frontend: UnixStream, backend: UnixStream, channel: Channel) -> io::Result<()> {
    shared.keep(&frontend, channel)?;
    shared.keep(&backend, channel)?;
    let (f2, b2) = (frontend.try_clone()?, backend.try_clone()?);
    let sh = shared.clone();
    shared.spawn(&format!("relay-{channel:?}-from-frontend"), move || {
        pump(&frontend, &backend, channel, Sender::Frontend, &sh)
    })?;
    let sh = shared.clone();
    shared.spawn(&format!("relay-{channel:?}-from-backend"), move || pump(&b2, &f2, channel, Sender::Backend, &sh))
}

/// Relays messages `from` → `to`, recording each, until either side ends;
/// then shuts both down so the other direction ends too.
fn pump(
    from: &UnixStream,
    to: &UnixStream,
    channel: Channel,
    sender: Sender,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let res = pump_loop((from, to), channel, sender, shared);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    let closed_on_purpose = channel == Channel::Backend && shared.channel_closed.load(Ordering::SeqCst);
    if shared.stop.load(Ordering::SeqCst) || closed_on_purpose { Ok(()) } else { res }
}

fn pump_loop(
    (from, to): (&UnixStream, &UnixStream),
    channel: Channel,
    sender: Sender,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    loop {
        let msg = match wire::recv(from) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("relay ({channel:?}, from the {sender:?}): {e}")),
        };
        shared.note(&msg, channel, sender);
        if (channel, sender) == (Channel::Backend, Sender::Backend) && !msg.is_reply() {
            shared.requests.fetch_add(1, Ordering::SeqCst);
        }
        let takes_channel = channel == Channel::Main
            && sender == Sender::Frontend
            && !msg.is_reply()
            && msg.request == SET_BACKEND_REQ_FD
            && !msg.fds.is_empty();
        let request = msg.request;
        let sent = match (channel, sender) {
            _ if takes_channel => take_backend_channel(msg, to, shared),
            (Channel::Backend, Sender::Backend) if refused(&msg, shared) => refuse(&msg, from, shared),
            (Channel::Backend, Sender::Frontend) => {
                if let Some(d) = shared.faults.ack_delay.filter(|_| msg.is_reply()) {
                    shared.hold(d);
                }
                let _writing = shared.to_backend_channel.lock().unwrap_or_else(|p| p.into_inner());
                wire::forward(to, &msg)
            }
            _ => wire::forward(to, &msg),
        };
        sent.map_err(|e| format!("relay ({channel:?}, from the {sender:?}): forwarding request {request}: {e}"))?;
    }
}

/// Whether the relay refuses this request of the backend's itself (counts the maps).
fn refused(msg: &Message, shared: &Shared) -> bool {
    if msg.is_reply() || msg.request != shmem_proto::ShmemOp::Map.code() {
        return false;
    }
    let k = shared.maps.fetch_add(1, Ordering::SeqCst) + 1;
    shared.faults.refuse_map_number == Some(k)
}

/// The relay's own ack 1 to a refused request, recorded as the relay's.
fn refuse(msg: &Message, backend: &UnixStream, shared: &Shared) -> io::Result<()> {
    if !msg.needs_reply() {
        return Ok(());
    }
    let ack = Message {
        request: msg.request,
        flags: wire::VERSION_1 | wire::FLAG_REPLY,
        body: 1u64.to_le_bytes().to_vec(),
        fds: Vec::new(),
    };
    shared.note(&ack, Channel::Backend, Sender::Relay);
    let _writing = shared.to_backend_channel.lock().unwrap_or_else(|p| p.into_inner());
    wire::forward(backend, &ack)
}

/// SET_BACKEND_REQ_FD: keeps the frontend's end of the backend channel,
/// hands the backend one end of a new pair instead, and relays between them.
fn take_backend_channel(mut msg: Message, to: &UnixStream, shared: &Arc<Shared>) -> io::Result<()> {
    let frontend_end = UnixStream::from(msg.fds.remove(0));
    let (ours, theirs) = UnixStream::pair()?;
    let fds: Vec<OwnedFd> = std::iter::once(OwnedFd::from(theirs)).chain(msg.fds.drain(..)).collect();
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    wire::send(to, msg.request, msg.flags, &msg.body, &raw)?;
    drop(fds);
    start_pumps(shared, frontend_end, ours, Channel::Backend)
}
