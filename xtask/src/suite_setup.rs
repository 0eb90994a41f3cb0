//! What a suite run needs, assembled from the options: the scenarios
//! (loaded, scaled, bounded), the known-defect lists, the artefacts (QEMU,
//! kernel, initramfs, virtio-media backends) and the report's first-line
//! notes. Runs nothing; `vm_test`, `bench`, `fuzz` and the own-boot worker use it.

use std::path::{Path, PathBuf};

use shmem_host::conformance::BackendUnderTest;
use shmem_host::vm::config::NoBackend;
use shmem_host::vm::lists::load_known_defects;
use shmem_host::vm::qemu::{QemuInfo, probe};
use shmem_host::vm::scenario::{MediaBuild, Scenario, SuiteDevice, SuiteFile};
use shmem_host::vm::{self, SuiteConfig, bounds};
use shmem_judge::defects::KnownDefect;
use xshell::{Shell, cmd};

use crate::opts::{GuestOpts, SuiteOpts, VmTestArgs};
use crate::shell::root;
use crate::{apt, initramfs, kernel, qemu, shell, vhost_device_media};

/// The scenarios to run: every `*.toml` of each `--scenarios` directory
/// (default `tests/scenarios`) whose name contains a `--filter`, their probes
/// scaled, every value bounded against the device it runs with.
pub fn load_scenarios(root: &Path, o: &SuiteOpts, suite: &SuiteDevice) -> Result<Vec<Scenario>, String> {
    let dirs = if o.scenarios.is_empty() { vec![root.join("tests/scenarios")] } else { o.scenarios.clone() };
    let mut picked: Vec<Scenario> = Vec::new();
    for dir in &dirs {
        let all = Scenario::load_dir(dir).map_err(|e| e.to_string())?;
        picked.extend(
            all.into_iter().filter(|s| o.filter.is_empty() || o.filter.iter().any(|f| picks(o.exact, f, &s.name))),
        );
    }
    if picked.is_empty() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!("no scenario in {} matches {:?}", shown.join(", "), o.filter));
    }
    for (i, s) in picked.iter().enumerate() {
        if let Some(t) = picked[..i].iter().find(|t| t.name == s.name) {
            return Err(format!(
                "two scenarios are named {:?}: {} and {}; reports and known defects name a scenario by its file name",
                s.name,
                t.path.display(),
                s.path.display()
            ));
        }
    }
    for s in &mut picked {
        prepare_scenario(s, o.probe_scale, suite).map_err(|e| e.to_string())?;
    }
    Ok(picked)
}

/// Scales a loaded scenario's probes and bounds its values against the
/// device it runs with (its own, or the suite's).
pub fn prepare_scenario(
    s: &mut Scenario,
    probe_scale: u32,
    suite: &SuiteDevice,
) -> Result<(), shmem_judge::parse::LoadError> {
    bounds::scale_probes(s, probe_scale)?;
    let regions = s.device.as_ref().unwrap_or(suite).spec().regions;
    bounds::check(s, &regions)
}

/// Whether `--filter TEXT` picks the scenario `name` (with `--exact`: only that name).
pub fn picks(exact: bool, text: &str, name: &str) -> bool {
    if exact { name == text } else { name.contains(text) }
}

/// The known-defects list `--known-defects` names (default `tests/known-defects.toml`).
pub fn known_defects_path(list: Option<&str>) -> PathBuf {
    list.map_or_else(|| root().join("tests/known-defects.toml"), PathBuf::from)
}

/// The backends' list of known defects: `--backend-defects`, else tests/backend-defects.toml.
pub fn backend_defects_path(o: &SuiteOpts) -> PathBuf {
    o.backend_defects.clone().unwrap_or_else(|| root().join("tests/backend-defects.toml"))
}

/// The known defects to judge by, and where they came from ("none" with
/// `--known-defects none`).
pub fn known_defects(given: Option<&str>) -> Result<(Vec<KnownDefect>, String), String> {
    if given == Some("none") {
        return Ok((Vec::new(), "none".into()));
    }
    let path = known_defects_path(given);
    let list = load_known_defects(&path).map_err(|e| e.to_string())?;
    let source = given.map_or_else(|| "tests/known-defects.toml".into(), str::to_string);
    Ok((list, source))
}

/// What a boot needs: a QEMU that passes the probe, the kernel, the initramfs.
pub struct Artefacts {
    pub qemu: QemuInfo,
    /// How the QEMU was chosen, when the report's first line must say so.
    pub qemu_note: Option<String>,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// QEMU (found or provisioned) beside the agent and the kernel (built or
/// found): the download and the builds overlap, each shown as its phase.
pub fn guest_artefacts(o: &GuestOpts, compare: bool, root: &Path) -> Result<Artefacts, String> {
    let cache = shell::cache_dir()?;
    let pin = qemu::pinned_qemu(root)?;
    let (found, built) = std::thread::scope(|scope| {
        let qemu = scope.spawn(|| {
            let sh = Shell::new().map_err(|e| e.to_string())?;
            qemu::find_qemu(&sh, o.qemu.as_deref(), &cache, &pin, compare)
        });
        let built = agent_and_kernel(o, root, &cache);
        (qemu.join().unwrap_or_else(|p| Err(shmem_host::panic_text(p.as_ref()))), built)
    });
    let (qemu, qemu_note) = found?;
    let (agent, kernel) = built?;
    crate::progress::say(&format!(
        "vm-test: QEMU {} at {}{}",
        qemu.build,
        qemu.path.display(),
        qemu_note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default()
    ));
    let initramfs = initramfs::build_initramfs(&agent, &root.join("target/vm-test"))?;
    Ok(Artefacts { qemu, qemu_note, kernel, initramfs })
}

/// The static agent, and the guest kernel: `--kernel FILE`, the host's
/// (`--kernel host`, or when there is no apt for Debian's kernel source and
/// no `--kernel-src`), else built and cached.
fn agent_and_kernel(o: &GuestOpts, root: &Path, cache: &Path) -> Result<(PathBuf, PathBuf), String> {
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let agent = initramfs::build_agent(&sh, root)?;
    let kernel = match &o.kernel {
        Some(k) if k.as_os_str() == "host" => kernel::host_kernel()?,
        Some(k) if !k.is_file() => return Err(format!("--kernel {}: no such file", k.display())),
        Some(k) => k.clone(),
        None if o.kernel_src.is_none() && o.kernel_config.is_none() && !apt::available() => {
            let k = kernel::host_kernel().map_err(|e| {
                format!("no guest kernel: this machine has no apt for Debian's linux-source-6.12, no --kernel-src was given, and {e}")
            })?;
            crate::progress::say(&format!(
                "xtask: no apt for Debian's linux-source-6.12: booting the host's kernel {} (--kernel-src DIR builds one from a tree)",
                k.display()
            ));
            k
        }
        None => kernel::build_kernel(&sh, root, (o.kernel_src.as_deref(), o.kernel_config.as_deref()), cache)?,
    };
    Ok((agent, kernel))
}

/// The suite `o` asks for, ready to run, and the QEMU of `--compare`.
pub fn suite_config(o: &VmTestArgs) -> Result<(SuiteConfig, Option<QemuInfo>), String> {
    let root = root();
    let suite = SuiteFile::load(&root.join("tests/suite.toml")).map_err(|e| e.to_string())?;
    let scenarios = load_scenarios(&root, &o.suite, &suite.device)?;
    if o.suite.list {
        for s in &scenarios {
            println!("{:<28} {}", s.name, s.description);
        }
        std::process::exit(0);
    }
    let spec = suite.device.spec();
    spec.validate().map_err(|e| format!("tests/suite.toml: {e}"))?;
    let (known_defects, known_defects_source) = known_defects(o.suite.known_defects.as_deref())?;
    // The backends' builds beside QEMU's download and the kernel build.
    let (artefacts, media) = std::thread::scope(|scope| {
        let media = scope.spawn(|| media_for(&o.suite, &scenarios));
        let artefacts = guest_artefacts(&o.guest, o.compare.is_some(), &root);
        (artefacts, media.join().unwrap_or_else(|p| Err(shmem_host::panic_text(p.as_ref()))))
    });
    let Artefacts { qemu, qemu_note, kernel, initramfs } = artefacts?;
    let (media_backends, backend_defects) = media?;
    // A's own note when it is a build no entry lists (B's is said in the comparison).
    let qemu_note = join_notes([
        qemu_note,
        entries_note(&qemu, &known_defects, false).filter(|_| o.compare.is_none()),
        emulation_note(&qemu)?,
    ]);
    let other = match &o.compare {
        Some(p) => Some(probe(p).map_err(|e| format!("--compare refused: {e}"))?),
        None => None,
    };
    let work_dir = root.join("target/vm-test");
    let known_defects_source = if media_backends.is_empty() || known_defects_source == "none" {
        known_defects_source
    } else {
        format!("{known_defects_source}, tests/backend-defects.toml")
    };
    let cfg = SuiteConfig {
        worker: Some(worker_command(&qemu, &kernel, &initramfs, o.suite.probe_scale, &media_backends)?),
        qemu,
        qemu_note,
        kernel,
        initramfs,
        accel: o.guest.accel.choice(),
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
pub fn media_for(o: &SuiteOpts, scenarios: &[Scenario]) -> Result<(MediaBackends, Vec<KnownDefect>), String> {
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
            let got = media_under_test(&sh, o.media_backend.as_deref(), b).map_err(NoBackend::Unavailable);
            if let Err(e) = &got {
                eprintln!("vm-test: no {} virtio-media backend for the media scenarios: {e}", b.name());
            }
            (b, got)
        })
        .collect();
    // `--known-defects none` empties both lists; `--backend-defects PATH` names the backend's.
    let list = if o.known_defects.as_deref() == Some("none") {
        Some("none".into())
    } else {
        o.backend_defects.as_ref().map(|p| p.display().to_string())
    };
    let defects = backend_defects(list.as_deref())?;
    Ok((backends, defects))
}

/// The backend known-defects list: `none` (empty), a path, or by default `tests/backend-defects.toml`.
pub fn backend_defects(list: Option<&str>) -> Result<Vec<KnownDefect>, String> {
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
pub const BACKEND_LIST_ACCELS: [&str; 3] = [shmem_judge::defects::MODEL_ACCEL, "tcg", "kvm"];

/// The virtio-media backend builds of a run, each with why it is missing where it is.
pub type MediaBackends = Vec<(MediaBuild, Result<BackendUnderTest, NoBackend>)>;

/// vhost-device-media with simple-capture: `binary` (the published build),
/// or built once and cached.
pub fn media_under_test(sh: &Shell, binary: Option<&Path>, build: MediaBuild) -> Result<BackendUnderTest, String> {
    if let Some(fault) = build.fake_fault() {
        return fake_media(sh, fault);
    }
    let b = vhost_device_media::media_backend(sh, binary, &shell::cache_dir()?, build)?;
    Ok(BackendUnderTest {
        command: format!("{} --socket-path {{socket}} --backend simple-capture", b.path.display()),
        version: b.version,
    })
}

/// The appliance's `fake-media-backend` with `--fault FAULT`, built in the
/// workspace; its version line (which names the fault) keys its entries.
fn fake_media(sh: &Shell, fault: &str) -> Result<BackendUnderTest, String> {
    let _at = sh.push_dir(root());
    // Where the binary is looked for, whatever CARGO_TARGET_DIR says.
    let target = root().join("target");
    cmd!(sh, "cargo build --quiet -p shmem-host --bin fake-media-backend --target-dir {target}")
        .quiet()
        .run()
        .map_err(shell::err("building fake-media-backend"))?;
    let bin = target.join("debug/fake-media-backend");
    let version = cmd!(sh, "{bin} --fault {fault} --version")
        .quiet()
        .read()
        .map_err(shell::err("fake-media-backend --version"))?;
    Ok(BackendUnderTest {
        command: format!("{} --socket-path {{socket}} --fault {fault}", bin.display()),
        version: version.trim().to_string(),
    })
}

/// Own boots run in parallel, each in a worker process of this binary: its command.
pub fn worker_command(
    q: &QemuInfo,
    kernel: &Path,
    initramfs: &Path,
    probe_scale: u32,
    media: &MediaBackends,
) -> Result<Vec<String>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the xtask binary: {e}"))?;
    let mut w = vec![
        exe.display().to_string(),
        "own-boot-worker".into(),
        "--qemu".into(),
        q.path.display().to_string(),
        "--build".into(),
        q.build.clone(),
    ];
    w.extend(["--kernel".into(), kernel.display().to_string(), "--initramfs".into(), initramfs.display().to_string()]);
    w.extend(["--probe-scale".into(), probe_scale.to_string()]);
    for (b, m) in media.iter().filter_map(|(b, m)| Some((b, m.as_ref().ok()?))) {
        w.extend([
            "--media-build".into(),
            b.name().to_string(),
            "--media-command".into(),
            m.command.clone(),
            "--media-version".into(),
            m.version.clone(),
        ]);
    }
    Ok(w)
}

/// What the report's first line says of a QEMU no known-defect entry
/// applies to (a developer's own build, a release candidate, another
/// upstream version): its listed defects show as FAILs, and how to judge it
/// against the measured baseline instead. `None` when entries apply.
pub fn entries_note(q: &QemuInfo, list: &[KnownDefect], compared: bool) -> Option<String> {
    if list.is_empty() || shmem_judge::listing::lists_build(list, &q.build) {
        return None;
    }
    let kind = vm::qemu::development_kind(&q.build).map(|k| format!("{k}, ")).unwrap_or_default();
    let what = format!("{kind}no known-defect entry of its own: every listed defect it shows is a FAIL here");
    Some(if compared {
        format!("{what}; --compare judges it against A instead")
    } else {
        format!(
            "{what}; to judge it against the pinned build, whose defects are measured: cargo xtask vm-test --compare {}",
            q.path.display()
        )
    })
}

/// What the first line says when another frontend's behaviour is emulated
/// at this QEMU's socket (`SHMEM_APPLIANCE_EMULATE`): its verdicts are of
/// that behaviour, not of the QEMU alone.
pub fn emulation_note(q: &QemuInfo) -> Result<Option<String>, String> {
    let e = vm::boot::Emulation::for_qemu(&q.path).map_err(|e| e.to_string())?;
    Ok(e.map(|e| {
        format!("EMULATED at its socket: {e:?} ({}); the verdicts are of that behaviour", vm::boot::EMULATE_VAR)
    }))
}

pub fn join_notes(notes: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    notes.into_iter().flatten().reduce(|a, b| format!("{a}; {b}"))
}
