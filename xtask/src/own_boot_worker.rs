//! `cargo xtask own-boot-worker`: one own-boot scenario in a process of its
//! own, started by the runner with everything it needs; prints its run as JSON.

use std::path::PathBuf;

use shmem_host::conformance::BackendUnderTest;
use shmem_host::vm::qemu::{Accel, QemuInfo};
use shmem_host::vm::scenario::{MediaBuild, Scenario, SuiteFile};
use shmem_host::vm::{self, AccelChoice, SuiteConfig};

use crate::opts::{parse_probe_scale, take_opt};
use crate::shell::root;
use crate::suite_setup::prepare_scenario;

/// `own-boot-worker`: one own-boot scenario in this process (started by the
/// runner, which passes everything it needs); prints its run as JSON.
pub fn own_boot_worker(args: &[String]) -> Result<bool, String> {
    // First: what this process holds before it opens anything is what it inherited.
    let inherited = vm::leaks::inherited();
    let mut args = args.to_vec();
    // `--qemu-only`: QEMU's half alone (`--compare`'s replicated probe boots).
    let qemu_only = args.iter().any(|a| a == "--qemu-only");
    args.retain(|a| a != "--qemu-only");
    let mut get = |key: &str| -> Result<String, String> { take_opt(&mut args, key)?.ok_or_else(|| format!("own-boot-worker: {key} missing")) };
    let (qemu, build, kernel, initramfs) = (get("--qemu")?, get("--build")?, get("--kernel")?, get("--initramfs")?);
    let (scenario, accel, logs) = (PathBuf::from(get("--scenario")?), get("--accel")?, PathBuf::from(get("--logs")?));
    let probe_scale = parse_probe_scale(&get("--probe-scale")?)?;
    let mut media_backends = Vec::new();
    for b in MediaBuild::ALL {
        let command = take_opt::<String>(&mut args, &format!("--media-command-{}", b.name()))?;
        let version = take_opt::<String>(&mut args, &format!("--media-version-{}", b.name()))?;
        if let (Some(command), Some(version)) = (command, version) {
            media_backends.push((b, Ok(BackendUnderTest { command, version })));
        }
    }
    let accel = match accel.as_str() {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        other => return Err(format!("own-boot-worker: --accel {other:?}")),
    };
    let text = std::fs::read_to_string(&scenario).map_err(|e| format!("{}: {e}", scenario.display()))?;
    let mut scn = Scenario::parse(&scenario, &text).map_err(|e| e.to_string())?;
    let suite = SuiteFile::load(&root().join("tests/suite.toml")).map_err(|e| e.to_string())?;
    prepare_scenario(&mut scn, probe_scale, &suite.device).map_err(|e| e.to_string())?;
    scn.qemu_only |= qemu_only;
    vm::install_interrupt_handler();
    let cfg = SuiteConfig {
        qemu: QemuInfo { path: qemu.into(), version: (0, 0, 0), version_text: String::new(), build },
        qemu_note: None,
        kernel: kernel.into(),
        initramfs: initramfs.into(),
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
