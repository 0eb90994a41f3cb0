//! `cargo xtask own-boot-worker`: one own-boot scenario in a process of its
//! own, started by the runner with everything it needs; prints its run as JSON.

use shmem_host::conformance::BackendUnderTest;
use shmem_host::vm::qemu::{Accel, QemuInfo};
use shmem_host::vm::scenario::{MediaBuild, Scenario, SuiteFile};
use shmem_host::vm::{self, AccelChoice, SuiteConfig};

use crate::opts::WorkerArgs;
use crate::shell::root;
use crate::suite_setup::prepare_scenario;

/// `own-boot-worker`: one own-boot scenario in this process (started by the
/// runner, which passes everything it needs); prints its run as JSON.
pub fn own_boot_worker(a: &WorkerArgs) -> Result<bool, String> {
    // First: what this process holds before it opens anything is what it inherited.
    let inherited = vm::leaks::inherited();
    let (scenario, logs) = (&a.scenario, a.logs.clone());
    let mut media_backends = Vec::new();
    for ((build, command), version) in a.media_build.iter().zip(&a.media_command).zip(&a.media_version) {
        let b = MediaBuild::ALL
            .into_iter()
            .find(|b| b.name() == build)
            .ok_or_else(|| format!("own-boot-worker: --media-build {build:?}"))?;
        media_backends.push((b, Ok(BackendUnderTest { command: command.clone(), version: version.clone() })));
    }
    let accel = match a.accel.as_str() {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        other => return Err(format!("own-boot-worker: --accel {other:?}")),
    };
    let text = std::fs::read_to_string(scenario).map_err(|e| format!("{}: {e}", scenario.display()))?;
    let mut scn = Scenario::parse(scenario, &text).map_err(|e| e.to_string())?;
    let suite = SuiteFile::load(&root().join("tests/suite.toml")).map_err(|e| e.to_string())?;
    prepare_scenario(&mut scn, a.probe_scale, &suite.device).map_err(|e| e.to_string())?;
    scn.qemu_only |= a.qemu_only;
    vm::install_interrupt_handler();
    let cfg = SuiteConfig {
        qemu: QemuInfo {
            path: a.qemu.clone(),
            version: (0, 0, 0),
            version_text: String::new(),
            build: a.build.clone(),
        },
        qemu_note: None,
        kernel: a.kernel.clone(),
        initramfs: a.initramfs.clone(),
        accel: AccelChoice::Tcg,
        spec: suite.device.spec(),
        layout: suite.device.layout(),
        scenarios: vec![scn.clone()],
        known_defects: Vec::new(),
        known_defects_source: String::new(),
        work_dir: logs.clone(),
        worker: None,
        media_backends,
        backend_defects: Vec::new(),
    };
    // Sockets under the system temp dir: a Unix socket path stays short.
    let sockets = tempfile::Builder::new().prefix("shmem-vm-").tempdir().map_err(|e| format!("socket dir: {e}"))?;
    let mut run = vm::own_boot::own_boot_run(&cfg, &scn, accel, &logs, sockets.path());
    if let Ok(checks) = &mut run.qemu {
        checks.push(vm::own_run::no_inherited_fds(&inherited));
    }
    println!("{}", serde_json::to_string(&run).map_err(|e| e.to_string())?);
    Ok(true)
}
