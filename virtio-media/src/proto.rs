//! The virtio-media commands and the V4L2 payloads of a multi-planar MMAP
//! capture, as bytes (virtio-media's `protocol.rs`, Linux's `videodev2.h`
//! for x86_64): encoders for what a driver sends, readers for what it gets.

pub const CMD_OPEN: u32 = 1;
pub const CMD_CLOSE: u32 = 2;
pub const CMD_IOCTL: u32 = 3;
pub const CMD_MMAP: u32 = 4;
pub const CMD_MUNMAP: u32 = 5;
pub const MMAP_FLAG_RW: u32 = 1;

pub const VIDIOC_S_FMT: u32 = 5;
pub const VIDIOC_REQBUFS: u32 = 8;
pub const VIDIOC_QUERYBUF: u32 = 9;
pub const VIDIOC_QBUF: u32 = 15;
pub const VIDIOC_STREAMON: u32 = 18;
pub const VIDIOC_STREAMOFF: u32 = 19;

/// V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.
pub const CAPTURE_MPLANE: u32 = 9;
/// V4L2_MEMORY_MMAP.
pub const MEMORY_MMAP: u32 = 1;
pub const EVENT_ERROR: u32 = 0;
pub const EVENT_DQBUF: u32 = 1;

/// sizeof(struct v4l2_buffer), sizeof(struct v4l2_plane), VIDEO_MAX_PLANES.
pub const V4L2_BUFFER_LEN: usize = 88;
pub const V4L2_PLANE_LEN: usize = 64;
pub const MAX_PLANES: usize = 8;
/// sizeof(struct v4l2_format).
const V4L2_FORMAT_LEN: usize = 208;

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

pub fn open() -> Vec<u8> {
    words(&[CMD_OPEN, 0])
}

pub fn close(session: u32) -> Vec<u8> {
    words(&[CMD_CLOSE, 0, session, 0])
}

pub fn ioctl(session: u32, code: u32, payload: &[u8]) -> Vec<u8> {
    let mut c = words(&[CMD_IOCTL, 0, session, code]);
    c.extend_from_slice(payload);
    c
}

pub fn mmap(session: u32, offset: u32, rw: bool) -> Vec<u8> {
    words(&[CMD_MMAP, 0, session, if rw { MMAP_FLAG_RW } else { 0 }, offset])
}

pub fn munmap(driver_addr: u64) -> Vec<u8> {
    let mut c = words(&[CMD_MUNMAP, 0]);
    c.extend_from_slice(&driver_addr.to_le_bytes());
    c
}

/// The errno of a response (its first word; 0 is success).
pub fn errno(resp: &[u8]) -> Option<i32> {
    u32_at(resp, 0).map(|e| e as i32)
}

/// A struct v4l2_format asking for a multi-planar capture of `width` x `height` in `fourcc`.
pub fn format(width: u32, height: u32, fourcc: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; V4L2_FORMAT_LEN];
    f[..4].copy_from_slice(&CAPTURE_MPLANE.to_le_bytes());
    f[8..12].copy_from_slice(&width.to_le_bytes());
    f[12..16].copy_from_slice(&height.to_le_bytes());
    f[16..20].copy_from_slice(&fourcc);
    f
}

/// (width, height, number of planes) of a struct v4l2_format in a response payload.
pub fn format_of(payload: &[u8]) -> Option<(u32, u32, u8)> {
    Some((u32_at(payload, 8)?, u32_at(payload, 12)?, *payload.get(8 + 180)?))
}

/// struct v4l2_requestbuffers for `count` MMAP capture buffers.
pub fn reqbufs(count: u32) -> Vec<u8> {
    words(&[count, CAPTURE_MPLANE, MEMORY_MMAP, 0, 0])
}

/// A struct v4l2_buffer for buffer `index` with room for `planes` planes, followed by them.
pub fn buffer(index: u32, planes: usize) -> Vec<u8> {
    let mut b = vec![0u8; V4L2_BUFFER_LEN + planes * V4L2_PLANE_LEN];
    b[..4].copy_from_slice(&index.to_le_bytes());
    b[4..8].copy_from_slice(&CAPTURE_MPLANE.to_le_bytes());
    b[60..64].copy_from_slice(&MEMORY_MMAP.to_le_bytes());
    b[72..76].copy_from_slice(&(planes as u32).to_le_bytes());
    b
}

/// What a driver learns of a buffer (QUERYBUF, or a DQBUF event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferInfo {
    pub index: u32,
    pub sequence: u32,
    pub flags: u32,
    /// The first plane's MMAP offset, length and bytes used.
    pub mem_offset: u32,
    pub length: u32,
    pub bytesused: u32,
}

/// Reads a struct v4l2_buffer followed by its planes.
pub fn buffer_of(b: &[u8]) -> Option<BufferInfo> {
    let p = V4L2_BUFFER_LEN;
    Some(BufferInfo {
        index: u32_at(b, 0)?,
        flags: u32_at(b, 12)?,
        sequence: u32_at(b, 56)?,
        bytesused: u32_at(b, p)?,
        length: u32_at(b, p + 4)?,
        mem_offset: u32_at(b, p + 8)?,
    })
}

/// An event of the event queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Dqbuf { session: u32, buffer: BufferInfo },
    Error { session: u32, errno: i32 },
    Other { kind: u32, session: u32 },
}

pub fn event_of(b: &[u8]) -> Option<Event> {
    let (kind, session) = (u32_at(b, 0)?, u32_at(b, 4)?);
    Some(match kind {
        EVENT_DQBUF => Event::Dqbuf { session, buffer: buffer_of(b.get(8..)?)? },
        EVENT_ERROR => Event::Error { session, errno: u32_at(b, 8)? as i32 },
        kind => Event::Other { kind, session },
    })
}
