//! The test device's vhost-user backend (`VhostUserBackend`): advertises the
//! spec's shared-memory regions and records what the frontend tells it. It
//! never sends requests on the backend channel itself; the mapping manager does.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserShMemConfig;
use vhost::vhost_user::{Backend, VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier};

use crate::spec::DeviceSpec;

/// Identity of a file as the kernel sees it, to match a memory-table region
/// to one of the mapping manager's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(fd: &impl AsRawFd) -> io::Result<Self> {
        // SAFETY: fstat fills the zeroed struct; fd is valid for the call.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileId { dev: st.st_dev, ino: st.st_ino })
    }
}

/// One region of a memory table the frontend sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemRegion {
    pub guest_addr: u64,
    pub size: u64,
    pub file: Option<FileId>,
    pub file_offset: u64,
}

/// One memory-table update (SET_MEM_TABLE), with when it arrived.
#[derive(Clone, Debug)]
pub struct MemTable {
    pub at: Instant,
    pub regions: Vec<MemRegion>,
}

/// Direction of a message seen by the tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Frontend to backend on the main socket (requests like SET_MEM_TABLE).
    FromFrontend,
    /// Backend to frontend on the main socket (replies).
    ToFrontend,
}

/// One message on the main vhost-user socket.
#[derive(Clone, Debug)]
pub struct TapRecord {
    pub at: Instant,
    pub direction: Direction,
    pub request: u32,
    pub name: String,
    pub flags: u32,
    pub size: usize,
    pub nfds: usize,
    /// The body as a u64 when it is exactly 8 bytes (features, acks).
    pub value: Option<u64>,
}

/// Everything the backend has been told; shared with the server, the tap and tests.
#[derive(Debug, Default)]
pub struct Recorded {
    pub acked_features: Option<u64>,
    pub acked_protocol_features: Option<u64>,
    pub shmem_config_requests: u32,
    pub channel_installed: bool,
    pub mem_tables: Vec<MemTable>,
    pub messages: Vec<TapRecord>,
    pub disconnected: bool,
}

/// Thread-safe recorder with a condition variable so callers can wait for
/// an event (a memory table, the backend channel) with a timeout.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<Recorded>,
    changed: Condvar,
}

impl Recorder {
    pub fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` and wakes every waiter.
    pub fn update(&self, f: impl FnOnce(&mut Recorded)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Waits until `pred` holds or `timeout` passes; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Recorded) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        loop {
            if pred(&guard) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.changed.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// The virtio features the test device offers.
pub fn offered_features() -> u64 {
    (1u64 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// The protocol features the test device offers.
pub fn offered_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::SHMEM
        | VhostUserProtocolFeatures::BACKEND_REQ
        | VhostUserProtocolFeatures::BACKEND_SEND_FD
        | VhostUserProtocolFeatures::REPLY_ACK
}

/// Ways to make the test device wrong on purpose (the backend test shows it notices).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendFaults {
    /// Offer SHMEM at bit 21 (GPA_ADDRESSES in the spec), as backends built
    /// with vhost 0.16 did, instead of bit 22.
    pub shmem_at_bit_21: bool,
}

/// The backend handed to `VhostUserDaemon`. Cheap to clone (shared state).
#[derive(Clone)]
pub struct TestDevice {
    spec: Arc<DeviceSpec>,
    recorder: Arc<Recorder>,
    faults: BackendFaults,
    exit: Arc<(EventConsumer, EventNotifier)>,
    /// Exit-event consumers handed to the crate. vhost-user-backend 0.24
    /// registers them with `into_raw_fd()` and never closes them (one fd
    /// leaked per worker and daemon); we close them once the workers are gone.
    handed_out: Arc<Mutex<Vec<RawFd>>>,
}

impl TestDevice {
    pub fn new(spec: DeviceSpec, recorder: Arc<Recorder>, faults: BackendFaults) -> io::Result<Self> {
        let exit = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        Ok(TestDevice { spec: Arc::new(spec), recorder, faults, exit: Arc::new(exit), handed_out: Arc::default() })
    }

    /// Closes the exit-event consumers the crate leaked. Call only after
    /// the daemon and its workers are gone (then nothing uses them).
    pub fn close_leaked_exit_fds(&self) {
        for fd in self.handed_out.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            // SAFETY: the crate turned this fd into a raw fd and never closes
            // it; we are its last user, and it stays open (so its number is not
            // reused) until this close.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

impl VhostUserBackend for TestDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        usize::from(self.spec.num_queues)
    }

    fn max_queue_size(&self) -> usize {
        1024
    }

    fn features(&self) -> u64 {
        offered_features()
    }

    fn acked_features(&self, features: u64) {
        self.recorder.update(|r| r.acked_features = Some(features));
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        if self.faults.shmem_at_bit_21 {
            return (offered_protocol_features() - VhostUserProtocolFeatures::SHMEM)
                | VhostUserProtocolFeatures::GPA_ADDRESSES;
        }
        offered_protocol_features()
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        let snapshot = mem.memory();
        let mut regions = Vec::new();
        for region in snapshot.iter() {
            let (file, file_offset) = match region.file_offset() {
                Some(fo) => (Some(FileId::of(fo.file())?), fo.start()),
                None => (None, 0),
            };
            regions.push(MemRegion { guest_addr: region.start_addr().0, size: region.len(), file, file_offset });
        }
        regions.sort_by_key(|r| r.guest_addr);
        let at = Instant::now();
        self.recorder.update(|r| r.mem_tables.push(MemTable { at, regions }));
        Ok(())
    }

    fn set_backend_req_fd(&self, _backend: Backend) {
        // The crate's `Backend` reports a rejected request only as "non-zero"
        // and cannot send malformed ones; the mapping manager sends on a dup
        // of the same socket that the tap took from SET_BACKEND_REQ_FD.
        self.recorder.update(|r| r.channel_installed = true);
    }

    fn handle_event(
        &self,
        _device_event: u16,
        _evset: EventSet,
        _vrings: &[VringRwLock],
        _thread: usize,
    ) -> io::Result<()> {
        // No queue does any work: the device exists for its shared memory.
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let consumer = self.exit.0.try_clone().ok()?;
        let notifier = self.exit.1.try_clone().ok()?;
        self.handed_out.lock().unwrap_or_else(|p| p.into_inner()).push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        self.recorder.update(|r| r.shmem_config_requests += 1);
        Ok(VhostUserShMemConfig::new(self.spec.regions.len() as u32, &self.spec.regions))
    }
}
