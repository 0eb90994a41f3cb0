//! What a recording relay saw on one vhost-user connection (both channels,
//! both directions), as data, and what the judge reads from it: the
//! session's record on the frontend's side (what the backend offered and
//! advertised, every SHMEM request and the frontend's answer), and the wire
//! order (from each accepted request's reply to the memory-table message
//! that carries its change). No I/O: the relay (`host/src/relay/`) records.

use serde::{Deserialize, Serialize};
use shmem_proto::{BackendRequest, PAGE_SIZE, ShmemMsg, ShmemOp};

use super::record::{Lag, Served, SessionRecord, Waiting};
use crate::check::CheckResult;

/// Which socket a message went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    /// The vhost-user socket: the frontend's requests, the backend's replies.
    Main,
    /// The backend's request channel (SET_BACKEND_REQ_FD): the backend's requests, the frontend's replies.
    Backend,
}

/// Who sent a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sender {
    Frontend,
    Backend,
    /// The relay itself, answering in the frontend's place (a fault switch).
    Relay,
}

/// One region of a memory-table message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRegion {
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
    pub mmap_offset: u64,
}

/// A message's payload, decoded where the appliance knows its layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Payload {
    /// Not decoded (the size and fd count are still recorded).
    Raw,
    /// A u64 body: features, protocol features, a REPLY_ACK.
    U64 { value: u64 },
    /// SHMEM_MAP / SHMEM_UNMAP, with what the relay saw of the fd it carried.
    Shmem {
        shmid: u8,
        shm_offset: u64,
        len: u64,
        fd_offset: u64,
        flags: u64,
        fd_size: Option<u64>,
        fd_rw: Option<bool>,
        /// The fd's file identity (st_dev, st_ino), to find it in the frontend's fds later.
        file: Option<(u64, u64)>,
    },
    /// GET_SHMEM_CONFIG's reply: region sizes by shmid.
    ShmemConfig { sizes: Vec<u64> },
    /// SET_MEM_TABLE: the whole table.
    MemTable { regions: Vec<TableRegion> },
    /// ADD_MEM_REG: one region added.
    AddRegion { region: TableRegion },
    /// REM_MEM_REG: one region removed.
    RemRegion { region: TableRegion },
}

/// One message as the relay passed it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMsg {
    /// CLOCK_MONOTONIC, in nanoseconds, when the relay had read it whole:
    /// the relay's own scheduling is in it (tenths of a millisecond on a
    /// loaded machine), so the order of two messages sent that close together
    /// on different channels is not told by it.
    pub at_ns: u64,
    pub channel: Channel,
    pub sender: Sender,
    pub request: u32,
    /// The request's name as the vhost crate spells it.
    pub name: String,
    pub flags: u32,
    pub size: u32,
    pub nfds: u32,
    pub payload: Payload,
}

/// What a report carries of a relay's record: the messages (the first and
/// the last [`WireRecord::KEPT`] of a long one, and how many were left out
/// between) and every accepted SHMEM request's lag, all of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WireRecord {
    pub messages: Vec<WireMsg>,
    /// Messages left out between the first and the last `KEPT`.
    pub left_out: usize,
    pub lags: Vec<Lag>,
}

impl WireRecord {
    /// How many messages are kept at each end of a long record.
    pub const KEPT: usize = 2000;

    /// The report's part of a whole record.
    pub fn of(msgs: &[WireMsg]) -> Self {
        let lags = lags(msgs);
        if msgs.len() <= 2 * Self::KEPT {
            return WireRecord { messages: msgs.to_vec(), left_out: 0, lags };
        }
        let mut messages = msgs[..Self::KEPT].to_vec();
        messages.extend_from_slice(&msgs[msgs.len() - Self::KEPT..]);
        WireRecord { messages, left_out: msgs.len() - 2 * Self::KEPT, lags }
    }

    /// The last `n` messages in words, one a line, for a failing scenario's log.
    pub fn tail(&self, n: usize) -> String {
        let from = self.messages.len().saturating_sub(n);
        let t0 = self.messages.first().map_or(0, |m| m.at_ns);
        self.messages[from..]
            .iter()
            .map(|m| {
                let kind = if m.flags & FLAG_REPLY != 0 { "reply" } else { "request" };
                format!("{:>12.3} ms  {:?} channel, {:?} {kind} {} ({} bytes, {} fds) {:?}", (m.at_ns - t0) as f64 / 1e6, m.channel, m.sender, m.name, m.size, m.nfds, m.payload)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Header flag of a reply.
const FLAG_REPLY: u32 = 0x4;
/// Header flag of a request that wants a REPLY_ACK.
const FLAG_NEED_REPLY: u32 = 0x8;
/// Main-channel request codes the record is read by.
const GET_FEATURES: u32 = 1;
const GET_PROTOCOL_FEATURES: u32 = 15;
const GET_SHMEM_CONFIG: u32 = 44;
/// The memory-table messages: SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG.
const SET_MEM_TABLE: u32 = 5;
const ADD_MEM_REG: u32 = 37;
const REM_MEM_REG: u32 = 38;

impl WireMsg {
    fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }

    fn value(&self) -> Option<u64> {
        match self.payload {
            Payload::U64 { value } => Some(value),
            _ => None,
        }
    }

    /// The SHMEM request this message is, if it is one the backend sent.
    fn shmem_request(&self) -> Option<BackendRequest> {
        if self.channel != Channel::Backend || self.sender != Sender::Backend || self.is_reply() {
            return None;
        }
        let (msg, fd_size, fd_rw) = match self.payload {
            Payload::Shmem { shmid, shm_offset, len, fd_offset, flags, fd_size, fd_rw, .. } => (Some(ShmemMsg { shmid, shm_offset, len, fd_offset, flags }), fd_size, fd_rw),
            _ => (None, None, None),
        };
        Some(BackendRequest { request: self.request, msg, with_fd: self.nfds > 0, fd_size, fd_rw })
    }

    fn is_table(&self) -> bool {
        self.channel == Channel::Main && self.sender == Sender::Frontend && !self.is_reply() && matches!(self.request, SET_MEM_TABLE | ADD_MEM_REG | REM_MEM_REG)
    }
}

/// The frontend's side of a session, read from the wire into `rec`: what the
/// backend offered (the replies to GET_FEATURES and GET_PROTOCOL_FEATURES),
/// its regions (GET_SHMEM_CONFIG's reply) and every request on the backend
/// channel with whether the frontend accepted it ([`accepted`]).
pub fn read_session(msgs: &[WireMsg], rec: &mut SessionRecord) {
    let reply = |code: u32| msgs.iter().find(|m| m.channel == Channel::Main && m.sender == Sender::Backend && m.is_reply() && m.request == code);
    let features = reply(GET_FEATURES).and_then(WireMsg::value);
    let protocol = reply(GET_PROTOCOL_FEATURES).and_then(WireMsg::value);
    rec.offered = features.zip(protocol);
    if let Some(Payload::ShmemConfig { sizes }) = reply(GET_SHMEM_CONFIG).map(|m| &m.payload) {
        rec.regions.clone_from(sizes);
    }
    rec.served = requests(msgs).into_iter().map(|(i, sent)| Served { sent, accepted: accepted(msgs, i) }).collect();
    rec.frontend_unseen = false;
}

/// Every request the backend sent on its channel, with its index in `msgs`.
fn requests(msgs: &[WireMsg]) -> Vec<(usize, BackendRequest)> {
    msgs.iter().enumerate().filter_map(|(i, m)| Some((i, m.shmem_request()?))).collect()
}

/// Whether the frontend accepted the request at `msgs[i]`: it acked 0 (the
/// first reply with its code after it on the backend channel), or the
/// request asked no reply (its answer is not on the wire: taken as
/// accepted). One that asked and got none (a channel closed, a frontend
/// that died) was not accepted.
fn accepted(msgs: &[WireMsg], i: usize) -> bool {
    msgs[i].flags & FLAG_NEED_REPLY == 0 || reply_to(msgs, i).and_then(|r| msgs[r].value()) == Some(0)
}

fn reply_to(msgs: &[WireMsg], i: usize) -> Option<usize> {
    let code = msgs[i].request;
    (i + 1..msgs.len()).find(|&j| {
        let m = &msgs[j];
        m.channel == Channel::Backend && matches!(m.sender, Sender::Frontend | Sender::Relay) && m.is_reply() && m.request == code
    })
}

/// Main-channel requests a backend answers whatever their flags (the GETs:
/// features, protocol features, GET_VRING_BASE 11, GET_QUEUE_NUM 17,
/// GET_CONFIG 24, GET_INFLIGHT_FD 31, GET_MAX_MEM_SLOTS 36, GET_SHMEM_CONFIG),
/// beside any the frontend sent with NEED_REPLY.
const ALWAYS_ANSWERED: [u32; 8] = [GET_FEATURES, GET_PROTOCOL_FEATURES, 11, 17, 24, 31, 36, GET_SHMEM_CONFIG];

/// What was left unanswered at `now_ns`, and for how long, on each side:
/// the oldest of the frontend's requests the backend has not answered
/// (named as the model names what it waits for: `SET_MEM_TABLE`), and the
/// oldest of the backend's requests the frontend has not answered
/// (`SHMEM_MAP`). Replies are matched to requests by channel and code,
/// first come first answered; a hung-up channel leaves its own unanswered.
pub fn waiting(msgs: &[WireMsg], now_ns: u64) -> Waiting {
    let mut open: Vec<&WireMsg> = Vec::new();
    for m in msgs {
        let owed = m.channel == Channel::Main && ALWAYS_ANSWERED.contains(&m.request) || m.flags & FLAG_NEED_REPLY != 0;
        if !m.is_reply() && owed {
            open.push(m);
        } else if m.is_reply()
            && let Some(at) = open.iter().position(|o| o.channel == m.channel && o.request == m.request)
        {
            open.remove(at);
        }
    }
    let oldest = |sender: Sender| open.iter().find(|o| o.sender == sender).map(|o| (o.name.clone(), std::time::Duration::from_nanos(now_ns.saturating_sub(o.at_ns))));
    Waiting { frontend: oldest(Sender::Frontend), backend: oldest(Sender::Backend) }
}

/// The files (st_dev, st_ino) of the mappings the backend's accepted
/// requests leave live at the end: what the frontend should no longer hold.
pub fn files_mapped(msgs: &[WireMsg]) -> Vec<(u64, u64)> {
    let mut files = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if let (Some(req), Payload::Shmem { file: Some(f), .. }) = (m.shmem_request(), &m.payload) {
            let acked = accepted(msgs, i);
            if req.request == ShmemOp::Map.code() && acked && !files.contains(f) {
                files.push(*f);
            }
        }
    }
    files
}

/// Regions of `table` of the mapping's size (or that size rounded up to
/// whole pages, as a frontend maps it) and file offset: how a table shows a
/// mapping (the frontend's addresses are its own).
fn matching(regions: &[TableRegion], len: u64, fd_offset: u64) -> usize {
    let sizes = [len, len.next_multiple_of(PAGE_SIZE)];
    regions.iter().filter(|r| sizes.contains(&r.memory_size) && r.mmap_offset == fd_offset).count()
}

/// How many regions of the mapping's shape the table holds after each
/// memory-table message, from the message's index on.
fn table_counts(msgs: &[WireMsg], len: u64, fd_offset: u64) -> Vec<(usize, usize)> {
    let mut count = 0usize;
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate().filter(|(_, m)| m.is_table()) {
        count = match &m.payload {
            Payload::MemTable { regions } => matching(regions, len, fd_offset),
            Payload::AddRegion { region } => count + matching(std::slice::from_ref(region), len, fd_offset),
            Payload::RemRegion { region } => count.saturating_sub(matching(std::slice::from_ref(region), len, fd_offset)),
            _ => count,
        };
        out.push((i, count));
    }
    out
}

/// Each accepted SHMEM_MAP's (and SHMEM_UNMAP's) lag: the first table
/// message after the request with one region of its shape more (fewer),
/// timed against the frontend's reply. "More" is counted from the last
/// table before the request, or from the table that carried the shape's
/// previous request if the relay read that one later: a backend may send
/// its next request before the frontend's table for the last one (QEMU
/// 11.1.3 replies first). Only read-write fds are looked for: a read-only
/// fd cannot be in a memory table (backends map its regions read-write),
/// so neither its map nor the unmap that drops it is.
pub fn lags(msgs: &[WireMsg]) -> Vec<Lag> {
    let mut out = Vec::new();
    // Where an accepted map of a read-only fd is live: (shmid, offset).
    let mut read_only: Vec<(u8, u64)> = Vec::new();
    // One count per mapping shape (a churn's thousands of requests share
    // one), with the index in it of the table that carried the last request.
    type Counted = (Vec<(usize, usize)>, Option<usize>);
    let mut by_shape: std::collections::HashMap<(u64, u64), Counted> = std::collections::HashMap::new();
    for (i, req) in requests(msgs) {
        let Some(m) = req.msg.filter(|_| accepted(msgs, i)) else { continue };
        let map = req.request == ShmemOp::Map.code();
        let at = (m.shmid, m.shm_offset);
        if !map && req.request != ShmemOp::Unmap.code() {
            continue;
        }
        if map && req.fd_rw == Some(false) {
            read_only.push(at);
            continue;
        }
        // An unmap drops a read-only map live there; a read-write map replaces one a reset dropped.
        if let Some(k) = read_only.iter().position(|r| *r == at) {
            read_only.swap_remove(k);
            if !map {
                continue;
            }
        }
        let (counts, carried) = by_shape.entry((m.len, m.fd_offset)).or_insert_with(|| (table_counts(msgs, m.len, m.fd_offset), None));
        let after = counts.partition_point(|(j, _)| *j < i);
        let base = after.checked_sub(1).max(*carried);
        let before = base.map_or(0, |k| counts[k].1);
        let from = base.map_or(0, |k| k + 1).max(after);
        let changed = counts[from..].iter().position(|(_, c)| if map { *c > before } else { *c < before }).map(|p| p + from);
        *carried = changed.or(*carried);
        let replied = reply_to(msgs, i).map_or(msgs[i].at_ns, |r| msgs[r].at_ns);
        let micros = changed.map(|k| (msgs[counts[k].0].at_ns as f64 - replied as f64) / 1000.0);
        out.push(Lag { request: req.request, at: i, micros });
    }
    out
}

/// The check that every accepted mapping (and unmapping) reaches the
/// backend's memory table, with the lag's spread as facts: how many, the
/// least, median and most microseconds from reply to table, how many tables
/// the relay read before the reply (`preceded`) and how many never came
/// (`none`). It fails on `none`, and when there was nothing to look for (no
/// evidence is no pass); the lags are facts, read with the relay's
/// scheduling in them (see [`WireMsg::at_ns`]), for `--compare`.
pub fn reaches_table_check(lags: &[Lag]) -> CheckResult {
    let mut times: Vec<f64> = lags.iter().filter_map(|l| l.micros).collect();
    times.sort_by(f64::total_cmp);
    let none = lags.len() - times.len();
    let preceded = times.iter().filter(|t| **t < 0.0).count();
    let at = |q: f64| times.get(((times.len().saturating_sub(1)) as f64 * q).round() as usize).copied();
    let us = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.0}"));
    let (min, median, max) = (us(at(0.0)), us(at(0.5)), us(at(1.0)));
    let evidence = if lags.is_empty() {
        "no accepted SHMEM request of a read-write fd to look for in a memory table: nothing to tell whether mappings reach it".to_string()
    } else if none == 0 {
        format!("all {} accepted requests reached the backend's memory table, {min} / {median} / {max} us after the reply (min / median / max), {preceded} before it", lags.len())
    } else {
        let first = lags.iter().find(|l| l.micros.is_none()).map_or(0, |l| l.at);
        format!("{none} of {} accepted requests never reached the backend's memory table (first: message {first} of the record)", lags.len())
    };
    CheckResult::new("reaches-memory-table", none == 0 && !lags.is_empty(), evidence)
        .with("n", lags.len() as u64)
        .with("none", none as u64)
        .with("preceded", preceded as u64)
        .with("lag_min_us", min.as_str())
        .with("lag_median_us", median.as_str())
        .with("lag_max_us", max.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(at_ns: u64, channel: Channel, sender: Sender, request: u32, flags: u32, payload: Payload) -> WireMsg {
        WireMsg { at_ns, channel, sender, request, name: String::new(), flags, size: 0, nfds: 0, payload }
    }

    fn map(at_ns: u64) -> WireMsg {
        let shmem = Payload::Shmem { shmid: 0, shm_offset: 0, len: 0x1000, fd_offset: 0, flags: 1, fd_size: Some(0x1000), fd_rw: Some(true), file: Some((1, 2)) };
        WireMsg { nfds: 1, ..msg(at_ns, Channel::Backend, Sender::Backend, 9, 0x9, shmem) }
    }

    fn ack(at_ns: u64, value: u64) -> WireMsg {
        msg(at_ns, Channel::Backend, Sender::Frontend, 9, 0x5, Payload::U64 { value })
    }

    fn unmap(at_ns: u64) -> WireMsg {
        WireMsg { nfds: 0, request: 10, payload: Payload::Shmem { shmid: 0, shm_offset: 0, len: 0x1000, fd_offset: 0, flags: 0, fd_size: None, fd_rw: None, file: None }, ..map(at_ns) }
    }

    fn unmap_ack(at_ns: u64) -> WireMsg {
        WireMsg { request: 10, ..ack(at_ns, 0) }
    }

    fn table(at_ns: u64, sizes: &[u64]) -> WireMsg {
        let regions = sizes.iter().map(|&s| TableRegion { guest_phys_addr: 0, memory_size: s, userspace_addr: 0, mmap_offset: 0 }).collect();
        msg(at_ns, Channel::Main, Sender::Frontend, 5, 0x1, Payload::MemTable { regions })
    }

    #[test]
    fn a_table_after_the_reply_is_a_positive_lag_and_none_fails() {
        let record = [table(0, &[0x20_0000]), map(1_000), ack(2_000, 0), table(52_000, &[0x20_0000, 0x1000])];
        let l = lags(&record);
        assert_eq!(l, vec![Lag { request: 9, at: 1, micros: Some(50.0) }]);
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
        more.extend([map(100_000), ack(101_000, 0), table(111_000, both), unmap(150_000), unmap_ack(151_000), table(171_000, ram)]);
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
            record.extend([map(t), ack(t + 1_000, 0), table(t + 11_000, both), unmap(t + 50_000), unmap_ack(t + 51_000), table(t + 71_000, ram)]);
        }
        let l = lags(&record);
        assert_eq!(l.iter().map(|l| l.micros).collect::<Vec<_>>(), [10.0, 20.0].repeat(3).into_iter().map(Some).collect::<Vec<_>>(), "{l:?}");
    }

    #[test]
    fn a_request_sent_before_the_table_of_the_last_one_is_counted_from_that_table() {
        // The backend's unmap crossed the frontend's table for its map (seen
        // between the model and the appliance's own backend, 1 CI run in many).
        let (ram, both) = (&[0x20_0000][..], &[0x20_0000, 0x1000][..]);
        let record = [table(0, ram), map(1_000), ack(2_000, 0), unmap(3_000), table(4_000, both), unmap_ack(5_000), table(8_000, ram)];
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
        let config = msg(0, Channel::Main, Sender::Backend, GET_SHMEM_CONFIG, 0x5, Payload::ShmemConfig { sizes: vec![0x80_0000] });
        let record = [offered(GET_FEATURES, 3), offered(GET_PROTOCOL_FEATURES, 7), config, map(1), ack(2, 1), map(3), ack(4, 0)];
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
        assert_eq!(both, Waiting { frontend: Some(("SET_MEM_TABLE".into(), ms(3))), backend: Some(("SHMEM_MAP".into(), std::time::Duration::from_micros(2999))) });
        let only_backend = waiting(&[asking_table.clone(), table_ack.clone(), map.clone()], 2_000_000);
        assert_eq!((only_backend.frontend, only_backend.backend.map(|b| b.0)), (None, Some("SHMEM_MAP".into())));
        assert_eq!(waiting(&[asking_table, table_ack, map, ack(4_000, 0)], 5_000), Waiting::default());
        // A table sent without NEED_REPLY is owed nothing.
        assert_eq!(waiting(&[table(1_000, &[0x1000])], 2_000), Waiting::default());
    }
}
