//! Backend, mapping manager and reference model over real sockets in one
//! process: negotiation, read-only / read-write semantics, unmap, every error
//! case, reset, memory tables, and the model's fault switches.

mod common;

use common::*;
use shmem_host::backend::{Direction, offered_protocol_features};
use shmem_host::channel::{MmapBytes, ShmemMsg, ShmemOp};
use shmem_host::files::pattern_byte;
use shmem_host::manager::{Attach, Expect, Want};
use shmem_host::memprobe::Access;
use shmem_host::model::{Faults, MODEL_BAR_BASE};
use shmem_proto::MAP_RW;

const PAGE: u64 = 0x1000;

/// The expected bytes of a region window, unwrapped (panics on Unmapped).
fn bytes(r: &Rig, shmid: u8, off: u64, len: u64) -> Vec<u8> {
    r.mgr
        .expected(shmid, off, len)
        .unwrap()
        .into_iter()
        .map(|e| match e {
            Expect::Byte(b) => b,
            Expect::Unmapped => panic!("ledger says {shmid}:{off:#x} is unmapped"),
        })
        .collect()
}

fn guest_read(r: &Rig, shmid: u8, off: u64, len: u64) -> Result<Vec<u8>, Access> {
    r.model.sync(T).unwrap();
    r.model.read(shmid, off, len).unwrap()
}

#[test]
fn negotiation_and_shmem_config_report_the_configured_regions() {
    let r = rig(vec![0x10000, 0, 0x30000]);
    assert_eq!(r.model.region_windows(), vec![(0, 0, 0x10000), (2, 0x10000, 0x30000)]);
    let rec = r.server.recorder().lock();
    assert_eq!(rec.shmem_config_requests, 1);
    assert_eq!(rec.acked_protocol_features, Some(offered_protocol_features().bits()));
    assert_eq!(rec.acked_features.map(|f| f & (1 << 32)), Some(1 << 32), "VERSION_1 acked");
    let names: Vec<&str> =
        rec.messages.iter().filter(|m| m.direction == Direction::FromFrontend).map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"SET_BACKEND_REQ_FD") && names.contains(&"GET_SHMEM_CONFIG"), "{names:?}");
    assert_eq!(rec.mem_tables.len(), 1, "guest RAM table at start");
}

/// Read-only: the host's bytes show through, a guest write is refused, the
/// mapping is r--s in /proc/self/maps and the file keeps its bytes.
fn check_readonly(faults: Faults) -> Result<(), String> {
    let mut r = rig_with(vec![0x10000], faults);
    r.mgr.create_file("ro", 0x4000).unwrap().fill(0, 0x4000, 0x50).unwrap();
    let o = r.mgr.map(0, "ro", 0, 0x2000, 0x4000, false).unwrap();
    if o.reply.ack != 0 {
        return Err(format!("read-only map refused: {o:?}"));
    }
    if guest_read(&r, 0, 0x2000, 0x4000) != Ok(bytes(&r, 0, 0x2000, 0x4000)) {
        return Err("host bytes not visible through the read-only mapping".into());
    }
    let write = r.model.write(0, 0x2000, &[0xAA; 64]).unwrap();
    let perms = maps_perms(r.model.region_addr(0).unwrap() + 0x2000).unwrap_or_default();
    let host = r.mgr.file("ro").unwrap().read(0, 64).unwrap();
    let intact = host.iter().enumerate().all(|(i, &b)| b == pattern_byte(0x50, i as u64));
    match (write, perms.as_str(), intact) {
        (Err(Access::FaultAt(0)), "r--s", true) => Ok(()),
        (w, p, i) => Err(format!("read-only not enforced: write {w:?}, maps perms {p:?}, host file intact {i}")),
    }
}

#[test]
fn readonly_map_shows_host_bytes_and_refuses_writes() {
    check_readonly(Faults::default()).unwrap();
}

#[test]
fn readonly_check_catches_a_frontend_that_ignores_the_flag() {
    let err = check_readonly(Faults { ignore_readonly: true, ..Faults::default() }).unwrap_err();
    assert!(err.contains("read-only not enforced"), "{err}");
}

#[test]
fn readwrite_map_carries_bytes_both_ways_with_fd_offset_in_two_regions() {
    let mut r = rig(vec![0x10000, 0x10000]);
    r.mgr.create_file("f", 0x8000).unwrap().fill(0, 0x8000, 3).unwrap();
    assert_eq!(r.mgr.map(0, "f", 0x2000, 0x1000, 0x2000, true).unwrap().reply.ack, 0);
    assert_eq!(r.mgr.map(1, "f", 0x6000, 0x8000, 0x1000, true).unwrap().reply.ack, 0);
    assert_eq!(guest_read(&r, 0, 0x1000, 0x2000).unwrap(), bytes(&r, 0, 0x1000, 0x2000));
    assert_eq!(guest_read(&r, 1, 0x8000, 0x1000).unwrap(), r.mgr.file("f").unwrap().read(0x6000, 0x1000).unwrap());
    // Guest -> host: a write at region 0 offset 0x1800 lands in the file at 0x2800.
    r.model.write(0, 0x1800, b"guest-wrote-this").unwrap().unwrap();
    assert_eq!(r.mgr.file("f").unwrap().read(0x2800, 16).unwrap(), b"guest-wrote-this");
    // Host -> guest, seen in region 1 through fd_offset 0x6000.
    r.mgr.file("f").unwrap().write(0x6010, b"host-wrote-this").unwrap();
    assert_eq!(r.model.read(1, 0x8010, 15).unwrap().unwrap(), b"host-wrote-this");
    // Each mapping only in its own window.
    assert!(r.model.read(0, 0x8000, 16).unwrap().is_err());
    assert!(r.model.read(1, 0x1000, 16).unwrap().is_err());
    assert_eq!(maps_perms(r.model.region_addr(0).unwrap() + 0x1000).as_deref(), Some("rw-s"));
}

#[test]
fn unmap_makes_the_range_inaccessible_and_remap_elsewhere_works() {
    let mut r = rig(vec![0x10000]);
    r.mgr.create_file("u", 0x4000).unwrap().fill(0, 0x4000, 9).unwrap();
    assert_eq!(r.mgr.map(0, "u", 0, 0, 0x2000, true).unwrap().reply.ack, 0);
    assert!(guest_read(&r, 0, 0, 0x2000).is_ok());
    assert_eq!(r.mgr.unmap(0, 0, 0x2000).unwrap().reply.ack, 0);
    assert_eq!(guest_read(&r, 0, 0, 16), Err(Access::FaultAt(0)));
    assert_eq!(maps_perms(r.model.region_addr(0).unwrap()).as_deref(), Some("---p"));
    assert!(r.mgr.ledger().is_empty());
    assert_eq!(r.mgr.map(0, "u", 0x1000, 0x6000, 0x3000, false).unwrap().reply.ack, 0);
    assert_eq!(guest_read(&r, 0, 0x6000, 0x3000).unwrap(), bytes(&r, 0, 0x6000, 0x3000));
    assert_eq!(r.mgr.expected(0, 0, 1).unwrap(), vec![Expect::Unmapped]);
}

struct Case {
    name: &'static str,
    op: ShmemOp,
    msg: ShmemMsg,
    fd: bool,
    errno: i32,
}

fn case(name: &'static str, op: ShmemOp, msg: ShmemMsg, fd: bool, errno: i32) -> Case {
    Case { name, op, msg, fd, errno }
}

fn map(shmid: u8, fd_offset: u64, shm_offset: u64, len: u64, flags: u64) -> ShmemMsg {
    ShmemMsg { shmid, fd_offset, shm_offset, len, flags }
}

/// Every rejection: ack 1 (as QEMU), the model's errno, and nothing changes.
fn check_error_cases(faults: Faults) -> Result<(), String> {
    // Region 0: 64 KiB; shmid 1: unused (size 0); region 2: 64 KiB.
    let mut r = rig_with(vec![0x10000, 0, 0x10000, 0x20000], faults);
    r.mgr.create_file("e", 0x8000).unwrap().fill(0, 0x8000, 0x11).unwrap();
    // An existing mapping at 0x4000..0x8000 of region 0.
    assert_eq!(r.mgr.map(0, "e", 0, 0x4000, 0x4000, true).unwrap().reply.ack, 0);
    let cases = [
        case("no fd", ShmemOp::Map, map(0, 0, 0, PAGE, 0), false, libc::EBADF),
        case("unknown shmid", ShmemOp::Map, map(9, 0, 0, PAGE, 0), true, libc::EFAULT),
        case("zero-sized shmid", ShmemOp::Map, map(1, 0, 0, PAGE, 0), true, libc::EFAULT),
        case("past region end", ShmemOp::Map, map(0, 0, 0xF000, 0x2000, 0), true, libc::EFAULT),
        case("offset overflow", ShmemOp::Map, map(0, 0, u64::MAX - 0xFFF, 0x2000, 0), true, libc::EFAULT),
        case("identical overlap", ShmemOp::Map, map(0, 0, 0x4000, 0x4000, 0), true, libc::EFAULT),
        case("partial overlap", ShmemOp::Map, map(0, 0, 0x2000, 0x4000, 0), true, libc::EFAULT),
        case("contained overlap", ShmemOp::Map, map(0, 0, 0x5000, 0x1000, 0), true, libc::EFAULT),
        case("len 0", ShmemOp::Map, map(0, 0, 0, 0, 0), true, libc::EINVAL),
        // Inside the existing mapping: still a zero length (the spec's "valid region"), never an overlap (QEMU 11.1.3's answer).
        case("len 0 inside a mapping", ShmemOp::Map, map(0, 0, 0x5000, 0, 0), true, libc::EINVAL),
        case("past file end", ShmemOp::Map, map(0, 0x6000, 0, 0x4000, 0), true, libc::EINVAL),
        case("unmap part of a mapping", ShmemOp::Unmap, map(0, 0, 0x4000, 0x1000, 0), false, libc::EFAULT),
        case("unmap never mapped", ShmemOp::Unmap, map(0, 0, 0x8000, 0x1000, 0), false, libc::EFAULT),
        case("unmap unknown shmid", ShmemOp::Unmap, map(7, 0, 0, 0x1000, 0), false, libc::EFAULT),
    ];
    for c in &cases {
        let attach = if c.fd { Attach::File("e") } else { Attach::None };
        let o = r.mgr.send(c.op, c.msg, attach, Want::Refuse).map_err(|e| format!("{}: {e}", c.name))?;
        r.model.sync(T).map_err(|e| e.to_string())?;
        let served = r.model.served_since(0).pop().ok_or("model served nothing")?;
        let errno = served.result.err().map(|rej| rej.errno);
        if o.reply.ack != 1 || errno != Some(c.errno) {
            return Err(format!("{}: ack {} (want 1), model errno {errno:?} (want {})", c.name, o.reply.ack, c.errno));
        }
        if r.model.mappings().len() != 1 {
            return Err(format!("{}: state changed after a rejected request: {:?}", c.name, r.model.mappings()));
        }
        if guest_read(&r, 0, 0x4000, 0x4000) != Ok(bytes(&r, 0, 0x4000, 0x4000)) {
            return Err(format!("{}: the existing mapping no longer reads correctly", c.name));
        }
    }
    Ok(())
}

#[test]
fn every_error_case_gets_its_ack_and_changes_nothing() {
    check_error_cases(Faults::default()).unwrap();
}

#[test]
fn error_cases_catch_a_frontend_that_skips_the_overlap_check() {
    let err = check_error_cases(Faults { skip_overlap_check: true, ..Faults::default() }).unwrap_err();
    assert!(err.starts_with("identical overlap: ack 0"), "{err}");
}

#[test]
fn accepted_malformed_flags_are_recorded_not_hidden() {
    // Unknown flag bits are not in QEMU's checks; the model follows QEMU and
    // uses only bit 0. The ledger records an acceptance that fits it.
    let mut r = rig(vec![0x10000]);
    r.mgr.create_file("g", 0x1000).unwrap();
    let o = r.mgr.send(ShmemOp::Map, map(0, 0, 0, PAGE, 0x80 | MAP_RW), Attach::File("g"), Want::Either).unwrap();
    assert_eq!(o.reply.ack, 0);
    assert_eq!(r.mgr.ledger().len(), 1);
    assert!(r.mgr.ledger()[0].rw);
}

/// Reset drops every mapping and the model's dup'd fds.
fn check_reset(faults: Faults) -> Result<(), String> {
    let mut r = rig_with(vec![0x10000], faults);
    // File names are unique per call: fds are counted process-wide.
    let tag = format!("{:016x}", shmem_host::files::fnv1a64(format!("{faults:?}").as_bytes()));
    let (a, b) = (&format!("reset-a-{tag}"), &format!("reset-b-{tag}"));
    r.mgr.create_file(a, 0x2000).unwrap();
    r.mgr.create_file(b, 0x2000).unwrap();
    let base = (fds_naming(a), fds_naming(b));
    assert_eq!(r.mgr.map(0, a, 0, 0, 0x2000, true).unwrap().reply.ack, 0);
    assert_eq!(r.mgr.map(0, b, 0, 0x4000, 0x2000, false).unwrap().reply.ack, 0);
    assert_eq!(r.mgr.unmap(0, 0x4000, 0x2000).unwrap().reply.ack, 0);
    assert_eq!(r.mgr.map(0, b, 0, 0x8000, 0x2000, false).unwrap().reply.ack, 0);
    r.model.sync(T).map_err(|e| e.to_string())?;
    r.model.reset().map_err(|e| e.to_string())?;
    r.mgr.forget_all();
    for off in [0, 0x8000] {
        if guest_read(&r, 0, off, 16).is_ok() {
            return Err(format!("offset {off:#x} still readable after reset"));
        }
    }
    // Re-initialise the device as a guest would (DRIVER_OK again): the new
    // memory table (guest RAM only) makes the backend drop its own copies,
    // so only fds the frontend kept remain above the baseline.
    let tables = r.server.recorder().lock().mem_tables.len();
    r.model.start().map_err(|e| e.to_string())?;
    if !r.server.recorder().wait_for(T, |x| x.mem_tables.len() > tables) {
        return Err("no memory table after re-init".into());
    }
    let after = (fds_naming(a), fds_naming(b));
    if after != base {
        return Err(format!("fd count after reset {after:?}, before mapping {base:?}: the frontend leaked fds"));
    }
    if !r.model.mappings().is_empty() {
        return Err("mappings survived reset".into());
    }
    Ok(())
}

#[test]
fn reset_drops_all_mappings_and_returns_the_fd_count() {
    check_reset(Faults::default()).unwrap();
}

#[test]
fn reset_check_catches_a_frontend_that_keeps_fds() {
    let err = check_reset(Faults { keep_fd_after_unmap: true, ..Faults::default() }).unwrap_err();
    assert!(err.contains("leaked fds"), "{err}");
}

#[test]
fn memory_table_follows_map_and_unmap_with_the_file_at_bar_base_plus_offset() {
    let mut r = rig(vec![0x10000, 0x10000]);
    let id = r.mgr.create_file("mt", 0x2000).unwrap().id();
    assert_eq!(r.mgr.map(1, "mt", 0x1000, 0x3000, 0x1000, false).unwrap().reply.ack, 0);
    let want = MODEL_BAR_BASE + 0x10000 + 0x3000;
    let rec = r.server.recorder();
    let found = rec.wait_for(T, |x| {
        x.mem_tables.last().is_some_and(|t| {
            t.regions
                .iter()
                .any(|m| m.guest_addr == want && m.size == 0x1000 && m.file == Some(id) && m.file_offset == 0x1000)
        })
    });
    assert!(found, "mapping not in the memory table: {:?}", rec.lock().mem_tables.last());
    assert_eq!(r.mgr.unmap(1, 0x3000, 0x1000).unwrap().reply.ack, 0);
    let gone = rec.wait_for(T, |x| x.mem_tables.last().is_some_and(|t| t.regions.iter().all(|m| m.file != Some(id))));
    assert!(gone, "unmapped file still in the memory table");
}

#[test]
fn a_read_only_fd_can_be_mapped_read_only_but_not_read_write() {
    let mut r = rig(vec![0x10000]);
    r.mgr.create_file("rofd", 0x1000).unwrap().fill(0, 0x1000, 1).unwrap();
    let raw = r.mgr.file("rofd").unwrap().file().try_clone().unwrap();
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&raw));
    let ro = std::fs::File::open(path).unwrap();
    let chan = r.server.channel(T).unwrap();
    let body = map(0, 0, 0, PAGE, 0).to_bytes();
    let reply = chan.request(ShmemOp::Map, &body, Some(std::os::fd::AsRawFd::as_raw_fd(&ro))).unwrap();
    assert_eq!(reply.ack, 0, "spec: a read-only mapping needs only read access");
    let body = map(0, 0, 0x4000, PAGE, MAP_RW).to_bytes();
    let reply = chan.request(ShmemOp::Map, &body, Some(std::os::fd::AsRawFd::as_raw_fd(&ro))).unwrap();
    assert_eq!(reply.ack, 1);
    r.model.sync(T).unwrap();
    assert_eq!(r.model.served_since(0).last().unwrap().result.unwrap_err().errno, libc::EACCES);
}

#[test]
fn a_map_before_the_device_is_started_is_refused_not_fatal() {
    let mut r = rig(vec![0x10000]);
    r.mgr.create_file("early", 0x1000).unwrap();
    r.model.reset().unwrap();
    let o = r.mgr.map(0, "early", 0, 0, 0x1000, false).unwrap();
    assert_eq!(o.reply.ack, 1);
    r.model.sync(T).unwrap();
    assert_eq!(r.model.served_since(0).last().unwrap().result.unwrap_err().errno, libc::ENODEV);
    r.model.start().unwrap();
    assert_eq!(r.mgr.map(0, "early", 0, 0, 0x1000, false).unwrap().reply.ack, 0);
}
