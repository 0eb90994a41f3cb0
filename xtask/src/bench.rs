//! `cargo xtask bench`: vm-test N times with boots alone after each, then
//! every figure's spread (or `--self-compare`). Measures; never asserts a speed.

use shmem_host::vm;
use shmem_report as report;

use crate::exit::Failure;
use crate::opts::{BenchArgs, VmTestArgs};
use crate::suite_setup::suite_config;
use crate::{self_compare, vm_test};

/// Boots alone after each bench run.
const BOOTS_ALONE: usize = 3;

/// `bench [--runs N] [vm-test options]`: the suite N times (default 3), each
/// followed by boots alone, then every figure with its spread. A run whose
/// verdicts failed still gives its timings, and the report says which runs
/// and scenarios failed; what could not be measured (a run that could not
/// start, a failed boot, bandwidth on a coarse clock) is said in the
/// report; it fails only when nothing was measured.
pub fn bench(a: &BenchArgs) -> Result<bool, Failure> {
    if let Some(n) = a.self_compare {
        return self_compare::run(n as usize, a);
    }
    let runs = a.runs;
    let opts = VmTestArgs::plain(a.guest.clone(), a.suite.clone());
    let (cfg, _) = suite_config(&opts)?;
    let (mut reports, mut alone, mut not_measured, mut failed) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 1..=runs {
        println!("bench: run {k} of {runs}");
        let accel = match vm_test::vm_test(&opts) {
            Ok(outcome) if outcome.ok() => {
                let accel = outcome.run.accel;
                reports.push(outcome.run);
                accel
            }
            Ok(outcome) => {
                // Its timings are still timings: kept, the run marked.
                let bad: Vec<String> = outcome
                    .run
                    .scenarios
                    .iter()
                    .filter(|s| !s.ok())
                    .map(|s| format!("{} (QEMU {}, model {})", s.name, s.qemu.label(), s.model.label()))
                    .collect();
                failed.push(format!("run {k}: verdicts failed: {}", bad.join(", ")));
                let accel = outcome.run.accel;
                reports.push(outcome.run);
                accel
            }
            Err(e) => {
                not_measured.push(format!("run {k}: could not run: {}", crate::exit::text(&e)));
                continue;
            }
        };
        // Boot to agent ready and copy bandwidth with nothing else running
        // (in the suite, VMs share the cores).
        for b in 1..=BOOTS_ALONE {
            match vm::boot_alone(&cfg, accel) {
                Ok(a) => alone.push(a),
                Err(e) => not_measured.push(format!("boot {b} alone after run {k}: {e}")),
            }
        }
    }
    for n in &not_measured {
        println!("bench: not measured: {n}");
    }
    for f in &failed {
        println!("bench: {f} (its timings are in the figures)");
    }
    match report::bench_report(&reports, &alone, &not_measured, &failed) {
        Some(json) => {
            println!("{json}");
            Ok(true)
        }
        None => Err(Failure::Run("bench: nothing could be measured".into())),
    }
}
