//! The vhost-user test device seen through sysfs: capability walk, status
//! byte handshake, and volatile access to the shared-memory BAR. It drives
//! no virtqueue and reports what it reads without interpreting it.

use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shmem_pattern::pattern_byte;

const VIRTIO_VENDOR: u16 = 0x1af4;
/// Virtio id used when the kernel command line has no `agent.virtio_id=`;
/// the PCI device id is 0x1040 + virtio id.
const DEFAULT_VIRTIO_ID: u16 = 45;

fn virtio_id() -> u16 {
    fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| c.split_whitespace().find_map(|w| w.strip_prefix("agent.virtio_id=")?.parse().ok()))
        .unwrap_or(DEFAULT_VIRTIO_ID)
}
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_SHARED_MEMORY: u8 = 8;

/// Largest range `bandwidth` copies (it allocates as much guest RAM).
const MAX_BANDWIDTH_LEN: u64 = 16 << 20;

pub(crate) const ACKNOWLEDGE: u8 = 1;
pub(crate) const DRIVER: u8 = 2;
pub(crate) const DRIVER_OK: u8 = 4;
pub(crate) const FEATURES_OK: u8 = 8;

// Common config offsets (virtio 1.x, 4.1.4.3).
const DEVICE_FEATURE_SELECT: usize = 0x00;
const DEVICE_FEATURE: usize = 0x04;
const DRIVER_FEATURE_SELECT: usize = 0x08;
const DRIVER_FEATURE: usize = 0x0c;
const DEVICE_STATUS: usize = 0x14;

/// One shared-memory capability.
#[derive(Clone, Copy, Debug)]
pub struct ShmCap {
    pub shmid: u8,
    pub bar: u8,
    pub offset: u64,
    pub length: u64,
}

/// The notify capability: BAR, offset in it, and the multiplier of each queue's notify_off.
#[derive(Clone, Copy, Debug)]
pub struct NotifyCap {
    pub bar: u8,
    pub offset: usize,
    pub multiplier: u32,
}

impl NotifyCap {
    /// Where a queue whose `queue_notify_off` is `notify_off` rings, in a
    /// notify BAR of `bar_len` bytes: checked (a 2-byte register, 2-aligned,
    /// inside the BAR), since every figure comes from the device.
    pub fn doorbell(&self, notify_off: u16, bar_len: usize) -> Result<usize, String> {
        let at = usize::from(notify_off).checked_mul(self.multiplier as usize).and_then(|o| o.checked_add(self.offset));
        match at {
            Some(at) if at.is_multiple_of(2) && inside(at, 2, bar_len) => Ok(at),
            _ => Err(format!(
                "notify capability: offset {:#x} + queue_notify_off {notify_off} x multiplier {} is not a 2-aligned register inside the notify BAR of {bar_len:#x} bytes",
                self.offset, self.multiplier
            )),
        }
    }
}

/// Whether `len` bytes at `off` lie inside a BAR of `bar_len` bytes (no overflow).
fn inside(off: usize, len: usize, bar_len: usize) -> bool {
    off.checked_add(len).is_some_and(|end| end <= bar_len)
}

/// The virtio common configuration's length (through `queue_device`).
const COMMON_CFG_LEN: usize = 0x38;

/// Whether the common configuration at `off` lies 4-aligned inside a BAR
/// of `bar_len` bytes (the capability's offset comes from the device).
pub(crate) fn common_cfg_fits(off: usize, bar_len: usize) -> Result<(), String> {
    if off.is_multiple_of(4) && inside(off, COMMON_CFG_LEN, bar_len) {
        return Ok(());
    }
    Err(format!(
        "common-config capability: offset {off:#x} (+{COMMON_CFG_LEN:#x}) is not 4-aligned inside its BAR of {bar_len:#x} bytes"
    ))
}

/// A mapped BAR (via sysfs resourceN). Its accessors trust their offset:
/// every offset from the device is checked where it is learned
/// ([`common_cfg_fits`], [`NotifyCap::doorbell`], `Device::window`).
pub(crate) struct Bar {
    ptr: *mut u8,
    len: usize,
}

impl Bar {
    pub(crate) fn map(dev: &Path, index: u8) -> Result<Self, String> {
        let path = dev.join(format!("resource{index}"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let len = f.metadata().map_err(|e| format!("stat {}: {e}", path.display()))?.len() as usize;
        // SAFETY: mapping a PCI resource file shared; the fd may close after mmap.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(Bar { ptr: p.cast(), len })
    }

    fn check(&self, off: usize, len: usize) -> Result<(), String> {
        if inside(off, len, self.len) {
            Ok(())
        } else {
            Err(format!("range {off:#x}+{len:#x} outside BAR of {:#x} bytes", self.len))
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn read8(&self, off: usize) -> u8 {
        // SAFETY: `off` was checked against the BAR length where it was learned (see the type).
        unsafe { self.ptr.add(off).read_volatile() }
    }
    fn write8(&self, off: usize, v: u8) {
        // SAFETY: as for read8.
        unsafe { self.ptr.add(off).write_volatile(v) }
    }
    pub(crate) fn read16(&self, off: usize) -> u16 {
        // SAFETY: as for read8; offsets are 2-aligned register addresses.
        unsafe { (self.ptr.add(off) as *const u16).read_volatile() }
    }
    pub(crate) fn write16(&self, off: usize, v: u16) {
        // SAFETY: as for read16.
        unsafe { (self.ptr.add(off) as *mut u16).write_volatile(v) }
    }
    pub(crate) fn read32(&self, off: usize) -> u32 {
        // SAFETY: as for read8; offsets are 4-aligned register addresses.
        unsafe { (self.ptr.add(off) as *const u32).read_volatile() }
    }
    pub(crate) fn write32(&self, off: usize, v: u32) {
        // SAFETY: as for read32.
        unsafe { (self.ptr.add(off) as *mut u32).write_volatile(v) }
    }
    fn read64(&self, off: usize) -> u64 {
        // SAFETY: callers check `off` (8-aligned) against the BAR length.
        unsafe { (self.ptr.add(off) as *const u64).read_volatile() }
    }
    fn write64(&self, off: usize, v: u64) {
        // SAFETY: as for read64.
        unsafe { (self.ptr.add(off) as *mut u64).write_volatile(v) }
    }
}

pub struct Device {
    pub(crate) path: PathBuf,
    pub(crate) common: Bar,
    pub(crate) common_off: usize,
    pub(crate) notify: Option<NotifyCap>,
    shm: Bar,
    shm_bar_index: u8,
    caps: Vec<ShmCap>,
    bar_phys: u64,
    /// The guest kernel's driver the agent unbound from the device, if any.
    taken_from: Option<String>,
}

fn read_hex(path: &Path) -> Result<u64, String> {
    let s = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).map_err(|e| format!("parse {}: {e}", path.display()))
}

impl Device {
    pub fn find() -> Result<Self, String> {
        let want = 0x1040 + virtio_id();
        let entries = fs::read_dir("/sys/bus/pci/devices").map_err(|e| format!("list PCI devices: {e}"))?;
        for e in entries.flatten() {
            let p = e.path();
            if read_hex(&p.join("vendor")).ok() == Some(u64::from(VIRTIO_VENDOR))
                && read_hex(&p.join("device")).ok() == Some(u64::from(want))
            {
                return Self::open(&p);
            }
        }
        Err(format!("no PCI device {VIRTIO_VENDOR:04x}:{want:04x} on the guest's bus"))
    }

    /// A kernel driver bound to the device (a `virtio_pci` built into the
    /// guest kernel binds it at boot) is unbound through sysfs: the agent
    /// owns the device from userspace. The driver's name, if there was one.
    fn take_over(path: &Path) -> Result<Option<String>, String> {
        let Ok(driver) = fs::read_link(path.join("driver")) else { return Ok(None) };
        let name = driver.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let dev = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        fs::write(path.join("driver/unbind"), dev).map_err(|e| {
            format!("PCI device {dev} is held by the guest kernel's {name} driver, and unbinding it failed: {e}")
        })?;
        Ok(Some(name))
    }

    fn open(path: &Path) -> Result<Self, String> {
        let taken_from = Self::take_over(path)?;
        fs::write(path.join("enable"), "1").map_err(|e| format!("enable {}: {e}", path.display()))?;
        let config = fs::read(path.join("config")).map_err(|e| format!("read config: {e}"))?;
        let byte = |o: usize| config.get(o).copied().unwrap_or(0);
        let le32 = |o: usize| u32::from_le_bytes([byte(o), byte(o + 1), byte(o + 2), byte(o + 3)]);
        let mut caps = Vec::new();
        let mut common = None;
        let mut notify = None;
        let mut ptr = usize::from(byte(0x34));
        let mut guard = 0;
        while ptr != 0 && guard < 48 {
            guard += 1;
            if byte(ptr) == CAP_VENDOR {
                let (cfg_type, bar, id) = (byte(ptr + 3), byte(ptr + 4), byte(ptr + 5));
                let (off, len) = (u64::from(le32(ptr + 8)), u64::from(le32(ptr + 12)));
                match cfg_type {
                    CFG_COMMON => common = Some((bar, off as usize)),
                    CFG_NOTIFY => notify = Some(NotifyCap { bar, offset: off as usize, multiplier: le32(ptr + 16) }),
                    CFG_SHARED_MEMORY => caps.push(ShmCap {
                        shmid: id,
                        bar,
                        offset: off | (u64::from(le32(ptr + 16)) << 32),
                        length: len | (u64::from(le32(ptr + 20)) << 32),
                    }),
                    _ => {}
                }
            }
            ptr = usize::from(byte(ptr + 1));
        }
        let (common_bar, common_off) = common.ok_or("no virtio common-config capability")?;
        let first = caps.first().ok_or("no shared-memory capability")?;
        let shm_bar_index = first.bar;
        let resources = fs::read_to_string(path.join("resource")).map_err(|e| format!("read resource: {e}"))?;
        let bar_phys = resources
            .lines()
            .nth(usize::from(shm_bar_index))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .ok_or("cannot read the shared-memory BAR address")?;
        let common = Bar::map(path, common_bar)?;
        common_cfg_fits(common_off, common.len())?;
        Ok(Device {
            path: path.to_path_buf(),
            common,
            common_off,
            notify,
            shm: Bar::map(path, shm_bar_index)?,
            shm_bar_index,
            caps,
            bar_phys,
            taken_from,
        })
    }

    pub fn info(&self) -> String {
        let caps: Vec<String> =
            self.caps.iter().map(|c| format!("{}:{}:{:#x}:{:#x}", c.shmid, c.bar, c.offset, c.length)).collect();
        format!(
            "pci={} bar={} bar_addr={:#x} bar_len={:#x} status={:#x} regions={} taken_from={}",
            self.path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            self.shm_bar_index,
            self.bar_phys,
            self.shm.len,
            self.status(),
            caps.join(","),
            self.taken_from.as_deref().unwrap_or("none")
        )
    }

    pub fn status(&self) -> u8 {
        self.common.read8(self.common_off + DEVICE_STATUS)
    }

    pub(crate) fn set_status(&self, s: u8) {
        self.common.write8(self.common_off + DEVICE_STATUS, s);
    }

    /// ACKNOWLEDGE, DRIVER, features (VERSION_1 only), FEATURES_OK checked, DRIVER_OK.
    pub fn init(&mut self) -> Result<u8, String> {
        self.negotiate()?;
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        Ok(self.status())
    }

    /// Reset if needed, ACKNOWLEDGE, DRIVER, features (VERSION_1 only),
    /// FEATURES_OK checked: what comes before the queues are set up.
    pub(crate) fn negotiate(&mut self) -> Result<(), String> {
        let c = self.common_off;
        if self.status() != 0 {
            self.reset()?;
        }
        self.set_status(ACKNOWLEDGE);
        self.set_status(ACKNOWLEDGE | DRIVER);
        self.common.write32(c + DEVICE_FEATURE_SELECT, 1);
        let high = self.common.read32(c + DEVICE_FEATURE);
        if high & 1 == 0 {
            return Err(format!("device does not offer VERSION_1 (features[63:32]={high:#x})"));
        }
        self.common.write32(c + DRIVER_FEATURE_SELECT, 0);
        self.common.write32(c + DRIVER_FEATURE, 0);
        self.common.write32(c + DRIVER_FEATURE_SELECT, 1);
        self.common.write32(c + DRIVER_FEATURE, 1);
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK);
        let s = self.status();
        if s & FEATURES_OK == 0 {
            return Err(format!("device refused FEATURES_OK (status {s:#x})"));
        }
        Ok(())
    }

    /// Writes status 0 and waits for it to read back 0; returns microseconds.
    pub fn reset(&mut self) -> Result<u128, String> {
        let start = Instant::now();
        self.set_status(0);
        while self.status() != 0 {
            if start.elapsed() > Duration::from_secs(5) {
                return Err("device status did not read 0 within 5 s of reset".into());
            }
            std::thread::yield_now();
        }
        Ok(start.elapsed().as_micros())
    }

    fn window(&self, shmid: u64, off: u64, len: u64) -> Result<usize, String> {
        let cap =
            self.caps.iter().find(|c| u64::from(c.shmid) == shmid).ok_or_else(|| format!("no region shmid {shmid}"))?;
        match off.checked_add(len) {
            Some(end) if end <= cap.length => {}
            _ => return Err(format!("range {off:#x}+{len:#x} outside region {shmid} of {:#x}", cap.length)),
        }
        let start = cap
            .offset
            .checked_add(off)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| format!("region {shmid} at {:#x} + {off:#x} is past any address", cap.offset))?;
        self.shm.check(start, usize::try_from(len).map_err(|_| format!("length {len:#x} too large"))?)?;
        Ok(start)
    }

    /// Reads `len` bytes of region `shmid`, one volatile byte at a time,
    /// handing each to `each` (no buffer the size of the range).
    pub fn read_each(&self, shmid: u64, off: u64, len: u64, mut each: impl FnMut(u8)) -> Result<(), String> {
        let start = self.window(shmid, off, len)?;
        for i in 0..len as usize {
            each(self.shm.read8(start + i));
        }
        Ok(())
    }

    /// Writes byte `byte(i)` at offset `off + i` for i in 0..len.
    pub fn write_each(&self, shmid: u64, off: u64, len: u64, byte: impl Fn(u64) -> u8) -> Result<(), String> {
        let start = self.window(shmid, off, len)?;
        for i in 0..len {
            self.shm.write8(start + i as usize, byte(i));
        }
        Ok(())
    }

    /// The reply-before-commit probe, guest side: spins on the doorbell word
    /// (region `db_shmid` at `db_off`, mapped read-write) and, on each new
    /// ring, reads the first 8 bytes of the target (region `t_shmid` at
    /// `t_off`) first thing — after writing the marker there in mode 1 —,
    /// timing each read on the TSC, and writes what it saw into the doorbell
    /// page. Nothing crosses the serial port until the host rings STOP, or
    /// no ring comes for `idle_ms`.
    pub fn probe(&self, db_shmid: u64, db_off: u64, t_shmid: u64, t_off: u64, idle_ms: u64) -> Result<String, String> {
        use shmem_pattern::doorbell::*;
        if !db_off.is_multiple_of(8) || !t_off.is_multiple_of(8) {
            return Err("doorbell and target offsets must be 8-aligned".into());
        }
        let db = self.window(db_shmid, db_off, 128)?;
        let target = self.window(t_shmid, t_off, 8)?;
        let (mut last, mut rings) = (self.shm.read64(db + RING), 0u64);
        // Tells the host the guest spins: DONE answers the ring found at start.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.shm.write64(db + DONE, last);
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let seq = self.shm.read64(db + RING);
            if seq == last {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                // The clock is coarse here (and a system call): a timeout of
                // seconds needs no better, nor a reading every spin.
                if spins.is_multiple_of(4096) && idle_since.elapsed() > Duration::from_millis(idle_ms) {
                    return Err(format!("no ring for {idle_ms} ms after {rings} rings"));
                }
                continue;
            }
            if seq == STOP {
                return Ok(format!("rings={rings}"));
            }
            if self.shm.read64(db + MODE) == 1 {
                self.shm.write64(target, self.shm.read64(db + MARKER));
            }
            let mut reads = [(0u64, 0u64); READ_COUNT];
            for (i, r) in reads.iter_mut().enumerate() {
                if i == READ_COUNT - 1 {
                    let t = rdtsc();
                    while rdtsc().wrapping_sub(t) < 100_000 {
                        std::hint::spin_loop();
                    }
                }
                let t = rdtsc();
                let v = self.shm.read64(target);
                *r = (v, rdtsc().wrapping_sub(t));
            }
            for (i, (v, ticks)) in reads.iter().enumerate() {
                self.shm.write64(db + READS + 16 * i, *v);
                self.shm.write64(db + READS + 16 * i + 8, *ticks);
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            self.shm.write64(db + DONE, seq);
            last = seq;
            rings += 1;
            idle_since = Instant::now();
        }
    }

    /// Copies half of `len` bytes onto the other half, `iters` times, inside
    /// the mapping and inside guest RAM, in `rounds` alternating rounds, and
    /// reports the TSC ticks of each copy run (`shm_ticks=a,b,.. ram_ticks=..
    /// bytes=N`): the host converts ticks with its calibration of the TSC.
    /// Both sources are written first, so no copy reads zero-page memory.
    pub fn bandwidth(&self, shmid: u64, len: u64, iters: u64, rounds: u64) -> Result<String, String> {
        if !(2..=MAX_BANDWIDTH_LEN).contains(&len) {
            return Err(format!(
                "bandwidth length {len:#x}: use 2 bytes to {MAX_BANDWIDTH_LEN:#x} (it is copied in guest RAM too)"
            ));
        }
        if !(1..=64).contains(&rounds) {
            return Err(format!("bandwidth rounds {rounds}: use 1 to 64"));
        }
        let half = (len / 2) as usize;
        let start = self.window(shmid, 0, len)?;
        self.write_each(shmid, 0, len, |i| pattern_byte(0x5a, i))?;
        let mut ram: Vec<u8> = (0..len).map(|i| pattern_byte(0x5a, i)).collect();
        let (src, dst) = ram.split_at_mut(half);
        let (mut shm_ticks, mut ram_ticks) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = rdtsc();
            for _ in 0..iters {
                // SAFETY: both halves lie in the mapped BAR (checked by window) and do not overlap.
                unsafe { std::ptr::copy_nonoverlapping(self.shm.ptr.add(start), self.shm.ptr.add(start + half), half) };
            }
            shm_ticks.push(rdtsc().wrapping_sub(t).to_string());
            let t = rdtsc();
            for _ in 0..iters {
                dst[..half].copy_from_slice(&src[..half]);
                std::hint::black_box(&mut *dst);
            }
            ram_ticks.push(rdtsc().wrapping_sub(t).to_string());
        }
        Ok(format!("shm_ticks={} ram_ticks={} bytes={}", shm_ticks.join(","), ram_ticks.join(","), half as u64 * iters))
    }
}

/// The CPU's time-stamp counter: under TCG it follows the host's clock, under
/// KVM it is the hardware's. Fine-grained where the guest kernel's clock is not.
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}
