//! `cargo xtask fuzz`: the differential fuzzer, QEMU against the model, with
//! its options, leak check and summary. The fuzzer itself is `shmem_host::vm::fuzz`.

use std::time::Duration;

use shmem_host::vm::scenario::SuiteFile;
use shmem_host::vm::{self, SuiteConfig};

use crate::exit::Failure;
use crate::opts::FuzzArgs;
use crate::shell::root;
use crate::suite_setup::{Artefacts, guest_artefacts, known_defects};

/// `fuzz [--seed S] [--time SECS] [--ops N] [--shrink-time SECS] [--out DIR]
/// [--qemu ...] [--accel ...]`: the differential fuzzer, QEMU against the
/// model. Fails when it finds a divergence that is not listed, or leaves
/// anything behind.
pub fn fuzz(a: &FuzzArgs) -> Result<bool, Failure> {
    use shmem_host::vm::fuzz::{FuzzConfig, Targets};
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let (time, shrink_time) = (Duration::from_secs(a.time), Duration::from_secs(a.shrink_time));
    let max_ops = a.ops.unwrap_or(u64::MAX);
    let root = root();
    let out_dir = a.out.clone().unwrap_or_else(|| root.join("tests/scenarios"));
    let suite = SuiteFile::load(&root.join("tests/suite.toml")).map_err(|e| e.to_string())?;
    let spec = suite.device.spec();
    let Artefacts { qemu, qemu_note, kernel, initramfs } = guest_artefacts(&a.guest, false, &root)?;
    let vm::accel::AccelPlan { first: accel, note: why, .. } = vm::accel::AccelPlan::of(a.guest.accel.choice());
    let (listed, _) = known_defects(a.known_defects.as_deref())?;
    let known: Vec<_> = listed.into_iter().filter(|d| d.applies(&qemu.build, accel.name(), "fuzz")).collect();
    println!(
        "fuzz: seed {seed}, {}s, accel {}{}, {} known divergences listed for this build",
        time.as_secs(),
        accel.name(),
        why.map(|w| format!(" ({w})")).unwrap_or_default(),
        known.len()
    );
    vm::install_interrupt_handler();
    let logs = tempfile::Builder::new().prefix("fuzz-").tempdir_in(root.join("target")).map_err(|e| e.to_string())?;
    let sockets = tempfile::Builder::new().prefix("shmem-fuzz-").tempdir().map_err(|e| format!("socket dir: {e}"))?;
    let cfg = SuiteConfig {
        qemu,
        qemu_note,
        kernel,
        initramfs,
        accel: a.guest.accel.choice(),
        spec: spec.clone(),
        layout: suite.device.layout(),
        scenarios: Vec::new(),
        known_defects: Vec::new(),
        known_defects_source: String::new(),
        work_dir: logs.path().to_path_buf(),
        worker: None,
        media_backends: Vec::new(),
        backend_defects: Vec::new(),
    };
    let before = shmem_host::vm::leaks::Snapshot::take();
    let report = {
        let mut subject = || vm::qemu_target(&cfg, accel, logs.path(), sockets.path());
        let mut oracle = || vm::model_target(&spec, shmem_host::model::Faults::default(), true, sockets.path());
        let fcfg = FuzzConfig { seed, time, max_ops, known, shrink_time, out_dir, progress: true };
        vm::fuzz::fuzz(&fcfg, &mut Targets { subject: &mut subject, oracle: &mut oracle })
    };
    let mut leaks = before.leaks_after(logs.path(), Duration::from_secs(1));
    leaks.extend(before.leftovers_in(sockets.path()));
    let report = report.map_err(|e| e.to_string())?;
    Ok(print_fuzz(seed, &report, &leaks))
}

/// The fuzz run's summary; whether it passed (no unlisted divergence, no
/// listed entry exercised enough without showing, nothing left behind).
fn print_fuzz(seed: u64, report: &shmem_host::vm::fuzz::FuzzReport, leaks: &[String]) -> bool {
    println!(
        "fuzz: seed {seed}: {} operations, {} distinct states, {} fresh starts",
        report.ops, report.states, report.fresh_starts
    );
    for (id, n) in &report.exercised {
        println!(
            "fuzz: listed `{id}`: exercised {n} times, shown {} times",
            report.known.get(id).copied().unwrap_or(0)
        );
    }
    for n in &report.not_seen {
        println!(
            "fuzz: NOT SEEN `{}`: exercised {} times (at least {} needed) and never shown: fixed? drop it from the known-defects list",
            n.id, n.exercised, n.needed
        );
    }
    if !leaks.is_empty() {
        println!("fuzz: left behind: {}", leaks.join("; "));
    }
    match &report.found {
        Some(f) => {
            println!("fuzz: DIVERGENCE {}: {}", f.divergence.kind, f.divergence.check.evidence);
            let minimal = if f.minimal { "" } else { " (not minimal: shrinking ran out of time)" };
            println!(
                "fuzz: shrunk from {} to {} operations{minimal}; wrote {}",
                f.original_len,
                f.ops.len(),
                f.scenario.display()
            );
            false
        }
        None => {
            println!("fuzz: no divergence beyond the listed ones");
            leaks.is_empty() && report.not_seen.is_empty()
        }
    }
}
