//! The model's fault switches (ways to be wrong on purpose) and how it
//! says no to a request. Data only: the serving code reads them.

use std::time::Duration;

/// Ways to make the model wrong on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Map read-only requests writable (what QEMU 11.1.3 effectively does).
    pub ignore_readonly: bool,
    /// Accept a map that overlaps an existing mapping.
    pub skip_overlap_check: bool,
    /// Leak the dup'd fd when a mapping is unmapped or reset.
    pub keep_fd_after_unmap: bool,
    /// Die (stop serving, drop the channel) on a map sent to a device that
    /// is not started, as QEMU 11.1.3 does with SIGSEGV.
    pub crash_on_stopped_map: bool,
    /// Reply to a map or unmap first and make it visible to the guest only
    /// [`COMMIT_DELAY`] later, as QEMU 11.1.3 replies before it commits.
    pub reply_before_commit: bool,
    /// Send the memory table and wait for the backend's ack of it before
    /// replying: a backend that serves the frontend on the thread that waits
    /// for the reply deadlocks.
    pub commit_before_reply: bool,
    /// Ack an unmap but leave the mapping in place (the range still shows
    /// the file, and a later map of it overlaps).
    pub unmap_without_effect: bool,
    /// Answer this many requests, then none (a frontend stuck mid-run: the
    /// backend's watchdog must name it).
    pub stop_acking_after: Option<usize>,
    /// Refuse every map (ack 1), as a frontend out of slots would.
    pub refuse_all_maps: bool,
    /// After an unmap, the range reads 0xa5 bytes instead of nothing: a
    /// frontend that leaves garbage where nothing is mapped.
    pub unmapped_reads_garbage: bool,
    /// A reset drops the mappings without sending a new memory table (the
    /// backend keeps believing in them until the device starts again).
    pub keep_table_after_reset: bool,
    /// Accept maps whose offsets or length are not page aligned, as QEMU
    /// 11.1.3 does (the backend test runs so, to follow a backend past
    /// them; its own check judges alignment).
    pub accept_unaligned: bool,
    /// Refuse the k-th SHMEM_MAP (1-based; ack 1), whatever it asks.
    pub refuse_map_number: Option<usize>,
    /// Hold every ack this long before sending it.
    pub ack_delay: Option<Duration>,
    /// Apply and ack maps and unmaps but never send the memory table that
    /// carries them: the backend's table stays as it was.
    pub no_table_update: bool,
    /// Refuse a zero-length map strictly inside a mapping as an overlap,
    /// as QEMU 11.1.3 does (it checks overlap first and counts the empty range).
    pub zero_length_as_overlap: bool,
}

/// How long the `reply_before_commit` fault leaves the guest view stale.
pub const COMMIT_DELAY: Duration = Duration::from_millis(2);

/// Why the model rejected a request: the errno QEMU's handler would return
/// and the reason QEMU prints (the backend only ever sees ack 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub errno: i32,
    pub reason: &'static str,
}

pub(super) const fn reject(errno: i32, reason: &'static str) -> Rejection {
    Rejection { errno, reason }
}
