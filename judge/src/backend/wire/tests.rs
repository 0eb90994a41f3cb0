use super::*;

fn msg(at_ns: u64, channel: Channel, sender: Sender, request: u32, flags: u32, payload: Payload) -> WireMsg {
    WireMsg { at_ns, channel, sender, request, name: String::new(), flags, size: 0, nfds: 0, payload }
}

fn map(at_ns: u64) -> WireMsg {
    let shmem = Payload::Shmem {
        shmid: 0,
        shm_offset: 0,
        len: 0x1000,
        fd_offset: 0,
        flags: 1,
        fd_size: Some(0x1000),
        fd_rw: Some(true),
        file: Some((1, 2)),
    };
    WireMsg { nfds: 1, ..msg(at_ns, Channel::Backend, Sender::Backend, 9, 0x9, shmem) }
}

fn ack(at_ns: u64, value: u64) -> WireMsg {
    msg(at_ns, Channel::Backend, Sender::Frontend, 9, 0x5, Payload::U64 { value })
}

fn unmap(at_ns: u64) -> WireMsg {
    WireMsg {
        nfds: 0,
        request: 10,
        payload: Payload::Shmem {
            shmid: 0,
            shm_offset: 0,
            len: 0x1000,
            fd_offset: 0,
            flags: 0,
            fd_size: None,
            fd_rw: None,
            file: None,
        },
        ..map(at_ns)
    }
}

fn unmap_ack(at_ns: u64) -> WireMsg {
    WireMsg { request: 10, ..ack(at_ns, 0) }
}

fn table(at_ns: u64, sizes: &[u64]) -> WireMsg {
    let regions = sizes
        .iter()
        .map(|&s| TableRegion { guest_phys_addr: 0, memory_size: s, userspace_addr: 0, mmap_offset: 0 })
        .collect();
    msg(at_ns, Channel::Main, Sender::Frontend, 5, 0x1, Payload::MemTable { regions })
}

#[test]
fn a_table_after_the_reply_is_a_positive_lag_and_none_fails() {
    let record = [table(0, &[0x20_0000]), map(1_000), ack(2_000, 0), table(52_000, &[0x20_0000, 0x1000])];
    let l = lags(&record);
    assert_eq!(l, vec![Lag { request: 9, at: 1, micros: Some(50.0), reply: Some(2), table: Some(3) }]);
    assert!(reaches_table_check(&l).passed);
    let missing = lags(&record[..3]);
    let c = reaches_table_check(&missing);
    assert!(!c.passed && c.evidence.contains("never reached"), "{c:?}");
}

#[test]
fn a_table_before_the_reply_counts_as_preceded_and_a_refused_map_is_not_looked_for() {
    let record = [map(500), table(1_000, &[0x1000]), ack(2_000, 0)];
    let c = reaches_table_check(&lags(&record));
    assert!(c.passed && c.facts["preceded"] == "1" && c.facts["lag_min_us"] == "-1", "{c:?}");
    assert!(lags(&[map(1_000), ack(2_000, 1)]).is_empty());
}

#[test]
fn a_read_only_fd_is_not_looked_for_in_a_table_nor_is_its_unmap_and_nothing_to_look_for_fails() {
    let ro = |at_ns| {
        let mut m = map(at_ns);
        if let Payload::Shmem { fd_rw, flags, .. } = &mut m.payload {
            (*fd_rw, *flags) = (Some(false), 0);
        }
        m
    };
    let ram = &[0x20_0000][..];
    // A read-only map and its unmap: no table can show either (never `none`).
    let record = [table(0, ram), ro(1_000), ack(2_000, 0), unmap(50_000), unmap_ack(51_000), table(52_000, ram)];
    assert!(lags(&record).is_empty(), "{:?}", lags(&record));
    // Then a read-write map at the same place, and its unmap: both looked for.
    let both = &[0x20_0000, 0x1000][..];
    let mut more = record.to_vec();
    more.extend([
        map(100_000),
        ack(101_000, 0),
        table(111_000, both),
        unmap(150_000),
        unmap_ack(151_000),
        table(171_000, ram),
    ]);
    assert_eq!(lags(&more).iter().map(|l| l.micros).collect::<Vec<_>>(), [Some(10.0), Some(20.0)]);
    // Nothing to look for (only read-only fds, or every map refused): no evidence, no pass.
    let c = reaches_table_check(&lags(&record));
    assert!(!c.passed && c.facts["n"] == "0" && c.evidence.contains("nothing to tell"), "{c:?}");
    assert!(!reaches_table_check(&lags(&[map(1_000), ack(2_000, 1)])).passed);
}

#[test]
fn a_churn_of_one_shape_times_each_request_against_its_own_table() {
    let (ram, both) = (&[0x20_0000][..], &[0x20_0000, 0x1000][..]);
    let mut record = vec![table(0, ram)];
    for k in 0..3u64 {
        let t = 100_000 * (k + 1);
        record.extend([
            map(t),
            ack(t + 1_000, 0),
            table(t + 11_000, both),
            unmap(t + 50_000),
            unmap_ack(t + 51_000),
            table(t + 71_000, ram),
        ]);
    }
    let l = lags(&record);
    assert_eq!(
        l.iter().map(|l| l.micros).collect::<Vec<_>>(),
        [10.0, 20.0].repeat(3).into_iter().map(Some).collect::<Vec<_>>(),
        "{l:?}"
    );
}

#[test]
fn a_request_sent_before_the_table_of_the_last_one_is_counted_from_that_table() {
    // The backend's unmap crossed the frontend's table for its map (seen
    // between the model and the appliance's own backend, 1 CI run in many).
    let (ram, both) = (&[0x20_0000][..], &[0x20_0000, 0x1000][..]);
    let record = [
        table(0, ram),
        map(1_000),
        ack(2_000, 0),
        unmap(3_000),
        table(4_000, both),
        unmap_ack(5_000),
        table(8_000, ram),
    ];
    let l = lags(&record);
    assert_eq!(l.iter().map(|l| l.micros).collect::<Vec<_>>(), [Some(2.0), Some(3.0)], "{l:?}");
    // Its own table never comes: still none.
    assert_eq!(lags(&record[..6]).iter().map(|l| l.micros).collect::<Vec<_>>(), [Some(2.0), None]);
}

#[test]
fn a_request_that_asked_a_reply_and_got_none_was_not_accepted() {
    let record = [table(0, &[0x20_0000]), map(1_000)];
    let mut rec = SessionRecord::default();
    read_session(&record, &mut rec);
    assert_eq!(rec.served.iter().map(|s| s.accepted).collect::<Vec<_>>(), [false]);
    assert!(lags(&record).is_empty() && files_mapped(&record).is_empty());
    let no_reply_asked = WireMsg { flags: 0x1, ..map(1_000) };
    read_session(&[no_reply_asked], &mut rec);
    assert_eq!(rec.served.iter().map(|s| s.accepted).collect::<Vec<_>>(), [true], "its answer is not on the wire");
}

#[test]
fn the_session_is_read_from_the_wire() {
    let offered = |code, v| msg(0, Channel::Main, Sender::Backend, code, 0x5, Payload::U64 { value: v });
    let config =
        msg(0, Channel::Main, Sender::Backend, GET_SHMEM_CONFIG, 0x5, Payload::ShmemConfig { sizes: vec![0x80_0000] });
    let record =
        [offered(GET_FEATURES, 3), offered(GET_PROTOCOL_FEATURES, 7), config, map(1), ack(2, 1), map(3), ack(4, 0)];
    let mut rec = SessionRecord { frontend_unseen: true, ..SessionRecord::default() };
    read_session(&record, &mut rec);
    assert_eq!((rec.offered, rec.regions.clone(), rec.frontend_unseen), (Some((3, 7)), vec![0x80_0000], false));
    assert_eq!(rec.served.iter().map(|s| s.accepted).collect::<Vec<_>>(), [false, true]);
    assert_eq!(files_mapped(&record), vec![(1, 2)]);
}

#[test]
fn what_is_left_unanswered_is_named_oldest_first_on_each_side() {
    let named = |m: WireMsg, name: &str| WireMsg { name: name.into(), ..m };
    let table_ack = msg(0, Channel::Main, Sender::Backend, SET_MEM_TABLE, 0x5, Payload::U64 { value: 0 });
    let asking_table = WireMsg { flags: 0x9, ..named(table(1_000, &[0x1000]), "SET_MEM_TABLE") };
    let map = named(map(2_000), "SHMEM_MAP");
    let ms = std::time::Duration::from_millis;
    let both = waiting(&[asking_table.clone(), map.clone()], 3_001_000);
    assert_eq!(
        both,
        Waiting {
            frontend: Some(("SET_MEM_TABLE".into(), ms(3))),
            backend: Some(("SHMEM_MAP".into(), std::time::Duration::from_micros(2999)))
        }
    );
    let only_backend = waiting(&[asking_table.clone(), table_ack.clone(), map.clone()], 2_000_000);
    assert_eq!((only_backend.frontend, only_backend.backend.map(|b| b.0)), (None, Some("SHMEM_MAP".into())));
    assert_eq!(waiting(&[asking_table, table_ack, map, ack(4_000, 0)], 5_000), Waiting::default());
    // A table sent without NEED_REPLY is owed nothing.
    assert_eq!(waiting(&[table(1_000, &[0x1000])], 2_000), Waiting::default());
}
