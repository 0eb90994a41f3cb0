//! `cargo xtask vm-test`: the suite (or, with `--compare`, a baseline and the
//! QEMU under test) run through the host runner, the reports printed and
//! written whatever happened, and `--bless` applied. Verdicts are the judge's.

use std::collections::BTreeSet;
use std::path::Path;

use shmem_host::vm::lists::{load_defect_list, load_known_defects};
use shmem_host::vm::scenario::Scenario;
use shmem_host::vm::{self, SuiteConfig};
use shmem_judge::compare::Comparison;
use shmem_judge::significance::counts_text;
use shmem_report as report;
use shmem_report::{Rerun, TextOpts};

use crate::bless;
use crate::exit::Failure;
use crate::opts::{GuestOpts, VmTestArgs as Opts};
use crate::suite_setup::{
    BACKEND_LIST_ACCELS, backend_defects_path, emulation_note, entries_note, join_notes, known_defects_path,
    suite_config, worker_command,
};

/// What a vm-test invocation ran: one suite, or with `--compare` the
/// baseline (A) too and what changed from it to `run` (B).
pub struct Outcome {
    pub run: vm::SuiteReport,
    pub baseline: Option<(vm::SuiteReport, Comparison)>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        match &self.baseline {
            None => self.run.ok(),
            // Comparing a patch against a baseline fails on regressions only.
            Some((_, c)) => c.regressed == 0,
        }
    }
}

pub fn vm_test(o: &Opts) -> Result<Outcome, Failure> {
    if o.bless && o.suite.known_defects.as_deref() == Some("none") {
        return Err(Failure::Usage("--bless edits the known-defect lists: not with --known-defects none".into()));
    }
    let text = TextOpts { verbose: o.report.verbose, github: github(o), rerun: Rerun { prefix: rerun_prefix(o) } };
    // Whatever happens, the reports are written: a panic is a failed run too.
    let result = std::panic::catch_unwind(|| prepare_and_run(o)).unwrap_or_else(|p| {
        let what = shmem_host::panic_text(p.as_ref());
        Err(format!("the appliance panicked (a bug, please report it): {what}"))
    });
    match &result {
        Ok(Outcome { run: r, baseline: None }) => report::print_report(r, &text),
        Ok(Outcome { run: b, baseline: Some((a, c)) }) => {
            println!("== A (baseline)");
            report::print_report(a, &text);
            println!("== B");
            report::print_report(b, &text);
            report::print_comparison(a, b, c, &text);
        }
        Err(_) => {}
    }
    // Each file rendered only when asked for; a run that could not even start still leaves a failing report.
    let files = &o.report.files;
    let render: [(&Option<std::path::PathBuf>, &dyn Fn() -> String); 3] = [
        (&files.json, &|| match &result {
            Ok(Outcome { run: r, baseline: None }) => report::json_report(r),
            Ok(Outcome { run: b, baseline: Some((a, c)) }) => report::json_compare(a, b, c),
            Err(e) => report::json_error(e),
        }),
        (&files.junit, &|| match &result {
            Ok(Outcome { run: r, baseline: None }) => report::junit_report(r),
            Ok(Outcome { run: b, baseline: Some((_, c)) }) => report::junit_compare(b, c),
            Err(e) => report::junit_error(e),
        }),
        (&files.html, &|| match &result {
            Ok(Outcome { run: r, baseline: None }) => report::html::suite_html(r),
            Ok(Outcome { run: b, baseline: Some((a, c)) }) => report::html::compare_html(a, b, c),
            Err(e) => report::html::error_html(e),
        }),
    ];
    for (path, text) in render {
        if let Some(p) = path {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            }
            std::fs::write(p, text()).map_err(|e| format!("writing {}: {e}", p.display()))?;
            println!("vm-test: wrote {}", p.display());
        }
    }
    if let (true, Ok(out)) = (o.bless, &result) {
        apply_bless(o, &out.run)?;
    }
    Ok(result?)
}

/// `--github`, or on GitHub Actions (`GITHUB_ACTIONS=true`).
fn github(o: &Opts) -> bool {
    o.report.github || std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// The command that reruns one scenario of this run, but its QEMU: this
/// run's kernel, accelerator, scenario directories and lists (the report
/// adds the QEMU it ran, found or given, and `--filter NAME --exact`).
fn rerun_prefix(o: &Opts) -> String {
    let mut words: Vec<String> = vec!["cargo".into(), "xtask".into(), "vm-test".into()];
    words.extend(GuestOpts { qemu: None, ..o.guest.clone() }.to_args());
    for d in &o.suite.scenarios {
        words.extend(["--scenarios".into(), d.display().to_string()]);
    }
    if o.suite.probe_scale != 1 {
        words.extend(["--probe-scale".into(), o.suite.probe_scale.to_string()]);
    }
    if let Some(k) = &o.suite.known_defects {
        words.extend(["--known-defects".into(), k.clone()]);
    }
    if let Some(b) = &o.suite.backend_defects {
        words.extend(["--backend-defects".into(), b.display().to_string()]);
    }
    if let Some(m) = &o.suite.media_backend {
        words.extend(["--media-backend".into(), m.display().to_string()]);
    }
    words.iter().map(|w| shmem_report::quoted(w)).collect::<Vec<_>>().join(" ")
}

/// `--bless`: the entries listed elsewhere that this run's failures matched
/// get this build and accelerator, in whichever list holds each (QEMU's,
/// the backends'); each change is printed. An id no list holds is an error
/// before anything is written.
fn apply_bless(o: &Opts, run: &vm::SuiteReport) -> Result<(), String> {
    let lists =
        [(known_defects_path(o.suite.known_defects.as_deref()), "qemu"), (backend_defects_path(&o.suite), "frontend")];
    let ids = bless::matched_elsewhere(run);
    if ids.is_empty() {
        println!(
            "vm-test: --bless: no failure matched an entry listed for another build or accelerator; {} and {} unchanged",
            lists[0].0.display(),
            lists[1].0.display()
        );
        return Ok(());
    }
    let mut held = Vec::new();
    for (path, key) in &lists {
        let here: BTreeSet<String> = bless::ids_in(path)?.intersection(&ids).cloned().collect();
        held.push((path, *key, here));
    }
    if let Some(id) = ids.iter().find(|id| !held.iter().any(|(_, _, here)| here.contains(*id))) {
        return Err(format!(
            "--bless: entry {id:?} matched, but neither {} nor {} holds it; nothing blessed",
            lists[0].0.display(),
            lists[1].0.display()
        ));
    }
    for (path, key, here) in held.into_iter().filter(|(_, _, here)| !here.is_empty()) {
        let diff = bless::bless(path, &here, key, &run.qemu.build, run.accel.name())?;
        let reloaded =
            if key == "qemu" { load_known_defects(path) } else { load_defect_list(path, &BACKEND_LIST_ACCELS) };
        reloaded.map_err(|e| format!("--bless left {} unreadable: {e}", path.display()))?;
        println!(
            "vm-test: --bless added {} / {} to {} entries of {} ({}):",
            run.qemu.build,
            run.accel.name(),
            here.len(),
            path.display(),
            here.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        for d in diff {
            println!("{d}");
        }
    }
    Ok(())
}

pub fn prepare_and_run(o: &Opts) -> Result<Outcome, String> {
    let (cfg, other) = suite_config(o)?;
    vm::install_interrupt_handler();
    let on_row = |row: &shmem_judge::scenario::ScenarioReport| anstream::println!("{}", report::progress_line(row));
    let a = vm::run_suite(&cfg, &on_row).map_err(|e| e.to_string())?;
    let Some(other) = other else { return Ok(Outcome { run: a, baseline: None }) };
    println!("vm-test: compare: now QEMU {} at {}", other.version_text, other.path.display());
    let worker = Some(worker_command(&other, &cfg.kernel, &cfg.initramfs, o.suite.probe_scale, &cfg.media_backends)?);
    let qemu_note = join_notes([entries_note(&other, &cfg.known_defects, true), emulation_note(&other)?]);
    let workers = [cfg.worker.clone(), worker.clone()];
    let probes: Vec<Scenario> = cfg.scenarios.iter().filter(|s| s.measures_a_race()).cloned().collect();
    let work_dir = cfg.work_dir.clone();
    let b =
        vm::run_suite(&SuiteConfig { worker, qemu: other, qemu_note, ..cfg }, &on_row).map_err(|e| e.to_string())?;
    let mut c = shmem_judge::compare::compare(&a.scenarios, &b.scenarios);
    if let [Some(wa), Some(wb)] = workers {
        let family = shmem_judge::compare::rate_family(&a.scenarios, &b.scenarios);
        compare_rates((&probes, &work_dir), family, [&wa, &wb], a.accel, o.compare_budget, &mut c)?;
    }
    Ok(Outcome { run: b, baseline: Some((a, c)) })
}

/// The rates of the probe directions in `family` (`compare::rate_family`)
/// of A and B from boots of both in turn within `budget_secs`
/// (`vm::replicate`), called by the judge into `c`.
fn compare_rates(
    (probes, work_dir): (&[Scenario], &Path),
    family: std::collections::BTreeSet<String>,
    workers: [&[String]; 2],
    accel: vm::qemu::Accel,
    budget_secs: u64,
    c: &mut Comparison,
) -> Result<(), String> {
    let probes: Vec<&Scenario> = probes.iter().collect();
    if probes.is_empty() || family.is_empty() || budget_secs == 0 {
        return Ok(());
    }
    let qemu_only = |w: &[String]| w.iter().cloned().chain(["--qemu-only".to_string()]).collect::<Vec<_>>();
    let (wa, wb) = (qemu_only(workers[0]), qemu_only(workers[1]));
    let names: Vec<&str> = family.iter().map(String::as_str).collect();
    println!(
        "vm-test: compare: the probe booted for A and B in turn (A B B A ...), alone, for at most {budget_secs} s (--compare-budget), for the directions not a plain pass on both sides: {}",
        names.join(", ")
    );
    let logs = tempfile::Builder::new()
        .prefix("replicate-")
        .tempdir_in(work_dir)
        .map_err(|e| format!("replicated boots' log dir in {}: {e}", work_dir.display()))?;
    let r = vm::replicate::replicate(
        [&wa, &wb],
        &probes,
        family,
        accel,
        logs.path(),
        std::time::Duration::from_secs(budget_secs),
        |line| println!("vm-test: compare: {line}"),
    );
    for (at, [a, b]) in &r.counts {
        c.lines.push(format!("replicated counts: {at}: A {}; B {}", counts_text(a), counts_text(b)));
    }
    for (at, call) in r.calls() {
        c.add_rates(&at, &call);
    }
    if !r.failed.is_empty() {
        let kept = logs.keep();
        c.lines.push(format!(
            "replicated boots that failed ({}; logs in {}): {}",
            r.failed.len(),
            kept.display(),
            r.failed.join("; ")
        ));
    }
    c.lines.push(format!(
        "replicated boots: {} of A, {} of B in {:.0} s",
        r.boots[0],
        r.boots[1],
        r.took.as_secs_f64()
    ));
    Ok(())
}
