//! cargo xtask: orchestration only. `main` parses the command and
//! dispatches; each command is a file, each artefact (kernel, initramfs,
//! QEMU, the virtio-media backend) a file. Scenario logic and verdicts live
//! in `shmem_host::vm` and `shmem_judge`, not here.

// The commands.
mod backend_test;
mod bench;
mod fuzz;
mod moved;
mod own_boot_worker;
mod self_compare;
mod test_sequence;
mod vm_test;

// What the commands share: options, the suite's setup, `--bless`.
mod bless;
mod opts;
mod suite_setup;

// The artefacts, and the apt and shell helpers they are built with.
mod apt;
mod initramfs;
mod kernel;
mod qemu;
mod shell;
mod vhost_device_media;

use std::process::ExitCode;

const USAGE: &str = "usage:
  cargo xtask test                 clippy, unit/integration tests, the VM suite, a 45 s fuzz,
                                   the suite against QEMU wrappers that print another --version,
                                   and backend-test
  cargo xtask vm-test [OPTIONS]    build what the guest needs, boot QEMU, run the scenarios
  cargo xtask fuzz [--seed S] [--time SECS] [--ops N] [--shrink-time SECS] [--out DIR]
                   [--qemu PATH] [--kernel FILE] [--kernel-src DIR] [--accel A] [--known-defects PATH|none]
                                   differential fuzzer, QEMU against the model; an unlisted
                                   divergence is shrunk into DIR/found-HASH.toml (default
                                   tests/scenarios) and fails the run
  cargo xtask moved-qemu [--qemu PATH]
                                   the suite against wrappers of the QEMU in use that print another
                                   --version: the same upstream carries entries over; another upstream
                                   fails naming them, --bless adds it, the next run passes
  cargo xtask backend-test [--backend 'CMD {socket}'] [--media-backend PATH] [--json PATH]
                           [--junit PATH] [--known-defects PATH|none]
                                   a vhost-user backend that sends SHMEM_MAP against the model
                                   frontend, as its virtio-media driver, with refused, delayed and
                                   dropped requests (default: vhost-device-media, built once);
                                   then the appliance's own backend
  cargo xtask bench [--runs N] [OPTIONS]
                                   vm-test N times (default 3), then every figure's
                                   min/median/max as JSON, and what could not be measured
  cargo xtask bench --self-compare N [OPTIONS]
                                   --compare of the QEMU with itself N times idle, then N
                                   times with a CPU hog from 12 s on: the false-alarm rate

vm-test / bench options:
  --qemu PATH          QEMU to use (else $QEMU, else qemu-system-x86_64 on PATH, else provisioned)
  --kernel FILE        use this bzImage instead of building one
  --kernel-src DIR     build the kernel from this source tree (default: Debian's linux-source-6.12)
  --accel auto|kvm|tcg accelerator (default auto: KVM if it boots, else TCG)
  --scenarios DIR      run the scenario files (*.toml) of DIR instead of tests/scenarios;
                       repeatable; same schema, known defects and reports
  --filter TEXT        run only scenarios whose name contains TEXT; repeatable (any of them)
  --probe-scale K      run K times the iterations of every doorbell probe (default 1): the
                       suite's counts keep it quick; a rare stale read, or its absence,
                       needs more
  --list               list the scenarios and exit
  --known-defects PATH|none
                       judge by this list of known QEMU defects (default tests/known-defects.toml);
                       none: every failure is a FAIL (QEMU's and the backends' lists)
  --backend-defects PATH
                       judge the media scenarios' backends by this list (default
                       tests/backend-defects.toml)
  --compare QEMU2      run the suite on --qemu (A, the baseline) and on QEMU2 (B); print what B
                       fixed, regressed and fails differently; exit non-zero on a regression
  --bless              add this QEMU build and accelerator to exactly the known-defect entries
                       (listed for another version or accelerator) whose signatures this run's
                       failures showed, in QEMU's list (`qemu`) and the backends' (`frontend`);
                       prints what changed in each list, changes nothing else
  --json PATH          also write the report as JSON (both verdicts, checks, logs of failures)
  --junit PATH         also write the report as JUnit XML";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(sub) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let res = match sub.as_str() {
        "test" => test_sequence::test(rest),
        "vm-test" => vm_test::vm_test(rest).map(|r| r.ok()),
        "bench" => bench::bench(rest),
        "own-boot-worker" => own_boot_worker::own_boot_worker(rest),
        "fuzz" => fuzz::fuzz(rest),
        "moved-qemu" => moved::command(rest),
        "backend-test" => backend_test::backend_test(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(true)
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
