//! What the guest's first read after a ring shows, in words. Each
//! iteration's file holds `TAG | iteration`; a guest write leaves
//! `MARK | iteration`. Pure functions.

pub const TAG: u64 = 0x7a67_0000_0000_0000;
pub const MARK: u64 = 0x6d6b_0000_0000_0000;
const PREFIX: u64 = 0xffff_0000_0000_0000;

/// The iteration whose file (`TAG`) or guest write (`MARK`) this value is.
fn iteration_of(v: u64) -> Option<u64> {
    (v & PREFIX == TAG || v & PREFIX == MARK).then_some(v & !PREFIX)
}

/// After a MAP ack: this iteration's tag is fresh; anything else is stale.
pub fn after_map(first: Option<u64>, i: u32) -> &'static str {
    match first {
        Some(v) if v == TAG | u64::from(i) => "fresh",
        Some(0) | None => "hole",
        Some(v) if iteration_of(v).is_some_and(|j| j < u64::from(i)) => "an earlier mapping",
        Some(_) => "other bytes",
    }
}

/// After an UNMAP ack: fresh is what an empty range shows (zeros, which is
/// what QEMU shows there; all ones, what a PCI read of nothing returns; or
/// nothing readable, what the model shows). The bytes of a mapping that
/// should be gone (this iteration's file or write, or an earlier one's) are
/// stale, and so are any other bytes: nothing should be there to show them.
pub fn after_unmap(first: Option<u64>, i: u32) -> &'static str {
    match first {
        Some(v) if iteration_of(v) == Some(u64::from(i)) => "the unmapped file's bytes",
        Some(v) if iteration_of(v).is_some_and(|j| j < u64::from(i)) => "an earlier mapping's bytes",
        Some(0) => "fresh: zeros",
        Some(u64::MAX) => "fresh: all ones",
        None => "fresh: unreadable",
        Some(_) => "other bytes, where nothing is mapped",
    }
}

/// After a MAP ack and a guest write of `marker`.
pub fn after_write(first: Option<u64>, marker: u64, landed: bool) -> &'static str {
    match (first, landed) {
        (Some(v), true) if v == marker => "fresh: written and read back",
        (_, false) => "lost: the write did not reach the file",
        (_, true) => "reached the file, but the guest read back something else",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_fresh_only_when_it_shows_what_should_be_there() {
        assert_eq!(after_map(Some(TAG | 7), 7), "fresh");
        assert_eq!(after_map(Some(0), 7), "hole");
        assert_eq!(after_map(Some(TAG | 5), 7), "an earlier mapping", "the same file two iterations back counts too");
        assert_eq!(after_map(Some(MARK | 6), 7), "an earlier mapping");
        assert_eq!(after_map(Some(0xffff_ffff_ffff_ffff), 7), "other bytes");
        assert_eq!(after_unmap(Some(TAG | 7), 7), "the unmapped file's bytes");
        assert_eq!(after_unmap(Some(MARK | 7), 7), "the unmapped file's bytes");
        assert_eq!(after_unmap(Some(TAG | 3), 7), "an earlier mapping's bytes");
        assert!(after_unmap(Some(0), 7).starts_with("fresh"));
        assert!(
            after_unmap(Some(u64::MAX), 7).starts_with("fresh"),
            "all-ones where nothing is mapped is not the file's bytes"
        );
        assert!(
            !after_unmap(Some(0xa5a5_a5a5_a5a5_a5a5), 7).starts_with("fresh"),
            "bytes of nobody's where nothing is mapped are no empty range"
        );
        assert!(after_unmap(None, 7).starts_with("fresh"));
    }
}
