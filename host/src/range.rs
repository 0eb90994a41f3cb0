//! Byte ranges inside one shared-memory region: the one overlap rule that
//! the ledger, the model and the fuzzer all use. Arithmetic only.

/// Whether `(offset, len)` ranges `a` and `b` overlap: they share a byte,
/// that is both are non-empty and each starts before the other ends (ends
/// saturate at 2^64). An empty range holds no byte and overlaps nothing
/// (QEMU 11.1.3 counts one strictly inside a mapping as an overlap: its
/// listed defect, never this rule).
pub fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.1 > 0 && b.1 > 0 && a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn ranges_overlap_when_each_starts_before_the_other_ends() {
        assert!(overlaps((0, 0x2000), (0x1000, 0x1000)));
        assert!(!overlaps((0, 0x1000), (0x1000, 0x1000)), "adjacent");
        assert!(!overlaps((0x1000, 0), (0, 0x2000)), "empty, strictly inside: no byte in common");
        assert!(!overlaps((0, 0), (0, 0x2000)), "empty, at the start");
        assert!(overlaps((u64::MAX - 1, 2), (u64::MAX - 1, 1)), "no overflow");
    }
}
