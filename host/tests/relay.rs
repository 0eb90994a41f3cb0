//! The recording relay between a real frontend (the model) and a real
//! backend (the appliance's own) over real sockets: every message passes
//! byte for byte with its fds, both channels are recorded and read back as
//! the frontend's side of a session, either side may hang up, and nothing
//! is left behind.

mod common;

use std::path::Path;
use std::time::Duration;

use shmem_host::backend::Direction;
use shmem_host::manager::MappingManager;
use shmem_host::model::{Faults, ModelFrontend};
use shmem_host::relay::{Relay, RelayFaults};
use shmem_host::server::BackendServer;
use shmem_host::spec::DeviceSpec;
use shmem_judge::backend::record::SessionRecord;
use shmem_judge::backend::wire::{self, Channel, Payload, Sender};

use common::T;

const END: Duration = Duration::from_secs(5);

/// One test at a time: the leak test counts the whole process's fds and threads.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|p| p.into_inner())
}

struct Relayed {
    mgr: MappingManager,
    model: ModelFrontend,
    server: BackendServer,
    relay: Relay,
    _dir: tempfile::TempDir,
}

fn relayed(regions: Vec<u64>) -> Relayed {
    relayed_faulty(regions, RelayFaults::default())
}

fn relayed_faulty(regions: Vec<u64>, faults: RelayFaults) -> Relayed {
    relayed_with(regions, faults, Faults::default())
}

fn relayed_with(regions: Vec<u64>, faults: RelayFaults, model_faults: Faults) -> Relayed {
    let spec = DeviceSpec::new(45, 1, regions).expect("valid spec");
    let server = BackendServer::start(spec.clone()).expect("backend starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let relay =
        Relay::start_faulty(&dir.path().join("relay.sock"), server.socket_path(), faults).expect("relay listens");
    let model = ModelFrontend::connect(relay.socket_path(), 1, model_faults).expect("model connects through the relay");
    model.start().expect("model starts the device");
    let chan = server.channel(T).expect("the backend channel, through the relay");
    Relayed { mgr: MappingManager::new(spec, chan), model, server, relay, _dir: dir }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

#[test]
fn every_message_passes_unchanged_with_its_fds_and_is_recorded() {
    let _one = alone();
    let mut r = relayed(vec![0x10000]);
    r.mgr.create_file("f", 0x4000).unwrap().fill(0, 0x4000, 7).unwrap();
    assert_eq!(r.mgr.map(0, "f", 0, 0, 0x2000, true).unwrap().reply.ack, 0);
    // The mapping works end to end: the fd crossed two sockets.
    assert_eq!(r.model.read(0, 0, 0x2000).unwrap().unwrap(), r.mgr.file("f").unwrap().read(0, 0x2000).unwrap());
    assert_eq!(r.mgr.unmap(0, 0, 0x2000).unwrap().reply.ack, 0);
    r.model.sync(T).unwrap();
    let record = r.relay.record();
    // What the backend was told, message by message, is what the relay passed on.
    let told: Vec<(u32, u32, usize, usize)> = r
        .server
        .recorder()
        .lock()
        .messages
        .iter()
        .filter(|m| m.direction == Direction::FromFrontend)
        .map(|m| (m.request, m.flags, m.size, m.nfds))
        .collect();
    let passed: Vec<(u32, u32, usize, usize)> = record
        .iter()
        .filter(|m| m.channel == Channel::Main && m.sender == Sender::Frontend)
        .map(|m| (m.request, m.flags, m.size as usize, m.nfds as usize))
        .take(told.len())
        .collect();
    assert_eq!(passed, told);
    let map = record
        .iter()
        .find(|m| m.channel == Channel::Backend && m.name == "SHMEM_MAP")
        .expect("the map on the backend channel");
    assert!(
        matches!(
            map.payload,
            Payload::Shmem { len: 0x2000, fd_size: Some(0x4000), fd_rw: Some(true), file: Some(_), .. }
        ),
        "{map:?}"
    );
    assert!(record.windows(2).all(|w| w[0].at_ns <= w[1].at_ns), "the record is in time order");
    let mut rec = SessionRecord { frontend_unseen: true, ..SessionRecord::default() };
    wire::read_session(&record, &mut rec);
    assert_eq!((rec.regions.clone(), rec.served.len(), rec.frontend_unseen), (vec![0x10000], 2, false));
    assert!(rec.offered.is_some() && rec.served.iter().all(|s| s.accepted));
    // Both changes reach the backend's memory table. (Which the relay read
    // first, the model's reply or its table, is the relay's scheduling at
    // this scale: the sign of a lag under a millisecond is not asserted.)
    let c = wire::reaches_table_check(&wire::lags(&record));
    assert!(c.passed && c.facts["n"] == "2" && c.facts["none"] == "0", "{c:?}");
}

fn ends_clean(r: Relayed, close_frontend_first: bool) {
    let Relayed { mgr, mut model, server, relay, _dir } = r;
    drop(mgr);
    if close_frontend_first {
        model.shut_down(END).unwrap();
        drop(model);
    } else {
        server.shutdown().unwrap();
    }
    let socket = relay.socket_path().to_path_buf();
    let (record, ended) = relay.finish(END);
    assert!(ended.is_ok(), "{ended:?}");
    assert!(!record.is_empty());
    assert!(!Path::new(&socket).exists(), "the relay's socket is removed");
}

#[test]
fn either_side_may_hang_up_and_nothing_is_left_behind() {
    let _one = alone();
    // Warm up what the first use of each crate leaves for the process's life.
    ends_clean(relayed(vec![0x10000]), true);
    let (fds, tasks) = (open_fds(), threads());
    ends_clean(relayed(vec![0x10000]), true);
    ends_clean(relayed(vec![0x10000]), false);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!((open_fds(), threads()), (fds, tasks), "fds and threads after two relayed sessions");
}

#[test]
fn a_relay_nobody_connects_to_ends_on_finish() {
    let _one = alone();
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("r.sock"), &dir.path().join("nobody.sock")).unwrap();
    let (record, ended) = relay.finish(END);
    assert!(record.is_empty() && ended.is_ok(), "{ended:?}");
}

#[test]
fn the_relay_refuses_the_kth_map_itself_and_holds_acks_when_told() {
    let _one = alone();
    let delay = Duration::from_millis(150);
    let mut r = relayed_faulty(vec![0x10000], RelayFaults { refuse_map_number: Some(2), ack_delay: Some(delay) });
    r.mgr.create_file("f", 0x4000).unwrap();
    let first = r.mgr.map(0, "f", 0, 0, 0x1000, true).unwrap();
    assert_eq!(first.reply.ack, 0);
    assert!(first.reply.latency >= delay, "the frontend's ack was held: {:?}", first.reply.latency);
    assert_eq!(r.mgr.map(0, "f", 0, 0x2000, 0x1000, true).unwrap().reply.ack, 1, "the 2nd map is refused by the relay");
    r.model.sync(T).unwrap();
    assert_eq!((r.model.maps_served(), r.relay.maps_seen()), (1, 2), "the frontend never saw the refused map");
    let record = r.relay.record();
    assert!(
        record.iter().any(|m| m.sender == Sender::Relay && m.payload == Payload::U64 { value: 1 }),
        "the relay's own ack is recorded as its own"
    );
    let mut rec = SessionRecord::default();
    wire::read_session(&record, &mut rec);
    assert_eq!(rec.served.iter().map(|s| s.accepted).collect::<Vec<_>>(), [true, false]);
}

#[test]
fn finish_ends_a_thread_that_holds_a_reply_and_the_backend_waiting_for_it() {
    let _one = alone();
    // The frontend's ack is held far longer than finish may take.
    let r = relayed_faulty(
        vec![0x10000],
        RelayFaults { ack_delay: Some(Duration::from_secs(30)), ..RelayFaults::default() },
    );
    let Relayed { mut mgr, model, server, relay, _dir } = r;
    mgr.create_file("f", 0x4000).unwrap();
    let waiting = std::thread::spawn(move || mgr.map(0, "f", 0, 0, 0x1000, true).map(|m| m.reply.ack));
    while relay.requests_seen() == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let (_, ended) = relay.finish(Duration::from_secs(2));
    assert!(ended.is_ok() && started.elapsed() < Duration::from_secs(2), "{ended:?} after {:?}", started.elapsed());
    assert!(waiting.join().expect("the backend's wait ends").is_err(), "the held map was never answered");
    drop((model, server));
}

#[test]
fn a_backend_channel_closed_on_purpose_fails_the_next_request_and_the_relay_still_ends_clean() {
    let _one = alone();
    let mut r = relayed(vec![0x10000]);
    r.mgr.create_file("f", 0x4000).unwrap();
    assert_eq!(r.mgr.map(0, "f", 0, 0, 0x1000, true).unwrap().reply.ack, 0);
    r.model.sync(T).unwrap();
    assert_eq!((r.relay.requests_seen(), r.relay.waiting_for()), (1, Default::default()), "one request, answered");
    r.relay.close_backend_channel();
    assert!(r.mgr.map(0, "f", 0, 0x2000, 0x1000, true).is_err(), "a request on a closed channel fails");
    assert_eq!(r.model.maps_served(), 1, "the frontend never saw it");
    ends_clean(r, true);
}

#[test]
fn a_frontend_that_never_sends_the_table_fails_reaches_memory_table_on_the_wire() {
    let _one = alone();
    let mut r =
        relayed_with(vec![0x10000], RelayFaults::default(), Faults { no_table_update: true, ..Faults::default() });
    r.mgr.create_file("f", 0x4000).unwrap();
    assert_eq!(r.mgr.map(0, "f", 0, 0, 0x1000, true).unwrap().reply.ack, 0, "accepted");
    r.model.sync(T).unwrap();
    let c = wire::reaches_table_check(&wire::lags(&r.relay.record()));
    assert!(!c.passed && c.facts["n"] == "1" && c.facts["none"] == "1", "{c:?}");
    ends_clean(r, true);
}

#[test]
fn a_request_the_frontend_never_answers_is_named_on_the_wire_as_the_backends_wait() {
    let _one = alone();
    let r =
        relayed_with(vec![0x10000], RelayFaults::default(), Faults { stop_acking_after: Some(0), ..Faults::default() });
    let Relayed { mut mgr, model, server, relay, _dir } = r;
    mgr.create_file("f", 0x4000).unwrap();
    // The backend's map waits for its ack on a thread of its own; the relay's record says who waits for what.
    let waiting = std::thread::scope(|s| {
        let map = s.spawn(|| mgr.map(0, "f", 0, 0, 0x1000, true));
        let deadline = std::time::Instant::now() + T;
        let mut w = relay.waiting_for();
        while w.backend.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            w = relay.waiting_for();
        }
        drop(model);
        let _ = map.join();
        w
    });
    assert_eq!((waiting.frontend, waiting.backend.map(|b| b.0)), (None, Some("SHMEM_MAP".to_string())));
    drop(server);
    let (_, ended) = relay.finish(END);
    assert!(ended.is_ok(), "{ended:?}");
}
