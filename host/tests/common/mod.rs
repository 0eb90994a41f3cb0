//! Shared set-up for the host-only tests: a backend server, the model
//! frontend connected to it over a real socket, and a mapping manager.

#![allow(dead_code)]

use std::time::Duration;

use shmem_host::manager::MappingManager;
use shmem_host::model::{Faults, ModelFrontend};
use shmem_host::server::BackendServer;
use shmem_host::spec::DeviceSpec;

pub const T: Duration = Duration::from_secs(5);

pub struct Rig {
    pub mgr: MappingManager,
    pub model: ModelFrontend,
    pub server: BackendServer,
}

pub fn rig_with(regions: Vec<u64>, faults: Faults) -> Rig {
    let spec = DeviceSpec::new(45, 1, regions).expect("valid spec");
    let server = BackendServer::start(spec.clone()).expect("backend starts");
    let model = ModelFrontend::connect(server.socket_path(), 1, faults).expect("model connects");
    model.start().expect("model starts the device");
    let chan = server.channel(T).expect("backend channel");
    let mgr = MappingManager::new(spec, chan);
    Rig { mgr, model, server }
}

pub fn rig(regions: Vec<u64>) -> Rig {
    rig_with(regions, Faults::default())
}

/// How many fds of this process point at the memfd named `shmem-NAME`.
pub fn fds_naming(name: &str) -> usize {
    let needle = format!("/memfd:shmem-{name} ");
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with(&needle))
        .count()
}

/// The permission field ("r--s", "rw-s", "---p") of the /proc/self/maps line
/// that contains `addr`.
pub fn maps_perms(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let range = it.next()?;
        let perms = it.next()?;
        let (lo, hi) = range.split_once('-')?;
        let (lo, hi) = (usize::from_str_radix(lo, 16).ok()?, usize::from_str_radix(hi, 16).ok()?);
        (lo <= addr && addr < hi).then(|| perms.to_string())
    })
}
