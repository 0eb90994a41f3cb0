//! The reference frontend model: an in-process stand-in for QEMU's side of
//! vhost-user shared memory. It negotiates through the `vhost` crate's
//! `Frontend`, reserves each region as an inaccessible address range, and
//! serves SHMEM_MAP/UNMAP with QEMU's validation order and acks, but with the
//! specified semantics (read-only really is read-only). Fault switches make it
//! wrong on purpose so the suite can show it catches a wrong frontend.
//! It is an oracle and a fast path, never a replacement for real QEMU.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserShMemConfig};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};

use crate::backend::{FileId, offered_features};
use crate::channel::{MmapBytes, ShmemMsg, ShmemOp};
use shmem_proto::MAP_RW;
use crate::memprobe::{self, Access};
use shmem_proto::PAGE_SIZE;
use crate::wire;

/// Guest-physical address the model pretends the shared-memory BAR sits at
/// (where SeaBIOS put it in QEMU runs), used in the memory tables it sends.
pub const MODEL_BAR_BASE: u64 = 0xfe00_0000;
/// Size of the model's pretend guest RAM (at guest address 0).
const GUEST_RAM: u64 = 2 << 20;
/// vhost-user memory tables carry at most this many regions without
/// CONFIGURE_MEM_SLOTS.
const MAX_TABLE_REGIONS: usize = 8;

/// Ways to make the model wrong on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Map read-only requests writable (what QEMU 11.1.3 effectively does).
    pub ignore_readonly: bool,
    /// Accept a map that overlaps an existing mapping.
    pub skip_overlap_check: bool,
    /// Leak the dup'd fd when a mapping is unmapped or reset.
    pub keep_fd_after_unmap: bool,
    /// Die (stop serving, drop the channel) on a map sent to a device that
    /// is not started, as QEMU 11.1.3 does with SIGSEGV.
    pub crash_on_stopped_map: bool,
    /// Reply to a map or unmap first and make it visible to the guest only
    /// [`COMMIT_DELAY`] later, as QEMU 11.1.3 replies before it commits.
    pub reply_before_commit: bool,
    /// Send the memory table and wait for the backend's ack of it before
    /// replying: a backend that serves the frontend on the thread that waits
    /// for the reply deadlocks.
    pub commit_before_reply: bool,
    /// Ack an unmap but leave the mapping in place (the range still shows
    /// the file, and a later map of it overlaps).
    pub unmap_without_effect: bool,
    /// Answer this many requests, then none (a frontend stuck mid-run: the
    /// backend's watchdog must name it).
    pub stop_acking_after: Option<usize>,
    /// Refuse every map (ack 1), as a frontend out of slots would.
    pub refuse_all_maps: bool,
    /// After an unmap, the range reads 0xa5 bytes instead of nothing: a
    /// frontend that leaves garbage where nothing is mapped.
    pub unmapped_reads_garbage: bool,
    /// A reset drops the mappings without sending a new memory table (the
    /// backend keeps believing in them until the device starts again).
    pub keep_table_after_reset: bool,
    /// Accept maps whose offsets or length are not page aligned, as QEMU
    /// 11.1.3 does (the backend test runs so, to follow a backend past
    /// them; its own check judges alignment).
    pub accept_unaligned: bool,
    /// Refuse the k-th SHMEM_MAP (1-based; ack 1), whatever it asks.
    pub refuse_map_number: Option<usize>,
    /// Hold every ack this long before sending it.
    pub ack_delay: Option<Duration>,
    /// Refuse a zero-length map strictly inside a mapping as an overlap,
    /// as QEMU 11.1.3 does (it checks overlap first and counts the empty range).
    pub zero_length_as_overlap: bool,
}

/// How long the `reply_before_commit` fault leaves the guest view stale.
pub const COMMIT_DELAY: Duration = Duration::from_millis(2);

/// Why the model rejected a request: the errno QEMU's handler would return
/// and the reason QEMU prints (the backend only ever sees ack 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub errno: i32,
    pub reason: &'static str,
}

const fn reject(errno: i32, reason: &'static str) -> Rejection {
    Rejection { errno, reason }
}

/// One request the model served.
#[derive(Clone, Debug)]
pub struct Served {
    pub request: u32,
    pub msg: Option<ShmemMsg>,
    pub with_fd: bool,
    /// Size of the fd sent, and whether it was opened read-write.
    pub fd_size: Option<u64>,
    pub fd_rw: Option<bool>,
    pub ack: Option<u64>,
    pub result: Result<(), Rejection>,
    /// Set when applying an accepted request failed after its ack.
    pub apply_error: Option<String>,
}

/// A live mapping in the model.
#[derive(Debug)]
struct Mapping {
    shmid: u8,
    shm_offset: u64,
    len: u64,
    fd_offset: u64,
    rw: bool,
    fd: OwnedFd,
}

/// What a caller may learn about a live mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingInfo {
    pub shmid: u8,
    pub shm_offset: u64,
    pub len: u64,
    pub fd_offset: u64,
    pub rw: bool,
}

/// One region's reserved address range.
#[derive(Debug)]
struct Region {
    base: usize,
    size: u64,
}

impl Region {
    fn reserve(size: u64) -> io::Result<Self> {
        // SAFETY: anonymous PROT_NONE reservation; we own the range until Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region { base: p as usize, size })
    }

    /// Puts the range back to inaccessible.
    fn clear(&self, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: the range is inside our own reservation.
        let p = unsafe {
            libc::mmap(
                (self.base + offset as usize) as *mut libc::c_void,
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Puts private memory full of 0xa5 bytes over the range (a fault switch).
    fn garbage(&self, offset: u64, len: u64) -> io::Result<()> {
        let at = (self.base + offset as usize) as *mut libc::c_void;
        // SAFETY: the range is inside our own reservation; we fill what we just mapped.
        unsafe {
            let p = libc::mmap(at, len as usize, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, -1, 0);
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            std::ptr::write_bytes(p.cast::<u8>(), 0xa5, len as usize);
        }
        Ok(())
    }

    fn map_file(&self, m: &Mapping, writable: bool) -> io::Result<()> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: MAP_FIXED inside our own reservation, shared mapping of a file we hold.
        let p = unsafe {
            libc::mmap(
                (self.base + m.shm_offset as usize) as *mut libc::c_void,
                m.len as usize,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                m.fd.as_raw_fd(),
                m.fd_offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping the reservation we made.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size as usize) };
    }
}

struct State {
    faults: Faults,
    mappings: Vec<Mapping>,
    leaked: Vec<OwnedFd>,
    served: Vec<Served>,
    /// Accepted requests whose change is not applied yet.
    pending: VecDeque<usize>,
    started: bool,
    /// Why the model died (a fault switch or a panic), once it did.
    died: Option<String>,
    /// The frontend message the model is waiting for the backend to answer, since when.
    waiting: Option<(&'static str, Instant)>,
}

struct Inner {
    frontend: Mutex<Frontend>,
    regions: Vec<Option<Region>>,
    guest_ram: GuestRam,
    state: Mutex<State>,
    applied: Condvar,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offset of region `shmid` in the model's BAR (see [`crate::spec::pack_regions`]).
    fn window(&self, shmid: u8) -> u64 {
        let sizes: Vec<u64> = self.regions.iter().map(|r| r.as_ref().map_or(0, |r| r.size)).collect();
        crate::spec::pack_regions(&sizes).into_iter().find(|w| w.0 == shmid).map_or(0, |w| w.1)
    }
}

/// A connected model frontend.
pub struct ModelFrontend {
    inner: Arc<Inner>,
    /// Kick and call eventfds of the queues started by [`Self::start_queues`].
    queues: Mutex<Vec<(vmm_sys_util::eventfd::EventFd, vmm_sys_util::eventfd::EventFd)>>,
    /// A dup of the frontend socket: shut down when the model ends, so a
    /// message the backend never answers does not hold the model's threads.
    fe_sock: UnixStream,
    chan: UnixStream,
    server: Option<JoinHandle<()>>,
}

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
struct Watchdog {
    disarm: mpsc::Sender<()>,
    thread: thread::JoinHandle<bool>,
}

impl Watchdog {
    fn arm(sock: &UnixStream) -> io::Result<Self> {
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
    fn disarm(self, what: &str) -> io::Result<()> {
        let _ = self.disarm.send(());
        match self.thread.join() {
            Ok(false) => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::TimedOut, format!("model frontend: {what}: the backend did not answer within {REPLY_TIMEOUT:?}, so the model hung up"))),
        }
    }
}

fn ctx(what: &str) -> impl FnOnce(vhost::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("model frontend: {what}: {e}"))
}

impl ModelFrontend {
    /// Connects to a backend socket and does what QEMU does at device
    /// realize: features, protocol features, backend channel, owner,
    /// GET_SHMEM_CONFIG.
    pub fn connect(socket: &Path, num_queues: u64, faults: Faults) -> io::Result<Self> {
        Self::connect_seeing(socket, num_queues, faults, &mut None)
    }

    /// As [`Self::connect`], and says in `offered` what the backend offered
    /// (features, protocol features) even when the handshake then fails.
    /// The handshake's answers come within [`REPLY_TIMEOUT`], or it fails saying so.
    pub fn connect_seeing(socket: &Path, num_queues: u64, faults: Faults, offered: &mut Option<(u64, u64)>) -> io::Result<Self> {
        let stream = UnixStream::connect(socket).map_err(|e| io::Error::new(e.kind(), format!("model frontend: connect {}: {e}", socket.display())))?;
        let watchdog = Watchdog::arm(&stream)?;
        // Kept to unblock the model at shut-down when a backend never answers (QEMU would wait forever).
        let fe_sock = stream.try_clone()?;
        let mut fe = Frontend::from_stream(stream, num_queues);
        let shook = handshake(&mut fe, offered);
        // A backend that stalled is named as such, not by the broken socket the watchdog left.
        watchdog.disarm("the handshake")?;
        let (ours, config) = shook?;
        let count = (config.nregions as usize).min(config.memory_sizes.len());
        let sizes = config.memory_sizes;
        let regions = sizes[..count]
            .iter()
            .map(|&s| if s == 0 { Ok(None) } else { Region::reserve(s).map(Some) })
            .collect::<io::Result<Vec<_>>>()?;
        let guest_ram = guest_ram()?;
        let inner = Arc::new(Inner {
            frontend: Mutex::new(fe),
            regions,
            guest_ram,
            state: Mutex::new(State {
                faults,
                mappings: Vec::new(),
                leaked: Vec::new(),
                served: Vec::new(),
                pending: VecDeque::new(),
                started: false,
                died: None,
                waiting: None,
            }),
            applied: Condvar::new(),
        });
        let (srv_inner, srv_sock) = (inner.clone(), ours.try_clone()?);
        let server = thread::Builder::new().name("model-backend-channel".into()).spawn(move || {
            // A panic is the model's crash: noticed like QEMU's death, never the runner's.
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(&srv_inner, &srv_sock))) {
                let what = crate::panic_text(p.as_ref());
                srv_inner.state().died = Some(format!("panicked: {what}"));
                let _ = srv_sock.shutdown(Shutdown::Both);
            }
        })?;
        Ok(ModelFrontend { inner, queues: Mutex::default(), fe_sock, chan: ours, server: Some(server) })
    }

    /// What QEMU does when the guest sets DRIVER_OK: SET_FEATURES and the
    /// memory table (guest RAM only).
    pub fn start(&self) -> io::Result<()> {
        self.watched("starting the device", || self.start_unwatched())
    }

    /// `f`, the backend hung up on when it leaves an answer owed for
    /// [`REPLY_TIMEOUT`] (then the error says so, whatever `f` returned).
    fn watched<T>(&self, what: &str, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let watchdog = Watchdog::arm(&self.fe_sock)?;
        let r = f();
        watchdog.disarm(what)?;
        r
    }

    fn start_unwatched(&self) -> io::Result<()> {
        {
            let fe = self.inner.frontend.lock().unwrap_or_else(|p| p.into_inner());
            fe.set_features(offered_features()).map_err(ctx("SET_FEATURES"))?;
        }
        self.inner.state().started = true;
        send_mem_table(&self.inner).map_err(|e| io::Error::other(format!("model frontend: SET_MEM_TABLE: {e}")))
    }

    /// Starts virtqueues as QEMU does after the memory table: size, base 0,
    /// addresses (guest-physical in the model's guest RAM), kick and call
    /// eventfds, enable. `queues[i]` is queue i.
    pub fn start_queues(&self, queues: &[shmem_virtio_media::virtq::QueueAddrs], size: u16) -> io::Result<()> {
        self.watched("starting the queues", || self.start_queues_unwatched(queues, size))
    }

    fn start_queues_unwatched(&self, queues: &[shmem_virtio_media::virtq::QueueAddrs], size: u16) -> io::Result<()> {
        use vhost::vhost_user::message::VhostUserVringAddrFlags;
        use vhost::VringConfigData;
        use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
        let mut fe = self.inner.frontend.lock().unwrap_or_else(|p| p.into_inner());
        let mut fds = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let hva = |gpa: u64| self.inner.guest_ram.addr as u64 + gpa;
        for (i, q) in queues.iter().enumerate() {
            let (kick, call) = (EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?);
            fe.set_vring_num(i, size).map_err(ctx("SET_VRING_NUM"))?;
            fe.set_vring_base(i, 0).map_err(ctx("SET_VRING_BASE"))?;
            let cfg = VringConfigData {
                queue_max_size: size,
                queue_size: size,
                flags: VhostUserVringAddrFlags::empty().bits(),
                desc_table_addr: hva(q.desc),
                used_ring_addr: hva(q.used),
                avail_ring_addr: hva(q.avail),
                log_addr: None,
            };
            fe.set_vring_addr(i, &cfg).map_err(ctx("SET_VRING_ADDR"))?;
            fe.set_vring_kick(i, &kick).map_err(ctx("SET_VRING_KICK"))?;
            fe.set_vring_call(i, &call).map_err(ctx("SET_VRING_CALL"))?;
            fe.set_vring_enable(i, true).map_err(ctx("SET_VRING_ENABLE"))?;
            fds.push((kick, call));
        }
        Ok(())
    }

    /// Rings queue `queue`'s doorbell (its kick eventfd).
    pub fn kick(&self, queue: u16) -> io::Result<()> {
        let fds = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        fds.get(usize::from(queue)).ok_or_else(|| io::Error::other(format!("queue {queue} was not started")))?.0.write(1)
    }

    /// Reads the model's guest RAM at `gpa` (the virtqueues live there).
    pub fn ram_read(&self, gpa: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = self.ram_range(gpa, buf.len())?;
        // SAFETY: inside the model's own guest RAM mapping (checked above).
        unsafe { std::ptr::copy_nonoverlapping(at as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Writes the model's guest RAM at `gpa`.
    pub fn ram_write(&self, gpa: u64, data: &[u8]) -> io::Result<()> {
        let at = self.ram_range(gpa, data.len())?;
        // SAFETY: inside the model's own guest RAM mapping (checked above).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), at as *mut u8, data.len()) };
        Ok(())
    }

    fn ram_range(&self, gpa: u64, len: usize) -> io::Result<usize> {
        match gpa.checked_add(len as u64) {
            Some(end) if end <= GUEST_RAM => Ok(self.inner.guest_ram.addr + gpa as usize),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{gpa:#x}+{len:#x} is outside the model's guest RAM"))),
        }
    }

    /// Closes the backend's request channel, as a frontend that drops it
    /// would: the backend's next request finds no one to answer it.
    pub fn close_backend_channel(&self) {
        let _ = self.chan.shutdown(Shutdown::Both);
    }

    /// Where the model put each region in its shared-memory BAR
    /// (`(shmid, offset, size)`), packed from what GET_SHMEM_CONFIG reported
    /// as QEMU packs them.
    pub fn region_windows(&self) -> Vec<(u8, u64, u64)> {
        crate::spec::pack_regions(&self.inner.regions.iter().map(|r| r.as_ref().map_or(0, |r| r.size)).collect::<Vec<_>>())
    }

    fn region(&self, shmid: u8, offset: u64, len: u64) -> io::Result<&Region> {
        let r = self
            .inner
            .regions
            .get(usize::from(shmid))
            .and_then(Option::as_ref)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("model has no region shmid {shmid}")))?;
        match offset.checked_add(len) {
            Some(end) if end <= r.size => Ok(r),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("range {offset:#x}+{len:#x} is outside region shmid {shmid} of size {:#x}", r.size),
            )),
        }
    }

    /// Reads the region as a guest would see it; `Err(Access)` where nothing
    /// readable is mapped.
    pub fn read(&self, shmid: u8, offset: u64, len: u64) -> io::Result<Result<Vec<u8>, Access>> {
        let r = self.region(shmid, offset, len)?;
        // SAFETY: the range is checked to be inside our reservation.
        unsafe { memprobe::read((r.base + offset as usize) as *const u8, len as usize) }
    }

    /// Writes into the region as a guest would; `Err(Access)` where the
    /// mapping is read-only or absent.
    pub fn write(&self, shmid: u8, offset: u64, data: &[u8]) -> io::Result<Result<(), Access>> {
        let r = self.region(shmid, offset, data.len() as u64)?;
        // SAFETY: the range is checked to be inside our reservation.
        unsafe { memprobe::write((r.base + offset as usize) as *mut u8, data) }
    }

    /// Address of a region in this process (for /proc/self/maps checks).
    pub fn region_addr(&self, shmid: u8) -> Option<usize> {
        self.inner.regions.get(usize::from(shmid))?.as_ref().map(|r| r.base)
    }

    /// Waits until every acked request has been applied.
    pub fn sync(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.state();
        while !st.pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("model did not apply acked requests within {timeout:?}")));
            }
            st = self.inner.applied.wait_timeout(st, deadline - now).map_err(|_| io::Error::other("model state poisoned"))?.0;
        }
        Ok(())
    }

    /// Device reset (`virtio_reset`): every mapping goes and its fd is
    /// closed, and a started device tells the backend with a memory table
    /// that no longer holds them (QEMU 11.1.3 sends none: the backend's view
    /// goes stale).
    pub fn reset(&self) -> io::Result<()> {
        let started_queues = std::mem::take(&mut *self.queues.lock().unwrap_or_else(|p| p.into_inner())).len();
        self.watched("GET_VRING_BASE at reset", || {
            (0..started_queues).try_for_each(|i| {
                let fe = self.inner.frontend.lock().unwrap_or_else(|p| p.into_inner());
                fe.get_vring_base(i).map(|_| ()).map_err(ctx("GET_VRING_BASE at reset"))
            })
        })?;
        let was_started = {
            let mut st = self.inner.state();
            let keep = st.faults.keep_fd_after_unmap;
            let mappings = std::mem::take(&mut st.mappings);
            for m in mappings {
                self.inner.regions[usize::from(m.shmid)].as_ref().map_or(Ok(()), |r| r.clear(m.shm_offset, m.len))?;
                if keep {
                    st.leaked.push(m.fd);
                }
            }
            st.started && !st.faults.keep_table_after_reset
        };
        let table = if was_started { send_mem_table(&self.inner) } else { Ok(()) };
        self.inner.state().started = false;
        table.map_err(|e| io::Error::other(format!("model frontend: SET_MEM_TABLE after reset: {e}")))
    }

    /// Live mappings.
    pub fn mappings(&self) -> Vec<MappingInfo> {
        self.inner
            .state()
            .mappings
            .iter()
            .map(|m| MappingInfo { shmid: m.shmid, shm_offset: m.shm_offset, len: m.len, fd_offset: m.fd_offset, rw: m.rw })
            .collect()
    }

    /// Identities of every file the model holds an fd of (live mappings and
    /// any the `keep_fd_after_unmap` fault leaked).
    pub fn held_files(&self) -> Vec<FileId> {
        let st = self.inner.state();
        st.mappings.iter().map(|m| &m.fd).chain(st.leaked.iter()).filter_map(|fd| FileId::of(fd).ok()).collect()
    }

    /// The frontend message the model is waiting for the backend to answer, and for how long.
    pub fn waiting_for(&self) -> Option<(&'static str, Duration)> {
        self.inner.state().waiting.map(|(what, since)| (what, since.elapsed()))
    }

    /// Why the model died, if it did (its channel is closed then).
    pub fn death(&self) -> Option<String> {
        self.inner.state().died.clone()
    }

    /// Ends the model as QEMU ends on request: closes the channel and joins
    /// the thread serving it. Err when it had died or does not end in time.
    pub fn shut_down(&mut self, timeout: Duration) -> Result<(), String> {
        let _ = self.chan.shutdown(Shutdown::Both);
        let deadline = Instant::now() + timeout;
        let mut stuck = false;
        while self.server.as_ref().is_some_and(|t| !t.is_finished()) {
            if Instant::now() >= deadline && !stuck {
                // Waiting for the backend to answer a message: hang up on it too.
                stuck = true;
                let _ = self.fe_sock.shutdown(Shutdown::Both);
            } else if Instant::now() >= deadline + timeout {
                return Err(format!("the model's channel thread did not end within {timeout:?}"));
            }
            thread::sleep(Duration::from_millis(5));
        }
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        if stuck {
            return Err(format!("the model's channel thread was waiting for the backend to answer the frontend for more than {timeout:?}"));
        }
        self.death().map_or(Ok(()), |d| Err(format!("the model had died: {d}")))
    }

    /// How many backend requests have been served so far.
    pub fn served_count(&self) -> usize {
        self.inner.state().served.len()
    }

    /// How many SHMEM_MAP requests have been served so far.
    pub fn maps_served(&self) -> usize {
        maps_in(&self.inner.state().served)
    }

    /// The backend requests served from the `from`-th on, in order.
    pub fn served_since(&self, from: usize) -> Vec<Served> {
        self.inner.state().served.get(from..).map(<[Served]>::to_vec).unwrap_or_default()
    }
}

impl Drop for ModelFrontend {
    fn drop(&mut self) {
        let _ = self.chan.shutdown(Shutdown::Both);
        let _ = self.fe_sock.shutdown(Shutdown::Both);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
    }
}

/// The model's pretend guest RAM: a shared memfd mapping, unmapped on drop.
struct GuestRam {
    file: File,
    addr: usize,
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `guest_ram`.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, GUEST_RAM as usize) };
    }
}

fn guest_ram() -> io::Result<GuestRam> {
    // SAFETY: memfd_create with a static C string.
    let fd = unsafe { libc::memfd_create(c"model-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned here.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(GUEST_RAM)?;
    // SAFETY: shared mapping of our own memfd, unmapped when GuestRam drops.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), GUEST_RAM as usize, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(GuestRam { file, addr: p as usize })
}

/// QEMU's checks for SHMEM_MAP, in QEMU's order, then the model's own
/// stricter ones (alignment, file size, access mode) that QEMU does in mmap.
fn check_map(inner: &Inner, st: &State, msg: &ShmemMsg, fd: Option<&OwnedFd>) -> Result<(), Rejection> {
    let fd = fd.ok_or(reject(libc::EBADF, "Bad fd for map"))?;
    if st.faults.refuse_all_maps {
        return Err(reject(libc::ENOSPC, "no free memory slot (fault switch refuse_all_maps)"));
    }
    // QEMU 11.1.3 crashes here (its vhost device is not started); a correct
    // frontend refuses: there is no started device to map into.
    if !st.started {
        return Err(reject(libc::ENODEV, "device not started (no DRIVER_OK since the last reset)"));
    }
    let region = inner
        .regions
        .get(usize::from(msg.shmid))
        .and_then(Option::as_ref)
        .ok_or(reject(libc::EFAULT, "shared memory region not found or uninitialized"))?;
    match msg.shm_offset.checked_add(msg.len) {
        Some(end) if end <= region.size => {}
        _ => return Err(reject(libc::EFAULT, "Bad offset/len for mmap")),
    }
    // The spec (vhost-user.rst, SHMEM_MAP): "the memory range in the request
    // must correspond with a valid, free region of the VIRTIO Shared Memory
    // Region". An empty range is no valid region, and it holds no byte that
    // could overlap: its answer is its length, wherever it lies.
    let inside = |m: &Mapping| m.shmid == msg.shmid && m.shm_offset < msg.shm_offset && msg.shm_offset < m.shm_offset.saturating_add(m.len);
    if msg.len == 0 && st.faults.zero_length_as_overlap && st.mappings.iter().any(inside) {
        return Err(reject(libc::EFAULT, "mapping overlap"));
    }
    if msg.len == 0 {
        return Err(reject(libc::EINVAL, "size cannot be zero"));
    }
    // Same sentence, "free": and "Mapping over an already existing map is not allowed".
    if !st.faults.skip_overlap_check
        && st.mappings.iter().any(|m| m.shmid == msg.shmid && shmem_proto::overlaps((m.shm_offset, m.len), (msg.shm_offset, msg.len)))
    {
        return Err(reject(libc::EFAULT, "mapping overlap"));
    }
    if st.faults.refuse_map_number == Some(maps_in(&st.served) + 1) {
        return Err(reject(libc::ENOSPC, "refused on purpose (fault switch refuse_map_number)"));
    }
    // The spec: "the front-end will mmap the given fd into the VIRTIO Shared
    // Memory Region". mmap(2) takes a page-aligned file offset and address
    // and maps whole pages, so an unaligned offset cannot be mapped as asked,
    // and an unaligned length would show the guest bytes of the file past
    // the requested range (or, past the file's end, fault). The spec says no
    // more; this is the model's reading of it, and README says so.
    if !st.faults.accept_unaligned && ![msg.shm_offset, msg.fd_offset, msg.len].iter().all(|v| v.is_multiple_of(PAGE_SIZE)) {
        return Err(reject(libc::EINVAL, "offsets and length must be page aligned"));
    }
    let size = fd_size(fd).map_err(|_| reject(libc::EBADF, "fd cannot be examined"))?;
    match msg.fd_offset.checked_add(msg.len) {
        Some(end) if end <= size => {}
        _ => return Err(reject(libc::EINVAL, "backing store is too small")),
    }
    // SAFETY: F_GETFL on a valid fd.
    let mode = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) } & libc::O_ACCMODE;
    let rw = msg.flags & MAP_RW != 0;
    if mode == libc::O_WRONLY || (rw && mode != libc::O_RDWR) {
        return Err(reject(libc::EACCES, "Permission denied"));
    }
    // An accepted mapping must reach the backend's memory table; refuse
    // what the table cannot hold (QEMU 11.1.3 accepts it and fails to tell
    // the backend: "vhost_set_mem_table failed: No buffer space available").
    let in_table = 1 + st.mappings.iter().filter(|m| fd_writable(&m.fd)).count();
    if fd_writable(fd) && in_table + 1 > MAX_TABLE_REGIONS {
        return Err(reject(libc::ENOSPC, "no free vhost-user memory slot for the mapping"));
    }
    Ok(())
}

fn fd_size(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: fstat into a zeroed struct on a valid fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as u64)
}

fn fd_writable(fd: &OwnedFd) -> bool {
    // SAFETY: F_GETFL on a valid fd.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) & libc::O_ACCMODE == libc::O_RDWR }
}

fn check_unmap(inner: &Inner, st: &State, msg: &ShmemMsg) -> Result<usize, Rejection> {
    inner
        .regions
        .get(usize::from(msg.shmid))
        .and_then(Option::as_ref)
        .ok_or(reject(libc::EFAULT, "shared memory region not found or uninitialized"))?;
    st.mappings
        .iter()
        .position(|m| m.shmid == msg.shmid && m.shm_offset == msg.shm_offset && m.len == msg.len)
        .ok_or(reject(libc::EFAULT, "mapping not found"))
}

/// What an accepted request will do once acked.
enum Change {
    Map(Mapping),
    Unmap(usize),
}

/// Serves the backend channel until it closes. For each request: decide;
/// make the guest view current (apply); reply; then send the memory table.
/// So the guest never sees a stale view after the ack, and a backend that
/// waits for the ack on the thread serving the frontend never deadlocks on
/// the table. The fault switches change that order on purpose.
fn serve(inner: &Inner, sock: &UnixStream) {
    while let Ok(Some(mut req)) = wire::recv(sock) {
        let msg = ShmemMsg::from_bytes(&req.body).filter(|_| req.body.len() == 40);
        let fd = if req.fds.is_empty() { None } else { Some(req.fds.remove(0)) };
        let with_fd = fd.is_some();
        let (fd_size, fd_rw) = (fd.as_ref().and_then(|f| fd_size(f).ok()), fd.as_ref().map(fd_writable));
        let mut st = inner.state();
        if st.faults.crash_on_stopped_map && !st.started && req.request == ShmemOp::Map.code() {
            st.died = Some("crashed on a map to a stopped device (fault switch crash_on_stopped_map)".into());
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
        if faults_silent(&st) {
            // Stuck: the request is neither answered nor carried out.
            continue;
        }
        let decided = decide(inner, &st, req.request, msg, fd);
        let ack = req.needs_reply().then(|| u64::from(decided.is_err()));
        let index = st.served.len();
        st.served.push(Served {
            request: req.request,
            msg,
            with_fd,
            fd_size,
            fd_rw,
            ack,
            result: decided.as_ref().map(|_| ()).map_err(|r| *r),
            apply_error: None,
        });
        let faults = st.faults;
        if let Some(d) = faults.ack_delay {
            drop(st);
            thread::sleep(d);
            st = inner.state();
        }
        let reply = |a: u64| wire::send(sock, req.request, wire::VERSION_1 | wire::FLAG_REPLY, &a.to_le_bytes(), &[]);
        let Ok(change) = decided else {
            drop(st);
            if ack.is_some_and(|a| reply(a).is_err()) {
                break;
            }
            continue;
        };
        st.pending.push_back(index);
        let mut errors = Vec::new();
        if faults.reply_before_commit {
            drop(st);
            if ack.is_some_and(|a| reply(a).is_err()) {
                break;
            }
            thread::sleep(COMMIT_DELAY);
            st = inner.state();
            errors.extend(apply(inner, &mut st, change).err());
            drop(st);
            errors.extend(send_mem_table(inner).err());
        } else {
            errors.extend(apply(inner, &mut st, change).err());
            drop(st);
            if faults.commit_before_reply {
                errors.extend(send_mem_table(inner).err());
            }
            if ack.is_some_and(|a| reply(a).is_err()) {
                break;
            }
            if !faults.commit_before_reply && errors.is_empty() {
                errors.extend(send_mem_table(inner).err().map(|e| format!("SET_MEM_TABLE after the reply: {e}")));
            }
        }
        let mut st = inner.state();
        if !errors.is_empty() {
            st.served[index].apply_error = Some(errors.join("; "));
        }
        st.pending.retain(|&i| i != index);
        inner.applied.notify_all();
    }
}

/// What the model decides for one request (no change made yet).
fn decide(inner: &Inner, st: &State, request: u32, msg: Option<ShmemMsg>, fd: Option<OwnedFd>) -> Result<Change, Rejection> {
    match (request, msg) {
        (r, Some(m)) if r == ShmemOp::Map.code() => check_map(inner, st, &m, fd.as_ref()).and_then(|()| {
            let fd = fd.ok_or(reject(libc::EBADF, "Bad fd for map"))?;
            Ok(Change::Map(Mapping {
                shmid: m.shmid,
                shm_offset: m.shm_offset,
                len: m.len,
                fd_offset: m.fd_offset,
                rw: m.flags & MAP_RW != 0,
                fd,
            }))
        }),
        (r, Some(m)) if r == ShmemOp::Unmap.code() => check_unmap(inner, st, &m).map(Change::Unmap),
        (r, _) if r == ShmemOp::Map.code() || r == ShmemOp::Unmap.code() => Err(reject(libc::EINVAL, "payload is not 40 bytes")),
        _ => Err(reject(libc::ENOSYS, "request not handled by the model")),
    }
}

/// How many of `served` are SHMEM_MAP requests (what `refuse_map_number` counts).
fn maps_in(served: &[Served]) -> usize {
    served.iter().filter(|s| s.request == ShmemOp::Map.code()).count()
}

/// Whether the `stop_acking_after` fault has made the model silent.
fn faults_silent(st: &State) -> bool {
    st.faults.stop_acking_after.is_some_and(|k| st.served.len() >= k)
}

fn apply(inner: &Inner, st: &mut State, change: Change) -> Result<(), String> {
    match change {
        Change::Map(m) => {
            let region = inner.regions[usize::from(m.shmid)].as_ref().ok_or("region vanished")?;
            let writable = m.rw || st.faults.ignore_readonly;
            region.map_file(&m, writable).map_err(|e| format!("mmap after ack: {e}"))?;
            st.mappings.push(m);
        }
        Change::Unmap(_) if st.faults.unmap_without_effect => {}
        Change::Unmap(i) => {
            let m = st.mappings.remove(i);
            let region = inner.regions[usize::from(m.shmid)].as_ref().ok_or("region vanished")?;
            if st.faults.unmapped_reads_garbage {
                region.garbage(m.shm_offset, m.len).map_err(|e| format!("unmap after ack: {e}"))?;
            } else {
                region.clear(m.shm_offset, m.len).map_err(|e| format!("unmap after ack: {e}"))?;
            }
            if st.faults.keep_fd_after_unmap {
                st.leaked.push(m.fd);
            }
        }
    }
    Ok(())
}

/// Sends the memory table QEMU would after a change: guest RAM plus every
/// live mapping at its BAR address. Only while started, as in QEMU.
/// What QEMU does at device realize, up to GET_SHMEM_CONFIG: the model's
/// end of the backend channel, and the backend's regions.
fn handshake(fe: &mut Frontend, offered: &mut Option<(u64, u64)>) -> io::Result<(UnixStream, VhostUserShMemConfig)> {
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

fn send_mem_table(inner: &Inner) -> Result<(), String> {
    let st = inner.state();
    if !st.started {
        return Ok(());
    }
    let mut table = vec![VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: GUEST_RAM,
        userspace_addr: inner.guest_ram.addr as u64,
        mmap_offset: 0,
        mmap_handle: inner.guest_ram.file.as_raw_fd(),
    }];
    // Dups, so the state is not held while the backend answers (it may take
    // its time, or never answer): the model's state stays readable.
    let mut dups = Vec::new();
    // A mapping of a read-only fd cannot be in the table: backends map
    // memory-table regions read-write (QEMU never gets here: it refuses such fds).
    for m in st.mappings.iter().filter(|m| fd_writable(&m.fd)) {
        let fd = m.fd.try_clone().map_err(|e| format!("dup of a mapping's fd: {e}"))?;
        let window = inner.window(m.shmid);
        let base = inner.regions[usize::from(m.shmid)].as_ref().map_or(0, |r| r.base);
        table.push(VhostUserMemoryRegionInfo {
            guest_phys_addr: MODEL_BAR_BASE + window + m.shm_offset,
            memory_size: m.len,
            userspace_addr: (base + m.shm_offset as usize) as u64,
            mmap_offset: m.fd_offset,
            mmap_handle: fd.as_raw_fd(),
        });
        dups.push(fd);
    }
    drop(st);
    // Backends (vm-memory's) refuse a table whose regions are not in address order.
    table.sort_by_key(|r| r.guest_phys_addr);
    if table.len() > MAX_TABLE_REGIONS {
        return Err(format!("memory table would need {} regions; vhost-user allows {MAX_TABLE_REGIONS}", table.len()));
    }
    let fe = inner.frontend.lock().unwrap_or_else(|p| p.into_inner());
    inner.state().waiting = Some(("SET_MEM_TABLE", Instant::now()));
    let sent = fe.set_mem_table(&table).map(|_| ()).map_err(|e| e.to_string());
    inner.state().waiting = None;
    drop(dups);
    sent
}
