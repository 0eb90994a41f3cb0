//! A frontend that refuses a device it cannot realize, cleanly (a non-zero
//! status and a message, no signal), passes the hazard that asks for just
//! that, and the listed abort then shows as gone; one that aborts matches
//! the listed signature; one that exits without a word fails. The frontend
//! is a stand-in script (it answers the probe, then ends as told), so no
//! guest is booted. A binary of its own: the own boot's leak check counts
//! this whole process.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shmem_host::vm::lists::load_known_defects;
use shmem_host::vm::own_boot::own_boot_run;
use shmem_host::vm::qemu::{Accel, probe};
use shmem_host::vm::scenario::{Scenario, SuiteFile};
use shmem_host::vm::{AccelChoice, SuiteConfig};
use shmem_judge::listing::Listing;
use shmem_judge::verdict::{Verdict, judge_listed};

const BUILD: &str = "11.1.3 (Debian 1:11.1.3+ds-1)";

/// A stand-in QEMU that answers the probe, then, asked to boot, does `end`.
fn stand_in(dir: &Path, end: &str) -> std::path::PathBuf {
    let path = dir.join("qemu");
    let script = format!(
        "#!/bin/sh\ncase \"$1 $2\" in\n--version*) echo 'QEMU emulator version {BUILD}'; exit 0;;\n'-machine none') echo 'name \"vhost-user-test-device-pci\", bus PCI'; exit 0;;\nesac\n{end}\n"
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The verdict of `hazard-bar-not-power-of-two` on a stand-in that ends with `end`.
fn verdict(end: &str) -> Verdict {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let suite = SuiteFile::load(&root.join("tests/suite.toml")).unwrap();
    let scn = Scenario::load_dir(&root.join("tests/scenarios"))
        .unwrap()
        .into_iter()
        .find(|s| s.name == "hazard-bar-not-power-of-two")
        .unwrap();
    let cfg = SuiteConfig {
        qemu: probe(&stand_in(dir.path(), end)).unwrap(),
        qemu_note: None,
        kernel: dir.path().join("no-kernel"),
        initramfs: dir.path().join("no-initramfs"),
        accel: AccelChoice::Tcg,
        spec: suite.device.spec(),
        layout: suite.device.layout(),
        scenarios: vec![scn.clone()],
        known_defects: load_known_defects(&root.join("tests/known-defects.toml")).unwrap(),
        known_defects_source: String::new(),
        worker: None,
        work_dir: dir.path().to_path_buf(),
        media_backends: Vec::new(),
        backend_defects: Vec::new(),
    };
    let sockets = tempfile::tempdir().unwrap();
    let run = own_boot_run(&cfg, &scn, Accel::Tcg, dir.path(), sockets.path());
    let listing = Listing::of(&cfg.known_defects, BUILD, "tcg", &scn.name);
    let checks = run.qemu.map(|c| c.into_iter().filter(|c| c.check != "no-leaks").collect());
    judge_listed(checks, &listing).verdict
}

#[test]
fn a_clean_refusal_at_realize_passes_and_the_listed_abort_shows_as_gone() {
    match verdict(
        "echo 'qemu-system-x86_64: -device vhost-user-test-device-pci,chardev=vu0,virtio-id=45: regions add up to 0x140000 bytes, not a power of two' >&2; exit 1",
    ) {
        Verdict::UnexpectedPass(drop) => {
            assert!(drop.iter().any(|d| d.contains("`bar-not-power-of-two-aborts`")), "{drop:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_abort_matches_the_listed_signature_and_a_silent_exit_fails() {
    let abort = "echo \"qemu-system-x86_64: hw/pci/pci.c:1515: pci_register_bar: Assertion \\`is_power_of_2(size)' failed.\" >&2; kill -ABRT $$";
    assert!(matches!(verdict(abort), Verdict::KnownFailure(_)), "{:?}", verdict(abort));
    match verdict("exit 1") {
        Verdict::Fail(j) => assert_eq!(j[0].check.check, "frontend-survives", "{j:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_startup_failure_about_something_else_is_no_clean_refusal() {
    match verdict(
        "echo 'qemu-system-x86_64: -chardev socket,id=vu0: Failed to connect to socket: No such file or directory' >&2; exit 1",
    ) {
        Verdict::Fail(j) => assert_eq!(j[0].check.check, "frontend-survives", "{j:?}"),
        other => panic!("{other:?}"),
    }
}
