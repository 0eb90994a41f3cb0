//! The model serving the backend channel: QEMU's checks for SHMEM_MAP and
//! SHMEM_UNMAP in QEMU's order, the reply, applying the change to the
//! regions, and the memory table after it. Must not judge what it served:
//! it records each request in `Served` for the judge.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Instant;

use shmem_proto::{BackendRequest, MAP_RW, PAGE_SIZE};
use vhost::VhostBackend;
use vhost::VhostUserMemoryRegionInfo;

use super::faults::{COMMIT_DELAY, Rejection, reject};
use super::{GUEST_RAM, Inner, MAX_TABLE_REGIONS, MODEL_BAR_BASE, Mapping, Served, State};
use crate::channel::{MmapBytes, ShmemMsg, ShmemOp};
use crate::wire;

/// QEMU's checks for SHMEM_MAP, in QEMU's order, then the model's own
/// stricter ones (alignment, file size, access mode) that QEMU does in mmap.
fn check_map(inner: &Inner, st: &State, msg: &ShmemMsg, fd: Option<&OwnedFd>) -> Result<(), Rejection> {
    let fd = fd.ok_or(reject(libc::EBADF, "Bad fd for map"))?;
    if st.faults.refuse_all_maps {
        return Err(reject(libc::ENOSPC, "no free memory slot (fault switch refuse_all_maps)"));
    }
    // QEMU 11.1.3 crashes here (its vhost device is not started); a correct
    // frontend refuses: there is no started device to map into.
    if !st.started {
        return Err(reject(libc::ENODEV, "device not started (no DRIVER_OK since the last reset)"));
    }
    let region = inner
        .regions
        .get(usize::from(msg.shmid))
        .and_then(Option::as_ref)
        .ok_or(reject(libc::EFAULT, "shared memory region not found or uninitialized"))?;
    match msg.shm_offset.checked_add(msg.len) {
        Some(end) if end <= region.size => {}
        _ => return Err(reject(libc::EFAULT, "Bad offset/len for mmap")),
    }
    // The spec (vhost-user.rst, SHMEM_MAP): "the memory range in the request
    // must correspond with a valid, free region of the VIRTIO Shared Memory
    // Region". An empty range is no valid region, and it holds no byte that
    // could overlap: its answer is its length, wherever it lies.
    let inside = |m: &Mapping| {
        m.shmid == msg.shmid && m.shm_offset < msg.shm_offset && msg.shm_offset < m.shm_offset.saturating_add(m.len)
    };
    if msg.len == 0 && st.faults.zero_length_as_overlap && st.mappings.iter().any(inside) {
        return Err(reject(libc::EFAULT, "mapping overlap"));
    }
    if msg.len == 0 {
        return Err(reject(libc::EINVAL, "size cannot be zero"));
    }
    // Same sentence, "free": and "Mapping over an already existing map is not allowed".
    if !st.faults.skip_overlap_check
        && st
            .mappings
            .iter()
            .any(|m| m.shmid == msg.shmid && shmem_proto::overlaps((m.shm_offset, m.len), (msg.shm_offset, msg.len)))
    {
        return Err(reject(libc::EFAULT, "mapping overlap"));
    }
    if st.faults.refuse_map_number == Some(maps_in(&st.served) + 1) {
        return Err(reject(libc::ENOSPC, "refused on purpose (fault switch refuse_map_number)"));
    }
    // The spec: "the front-end will mmap the given fd into the VIRTIO Shared
    // Memory Region". mmap(2) takes a page-aligned file offset and address
    // and maps whole pages, so an unaligned offset cannot be mapped as asked,
    // and an unaligned length would show the guest bytes of the file past
    // the requested range (or, past the file's end, fault). The spec says no
    // more; this is the model's reading of it, and README says so.
    if !st.faults.accept_unaligned
        && ![msg.shm_offset, msg.fd_offset, msg.len].iter().all(|v| v.is_multiple_of(PAGE_SIZE))
    {
        return Err(reject(libc::EINVAL, "offsets and length must be page aligned"));
    }
    let size = fd_size(fd).map_err(|_| reject(libc::EBADF, "fd cannot be examined"))?;
    match msg.fd_offset.checked_add(msg.len) {
        Some(end) if end <= size => {}
        _ => return Err(reject(libc::EINVAL, "backing store is too small")),
    }
    // SAFETY: F_GETFL on a valid fd.
    let mode = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) } & libc::O_ACCMODE;
    let rw = msg.flags & MAP_RW != 0;
    if mode == libc::O_WRONLY || (rw && mode != libc::O_RDWR) {
        return Err(reject(libc::EACCES, "Permission denied"));
    }
    // An accepted mapping must reach the backend's memory table; refuse
    // what the table cannot hold (QEMU 11.1.3 accepts it and fails to tell
    // the backend: "vhost_set_mem_table failed: No buffer space available").
    let in_table = 1 + st.mappings.iter().filter(|m| fd_writable(&m.fd)).count();
    if fd_writable(fd) && in_table + 1 > MAX_TABLE_REGIONS {
        return Err(reject(libc::ENOSPC, "no free vhost-user memory slot for the mapping"));
    }
    Ok(())
}

fn fd_size(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: fstat into a zeroed struct on a valid fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as u64)
}

fn fd_writable(fd: &OwnedFd) -> bool {
    // SAFETY: F_GETFL on a valid fd.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) & libc::O_ACCMODE == libc::O_RDWR }
}

fn check_unmap(inner: &Inner, st: &State, msg: &ShmemMsg) -> Result<usize, Rejection> {
    inner
        .regions
        .get(usize::from(msg.shmid))
        .and_then(Option::as_ref)
        .ok_or(reject(libc::EFAULT, "shared memory region not found or uninitialized"))?;
    st.mappings
        .iter()
        .position(|m| m.shmid == msg.shmid && m.shm_offset == msg.shm_offset && m.len == msg.len)
        .ok_or(reject(libc::EFAULT, "mapping not found"))
}

/// What an accepted request will do once acked.
enum Change {
    Map(Mapping),
    Unmap(usize),
}

/// Serves the backend channel until it closes. For each request: decide;
/// make the guest view current (apply); reply; then send the memory table.
/// So the guest never sees a stale view after the ack, and a backend that
/// waits for the ack on the thread serving the frontend never deadlocks on
/// the table. The fault switches change that order on purpose.
pub(super) fn serve(inner: &Inner, sock: &UnixStream) {
    while let Ok(Some(mut req)) = wire::recv(sock) {
        let msg = ShmemMsg::from_bytes(&req.body).filter(|_| req.body.len() == 40);
        let fd = if req.fds.is_empty() { None } else { Some(req.fds.remove(0)) };
        let with_fd = fd.is_some();
        let (fd_size, fd_rw) = (fd.as_ref().and_then(|f| fd_size(f).ok()), fd.as_ref().map(fd_writable));
        let mut st = inner.state();
        if st.faults.crash_on_stopped_map && !st.started && req.request == ShmemOp::Map.code() {
            st.died = Some("crashed on a map to a stopped device (fault switch crash_on_stopped_map)".into());
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
        if faults_silent(&st) {
            // Stuck: the request is neither answered nor carried out.
            continue;
        }
        let decided = decide(inner, &st, req.request, msg, fd);
        let ack = req.needs_reply().then(|| u64::from(decided.is_err()));
        let index = st.served.len();
        st.served.push(Served {
            sent: BackendRequest { request: req.request, msg, with_fd, fd_size, fd_rw },
            ack,
            result: decided.as_ref().map(|_| ()).map_err(|r| *r),
            apply_error: None,
        });
        let faults = st.faults;
        if let Some(d) = faults.ack_delay {
            drop(st);
            thread::sleep(d);
            st = inner.state();
        }
        let reply = |a: u64| wire::send(sock, req.request, wire::VERSION_1 | wire::FLAG_REPLY, &a.to_le_bytes(), &[]);
        let Ok(change) = decided else {
            drop(st);
            if ack.is_some_and(|a| reply(a).is_err()) {
                break;
            }
            continue;
        };
        st.pending.push_back(index);
        let mut errors = Vec::new();
        if faults.reply_before_commit {
            drop(st);
            if ack.is_some_and(|a| reply(a).is_err()) {
                break;
            }
            thread::sleep(COMMIT_DELAY);
            st = inner.state();
            errors.extend(apply(inner, &mut st, change).err());
            drop(st);
            errors.extend(send_mem_table(inner).err());
        } else {
            errors.extend(apply(inner, &mut st, change).err());
            drop(st);
            if faults.commit_before_reply {
                errors.extend(send_mem_table(inner).err());
            }
            if ack.is_some_and(|a| reply(a).is_err()) {
                break;
            }
            if !faults.commit_before_reply && !faults.no_table_update && errors.is_empty() {
                errors.extend(send_mem_table(inner).err().map(|e| format!("SET_MEM_TABLE after the reply: {e}")));
            }
        }
        let mut st = inner.state();
        if !errors.is_empty() {
            st.served[index].apply_error = Some(errors.join("; "));
        }
        st.pending.retain(|&i| i != index);
        inner.applied.notify_all();
    }
}

/// What the model decides for one request (no change made yet).
fn decide(
    inner: &Inner,
    st: &State,
    request: u32,
    msg: Option<ShmemMsg>,
    fd: Option<OwnedFd>,
) -> Result<Change, Rejection> {
    match (request, msg) {
        (r, Some(m)) if r == ShmemOp::Map.code() => check_map(inner, st, &m, fd.as_ref()).and_then(|()| {
            let fd = fd.ok_or(reject(libc::EBADF, "Bad fd for map"))?;
            Ok(Change::Map(Mapping {
                shmid: m.shmid,
                shm_offset: m.shm_offset,
                len: m.len,
                fd_offset: m.fd_offset,
                rw: m.flags & MAP_RW != 0,
                fd,
            }))
        }),
        (r, Some(m)) if r == ShmemOp::Unmap.code() => check_unmap(inner, st, &m).map(Change::Unmap),
        (r, _) if r == ShmemOp::Map.code() || r == ShmemOp::Unmap.code() => {
            Err(reject(libc::EINVAL, "payload is not 40 bytes"))
        }
        _ => Err(reject(libc::ENOSYS, "request not handled by the model")),
    }
}

/// How many of `served` are SHMEM_MAP requests (what `refuse_map_number` counts).
pub(super) fn maps_in(served: &[Served]) -> usize {
    served.iter().filter(|s| s.sent.request == ShmemOp::Map.code()).count()
}

/// Whether the `stop_acking_after` fault has made the model silent.
fn faults_silent(st: &State) -> bool {
    st.faults.stop_acking_after.is_some_and(|k| st.served.len() >= k)
}

fn apply(inner: &Inner, st: &mut State, change: Change) -> Result<(), String> {
    match change {
        Change::Map(m) => {
            let region = inner.regions[usize::from(m.shmid)].as_ref().ok_or("region vanished")?;
            let writable = m.rw || st.faults.ignore_readonly;
            region.map_file(&m, writable).map_err(|e| format!("mmap after ack: {e}"))?;
            st.mappings.push(m);
        }
        Change::Unmap(_) if st.faults.unmap_without_effect => {}
        Change::Unmap(i) => {
            let m = st.mappings.remove(i);
            let region = inner.regions[usize::from(m.shmid)].as_ref().ok_or("region vanished")?;
            if st.faults.unmapped_reads_garbage {
                region.garbage(m.shm_offset, m.len).map_err(|e| format!("unmap after ack: {e}"))?;
            } else {
                region.clear(m.shm_offset, m.len).map_err(|e| format!("unmap after ack: {e}"))?;
            }
            if st.faults.keep_fd_after_unmap {
                st.leaked.push(m.fd);
            }
        }
    }
    Ok(())
}

/// Sends the memory table QEMU would after a change: guest RAM plus every
/// live mapping at its BAR address. Only while started, as in QEMU.
pub(super) fn send_mem_table(inner: &Inner) -> Result<(), String> {
    let st = inner.state();
    if !st.started {
        return Ok(());
    }
    let mut table = vec![VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: GUEST_RAM,
        userspace_addr: inner.guest_ram.addr as u64,
        mmap_offset: 0,
        mmap_handle: inner.guest_ram.file.as_raw_fd(),
    }];
    // Dups, so the state is not held while the backend answers (it may take
    // its time, or never answer): the model's state stays readable.
    let mut dups = Vec::new();
    // A mapping of a read-only fd cannot be in the table: backends map
    // memory-table regions read-write (QEMU never gets here: it refuses such fds).
    for m in st.mappings.iter().filter(|m| fd_writable(&m.fd)) {
        let fd = m.fd.try_clone().map_err(|e| format!("dup of a mapping's fd: {e}"))?;
        let window = inner.window(m.shmid);
        let base = inner.regions[usize::from(m.shmid)].as_ref().map_or(0, |r| r.base);
        table.push(VhostUserMemoryRegionInfo {
            guest_phys_addr: MODEL_BAR_BASE + window + m.shm_offset,
            memory_size: m.len,
            userspace_addr: (base + m.shm_offset as usize) as u64,
            mmap_offset: m.fd_offset,
            mmap_handle: fd.as_raw_fd(),
        });
        dups.push(fd);
    }
    drop(st);
    // Backends (vm-memory's) refuse a table whose regions are not in address order.
    table.sort_by_key(|r| r.guest_phys_addr);
    if table.len() > MAX_TABLE_REGIONS {
        return Err(format!("memory table would need {} regions; vhost-user allows {MAX_TABLE_REGIONS}", table.len()));
    }
    let fe = inner.frontend.lock().unwrap_or_else(|p| p.into_inner());
    inner.state().waiting = Some(("SET_MEM_TABLE", Instant::now()));
    let sent = fe.set_mem_table(&table).map(|_| ()).map_err(|e| e.to_string());
    inner.state().waiting = None;
    drop(dups);
    sent
}
