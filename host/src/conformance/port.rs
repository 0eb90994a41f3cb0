//! A session's driver steps, whoever carries them: the model's own driver
//! over the model's guest RAM (`ModelPort`), or the guest agent driving the
//! device inside a QEMU guest (`vm::conformance_boot`'s port). Carries; records nothing.

use std::time::Duration;

use shmem_virtio_media::driver::{self, Driver, MediaError};
use shmem_virtio_media::frame;
use shmem_virtio_media::proto::{BufferInfo, Event};

use super::transport::ModelTransport;
use crate::model::ModelFrontend;
use shmem_judge::backend::record::FrameSeen;

/// The virtio-media driver's steps a session takes, and a look at a frame through its mapping.
pub trait MediaPort {
    fn open(&mut self) -> Result<u32, MediaError>;
    /// S_FMT (the capture pattern's format), REQBUFS of `count`, QUERYBUF of each.
    fn setup_capture(&mut self, count: u32) -> Result<Vec<BufferInfo>, MediaError>;
    /// MMAP of the buffer at V4L2 offset `offset`: (shm offset, length).
    fn mmap(&mut self, offset: u32, rw: bool) -> Result<(u64, u64), MediaError>;
    fn munmap(&mut self, addr: u64) -> Result<(), MediaError>;
    fn qbuf(&mut self, index: u32) -> Result<(), MediaError>;
    fn stream(&mut self, on: bool) -> Result<(), MediaError>;
    fn close(&mut self) -> Result<(), MediaError>;
    /// The next event of the event queue.
    fn next_event(&mut self) -> Result<Event, MediaError>;
    /// MMAP/MUNMAP of the buffer at `offset`, `cycles` times, each sent the
    /// moment the last is answered, for at most `time`: the cycles done, or
    /// how many were done when a command failed, and its error.
    fn churn(&mut self, offset: u32, cycles: usize, time: std::time::Duration) -> Result<usize, (usize, MediaError)>;
    /// The frame of buffer `b` as the driver's side sees it at shm offset `addr` of region 0.
    fn see_frame(&mut self, addr: u64, b: BufferInfo) -> FrameSeen;
    /// Resets the device (status 0) and brings it up again: queues, DRIVER_OK.
    fn reset(&mut self) -> Result<(), MediaError>;
}

/// The device brought up on the model as QEMU does at DRIVER_OK: a fresh
/// driver in `d`, its queues started, its event buffers posted.
pub fn model_up(model: &ModelFrontend, d: &mut Driver, timeout: Duration) -> Result<(), MediaError> {
    *d = Driver::new(&ModelTransport::pages());
    d.prepare(&mut ModelTransport::new(model, timeout));
    let up = model.start().and_then(|()| model.start_queues(&d.queues(), driver::QUEUE_SIZE));
    up.map_err(|e| MediaError::Malformed(format!("starting the device: {e}")))
}

/// The model's driver: its rings in the model's guest RAM, frames read through the model's view of the mapping.
pub struct ModelPort<'a> {
    pub d: &'a mut Driver,
    pub t: ModelTransport<'a>,
}

impl MediaPort for ModelPort<'_> {
    fn open(&mut self) -> Result<u32, MediaError> {
        self.d.open(&mut self.t)
    }
    fn setup_capture(&mut self, count: u32) -> Result<Vec<BufferInfo>, MediaError> {
        self.d.setup_capture(&mut self.t, count, (frame::WIDTH, frame::HEIGHT, frame::FOURCC))
    }
    fn mmap(&mut self, offset: u32, rw: bool) -> Result<(u64, u64), MediaError> {
        self.d.mmap(&mut self.t, offset, rw)
    }
    fn munmap(&mut self, addr: u64) -> Result<(), MediaError> {
        self.d.munmap(&mut self.t, addr)
    }
    fn qbuf(&mut self, index: u32) -> Result<(), MediaError> {
        self.d.qbuf(&mut self.t, index)
    }
    fn stream(&mut self, on: bool) -> Result<(), MediaError> {
        self.d.stream(&mut self.t, on)
    }
    fn close(&mut self) -> Result<(), MediaError> {
        self.d.close(&mut self.t)
    }
    fn next_event(&mut self) -> Result<Event, MediaError> {
        self.d.next_event(&mut self.t, "a DQBUF event")
    }
    fn churn(&mut self, offset: u32, cycles: usize, time: std::time::Duration) -> Result<usize, (usize, MediaError)> {
        let until = std::time::Instant::now() + time;
        self.d.churn(&mut self.t, offset, cycles, &mut || std::time::Instant::now() < until)
    }
    fn reset(&mut self) -> Result<(), MediaError> {
        let model = self.t.model;
        model.reset().map_err(|e| MediaError::Malformed(format!("reset (GET_VRING_BASE, mappings dropped): {e}")))?;
        model_up(model, self.d, self.t.timeout)?;
        self.t = ModelTransport::new(model, self.t.timeout);
        Ok(())
    }
    fn see_frame(&mut self, addr: u64, b: BufferInfo) -> FrameSeen {
        let mut f =
            FrameSeen { index: b.index, sequence: b.sequence, shm_offset: addr, mismatch: None, unreadable: None };
        match self.t.model.read(0, addr, frame::FRAME_LEN as u64) {
            Ok(Ok(bytes)) => f.mismatch = frame::first_mismatch(&bytes, b.sequence),
            Ok(Err(a)) => f.unreadable = Some(format!("nothing readable mapped there ({a:?})")),
            Err(e) => f.unreadable = Some(e.to_string()),
        }
        f
    }
}
