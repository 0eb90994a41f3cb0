//! Byte ranges inside one shared-memory region: the one overlap rule that
//! the ledger, the model and the fuzzer all use. Arithmetic only.

/// Whether `(offset, len)` ranges `a` and `b` overlap: each starts before
/// the other ends (ends saturate at 2^64). An empty range strictly inside
/// the other counts, as QEMU 11.1 counts it.
pub fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn ranges_overlap_when_each_starts_before_the_other_ends() {
        assert!(overlaps((0, 0x2000), (0x1000, 0x1000)));
        assert!(!overlaps((0, 0x1000), (0x1000, 0x1000)), "adjacent");
        assert!(overlaps((0x1000, 0), (0, 0x2000)), "empty, strictly inside");
        assert!(!overlaps((0, 0), (0, 0x2000)), "empty, at the start");
        assert!(overlaps((u64::MAX - 1, 2), (u64::MAX - 1, 1)), "no overflow");
    }
}
