//! The reference model as a guest: reads and writes go straight to the
//! model's regions (through a pipe, so an unmapped range reads as
//! inaccessible instead of faulting). Asks and reports; never judges.

use std::time::Duration;

use super::{CopyRounds, Death, Guest, GuestError, Observed, ProbeReads, RegionWindow, RingMode, region_addr_in};
use crate::backend::FileId;
use crate::files::{HostMapping, pattern_byte};
use crate::model::{MODEL_BAR_BASE, ModelFrontend};
use crate::vm::bounds::GUEST_LOOK_CAP;
use crate::vm::scenario::Fault;

/// How long the model may take to apply what it acked before a look.
const SYNC: Duration = Duration::from_secs(5);
/// How long the model may take to shut down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The reference model as a guest.
pub struct ModelGuest {
    pub model: ModelFrontend,
    /// The probe's target while a probe is under way.
    pub probe_target: Option<(u8, u64)>,
}

impl ModelGuest {
    pub fn new(model: ModelFrontend) -> Self {
        ModelGuest { model, probe_target: None }
    }
}

impl Guest for ModelGuest {
    fn kind(&self) -> &'static str {
        "model"
    }

    fn observe(&mut self, shmid: u8, offset: u64, len: u64) -> Result<Observed, GuestError> {
        if len > GUEST_LOOK_CAP {
            return Err(GuestError::BadRequest(format!("a look of {len:#x} bytes; at most {GUEST_LOOK_CAP:#x}")));
        }
        self.model.sync(SYNC).map_err(GuestError::model("applying what it acked"))?;
        match self.model.read(shmid, offset, len).map_err(GuestError::model("reading its region"))? {
            Ok(data) => Ok(Observed::of(&data)),
            Err(_) => Ok(Observed::Inaccessible),
        }
    }

    fn fill(&mut self, shmid: u8, offset: u64, len: u64, seed: u8) -> Result<(), GuestError> {
        if len > GUEST_LOOK_CAP {
            return Err(GuestError::BadRequest(format!(
                "a guest write of {len:#x} bytes; at most {GUEST_LOOK_CAP:#x}"
            )));
        }
        self.model.sync(SYNC).map_err(GuestError::model("applying what it acked"))?;
        let data: Vec<u8> = (0..len).map(|i| pattern_byte(seed, i)).collect();
        // A refused write (Err(Access)) is what a read-only mapping should do.
        self.model.write(shmid, offset, &data).map(|_| ()).map_err(GuestError::model("writing its region"))
    }

    fn reset(&mut self, init: bool) -> Result<(), GuestError> {
        self.model.reset().map_err(GuestError::model("resetting"))?;
        if init { self.model.start().map_err(GuestError::model("starting")) } else { Ok(()) }
    }

    fn region_addr(&self, shmid: u8) -> Result<u64, GuestError> {
        region_addr_in(MODEL_BAR_BASE, &self.layout()?, shmid)
    }

    /// Where the model put the regions GET_SHMEM_CONFIG gave it.
    fn layout(&self) -> Result<Vec<RegionWindow>, GuestError> {
        Ok(self.model.region_windows())
    }

    fn log_mark(&self) -> u64 {
        self.model.served_count() as u64
    }

    /// Rejection reasons, and failures to apply an acked request.
    fn log_since(&self, mark: u64) -> String {
        let mut said = Vec::new();
        for s in self.model.served_since(mark as usize) {
            if let Err(r) = s.result {
                said.push(r.reason.to_string());
            }
            if let Some(e) = s.apply_error {
                said.push(format!("after the ack: {e}"));
            }
        }
        said.join("\n")
    }

    fn holds(&self, file: FileId) -> Result<Vec<String>, GuestError> {
        Ok(self.model.held_files().into_iter().filter(|f| *f == file).map(|_| "fd (model)".to_string()).collect())
    }

    fn gone(&mut self) -> Option<Death> {
        self.model.death().map(|exit| Death { exit, said: self.log_text() })
    }

    fn log_text(&self) -> String {
        self.log_since(0)
    }

    fn bandwidth(&mut self, _shmid: u8, _len: u64, _iterations: u32, _rounds: u32) -> Result<CopyRounds, GuestError> {
        Err(GuestError::BadRequest("the model has no guest CPU to measure".into()))
    }

    fn shutdown(&mut self) -> Result<String, Death> {
        match self.model.shut_down(SHUTDOWN_TIMEOUT) {
            Ok(()) => Ok("status 0".into()),
            Err(exit) => Err(Death { exit, said: self.log_text() }),
        }
    }

    fn inject(&mut self, fault: Fault) -> Result<(), GuestError> {
        Err(GuestError::BadRequest(format!("{fault:?} is not injected into the model (fault scenarios are QEMU-only)")))
    }

    /// Alive when it has not died and applies what it acked in time.
    fn sign_of_life(&mut self, timeout: Duration) -> Result<(), GuestError> {
        if let Some(d) = self.model.death() {
            return Err(GuestError::ModelDead(d));
        }
        self.model.sync(timeout).map_err(GuestError::model("applying what it acked"))
    }

    /// The model's guest side needs no doorbell: it reads the region at once.
    fn probe_start(
        &mut self,
        _host: HostMapping,
        _doorbell: (u8, u64),
        target: (u8, u64),
    ) -> Result<String, GuestError> {
        self.probe_target = Some(target);
        Ok("the model reads in the ringing thread, right after the ack".into())
    }

    /// Reads (and first writes) the target at once, without waiting for
    /// anything the model has still to apply: what a guest vCPU would see.
    fn probe_ring(&mut self, mode: RingMode) -> Result<ProbeReads, GuestError> {
        let (shmid, off) = self.probe_target.ok_or_else(|| GuestError::BadRequest("no probe under way".into()))?;
        if let RingMode::Write(v) = mode {
            // A refused write (a hole, read-only) is what the guest would see too.
            let _ = self.model.write(shmid, off, &v.to_le_bytes()).map_err(GuestError::model("writing its region"))?;
        }
        let mut reads = ProbeReads::default();
        for v in &mut reads.values {
            let read = self.model.read(shmid, off, 8).map_err(GuestError::model("reading its region"))?;
            *v = read.ok().map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        }
        Ok(reads)
    }

    fn probe_stop(&mut self) -> Result<(), GuestError> {
        self.probe_target = None;
        Ok(())
    }
}
