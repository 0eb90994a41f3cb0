//! A virtio-media driver for one capture session: the command queue (0) and
//! the event queue (1) in pages the caller provides, each command a chain of a
//! device-readable request and a device-writable response. Waiting is the
//! transport's: it says when to give up.

use crate::proto::{self, BufferInfo, Event};
use crate::virtq::{Buf, GuestMemory, QueueAddrs, SplitQueue};

pub const QUEUE_SIZE: u16 = 16;
/// Event buffers kept posted on the event queue.
pub const EVENT_BUFS: usize = 8;
/// Pages the driver needs: the two queues, a request, a response, the event buffers.
pub const DMA_PAGES: usize = 4 + EVENT_BUFS;
const PAGE: u32 = 4096;

/// What carries the driver's requests: guest memory, a doorbell, a clock.
pub trait Transport: GuestMemory {
    fn notify(&mut self, queue: u16);
    /// A wait begins (the transport starts its timeout).
    fn begin_wait(&mut self);
    /// Called between polls; `false` once the wait has lasted too long.
    fn idle(&mut self) -> bool;
}

/// Why a driver step did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaError {
    /// The device did not answer `what` in the transport's time.
    Timeout(String),
    /// The device answered `what` with this errno.
    Errno(String, i32),
    /// The device's answer to `what` could not be read.
    Malformed(String),
    /// The queue had no room (a driver bug).
    Full(String),
    /// `what` was not sent: the device still holds an earlier command that
    /// timed out, whose answer would land where this one's must.
    Stale(String),
}

impl MediaError {
    /// The step the error is about ("MMAP offset 0x0", "OPEN", ...).
    pub fn what(&self) -> &str {
        match self {
            MediaError::Timeout(w)
            | MediaError::Errno(w, _)
            | MediaError::Malformed(w)
            | MediaError::Full(w)
            | MediaError::Stale(w) => w,
        }
    }
}

impl std::fmt::Display for MediaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaError::Timeout(w) => write!(f, "{w}: no answer in time"),
            MediaError::Errno(w, e) => write!(f, "{w}: errno {e}"),
            MediaError::Malformed(w) => write!(f, "{w}: answer too short or unreadable"),
            MediaError::Full(w) => write!(f, "{w}: queue full"),
            MediaError::Stale(w) => write!(f, "{w}: not sent, an earlier command is still unanswered"),
        }
    }
}

pub struct Driver {
    cmdq: SplitQueue,
    evq: SplitQueue,
    request: u64,
    response: u64,
    events: Vec<u64>,
    /// Event buffer posted at each head.
    posted: std::collections::BTreeMap<u16, u64>,
    /// The head and name of a command that timed out and is still the device's.
    unanswered: Option<(u16, String)>,
    pub session: Option<u32>,
}

impl Driver {
    /// `pages`: [`DMA_PAGES`] guest-physical page addresses (need not be contiguous).
    pub fn new(pages: &[u64]) -> Self {
        assert!(pages.len() >= DMA_PAGES, "the driver needs {DMA_PAGES} pages");
        Driver {
            cmdq: SplitQueue::in_page(pages[0], QUEUE_SIZE),
            evq: SplitQueue::in_page(pages[1], QUEUE_SIZE),
            request: pages[2],
            response: pages[3],
            events: pages[4..DMA_PAGES].to_vec(),
            posted: std::collections::BTreeMap::new(),
            unanswered: None,
            session: None,
        }
    }

    pub fn queues(&self) -> [QueueAddrs; 2] {
        [self.cmdq.addrs, self.evq.addrs]
    }

    /// Zeroes both queues and posts every event buffer (before the device is started).
    pub fn prepare(&mut self, t: &mut impl Transport) {
        self.cmdq.clear(t);
        self.evq.clear(t);
        self.posted.clear();
        self.unanswered = None;
        for gpa in self.events.clone() {
            self.post(t, gpa);
        }
    }

    fn post(&mut self, t: &mut impl Transport, gpa: u64) {
        if let Some(head) = self.evq.add(t, &[Buf { gpa, len: PAGE, writable: true }]) {
            self.posted.insert(head, gpa);
        }
    }

    /// Sends one command and returns the response bytes the device wrote.
    /// Only the chain this command made counts as its answer: an earlier
    /// command's late answer is dropped, and while that command is still
    /// the device's, nothing is sent (its answer would land in the same page).
    pub fn command(&mut self, t: &mut impl Transport, cmd: &[u8], what: &str) -> Result<Vec<u8>, MediaError> {
        self.drop_late_answer(t)?;
        if let Some((_, pending)) = &self.unanswered {
            return Err(MediaError::Stale(format!("{what} (after {pending})")));
        }
        t.write(self.request, cmd);
        t.write(self.response, &[0xff; 8]);
        let chain = [
            Buf { gpa: self.request, len: cmd.len() as u32, writable: false },
            Buf { gpa: self.response, len: PAGE, writable: true },
        ];
        let head = self.cmdq.add(t, &chain).ok_or_else(|| MediaError::Full(what.into()))?;
        t.notify(0);
        t.begin_wait();
        loop {
            if let Some((used, len)) = self.cmdq.take_used(t) {
                if used != head {
                    // This command's chain is still the device's: nothing is sent until it comes back.
                    self.unanswered = Some((head, what.into()));
                    return Err(MediaError::Malformed(format!(
                        "{what}: the device returned chain {used}, not this command's {head}"
                    )));
                }
                if len > PAGE {
                    return Err(MediaError::Malformed(format!(
                        "{what}: used length {len} is past the {PAGE}-byte response buffer"
                    )));
                }
                let mut resp = vec![0u8; len as usize];
                t.read(self.response, &mut resp);
                return Ok(resp);
            }
            if !t.idle() {
                self.unanswered = Some((head, what.into()));
                return Err(MediaError::Timeout(what.into()));
            }
        }
    }

    /// Takes back the chain of a command that timed out, if the device has returned it since.
    fn drop_late_answer(&mut self, t: &mut impl Transport) -> Result<(), MediaError> {
        let Some((head, pending)) = self.unanswered.clone() else { return Ok(()) };
        match self.cmdq.take_used(t) {
            None => Ok(()),
            Some((used, _)) if used == head => {
                self.unanswered = None;
                Ok(())
            }
            Some((used, _)) => Err(MediaError::Malformed(format!(
                "the device returned chain {used} while {pending}'s chain {head} was outstanding"
            ))),
        }
    }

    /// A command whose response must say errno 0; returns the payload after
    /// the 8-byte header (status, padding).
    fn checked(&mut self, t: &mut impl Transport, cmd: &[u8], what: &str) -> Result<Vec<u8>, MediaError> {
        let resp = self.command(t, cmd, what)?;
        let short =
            || MediaError::Malformed(format!("{what}: {}-byte response, shorter than its 8-byte header", resp.len()));
        match proto::errno(&resp) {
            Some(0) => resp.get(8..).map(<[u8]>::to_vec).ok_or_else(short),
            Some(e) if resp.len() >= 8 => Err(MediaError::Errno(what.into(), e)),
            _ => Err(short()),
        }
    }

    pub fn open(&mut self, t: &mut impl Transport) -> Result<u32, MediaError> {
        let p = self.checked(t, &proto::open(), "OPEN")?;
        let id = proto::u32_at(&p, 0).ok_or_else(|| MediaError::Malformed("OPEN".into()))?;
        self.session = Some(id);
        Ok(id)
    }

    fn sid(&self) -> u32 {
        self.session.unwrap_or(0)
    }

    pub fn ioctl(
        &mut self,
        t: &mut impl Transport,
        code: u32,
        payload: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, MediaError> {
        let cmd = proto::ioctl(self.sid(), code, payload);
        self.checked(t, &cmd, what)
    }

    /// S_FMT, REQBUFS (a device that grants more than [`MAX_BUFFERS`] is
    /// malformed) and QUERYBUF of each buffer: what a capture needs before MMAP.
    pub fn setup_capture(
        &mut self,
        t: &mut impl Transport,
        count: u32,
        fmt: (u32, u32, [u8; 4]),
    ) -> Result<Vec<BufferInfo>, MediaError> {
        let f = self.ioctl(t, proto::VIDIOC_S_FMT, &proto::format(fmt.0, fmt.1, fmt.2), "S_FMT")?;
        proto::format_of(&f).ok_or_else(|| MediaError::Malformed("S_FMT".into()))?;
        let r = self.ioctl(t, proto::VIDIOC_REQBUFS, &proto::reqbufs(count), "REQBUFS")?;
        let granted = proto::u32_at(&r, 0).ok_or_else(|| MediaError::Malformed("REQBUFS".into()))?;
        if granted > MAX_BUFFERS {
            return Err(MediaError::Malformed(format!(
                "REQBUFS: the device granted {granted} buffers for the {count} asked, more than V4L2's {MAX_BUFFERS}"
            )));
        }
        (0..granted)
            .map(|i| {
                let what = format!("QUERYBUF {i}");
                let b = self.ioctl(t, proto::VIDIOC_QUERYBUF, &proto::buffer(i, proto::MAX_PLANES), &what)?;
                proto::buffer_of(&b).ok_or(MediaError::Malformed(what))
            })
            .collect()
    }

    /// MMAP of the buffer at V4L2 offset `offset`: where the device put it in
    /// its shared memory region, and its length.
    pub fn mmap(&mut self, t: &mut impl Transport, offset: u32, rw: bool) -> Result<(u64, u64), MediaError> {
        let what = format!("MMAP offset {offset:#x}");
        let p = self.checked(t, &proto::mmap(self.sid(), offset, rw), &what)?;
        Ok((
            proto::u64_at(&p, 0).ok_or_else(|| MediaError::Malformed(what.clone()))?,
            proto::u64_at(&p, 8).ok_or(MediaError::Malformed(what))?,
        ))
    }

    pub fn munmap(&mut self, t: &mut impl Transport, addr: u64) -> Result<(), MediaError> {
        self.checked(t, &proto::munmap(addr), &format!("MUNMAP {addr:#x}")).map(|_| ())
    }

    /// MMAP then MUNMAP of the buffer at V4L2 offset `offset`, `cycles`
    /// times, each command sent the moment the last is answered, while
    /// `more()` allows (a time bound). The cycles done, or how many were
    /// done when a command failed, and its error.
    pub fn churn(
        &mut self,
        t: &mut impl Transport,
        offset: u32,
        cycles: usize,
        more: &mut dyn FnMut() -> bool,
    ) -> Result<usize, (usize, MediaError)> {
        for done in 0..cycles {
            if !more() {
                return Ok(done);
            }
            let (addr, _) = self.mmap(t, offset, false).map_err(|e| (done, e))?;
            self.munmap(t, addr).map_err(|e| (done, e))?;
        }
        Ok(cycles)
    }

    pub fn qbuf(&mut self, t: &mut impl Transport, index: u32) -> Result<(), MediaError> {
        self.ioctl(t, proto::VIDIOC_QBUF, &proto::buffer(index, 1), &format!("QBUF {index}")).map(|_| ())
    }

    pub fn stream(&mut self, t: &mut impl Transport, on: bool) -> Result<(), MediaError> {
        let (code, what) =
            if on { (proto::VIDIOC_STREAMON, "STREAMON") } else { (proto::VIDIOC_STREAMOFF, "STREAMOFF") };
        self.ioctl(t, code, &proto::CAPTURE_MPLANE.to_le_bytes(), what).map(|_| ())
    }

    /// CLOSE has no response; the device returns the chain when done.
    pub fn close(&mut self, t: &mut impl Transport) -> Result<(), MediaError> {
        let cmd = proto::close(self.sid());
        self.command(t, &cmd, "CLOSE")?;
        self.session = None;
        Ok(())
    }

    /// The next event, its buffer posted again.
    pub fn next_event(&mut self, t: &mut impl Transport, what: &str) -> Result<Event, MediaError> {
        t.begin_wait();
        loop {
            if let Some((head, len)) = self.evq.take_used(t) {
                let gpa = self
                    .posted
                    .remove(&head)
                    .ok_or_else(|| MediaError::Malformed(format!("{what}: used head {head} was never posted")))?;
                if len > PAGE {
                    self.post(t, gpa);
                    return Err(MediaError::Malformed(format!(
                        "{what}: used length {len} is past the {PAGE}-byte event buffer"
                    )));
                }
                let mut b = vec![0u8; len as usize];
                t.read(gpa, &mut b);
                self.post(t, gpa);
                t.notify(1);
                return proto::event_of(&b).ok_or_else(|| MediaError::Malformed(what.into()));
            }
            if !t.idle() {
                return Err(MediaError::Timeout(what.into()));
            }
        }
    }
}

/// The most buffers a V4L2 queue holds (VIDEO_MAX_FRAME).
pub const MAX_BUFFERS: u32 = 32;

#[cfg(test)]
mod tests;
