//! What a VM run needs on disk: the static guest agent, the kernel (built
//! from Debian's linux-source or a given tree, cached by source version and
//! fragment), the initramfs, and a QEMU that passes the probe (found, or
//! provisioned from Debian unstable into a private prefix, cached).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use shmem_host::files::fnv1a64;
use shmem_host::vm::qemu::{QemuInfo, probe};
use xshell::{Shell, cmd};

pub const KERNEL_PACKAGE: &str = "linux-source-6.12";
pub const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
const KERNEL_BUILD_DEPS: [&str; 6] = ["linux-source-6.12", "flex", "bison", "libelf-dev", "bc", "lz4"];
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

pub fn err(what: &str) -> impl FnOnce(xshell::Error) -> String + '_ {
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

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

fn package_installed(sh: &Shell, name: &str) -> bool {
    let fmt = "-f=${Status}";
    cmd!(sh, "dpkg-query -W {fmt} {name}").quiet().ignore_stderr().read().is_ok_and(|s| s.contains("install ok installed"))
}

/// Installs what is missing of `packages`; calls apt only when something is.
/// Without root it installs nothing and says the exact command to run.
pub fn apt_install(sh: &Shell, packages: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !package_installed(sh, p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        return Err(format!("missing Debian packages: {list}; run as root: apt-get install -y {list}"));
    }
    println!("xtask: installing {list}");
    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    let m = &missing;
    if cmd!(sh, "apt-get install -y -q {m...}").quiet().run().is_err() {
        cmd!(sh, "apt-get update -q").quiet().run().map_err(err("apt-get update"))?;
        cmd!(sh, "apt-get install -y -q {m...}").run().map_err(|e| format!("installing {list} failed ({e}); as root, run: apt-get install -y {list}"))?;
    }
    Ok(())
}

/// The version of a Debian package: installed, else the one apt would
/// install. A fresh machine's apt lists may be empty or old: when apt knows
/// no candidate, they are updated once (as root) and apt is asked again.
fn package_version(sh: &Shell, name: &str) -> Result<String, String> {
    let fmt = "-f=${Version}";
    if package_installed(sh, name) {
        return cmd!(sh, "dpkg-query -W {fmt} {name}").read().map_err(err("dpkg-query"));
    }
    let candidate = |sh: &Shell| -> Result<(Option<String>, String), String> {
        let policy = cmd!(sh, "apt-cache policy {name}").quiet().ignore_stderr().read().map_err(err("apt-cache policy"))?;
        let found = policy.lines().find_map(|l| l.trim().strip_prefix("Candidate:").map(str::trim)).filter(|v| !v.is_empty() && *v != "(none)").map(str::to_string);
        Ok((found, policy))
    };
    let (found, mut said) = candidate(sh)?;
    if let Some(v) = found {
        return Ok(v);
    }
    if is_root() {
        println!("xtask: apt knows no version of {name}; updating the package lists");
        let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
        cmd!(sh, "apt-get update -q").quiet().ignore_stdout().run().map_err(err("apt-get update"))?;
        let (found, policy) = candidate(sh)?;
        if let Some(v) = found {
            return Ok(v);
        }
        said = policy;
    }
    let said = if said.trim().is_empty() { "nothing".to_string() } else { format!("{:?}", said.trim()) };
    let update = if is_root() { "after apt-get update, " } else { "(not root, so the lists were not updated) " };
    Err(format!("{name} is not installed and apt knows no version of it {update}`apt-cache policy {name}` said {said}: pass --kernel or --kernel-src"))
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
        // The cache is looked at before anything is installed: a cached kernel needs no root.
        None => format!("{KERNEL_PACKAGE}:{}", package_version(sh, KERNEL_PACKAGE)?),
    };
    let key = fnv1a64(format!("{source_id}\n{fragment}").as_bytes());
    let out = cache.join(format!("kernel-{key:016x}/bzImage"));
    if out.exists() {
        return Ok(out);
    }
    if src.is_none() {
        apt_install(sh, &KERNEL_BUILD_DEPS)?;
        let installed = format!("{KERNEL_PACKAGE}:{}", package_version(sh, KERNEL_PACKAGE)?);
        if installed != source_id {
            return Err(format!("apt installed {installed}, not the {source_id} it announced: run again"));
        }
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
    for line in fragment.lines().filter(|l| l.starts_with("CONFIG_")) {
        let survived = match line.strip_suffix("=n") {
            Some(name) => !merged.lines().any(|m| m.starts_with(&format!("{name}="))),
            None => merged.lines().any(|m| m == line),
        };
        if !survived {
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
/// Then `qemu-system-x86_64` on PATH, then the cached or a newly provisioned
/// one (see [`provisioned_qemu`]). With a note when it is not the pinned build.
/// With `pinned_first` (a `--compare` baseline), a QEMU on PATH is passed
/// over for the provisioned pinned build, whose defects are measured.
pub fn find_qemu(sh: &Shell, explicit: Option<&Path>, cache: &Path, pin: &str, pinned_first: bool) -> Result<(QemuInfo, Option<String>), String> {
    if let Some(p) = explicit {
        return probe(p).map(|i| (i, None)).map_err(|e| format!("--qemu refused: {e}"));
    }
    if let Some(p) = std::env::var_os("QEMU").filter(|v| !v.is_empty()) {
        return probe(Path::new(&p)).map(|i| (i, None)).map_err(|e| format!("$QEMU refused: {e}"));
    }
    if pinned_first {
        return provisioned_qemu(sh, cache, pin);
    }
    if let Ok(p) = cmd!(sh, "which qemu-system-x86_64").quiet().ignore_stderr().read() {
        match probe(Path::new(p.trim())) {
            Ok(info) => return Ok((info, None)),
            Err(e) => println!("xtask: not using the QEMU on PATH: {e}"),
        }
    }
    provisioned_qemu(sh, cache, pin)
}

/// The Debian version in a build string: "1:11.1.3+ds-1" of "11.1.3 (Debian 1:11.1.3+ds-1)".
fn debian_version(build: &str) -> Option<&str> {
    build.split_once("(Debian ")?.1.strip_suffix(')')
}

/// The provisioned QEMU: the pinned Debian build while the mirror has it,
/// else the mirror's build (and a note saying so). A cached prefix of the
/// wanted build is used as it is; an intact prefix whose probe fails is
/// reported, never downloaded again.
fn provisioned_qemu(sh: &Shell, cache: &Path, pin: &str) -> Result<(QemuInfo, Option<String>), String> {
    let prefix = cache.join("qemu");
    let wrapper = prefix.join("qemu-system-x86_64");
    let cached = if prefix_intact(&prefix) {
        // Rewritten every time, so a cached prefix gets the current wrapper.
        write_wrapper(&prefix)?;
        Some(probe(&wrapper).map_err(|e| format!("the provisioned QEMU in {} failed the probe: {e}", prefix.display()))?)
    } else {
        None
    };
    if let Some(info) = cached.as_ref().filter(|i| debian_version(&i.build) == Some(pin)) {
        return Ok((info.clone(), None));
    }
    let apt = match PrivateApt::update(sh, cache) {
        Ok(apt) => apt,
        Err(e) => {
            let info = cached.ok_or_else(|| e.clone())?;
            return Ok((info, Some(format!("not the pinned build {pin}: the mirror could not be asked ({e})"))));
        }
    };
    let versions = apt.versions(QEMU_PACKAGE)?;
    let want = if versions.iter().any(|v| v == pin) { pin.to_string() } else { versions.first().cloned().ok_or(format!("the mirror has no {QEMU_PACKAGE}"))? };
    let note = (want != pin).then(|| format!("not the pinned build: the mirror has no {QEMU_PACKAGE} {pin} (what tests/known-defects.toml was measured on), so {want} was provisioned"));
    if let Some(info) = cached.filter(|i| debian_version(&i.build) == Some(want.as_str())) {
        return Ok((info, note));
    }
    apt.install_into(sh, QEMU_PACKAGE, &want, &prefix)?;
    let info = probe(&wrapper).map_err(|e| format!("the provisioned QEMU failed the probe: {e}"))?;
    Ok((info, note))
}

/// The pinned Debian version of QEMU, from `tests/qemu.toml`.
pub fn pinned_qemu(root: &Path) -> Result<String, String> {
    let path = root.join("tests/qemu.toml");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("debian_version")?.trim_start().strip_prefix('=').map(|v| v.trim().trim_matches('"').to_string()))
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{}: no `debian_version = \"...\"`", path.display()))
}

/// A prefix is intact when it was completely unpacked (or, from before the
/// marker existed, its QEMU answers `--version`).
fn prefix_intact(prefix: &Path) -> bool {
    if prefix.join(COMPLETE).exists() {
        return true;
    }
    let binary = prefix.join("root/usr/bin/qemu-system-x86_64");
    let answers = binary.is_file()
        && write_wrapper(prefix).is_ok()
        && std::process::Command::new(prefix.join("qemu-system-x86_64")).arg("--version").output().is_ok_and(|o| o.status.success());
    answers && fs::write(prefix.join(COMPLETE), "").is_ok()
}

/// Written into the prefix once every package is unpacked: a prefix without
/// it is damaged (an interrupted download or unpack) and is provisioned again.
const COMPLETE: &str = ".complete";

/// Where Debian's QEMU builds look for their add-on modules.
const MODULE_DIR: &str = "/usr/lib/x86_64-linux-gnu/qemu";

/// The wrapper runs the provisioned QEMU through the prefix's own loader and
/// libraries. When a system-wide QEMU keeps its modules where this build
/// looks for its own (Debian 12's 7.2, say), this build would load them and
/// abort ("Only modules from the same build can be loaded"), and
/// QEMU_MODULE_DIR does not stop it falling back there: so the wrapper
/// re-executes itself in a private mount namespace (a user namespace too
/// when not root) where the prefix's module directory is bind-mounted over
/// the system's. `exec` all the way: QEMU keeps the wrapper's pid.
fn write_wrapper(prefix: &Path) -> Result<(), String> {
    let script = format!(
        r#"#!/bin/sh
# Runs the privately provisioned QEMU through its own loader and libraries
# (written by cargo xtask; see xtask/src/artefacts.rs).
R="$(cd "$(dirname "$0")" && pwd)/root"
MODS={MODULE_DIR}
if [ -d "$MODS" ] && [ -z "$SHMEM_QEMU_PRIVATE_MODULES" ]; then
  export SHMEM_QEMU_PRIVATE_MODULES=1
  if [ "$(id -u)" = 0 ]; then
    exec unshare --mount --propagation private "$0" "$@"
  else
    exec unshare --user --map-root-user --mount --propagation private "$0" "$@"
  fi
fi
if [ -n "$SHMEM_QEMU_PRIVATE_MODULES" ] && [ -d "$MODS" ]; then
  mount --bind "$R$MODS" "$MODS" || {{ echo "qemu wrapper: cannot hide the system QEMU's modules in $MODS" >&2; exit 1; }}
fi
exec "$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$R/usr/lib/x86_64-linux-gnu" \
  "$R/usr/bin/qemu-system-x86_64" -L "$R/usr/share/qemu" -L "$R/usr/share/seabios" "$@"
"#
    );
    let wrapper = prefix.join("qemu-system-x86_64");
    fs::write(&wrapper, script).map_err(|e| format!("write {}: {e}", wrapper.display()))?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod {}: {e}", wrapper.display()))
}

/// The base mirror this machine's apt already uses (never a hardcoded host).
fn machine_mirror(sh: &Shell) -> Result<String, String> {
    let fmt = "$(REPO_URI)\t$(RELEASE)\t$(TARGET_OF)";
    // --no-release-info: from the sources alone, so it works before the first `apt-get update`.
    let targets = cmd!(sh, "apt-get indextargets --no-release-info --format {fmt}").read().map_err(err("apt-get indextargets"))?;
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

/// apt with a private state under the cache, reading Debian unstable from
/// the mirror this machine's apt already uses. Nothing is installed
/// system-wide.
struct PrivateApt {
    dir: tempfile::TempDir,
    opts: Vec<String>,
}

impl PrivateApt {
    /// A private state with unstable's package lists, freshly updated.
    fn update(sh: &Shell, cache: &Path) -> Result<Self, String> {
        if cmd!(sh, "which apt-get dpkg-deb").quiet().ignore_stdout().ignore_stderr().run().is_err() {
            return Err(format!("no QEMU >= 11.1 with {} found, and this is not a Debian machine to provision one: pass --qemu PATH", shmem_host::vm::qemu::DEVICE));
        }
        let mirror = machine_mirror(sh)?;
        let dir = tempfile::Builder::new().prefix("qemu-apt-").tempdir_in(cache).map_err(|e| e.to_string())?;
        let t = dir.path();
        for d in ["state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"] {
            fs::create_dir_all(t.join(d)).map_err(|e| e.to_string())?;
        }
        fs::write(t.join("state/status"), "").map_err(|e| e.to_string())?;
        fs::write(t.join("etc/sources.list"), format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} unstable main\n")).map_err(|e| e.to_string())?;
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
        // As root, apt would download as `_apt`, which cannot enter our private dirs.
        .chain(is_root().then(|| "APT::Sandbox::User=root".to_string()))
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        let o = &opts;
        cmd!(sh, "apt-get -q {o...} update").quiet().ignore_stdout().run().map_err(err("apt-get update (unstable, private state)"))?;
        Ok(PrivateApt { dir, opts })
    }

    /// The versions of `package` the mirror has, the candidate first.
    fn versions(&self, package: &str) -> Result<Vec<String>, String> {
        let sh = Shell::new().map_err(|e| e.to_string())?;
        let o = &self.opts;
        let text = cmd!(sh, "apt-cache {o...} madison {package}").quiet().read().map_err(err("apt-cache madison"))?;
        Ok(text.lines().filter_map(|l| Some(l.split('|').nth(1)?.trim().to_string())).filter(|v| !v.is_empty()).collect())
    }

    /// Downloads `package` at `version` and its whole dependency closure,
    /// unpacks them into `prefix/root`, and writes the wrapper.
    fn install_into(&self, sh: &Shell, package: &str, version: &str, prefix: &Path) -> Result<(), String> {
        println!("xtask: provisioning {package} {version} from Debian unstable into {}", prefix.display());
        let o = &self.opts;
        let spec = format!("{package}={version}");
        cmd!(sh, "apt-get -q -y {o...} --download-only --no-install-recommends install {spec}")
            .quiet()
            .ignore_stdout()
            .run()
            .map_err(err("downloading qemu-system-x86 and its dependencies"))?;
        let root = prefix.join("root");
        let _ = fs::remove_dir_all(prefix);
        fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let debs = fs::read_dir(self.dir.path().join("cache/archives")).map_err(|e| e.to_string())?;
        for deb in debs.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "deb")) {
            cmd!(sh, "dpkg-deb -x {deb} {root}").quiet().run().map_err(err("unpacking a package"))?;
        }
        fs::create_dir_all(root.join(MODULE_DIR.trim_start_matches('/'))).map_err(|e| e.to_string())?;
        write_wrapper(prefix)?;
        fs::write(prefix.join(COMPLETE), "").map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::debian_version;

    #[test]
    fn the_debian_version_is_read_from_the_build() {
        assert_eq!(debian_version("11.1.3 (Debian 1:11.1.3+ds-1)"), Some("1:11.1.3+ds-1"));
        assert_eq!(debian_version("11.1.3 (v11.1.3-dirty)"), None);
    }
}
