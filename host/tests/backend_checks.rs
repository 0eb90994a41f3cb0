//! Each backend check fails on a backend wrong in its way, behind the model
//! frontend, over real sockets: the appliance's own backend with a fault
//! switch (its scripted maps), and the fake virtio-media backend with one
//! (`fake-media-backend`, a process, driven as backend-test drives any
//! backend). The correct ones pass every check.

use shmem_host::conformance::Variant;
use shmem_host::conformance::own::{OwnFault, run_own};
use shmem_host::conformance::session::{Settings, run_media};
use shmem_judge::backend::judge;
use shmem_judge::check::CheckResult;

fn checks(fault: OwnFault) -> Vec<CheckResult> {
    let dir = tempfile::tempdir().expect("temp dir");
    let rec = run_own(fault, dir.path(), &Settings::default());
    judge(&rec)
}

fn failed<'a>(checks: &'a [CheckResult], name: &str) -> &'a CheckResult {
    let c = checks.iter().find(|c| c.check == name).unwrap_or_else(|| panic!("no check {name} in {checks:?}"));
    assert!(!c.passed, "{name} should fail: {c:?}");
    c
}

fn fact(c: &CheckResult, key: &str) -> String {
    c.facts.get(key).map(ToString::to_string).unwrap_or_default()
}

#[test]
fn the_correct_own_backend_passes_every_check() {
    let all = checks(OwnFault::None);
    let names: Vec<&str> = all.iter().map(|c| c.check.as_str()).collect();
    // A scripted session without a driver: every check of the backend's requests, and its life.
    assert_eq!(names, ["negotiation", "shmem-config", "map-valid", "unmap-valid", "all-unmapped", "backend-alive"]);
    assert!(all.iter().all(|c| c.passed), "{all:?}");
}

#[test]
fn a_map_past_the_region_fails_map_valid() {
    let all = checks(OwnFault::OutsideRegion);
    assert_eq!(fact(failed(&all, "map-valid"), "problem"), "outside the region");
}

#[test]
fn an_overlapping_map_fails_map_valid() {
    let all = checks(OwnFault::Overlap);
    assert_eq!(fact(failed(&all, "map-valid"), "problem"), "overlaps a live mapping");
}

#[test]
fn a_mapping_never_unmapped_fails_all_unmapped() {
    let all = checks(OwnFault::LeakMapping);
    assert_eq!(fact(failed(&all, "all-unmapped"), "left"), "1");
    assert!(all.iter().filter(|c| c.check != "all-unmapped").all(|c| c.passed), "{all:?}");
}

#[test]
fn a_double_unmap_fails_unmap_valid() {
    let all = checks(OwnFault::DoubleUnmap);
    let c = failed(&all, "unmap-valid");
    assert!(c.evidence.contains("is not a live mapping"), "{c:?}");
}

#[test]
fn shmem_at_bit_21_fails_negotiation() {
    let all = checks(OwnFault::Bit21);
    assert_eq!(fact(failed(&all, "negotiation"), "shmem_bit"), "21");
}

/// One session of the fake virtio-media backend with `fault`, as backend-test runs a backend.
fn media_checks(fault: &str, variant: Variant, s: &Settings) -> Vec<CheckResult> {
    let dir = tempfile::tempdir().expect("temp dir");
    let command = format!("{} --socket-path {{socket}} --fault {fault}", env!("CARGO_BIN_EXE_fake-media-backend"));
    judge(&run_media(&command, variant, dir.path(), s))
}

#[test]
fn the_correct_fake_media_backend_passes_every_check_of_every_session() {
    for v in
        [Variant::Stream, Variant::RefuseMap(2), Variant::ResetMidStream, Variant::CloseChannel, Variant::Churn(20)]
    {
        let all = media_checks("none", v, &Settings::default());
        let names: Vec<&str> = all.iter().map(|c| c.check.as_str()).collect();
        let mut want = vec![
            "negotiation",
            "shmem-config",
            "map-valid",
            "unmap-valid",
            "all-unmapped",
            "buffer-fds-released",
            "frames",
            "driver-steps",
            "no-deadlock",
            "error-reported",
            "reaches-memory-table",
            "backend-alive",
        ];
        // Only a session with an injected refusal expects an errno; the churn captures nothing;
        // after a closed channel what stays mapped is the frontend's doing, and no unmap can be sent
        // (unmap-valid is not judged without one).
        want.retain(|w| match *w {
            "error-reported" => matches!(v, Variant::RefuseMap(_) | Variant::CloseChannel),
            "frames" => !matches!(v, Variant::Churn(_)),
            "all-unmapped" | "buffer-fds-released" | "unmap-valid" => v != Variant::CloseChannel,
            _ => true,
        });
        assert_eq!(names, want, "{v:?}");
        assert!(all.iter().all(|c| c.passed), "{v:?}: {all:?}");
    }
}

#[test]
fn wrong_frames_fail_frames() {
    let all = media_checks("wrong-frames", Variant::Stream, &Settings::default());
    let c = failed(&all, "frames");
    assert_eq!(fact(c, "problem"), "pattern", "{c:?}");
    assert!(c.evidence.contains("byte 1000"), "{c:?}");
}

#[test]
fn a_refused_map_reported_as_success_fails_error_reported() {
    let all = media_checks("hide-refusal", Variant::RefuseMap(2), &Settings::default());
    let c = failed(&all, "error-reported");
    assert_eq!(fact(c, "outcome"), "success", "{c:?}");
}

#[test]
fn a_five_byte_answer_fails_driver_steps_and_nothing_panics() {
    let all = media_checks("short-answer", Variant::Stream, &Settings::default());
    let c = failed(&all, "driver-steps");
    assert_eq!((fact(c, "step"), fact(c, "outcome")), ("OPEN".to_string(), "malformed".to_string()), "{c:?}");
}

#[test]
fn an_errno_on_qbuf_fails_driver_steps() {
    let all = media_checks("errno-on-qbuf", Variant::Stream, &Settings::default());
    let c = failed(&all, "driver-steps");
    assert_eq!((fact(c, "step"), fact(c, "errno")), ("QBUF 0".to_string(), "5".to_string()), "{c:?}");
}

#[test]
fn an_unanswered_streamon_fails_no_deadlock_within_the_wait() {
    let s = Settings { answer: std::time::Duration::from_secs(1), ..Settings::default() };
    let started = std::time::Instant::now();
    let all = media_checks("stall", Variant::Stream, &s);
    let c = failed(&all, "no-deadlock");
    assert_eq!(fact(c, "step_kind"), "STREAMON", "{c:?}");
    // The steps after it were not sent, and are not counted against driver-steps.
    assert!(all.iter().find(|c| c.check == "driver-steps").is_some_and(|c| c.passed), "{all:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn memfds_kept_after_close_fail_buffer_fds_released() {
    let all = media_checks("keep-memfds", Variant::Stream, &Settings::default());
    assert_eq!(fact(failed(&all, "buffer-fds-released"), "left"), "4");
}

#[test]
fn a_backend_that_exits_mid_session_fails_backend_alive() {
    let all = media_checks("exit-mid-session", Variant::Stream, &Settings::default());
    let c = failed(&all, "backend-alive");
    assert!(c.evidence.contains("exit status: 3"), "{c:?}");
}

#[test]
fn a_region_that_is_no_page_multiple_fails_shmem_config() {
    let all = media_checks("unaligned-region", Variant::Stream, &Settings::default());
    let c = failed(&all, "shmem-config");
    assert!(c.evidence.contains("0x1234"), "{c:?}");
}

#[test]
fn a_backend_that_accepts_and_never_answers_ends_in_a_verdict_in_time() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("silent-backend");
    let body = "#!/usr/bin/env python3\nimport socket, sys, time\ns = socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen(1)\nc, _ = s.accept()\ntime.sleep(600)\n";
    std::fs::write(&script, body).expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let started = std::time::Instant::now();
    let rec = run_media(&format!("{} {{socket}}", script.display()), Variant::Stream, dir.path(), &Settings::default());
    let all = judge(&rec);
    let c = failed(&all, "connect");
    assert!(c.evidence.contains("did not answer within"), "{c:?}");
    assert!(
        started.elapsed() < shmem_host::model::REPLY_TIMEOUT + std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
