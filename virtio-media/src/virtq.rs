//! A driver's split virtqueue (virtio 1.x, 2.7) over guest memory the caller
//! reaches: descriptors, the available ring, the used ring. It moves no bytes
//! by itself beyond the [`GuestMemory`] calls and never waits.

use std::collections::BTreeMap;
use std::sync::atomic::{Ordering, fence};

/// Guest-physical memory as the driver sees it.
pub trait GuestMemory {
    fn read(&mut self, gpa: u64, buf: &mut [u8]);
    fn write(&mut self, gpa: u64, data: &[u8]);
}

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// One buffer of a chain: device-readable, or device-writable.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub gpa: u64,
    pub len: u32,
    pub writable: bool,
}

/// Where a queue's three parts sit (guest-physical).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAddrs {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// A split queue of `size` entries whose three parts fit in one 4 KiB page at `page`.
pub struct SplitQueue {
    pub size: u16,
    pub addrs: QueueAddrs,
    free: Vec<u16>,
    chains: BTreeMap<u16, Vec<u16>>,
    next_avail: u16,
    last_used: u16,
}

impl SplitQueue {
    pub fn in_page(page: u64, size: u16) -> Self {
        let n = u64::from(size);
        let avail = page + 16 * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(4);
        assert!(used + 6 + 8 * n <= page + 4096, "a queue of {size} entries does not fit in a page");
        SplitQueue {
            size,
            addrs: QueueAddrs { desc: page, avail, used },
            free: (0..size).rev().collect(),
            chains: BTreeMap::new(),
            next_avail: 0,
            last_used: 0,
        }
    }

    /// Zeroes the rings (a queue starts empty).
    pub fn clear(&self, mem: &mut impl GuestMemory) {
        mem.write(self.addrs.desc, &vec![0; 16 * usize::from(self.size)]);
        mem.write(self.addrs.avail, &vec![0; 6 + 2 * usize::from(self.size)]);
        mem.write(self.addrs.used, &vec![0; 6 + 8 * usize::from(self.size)]);
    }

    /// Makes `chain` available; `None` when the queue has too few free descriptors.
    pub fn add(&mut self, mem: &mut impl GuestMemory, chain: &[Buf]) -> Option<u16> {
        if chain.is_empty() || chain.len() > self.free.len() {
            return None;
        }
        let ids: Vec<u16> = (0..chain.len()).filter_map(|_| self.free.pop()).collect();
        for (i, (b, &id)) in chain.iter().zip(&ids).enumerate() {
            let next = ids.get(i + 1).copied();
            let flags = if next.is_some() { DESC_F_NEXT } else { 0 } | if b.writable { DESC_F_WRITE } else { 0 };
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&b.gpa.to_le_bytes());
            d[8..12].copy_from_slice(&b.len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.unwrap_or(0).to_le_bytes());
            mem.write(self.addrs.desc + 16 * u64::from(id), &d);
        }
        let head = ids[0];
        let slot = u64::from(self.next_avail % self.size);
        mem.write(self.addrs.avail + 4 + 2 * slot, &head.to_le_bytes());
        // The entry before the index that publishes it.
        fence(Ordering::SeqCst);
        self.next_avail = self.next_avail.wrapping_add(1);
        mem.write(self.addrs.avail + 2, &self.next_avail.to_le_bytes());
        fence(Ordering::SeqCst);
        self.chains.insert(head, ids);
        Some(head)
    }

    /// The next chain the device used: its head and how many bytes it wrote.
    pub fn take_used(&mut self, mem: &mut impl GuestMemory) -> Option<(u16, u32)> {
        let mut idx = [0u8; 2];
        mem.read(self.addrs.used + 2, &mut idx);
        if u16::from_le_bytes(idx) == self.last_used {
            return None;
        }
        fence(Ordering::SeqCst);
        let slot = u64::from(self.last_used % self.size);
        let mut e = [0u8; 8];
        mem.read(self.addrs.used + 4 + 8 * slot, &mut e);
        self.last_used = self.last_used.wrapping_add(1);
        let head = u16::from_le_bytes([e[0], e[1]]);
        let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        if let Some(ids) = self.chains.remove(&head) {
            self.free.extend(ids);
        }
        Some((head, len))
    }
}
