//! The device spec: which virtio id, how many queues and which shared-memory
//! regions (by shmid) the test device advertises. Validation only; no I/O.

use std::fmt;

use shmem_proto::PAGE_SIZE;

/// Highest number of shared-memory regions the protocol can describe
/// (`VhostUserShMemConfig::memory_sizes` has 256 entries; shmid is a u8).
pub const MAX_REGIONS: usize = 256;

/// What the test device advertises to the frontend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Virtio device id the frontend is told to expose (QEMU `virtio-id=`).
    pub virtio_id: u16,
    /// Number of virtqueues the backend reports.
    pub num_queues: u16,
    /// Region size by shmid; index = shmid, 0 = unused shmid.
    pub regions: Vec<u64>,
}

/// Why a device spec was refused; each variant names the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    NoRegions,
    TooManyRegions { count: usize },
    ShmidOutOfRange { shmid: usize },
    NotPageMultiple { shmid: usize, size: u64 },
    TotalNotPowerOfTwo { total: u64 },
    TotalOverflow,
    ZeroVirtioId,
    ZeroQueues,
    Parse { what: String, value: String, reason: String },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::NoRegions => {
                write!(f, "device spec has no non-empty shared-memory region; at least one is needed")
            }
            SpecError::TooManyRegions { count } => {
                write!(f, "device spec lists {count} regions; at most {MAX_REGIONS} are possible (shmid is a u8)")
            }
            SpecError::ShmidOutOfRange { shmid } => {
                write!(f, "shmid {shmid} is out of range: it must be below {MAX_REGIONS}")
            }
            SpecError::NotPageMultiple { shmid, size } => {
                write!(
                    f,
                    "region shmid {shmid} has size {size:#x}, which is not a multiple of the page size {PAGE_SIZE:#x}"
                )
            }
            SpecError::TotalNotPowerOfTwo { total } => write!(
                f,
                "the regions add up to {total:#x} bytes, which is not a power of two; QEMU packs them into one PCI BAR whose size must be a power of two"
            ),
            SpecError::TotalOverflow => write!(f, "the region sizes add up to more than 2^64 bytes"),
            SpecError::ZeroVirtioId => write!(f, "virtio id 0 is not allowed (QEMU requires a non-zero virtio-id)"),
            SpecError::ZeroQueues => write!(f, "num_queues 0 is not allowed; the device needs at least one queue"),
            SpecError::Parse { what, value, reason } => write!(f, "bad {what} {value:?}: {reason}"),
        }
    }
}

impl std::error::Error for SpecError {}

impl DeviceSpec {
    /// Builds and validates a spec.
    pub fn new(virtio_id: u16, num_queues: u16, regions: Vec<u64>) -> Result<Self, SpecError> {
        let spec = DeviceSpec { virtio_id, num_queues, regions };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.virtio_id == 0 {
            return Err(SpecError::ZeroVirtioId);
        }
        if self.num_queues == 0 {
            return Err(SpecError::ZeroQueues);
        }
        if self.regions.len() > MAX_REGIONS {
            return Err(SpecError::TooManyRegions { count: self.regions.len() });
        }
        if self.regions.iter().all(|&s| s == 0) {
            return Err(SpecError::NoRegions);
        }
        let mut total: u64 = 0;
        for (shmid, &size) in self.regions.iter().enumerate() {
            if !size.is_multiple_of(PAGE_SIZE) {
                return Err(SpecError::NotPageMultiple { shmid, size });
            }
            total = total.checked_add(size).ok_or(SpecError::TotalOverflow)?;
        }
        if !total.is_power_of_two() {
            return Err(SpecError::TotalNotPowerOfTwo { total });
        }
        Ok(())
    }

    /// Parses `SHMID=SIZE[,SHMID=SIZE...]` or `SIZE[,SIZE...]` (shmid by
    /// position). Sizes accept a `K`, `M` or `G` suffix (binary) or `0x` hex.
    pub fn parse_regions(text: &str) -> Result<Vec<u64>, SpecError> {
        let mut regions: Vec<u64> = Vec::new();
        for (pos, item) in text.split(',').map(str::trim).enumerate() {
            let (shmid, size) = match item.split_once('=') {
                Some((id, size)) => {
                    let shmid: usize = id.trim().parse().map_err(|e| SpecError::Parse {
                        what: "shmid".into(),
                        value: id.into(),
                        reason: format!("{e}"),
                    })?;
                    (shmid, size)
                }
                None => (pos, item),
            };
            if shmid >= MAX_REGIONS {
                return Err(SpecError::ShmidOutOfRange { shmid });
            }
            let size = parse_size(size)?;
            if regions.len() <= shmid {
                regions.resize(shmid + 1, 0);
            }
            regions[shmid] = size;
        }
        Ok(regions)
    }

    /// Sum of all region sizes: the size of the shared-memory BAR (saturating).
    pub fn total_size(&self) -> u64 {
        self.regions.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }
}

/// Where a frontend puts each region in the shared-memory BAR, as QEMU
/// 11.1 does: back to back in ascending shmid order, unused shmids (size 0)
/// skipped. `(shmid, offset in the BAR, size)`. The one place this rule is
/// written; the layout check does not use it (it compares with the layout
/// the suite file states).
pub fn pack_regions(sizes: &[u64]) -> Vec<(u8, u64, u64)> {
    let mut offset = 0u64;
    let mut out = Vec::new();
    for (shmid, &size) in sizes.iter().enumerate().take(MAX_REGIONS) {
        if size != 0 {
            out.push((shmid as u8, offset, size));
            offset = offset.saturating_add(size);
        }
    }
    out
}

/// Parses `4096`, `0x1000`, `64K`, `1M`, `2G`.
pub fn parse_size(text: &str) -> Result<u64, SpecError> {
    let t = text.trim();
    let bad = |reason: &str| SpecError::Parse { what: "size".into(), value: t.into(), reason: reason.into() };
    let (digits, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1u64 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1u64 << 30),
        _ => (t, 1),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).map_err(|e| bad(&e.to_string()))?
    } else {
        digits.parse::<u64>().map_err(|e| bad(&e.to_string()))?
    };
    value.checked_mul(mult).ok_or_else(|| bad("too large"))
}
