//! Host files behind the mappings: memfds sized at creation and sealed
//! against resizing, with positional read/write/fill/digest. They know nothing
//! of regions or mappings.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use crate::backend::FileId;

pub use shmem_pattern::{fnv1a64, pattern_byte};

/// A memfd the mapping manager owns.
#[derive(Debug)]
pub struct HostFile {
    name: String,
    file: File,
    size: u64,
    id: FileId,
}

impl HostFile {
    /// Creates a memfd of `size` bytes (zero-filled), sealed against growing
    /// and shrinking.
    pub fn create(name: &str, size: u64) -> io::Result<Self> {
        let cname = CString::new(format!("shmem-{name}"))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("file name {name:?} contains NUL")))?;
        // SAFETY: memfd_create with a valid C string; we own the returned fd.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh memfd owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size).map_err(|e| io::Error::new(e.kind(), format!("sizing file {name:?} to {size:#x}: {e}")))?;
        // SAFETY: fcntl on our own fd.
        let sealed = unsafe {
            libc::fcntl(
                file.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
            )
        };
        if sealed != 0 {
            return Err(io::Error::last_os_error());
        }
        let id = FileId::of(&file)?;
        Ok(HostFile { name: name.to_string(), file, size, id })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn id(&self) -> FileId {
        self.id
    }
    pub fn file(&self) -> &File {
        &self.file
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("range {offset:#x}+{len:#x} is outside file {:?} of size {:#x}", self.name, self.size),
            )),
        }
    }

    pub fn read(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        self.check(offset, len)?;
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len() as u64)?;
        self.file.write_all_at(data, offset)
    }

    /// Writes `pattern_byte(seed, i)` for i in 0..len, i counted from `offset`.
    /// Written a megabyte at a time: a fill of a large sparse file never
    /// allocates the whole range.
    pub fn fill(&self, offset: u64, len: u64, seed: u8) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        self.check(offset, len)?;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let data: Vec<u8> = (done..done + n).map(|i| pattern_byte(seed, i)).collect();
            self.file.write_all_at(&data, offset + done)?;
            done += n;
        }
        Ok(())
    }

    pub fn digest(&self, offset: u64, len: u64) -> io::Result<u64> {
        Ok(fnv1a64(&self.read(offset, len)?))
    }
}

/// The backend's own shared mapping of a whole host file: for writing and
/// reading words a guest sees at the same moment (the probe's doorbell),
/// without a system call in between. Unmapped on drop.
#[derive(Debug)]
pub struct HostMapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access is a volatile word access.
unsafe impl Send for HostMapping {}

impl HostMapping {
    pub fn of(file: &HostFile) -> io::Result<Self> {
        let len = file.size() as usize;
        // SAFETY: a shared mapping of our own memfd, unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.file().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(HostMapping { ptr: p.cast(), len })
    }

    fn word(&self, off: usize) -> *mut u64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.len,
            "word {off:#x} outside a mapping of {:#x} bytes",
            self.len
        );
        // SAFETY: inside the mapping (checked above).
        unsafe { self.ptr.add(off).cast() }
    }

    pub fn read64(&self, off: usize) -> u64 {
        // SAFETY: an aligned word inside our mapping.
        unsafe { self.word(off).read_volatile() }
    }

    pub fn write64(&self, off: usize, v: u64) {
        // SAFETY: an aligned word inside our mapping.
        unsafe { self.word(off).write_volatile(v) }
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `of` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
