//! The vhost-user shared-memory protocol as data, shared by whoever records
//! requests (the backend, the model, the conformance runner) and the judge
//! that reads the records. No I/O and no wire encoding: the bytes on the
//! socket are the `vhost` crate's, in `shmem-host`.

use std::fmt;

/// The page size every shared-memory size, offset and length is a multiple of.
pub const PAGE_SIZE: u64 = 4096;

/// SHMEM_MAP's flag bit for a writable mapping (`VHOST_USER_FLAG_MAP_RW`).
pub const MAP_RW: u64 = 1;

/// Which backend request: SHMEM_MAP or SHMEM_UNMAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmemOp {
    Map,
    Unmap,
}

impl ShmemOp {
    /// The request code on the backend channel (`BackendReq::SHMEM_MAP` = 9, `SHMEM_UNMAP` = 10).
    pub fn code(self) -> u32 {
        match self {
            ShmemOp::Map => 9,
            ShmemOp::Unmap => 10,
        }
    }

    /// The operation a backend request code names, if it is one of the two.
    pub fn of_code(code: u32) -> Option<Self> {
        [ShmemOp::Map, ShmemOp::Unmap].into_iter().find(|o| o.code() == code)
    }
}

impl fmt::Display for ShmemOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShmemOp::Map => "SHMEM_MAP",
            ShmemOp::Unmap => "SHMEM_UNMAP",
        })
    }
}

/// The 40-byte SHMEM_MAP/UNMAP payload, by field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShmemMsg {
    pub shmid: u8,
    pub fd_offset: u64,
    pub shm_offset: u64,
    pub len: u64,
    pub flags: u64,
}

/// `shmid 0 shm_offset 0x10000 len 0x8000 fd_offset 0x0 flags 0x1 (rw)`.
impl fmt::Display for ShmemMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.flags {
            0 => "ro".to_string(),
            MAP_RW => "rw".to_string(),
            other => format!("unknown bits {:#x}", other & !MAP_RW),
        };
        write!(
            f,
            "shmid {} shm_offset {:#x} len {:#x} fd_offset {:#x} flags {:#x} ({mode})",
            self.shmid, self.shm_offset, self.len, self.fd_offset, self.flags
        )
    }
}

/// One request a backend sent on its channel, as a frontend received it:
/// the request code, the SHMEM payload if the body was one, and the fd it
/// carried (its size, and whether it was opened read-write). What a frontend
/// then did with it is its recorder's to add.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendRequest {
    pub request: u32,
    /// The SHMEM payload, if the body was one.
    pub msg: Option<ShmemMsg>,
    pub with_fd: bool,
    pub fd_size: Option<u64>,
    pub fd_rw: Option<bool>,
}

/// Whether `(offset, len)` ranges `a` and `b` overlap: they share a byte,
/// that is both are non-empty and each starts before the other ends (ends
/// saturate at 2^64). An empty range holds no byte and overlaps nothing
/// (QEMU 11.1.3 counts one strictly inside a mapping as an overlap: its
/// listed defect, never this rule). The one overlap rule of the ledger, the
/// model, the fuzzer and the judge.
pub fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.1 > 0 && b.1 > 0 && a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_overlap_when_each_starts_before_the_other_ends() {
        assert!(overlaps((0, 0x2000), (0x1000, 0x1000)));
        assert!(!overlaps((0, 0x1000), (0x1000, 0x1000)), "adjacent");
        assert!(!overlaps((0x1000, 0), (0, 0x2000)), "empty, strictly inside: no byte in common");
        assert!(!overlaps((0, 0), (0, 0x2000)), "empty, at the start");
        assert!(overlaps((u64::MAX - 1, 2), (u64::MAX - 1, 1)), "no overflow");
    }

    #[test]
    fn request_codes_read_back() {
        assert_eq!(ShmemOp::of_code(9), Some(ShmemOp::Map));
        assert_eq!(ShmemOp::of_code(10), Some(ShmemOp::Unmap));
        assert_eq!(ShmemOp::of_code(44), None);
    }
}
