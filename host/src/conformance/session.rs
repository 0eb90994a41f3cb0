//! Runs one backend session and records it: the backend under test (a
//! process, or the appliance's own backend), the model frontend with the
//! variant's fault (through a recording relay, for the wire lags), and the
//! driver's steps. Records only; `judge` decides.

use std::path::Path;
use std::time::Duration;

use shmem_virtio_media::driver::{Driver, MediaError};
use shmem_virtio_media::proto::{BufferInfo, Event};

use super::frontend::FrontendSide;
use super::port::{MediaPort, ModelPort, model_up};
use super::process::BackendProcess;
use super::transport::ModelTransport;
use shmem_judge::backend::record::{Expect, SessionRecord, Step};
use shmem_judge::backend::wire;

use super::Variant;
use crate::model::{Faults, ModelFrontend};
use crate::relay::Relay;

/// How long things may take, and how much to capture.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// One driver wait (a command's answer, an event).
    pub answer: Duration,
    /// The backend process creating its socket.
    pub start: Duration,
    pub buffers: u32,
    /// Frames read through mappings per capture.
    pub frames: usize,
    /// How long a churn may go on before it stops, however many cycles are left.
    pub churn_time: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            answer: Duration::from_secs(5),
            start: Duration::from_secs(10),
            buffers: 4,
            frames: 3,
            churn_time: Duration::from_secs(600),
        }
    }
}

const MEDIA_QUEUES: u64 = 2;

/// One session of the backend run by `command` (`{socket}` replaced), under `variant`.
pub fn run_media(command: &str, variant: Variant, dir: &Path, s: &Settings) -> SessionRecord {
    let refused_map = if let Variant::RefuseMap(k) = variant { Some(k) } else { None };
    let mut rec = SessionRecord { media: true, refused_map, ..SessionRecord::default() };
    let socket = dir.join("backend.sock");
    let mut proc = match BackendProcess::start(command, &socket, dir, s.start) {
        Ok(p) => p,
        Err(e) => {
            rec.connect_error = Some(e);
            return rec;
        }
    };
    let faults = Faults {
        accept_unaligned: true,
        refuse_map_number: refused_map,
        ack_delay: if let Variant::AckDelay(ms) = variant { Some(Duration::from_millis(ms)) } else { None },
        ..Faults::default()
    };
    // The model's side goes through the recording relay too: its wire order is judged as QEMU's is.
    let relay = match Relay::start(&dir.join("relay.sock"), &socket) {
        Ok(r) => r,
        Err(e) => {
            rec.connect_error = Some(format!("starting the recording relay: {e}"));
            return rec;
        }
    };
    match ModelFrontend::connect_seeing(relay.socket_path(), MEDIA_QUEUES, faults, &mut rec.offered) {
        Ok(mut model) => {
            rec.regions = region_sizes(&model);
            let mut d =
                Session { front: &model, rec: &mut rec, s: *s, proc: &proc, memfds_before: None, settling: true };
            d.capture(&model, variant);
            rec.memfds = d.memfds_around();
            // Before the frontend hangs up: a backend may end when its frontend goes
            // (vhost-device-media does, with status 1), and that is no fault.
            rec.dead = proc.gone();
            // Shut down first: a thread stuck on the backend is freed, and what it served is complete.
            let _ = model.shut_down(s.answer);
            super::record_frontend(&model, &mut rec);
        }
        Err(e) => {
            rec.connect_error = Some(e.to_string());
            rec.dead = proc.gone();
        }
    }
    rec.wire_lags = Some(wire::lags(&relay.finish(crate::relay::FINISH_WITHIN).0));
    rec
}

/// Region sizes by shmid, as GET_SHMEM_CONFIG reported them.
pub fn region_sizes(model: &ModelFrontend) -> Vec<u64> {
    let windows = model.region_windows();
    let n = windows.iter().map(|w| usize::from(w.0) + 1).max().unwrap_or(0);
    (0..n).map(|i| windows.iter().find(|w| usize::from(w.0) == i).map_or(0, |w| w.2)).collect()
}

/// One session carried by `port` (the guest agent in a QEMU guest) with
/// `front` in the frontend's place (the recording relay in front of QEMU),
/// the backend's memfds counted around it. The frontend's side is not in
/// the record: it says so until the caller reads it from the relay's record
/// (`shmem_judge::backend::wire`). `up` is how bringing the device up
/// (queues, DRIVER_OK) went; nothing else runs when it failed.
pub fn run_port(
    port: &mut dyn MediaPort,
    up: Result<String, MediaError>,
    proc: &BackendProcess,
    front: &dyn FrontendSide,
    variant: Variant,
    s: &Settings,
) -> SessionRecord {
    let refused_map = if let Variant::RefuseMap(k) = variant { Some(k) } else { None };
    let mut rec = SessionRecord { media: true, frontend_unseen: true, refused_map, ..SessionRecord::default() };
    let mut d = Session { front, rec: &mut rec, s: *s, proc, memfds_before: None, settling: true };
    if d.step("DRIVER_OK and queues", Expect::Success, up, Clone::clone).is_some() {
        d.drive(port, variant);
    }
    rec.memfds = d.memfds_around();
    rec
}

struct Session<'a> {
    /// The model frontend, or the relay in front of QEMU.
    front: &'a dyn FrontendSide,
    rec: &'a mut SessionRecord,
    s: Settings,
    proc: &'a BackendProcess,
    /// memfds the backend held just before the first OPEN (guest RAM's among them).
    memfds_before: Option<Result<usize, String>>,
    /// Settle after each step (see [`Session::settle`]); off for the churn.
    settling: bool,
}

impl Session<'_> {
    /// Waits until the frontend has applied every acked request and its
    /// memory table was answered: the next command then cannot meet a
    /// memory table in flight (only [`Variant::Churn`] sends without waiting).
    fn settle(&self) {
        self.front.settle(self.s.answer);
    }

    /// The backend's memfds before the first OPEN and now (after CLOSE), if counted.
    fn memfds_around(&mut self) -> Option<Result<(usize, usize), String>> {
        self.memfds_before.take().map(|b| b.and_then(|b| self.proc.memfds().map(|a| (b, a))))
    }

    fn step<T>(
        &mut self,
        what: &str,
        expect: Expect,
        r: Result<T, MediaError>,
        detail: impl Fn(&T) -> String,
    ) -> Option<T> {
        let outcome = r.as_ref().map(&detail).map_err(Clone::clone);
        if matches!(outcome, Err(MediaError::Timeout(_))) && self.rec.waiting_at_timeout.is_none() {
            self.rec.waiting_at_timeout = Some(self.front.waiting_for());
        }
        self.rec.steps.push(Step { what: what.into(), expect, outcome });
        if self.settling {
            self.settle();
        }
        r.ok()
    }

    /// The device brought up on the model as QEMU does at DRIVER_OK, then the session.
    fn capture(&mut self, model: &ModelFrontend, variant: Variant) {
        let mut d = Driver::new(&ModelTransport::pages());
        let up = model_up(model, &mut d, self.s.answer);
        if self.step("DRIVER_OK and queues", Expect::Success, up, |()| String::new()).is_some() {
            self.drive(&mut ModelPort { d: &mut d, t: ModelTransport::new(model, self.s.answer) }, variant);
        }
    }

    /// The variant's session through `port`, once the device is up.
    fn drive(&mut self, port: &mut dyn MediaPort, variant: Variant) {
        if let Variant::Churn(n) = variant {
            self.settling = false;
            return self.churn(port, n);
        }
        let fault_after_first_frame = matches!(variant, Variant::ResetMidStream | Variant::CloseChannel);
        let stopped = self.one_capture(port, variant, fault_after_first_frame);
        if variant == Variant::ResetMidStream && stopped {
            self.rec.resets.push(self.front.requests_seen());
            let r = port.reset();
            if self
                .step("device reset (mappings dropped), then DRIVER_OK and queues", Expect::Success, r, |()| {
                    String::new()
                })
                .is_some()
            {
                self.one_capture(port, Variant::Stream, false);
            }
        }
    }

    /// OPEN, format, buffers, MMAP, stream, frames, MUNMAP, CLOSE. With
    /// `stop_early`, returns after the first frame (true) for the caller's fault.
    fn one_capture(&mut self, d: &mut dyn MediaPort, variant: Variant, stop_early: bool) -> bool {
        self.memfds_before.get_or_insert_with(|| self.proc.memfds());
        self.rec.captures = true;
        if self.step("OPEN", Expect::Success, d.open(), |id| format!("session {id}")).is_none() {
            return false;
        }
        let Some(bufs) = self.step("S_FMT, REQBUFS, QUERYBUF", Expect::Success, d.setup_capture(self.s.buffers), |b| {
            format!("{} buffers", b.len())
        }) else {
            return false;
        };
        // Close-channel keeps the last buffer unmapped, to map it once the channel is gone.
        let held_back = usize::from(variant == Variant::CloseChannel);
        let mut mapped = self.map_buffers(d, &bufs[..bufs.len().saturating_sub(held_back)], variant);
        let streaming = !mapped.is_empty()
            && self.queue_all(d, &mapped)
            && self.step("STREAMON", Expect::Success, d.stream(true), |()| String::new()).is_some();
        let first = streaming && self.read_frames(d, &mapped, 1);
        if stop_early && first {
            if variant == Variant::ResetMidStream {
                return true;
            }
            self.front.close_backend_channel();
            self.rec.channel_closed = true;
            if let Some(b) = bufs.last() {
                let r = d.mmap(b.mem_offset, self.rec.asked_rw);
                self.step(&format!("MMAP buffer {} after the channel closed", b.index), Expect::Errno, r, |m| {
                    format!("{m:x?}")
                });
            }
        } else if streaming {
            self.read_frames(d, &mapped, self.s.frames.saturating_sub(1));
        }
        // Only a closed channel keeps a MUNMAP's SHMEM_UNMAP from the frontend.
        let unmap_expect = if self.rec.channel_closed { Expect::Errno } else { Expect::Success };
        if streaming {
            self.step("STREAMOFF", Expect::Success, d.stream(false), |()| String::new());
        }
        for (b, addr, _) in mapped.drain(..) {
            self.step(&format!("MUNMAP buffer {}", b.index), unmap_expect, d.munmap(addr), |()| String::new());
        }
        self.step("CLOSE", Expect::Success, d.close(), |()| String::new());
        false
    }

    /// OPEN, one buffer, then MMAP/MUNMAP of it `n` times without settling, CLOSE.
    fn churn(&mut self, d: &mut dyn MediaPort, n: usize) {
        self.memfds_before.get_or_insert_with(|| self.proc.memfds());
        if self.step("OPEN", Expect::Success, d.open(), |id| format!("session {id}")).is_none() {
            return;
        }
        let Some(bufs) = self
            .step("S_FMT, REQBUFS, QUERYBUF", Expect::Success, d.setup_capture(1), |b| format!("{} buffers", b.len()))
        else {
            return;
        };
        let Some(b) = bufs.first().copied() else { return };
        let started = std::time::Instant::now();
        let done = match d.churn(b.mem_offset, n, self.s.churn_time) {
            Ok(done) => done,
            Err((done, e)) => {
                // The step that failed, named by its command (the hang's `step_kind`).
                let op = e
                    .what()
                    .split_whitespace()
                    .next()
                    .filter(|w| ["MMAP", "MUNMAP"].contains(w))
                    .unwrap_or("MMAP/MUNMAP cycle");
                self.step::<()>(&format!("{op} #{done}"), Expect::Success, Err(e), |()| String::new());
                return;
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let bound = if done < n {
            format!(" (stopped at the time bound, {:?}, of {n})", self.s.churn_time)
        } else {
            String::new()
        };
        self.step(
            &format!("{done} MMAP/MUNMAP cycles in {secs:.1} s, {:.0} a second{bound}", done as f64 / secs.max(1e-9)),
            Expect::Success,
            Ok(()),
            |()| String::new(),
        );
        self.step("CLOSE", Expect::Success, d.close(), |()| String::new());
    }

    fn map_buffers(
        &mut self,
        d: &mut dyn MediaPort,
        bufs: &[BufferInfo],
        variant: Variant,
    ) -> Vec<(BufferInfo, u64, u64)> {
        let mut mapped = Vec::new();
        for b in bufs {
            let refused = matches!(variant, Variant::RefuseMap(k) if self.front.maps_seen() + 1 == k);
            let expect = if refused { Expect::Errno } else { Expect::Success };
            let what = format!("MMAP buffer {} (offset {:#x})", b.index, b.mem_offset);
            let mut got = self.step(&what, expect, d.mmap(b.mem_offset, self.rec.asked_rw), |m| {
                format!("at {:#x} len {:#x}", m.0, m.1)
            });
            if refused && got.is_none() {
                // The backend must have kept its allocations straight: the same buffer maps again.
                got = self.step(
                    &format!("{what} again, after the refusal"),
                    Expect::Success,
                    d.mmap(b.mem_offset, self.rec.asked_rw),
                    |m| format!("at {:#x} len {:#x}", m.0, m.1),
                );
            }
            if let Some((addr, len)) = got {
                mapped.push((*b, addr, len));
            }
        }
        mapped
    }

    fn queue_all(&mut self, d: &mut dyn MediaPort, mapped: &[(BufferInfo, u64, u64)]) -> bool {
        mapped.iter().all(|(b, _, _)| {
            self.step(&format!("QBUF {}", b.index), Expect::Success, d.qbuf(b.index), |()| String::new()).is_some()
        })
    }

    /// Waits for `n` DQBUF events, reads each frame through the model's view
    /// of its mapping, and queues the buffer again.
    fn read_frames(&mut self, d: &mut dyn MediaPort, mapped: &[(BufferInfo, u64, u64)], n: usize) -> bool {
        for _ in 0..n {
            let ev = d.next_event();
            let Some(Event::Dqbuf { buffer, .. }) =
                self.step("wait for a frame", Expect::Success, ev, |e| format!("{e:?}"))
            else {
                return false;
            };
            let Some((_, addr, _)) = mapped.iter().find(|(b, _, _)| b.index == buffer.index) else {
                self.step::<()>(
                    "frame of a mapped buffer",
                    Expect::Success,
                    Err(MediaError::Malformed(format!("DQBUF of buffer {}, which is not mapped", buffer.index))),
                    |()| String::new(),
                );
                return false;
            };
            self.rec.frames.push(d.see_frame(*addr, buffer));
            if self
                .step(&format!("QBUF {} again", buffer.index), Expect::Success, d.qbuf(buffer.index), |()| {
                    String::new()
                })
                .is_none()
            {
                return false;
            }
        }
        true
    }
}
