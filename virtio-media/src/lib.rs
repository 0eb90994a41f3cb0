//! virtio-media driver logic shared by the host's model driver
//! (`shmem_host::media`) and the guest agent: split virtqueues over memory
//! the caller reaches, the commands and V4L2 payloads of an MMAP capture, and
//! the pattern simple-capture writes. No I/O: callers move bytes, ring
//! doorbells and decide how long to wait.

pub mod driver;
pub mod frame;
pub mod proto;
pub mod virtq;
pub mod wire;
