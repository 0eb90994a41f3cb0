//! The model's address space: each region a reserved, inaccessible range
//! that mappings are placed into, and the pretend guest RAM. Raw mmap only;
//! no vhost-user messages here.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

use super::{GUEST_RAM, Mapping};

/// One region's reserved address range.
#[derive(Debug)]
pub(super) struct Region {
    pub(super) base: usize,
    pub(super) size: u64,
}

impl Region {
    pub(super) fn reserve(size: u64) -> io::Result<Self> {
        // SAFETY: anonymous PROT_NONE reservation; we own the range until Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region { base: p as usize, size })
    }

    /// Puts the range back to inaccessible.
    pub(super) fn clear(&self, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: the range is inside our own reservation.
        let p = unsafe {
            libc::mmap(
                (self.base + offset as usize) as *mut libc::c_void,
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Puts private memory full of 0xa5 bytes over the range (a fault switch).
    pub(super) fn garbage(&self, offset: u64, len: u64) -> io::Result<()> {
        let at = (self.base + offset as usize) as *mut libc::c_void;
        // SAFETY: the range is inside our own reservation; we fill what we just mapped.
        unsafe {
            let p = libc::mmap(
                at,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            std::ptr::write_bytes(p.cast::<u8>(), 0xa5, len as usize);
        }
        Ok(())
    }

    pub(super) fn map_file(&self, m: &Mapping, writable: bool) -> io::Result<()> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: MAP_FIXED inside our own reservation, shared mapping of a file we hold.
        let p = unsafe {
            libc::mmap(
                (self.base + m.shm_offset as usize) as *mut libc::c_void,
                m.len as usize,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                m.fd.as_raw_fd(),
                m.fd_offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping the reservation we made.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size as usize) };
    }
}

/// The model's pretend guest RAM: a shared memfd mapping, unmapped on drop.
pub(super) struct GuestRam {
    pub(super) file: File,
    pub(super) addr: usize,
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `guest_ram`.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, GUEST_RAM as usize) };
    }
}

pub(super) fn guest_ram() -> io::Result<GuestRam> {
    // SAFETY: memfd_create with a static C string.
    let fd = unsafe { libc::memfd_create(c"model-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned here.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(GUEST_RAM)?;
    // SAFETY: shared mapping of our own memfd, unmapped when GuestRam drops.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            GUEST_RAM as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(GuestRam { file, addr: p as usize })
}
