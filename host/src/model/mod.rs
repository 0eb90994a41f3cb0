//! The reference frontend model: an in-process stand-in for QEMU's side of
//! vhost-user shared memory. It negotiates through the `vhost` crate's
//! `Frontend`, reserves each region as an inaccessible address range, and
//! serves SHMEM_MAP/UNMAP with QEMU's validation order and acks, but with the
//! specified semantics (read-only really is read-only). Fault switches make it
//! wrong on purpose so the suite can show it catches a wrong frontend.
//! It is an oracle and a fast path, never a replacement for real QEMU.

mod faults;
mod handshake;
mod memory;
mod serve;

use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vhost::VhostBackend;
use vhost::vhost_user::{Frontend, VhostUserFrontend};

use crate::backend::{FileId, offered_features};
use crate::memprobe::{self, Access};
use shmem_proto::BackendRequest;

pub use faults::{COMMIT_DELAY, Faults, Rejection};
pub use handshake::REPLY_TIMEOUT;
use handshake::{Watchdog, ctx, handshake};
use memory::{GuestRam, Region, guest_ram};
use serve::{maps_in, send_mem_table, serve};

/// Guest-physical address the model pretends the shared-memory BAR sits at
/// (where SeaBIOS put it in QEMU runs), used in the memory tables it sends.
pub const MODEL_BAR_BASE: u64 = 0xfe00_0000;
/// Size of the model's pretend guest RAM (at guest address 0).
const GUEST_RAM: u64 = 2 << 20;
/// vhost-user memory tables carry at most this many regions without
/// CONFIGURE_MEM_SLOTS.
const MAX_TABLE_REGIONS: usize = 8;

/// One request the model served: what the backend sent, and what the model did.
#[derive(Clone, Debug)]
pub struct Served {
    pub sent: BackendRequest,
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
    pub fn connect_seeing(
        socket: &Path,
        num_queues: u64,
        faults: Faults,
        offered: &mut Option<(u64, u64)>,
    ) -> io::Result<Self> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| io::Error::new(e.kind(), format!("model frontend: connect {}: {e}", socket.display())))?;
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
        use vhost::VringConfigData;
        use vhost::vhost_user::message::VhostUserVringAddrFlags;
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
        fds.get(usize::from(queue))
            .ok_or_else(|| io::Error::other(format!("queue {queue} was not started")))?
            .0
            .write(1)
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
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{gpa:#x}+{len:#x} is outside the model's guest RAM"),
            )),
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
        crate::spec::pack_regions(
            &self.inner.regions.iter().map(|r| r.as_ref().map_or(0, |r| r.size)).collect::<Vec<_>>(),
        )
    }

    fn region(&self, shmid: u8, offset: u64, len: u64) -> io::Result<&Region> {
        let r =
            self.inner.regions.get(usize::from(shmid)).and_then(Option::as_ref).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("model has no region shmid {shmid}"))
            })?;
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
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("model did not apply acked requests within {timeout:?}"),
                ));
            }
            st = self
                .inner
                .applied
                .wait_timeout(st, deadline - now)
                .map_err(|_| io::Error::other("model state poisoned"))?
                .0;
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
            .map(|m| MappingInfo {
                shmid: m.shmid,
                shm_offset: m.shm_offset,
                len: m.len,
                fd_offset: m.fd_offset,
                rw: m.rw,
            })
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
            return Err(format!(
                "the model's channel thread was waiting for the backend to answer the frontend for more than {timeout:?}"
            ));
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
