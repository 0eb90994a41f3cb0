//! The fake virtio-media device's commands: a session, MMAP capture buffers
//! in memfds (page-sized, mapped with SHMEM_MAP), frames in the pattern
//! simple-capture writes, DQBUF events. Bent by one [`MediaFault`] at a
//! time. Moves bytes only through [`Shmem`] and the buffers it returns;
//! the queues are the caller's.

use std::os::unix::fs::FileExt;

use shmem_virtio_media::frame;
use shmem_virtio_media::proto::{self, u32_at, u64_at};

use crate::files::HostFile;
use shmem_proto::PAGE_SIZE;

/// One way the fake backend is wrong on purpose (`None`: a correct backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaFault {
    None,
    /// Every frame has one byte off the pattern.
    WrongFrames,
    /// MMAP reports success when its SHMEM_MAP was refused.
    HideRefusal,
    /// OPEN is answered with a 5-byte response.
    ShortAnswer,
    /// STREAMON is never answered.
    Stall,
    /// CLOSE keeps the buffers' memfds.
    KeepMemfds,
    /// The process exits at STREAMOFF.
    ExitMidSession,
    /// QBUF is answered with errno 5 (EIO).
    ErrnoOnQbuf,
    /// GET_SHMEM_CONFIG reports a region of 0x1234 bytes.
    UnalignedRegion,
}

impl MediaFault {
    pub const ALL: [MediaFault; 9] = [
        MediaFault::None,
        MediaFault::WrongFrames,
        MediaFault::HideRefusal,
        MediaFault::ShortAnswer,
        MediaFault::Stall,
        MediaFault::KeepMemfds,
        MediaFault::ExitMidSession,
        MediaFault::ErrnoOnQbuf,
        MediaFault::UnalignedRegion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MediaFault::None => "none",
            MediaFault::WrongFrames => "wrong-frames",
            MediaFault::HideRefusal => "hide-refusal",
            MediaFault::ShortAnswer => "short-answer",
            MediaFault::Stall => "stall",
            MediaFault::KeepMemfds => "keep-memfds",
            MediaFault::ExitMidSession => "exit-mid-session",
            MediaFault::ErrnoOnQbuf => "errno-on-qbuf",
            MediaFault::UnalignedRegion => "unaligned-region",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// The backend channel as the device uses it: `true` when the frontend acked (ack 0).
pub trait Shmem {
    fn map(&self, fd: &HostFile, shm_offset: u64, len: u64, rw: bool) -> bool;
    fn unmap(&self, shm_offset: u64, len: u64) -> bool;
}

struct Buffer {
    file: HostFile,
    /// Where it is mapped in region 0, if it is.
    at: Option<u64>,
    queued: bool,
}

/// What the device answers a command: the response bytes, or none (used length 0).
pub enum Answer {
    Bytes(Vec<u8>),
    /// Nothing yet: the chain stays the device's.
    Withheld,
}

/// A frame ready for the event queue: the DQBUF event bytes.
pub type EventBytes = Vec<u8>;

pub struct Device {
    pub fault: MediaFault,
    session: Option<u32>,
    buffers: Vec<Buffer>,
    kept: Vec<HostFile>,
    streaming: bool,
    sequence: u32,
    next_shm: u64,
}

const EINVAL: u32 = 22;
const EIO: u32 = 5;
const EBADF: u32 = 9;
/// A buffer's length: the frame, in whole pages.
const BUF_LEN: u64 = (frame::FRAME_LEN as u64).next_multiple_of(PAGE_SIZE);

fn ok(payload: &[u8]) -> Answer {
    let mut r = vec![0u8; 8];
    r.extend_from_slice(payload);
    Answer::Bytes(r)
}

fn errno(e: u32) -> Answer {
    let mut r = e.to_le_bytes().to_vec();
    r.extend_from_slice(&[0; 4]);
    Answer::Bytes(r)
}

impl Device {
    pub fn new(fault: MediaFault) -> Self {
        Device {
            fault,
            session: None,
            buffers: Vec::new(),
            kept: Vec::new(),
            streaming: false,
            sequence: 0,
            next_shm: 0,
        }
    }

    /// A device reset (the frontend stopped the command queue): sessions and
    /// buffers are gone (the frontend drops the mappings itself); frame
    /// sequence numbers go on.
    pub fn reset(&mut self) {
        self.session = None;
        self.streaming = false;
        self.buffers.clear();
        self.next_shm = 0;
    }

    /// Region sizes by shmid, as GET_SHMEM_CONFIG reports them.
    pub fn regions(&self) -> Vec<u64> {
        if self.fault == MediaFault::UnalignedRegion { vec![0x1234] } else { vec![1 << 32] }
    }

    /// Answers one command of the command queue.
    pub fn command(&mut self, req: &[u8], shmem: &dyn Shmem) -> Answer {
        match u32_at(req, 0) {
            Some(proto::CMD_OPEN) => self.open(),
            Some(proto::CMD_CLOSE) => {
                self.close();
                Answer::Bytes(Vec::new())
            }
            Some(proto::CMD_IOCTL) => self.ioctl(u32_at(req, 12).unwrap_or(0), req.get(16..).unwrap_or_default()),
            Some(proto::CMD_MMAP) => self.mmap(
                u32_at(req, 16).unwrap_or(u32::MAX),
                u32_at(req, 12).unwrap_or(0) & proto::MMAP_FLAG_RW != 0,
                shmem,
            ),
            Some(proto::CMD_MUNMAP) => self.munmap(u64_at(req, 8).unwrap_or(u64::MAX), shmem),
            _ => errno(EINVAL),
        }
    }

    fn open(&mut self) -> Answer {
        if self.fault == MediaFault::ShortAnswer {
            return Answer::Bytes(vec![0; 5]);
        }
        self.session = Some(1);
        ok(&1u32.to_le_bytes())
    }

    fn close(&mut self) {
        self.session = None;
        self.streaming = false;
        let files = self.buffers.drain(..).map(|b| b.file);
        if self.fault == MediaFault::KeepMemfds {
            self.kept.extend(files);
        }
    }

    fn ioctl(&mut self, code: u32, payload: &[u8]) -> Answer {
        match code {
            proto::VIDIOC_S_FMT => {
                let mut f = payload.to_vec();
                f.resize(208, 0);
                f[188] = 1;
                ok(&f)
            }
            proto::VIDIOC_REQBUFS => self.reqbufs(u32_at(payload, 0).unwrap_or(0).min(8)),
            proto::VIDIOC_QUERYBUF => match self.buffer_bytes(u32_at(payload, 0).unwrap_or(u32::MAX), 0) {
                Some(b) => ok(&b),
                None => errno(EINVAL),
            },
            proto::VIDIOC_QBUF if self.fault == MediaFault::ErrnoOnQbuf => errno(EIO),
            proto::VIDIOC_QBUF => match self.buffers.get_mut(u32_at(payload, 0).unwrap_or(u32::MAX) as usize) {
                Some(b) => {
                    b.queued = true;
                    ok(payload)
                }
                None => errno(EINVAL),
            },
            proto::VIDIOC_STREAMON if self.fault == MediaFault::Stall => Answer::Withheld,
            proto::VIDIOC_STREAMON => {
                self.streaming = true;
                ok(&[])
            }
            proto::VIDIOC_STREAMOFF => {
                if self.fault == MediaFault::ExitMidSession {
                    std::process::exit(3);
                }
                self.streaming = false;
                ok(&[])
            }
            _ => errno(EINVAL),
        }
    }

    fn reqbufs(&mut self, count: u32) -> Answer {
        let made: std::io::Result<Vec<Buffer>> = (0..count)
            .map(|i| {
                HostFile::create(&format!("fake-media-buffer-{i}"), BUF_LEN).map(|file| Buffer {
                    file,
                    at: None,
                    queued: false,
                })
            })
            .collect();
        match made {
            Ok(b) => {
                self.buffers = b;
                ok(&count.to_le_bytes())
            }
            Err(_) => errno(EIO),
        }
    }

    /// A struct v4l2_buffer and its one plane for buffer `index`.
    fn buffer_bytes(&self, index: u32, sequence: u32) -> Option<Vec<u8>> {
        self.buffers.get(index as usize)?;
        let mut b = proto::buffer(index, 1);
        b[56..60].copy_from_slice(&sequence.to_le_bytes());
        let p = proto::V4L2_BUFFER_LEN;
        b[p..p + 4].copy_from_slice(&(frame::FRAME_LEN as u32).to_le_bytes());
        b[p + 4..p + 8].copy_from_slice(&(BUF_LEN as u32).to_le_bytes());
        b[p + 8..p + 12].copy_from_slice(&(index * BUF_LEN as u32).to_le_bytes());
        Some(b)
    }

    fn mmap(&mut self, offset: u32, rw: bool, shmem: &dyn Shmem) -> Answer {
        let Some(b) = self.buffers.get_mut((u64::from(offset) / BUF_LEN) as usize) else { return errno(EINVAL) };
        let at = self.next_shm;
        if !shmem.map(&b.file, at, BUF_LEN, rw) && self.fault != MediaFault::HideRefusal {
            return errno(EINVAL);
        }
        self.next_shm += BUF_LEN;
        b.at = Some(at);
        let mut p = at.to_le_bytes().to_vec();
        p.extend_from_slice(&BUF_LEN.to_le_bytes());
        ok(&p)
    }

    fn munmap(&mut self, addr: u64, shmem: &dyn Shmem) -> Answer {
        let Some(b) = self.buffers.iter_mut().find(|b| b.at == Some(addr)) else { return errno(EINVAL) };
        b.at = None;
        if shmem.unmap(addr, BUF_LEN) { ok(&[]) } else { errno(EBADF) }
    }

    /// The next frame, when streaming and a buffer is queued: written into
    /// its memfd, its DQBUF event returned.
    pub fn next_frame(&mut self) -> Option<EventBytes> {
        if !self.streaming {
            return None;
        }
        let index = self.buffers.iter().position(|b| b.queued)?;
        let seq = self.sequence;
        let mut bytes: Vec<u8> = (0..frame::FRAME_LEN).map(|i| frame::expected(seq, i)).collect();
        if self.fault == MediaFault::WrongFrames {
            bytes[1000] ^= 0xff;
        }
        let b = &mut self.buffers[index];
        b.file.file().write_all_at(&bytes, 0).ok()?;
        b.queued = false;
        self.sequence += 1;
        let mut ev = proto::EVENT_DQBUF.to_le_bytes().to_vec();
        ev.extend_from_slice(&self.session.unwrap_or(0).to_le_bytes());
        ev.extend(self.buffer_bytes(index as u32, seq)?);
        Some(ev)
    }
}
