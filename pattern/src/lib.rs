//! The fill pattern and the digest that the host and the guest agent must
//! compute identically. Pure functions; no I/O.

/// FNV-1a 64-bit over `data`.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Byte `i` of the repeating pattern `seed`: cheap, position-dependent, and
/// different for different seeds, so misplaced bytes are caught.
pub fn pattern_byte(seed: u8, i: u64) -> u8 {
    seed.wrapping_add((i as u8).wrapping_mul(31)).wrapping_add((i >> 8) as u8)
}
