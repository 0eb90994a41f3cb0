//! What the host and the guest agent must agree on byte for byte: the fill
//! pattern, the digest, and the doorbell page layout of the
//! reply-before-commit probe. Pure functions and constants; no I/O.

/// FNV-1a 64-bit, fed a byte at a time (the agent digests device memory
/// without buffering it).
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a64 {
    pub fn new() -> Self {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// FNV-1a 64-bit over `data`.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h = Fnv1a64::new();
    for &b in data {
        h.update(b);
    }
    h.value()
}

/// Byte `i` of the repeating pattern `seed`: cheap, position-dependent, and
/// different for different seeds, so misplaced bytes are caught.
pub fn pattern_byte(seed: u8, i: u64) -> u8 {
    seed.wrapping_add((i as u8).wrapping_mul(31)).wrapping_add((i >> 8) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn patterns_differ_by_seed_and_by_position() {
        assert_ne!(pattern_byte(1, 0), pattern_byte(2, 0));
        let page: Vec<u8> = (0..4096).map(|i| pattern_byte(7, i)).collect();
        assert_ne!(page[..256], page[256..512], "a shifted page must not look the same");
    }
}

/// The doorbell page of the reply-before-commit probe: byte offsets of
/// little-endian u64 words. The host writes MODE and MARKER, then RING; the
/// guest answers in the READS words, then writes DONE = RING. At start the
/// guest writes DONE = the RING it found, to say it spins.
pub mod doorbell {
    pub const RING: usize = 0;
    /// 0: read the target at once; 1: write MARKER into it at once, then read.
    pub const MODE: usize = 8;
    pub const MARKER: usize = 16;
    pub const DONE: usize = 64;
    /// READ_COUNT pairs of (value, TSC ticks the read took): the first read,
    /// a second right after it, a third about 50 microseconds later.
    pub const READS: usize = 72;
    pub const READ_COUNT: usize = 3;
    /// RING value that ends the probe.
    pub const STOP: u64 = u64::MAX;
}
