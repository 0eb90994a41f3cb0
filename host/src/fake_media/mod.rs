//! A small virtio-media backend that is wrong on purpose, one way at a time
//! (`device::MediaFault`): the backend under test of the host tests that
//! show each backend check failing end to end, behind the model frontend
//! over real sockets. A correct one (`MediaFault::None`) passes every
//! check. It is a test subject: it judges nothing, and nothing else uses it.

pub mod device;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags, VhostUserShMemConfig};
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler, VhostUserProtocolFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::{DescriptorChain, QueueOwnedT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier};

use device::{Answer, Device, MediaFault, Shmem};

type Mem = GuestMemoryLoadGuard<GuestMemoryMmap>;
type Chain = DescriptorChain<Mem>;

/// The backend handed to `VhostUserDaemon`.
pub struct FakeMedia {
    device: Mutex<Device>,
    mem: Mutex<Option<GuestMemoryAtomic<GuestMemoryMmap>>>,
    channel: Mutex<Option<Backend>>,
    /// Event buffers the driver posted, not yet used: (head, writable buffer,
    /// its length). Not chains: a chain keeps the memory table it was read
    /// under, and with it the fds of mappings long gone.
    events: Mutex<Vec<(u16, GuestAddress, u32)>>,
    exit: (EventConsumer, EventNotifier),
}

impl FakeMedia {
    pub fn new(fault: MediaFault) -> io::Result<Arc<Self>> {
        let exit = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        Ok(Arc::new(FakeMedia {
            device: Mutex::new(Device::new(fault)),
            mem: Mutex::default(),
            channel: Mutex::default(),
            events: Mutex::default(),
            exit,
        }))
    }

    fn device(&self) -> MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn memory(&self) -> Option<Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(GuestMemoryAtomic::memory)
    }

    /// Answers every command posted on queue 0; withheld ones keep their chain.
    fn serve_commands(&self, vrings: &[VringRwLock], mem: &Mem) -> io::Result<()> {
        let chains: Vec<Chain> =
            vrings[0].get_mut().get_queue_mut().iter(mem.clone()).map_err(io::Error::other)?.collect();
        let channel = Channel(&self.channel);
        for chain in chains {
            let req = read_chain(&chain, mem);
            // The device lock is held while a SHMEM request waits for its ack;
            // the frontend's memory table goes to `update_memory`, which never takes it.
            let answer = self.device().command(&req, &channel);
            if let Answer::Bytes(resp) = answer {
                let used = write_chain(&chain, mem, &resp);
                vrings[0].add_used(chain.head_index(), used).map_err(io::Error::other)?;
            }
        }
        vrings[0].signal_used_queue()
    }

    /// Takes the driver's new event buffers, then sends a DQBUF for each frame ready.
    fn serve_events(&self, vrings: &[VringRwLock], mem: &Mem) -> io::Result<()> {
        let posted: Vec<Chain> =
            vrings[1].get_mut().get_queue_mut().iter(mem.clone()).map_err(io::Error::other)?.collect();
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        for chain in posted {
            let buf = chain.clone().writable().next().map_or((GuestAddress(0), 0), |d| (d.addr(), d.len()));
            events.push((chain.head_index(), buf.0, buf.1));
        }
        let mut sent = false;
        while !events.is_empty() {
            let Some(ev) = self.device().next_frame() else { break };
            let (head, addr, len) = events.remove(0);
            let n = ev.len().min(len as usize);
            let used = if mem.write_slice(&ev[..n], addr).is_ok() { n as u32 } else { 0 };
            vrings[1].add_used(head, used).map_err(io::Error::other)?;
            sent = true;
        }
        if sent { vrings[1].signal_used_queue() } else { Ok(()) }
    }
}

/// The device-readable bytes of a chain, in order.
fn read_chain(chain: &Chain, mem: &Mem) -> Vec<u8> {
    let mut out = Vec::new();
    for d in chain.clone().readable() {
        let mut b = vec![0u8; d.len().min(4096) as usize];
        if mem.read_slice(&mut b, d.addr()).is_ok() {
            out.extend_from_slice(&b);
        }
    }
    out
}

/// Writes `data` into the chain's first writable buffer; the bytes written.
fn write_chain(chain: &Chain, mem: &Mem, data: &[u8]) -> u32 {
    match chain.clone().writable().next() {
        Some(d) => {
            let n = data.len().min(d.len() as usize);
            if mem.write_slice(&data[..n], d.addr()).is_ok() { n as u32 } else { 0 }
        }
        None => 0,
    }
}

/// The backend channel, for the device.
struct Channel<'a>(&'a Mutex<Option<Backend>>);

impl Shmem for Channel<'_> {
    fn map(&self, fd: &crate::files::HostFile, shm_offset: u64, len: u64, rw: bool) -> bool {
        let flags = if rw { VhostUserMMapFlags::WRITABLE } else { VhostUserMMapFlags::default() };
        let msg = VhostUserMMap { shmid: 0, padding: [0; 7], fd_offset: 0, shm_offset, len, flags: flags.bits() };
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().is_some_and(|b| b.shmem_map(&msg, &fd.file().as_raw_fd()).is_ok_and(|ack| ack == 0))
    }
    fn unmap(&self, shm_offset: u64, len: u64) -> bool {
        let msg = VhostUserMMap { shmid: 0, padding: [0; 7], fd_offset: 0, shm_offset, len, flags: 0 };
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().is_some_and(|b| b.shmem_unmap(&msg).is_ok_and(|ack| ack == 0))
    }
}

impl VhostUserBackend for FakeMedia {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }
    fn max_queue_size(&self) -> usize {
        1024
    }
    fn features(&self) -> u64 {
        crate::backend::offered_features()
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        crate::backend::offered_protocol_features()
    }
    fn set_event_idx(&self, _enabled: bool) {}
    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        *self.mem.lock().unwrap_or_else(|p| p.into_inner()) = Some(mem);
        Ok(())
    }
    fn set_backend_req_fd(&self, backend: Backend) {
        *self.channel.lock().unwrap_or_else(|p| p.into_inner()) = Some(backend);
    }
    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        let sizes = self.device().regions();
        Ok(VhostUserShMemConfig::new(sizes.len() as u32, &sizes))
    }
    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> io::Result<()> {
        let Some(mem) = self.memory() else { return Ok(()) };
        // An error here would end the crate's worker thread for good (a queue
        // kicked before it is ready is one): said, and the next kick is served.
        if device_event == 0
            && let Err(e) = self.serve_commands(vrings, &mem)
        {
            eprintln!("fake-media-backend: command queue: {e}");
        }
        // A command (QBUF, STREAMON) may have made a frame ready; so may new event buffers.
        if let Err(e) = self.serve_events(vrings, &mem) {
            eprintln!("fake-media-backend: event queue: {e}");
        }
        Ok(())
    }
    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        match queue_index {
            0 => self.device().reset(),
            _ => self.events.lock().unwrap_or_else(|p| p.into_inner()).clear(),
        }
        Ok(())
    }
    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        Some((self.exit.0.try_clone().ok()?, self.exit.1.try_clone().ok()?))
    }
}
