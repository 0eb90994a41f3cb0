//! The mapping manager survives any frontend answer: a fake frontend acks
//! whatever the property test says to arbitrary maps and unmaps (offsets,
//! lengths, shmids, overflowing ones included). The manager never panics,
//! every in-region view stays computable, and with an expectation given the
//! ledger is exactly what the expectations say, whatever was acked.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;

use proptest::prelude::*;
use shmem_host::channel::{BackendChannel, ShmemMsg, ShmemOp};
use shmem_host::manager::{Attach, MappingManager, Want};
use shmem_host::spec::DeviceSpec;
use shmem_host::wire;

const REGIONS: [u64; 3] = [0x10000, 0, 0x4000];

#[derive(Clone, Debug)]
struct Req {
    map: bool,
    shmid: u8,
    shm_offset: u64,
    len: u64,
    fd_offset: u64,
    want: Want,
    ack: u64,
}

fn edge() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..0x12000, Just(u64::MAX), Just(u64::MAX - 0xfff), any::<u64>()]
}

fn req() -> impl Strategy<Value = Req> {
    (
        any::<bool>(),
        0u8..4,
        edge(),
        edge(),
        prop_oneof![0u64..0x3000, any::<u64>()],
        prop_oneof![Just(Want::Accept), Just(Want::Refuse), Just(Want::Either)],
        prop_oneof![Just(0u64), Just(1), any::<u64>()],
    )
        .prop_map(|(map, shmid, shm_offset, len, fd_offset, want, ack)| Req {
            map,
            shmid,
            shm_offset,
            len,
            fd_offset,
            want,
            ack,
        })
}

/// A frontend that answers the i-th request with `acks[i]`, whatever it asks.
fn fake_frontend(acks: Vec<u64>) -> (Arc<BackendChannel>, thread::JoinHandle<()>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        for ack in acks {
            let Ok(Some(req)) = wire::recv(&theirs) else { return };
            if wire::send(&theirs, req.request, wire::VERSION_1 | wire::FLAG_REPLY, &ack.to_le_bytes(), &[]).is_err() {
                return;
            }
        }
    });
    (Arc::new(BackendChannel::new(ours)), t)
}

/// Sends every request to a frontend answering each with its `ack`; checks
/// on the way that the ack is reported as given and that views stay
/// computable; returns the ledger at the end.
fn drive(reqs: &[Req]) -> Vec<(u8, u64, u64)> {
    let (chan, t) = fake_frontend(reqs.iter().map(|r| r.ack).collect());
    let spec = DeviceSpec { virtio_id: 45, num_queues: 1, regions: REGIONS.to_vec() };
    let mut mgr = MappingManager::new(spec, chan);
    mgr.create_file("f", 0x2000).unwrap();
    for r in reqs {
        let msg = ShmemMsg { shmid: r.shmid, fd_offset: r.fd_offset, shm_offset: r.shm_offset, len: r.len, flags: 1 };
        let (op, attach) = if r.map { (ShmemOp::Map, Attach::File("f")) } else { (ShmemOp::Unmap, Attach::None) };
        let o = mgr.send(op, msg, attach, r.want).expect("the fake frontend answers every request");
        assert_eq!(o.reply.ack, r.ack);
        // Any view inside a region is computable or a clean error, never a panic.
        for (shmid, size) in REGIONS.iter().enumerate() {
            let _ = mgr.expected(shmid as u8, 0, *size);
        }
        let _ = mgr.expected(r.shmid, r.shm_offset, r.len.min(0x20000));
    }
    let ledger = mgr.ledger().iter().map(|e| (e.shmid, e.shm_offset, e.len)).collect();
    drop(mgr);
    t.join().unwrap();
    ledger
}

/// The ledger after `reqs`, each answered with `ack(req)`.
fn ledger_after(reqs: &[Req], ack: impl Fn(&Req) -> u64) -> Vec<(u8, u64, u64)> {
    drive(&reqs.iter().map(|r| Req { ack: ack(r), ..r.clone() }).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_answer_to_any_request_leaves_the_manager_working(reqs in prop::collection::vec(req(), 1..24)) {
        drive(&reqs);
    }

    #[test]
    fn with_expectations_the_ledger_ignores_what_was_acked(reqs in prop::collection::vec(req(), 1..24)) {
        let expected_only: Vec<Req> = reqs.into_iter().filter(|r| r.want != Want::Either).collect();
        let as_acked = ledger_after(&expected_only, |r| r.ack);
        let all_accepted = ledger_after(&expected_only, |_| 0);
        let all_refused = ledger_after(&expected_only, |_| 1);
        prop_assert_eq!(&as_acked, &all_accepted);
        prop_assert_eq!(&as_acked, &all_refused);
    }

    #[test]
    fn either_takes_only_acceptances_that_fit_the_ledger(reqs in prop::collection::vec(req(), 1..24)) {
        let either: Vec<Req> = reqs.into_iter().map(|r| Req { want: Want::Either, ..r }).collect();
        let ledger = ledger_after(&either, |_| 0);
        // Whatever was accepted, the ledger holds non-empty, in-region, disjoint mappings.
        for (i, a) in ledger.iter().enumerate() {
            prop_assert!(a.2 > 0 && a.1.checked_add(a.2).is_some_and(|end| end <= REGIONS[usize::from(a.0)]), "{:?}", a);
            for b in &ledger[i + 1..] {
                prop_assert!(a.0 != b.0 || a.1 + a.2 <= b.1 || b.1 + b.2 <= a.1, "{:?} overlaps {:?}", a, b);
            }
        }
    }
}
