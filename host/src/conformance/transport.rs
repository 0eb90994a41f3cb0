//! The model's side of the driver's transport: guest RAM for the rings and
//! buffers, the kick eventfds as doorbells, a deadline per wait.

use std::time::{Duration, Instant};

use shmem_virtio_media::driver::Transport;
use shmem_virtio_media::virtq::GuestMemory;

use crate::model::ModelFrontend;

/// First guest-physical page the driver uses in the model's guest RAM.
pub const DMA_BASE: u64 = 0x10_0000;

pub struct ModelTransport<'a> {
    pub model: &'a ModelFrontend,
    pub timeout: Duration,
    deadline: Instant,
}

impl<'a> ModelTransport<'a> {
    pub fn new(model: &'a ModelFrontend, timeout: Duration) -> Self {
        ModelTransport { model, timeout, deadline: Instant::now() + timeout }
    }

    /// The driver's pages, contiguous here.
    pub fn pages() -> Vec<u64> {
        (0..shmem_virtio_media::driver::DMA_PAGES as u64).map(|i| DMA_BASE + i * 4096).collect()
    }
}

impl GuestMemory for ModelTransport<'_> {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) {
        // The driver only touches its own pages, inside guest RAM.
        self.model.ram_read(gpa, buf).unwrap_or_else(|e| panic!("driver read outside its pages: {e}"));
    }
    fn write(&mut self, gpa: u64, data: &[u8]) {
        self.model.ram_write(gpa, data).unwrap_or_else(|e| panic!("driver write outside its pages: {e}"));
    }
}

impl Transport for ModelTransport<'_> {
    fn notify(&mut self, queue: u16) {
        // A queue that was not started has no doorbell: the wait then times out and says so.
        let _ = self.model.kick(queue);
    }
    fn begin_wait(&mut self) {
        self.deadline = Instant::now() + self.timeout;
    }
    fn idle(&mut self) -> bool {
        std::thread::sleep(Duration::from_micros(200));
        Instant::now() < self.deadline
    }
}
