//! What a VM run needs on disk: the static guest agent, the kernel (built
//! from Debian's linux-source or a given tree, cached by source version and
//! fragment), the initramfs, and a QEMU that passes the probe (found, or
//! provisioned from Debian unstable into a private prefix, cached).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use shmem_host::files::fnv1a64;
use shmem_host::vm::qemu::{QemuInfo, probe};
use xshell::{Shell, cmd};

const KERNEL_PACKAGE: &str = "linux-source-6.12";
const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
const KERNEL_BUILD_DEPS: [&str; 5] = ["linux-source-6.12", "flex", "bison", "libelf-dev", "bc"];
const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Where builds and provisioned QEMU are cached, outside the clone:
/// `$SHMEM_APPLIANCE_CACHE`, else `$XDG_CACHE_HOME/shmem-appliance`,
/// else `~/.cache/shmem-appliance`.
pub fn cache_dir() -> Result<PathBuf, String> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = env("SHMEM_APPLIANCE_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("shmem-appliance")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/shmem-appliance")))
        .ok_or("no cache directory: set SHMEM_APPLIANCE_CACHE or HOME")?;
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn err(what: &str) -> impl FnOnce(xshell::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

pub fn build_agent(sh: &Shell, root: &Path) -> Result<PathBuf, String> {
    let _dir = sh.push_dir(root);
    let _flags = sh.push_env("RUSTFLAGS", "-C target-feature=+crt-static");
    cmd!(sh, "cargo build --quiet --release -p guest-agent --target x86_64-unknown-linux-gnu --target-dir target/agent")
        .run()
        .map_err(err("building the static guest agent"))?;
    Ok(root.join("target/agent/x86_64-unknown-linux-gnu/release/guest-agent"))
}

fn package_installed(sh: &Shell, name: &str) -> bool {
    let fmt = "-f=${Status}";
    cmd!(sh, "dpkg-query -W {fmt} {name}").quiet().ignore_stderr().read().is_ok_and(|s| s.contains("install ok installed"))
}

fn apt_install(sh: &Shell, packages: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !package_installed(sh, p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: installing {}", missing.join(" "));
    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    let m = &missing;
    if cmd!(sh, "apt-get install -y -q {m...}").quiet().run().is_err() {
        cmd!(sh, "apt-get update -q").quiet().run().map_err(err("apt-get update"))?;
        cmd!(sh, "apt-get install -y -q {m...}")
            .run()
            .map_err(|e| format!("installing {} failed ({e}); as root, run: apt-get install {}", missing.join(" "), missing.join(" ")))?;
    }
    Ok(())
}

/// Builds (or reuses) a bzImage from `tinyconfig` + `images/kernel.config`.
pub fn build_kernel(sh: &Shell, root: &Path, src: Option<&Path>, cache: &Path) -> Result<PathBuf, String> {
    let fragment_path = root.join("images/kernel.config");
    let fragment = fs::read_to_string(&fragment_path).map_err(|e| format!("read {}: {e}", fragment_path.display()))?;
    let source_id = match src {
        Some(dir) => {
            let _d = sh.push_dir(dir);
            let v = cmd!(sh, "make -s kernelversion").read().map_err(err("reading the kernel version of --kernel-src"))?;
            format!("{}:{v}", dir.display())
        }
        None => {
            apt_install(sh, &KERNEL_BUILD_DEPS)?;
            let fmt = "-f=${Version}";
            let v = cmd!(sh, "dpkg-query -W {fmt} {KERNEL_PACKAGE}").read().map_err(err("dpkg-query"))?;
            format!("{KERNEL_PACKAGE}:{v}")
        }
    };
    let key = fnv1a64(format!("{source_id}\n{fragment}").as_bytes());
    let out = cache.join(format!("kernel-{key:016x}/bzImage"));
    if out.exists() {
        return Ok(out);
    }
    println!("xtask: building the guest kernel ({source_id}); this takes a few minutes once");
    let tmp = tempfile::Builder::new().prefix("kbuild-").tempdir_in(cache).map_err(|e| e.to_string())?;
    let (tree, build) = match src {
        Some(dir) => (dir.to_path_buf(), tmp.path().join("out")),
        None => {
            let t = tmp.path();
            cmd!(sh, "tar -xf {KERNEL_TARBALL} -C {t}").run().map_err(err("unpacking the kernel source"))?;
            let tree = t.join("linux-source-6.12");
            (tree.clone(), tree)
        }
    };
    fs::create_dir_all(&build).map_err(|e| e.to_string())?;
    let _d = sh.push_dir(&tree);
    let o = format!("O={}", build.display());
    let jobs = format!("-j{}", std::thread::available_parallelism().map_or(2, |n| n.get()));
    cmd!(sh, "make -s {o} tinyconfig").run().map_err(err("make tinyconfig"))?;
    let config = build.join(".config");
    cmd!(sh, "scripts/kconfig/merge_config.sh -m -O {build} {config} {fragment_path}").quiet().ignore_stdout().run().map_err(err("merging images/kernel.config"))?;
    cmd!(sh, "make -s {o} olddefconfig").run().map_err(err("make olddefconfig"))?;
    let merged = fs::read_to_string(&config).map_err(|e| e.to_string())?;
    for line in fragment.lines().filter(|l| l.ends_with("=y")) {
        if !merged.lines().any(|m| m == line) {
            return Err(format!("kernel option {line} from images/kernel.config did not survive olddefconfig"));
        }
    }
    cmd!(sh, "make -s {o} {jobs} bzImage").run().map_err(err("building bzImage"))?;
    fs::create_dir_all(out.parent().unwrap_or(cache)).map_err(|e| e.to_string())?;
    fs::copy(build.join("arch/x86/boot/bzImage"), &out).map_err(|e| format!("copy bzImage: {e}"))?;
    Ok(out)
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let fields = [ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A newc cpio with the agent as /init (uncompressed: always supported).
pub fn build_initramfs(agent: &Path, work_dir: &Path) -> Result<PathBuf, String> {
    let init = fs::read(agent).map_err(|e| format!("read {}: {e}", agent.display()))?;
    let mut out = Vec::with_capacity(init.len() + 1024);
    for (i, d) in ["dev", "proc", "sys"].iter().enumerate() {
        cpio_entry(&mut out, i as u32 + 1, d, 0o040755, &[]);
    }
    cpio_entry(&mut out, 4, "init", 0o100755, &init);
    cpio_entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    fs::create_dir_all(work_dir).map_err(|e| e.to_string())?;
    let path = work_dir.join("initramfs.cpio");
    let mut f = fs::File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
    f.write_all(&out).map_err(|e| e.to_string())?;
    Ok(path)
}

/// `--qemu`, then `$QEMU`: used if they pass the probe, refused otherwise.
/// Then `qemu-system-x86_64` on PATH, then the cached or a newly provisioned one.
pub fn find_qemu(sh: &Shell, explicit: Option<&Path>, cache: &Path) -> Result<QemuInfo, String> {
    if let Some(p) = explicit {
        return probe(p).map_err(|e| format!("--qemu refused: {e}"));
    }
    if let Some(p) = std::env::var_os("QEMU").filter(|v| !v.is_empty()) {
        return probe(Path::new(&p)).map_err(|e| format!("$QEMU refused: {e}"));
    }
    if let Ok(p) = cmd!(sh, "which qemu-system-x86_64").quiet().ignore_stderr().read() {
        match probe(Path::new(p.trim())) {
            Ok(info) => return Ok(info),
            Err(e) => println!("xtask: not using the QEMU on PATH: {e}"),
        }
    }
    let wrapper = cache.join("qemu/qemu-system-x86_64");
    if let (true, Ok(info)) = (wrapper.exists(), probe(&wrapper)) {
        return Ok(info);
    }
    provision_qemu(sh, cache)?;
    probe(&wrapper).map_err(|e| format!("the provisioned QEMU failed the probe: {e}"))
}

/// The base mirror this machine's apt already uses (never a hardcoded host).
fn machine_mirror(sh: &Shell) -> Result<String, String> {
    let fmt = "$(REPO_URI)\t$(RELEASE)\t$(TARGET_OF)";
    let targets = cmd!(sh, "apt-get indextargets --format {fmt}").read().map_err(err("apt-get indextargets"))?;
    targets
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?, f.next()?, f.next()?))
        })
        .find(|(_, release, kind)| *kind == "deb" && !release.contains('-') && !release.contains('/'))
        .map(|(uri, _, _)| uri.to_string())
        .ok_or_else(|| "the machine's apt configuration names no Debian base suite to take a mirror from; pass --qemu".into())
}

/// Downloads QEMU and its whole dependency closure from Debian unstable with
/// a private apt state, unpacks them into `cache/qemu/root`, and writes a
/// wrapper that runs it through the prefix's own loader. Nothing is
/// installed system-wide.
fn provision_qemu(sh: &Shell, cache: &Path) -> Result<(), String> {
    if cmd!(sh, "which apt-get dpkg-deb").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        return Err(format!("no QEMU >= 11.1 with {} found, and this is not a Debian machine to provision one: pass --qemu PATH", shmem_host::vm::qemu::DEVICE));
    }
    println!("xtask: provisioning QEMU from Debian unstable into {}", cache.join("qemu").display());
    let mirror = machine_mirror(sh)?;
    let tmp = tempfile::Builder::new().prefix("qemu-apt-").tempdir_in(cache).map_err(|e| e.to_string())?;
    let t = tmp.path();
    for d in ["state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"] {
        fs::create_dir_all(t.join(d)).map_err(|e| e.to_string())?;
    }
    fs::write(t.join("state/status"), "").map_err(|e| e.to_string())?;
    fs::write(t.join("etc/sources.list"), format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} unstable main\n"))
        .map_err(|e| e.to_string())?;
    let d = t.display();
    let opts: Vec<String> = [
        format!("Dir::State={d}/state"),
        format!("Dir::State::status={d}/state/status"),
        format!("Dir::Cache={d}/cache"),
        format!("Dir::Etc::SourceList={d}/etc/sources.list"),
        format!("Dir::Etc::SourceParts={d}/etc/sources.list.d"),
        format!("Dir::Etc::Preferences={d}/etc/preferences"),
        format!("Dir::Etc::PreferencesParts={d}/etc/preferences.d"),
        "APT::Architectures::=amd64".into(),
        "Debug::NoLocking=1".into(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect();
    let o = &opts;
    cmd!(sh, "apt-get -q {o...} update").quiet().ignore_stdout().run().map_err(err("apt-get update (unstable, private state)"))?;
    cmd!(sh, "apt-get -q -y {o...} --download-only --no-install-recommends install {QEMU_PACKAGE}")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(err("downloading qemu-system-x86 and its dependencies"))?;
    let prefix = cache.join("qemu");
    let root = prefix.join("root");
    let _ = fs::remove_dir_all(&prefix);
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let debs = fs::read_dir(t.join("cache/archives")).map_err(|e| e.to_string())?;
    for deb in debs.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "deb")) {
        cmd!(sh, "dpkg-deb -x {deb} {root}").quiet().run().map_err(err("unpacking a package"))?;
    }
    let wrapper = prefix.join("qemu-system-x86_64");
    let script = r#"#!/bin/sh
# Runs the privately provisioned QEMU through its own loader and libraries.
R="$(cd "$(dirname "$0")" && pwd)/root"
exec "$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$R/usr/lib/x86_64-linux-gnu" \
  "$R/usr/bin/qemu-system-x86_64" -L "$R/usr/share/qemu" -L "$R/usr/share/seabios" "$@"
"#;
    fs::write(&wrapper, script).map_err(|e| e.to_string())?;
    cmd!(sh, "chmod 0755 {wrapper}").run().map_err(err("chmod"))?;
    Ok(())
}
