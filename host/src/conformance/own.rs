//! The appliance's own backend as a backend under test: the test device
//! behind the model, and a scripted session of what a backend's map logic
//! sends (two read-only mappings, then their unmaps). Its fault switches
//! make that backend wrong on purpose, one way each, so every backend check
//! is shown to fail. Records only.

use std::os::fd::AsRawFd;
use std::path::Path;

use super::session::{Settings, region_sizes};
use crate::backend::BackendFaults;
use crate::channel::{MmapBytes, ShmemMsg, ShmemOp};
use crate::files::HostFile;
use crate::model::{Faults, ModelFrontend};
use crate::server::BackendServer;
use crate::spec::DeviceSpec;
use shmem_judge::backend::record::SessionRecord;

/// One way the own backend can be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnFault {
    None,
    /// The second map ends past the region.
    OutsideRegion,
    /// The second map overlaps the first.
    Overlap,
    /// The second mapping is never unmapped.
    LeakMapping,
    /// The first mapping is unmapped twice.
    DoubleUnmap,
    /// SHMEM offered at bit 21 instead of 22.
    Bit21,
}

const REGION: u64 = 1 << 20;
const LEN: u64 = 0x1_0000;

/// One scripted session of the own backend with `fault`.
pub fn run_own(fault: OwnFault, dir: &Path, s: &Settings) -> SessionRecord {
    let mut rec = SessionRecord::default();
    let spec = DeviceSpec { virtio_id: 45, num_queues: 2, regions: vec![REGION] };
    let faults = BackendFaults { shmem_at_bit_21: fault == OwnFault::Bit21 };
    let server = match BackendServer::start_faulty_in(spec, dir, faults) {
        Ok(sv) => sv,
        Err(e) => {
            rec.connect_error = Some(format!("starting the own backend: {e}"));
            return rec;
        }
    };
    match ModelFrontend::connect_seeing(server.socket_path(), 2, Faults::default(), &mut rec.offered) {
        Ok(mut model) => {
            rec.regions = region_sizes(&model);
            if let Err(e) = model.start().map_err(|e| e.to_string()).and_then(|()| script(&server, fault, s)) {
                rec.dead = Some(e);
            }
            let _ = model.sync(s.answer);
            super::record_frontend(&model, &mut rec);
            let _ = model.shut_down(s.answer);
        }
        Err(e) => rec.connect_error = Some(e.to_string()),
    }
    if let Err(e) = server.shutdown() {
        rec.dead.get_or_insert(format!("the own backend did not end cleanly: {e}"));
    }
    rec
}

/// What the own backend's map logic sends, bent by `fault`.
fn script(server: &BackendServer, fault: OwnFault, s: &Settings) -> Result<(), String> {
    let chan = server.channel(s.answer).map_err(|e| format!("no backend channel: {e}"))?;
    let files = [HostFile::create("own-a", LEN), HostFile::create("own-b", LEN)];
    let [a, b] = files.map(|f| f.map_err(|e| e.to_string()));
    let (a, b) = (a?, b?);
    let second_at = match fault {
        OwnFault::OutsideRegion => REGION - LEN / 2,
        OwnFault::Overlap => LEN / 2,
        _ => LEN,
    };
    let msg = |shm_offset: u64| ShmemMsg { shmid: 0, fd_offset: 0, shm_offset, len: LEN, flags: 0 };
    let send = |op: ShmemOp, m: ShmemMsg, fd: Option<&HostFile>| {
        chan.request(op, &m.to_bytes(), fd.map(|f| f.file().as_raw_fd()))
            .map(|_| ())
            .map_err(|e| format!("{op:?} {m}: {e}"))
    };
    send(ShmemOp::Map, msg(0), Some(&a))?;
    send(ShmemOp::Map, msg(second_at), Some(&b))?;
    send(ShmemOp::Unmap, msg(0), None)?;
    if fault == OwnFault::DoubleUnmap {
        send(ShmemOp::Unmap, msg(0), None)?;
    }
    if fault != OwnFault::LeakMapping {
        send(ShmemOp::Unmap, msg(second_at), None)?;
    }
    Ok(())
}
