//! The agent as a minimal userspace virtio-media driver: both split
//! virtqueues in locked pages whose guest-physical addresses come from
//! `/proc/self/pagemap`, set up through the common config, doorbells through
//! the notify capability, the used rings polled. The protocol itself is
//! `shmem_virtio_media::driver`'s; this file only carries it. It reports what the
//! device answered (`shmem_virtio_media::wire`) and never judges it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use shmem_virtio_media::driver::{self, Driver, MediaError, Transport};
use shmem_virtio_media::virtq::GuestMemory;
use shmem_virtio_media::{frame, wire};

use crate::device::{ACKNOWLEDGE, Bar, DRIVER, DRIVER_OK, Device, FEATURES_OK};
use crate::num;

// Common config, per queue (virtio 1.x, 4.1.4.3).
const NUM_QUEUES: usize = 0x12;
const QUEUE_SELECT: usize = 0x16;
const QUEUE_SIZE: usize = 0x18;
const QUEUE_MSIX_VECTOR: usize = 0x1a;
const QUEUE_ENABLE: usize = 0x1c;
const QUEUE_NOTIFY_OFF: usize = 0x1e;
const QUEUE_DESC: usize = 0x20;
const QUEUE_DRIVER: usize = 0x28;
const QUEUE_DEVICE: usize = 0x30;
const NO_VECTOR: u16 = 0xffff;
/// PCI command register: bus master on (the device reaches the rings), INTx
/// off (nothing in the guest would take the interrupt; the rings are polled).
const PCI_COMMAND: u64 = 4;
const BUS_MASTER: u16 = 1 << 2;
const INTX_DISABLE: u16 = 1 << 10;
/// One wait for the device: below the host's command timeout, so a silent
/// device is reported by the agent as a timeout of the step it was on.
const WAIT: Duration = Duration::from_secs(10);
const PAGE: usize = 4096;

/// Locked anonymous pages and their guest-physical addresses. Never
/// unmapped: the device may hold their addresses until its next reset.
struct Dma {
    ptr: *mut u8,
    gpas: Vec<u64>,
}

impl Dma {
    fn alloc(pages: usize) -> Result<Self, String> {
        let len = pages * PAGE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        // SAFETY: an anonymous private mapping of our own; checked below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap {pages} DMA pages: {}", std::io::Error::last_os_error()));
        }
        let ptr: *mut u8 = p.cast();
        // SAFETY: the range was just mapped; mlock keeps its frames where pagemap says.
        if unsafe { libc::mlock(p, len) } != 0 {
            return Err(format!("mlock DMA pages: {}", std::io::Error::last_os_error()));
        }
        let pagemap = File::open("/proc/self/pagemap").map_err(|e| format!("open /proc/self/pagemap: {e}"))?;
        let mut gpas = Vec::with_capacity(pages);
        for i in 0..pages {
            // SAFETY: inside the mapping; the write makes the page present.
            unsafe { ptr.add(i * PAGE).write_volatile(0) };
            let vpn = (ptr as u64 + (i * PAGE) as u64) / PAGE as u64;
            let mut e = [0u8; 8];
            pagemap.read_exact_at(&mut e, vpn * 8).map_err(|e| format!("read /proc/self/pagemap: {e}"))?;
            let e = u64::from_le_bytes(e);
            let pfn = e & ((1 << 55) - 1);
            if e >> 63 == 0 || pfn == 0 {
                return Err(format!("DMA page {i} has no frame in pagemap ({e:#x}); the agent must run as root"));
            }
            gpas.push(pfn * PAGE as u64);
        }
        Ok(Dma { ptr, gpas })
    }

    /// The agent's address of guest-physical `gpa`, when it lies in these pages with `len` bytes after it.
    fn at(&self, gpa: u64, len: usize) -> Option<*mut u8> {
        let page = self.gpas.iter().position(|&g| g == gpa & !(PAGE as u64 - 1))?;
        let off = (gpa as usize) & (PAGE - 1);
        // SAFETY: page < the number of mapped pages.
        (off + len <= PAGE).then(|| unsafe { self.ptr.add(page * PAGE + off) })
    }
}

/// The driver's transport in the guest: the DMA pages, the doorbells, a deadline.
struct GuestTransport<'a> {
    dma: &'a Dma,
    notify: &'a Bar,
    /// Where each queue's doorbell is in the notify BAR.
    doorbells: [usize; 2],
    deadline: Instant,
    polls: u32,
}

impl GuestMemory for GuestTransport<'_> {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) {
        // The driver touches only its own pages; anything else reads as zero.
        let src = self.dma.at(gpa, buf.len());
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `at` checked the whole range lies in one DMA page.
            *b = src.map_or(0, |p| unsafe { p.add(i).read_volatile() });
        }
    }
    fn write(&mut self, gpa: u64, data: &[u8]) {
        if let Some(dst) = self.dma.at(gpa, data.len()) {
            for (i, b) in data.iter().enumerate() {
                // SAFETY: as for read.
                unsafe { dst.add(i).write_volatile(*b) };
            }
        }
    }
}

impl Transport for GuestTransport<'_> {
    fn notify(&mut self, queue: u16) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if let Some(&at) = self.doorbells.get(usize::from(queue)) {
            self.notify.write16(at, queue);
        }
    }
    fn begin_wait(&mut self) {
        self.deadline = Instant::now() + WAIT;
        self.polls = 0;
    }
    fn idle(&mut self) -> bool {
        // Spin a little (an answer is often quick), then let the vCPU halt.
        self.polls = self.polls.wrapping_add(1);
        if self.polls > 200 {
            std::thread::sleep(Duration::from_micros(500));
        } else {
            std::hint::spin_loop();
        }
        Instant::now() < self.deadline
    }
}

/// A virtio-media device driven from userspace.
pub struct Media {
    dma: Dma,
    notify: Bar,
    doorbells: [usize; 2],
    driver: Driver,
}

impl Media {
    /// Resets the device, negotiates, sets up both queues, DRIVER_OK, and posts the event buffers.
    pub fn up(dev: &mut Device) -> Result<Self, String> {
        let cap = dev.notify.ok_or("no virtio notify capability")?;
        enable_bus_master(dev)?;
        let dma = Dma::alloc(driver::DMA_PAGES)?;
        let mut d = Driver::new(&dma.gpas);
        let notify = Bar::map(&dev.path, cap.bar)?;
        dev.negotiate()?;
        let c = dev.common_off;
        let queues = dev.common.read16(c + NUM_QUEUES);
        if queues < 2 {
            return Err(format!("the device has {queues} queue(s); virtio-media needs 2"));
        }
        let mut doorbells = [0; 2];
        for (q, addrs) in d.queues().iter().enumerate() {
            dev.common.write16(c + QUEUE_SELECT, q as u16);
            let max = dev.common.read16(c + QUEUE_SIZE);
            if max < driver::QUEUE_SIZE {
                return Err(format!("queue {q} holds {max} entries; the driver needs {}", driver::QUEUE_SIZE));
            }
            dev.common.write16(c + QUEUE_SIZE, driver::QUEUE_SIZE);
            dev.common.write16(c + QUEUE_MSIX_VECTOR, NO_VECTOR);
            for (at, gpa) in [(QUEUE_DESC, addrs.desc), (QUEUE_DRIVER, addrs.avail), (QUEUE_DEVICE, addrs.used)] {
                dev.common.write32(c + at, gpa as u32);
                dev.common.write32(c + at + 4, (gpa >> 32) as u32);
            }
            doorbells[q] = cap.doorbell(dev.common.read16(c + QUEUE_NOTIFY_OFF), notify.len())?;
            dev.common.write16(c + QUEUE_ENABLE, 1);
        }
        d.prepare(&mut transport(&dma, &notify, doorbells));
        dev.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        transport(&dma, &notify, doorbells).notify(1);
        Ok(Media { dma, notify, doorbells, driver: d })
    }
}

fn transport<'a>(dma: &'a Dma, notify: &'a Bar, doorbells: [usize; 2]) -> GuestTransport<'a> {
    GuestTransport { dma, notify, doorbells, deadline: Instant::now() + WAIT, polls: 0 }
}

fn enable_bus_master(dev: &Device) -> Result<(), String> {
    let path = dev.path.join("config");
    let f =
        OpenOptions::new().read(true).write(true).open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut cmd = [0u8; 2];
    f.read_exact_at(&mut cmd, PCI_COMMAND).map_err(|e| format!("read the PCI command register: {e}"))?;
    let v = u16::from_le_bytes(cmd) | BUS_MASTER | INTX_DISABLE;
    f.write_all_at(&v.to_le_bytes(), PCI_COMMAND).map_err(|e| format!("write the PCI command register: {e}"))
}

/// Runs a `media-*` command.
pub fn execute(
    dev: &mut Device,
    media: &mut Option<Media>,
    cmd: &str,
    args: &mut std::str::SplitWhitespace<'_>,
) -> Result<String, String> {
    match cmd {
        "media-up" => {
            *media = None;
            *media = Some(Media::up(dev)?);
            return Ok(format!("queues=2 size={}", driver::QUEUE_SIZE));
        }
        "media-frame" => return read_frame(dev, args),
        _ => {}
    }
    let m = media.as_mut().ok_or("media-up first")?;
    let mut t = transport(&m.dma, &m.notify, m.doorbells);
    let d = &mut m.driver;
    let r = match cmd {
        "media-open" => d.open(&mut t).map(|id| format!("session={id}")),
        "media-setup" => {
            let n = num(args.next(), "buffer count")? as u32;
            d.setup_capture(&mut t, n, (frame::WIDTH, frame::HEIGHT, frame::FOURCC))
                .map(|b| format!("buffers={}", b.iter().map(wire::buffer_text).collect::<Vec<_>>().join(",")))
        }
        "media-mmap" => {
            let (off, rw) = (num(args.next(), "offset")? as u32, args.next().ok_or("missing ro|rw")? == "rw");
            d.mmap(&mut t, off, rw).map(|(addr, len)| format!("addr={addr:#x} len={len:#x}"))
        }
        "media-munmap" => d.munmap(&mut t, num(args.next(), "address")?).map(|()| "unmapped".into()),
        "media-qbuf" => d.qbuf(&mut t, num(args.next(), "index")? as u32).map(|()| "queued".into()),
        "media-stream" => d.stream(&mut t, args.next() == Some("on")).map(|()| "done".into()),
        "media-close" => d.close(&mut t).map(|()| "closed".into()),
        "media-event" => d.next_event(&mut t, "a DQBUF event").map(|e| format!("event={}", wire::event_text(&e))),
        "media-churn" => {
            // The whole loop in the guest: each command goes out the moment the last is answered.
            let (off, cycles, secs) = (
                num(args.next(), "offset")? as u32,
                num(args.next(), "cycles")? as usize,
                num(args.next(), "seconds")?,
            );
            let until = Instant::now() + Duration::from_secs(secs);
            return Ok(match d.churn(&mut t, off, cycles, &mut || Instant::now() < until) {
                Ok(done) => format!("done={done}"),
                Err((done, e)) => format!("done={done} error={}", wire::error_text(&e)),
            });
        }
        other => return Err(format!("unknown command {other:?}")),
    };
    r.map_err(|e: MediaError| wire::error_text(&e))
}

/// `media-frame ADDR SEQUENCE`: reads a frame through the shared-memory BAR
/// (region 0 at ADDR) and says where it first differs from the pattern.
fn read_frame(dev: &Device, args: &mut std::str::SplitWhitespace<'_>) -> Result<String, String> {
    let (addr, seq) = (num(args.next(), "address")?, num(args.next(), "sequence")?);
    let mut bytes = Vec::with_capacity(frame::FRAME_LEN);
    dev.read_each(0, addr, frame::FRAME_LEN as u64, |b| bytes.push(b))?;
    Ok(match frame::first_mismatch(&bytes, seq as u32) {
        None => "mismatch=none".into(),
        Some((at, want, got)) => format!("mismatch={at}:{want}:{got}"),
    })
}
