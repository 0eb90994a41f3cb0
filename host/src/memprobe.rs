//! Fault-free access to memory that may be unmapped or read-only: the kernel
//! copies through a pipe and reports EFAULT instead of raising SIGSEGV.
//! Used to look at the model's regions the way a guest would.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Largest chunk moved through the pipe at once (below the pipe's capacity).
const CHUNK: usize = 4096;

/// How an access ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The first byte (relative to the start) that could not be accessed.
    FaultAt(u64),
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned only here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads `len` bytes at `addr`. `Ok(Err(FaultAt(i)))` when byte i's page is
/// not readable; chunks are page-sized so a fault is located to its page.
///
/// # Safety
/// `addr..addr+len` must be inside an address range this process reserved
/// (it may be PROT_NONE), so no unrelated object is read.
pub unsafe fn read(addr: *const u8, len: usize) -> io::Result<Result<Vec<u8>, Access>> {
    let (r, w) = pipe()?;
    let mut out = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        // SAFETY: the caller vouches for the range; the kernel checks access.
        let wrote = unsafe { libc::write(w.as_raw_fd(), addr.add(done).cast(), n) };
        if wrote < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EFAULT) {
                return Ok(Err(Access::FaultAt(done as u64)));
            }
            return Err(e);
        }
        let wrote = wrote as usize;
        // SAFETY: reading into our own buffer.
        let got = unsafe { libc::read(r.as_raw_fd(), out.as_mut_ptr().add(done).cast(), wrote) };
        if got != wrote as isize {
            return Err(io::Error::other("short read from the probe pipe"));
        }
        done += wrote;
    }
    Ok(Ok(out))
}

/// Writes `data` at `addr`. `Ok(Err(FaultAt(i)))` when byte i's page is not
/// writable (read-only or unmapped); bytes before it may have been written.
///
/// # Safety
/// As for [`read`]: the range must be one this process reserved.
pub unsafe fn write(addr: *mut u8, data: &[u8]) -> io::Result<Result<(), Access>> {
    let (r, w) = pipe()?;
    let mut done = 0;
    while done < data.len() {
        let n = CHUNK.min(data.len() - done);
        // SAFETY: writing from our own buffer into the pipe.
        let wrote = unsafe { libc::write(w.as_raw_fd(), data.as_ptr().add(done).cast(), n) };
        if wrote != n as isize {
            return Err(io::Error::other("short write into the probe pipe"));
        }
        // SAFETY: the caller vouches for the range; the kernel checks access.
        let got = unsafe { libc::read(r.as_raw_fd(), addr.add(done).cast(), n) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EFAULT) {
                return Ok(Err(Access::FaultAt(done as u64)));
            }
            return Err(e);
        }
        if got as usize != n {
            return Ok(Err(Access::FaultAt((done + got as usize) as u64)));
        }
        done += n;
    }
    Ok(Ok(()))
}
