//! Runs the test-device backend on a Unix socket inside a private (0700)
//! directory: accepts one frontend, puts a message tap between it and the
//! `vhost-user-backend` daemon, and hands out the backend channel.
//! It does not decide what to map; that is the mapping manager's job.

use std::fs;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vhost::vhost_user::Listener;
use vhost::vhost_user::message::FrontendReq;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::backend::{BackendFaults, Direction, Recorder, TapRecord, TestDevice};
use crate::channel::BackendChannel;
use crate::spec::DeviceSpec;
use crate::wire;

/// Name of a frontend request number, as the `vhost` crate spells it.
pub fn request_name(request: u32) -> String {
    match FrontendReq::try_from(request) {
        Ok(r) => format!("{r:?}"),
        Err(_) => format!("REQUEST_{request}"),
    }
}

#[derive(Default)]
struct Shared {
    channel: Mutex<Option<Arc<BackendChannel>>>,
    /// Clones of the live sockets, so shutdown can unblock every thread.
    sockets: Mutex<Vec<UnixStream>>,
    stop: AtomicBool,
    /// Passed by the tap before it serves each frontend message; a
    /// single-threaded backend's channel holds it while awaiting an ack.
    gate: Arc<Mutex<()>>,
}

/// A running backend for one frontend connection.
pub struct BackendServer {
    dir: Option<TempDir>,
    /// Where the internal daemon socket lives (the temp dir, or SOCKET.d).
    private: PathBuf,
    socket: PathBuf,
    recorder: Arc<Recorder>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl BackendServer {
    /// Starts listening in a fresh private directory under the system temp dir.
    pub fn start(spec: DeviceSpec) -> io::Result<Self> {
        Self::start_in(spec, &std::env::temp_dir())
    }

    /// Starts listening in a fresh private directory under `parent`.
    pub fn start_in(spec: DeviceSpec, parent: &Path) -> io::Result<Self> {
        spec.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Self::start_unvalidated_in(spec, parent)
    }

    /// As [`Self::start_in`] but advertises `spec` even when it breaks the
    /// rules (a total that is not a power of two...): for hazard probes that
    /// check what a frontend does with such a device.
    pub fn start_unvalidated_in(spec: DeviceSpec, parent: &Path) -> io::Result<Self> {
        Self::start_faulty_in(spec, parent, BackendFaults::default())
    }

    /// As [`Self::start_unvalidated_in`], with the device wrong on purpose.
    pub fn start_faulty_in(spec: DeviceSpec, parent: &Path, faults: BackendFaults) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("shmem-backend-").tempdir_in(parent)?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        let socket = dir.path().join("vhost-user.sock");
        Self::listen(spec, socket, Some(dir), faults)
    }

    /// Starts listening at `socket`, whose directory the caller owns (it
    /// should be private: whoever can connect can map files into the guest).
    pub fn start_at(spec: DeviceSpec, socket: &Path) -> io::Result<Self> {
        spec.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Self::listen(spec, socket.to_path_buf(), None, BackendFaults::default())
    }

    fn listen(spec: DeviceSpec, socket: PathBuf, dir: Option<TempDir>, faults: BackendFaults) -> io::Result<Self> {
        let private = dir.as_ref().map_or_else(|| socket.with_extension("d"), |d| d.path().to_path_buf());
        if dir.is_none() {
            fs::create_dir(&private)
                .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", private.display())))?;
            fs::set_permissions(&private, fs::Permissions::from_mode(0o700))?;
        }
        let listener = UnixListener::bind(&socket)
            .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", socket.display())))?;
        let recorder = Arc::new(Recorder::default());
        let shared = Arc::new(Shared::default());
        let device = TestDevice::new(spec, recorder.clone(), faults)?;
        let inner_path = private.join("daemon.sock");
        let (rec, sh) = (recorder.clone(), shared.clone());
        let thread = thread::Builder::new()
            .name("shmem-backend".into())
            .spawn(move || serve_one(listener, &inner_path, device, &rec, &sh))?;
        Ok(BackendServer { dir, private, socket, recorder, shared, thread: Some(thread) })
    }

    /// The private (0700) directory of this server's sockets; others that
    /// belong to the same boot may go there too.
    pub fn private_dir(&self) -> &Path {
        &self.private
    }

    /// Path of the vhost-user socket the frontend connects to.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// What the frontend has told the backend so far.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Waits until the frontend has installed the backend channel
    /// (SET_BACKEND_REQ_FD) and returns it.
    pub fn channel(&self, timeout: Duration) -> io::Result<Arc<BackendChannel>> {
        let ok = self.recorder.wait_for(timeout, |r| r.channel_installed || r.disconnected);
        let chan = self.shared.channel.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match chan {
            Some(c) if ok => Ok(c),
            _ => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the frontend did not install the backend channel (SET_BACKEND_REQ_FD) within {timeout:?}{}",
                    if self.recorder.lock().disconnected { "; it disconnected" } else { "" }
                ),
            )),
        }
    }

    /// The gate of a single-threaded backend (see [`BackendChannel::set_serve_gate`]).
    pub fn serve_gate(&self) -> Arc<Mutex<()>> {
        self.shared.gate.clone()
    }

    /// Stops every thread and removes the private directory.
    pub fn shutdown(mut self) -> Result<(), String> {
        self.stop_threads()
    }

    /// Waits until the frontend disconnects, then cleans up like `shutdown`.
    pub fn wait(mut self) -> Result<(), String> {
        let res = match self.thread.take() {
            Some(t) => t.join().map_err(|_| "backend thread panicked".to_string()).and_then(|r| r),
            None => Ok(()),
        };
        self.stop_threads().and(res)
    }

    fn stop_threads(&mut self) -> Result<(), String> {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.sockets.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake an accept() that is still waiting for a frontend.
        let _ = UnixStream::connect(&self.socket);
        let res = match self.thread.take() {
            Some(t) => t.join().map_err(|_| "backend thread panicked".to_string()).and_then(|r| r),
            None => Ok(()),
        };
        match self.dir.take() {
            Some(dir) => {
                let path = dir.path().to_path_buf();
                dir.close().map_err(|e| format!("removing {}: {e}", path.display()))?;
            }
            None => {
                let _ = fs::remove_file(&self.socket);
                let _ = fs::remove_dir_all(&self.private);
            }
        }
        res
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        let _ = self.stop_threads();
    }
}

fn serve_one(
    listener: UnixListener,
    inner_path: &Path,
    device: TestDevice,
    recorder: &Arc<Recorder>,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let (frontend, _) = listener.accept().map_err(|e| format!("accept on the vhost-user socket: {e}"))?;
    drop(listener);
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let inner = UnixListener::bind(inner_path).map_err(|e| format!("bind {}: {e}", inner_path.display()))?;
    let to_daemon = UnixStream::connect(inner_path).map_err(|e| format!("connect to the daemon socket: {e}"))?;
    let device_handle = device.clone();
    let mut daemon =
        VhostUserDaemon::new("shmem-test-device".into(), device, GuestMemoryAtomic::new(GuestMemoryMmap::new()))
            .map_err(|e| format!("creating the vhost-user daemon: {e}"))?;
    let mut inner = Listener::from(inner);
    daemon.start(&mut inner).map_err(|e| format!("starting the vhost-user daemon: {e}"))?;
    {
        let mut socks = shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for s in [&frontend, &to_daemon] {
            socks.push(s.try_clone().map_err(|e| format!("dup socket: {e}"))?);
        }
    }
    let downstream = spawn_tap(&frontend, &to_daemon, Direction::FromFrontend, recorder, shared)?;
    let upstream = spawn_tap(&to_daemon, &frontend, Direction::ToFrontend, recorder, shared)?;
    let daemon_res = daemon.wait();
    // The vring workers run until told to exit; nothing else tells them.
    for handler in daemon.get_epoll_handlers() {
        handler.send_exit_event();
    }
    for s in [&frontend, &to_daemon] {
        let _ = s.shutdown(Shutdown::Both);
    }
    let taps = [downstream.join(), upstream.join()];
    recorder.update(|r| r.disconnected = true);
    drop(daemon);
    device_handle.close_leaked_exit_fds();
    let _ = fs::remove_file(inner_path);
    let stopping = shared.stop.load(Ordering::SeqCst);
    for t in taps {
        match t {
            Ok(Err(e)) if !stopping => return Err(e),
            Err(_) => return Err("tap thread panicked".into()),
            _ => {}
        }
    }
    match daemon_res {
        // A frontend that goes away ends the daemon with one of these.
        Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => Ok(()),
        Err(e) if !stopping => Err(format!("vhost-user daemon ended with: {e}")),
        _ => Ok(()),
    }
}

type TapHandle = JoinHandle<Result<(), String>>;

fn spawn_tap(
    from: &UnixStream,
    to: &UnixStream,
    direction: Direction,
    recorder: &Arc<Recorder>,
    shared: &Arc<Shared>,
) -> Result<TapHandle, String> {
    let clone = |s: &UnixStream| s.try_clone().map_err(|e| format!("dup socket: {e}"));
    let (from, to, rec, sh) = (clone(from)?, clone(to)?, recorder.clone(), shared.clone());
    thread::Builder::new()
        .name(format!("tap-{direction:?}"))
        .spawn(move || tap(&from, &to, direction, &rec, &sh))
        .map_err(|e| format!("spawn tap: {e}"))
}

/// Copies messages from `from` to `to`, recording each; captures the backend
/// channel fd from SET_BACKEND_REQ_FD on the way. When either side ends, both
/// sockets are shut down so the daemon and the other direction end too.
fn tap(
    from: &UnixStream,
    to: &UnixStream,
    direction: Direction,
    recorder: &Recorder,
    shared: &Shared,
) -> Result<(), String> {
    let res = tap_loop((from, to), direction, recorder, shared);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    res
}

fn tap_loop(
    (from, to): (&UnixStream, &UnixStream),
    direction: Direction,
    recorder: &Recorder,
    shared: &Shared,
) -> Result<(), String> {
    loop {
        let msg = match wire::recv(from) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(_) if shared.stop.load(Ordering::SeqCst) => return Ok(()),
            Err(e) => return Err(format!("tap ({direction:?}): {e}")),
        };
        let value = msg.body_u64();
        let record = TapRecord {
            at: Instant::now(),
            direction,
            request: msg.request,
            name: request_name(msg.request),
            flags: msg.flags,
            size: msg.body.len(),
            nfds: msg.fds.len(),
            value,
        };
        if direction == Direction::FromFrontend && !msg.is_reply() {
            if let (true, Some(fd)) = (msg.request == FrontendReq::SET_BACKEND_REQ_FD as u32, msg.fds.first()) {
                let dup: OwnedFd = fd.as_fd().try_clone_to_owned().map_err(|e| format!("dup backend channel: {e}"))?;
                let chan = BackendChannel::new(UnixStream::from(dup));
                *shared.channel.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(chan));
            }
            recorder.update(|r| {
                if msg.request == FrontendReq::SET_FEATURES as u32 {
                    r.acked_features = value;
                } else if msg.request == FrontendReq::SET_PROTOCOL_FEATURES as u32 {
                    r.acked_protocol_features = value;
                }
                r.messages.push(record);
            });
        } else {
            recorder.update(|r| r.messages.push(record));
        }
        let serving =
            (direction == Direction::FromFrontend).then(|| shared.gate.lock().unwrap_or_else(|p| p.into_inner()));
        let forwarded = wire::forward(to, &msg);
        drop(serving);
        if let Err(e) = forwarded {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            return Err(format!("tap ({direction:?}) forwarding {}: {e}", request_name(msg.request)));
        }
    }
}
