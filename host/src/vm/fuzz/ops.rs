//! The fuzzer's operations: what one can be, how the next one is picked
//! (weighted towards edges, overlaps and resets), what a change is looked
//! at with afterwards, and how both frontends are put back in step. No I/O.

use crate::manager::LedgerEntry;
use shmem_proto::MAP_RW;

/// The files every fuzz run maps: name and size.
pub(super) const FILES: [(&str, u64); 3] = [("f0", 0x10000), ("f1", 0x10000), ("f2", 0x4000)];
const PAGE: u64 = 0x1000;

/// splitmix64: small, seedable, the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How a map's fd is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachKind {
    File,
    NoFd,
    ReadOnlyFd,
}

impl AttachKind {
    /// As the fact `attach` names it (the known-defects list matches on it).
    pub fn name(self) -> &'static str {
        match self {
            AttachKind::File => "File",
            AttachKind::NoFd => "NoFd",
            AttachKind::ReadOnlyFd => "ReadOnlyFd",
        }
    }
}

/// One generated operation (the oracle supplies its expectation).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Map {
        shmid: u8,
        file: usize,
        fd_offset: u64,
        shm_offset: u64,
        len: u64,
        rw: bool,
        attach: AttachKind,
        flags: Option<u64>,
    },
    Unmap {
        shmid: u8,
        shm_offset: u64,
        len: u64,
    },
    GuestRead {
        shmid: u8,
        offset: u64,
        len: u64,
    },
    GuestWrite {
        shmid: u8,
        offset: u64,
        len: u64,
        seed: u8,
    },
    HostWrite {
        file: usize,
        offset: u64,
        len: u64,
        seed: u8,
    },
    FileRead {
        file: usize,
        offset: u64,
        len: u64,
    },
    Reset {
        init: bool,
    },
    MemTable {
        shmid: u8,
        file: usize,
        shm_offset: u64,
        len: u64,
    },
    Released {
        file: usize,
    },
    Alive,
}

/// The operation as the fact `op` shows it: its kind and its values.
impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = |i: usize| FILES[i].0;
        match *self {
            Op::Map { shmid, file: i, fd_offset, shm_offset, len, rw, attach, flags } => {
                write!(
                    f,
                    "map {shmid}:{shm_offset:#x}+{len:#x} of {}@{fd_offset:#x} {} attach={}",
                    file(i),
                    if rw { "rw" } else { "ro" },
                    attach.name()
                )?;
                flags.map_or(Ok(()), |fl| write!(f, " flags={fl:#x}"))
            }
            Op::Unmap { shmid, shm_offset, len } => write!(f, "unmap {shmid}:{shm_offset:#x}+{len:#x}"),
            Op::GuestRead { shmid, offset, len } => write!(f, "guest-read {shmid}:{offset:#x}+{len:#x}"),
            Op::GuestWrite { shmid, offset, len, seed } => {
                write!(f, "guest-write {shmid}:{offset:#x}+{len:#x} seed={seed:#04x}")
            }
            Op::HostWrite { file: i, offset, len, seed } => {
                write!(f, "host-write {}@{offset:#x}+{len:#x} seed={seed:#04x}", file(i))
            }
            Op::FileRead { file: i, offset, len } => write!(f, "file-read {}@{offset:#x}+{len:#x}", file(i)),
            Op::Reset { init } => write!(f, "reset init={init}"),
            Op::MemTable { shmid, file: i, shm_offset, len } => {
                write!(f, "mem-table {shmid}:{shm_offset:#x}+{len:#x} of {}", file(i))
            }
            Op::Released { file: i } => write!(f, "released {}", file(i)),
            Op::Alive => write!(f, "alive"),
        }
    }
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Map { .. } => "map",
            Op::Unmap { .. } => "unmap",
            Op::GuestRead { .. } => "guest-read",
            Op::GuestWrite { .. } => "guest-write",
            Op::HostWrite { .. } => "host-write",
            Op::FileRead { .. } => "file-read",
            Op::Reset { .. } => "reset",
            Op::MemTable { .. } => "mem-table",
            Op::Released { .. } => "released",
            Op::Alive => "alive",
        }
    }
}

/// What the generator knows of the oracle's state.
pub(super) struct View<'a> {
    pub regions: &'a [u64],
    pub ledger: &'a [LedgerEntry],
    /// The mappings the last reset dropped (the backend may still believe in them).
    pub dropped: &'a [LedgerEntry],
    pub started: bool,
}

/// The fuzz files an operation concerns: its own file, or those mapped
/// where it reads, writes or unmaps (by the oracle's ledger before it).
pub(super) fn concerned_files(op: &Op, ledger: &[LedgerEntry]) -> Vec<usize> {
    let mapped = |shmid: u8, offset: u64, len: u64| {
        ledger.iter().filter(|e| e.overlaps(shmid, offset, len)).map(|e| file_index(&e.file)).collect()
    };
    match *op {
        Op::Map { file, .. }
        | Op::HostWrite { file, .. }
        | Op::FileRead { file, .. }
        | Op::MemTable { file, .. }
        | Op::Released { file } => vec![file],
        Op::GuestRead { shmid, offset, len }
        | Op::GuestWrite { shmid, offset, len, .. }
        | Op::Unmap { shmid, shm_offset: offset, len } => mapped(shmid, offset, len),
        Op::Reset { .. } | Op::Alive => Vec::new(),
    }
}

pub(super) fn file_index(name: &str) -> usize {
    FILES.iter().position(|(n, _)| name.ends_with(&format!("/{n}"))).unwrap_or(0)
}

/// What one generated operation is about: a live region, a file, a length,
/// and maybe an existing mapping.
struct Pick {
    shmid: u8,
    size: u64,
    file: usize,
    fsize: u64,
    len: u64,
    existing: Option<LedgerEntry>,
}

impl Pick {
    /// An offset for `len` bytes: the region's start, its end, or a page inside.
    fn edge(&self, rng: &mut Rng, len: u64) -> u64 {
        match rng.below(4) {
            0 => 0,
            1 => self.size.saturating_sub(len),
            _ => rng.below(self.size.saturating_sub(len) / PAGE + 1) * PAGE,
        }
    }

    /// A read-write or read-only map of the file at a page of it.
    fn map(&self, rng: &mut Rng, shm_offset: u64, len: u64) -> Op {
        let fd_offset = rng.below((self.fsize.saturating_sub(len)) / PAGE + 1) * PAGE;
        let rw = rng.chance(60);
        Op::Map {
            shmid: self.shmid,
            file: self.file,
            fd_offset,
            shm_offset,
            len,
            rw,
            attach: AttachKind::File,
            flags: None,
        }
    }

    /// The odd maps: fd offset 0, every other field chosen by the case.
    fn at_zero(&self, shmid: u8, shm_offset: u64, len: u64, rw: bool, attach: AttachKind, flags: Option<u64>) -> Op {
        Op::Map { shmid, file: self.file, fd_offset: 0, shm_offset, len, rw, attach, flags }
    }

    /// The maps (`roll` below 35): plain ones at edges, overlaps, past the
    /// end, unknown regions, no fd, zero length, unaligned, unknown flags,
    /// read-only fds.
    fn map_op(&self, roll: u64, rng: &mut Rng) -> Op {
        let (shmid, len) = (self.shmid, self.len);
        match roll {
            0..=21 => {
                let off = self.edge(rng, len);
                self.map(rng, off, len)
            }
            22..=25 => match &self.existing {
                // Overlap: inside an existing mapping.
                Some(e) => {
                    let inside = e.shm_offset + rng.below(e.len / PAGE) * PAGE;
                    self.map(rng, inside, len)
                }
                None => self.map(rng, 0, len),
            },
            26..=27 => self.map(rng, self.size.saturating_sub(PAGE), 2 * PAGE),
            28 => self.at_zero(rng.pick(&[1, 7]), 0, PAGE, false, AttachKind::File, None),
            29 => self.at_zero(shmid, self.edge(rng, PAGE), PAGE, false, AttachKind::NoFd, None),
            30 => {
                // Zero length, at an edge or strictly inside an existing mapping (no byte in common, still no valid range).
                let inside = self
                    .existing
                    .as_ref()
                    .filter(|e| e.len > PAGE && rng.chance(50))
                    .map(|e| (e.shmid, e.shm_offset + (1 + rng.below(e.len / PAGE - 1)) * PAGE));
                let (shmid, shm_offset) = inside.unwrap_or_else(|| (shmid, self.edge(rng, PAGE)));
                self.at_zero(shmid, shm_offset, 0, false, AttachKind::File, None)
            }
            31 => self.at_zero(shmid, self.edge(rng, PAGE) + 0x100, 0x100, true, AttachKind::File, None),
            32 => self.at_zero(shmid, self.edge(rng, PAGE), PAGE, true, AttachKind::File, Some(0x80 | MAP_RW)),
            _ => {
                let (off, rw) = (self.edge(rng, len), rng.chance(50));
                self.at_zero(shmid, off, len, rw, AttachKind::ReadOnlyFd, None)
            }
        }
    }
}

/// Picks the next operation, weighted towards edges, full regions, overlaps
/// and resets.
pub(super) fn generate(rng: &mut Rng, v: &View<'_>) -> Op {
    let live: Vec<u8> = (0..v.regions.len() as u8).filter(|&i| v.regions[usize::from(i)] > 0).collect();
    let shmid = rng.pick(&live);
    let size = v.regions[usize::from(shmid)];
    let file = rng.below(FILES.len() as u64) as usize;
    let fsize = FILES[file].1;
    let len = rng.pick(&[PAGE, 2 * PAGE, 4 * PAGE, 16 * PAGE]).min(fsize);
    let existing = (!v.ledger.is_empty()).then(|| v.ledger[rng.below(v.ledger.len() as u64) as usize].clone());
    let p = Pick { shmid, size, file, fsize, len, existing: existing.clone() };
    let edge = |rng: &mut Rng, len: u64| p.edge(rng, len);
    match rng.below(100) {
        roll @ 0..=34 => p.map_op(roll, rng),
        35..=50 => match &existing {
            Some(e) if rng.chance(80) => Op::Unmap { shmid: e.shmid, shm_offset: e.shm_offset, len: e.len },
            Some(e) if e.len > PAGE => Op::Unmap { shmid: e.shmid, shm_offset: e.shm_offset, len: PAGE },
            _ => Op::Unmap { shmid, shm_offset: edge(rng, PAGE), len: PAGE },
        },
        51..=64 => match &existing {
            Some(e) if rng.chance(75) => {
                let l = rng.pick(&[8, 256, PAGE]).min(e.len);
                Op::GuestRead { shmid: e.shmid, offset: e.shm_offset + rng.below((e.len - l) / 8 + 1) * 8, len: l }
            }
            _ => Op::GuestRead { shmid, offset: edge(rng, PAGE), len: PAGE },
        },
        65..=72 => match &existing {
            Some(e) => {
                let l = rng.pick(&[8, 64, PAGE]).min(e.len);
                Op::GuestWrite {
                    shmid: e.shmid,
                    offset: e.shm_offset + rng.below((e.len - l) / 8 + 1) * 8,
                    len: l,
                    seed: rng.below(256) as u8,
                }
            }
            None => Op::GuestWrite { shmid, offset: edge(rng, PAGE), len: 64, seed: rng.below(256) as u8 },
        },
        73..=76 => {
            let len = 8 * (1 + rng.below(64));
            Op::HostWrite { file, offset: rng.below((fsize - len) / 8 + 1) * 8, len, seed: rng.below(256) as u8 }
        }
        77..=82 => Op::FileRead { file, offset: 0, len: fsize },
        83..=87 => Op::Reset { init: !(v.started && rng.chance(15)) },
        88..=94 => {
            let gone = (!v.dropped.is_empty() && rng.chance(50))
                .then(|| v.dropped[rng.below(v.dropped.len() as u64) as usize].clone());
            match gone.or(existing) {
                Some(e) => {
                    Op::MemTable { shmid: e.shmid, file: file_index(&e.file), shm_offset: e.shm_offset, len: e.len }
                }
                None => Op::MemTable { shmid, file, shm_offset: 0, len },
            }
        }
        95..=97 => Op::Released { file },
        _ => Op::Alive,
    }
}

/// The looks that follow a change: for a mapping made or dropped, the
/// guest's view of it and whether the backend's memory table has it; for a
/// guest write, the guest's view of the range (when it lies in one mapping
/// or in none); for a host write, that file range.
pub(super) fn touched(op: &Op, before: &[LedgerEntry], after: &[LedgerEntry]) -> Vec<Op> {
    let find = |l: &[LedgerEntry], shmid: u8, off: u64, len: u64| {
        l.iter().find(|e| e.shmid == shmid && e.shm_offset == off && e.len == len).cloned()
    };
    let mapping = |e: LedgerEntry| {
        vec![
            Op::GuestRead { shmid: e.shmid, offset: e.shm_offset, len: e.len.min(PAGE) },
            Op::MemTable { shmid: e.shmid, file: file_index(&e.file), shm_offset: e.shm_offset, len: e.len },
        ]
    };
    match *op {
        Op::Map { shmid, shm_offset, len, .. } if find(before, shmid, shm_offset, len).is_none() => {
            find(after, shmid, shm_offset, len).map(mapping).unwrap_or_default()
        }
        Op::Unmap { shmid, shm_offset, len } if find(after, shmid, shm_offset, len).is_none() => {
            find(before, shmid, shm_offset, len).map(mapping).unwrap_or_default()
        }
        Op::GuestWrite { shmid, offset, len, .. } => {
            let end = offset + len;
            let overlapping: Vec<_> = after.iter().filter(|e| e.overlaps(shmid, offset, len)).collect();
            let inside_one = overlapping.len() == 1
                && overlapping[0].shm_offset <= offset
                && end <= overlapping[0].shm_offset + overlapping[0].len;
            if overlapping.is_empty() || inside_one { vec![Op::GuestRead { shmid, offset, len }] } else { Vec::new() }
        }
        Op::HostWrite { file, offset, len, .. } => vec![Op::FileRead { file, offset, len }],
        _ => Vec::new(),
    }
}

/// The operations that put both targets back in step after a known
/// divergence: a reset with re-initialisation, and every file filled anew.
pub(super) fn resync(rng: &mut Rng) -> Vec<Op> {
    let mut ops = vec![Op::Reset { init: true }];
    for (i, (_, size)) in FILES.iter().enumerate() {
        ops.push(Op::HostWrite { file: i, offset: 0, len: *size, seed: rng.below(256) as u8 });
    }
    ops
}
