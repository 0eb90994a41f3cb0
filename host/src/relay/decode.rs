//! What the relay reads of a message as it passes: the payloads whose layout
//! the appliance knows (u64 bodies, SHMEM_MAP/UNMAP, GET_SHMEM_CONFIG's
//! reply, memory tables) and the fd a SHMEM_MAP carries (size, access mode,
//! file identity). Decoding only: it never changes or holds a message.

use std::os::fd::{AsRawFd, OwnedFd};

use shmem_judge::backend::wire::{Channel, Payload, Sender, TableRegion, WireMsg};
use shmem_proto::{ShmemMsg, ShmemOp};
use vhost::vhost_user::message::FrontendReq;

use crate::channel::MmapBytes;
use crate::wire::Message;

const SET_MEM_TABLE: u32 = FrontendReq::SET_MEM_TABLE as u32;
const ADD_MEM_REG: u32 = FrontendReq::ADD_MEM_REG as u32;
const REM_MEM_REG: u32 = FrontendReq::REM_MEM_REG as u32;
const GET_SHMEM_CONFIG: u32 = FrontendReq::GET_SHMEM_CONFIG as u32;
/// A memory-table region on the wire: four u64.
const REGION_LEN: usize = 32;

/// The record of `msg`, read at `at_ns`.
pub fn record(msg: &Message, channel: Channel, sender: Sender, at_ns: u64) -> WireMsg {
    let name = match channel {
        Channel::Main => crate::server::request_name(msg.request),
        Channel::Backend => ShmemOp::of_code(msg.request)
            .map_or_else(|| format!("BACKEND_REQUEST_{}", msg.request), |op| op.to_string()),
    };
    WireMsg {
        at_ns,
        channel,
        sender,
        request: msg.request,
        name,
        flags: msg.flags,
        size: msg.body.len() as u32,
        nfds: msg.fds.len() as u32,
        payload: payload(msg, channel, sender),
    }
}

fn payload(msg: &Message, channel: Channel, sender: Sender) -> Payload {
    let body = &msg.body;
    match (channel, sender, msg.is_reply()) {
        (Channel::Backend, Sender::Backend, false) if ShmemOp::of_code(msg.request).is_some() => {
            shmem(body, msg.fds.first())
        }
        (Channel::Main, Sender::Backend, true) if msg.request == GET_SHMEM_CONFIG => shmem_config(body),
        (Channel::Main, Sender::Frontend, false) if msg.request == SET_MEM_TABLE => mem_table(body),
        (Channel::Main, Sender::Frontend, false) if matches!(msg.request, ADD_MEM_REG | REM_MEM_REG) => {
            single_region(body, msg.request == ADD_MEM_REG)
        }
        _ => msg.body_u64().map_or(Payload::Raw, |value| Payload::U64 { value }),
    }
}

fn u64_at(body: &[u8], at: usize) -> Option<u64> {
    body.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

fn region_at(body: &[u8], at: usize) -> Option<TableRegion> {
    Some(TableRegion {
        guest_phys_addr: u64_at(body, at)?,
        memory_size: u64_at(body, at + 8)?,
        userspace_addr: u64_at(body, at + 16)?,
        mmap_offset: u64_at(body, at + 24)?,
    })
}

fn shmem(body: &[u8], fd: Option<&OwnedFd>) -> Payload {
    let Some(m) = ShmemMsg::from_bytes(body).filter(|_| body.len() == 40) else { return Payload::Raw };
    let (fd_size, fd_rw, file) = fd.map_or((None, None, None), fd_facts);
    Payload::Shmem {
        shmid: m.shmid,
        shm_offset: m.shm_offset,
        len: m.len,
        fd_offset: m.fd_offset,
        flags: m.flags,
        fd_size,
        fd_rw,
        file,
    }
}

/// Size, whether opened read-write, and (st_dev, st_ino) of an fd.
fn fd_facts(fd: &OwnedFd) -> (Option<u64>, Option<bool>, Option<(u64, u64)>) {
    // SAFETY: fstat into a zeroed struct on a valid fd; F_GETFL on a valid fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let stat = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0;
    let mode = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    let rw = (mode >= 0).then_some(mode & libc::O_ACCMODE == libc::O_RDWR);
    if stat { (Some(st.st_size as u64), rw, Some((st.st_dev, st.st_ino))) } else { (None, rw, None) }
}

/// GET_SHMEM_CONFIG's reply: u32 count, u32 padding, then 256 u64 sizes.
fn shmem_config(body: &[u8]) -> Payload {
    let Some(n) = body.get(..4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize) else {
        return Payload::Raw;
    };
    let sizes: Option<Vec<u64>> = (0..n.min(256)).map(|i| u64_at(body, 8 + 8 * i)).collect();
    sizes.map_or(Payload::Raw, |sizes| Payload::ShmemConfig { sizes })
}

/// SET_MEM_TABLE: u32 count, u32 padding, then the regions.
fn mem_table(body: &[u8]) -> Payload {
    let Some(n) = body.get(..4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize) else {
        return Payload::Raw;
    };
    let regions: Option<Vec<TableRegion>> = (0..n.min(256)).map(|i| region_at(body, 8 + REGION_LEN * i)).collect();
    regions.map_or(Payload::Raw, |regions| Payload::MemTable { regions })
}

/// ADD_MEM_REG / REM_MEM_REG: u64 padding, then one region.
fn single_region(body: &[u8], add: bool) -> Payload {
    match region_at(body, 8) {
        Some(region) if add => Payload::AddRegion { region },
        Some(region) => Payload::RemRegion { region },
        None => Payload::Raw,
    }
}
