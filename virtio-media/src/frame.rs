//! The frames vhost-device-media's simple-capture device writes (virtio-media
//! 0.0.8, `simple_device.rs`): 640x480 YU12, every byte of a plane one value
//! that follows the frame's sequence number.

pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 480;
pub const FOURCC: [u8; 4] = *b"YU12";
/// Bytes of one frame: the Y plane, then U and V at a quarter each.
pub const FRAME_LEN: usize = (WIDTH * HEIGHT * 3 / 2) as usize;

/// The byte expected at `at` of the frame with sequence number `sequence`.
pub fn expected(sequence: u32, at: usize) -> u8 {
    let y = (WIDTH * HEIGHT) as usize;
    let add = if at < y {
        0
    } else if at < y + y / 4 {
        64
    } else {
        128
    };
    ((sequence + add) % 256) as u8
}

/// The first byte of `frame` that is not the pattern of `sequence`: (offset, expected, found).
pub fn first_mismatch(frame: &[u8], sequence: u32) -> Option<(usize, u8, u8)> {
    if frame.len() < FRAME_LEN {
        return Some((frame.len(), expected(sequence, frame.len()), 0));
    }
    frame[..FRAME_LEN]
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != expected(sequence, i))
        .map(|(i, &b)| (i, expected(sequence, i), b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_follow_the_sequence_and_a_wrong_byte_is_found() {
        let seq = 300;
        let mut f: Vec<u8> = (0..FRAME_LEN).map(|i| expected(seq, i)).collect();
        assert_eq!((f[0], f[FRAME_LEN / 3 * 2 + 10], f[FRAME_LEN - 1]), (44, 108, 172));
        assert_eq!(first_mismatch(&f, seq), None);
        assert!(first_mismatch(&f, seq + 1).is_some());
        f[400_000] ^= 1;
        assert_eq!(first_mismatch(&f, seq).map(|m| m.0), Some(400_000));
    }
}
