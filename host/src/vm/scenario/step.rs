//! A scenario's steps: the schema of each `[[step]]`, what each is called
//! (labels the known-defects list refers to) and which checks it produces.
//! Must not run a step (vm/steps/ does) or judge one (the judge does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Size, is_false, one_u32, yes};

/// One step of a scenario. `check` names a verdict-bearing step; the
/// known-defects list refers to it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Create a host file (memfd) of `size` bytes, zero-filled.
    File { name: String, size: Size },
    /// Host fills `len` bytes (default: to the end) at `offset` with pattern `seed`.
    Fill {
        file: String,
        seed: u8,
        #[serde(default)]
        offset: Size,
        len: Option<Size>,
    },
    /// Backend asks the frontend to map; the ack must be `ack` (default 0),
    /// a check named `LABEL/ack`. `attach = false` sends no fd; `flags`
    /// overrides the flags `rw` implies (unknown bits, for error cases);
    /// `reason` must appear in what the frontend says about a rejection
    /// (QEMU's stderr, the model's reason), a check named `LABEL/reason`.
    /// LABEL is `check`, or derived from the request (see [`Step::label`]).
    Map {
        check: Option<String>,
        shmid: u8,
        file: String,
        #[serde(default)]
        fd_offset: Size,
        shm_offset: Size,
        len: Size,
        rw: bool,
        #[serde(default)]
        ack: u64,
        #[serde(default = "yes")]
        attach: bool,
        /// Attach the file re-opened read-only instead.
        #[serde(default)]
        readonly_fd: bool,
        flags: Option<u64>,
        reason: Option<String>,
        /// Any stated reason will do (a check `LABEL/reason` that passes
        /// when the frontend said anything about the request).
        #[serde(default, skip_serializing_if = "is_false")]
        stated: bool,
    },
    /// Fault injection (QEMU only): `kill-qemu`, `kill-backend`, `hang-agent`.
    Inject { fault: Fault },
    /// Check: the guest gives no answer to a ping within a short timeout
    /// because it hangs (a timeout) or its frontend is dead, and the runner
    /// names which; any other error fails the check.
    ExpectNoAnswer { check: String, from: Party },
    /// Check: of `count` mappings of `len` bytes of `file` side by side from
    /// offset 0 of region `shmid`, the first `expect_accepted` (default 1)
    /// are accepted, and every one the frontend accepts reaches the
    /// backend's memory table (refusing what it cannot hold is fine).
    MapMany {
        check: String,
        shmid: u8,
        file: String,
        count: u32,
        len: Size,
        #[serde(default = "one_u32")]
        expect_accepted: u32,
    },
    /// Backend asks the frontend to unmap; `check`, `ack` and `reason` as for `map`.
    Unmap {
        check: Option<String>,
        shmid: u8,
        shm_offset: Size,
        len: Size,
        #[serde(default)]
        ack: u64,
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        stated: bool,
    },
    /// The guest resets the device (status 0) and, unless `init = false`,
    /// re-initialises it to DRIVER_OK. The ledger is cleared: the spec says
    /// a reset drops every mapping.
    GuestReset {
        #[serde(default = "yes")]
        init: bool,
    },
    /// The guest writes pattern `seed` into its region view.
    GuestWrite { shmid: u8, offset: Size, len: Size, seed: u8 },
    /// The host writes pattern `seed` into a file.
    HostWrite { file: String, offset: Size, len: Size, seed: u8 },
    /// Check: the guest's view equals what the ledger says is mapped there,
    /// or, with `seed`, pattern `seed` (what the host put there on purpose,
    /// whatever the file holds now).
    ExpectGuest { check: String, shmid: u8, offset: Size, len: Size, seed: Option<u8> },
    /// Check: the guest's view does NOT show these bytes of `file` (after unmap, elsewhere).
    ExpectGuestNot {
        check: String,
        shmid: u8,
        offset: Size,
        len: Size,
        file: String,
        #[serde(default)]
        fd_offset: Size,
    },
    /// Check: the host file holds pattern `seed` at `offset`.
    ExpectFile { check: String, file: String, offset: Size, len: Size, seed: u8 },
    /// Check: the frontend still runs and the guest still answers.
    ExpectAlive { check: String },
    /// Check: the FNV-1a digest (16 hex digits) of `len` bytes at `offset`
    /// of the guest's view of region `shmid` (a byte where nothing is
    /// mapped counts as zero) or of host file `file` (exactly one of them).
    ExpectDigest { check: String, shmid: Option<u8>, file: Option<String>, offset: Size, len: Size, digest: String },
    /// Check: the frontend holds no fd and no memory mapping of `file`.
    ExpectReleased { check: String, file: String },
    /// Check: within a timeout, the backend's latest memory table holds
    /// (`present = true`) or no longer holds the mapping of `file` at the
    /// region's guest address + `shm_offset`, `len` bytes. Reports the lag
    /// after the last ack.
    ExpectMemTable { check: String, shmid: u8, shm_offset: Size, len: Size, file: String, present: bool },
    /// The reply-before-commit probe: `iterations` times, map a file at
    /// `shm_offset` of region `shmid` (`rw` or read-only), ring the guest
    /// through a doorbell at `doorbell_offset` of region `doorbell_shmid`
    /// right after the ack, and see what the guest's first read shows; then
    /// unmap and do the same. With `writes` (read-write only), every other
    /// map is followed by a guest write instead of a read. Checks
    /// `CHECK/map`, `CHECK/unmap` (and `CHECK/write`): no stale observation;
    /// `CHECK/unmap-effect`: after every UNMAP ack the range can be mapped
    /// again; and `CHECK/no-deadlock`: every request got its ack and every
    /// ring its answer.
    ProbeReplyBeforeCommit {
        check: String,
        shmid: u8,
        shm_offset: Size,
        doorbell_shmid: u8,
        doorbell_offset: Size,
        iterations: u32,
        rw: bool,
        #[serde(default)]
        writes: bool,
    },
}

/// A fault the runner can inject.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    KillQemu,
    KillBackend,
    HangAgent,
}

/// Who is expected not to answer (only the guest: a frontend asked through
/// a channel the runner closed itself would say nothing about the frontend).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Party {
    Guest,
}

impl Step {
    /// The step's kind, as written after `do =`.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::File { .. } => "file",
            Step::Fill { .. } => "fill",
            Step::Map { .. } => "map",
            Step::MapMany { .. } => "map-many",
            Step::Inject { .. } => "inject",
            Step::ExpectNoAnswer { .. } => "expect-no-answer",
            Step::Unmap { .. } => "unmap",
            Step::GuestReset { .. } => "guest-reset",
            Step::GuestWrite { .. } => "guest-write",
            Step::HostWrite { .. } => "host-write",
            Step::ExpectGuest { .. } => "expect-guest",
            Step::ExpectGuestNot { .. } => "expect-guest-not",
            Step::ExpectFile { .. } => "expect-file",
            Step::ExpectAlive { .. } => "expect-alive",
            Step::ExpectDigest { .. } => "expect-digest",
            Step::ExpectReleased { .. } => "expect-released",
            Step::ExpectMemTable { .. } => "expect-mem-table",
            Step::ProbeReplyBeforeCommit { .. } => "probe-reply-before-commit",
        }
    }

    /// The label of a map or unmap without its `#N` repeat suffix: its
    /// `check`, else the request itself (`map 0:0x10000+0x8000`).
    fn base_label(&self) -> Option<String> {
        match self {
            Step::Map { check: Some(c), .. } | Step::Unmap { check: Some(c), .. } => Some(c.clone()),
            Step::Map { shmid, shm_offset, len, .. } => Some(format!("map {shmid}:{:#x}+{:#x}", shm_offset.0, len.0)),
            Step::Unmap { shmid, shm_offset, len, .. } => {
                Some(format!("unmap {shmid}:{:#x}+{:#x}", shm_offset.0, len.0))
            }
            _ => None,
        }
    }

    /// A named verdict-bearing step's check name.
    pub fn check(&self) -> Option<&str> {
        match self {
            Step::ExpectGuest { check, .. }
            | Step::ExpectGuestNot { check, .. }
            | Step::ExpectFile { check, .. }
            | Step::ExpectAlive { check }
            | Step::ExpectDigest { check, .. }
            | Step::ExpectReleased { check, .. }
            | Step::ExpectMemTable { check, .. }
            | Step::ProbeReplyBeforeCommit { check, .. }
            | Step::MapMany { check, .. }
            | Step::ExpectNoAnswer { check, .. } => Some(check),
            _ => None,
        }
    }
}

impl Step {
    /// The names of the checks this step records, given its label.
    pub fn produced_checks(&self, label: &str) -> Vec<String> {
        match self {
            Step::Map { reason, stated, .. } | Step::Unmap { reason, stated, .. } => {
                let mut v = vec![format!("{label}/ack")];
                v.extend((reason.is_some() || *stated).then(|| format!("{label}/reason")));
                v
            }
            Step::ProbeReplyBeforeCommit { check, rw, writes, .. } => {
                let mut v: Vec<String> =
                    ["map", "unmap", "unmap-effect", "no-deadlock"].iter().map(|d| format!("{check}/{d}")).collect();
                if *rw && *writes {
                    v.push(format!("{check}/write"));
                }
                v
            }
            other => other.check().map(str::to_string).into_iter().collect(),
        }
    }
}

/// Every step's label, in order: a check's name; for a map or unmap its
/// `check` or its request; for any other step its kind. Repeats get `#2`,
/// `#3`... Labels depend on content, not position, so inserting a step
/// never renames another step's checks (which the known defects refer to).
pub fn step_labels(steps: &[Step]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    steps
        .iter()
        .map(|s| {
            let base = s.check().map(str::to_string).or_else(|| s.base_label()).unwrap_or_else(|| s.kind().to_string());
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 { base } else { format!("{base}#{n}") }
        })
        .collect()
}
