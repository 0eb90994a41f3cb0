//! What a backend session's record means, check by check: the session
//! recorded what the backend asked and what the driver saw (`record`); this
//! replays the requests against the advertised regions and decides. The
//! same checks whoever recorded the session.

pub mod record;
pub mod wire;

use shmem_proto::{MAP_RW, PAGE_SIZE, ShmemMsg, ShmemOp};
use shmem_virtio_media::driver::MediaError;

use crate::check::{CheckResult, said_fact};
use record::{Expect, HeldAtEnd, Served, SessionRecord, Step};

/// SHMEM in the vhost-user spec and QEMU 11.1; bit 21 is GPA_ADDRESSES.
pub const SHMEM_BIT: u32 = 22;
const GPA_ADDRESSES_BIT: u32 = 21;

/// Every check a session's record supports.
pub fn judge(rec: &SessionRecord) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    if !rec.frontend_unseen {
        checks.push(negotiation(rec));
    }
    if let Some(e) = &rec.connect_error {
        checks.push(
            CheckResult::new("connect", false, format!("the frontend could not set the backend up: {e}"))
                .with("said", said_fact(e)),
        );
        return checks;
    }
    let hung = rec.steps.iter().any(timed_out);
    let ended = reached_its_end(rec);
    if !rec.frontend_unseen {
        checks.push(shmem_config(&rec.regions));
        let replay = Replay::of(rec);
        checks.push(problems_check("map-valid", "SHMEM_MAP", replay.maps, &replay.map_problems));
        // No unmap at all is no evidence of valid unmaps, and no fault either: an unmap owed
        // (a mapping left live at the end) fails `all-unmapped`; after a reset, or with every
        // map refused, none is owed. The check is then not judged, never passed.
        if replay.unmaps > 0 {
            checks.push(problems_check("unmap-valid", "SHMEM_UNMAP", replay.unmaps, &replay.unmap_problems));
        }
        if ended {
            checks.push(all_unmapped(&replay.live, rec));
        }
    }
    match rec.memfds.as_ref().filter(|_| ended) {
        Some(Ok((before, after))) => {
            let ok = after <= before;
            checks.push(
                CheckResult::new(
                    "buffer-fds-released",
                    ok,
                    format!("the backend held {before} memfds before OPEN and {after} after CLOSE"),
                )
                .with("left", after.saturating_sub(*before) as u64),
            );
        }
        Some(Err(why)) => checks.push(
            CheckResult::new("buffer-fds-released", false, format!("the backend's memfds could not be counted: {why}"))
                .with("left", "unknown"),
        ),
        None => {}
    }
    if rec.media {
        if rec.captures && !hung {
            checks.push(frames(rec));
        }
        checks.extend(steps(rec, hung));
    }
    // After a hang the last requests' tables are the hang's to answer for
    // (seen: the model, freed at shut-down, acks the request it left
    // waiting and can send no table any more).
    // Nothing accepted to look for (every map refused, read-only fds only): not judged, never passed.
    if let Some(lags) = rec.wire_lags.as_ref().filter(|l| !hung && !l.is_empty()) {
        checks.push(wire::reaches_table_check(lags));
    }
    let alive = rec.dead.is_none();
    checks.push(CheckResult::new(
        "backend-alive",
        alive,
        rec.dead.clone().map_or_else(
            || "the backend was running and answering at the end".into(),
            |d| format!("the backend is gone: {d}"),
        ),
    ));
    checks
}

/// Whether what a session left at its end is the backend's to answer for
/// (`all-unmapped`, `buffer-fds-released`): not after a hang (the session
/// never reached its end), nor once the frontend closed the channel
/// (nothing can be unmapped then).
pub fn reached_its_end(rec: &SessionRecord) -> bool {
    !rec.steps.iter().any(timed_out) && !rec.channel_closed
}

fn negotiation(rec: &SessionRecord) -> CheckResult {
    let Some((_, proto)) = rec.offered else {
        return CheckResult::new("negotiation", false, "the backend never said which protocol features it offers")
            .with("shmem_bit", "none");
    };
    let has = |bit: u32| proto & (1 << bit) != 0;
    let (ok, bit, what) = match (has(SHMEM_BIT), has(GPA_ADDRESSES_BIT)) {
        (true, _) => (true, "22", format!("SHMEM offered at bit {SHMEM_BIT} (protocol features {proto:#x})")),
        (false, true) => (
            false,
            "21",
            format!(
                "SHMEM is not offered at bit {SHMEM_BIT}, and bit 21 (GPA_ADDRESSES) is: the old vhost 0.16 bit; QEMU 11.1 will not map for it (protocol features {proto:#x})"
            ),
        ),
        (false, false) => (false, "none", format!("SHMEM is not offered (protocol features {proto:#x})")),
    };
    CheckResult::new("negotiation", ok, what).with("shmem_bit", bit)
}

fn shmem_config(regions: &[u64]) -> CheckResult {
    let bad: Vec<String> = regions
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_multiple_of(PAGE_SIZE))
        .map(|(i, s)| format!("shmid {i}: {s:#x}"))
        .collect();
    let used = regions.iter().filter(|&&s| s > 0).count();
    let ok = used > 0 && bad.is_empty();
    let what = if ok {
        format!("{used} region(s): {}", sizes_text(regions))
    } else if used == 0 {
        "GET_SHMEM_CONFIG reported no region".into()
    } else {
        format!("region sizes not page multiples: {}", bad.join(", "))
    };
    CheckResult::new("shmem-config", ok, what).with("regions", used as u64)
}

fn sizes_text(regions: &[u64]) -> String {
    regions
        .iter()
        .enumerate()
        .filter(|(_, s)| **s > 0)
        .map(|(i, s)| format!("shmid {i} {s:#x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The backend's requests replayed: what was live, what was wrong.
struct Replay {
    maps: usize,
    unmaps: usize,
    live: Vec<ShmemMsg>,
    map_problems: Vec<(String, &'static str)>,
    unmap_problems: Vec<(String, &'static str)>,
}

impl Replay {
    fn of(rec: &SessionRecord) -> Self {
        let mut r =
            Replay { maps: 0, unmaps: 0, live: Vec::new(), map_problems: Vec::new(), unmap_problems: Vec::new() };
        for (i, s) in rec.served.iter().enumerate() {
            if rec.resets.contains(&i) {
                r.live.clear();
            }
            let Some(m) = s.sent.msg else {
                r.map_problems
                    .push((format!("request {i} ({})", served_text(s)), "payload is not a 40-byte SHMEM message"));
                continue;
            };
            if s.sent.request == ShmemOp::Map.code() {
                r.maps += 1;
                if let Some(p) = map_problem(&m, s, &rec.regions, &r.live, rec.asked_rw) {
                    r.map_problems.push((format!("SHMEM_MAP {m}"), p));
                }
                if s.accepted {
                    r.live.push(m);
                }
            } else if s.sent.request == ShmemOp::Unmap.code() {
                r.unmaps += 1;
                match r.live.iter().position(|l| (l.shmid, l.shm_offset, l.len) == (m.shmid, m.shm_offset, m.len)) {
                    Some(at) => drop(r.live.remove(at)),
                    None if r.live.iter().any(|l| {
                        l.shmid == m.shmid && shmem_proto::overlaps((l.shm_offset, l.len), (m.shm_offset, m.len))
                    }) =>
                    {
                        r.unmap_problems
                            .push((format!("SHMEM_UNMAP {m}"), "covers part of a live mapping, not exactly one"));
                    }
                    None => r.unmap_problems.push((
                        format!("SHMEM_UNMAP {m}"),
                        "is not a live mapping (never mapped, unmapped already, or dropped by a reset)",
                    )),
                }
            }
        }
        if rec.resets.iter().any(|&at| at >= rec.served.len()) {
            r.live.clear();
        }
        r
    }
}

/// The first rule a map breaks, in the order a frontend checks them.
fn map_problem(m: &ShmemMsg, s: &Served, regions: &[u64], live: &[ShmemMsg], asked_rw: bool) -> Option<&'static str> {
    let size = regions.get(usize::from(m.shmid)).copied().filter(|&z| z > 0);
    let rw = m.flags & MAP_RW != 0;
    let checks: [(bool, &'static str); 9] = [
        (!s.sent.with_fd, "no fd"),
        (size.is_none(), "shmid not advertised"),
        (m.shm_offset.checked_add(m.len).is_none_or(|end| end > size.unwrap_or(0)), "outside the region"),
        (m.len == 0, "zero length"),
        (![m.shm_offset, m.fd_offset, m.len].iter().all(|v| v.is_multiple_of(PAGE_SIZE)), "not page aligned"),
        (m.flags & !MAP_RW != 0, "unknown flags"),
        (
            live.iter()
                .any(|l| l.shmid == m.shmid && shmem_proto::overlaps((l.shm_offset, l.len), (m.shm_offset, m.len))),
            "overlaps a live mapping",
        ),
        (
            s.sent.fd_size.is_some_and(|z| m.fd_offset.checked_add(m.len).is_none_or(|end| end > z)),
            "past the end of its fd",
        ),
        (rw && s.sent.fd_rw == Some(false), "read-write map of a read-only fd"),
    ];
    checks.iter().find(|(bad, _)| *bad).map(|(_, p)| *p).or_else(|| {
        (rw != asked_rw).then_some(if rw {
            "writable where the driver asked read-only"
        } else {
            "read-only where the driver asked writable"
        })
    })
}

/// `map-valid` / `unmap-valid`: every request of its kind valid; none at
/// all is no evidence, and fails (`problem = "none sent"`): every session
/// maps buffers (`unmap-valid` is not judged without an unmap, see `judge`).
fn problems_check(name: &str, what: &str, total: usize, problems: &[(String, &'static str)]) -> CheckResult {
    if total == 0 {
        return CheckResult::new(name, false, format!("the backend sent no {what} request: nothing to check"))
            .with("invalid", 0u64)
            .with("problem", "none sent");
    }
    let evidence = match problems.first() {
        None => format!("all {total} {what} requests valid"),
        Some((req, p)) => {
            let more = if problems.len() > 1 { format!(" (and {} more)", problems.len() - 1) } else { String::new() };
            format!("{} of {total} {what} requests invalid; first: {req}: {p}{more}", problems.len())
        }
    };
    let mut c = CheckResult::new(name, problems.is_empty(), evidence).with("invalid", problems.len() as u64);
    if let Some((_, p)) = problems.first() {
        c = c.with("problem", *p);
    }
    c
}

/// `all-unmapped`: nothing the backend's requests left mapped, and nothing
/// the frontend still holds; when what the frontend holds could not be
/// read, it fails saying so (no evidence is no pass).
fn all_unmapped(live: &[ShmemMsg], rec: &SessionRecord) -> CheckResult {
    let left: Vec<String> = live.iter().map(ToString::to_string).collect();
    let frontend = match &rec.live_at_end {
        HeldAtEnd::Read(n) => *n,
        HeldAtEnd::Unread(why) => {
            return CheckResult::new(
                "all-unmapped",
                false,
                format!("what the frontend still holds at the end could not be read: {why}"),
            )
            .with("left", "unknown");
        }
    };
    let ok = left.is_empty() && frontend == 0;
    let what = if ok {
        "nothing the backend mapped is left mapped at the end".to_string()
    } else {
        format!("left mapped at the end: {} (the frontend holds {frontend})", left.join("; "))
    };
    CheckResult::new("all-unmapped", ok, what).with("left", left.len().max(frontend) as u64)
}

fn frames(rec: &SessionRecord) -> CheckResult {
    let bad = rec.frames.iter().find(|f| f.mismatch.is_some() || f.unreadable.is_some());
    let seqs: Vec<u32> = rec.frames.iter().map(|f| f.sequence).collect();
    let advancing = seqs.windows(2).all(|w| w[1] > w[0]);
    let (ok, what, problem) = match (rec.frames.is_empty(), bad, advancing) {
        (true, _, _) => (false, "no frame was read through a mapping".to_string(), "none"),
        (_, Some(f), _) => match (&f.unreadable, f.mismatch) {
            (Some(u), _) => (
                false,
                format!("frame of buffer {} (sequence {}) at {:#x}: {u}", f.index, f.sequence, f.shm_offset),
                "unreadable",
            ),
            (None, Some((at, want, got))) => (
                false,
                format!(
                    "frame of buffer {} (sequence {}) at {:#x}: byte {at} is {got:#04x}, the pattern says {want:#04x}",
                    f.index, f.sequence, f.shm_offset
                ),
                "pattern",
            ),
            (None, None) => unreachable!("a bad frame has a mismatch or is unreadable"),
        },
        (_, None, false) => (false, format!("sequence numbers do not advance: {seqs:?}"), "sequence"),
        (_, None, true) => (
            true,
            format!("{} frames read through the mappings match the pattern, sequences {seqs:?}", rec.frames.len()),
            "none",
        ),
    };
    CheckResult::new("frames", ok, what).with("frames", rec.frames.len() as u64).with("problem", problem)
}

/// `driver-steps` (every step expected to succeed did) and, where the
/// variant injected a fault, `error-reported` (the driver got an errno, in time).
fn steps(rec: &SessionRecord, hung: bool) -> Vec<CheckResult> {
    let text = |s: &Step| match &s.outcome {
        Ok(d) => format!("{}: ok {d}", s.what),
        Err(e) => format!("{}: {e}", s.what),
    };
    // A step not sent because an earlier one timed out is the hang's doing: no-deadlock names it.
    let failed = rec.steps.iter().find(|s| {
        s.expect == Expect::Success
            && s.outcome.is_err()
            && !timed_out(s)
            && !matches!(s.outcome, Err(MediaError::Stale(_)))
    });
    let mut out = vec![match failed {
        None => CheckResult::new("driver-steps", true, format!("{} driver steps as expected", rec.steps.len())),
        Some(s) => {
            let c = CheckResult::new("driver-steps", false, text(s))
                .with("step", s.what.as_str())
                .with("outcome", outcome_kind(&s.outcome));
            match &s.outcome {
                Err(MediaError::Errno(_, n)) => c.with("errno", n.to_string()),
                _ => c,
            }
        }
    }];
    out.push(no_deadlock(rec));
    let faulted: Vec<&Step> = rec.steps.iter().filter(|s| s.expect == Expect::Errno).collect();
    if let (Some(k), true, false) = (rec.refused_map, faulted.is_empty(), hung) {
        let maps = rec.served.iter().filter(|s| s.sent.request == ShmemOp::Map.code()).count();
        let evidence = if maps < k {
            format!(
                "the frontend was to refuse SHMEM_MAP #{k}, but the backend sent only {maps}: the refusal was never tested"
            )
        } else {
            format!(
                "the frontend refused SHMEM_MAP #{k}, but no MMAP the driver sent asked for it: the refusal reached no driver step, so nothing was tested"
            )
        };
        out.push(CheckResult::new("error-reported", false, evidence).with("step", "none").with("outcome", "untested"));
    }
    if !faulted.is_empty() && !hung {
        let wrong = faulted.iter().find(|s| !matches!(s.outcome, Err(MediaError::Errno(..))));
        out.push(match wrong {
            None => {
                CheckResult::new("error-reported", true, faulted.iter().map(|s| text(s)).collect::<Vec<_>>().join("; "))
            }
            Some(s) => CheckResult::new("error-reported", false, format!("expected an errno: {}", text(s)))
                .with("step", s.what.as_str())
                .with("outcome", outcome_kind(&s.outcome)),
        });
    }
    out
}

/// SHMEM requests the frontend answered: each one a chance for the hang.
fn requests(rec: &SessionRecord) -> usize {
    rec.served
        .iter()
        .filter(|s| s.sent.request == ShmemOp::Map.code() || s.sent.request == ShmemOp::Unmap.code())
        .count()
}

fn served_text(s: &Served) -> String {
    let name = if s.sent.request == ShmemOp::Map.code() {
        "SHMEM_MAP".to_string()
    } else if s.sent.request == ShmemOp::Unmap.code() {
        "SHMEM_UNMAP".to_string()
    } else {
        format!("backend request {}", s.sent.request)
    };
    s.sent.msg.map_or(name.clone(), |m| format!("{name} {m}"))
}

pub(crate) fn timed_out(s: &Step) -> bool {
    matches!(s.outcome, Err(MediaError::Timeout(_)))
}

/// No driver step went unanswered. A timed-out step names the frontend
/// message the backend left unanswered when the frontend was stuck on one.
fn no_deadlock(rec: &SessionRecord) -> CheckResult {
    let Some(first) = rec.steps.iter().find(|s| timed_out(s)) else {
        let seen = if rec.frontend_unseen {
            "the frontend's side is not in view".to_string()
        } else {
            format!("{} SHMEM requests", requests(rec))
        };
        // A churn says how far it went and how fast.
        let churned = rec
            .steps
            .iter()
            .find(|s| s.what.contains("MMAP/MUNMAP cycles in"))
            .map(|s| format!("; {}", s.what))
            .unwrap_or_default();
        return CheckResult::new(
            "no-deadlock",
            true,
            format!("every driver step was answered in time ({seen}){churned}"),
        )
        .with("n", requests(rec) as u64);
    };
    let timeouts = rec.steps.iter().filter(|s| timed_out(s)).count();
    let waits = rec.waiting_at_timeout.clone().unwrap_or_default();
    let (waiting, how_long) = match &waits.frontend {
        Some((w, d)) => (w.as_str(), format!(" for {:.1} s", d.as_secs_f64())),
        None => ("nothing", String::new()),
    };
    let backend = waits
        .backend
        .as_ref()
        .map(|(w, d)| format!("; the backend was waiting {:.1} s for the frontend's answer to {w}", d.as_secs_f64()))
        .unwrap_or_default();
    let last = rec
        .served
        .last()
        .map(|s| format!("; the backend's last request the frontend answered: {}", served_text(s)))
        .unwrap_or_default();
    let evidence = format!(
        "{}: no answer; {timeouts} step(s) timed out; the frontend was waiting{how_long} for the backend to answer {waiting}{backend}{last}; the checks of a session's end, and whether its tables reached the backend, are not judged after a hang",
        first.what
    );
    let check = CheckResult::new("no-deadlock", false, evidence)
        .with("step_kind", first.what.split_whitespace().next().unwrap_or(""))
        .with("frontend_waiting_for", waiting)
        .with("n", requests(rec) as u64);
    match &waits.backend {
        Some((w, _)) => check.with("backend_waiting_for", w.as_str()),
        None => check,
    }
}

fn outcome_kind(o: &Result<String, MediaError>) -> &'static str {
    match o {
        Ok(_) => "success",
        Err(MediaError::Errno(..)) => "errno",
        Err(MediaError::Timeout(_)) => "timeout",
        Err(MediaError::Malformed(_)) => "malformed",
        Err(MediaError::Full(_)) => "queue full",
        Err(MediaError::Stale(_)) => "not sent after a timeout",
    }
}

#[cfg(test)]
mod tests;
