//! Runs one scenario on one target: on a target the caller set up
//! (`run_on`: the shared boot, an own boot, the fuzzer), or on a model of
//! its own (`run_model_boot`). Records; the judge decides.

use std::path::Path;
use std::time::Instant;

use shmem_judge::outcome::Failure;
use shmem_judge::scenario::Run;

use super::boot::{finish, layout_check, model_target};
use super::error::RunError;
use super::guest::RegionWindow;
use super::scenario::{BackendMode, Scenario};
use super::steps::run_steps;
use super::steps::target::Target;
use crate::model::Faults;
use crate::server::BackendServer;
use crate::spec::DeviceSpec;

/// Runs one scenario on a target (after a device reset when `prepare`);
/// returns its checks or why it could not finish, and how long it took. A
/// panic of the runner itself (whatever a frontend answered) is an error,
/// never a crash; the single-threaded gate is lifted on every path.
pub fn run_on(scn: &Scenario, t: &mut Target, prepare: bool) -> Run {
    let start = Instant::now();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if prepare {
            t.guest.reset(scn.init).map_err(RunError::Prepare)?;
        }
        t.mgr.forget_all();
        let gate =
            t.server.as_ref().filter(|_| scn.backend == BackendMode::SingleThreaded).map(BackendServer::serve_gate);
        t.single_threaded = gate.is_some();
        t.mgr.channel().set_serve_gate(gate);
        run_steps(scn, t)
    }));
    t.mgr.channel().set_serve_gate(None);
    t.single_threaded = false;
    let res = res.unwrap_or_else(|p| Err(RunError::Panicked(crate::panic_text(p.as_ref()))));
    (res.map_err(Failure::from), start.elapsed())
}

/// The model as a target for a scenario's own boot: its layout check, the
/// scenario, its clean shutdown.
pub fn run_model_boot(device: &(DeviceSpec, Vec<RegionWindow>), scn: &Scenario, sockets: &Path) -> Run {
    let start = Instant::now();
    let mut t = match model_target(&device.0, Faults::default(), scn.init, sockets) {
        Ok(t) => t,
        Err(e) => return (Err(Failure { kind: e.kind(), message: e.to_string() }), start.elapsed()),
    };
    let layout = layout_check(&device.1, t.guest.as_ref());
    let (res, _) = run_on(scn, &mut t, false);
    let res = res.map(|checks| {
        let mut all = vec![layout];
        all.extend(checks);
        finish(&mut t, &mut all);
        all
    });
    (res, start.elapsed())
}
