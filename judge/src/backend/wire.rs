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
                format!(
                    "{:>12.3} ms  {:?} channel, {:?} {kind} {} ({} bytes, {} fds) {:?}",
                    (m.at_ns - t0) as f64 / 1e6,
                    m.channel,
                    m.sender,
                    m.name,
                    m.size,
                    m.nfds,
                    m.payload
                )
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
            Payload::Shmem { shmid, shm_offset, len, fd_offset, flags, fd_size, fd_rw, .. } => {
                (Some(ShmemMsg { shmid, shm_offset, len, fd_offset, flags }), fd_size, fd_rw)
            }
            _ => (None, None, None),
        };
        Some(BackendRequest { request: self.request, msg, with_fd: self.nfds > 0, fd_size, fd_rw })
    }

    fn is_table(&self) -> bool {
        self.channel == Channel::Main
            && self.sender == Sender::Frontend
            && !self.is_reply()
            && matches!(self.request, SET_MEM_TABLE | ADD_MEM_REG | REM_MEM_REG)
    }
}

/// The frontend's side of a session, read from the wire into `rec`: what the
/// backend offered (the replies to GET_FEATURES and GET_PROTOCOL_FEATURES),
/// its regions (GET_SHMEM_CONFIG's reply) and every request on the backend
/// channel with whether the frontend accepted it ([`accepted`]).
pub fn read_session(msgs: &[WireMsg], rec: &mut SessionRecord) {
    let reply = |code: u32| {
        msgs.iter()
            .find(|m| m.channel == Channel::Main && m.sender == Sender::Backend && m.is_reply() && m.request == code)
    };
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
        m.channel == Channel::Backend
            && matches!(m.sender, Sender::Frontend | Sender::Relay)
            && m.is_reply()
            && m.request == code
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
    let oldest = |sender: Sender| {
        open.iter()
            .find(|o| o.sender == sender)
            .map(|o| (o.name.clone(), std::time::Duration::from_nanos(now_ns.saturating_sub(o.at_ns))))
    };
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
            Payload::RemRegion { region } => {
                count.saturating_sub(matching(std::slice::from_ref(region), len, fd_offset))
            }
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
        let (counts, carried) =
            by_shape.entry((m.len, m.fd_offset)).or_insert_with(|| (table_counts(msgs, m.len, m.fd_offset), None));
        let after = counts.partition_point(|(j, _)| *j < i);
        let base = after.checked_sub(1).max(*carried);
        let before = base.map_or(0, |k| counts[k].1);
        let from = base.map_or(0, |k| k + 1).max(after);
        let changed =
            counts[from..].iter().position(|(_, c)| if map { *c > before } else { *c < before }).map(|p| p + from);
        *carried = changed.or(*carried);
        let reply = reply_to(msgs, i);
        let replied = reply.map_or(msgs[i].at_ns, |r| msgs[r].at_ns);
        let table = changed.map(|k| counts[k].0);
        let micros = table.map(|t| (msgs[t].at_ns as f64 - replied as f64) / 1000.0);
        out.push(Lag { request: req.request, at: i, micros, reply, table });
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
        format!(
            "all {} accepted requests reached the backend's memory table, {min} / {median} / {max} us after the reply (min / median / max), {preceded} before it",
            lags.len()
        )
    } else {
        let first = lags.iter().find(|l| l.micros.is_none()).map_or(0, |l| l.at);
        format!(
            "{none} of {} accepted requests never reached the backend's memory table (first: message {first} of the record)",
            lags.len()
        )
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
mod tests;
