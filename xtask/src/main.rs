//! cargo xtask: orchestration only. `main` parses the command line (`opts`)
//! and dispatches; each command is a file, each artefact (kernel,
//! initramfs, QEMU, the virtio-media backend) a file. Scenario logic and
//! verdicts live in `shmem_host::vm` and `shmem_judge`, not here.

// The commands.
mod backend_test;
mod bench;
mod browser;
mod contract;
mod fuzz;
mod moved;
mod no_apt;
mod own_boot_worker;
mod self_compare;
mod test_sequence;
mod vm_test;

// What the commands share: options, exit codes, progress, the suite's setup, `--bless`.
mod bless;
mod checks;
#[cfg(test)]
mod cli_docs;
mod exit;
mod opts;
mod progress;
mod suite_setup;

// The artefacts, and the apt and shell helpers they are built with.
mod apt;
mod initramfs;
mod kernel;
mod qemu;
mod shell;
mod tools;
mod vhost_device_media;

use std::process::ExitCode;

use clap::Parser;

use crate::exit::Failure;
use crate::opts::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Test(a) => test_sequence::test(&a),
        Command::VmTest(a) => vm_test::vm_test(&a).map(|r| r.ok()),
        Command::Bench(a) => bench::bench(&a),
        Command::OwnBootWorker(a) => own_boot_worker::own_boot_worker(&a).map_err(Failure::Run),
        Command::Fuzz(a) => fuzz::fuzz(&a),
        Command::MovedQemu(a) => moved::command(&a),
        Command::Contract(a) => contract::command(&a),
        Command::HtmlCheck(a) => browser::check(&a),
        Command::NoApt(a) => {
            qemu::in_use(&a.guest).and_then(|q| no_apt::check(&a.guest, &q.path)).map_err(Failure::Run)
        }
        Command::BackendTest(a) => backend_test::backend_test(&a),
    };
    exit::code(res)
}
