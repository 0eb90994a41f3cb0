//! The fill pattern and the digest that the host and the guest agent must
//! compute identically. Pure functions; no I/O.

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
