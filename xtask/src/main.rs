//! cargo xtask: orchestration only. Builds the guest agent (static), the
//! kernel (cached) and the initramfs, finds or provisions a QEMU that
//! supports vhost-user shared memory, and calls the host runner. Scenario
//! logic and verdicts live in `shmem_host::vm`, not here.

mod artefacts;
mod bless;
mod vhost_device_media;
mod moved;
mod self_compare;

use std::path::{Path, PathBuf};
use std::time::Duration;
use std::process::ExitCode;

use shmem_host::conformance::BackendUnderTest;
use shmem_host::vm::qemu::{Accel, QemuInfo, probe};
use shmem_host::vm::lists::load_known_defects;
use shmem_host::vm::bounds;
use shmem_host::vm::scenario::{MediaBuild, Scenario, SuiteDevice, SuiteFile};
use shmem_host::vm::{self, AccelChoice, SuiteConfig, report};
use xshell::{Shell, cmd};

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
  --filter TEXT        run only scenarios whose name contains TEXT
  --probe-scale K      run K times the iterations of every doorbell probe (default 1): the
                       suite's counts keep it quick; a rare stale read, or its absence,
                       needs more
  --list               list the scenarios and exit
  --known-defects PATH|none
                       judge by this list of known QEMU defects (default tests/known-defects.toml);
                       none: every failure is a FAIL
  --compare QEMU2      run the suite on --qemu (A, the baseline) and on QEMU2 (B); print what B
                       fixed, regressed and fails differently; exit non-zero on a regression
  --bless              add this QEMU build and accelerator to exactly the known-defect entries
                       (listed for another version or accelerator) whose signatures this run's
                       failures showed; prints what changed in the list, changes nothing else
  --json PATH          also write the report as JSON (both verdicts, checks, logs of failures)
  --junit PATH         also write the report as JUnit XML";

struct Opts {
    qemu: Option<PathBuf>,
    kernel: Option<PathBuf>,
    kernel_src: Option<PathBuf>,
    accel: AccelChoice,
    filter: Option<String>,
    probe_scale: u32,
    list: bool,
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
    known_defects: Option<String>,
    compare: Option<PathBuf>,
    /// `--scenarios DIR`, repeatable (default: tests/scenarios).
    scenarios: Vec<PathBuf>,
    /// `--bless`: add this build and accelerator to the entries listed elsewhere that the run's failures matched.
    bless: bool,
    /// `--media-backend PATH`: the virtio-media backend of media scenarios (default: built and cached).
    media_backend: Option<PathBuf>,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        qemu: None,
        kernel: None,
        kernel_src: None,
        accel: AccelChoice::Auto,
        filter: None,
        probe_scale: 1,
        list: false,
        json: None,
        junit: None,
        known_defects: None,
        compare: None,
        scenarios: Vec::new(),
        bless: false,
        media_backend: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--qemu" => o.qemu = Some(val()?.into()),
            "--kernel" => o.kernel = Some(val()?.into()),
            "--kernel-src" => o.kernel_src = Some(val()?.into()),
            "--accel" => {
                o.accel = match val()?.as_str() {
                    "auto" => AccelChoice::Auto,
                    "kvm" => AccelChoice::Kvm,
                    "tcg" => AccelChoice::Tcg,
                    other => return Err(format!("--accel {other:?}: use auto, kvm or tcg")),
                }
            }
            "--filter" => o.filter = Some(val()?),
            "--probe-scale" => o.probe_scale = parse_probe_scale(&val()?)?,
            "--list" => o.list = true,
            "--json" => o.json = Some(val()?.into()),
            "--junit" => o.junit = Some(val()?.into()),
            "--known-defects" => o.known_defects = Some(val()?),
            "--compare" => o.compare = Some(val()?.into()),
            "--scenarios" => o.scenarios.push(val()?.into()),
            "--bless" => o.bless = true,
            "--media-backend" => o.media_backend = Some(val()?.into()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn parse_probe_scale(v: &str) -> Result<u32, String> {
    v.parse().ok().filter(|&k| k >= 1).ok_or_else(|| format!("--probe-scale {v:?}: a whole number, at least 1"))
}

/// The scenarios to run: every `*.toml` of each `--scenarios` directory
/// (default `tests/scenarios`) whose name contains `--filter`, their probes
/// scaled, every value bounded against the device it runs with.
fn load_scenarios(root: &Path, o: &Opts, suite: &SuiteDevice) -> Result<Vec<Scenario>, String> {
    let dirs = if o.scenarios.is_empty() { vec![root.join("tests/scenarios")] } else { o.scenarios.clone() };
    let mut picked: Vec<Scenario> = Vec::new();
    for dir in &dirs {
        let all = Scenario::load_dir(dir).map_err(|e| e.to_string())?;
        picked.extend(all.into_iter().filter(|s| o.filter.as_deref().is_none_or(|f| s.name.contains(f))));
    }
    if picked.is_empty() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!("no scenario in {} matches {:?}", shown.join(", "), o.filter));
    }
    for (i, s) in picked.iter().enumerate() {
        if let Some(t) = picked[..i].iter().find(|t| t.name == s.name) {
            return Err(format!("two scenarios are named {:?}: {} and {}; reports and known defects name a scenario by its file name", s.name, t.path.display(), s.path.display()));
        }
    }
    for s in &mut picked {
        prepare_scenario(s, o.probe_scale, suite).map_err(|e| e.to_string())?;
    }
    Ok(picked)
}

/// Scales a loaded scenario's probes and bounds its values against the
/// device it runs with (its own, or the suite's).
fn prepare_scenario(s: &mut Scenario, probe_scale: u32, suite: &SuiteDevice) -> Result<(), shmem_judge::parse::LoadError> {
    bounds::scale_probes(s, probe_scale)?;
    let regions = s.device.as_ref().unwrap_or(suite).spec().regions;
    bounds::check(s, &regions)
}

/// What a vm-test invocation ran: one suite, or with `--compare` the
/// baseline (A) too and what changed from it to `run` (B).
struct Outcome {
    run: vm::SuiteReport,
    baseline: Option<(vm::SuiteReport, shmem_judge::compare::Comparison)>,
}

impl Outcome {
    fn ok(&self) -> bool {
        match &self.baseline {
            None => self.run.ok(),
            // Comparing a patch against a baseline fails on regressions only.
            Some((_, c)) => c.regressed == 0,
        }
    }
}

fn vm_test(args: &[String]) -> Result<Outcome, String> {
    let o = parse_opts(args)?;
    if o.bless && (o.compare.is_some() || o.known_defects.as_deref() == Some("none")) {
        return Err("--bless edits the known-defects list after one run: not with --compare or --known-defects none".into());
    }
    // Whatever happens, the reports are written: a panic is a failed run too.
    let result = std::panic::catch_unwind(|| prepare_and_run(&o)).unwrap_or_else(|p| {
        let what = shmem_host::panic_text(p.as_ref());
        Err(format!("the appliance panicked (a bug, please report it): {what}"))
    });
    let (json, junit) = match &result {
        Ok(Outcome { run: r, baseline: None }) => {
            report::print_report(r);
            (report::json_report(r), report::junit_report(r))
        }
        Ok(Outcome { run: b, baseline: Some((a, c)) }) => {
            println!("== A (baseline)");
            report::print_report(a);
            println!("== B");
            report::print_report(b);
            report::print_comparison(a, b, c);
            (report::json_compare(a, b, c), report::junit_report(b))
        }
        // A run that could not even start still leaves a failing report.
        Err(e) => (report::json_error(e), report::junit_error(e)),
    };
    for (path, text) in [(&o.json, json), (&o.junit, junit)] {
        if let Some(p) = path {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            }
            std::fs::write(p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
            println!("vm-test: wrote {}", p.display());
        }
    }
    if let (true, Ok(out)) = (o.bless, &result) {
        apply_bless(&o, &out.run)?;
    }
    result
}

/// `--bless`: the entries listed elsewhere that this run's failures matched
/// get this build and accelerator; the change is printed.
fn apply_bless(o: &Opts, run: &vm::SuiteReport) -> Result<(), String> {
    let path = known_defects_path(o);
    let ids = bless::matched_elsewhere(run);
    if ids.is_empty() {
        println!("vm-test: --bless: no failure matched an entry listed for another build or accelerator; {} unchanged", path.display());
        return Ok(());
    }
    let diff = bless::bless(&path, &ids, &run.qemu.build, run.accel.name())?;
    load_known_defects(&path).map_err(|e| format!("--bless left {} unreadable: {e}", path.display()))?;
    println!("vm-test: --bless added {} / {} to {} entries ({}):", run.qemu.build, run.accel.name(), ids.len(), ids.iter().cloned().collect::<Vec<_>>().join(", "));
    for d in diff {
        println!("{d}");
    }
    Ok(())
}

/// The known-defects list `--known-defects` names (default `tests/known-defects.toml`).
fn known_defects_path(o: &Opts) -> PathBuf {
    o.known_defects.as_ref().map_or_else(|| root().join("tests/known-defects.toml"), PathBuf::from)
}

/// The known defects to judge by, and where they came from ("none" with
/// `--known-defects none`).
fn known_defects(o: &Opts) -> Result<(Vec<shmem_judge::defects::KnownDefect>, String), String> {
    if o.known_defects.as_deref() == Some("none") {
        return Ok((Vec::new(), "none".into()));
    }
    let path = known_defects_path(o);
    let list = load_known_defects(&path).map_err(|e| e.to_string())?;
    let source = o.known_defects.clone().unwrap_or_else(|| "tests/known-defects.toml".into());
    Ok((list, source))
}

/// What a boot needs: a QEMU that passes the probe, the kernel, the initramfs.
struct Artefacts {
    qemu: QemuInfo,
    /// How the QEMU was chosen, when the report's first line must say so.
    qemu_note: Option<String>,
    kernel: PathBuf,
    initramfs: PathBuf,
}

fn guest_artefacts(o: &Opts, root: &Path) -> Result<Artefacts, String> {
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let cache = artefacts::cache_dir()?;
    let (qemu, qemu_note) = artefacts::find_qemu(&sh, o.qemu.as_deref(), &cache, &artefacts::pinned_qemu(root)?, o.compare.is_some())?;
    println!("vm-test: QEMU {} at {}{}", qemu.build, qemu.path.display(), qemu_note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default());
    let agent = artefacts::build_agent(&sh, root)?;
    let kernel = match &o.kernel {
        Some(k) if !k.is_file() => return Err(format!("--kernel {}: no such file", k.display())),
        Some(k) => k.clone(),
        None => artefacts::build_kernel(&sh, root, o.kernel_src.as_deref(), &cache)?,
    };
    let initramfs = artefacts::build_initramfs(&agent, &root.join("target/vm-test"))?;
    Ok(Artefacts { qemu, qemu_note, kernel, initramfs })
}

/// The suite `o` asks for, ready to run, and the QEMU of `--compare`.
fn suite_config(o: &Opts) -> Result<(SuiteConfig, Option<QemuInfo>), String> {
    let root = root();
    let suite = SuiteFile::load(&root.join("tests/suite.toml")).map_err(|e| e.to_string())?;
    let scenarios = load_scenarios(&root, o, &suite.device)?;
    if o.list {
        for s in &scenarios {
            println!("{:<28} {}", s.name, s.description);
        }
        std::process::exit(0);
    }
    let spec = suite.device.spec();
    spec.validate().map_err(|e| format!("tests/suite.toml: {e}"))?;
    let (known_defects, known_defects_source) = known_defects(o)?;
    let Artefacts { qemu, qemu_note, kernel, initramfs } = guest_artefacts(o, &root)?;
    // A's own note when it is a build no entry lists (B's is said in the comparison).
    let qemu_note = join_notes([qemu_note, entries_note(&qemu, &known_defects, false).filter(|_| o.compare.is_none()), emulation_note(&qemu)?]);
    let other = match &o.compare {
        Some(p) => Some(probe(p).map_err(|e| format!("--compare refused: {e}"))?),
        None => None,
    };
    let work_dir = root.join("target/vm-test");
    let (media_backends, backend_defects) = media_for(o, &scenarios)?;
    let known_defects_source = if media_backends.is_empty() || known_defects_source == "none" { known_defects_source } else { format!("{known_defects_source}, tests/backend-defects.toml") };
    let cfg = SuiteConfig {
        worker: Some(worker_command(&qemu, &kernel, &initramfs, o.probe_scale, &media_backends)?),
        qemu,
        qemu_note,
        kernel,
        initramfs,
        accel: o.accel,
        spec,
        layout: suite.device.layout(),
        scenarios,
        known_defects,
        known_defects_source,
        work_dir,
        media_backends,
        backend_defects,
    };
    Ok((cfg, other))
}

/// The builds of the virtio-media backend the media scenarios among
/// `scenarios` run against (built once and cached; `--media-backend` for the
/// published one) and their known defects. A build that cannot be had is not
/// an error here: each media scenario of it then reports why.
fn media_for(o: &Opts, scenarios: &[Scenario]) -> Result<(MediaBackends, Vec<shmem_judge::defects::KnownDefect>), String> {
    let mut builds: Vec<MediaBuild> = scenarios.iter().filter_map(|s| s.media.map(|m| m.build)).collect();
    builds.sort_unstable();
    builds.dedup();
    if builds.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let backends: MediaBackends = builds
        .into_iter()
        .map(|b| {
            let got = media_under_test(&sh, o.media_backend.as_deref(), b);
            if let Err(e) = &got {
                eprintln!("vm-test: no {} virtio-media backend for the media scenarios: {e}", b.name());
            }
            (b, got)
        })
        .collect();
    // `--known-defects PATH` names QEMU's list; only `none` reaches the backend's.
    let defects = backend_defects(o.known_defects.as_deref().filter(|k| *k == "none"))?;
    Ok((backends, defects))
}

/// The backend known-defects list: `none` (empty), a path, or by default `tests/backend-defects.toml`.
fn backend_defects(list: Option<&str>) -> Result<Vec<shmem_judge::defects::KnownDefect>, String> {
    match list {
        Some("none") => Ok(Vec::new()),
        other => {
            let path = other.map_or_else(|| root().join("tests/backend-defects.toml"), PathBuf::from);
            shmem_host::vm::lists::load_defect_list(&path, &BACKEND_LIST_ACCELS).map_err(|e| e.to_string())
        }
    }
}

/// The frontends `tests/backend-defects.toml` names: the model (backend-test
/// and the model half of media scenarios) and QEMU's accelerators (their QEMU half).
const BACKEND_LIST_ACCELS: [&str; 3] = [shmem_judge::defects::MODEL_ACCEL, "tcg", "kvm"];

/// The virtio-media backend builds of a run, each with why it is missing where it is.
type MediaBackends = Vec<(MediaBuild, Result<BackendUnderTest, String>)>;

/// vhost-device-media with simple-capture: `binary` (the published build),
/// or built once and cached.
fn media_under_test(sh: &Shell, binary: Option<&Path>, build: MediaBuild) -> Result<BackendUnderTest, String> {
    let b = vhost_device_media::media_backend(sh, binary, &artefacts::cache_dir()?, build)?;
    Ok(BackendUnderTest { command: format!("{} --socket-path {{socket}} --backend simple-capture", b.path.display()), version: b.version })
}

/// Own boots run in parallel, each in a worker process of this binary: its command.
fn worker_command(q: &QemuInfo, kernel: &Path, initramfs: &Path, probe_scale: u32, media: &MediaBackends) -> Result<Vec<String>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the xtask binary: {e}"))?;
    let mut w = vec![exe.display().to_string(), "own-boot-worker".into(), "--qemu".into(), q.path.display().to_string(), "--build".into(), q.build.clone()];
    w.extend(["--kernel".into(), kernel.display().to_string(), "--initramfs".into(), initramfs.display().to_string()]);
    w.extend(["--probe-scale".into(), probe_scale.to_string()]);
    for (b, m) in media.iter().filter_map(|(b, m)| Some((b, m.as_ref().ok()?))) {
        w.extend([format!("--media-command-{}", b.name()), m.command.clone(), format!("--media-version-{}", b.name()), m.version.clone()]);
    }
    Ok(w)
}

fn prepare_and_run(o: &Opts) -> Result<Outcome, String> {
    let (cfg, other) = suite_config(o)?;
    vm::install_interrupt_handler();
    let a = vm::run_suite(&cfg).map_err(|e| e.to_string())?;
    let Some(other) = other else { return Ok(Outcome { run: a, baseline: None }) };
    println!("vm-test: compare: now QEMU {} at {}", other.version_text, other.path.display());
    let worker = Some(worker_command(&other, &cfg.kernel, &cfg.initramfs, o.probe_scale, &cfg.media_backends)?);
    let qemu_note = join_notes([entries_note(&other, &cfg.known_defects, true), emulation_note(&other)?]);
    let b = vm::run_suite(&SuiteConfig { worker, qemu: other, qemu_note, ..cfg }).map_err(|e| e.to_string())?;
    let c = shmem_judge::compare::compare(&a.scenarios, &b.scenarios);
    Ok(Outcome { run: b, baseline: Some((a, c)) })
}

/// What the report's first line says of a QEMU no known-defect entry
/// applies to (a developer's own build, a release candidate, another
/// upstream version): its listed defects show as FAILs, and how to judge it
/// against the measured baseline instead. `None` when entries apply.
fn entries_note(q: &QemuInfo, list: &[shmem_judge::defects::KnownDefect], compared: bool) -> Option<String> {
    if list.is_empty() || shmem_judge::listing::lists_build(list, &q.build) {
        return None;
    }
    let kind = vm::qemu::development_kind(&q.build).map(|k| format!("{k}, ")).unwrap_or_default();
    let what = format!("{kind}no known-defect entry of its own: every listed defect it shows is a FAIL here");
    Some(if compared {
        format!("{what}; --compare judges it against A instead")
    } else {
        format!("{what}; to judge it against the pinned build, whose defects are measured: cargo xtask vm-test --compare {}", q.path.display())
    })
}

/// What the first line says when another frontend's behaviour is emulated
/// at this QEMU's socket (`SHMEM_APPLIANCE_EMULATE`): its verdicts are of
/// that behaviour, not of the QEMU alone.
fn emulation_note(q: &QemuInfo) -> Result<Option<String>, String> {
    let e = vm::boot::Emulation::for_qemu(&q.path)?;
    Ok(e.map(|e| format!("EMULATED at its socket: {e:?} ({}); the verdicts are of that behaviour", vm::boot::EMULATE_VAR)))
}

fn join_notes(notes: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    notes.into_iter().flatten().reduce(|a, b| format!("{a}; {b}"))
}

/// Boots alone after each bench run.
const BOOTS_ALONE: usize = 3;

/// `bench [--runs N] [vm-test options]`: the suite N times (default 3), each
/// followed by boots alone, then every figure with its spread. What could
/// not be measured (a failed run, a failed boot, bandwidth on a coarse
/// clock) is said in the report; it fails only when nothing was measured.
fn bench(args: &[String]) -> Result<bool, String> {
    let mut rest = args.to_vec();
    if let Some(n) = take_opt::<usize>(&mut rest, "--self-compare")? {
        return self_compare::run(n.max(1), &rest);
    }
    let runs: usize = take_opt(&mut rest, "--runs")?.unwrap_or(3);
    if runs == 0 {
        return Err("--runs 0: a number of runs, at least 1".into());
    }
    if rest.iter().any(|a| a == "--compare") {
        return Err("bench measures one QEMU; --compare is for vm-test".into());
    }
    let (cfg, _) = suite_config(&parse_opts(&rest)?)?;
    let (mut reports, mut alone, mut not_measured) = (Vec::new(), Vec::new(), Vec::new());
    for k in 1..=runs {
        println!("bench: run {k} of {runs}");
        let accel = match vm_test(&rest) {
            Ok(outcome) if outcome.ok() => {
                let accel = outcome.run.accel;
                reports.push(outcome.run);
                accel
            }
            Ok(outcome) => {
                not_measured.push(format!("run {k}: the suite failed (its figures are left out)"));
                outcome.run.accel
            }
            Err(e) => {
                not_measured.push(format!("run {k}: could not run: {e}"));
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
    match report::bench_report(&reports, &alone, &not_measured) {
        Some(json) => {
            println!("{json}");
            Ok(true)
        }
        None => Err("bench: nothing could be measured".into()),
    }
}

/// Takes `--key VALUE` out of `args`, parsed.
fn take_opt<T: std::str::FromStr>(args: &mut Vec<String>, key: &str) -> Result<Option<T>, String> {
    let Some(i) = args.iter().position(|a| a == key) else { return Ok(None) };
    let v = args.get(i + 1).cloned().ok_or_else(|| format!("{key} needs a value"))?;
    args.drain(i..i + 2);
    v.parse().map(Some).map_err(|_| format!("{key} {v:?}: not a valid value"))
}

/// `fuzz [--seed S] [--time SECS] [--ops N] [--shrink-time SECS] [--out DIR]
/// [--qemu ...] [--accel ...]`: the differential fuzzer, QEMU against the
/// model. Fails when it finds a divergence that is not listed, or leaves
/// anything behind.
fn fuzz(args: &[String]) -> Result<bool, String> {
    use shmem_host::vm::fuzz::{FuzzConfig, Targets};
    let mut rest = args.to_vec();
    let seed = match take_opt::<u64>(&mut rest, "--seed")? {
        Some(s) => s,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
    };
    let time = Duration::from_secs(take_opt(&mut rest, "--time")?.unwrap_or(60));
    let max_ops = take_opt(&mut rest, "--ops")?.unwrap_or(u64::MAX);
    let shrink_time = Duration::from_secs(take_opt(&mut rest, "--shrink-time")?.unwrap_or(180));
    let root = root();
    let out_dir = take_opt::<PathBuf>(&mut rest, "--out")?.unwrap_or_else(|| root.join("tests/scenarios"));
    let o = parse_opts(&rest)?;
    refuse_for_fuzz(&o)?;
    let suite = SuiteFile::load(&root.join("tests/suite.toml")).map_err(|e| e.to_string())?;
    let spec = suite.device.spec();
    let Artefacts { qemu, qemu_note, kernel, initramfs } = guest_artefacts(&o, &root)?;
    let vm::accel::AccelPlan { first: accel, note: why, .. } = vm::accel::AccelPlan::of(o.accel);
    let (listed, _) = known_defects(&o)?;
    let known: Vec<_> = listed
        .into_iter()
        .filter(|d| d.applies(&qemu.build, accel.name(), "fuzz"))
        .collect();
    println!("fuzz: seed {seed}, {}s, accel {}{}, {} known divergences listed for this build", time.as_secs(), accel.name(), why.map(|w| format!(" ({w})")).unwrap_or_default(), known.len());
    vm::install_interrupt_handler();
    let logs = tempfile::Builder::new().prefix("fuzz-").tempdir_in(root.join("target")).map_err(|e| e.to_string())?;
    let sockets = tempfile::Builder::new().prefix("shmem-fuzz-").tempdir().map_err(|e| format!("socket dir: {e}"))?;
    let cfg = SuiteConfig {
        qemu,
        qemu_note,
        kernel,
        initramfs,
        accel: o.accel,
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
    println!("fuzz: seed {seed}: {} operations, {} distinct states, {} fresh starts", report.ops, report.states, report.fresh_starts);
    for (id, n) in &report.exercised {
        println!("fuzz: listed `{id}`: exercised {n} times, shown {} times", report.known.get(id).copied().unwrap_or(0));
    }
    for n in &report.not_seen {
        println!("fuzz: NOT SEEN `{}`: exercised {} times (at least {} needed) and never shown: fixed? drop it from the known-defects list", n.id, n.exercised, n.needed);
    }
    if !leaks.is_empty() {
        println!("fuzz: left behind: {}", leaks.join("; "));
    }
    match &report.found {
        Some(f) => {
            println!("fuzz: DIVERGENCE {}: {}", f.divergence.kind, f.divergence.check.evidence);
            let minimal = if f.minimal { "" } else { " (not minimal: shrinking ran out of time)" };
            println!("fuzz: shrunk from {} to {} operations{minimal}; wrote {}", f.original_len, f.ops.len(), f.scenario.display());
            false
        }
        None => {
            println!("fuzz: no divergence beyond the listed ones");
            leaks.is_empty() && report.not_seen.is_empty()
        }
    }
}

/// The vm-test options `fuzz` has no use for: refused, never ignored.
fn refuse_for_fuzz(o: &Opts) -> Result<(), String> {
    let given = [
        ("--filter", o.filter.is_some()),
        ("--scenarios", !o.scenarios.is_empty()),
        ("--json", o.json.is_some()),
        ("--junit", o.junit.is_some()),
        ("--compare", o.compare.is_some()),
        ("--list", o.list),
        ("--probe-scale", o.probe_scale != 1),
    ];
    match given.iter().find(|(_, g)| *g) {
        Some((opt, _)) => Err(format!("fuzz does not take {opt}: it generates its own operations and prints its report (see --out)")),
        None => Ok(()),
    }
}

/// `own-boot-worker`: one own-boot scenario in this process (started by the
/// runner, which passes everything it needs); prints its run as JSON.
fn own_boot_worker(args: &[String]) -> Result<bool, String> {
    let mut args = args.to_vec();
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
    let run = vm::own_boot::own_boot_run(&cfg, &scn, accel, &logs, sockets.path());
    println!("{}", serde_json::to_string(&run).map_err(|e| e.to_string())?);
    Ok(true)
}

fn test(args: &[String]) -> Result<bool, String> {
    let sh = Shell::new().map_err(|e| e.to_string())?;
    sh.change_dir(root());
    cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run().map_err(|e| e.to_string())?;
    cmd!(sh, "cargo test --workspace").run().map_err(|e| e.to_string())?;
    let suite_ok = vm_test(args)?.ok();
    // A short fuzz keeps the fuzzer working: fixed seed, found scenarios under target/.
    let fuzz_ok = fuzz(&["--seed", "1", "--time", "45", "--shrink-time", "120", "--out", "target/fuzz-found"].map(String::from))?;
    let moved_ok = moved_qemu(args)?;
    let backend_ok = backend_test(&[])?;
    Ok(suite_ok && fuzz_ok && moved_ok && backend_ok)
}

/// `backend-test`: the backend under test (built, given, or any command),
/// every session, the report; fails on what the backend list does not name.
fn backend_test(args: &[String]) -> Result<bool, String> {
    let mut rest = args.to_vec();
    let command = take_opt::<String>(&mut rest, "--backend")?;
    let binary = take_opt::<PathBuf>(&mut rest, "--media-backend")?;
    let json = take_opt::<PathBuf>(&mut rest, "--json")?;
    let junit = take_opt::<PathBuf>(&mut rest, "--junit")?;
    let list = take_opt::<String>(&mut rest, "--known-defects")?;
    if let Some(other) = rest.first() {
        return Err(format!("backend-test: unknown option {other:?}"));
    }
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let backend = match command {
        Some(c) => {
            // A backend whose program does not say a version is keyed on its command line.
            let version = shmem_host::bounded::version_line(c.split_whitespace().next().unwrap_or("")).unwrap_or_else(|e| {
                println!("backend-test: {e}; its known defects are keyed on the command line");
                c.clone()
            });
            BackendUnderTest { version, command: c }
        }
        None => media_under_test(&sh, binary.as_deref(), MediaBuild::Published)?,
    };
    let defects = backend_defects(list.as_deref())?;
    println!("backend-test: {} ({})", backend.version, backend.command);
    let dir = tempfile::Builder::new().prefix("backend-test-").tempdir().map_err(|e| e.to_string())?;
    let sessions = shmem_host::conformance::run_all(&backend, &defects, dir.path(), &Default::default());
    shmem_host::conformance::report::print(&sessions);
    let write = |p: &Option<PathBuf>, text: String| p.as_ref().map_or(Ok(()), |p| std::fs::write(p, text).map_err(|e| format!("write {}: {e}", p.display())));
    write(&json, shmem_host::conformance::report::json(&sessions))?;
    write(&junit, shmem_host::conformance::report::junit(&sessions))?;
    Ok(sessions.iter().all(|s| s.judgement.verdict.ok()))
}

/// `moved-qemu [--qemu PATH]`: verdicts that follow a QEMU that changed,
/// against wrappers of the QEMU in use (see `moved`).
fn moved_qemu(args: &[String]) -> Result<bool, String> {
    let o = parse_opts(args)?;
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let (qemu, _) = artefacts::find_qemu(&sh, o.qemu.as_deref(), &artefacts::cache_dir()?, &artefacts::pinned_qemu(&root())?, false)?;
    moved::run(&qemu, &root())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(sub) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let res = match sub.as_str() {
        "test" => test(rest),
        "vm-test" => vm_test(rest).map(|r| r.ok()),
        "bench" => bench(rest),
        "own-boot-worker" => own_boot_worker(rest),
        "fuzz" => fuzz(rest),
        "moved-qemu" => moved_qemu(rest),
        "backend-test" => backend_test(rest),
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
