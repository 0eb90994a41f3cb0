//! What a scenario may ask, checked when it is loaded: every size and offset
//! against its region, its file and a stated cap, with arithmetic that
//! cannot overflow. A value past a limit is refused with `file:line:col`
//! (the line of its `[[step]]`) and the limit; nothing is allocated or sent
//! before. Map and unmap requests are not bounded: sending bad ones is what
//! error scenarios are for, and a request allocates nothing.

use std::collections::BTreeMap;

use super::scenario::{MAX_CHURN, Scenario, Step};
use shmem_judge::parse::LoadError;

/// Largest host file a scenario may create (memfds are sparse).
pub const FILE_CAP: u64 = 4 << 30;
/// Largest range one look at (or write into) the guest's view may cover:
/// the guest agent digests and fills at most this much per command.
pub const GUEST_LOOK_CAP: u64 = 1 << 20;
/// Largest range one look at a host file may cover (it is read whole), and
/// one step may write into a file (`fill`, `host-write`).
pub const FILE_LOOK_CAP: u64 = 64 << 20;
/// Most maps one `map-many` step may send.
pub const MAP_MANY_CAP: u32 = 4096;
/// Most iterations a doorbell probe may run, `--probe-scale` included.
pub const PROBE_CAP: u64 = 1_000_000;
/// The probe maps one page at its target and at its doorbell.
const PROBE_PAGE: u64 = 0x1000;

/// Where a step's values are checked: the scenario, the step's index, and
/// what is known so far (file sizes by name, region sizes by shmid).
struct At<'a> {
    scn: &'a Scenario,
    i: usize,
    regions: &'a [u64],
    files: &'a BTreeMap<String, u64>,
}

impl At<'_> {
    fn refuse(&self, what: String) -> LoadError {
        let step = &self.scn.steps[self.i];
        LoadError {
            path: self.scn.path.clone(),
            line: self.scn.lines.get(self.i).copied().unwrap_or(0),
            col: 1,
            message: format!("step {} (`do = \"{}\"`): {what}", self.i + 1, step.kind()),
        }
    }

    /// `offset + len` inside region `shmid`, and `len` at most `cap`.
    fn in_region(&self, shmid: u8, offset: u64, len: u64, cap: u64) -> Result<(), LoadError> {
        let size = self.regions.get(usize::from(shmid)).copied().unwrap_or(0);
        if size == 0 {
            return Err(self.refuse(format!(
                "shmid {shmid} is no region of this device (regions by shmid: {:#x?})",
                self.regions
            )));
        }
        if len > cap {
            return Err(self.refuse(format!("len {len:#x} is more than the {cap:#x} bytes one look may cover")));
        }
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(self
                .refuse(format!("range {offset:#x}+{len:#x} is not inside region shmid {shmid} of {size:#x} bytes"))),
        }
    }

    /// `offset + len` inside file `name` (created by an earlier step), and `len` at most `cap`.
    fn in_file(&self, name: &str, offset: u64, len: u64, cap: u64) -> Result<(), LoadError> {
        let size =
            *self.files.get(name).ok_or_else(|| self.refuse(format!("no earlier `file` step creates {name:?}")))?;
        if len > cap {
            return Err(
                self.refuse(format!("len {len:#x} is more than the {cap:#x} bytes one look at a file may cover"))
            );
        }
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(self.refuse(format!("range {offset:#x}+{len:#x} is not inside file {name:?} of {size:#x} bytes"))),
        }
    }

    fn non_empty(&self, key: &str, v: Option<&str>) -> Result<(), LoadError> {
        match v {
            Some("") => Err(self.refuse(format!("`{key} = \"\"` would match anything: name what must be said"))),
            _ => Ok(()),
        }
    }
}

/// Checks every step of `scn` against the regions of the device it runs
/// with (`regions`, by shmid) and the caps above.
pub fn check(scn: &Scenario, regions: &[u64]) -> Result<(), LoadError> {
    let mut files = BTreeMap::new();
    for i in 0..scn.steps.len() {
        let at = At { scn, i, regions, files: &files };
        if let Some((name, size)) = check_step(&at)? {
            files.insert(name, size);
        }
    }
    Ok(())
}

/// One step; a `file` step returns the file it creates.
fn check_step(at: &At<'_>) -> Result<Option<(String, u64)>, LoadError> {
    let whole = u64::MAX;
    match &at.scn.steps[at.i] {
        Step::File { name, size } if size.0 > FILE_CAP => {
            return Err(at.refuse(format!("file {name:?} of {:#x} bytes: at most {FILE_CAP:#x}", size.0)));
        }
        Step::File { name, size } => return Ok(Some((name.clone(), size.0))),
        Step::Fill { file, offset, len, .. } => {
            // Without `len`, to the end of the file.
            let to_end = at.files.get(file).map_or(0, |size| size.saturating_sub(offset.0));
            at.in_file(file, offset.0, len.map_or(to_end, |l| l.0), FILE_LOOK_CAP)?;
        }
        Step::HostWrite { file, offset, len, .. } => at.in_file(file, offset.0, len.0, FILE_LOOK_CAP)?,
        Step::Map { file, attach, reason, .. } => {
            if *attach && !at.files.contains_key(file) {
                return Err(at.refuse(format!("no earlier `file` step creates {file:?}")));
            }
            at.non_empty("reason", reason.as_deref())?;
        }
        Step::Unmap { reason, .. } => at.non_empty("reason", reason.as_deref())?,
        Step::MapMany { file, count, len, expect_accepted, .. } => {
            at.in_file(file, 0, 0, whole)?;
            if *count > MAP_MANY_CAP || u64::from(*count).checked_mul(len.0).is_none() {
                return Err(at.refuse(format!(
                    "{count} maps of {:#x} bytes: at most {MAP_MANY_CAP} maps, side by side within 2^64",
                    len.0
                )));
            }
            if expect_accepted > count {
                return Err(at.refuse(format!("expect_accepted = {expect_accepted}: more than the {count} maps sent")));
            }
        }
        Step::GuestWrite { shmid, offset, len, .. } | Step::ExpectGuest { shmid, offset, len, .. } => {
            at.in_region(*shmid, offset.0, len.0, GUEST_LOOK_CAP)?
        }
        Step::ExpectGuestNot { shmid, offset, len, file, fd_offset, .. } => {
            at.in_region(*shmid, offset.0, len.0, GUEST_LOOK_CAP)?;
            at.in_file(file, fd_offset.0, len.0, GUEST_LOOK_CAP)?;
        }
        Step::ExpectFile { file, offset, len, .. } => at.in_file(file, offset.0, len.0, FILE_LOOK_CAP)?,
        Step::ExpectDigest { shmid, file, offset, len, digest, .. } => {
            check_digest(at, (*shmid, file.as_deref()), offset.0, len.0, digest)?
        }
        Step::ExpectReleased { file, .. } => at.in_file(file, 0, 0, whole)?,
        Step::ExpectMemTable { shmid, shm_offset, len, file, .. } => {
            at.in_file(file, 0, 0, whole)?;
            at.in_region(*shmid, shm_offset.0, len.0, whole)?;
        }
        Step::ProbeReplyBeforeCommit { shmid, shm_offset, doorbell_shmid, doorbell_offset, iterations, .. } => {
            at.in_region(*shmid, shm_offset.0, PROBE_PAGE, whole)?;
            at.in_region(*doorbell_shmid, doorbell_offset.0, PROBE_PAGE, whole)?;
            if !(1..=PROBE_CAP).contains(&u64::from(*iterations)) {
                return Err(at.refuse(format!("iterations = {iterations}: 1 to {PROBE_CAP}")));
            }
        }
        Step::GuestReset { .. } | Step::Inject { .. } | Step::ExpectAlive { .. } | Step::ExpectNoAnswer { .. } => {}
    }
    Ok(None)
}

fn check_digest(
    at: &At<'_>,
    of: (Option<u8>, Option<&str>),
    offset: u64,
    len: u64,
    digest: &str,
) -> Result<(), LoadError> {
    match of {
        (Some(shmid), None) => at.in_region(shmid, offset, len, GUEST_LOOK_CAP)?,
        (None, Some(file)) => at.in_file(file, offset, len, FILE_LOOK_CAP)?,
        _ => return Err(at.refuse("needs exactly one of `shmid` and `file`".into())),
    }
    if digest.len() != 16 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(at.refuse(format!("digest {digest:?} is not 16 hex digits")));
    }
    Ok(())
}

/// Multiplies the iterations of every doorbell probe and the cycles of a
/// media churn by `k` (`--probe-scale`: how long a run looks for a race),
/// refusing a product past [`PROBE_CAP`] or [`MAX_CHURN`].
pub fn scale_probes(scn: &mut Scenario, k: u32) -> Result<(), LoadError> {
    if let Some(n) = scn.media.and_then(|m| m.churn) {
        let scaled = n as u64 * u64::from(k);
        if scaled > MAX_CHURN as u64 {
            return Err(LoadError {
                path: scn.path.clone(),
                line: 0,
                col: 1,
                message: format!(
                    "[media]: --probe-scale {k} makes a churn of {n} cycles {scaled}: at most {MAX_CHURN}"
                ),
            });
        }
        if let Some(m) = scn.media.as_mut() {
            m.churn = Some(scaled as usize);
        }
    }
    for i in 0..scn.steps.len() {
        if let Step::ProbeReplyBeforeCommit { iterations, .. } = &scn.steps[i] {
            let scaled = u64::from(*iterations) * u64::from(k);
            if scaled > PROBE_CAP {
                let at = At { scn, i, regions: &[], files: &BTreeMap::new() };
                return Err(
                    at.refuse(format!("--probe-scale {k} makes {iterations} iterations {scaled}: at most {PROBE_CAP}"))
                );
            }
            if let Step::ProbeReplyBeforeCommit { iterations, .. } = &mut scn.steps[i] {
                *iterations = scaled as u32;
            }
        }
    }
    Ok(())
}
