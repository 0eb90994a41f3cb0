//! Steps that set the stage and check nothing: host files and their fills,
//! device resets, guest and host writes, and fault injection.

use super::target::{StepError, Target};
use crate::vm::scenario::Fault;

/// `file`: a zero-filled memfd of `size` bytes.
pub fn file(t: &mut Target, name: &str, size: u64) -> Result<(), StepError> {
    t.mgr.create_file(name, size)?;
    Ok(())
}

/// `fill`: pattern `seed` over `len` bytes (default: to the end) at `offset`.
pub fn fill(t: &mut Target, name: &str, seed: u8, offset: u64, len: Option<u64>) -> Result<(), StepError> {
    let hf = t.mgr.file(name)?;
    let len = len.unwrap_or(hf.size().saturating_sub(offset));
    hf.fill(offset, len, seed).map_err(StepError::host_file(name))
}

/// `guest-reset`: device reset, re-initialisation unless `init = false`;
/// the ledger is cleared (a reset drops every mapping).
pub fn guest_reset(t: &mut Target, init: bool) -> Result<(), StepError> {
    t.guest.reset(init)?;
    t.mgr.forget_all();
    Ok(())
}

/// `host-write`: pattern `seed` into a file, as the backend would.
pub fn host_write(t: &mut Target, name: &str, offset: u64, len: u64, seed: u8) -> Result<(), StepError> {
    t.mgr.file(name)?.fill(offset, len, seed).map_err(StepError::host_file(name))
}

/// `inject`: a fault. A killed backend closes its sockets (the daemon's and
/// the channel); a killed QEMU's death is expected from now on.
pub fn inject(t: &mut Target, fault: Fault) -> Result<(), StepError> {
    match fault {
        Fault::KillBackend => {
            if let Some(server) = t.server.take() {
                server.shutdown().map_err(StepError::Backend)?;
            }
            t.mgr.channel().close();
        }
        Fault::KillQemu => {
            t.expected_death = true;
            t.guest.inject(fault)?;
        }
        Fault::HangAgent => t.guest.inject(fault)?,
    }
    Ok(())
}
