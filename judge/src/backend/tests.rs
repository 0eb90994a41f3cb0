use super::*;
use record::FrameSeen;

fn frame(sequence: u32, mismatch: Option<(usize, u8, u8)>) -> FrameSeen {
    FrameSeen { index: sequence % 4, sequence, shm_offset: 0, mismatch, unreadable: None }
}

fn frames_check(frames: Vec<FrameSeen>) -> CheckResult {
    let rec = SessionRecord {
        media: true,
        captures: true,
        offered: Some((0, 1 << SHMEM_BIT)),
        regions: vec![1 << 32],
        frames,
        ..SessionRecord::default()
    };
    judge(&rec).into_iter().find(|c| c.check == "frames").expect("a frames check")
}

#[test]
fn frames_fail_on_a_wrong_byte_a_sequence_that_does_not_advance_or_none_at_all() {
    assert!(frames_check(vec![frame(0, None), frame(1, None)]).passed);
    let wrong = frames_check(vec![frame(0, None), frame(1, Some((10, 1, 7)))]);
    assert!(!wrong.passed && wrong.evidence.contains("byte 10 is 0x07"), "{wrong:?}");
    assert!(!frames_check(vec![frame(2, None), frame(2, None)]).passed);
    assert!(!frames_check(Vec::new()).passed);
}

#[test]
fn a_hang_names_what_each_side_was_waiting_for() {
    let hung = Step {
        what: "MMAP #7".into(),
        expect: record::Expect::Success,
        outcome: Err(MediaError::Timeout("no answer".into())),
    };
    let secs = std::time::Duration::from_secs;
    let waits = record::Waiting {
        frontend: Some(("SET_MEM_TABLE".into(), secs(2))),
        backend: Some(("SHMEM_UNMAP".into(), secs(2))),
    };
    let rec =
        SessionRecord { media: true, steps: vec![hung], waiting_at_timeout: Some(waits), ..SessionRecord::default() };
    let c = judge(&rec).into_iter().find(|c| c.check == "no-deadlock").expect("a no-deadlock check");
    assert!(
        !c.passed
            && c.facts["frontend_waiting_for"] == "SET_MEM_TABLE"
            && c.facts["backend_waiting_for"] == "SHMEM_UNMAP",
        "{c:?}"
    );
    assert!(c.evidence.contains("the backend was waiting 2.0 s for the frontend's answer to SHMEM_UNMAP"), "{c:?}");
    let model_only = SessionRecord {
        waiting_at_timeout: Some(record::Waiting { frontend: Some(("SET_MEM_TABLE".into(), secs(2))), backend: None }),
        ..rec
    };
    let c = judge(&model_only).into_iter().find(|c| c.check == "no-deadlock").expect("a no-deadlock check");
    assert!(!c.facts.contains_key("backend_waiting_for"), "{c:?}");
}

#[test]
fn a_refusal_no_driver_step_met_fails_error_reported() {
    let rec = SessionRecord {
        media: true,
        refused_map: Some(2),
        offered: Some((0, 1 << SHMEM_BIT)),
        regions: vec![1 << 32],
        ..SessionRecord::default()
    };
    let c = judge(&rec).into_iter().find(|c| c.check == "error-reported").expect("an error-reported check");
    assert!(!c.passed && c.evidence.contains("never tested"), "{c:?}");
}

#[test]
fn all_unmapped_fails_when_what_the_frontend_holds_was_not_read() {
    let rec = |held| SessionRecord {
        offered: Some((0, 1 << SHMEM_BIT)),
        regions: vec![1 << 32],
        live_at_end: held,
        ..SessionRecord::default()
    };
    let check =
        |r: &SessionRecord| judge(r).into_iter().find(|c| c.check == "all-unmapped").expect("an all-unmapped check");
    assert!(check(&rec(HeldAtEnd::Read(0))).passed);
    assert!(!check(&rec(HeldAtEnd::Read(1))).passed);
    let unread = check(&rec(HeldAtEnd::Unread("QEMU's /proc: permission denied".into())));
    assert!(
        !unread.passed && unread.facts["left"] == "unknown" && unread.evidence.contains("permission denied"),
        "{unread:?}"
    );
    // A record nobody filled in is no evidence either.
    assert!(!check(&SessionRecord { live_at_end: HeldAtEnd::default(), ..rec(HeldAtEnd::Read(0)) }).passed);
}

#[test]
fn no_request_to_check_is_no_pass() {
    let rec = SessionRecord {
        offered: Some((0, 1 << SHMEM_BIT)),
        regions: vec![1 << 32],
        live_at_end: HeldAtEnd::Read(0),
        ..SessionRecord::default()
    };
    let checks = judge(&rec);
    let find =
        |name: &str| checks.iter().find(|c| c.check == name).unwrap_or_else(|| panic!("a {name} check: {checks:?}"));
    let c = find("map-valid");
    assert!(!c.passed && c.facts["problem"] == "none sent" && c.evidence.contains("nothing to check"), "{c:?}");
    // No unmap, nothing accepted to look for in a table: neither judged, so neither passes.
    let relayed = judge(&SessionRecord { wire_lags: Some(Vec::new()), ..rec });
    assert!(!relayed.iter().any(|c| c.check == "unmap-valid" || c.check == "reaches-memory-table"), "{relayed:?}");
}
