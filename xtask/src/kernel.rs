//! The guest kernel artefact: a bzImage from `tinyconfig` + `images/kernel.config`,
//! built from Debian's linux-source or a given tree and cached by source version
//! and fragment. Must not boot anything.

use std::fs;
use std::path::{Path, PathBuf};

use shmem_host::files::fnv1a64;
use xshell::{Shell, cmd};

use crate::apt::{self, apt_install, package_version};
use crate::shell::err;
use crate::{progress, tools};

pub const KERNEL_PACKAGE: &str = "linux-source-6.12";
pub const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
const KERNEL_BUILD_DEPS: [&str; 6] = ["linux-source-6.12", "flex", "bison", "libelf-dev", "bc", "lz4"];

/// The host's own kernel (`--kernel host`): `/boot/vmlinuz-RELEASE` of the
/// running kernel, else the newest `/boot/vmlinuz-*`. A kernel that binds
/// the test device with a built-in virtio-pci driver is fine: the agent
/// takes the device over.
pub fn host_kernel() -> Result<PathBuf, String> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let running = Path::new("/boot").join(format!("vmlinuz-{}", release.trim()));
    let mut images: Vec<PathBuf> = fs::read_dir("/boot")
        .map_err(|e| format!("/boot cannot be read: {e}"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .collect();
    images.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
    let image = if running.is_file() { running } else { images.pop().ok_or("/boot has no vmlinuz-*")? };
    // Several distributions make /boot/vmlinuz-* readable by root only.
    fs::File::open(&image).map_err(|e| {
        format!("{} cannot be read ({e}): run as root, or copy it and pass --kernel FILE", image.display())
    })?;
    Ok(image)
}

/// The tools the build needs: checked first; installed with apt on
/// Debian, else named with the command that installs them.
fn build_tools(sh: &Shell) -> Result<(), String> {
    let path = std::env::var("PATH").unwrap_or_default();
    let missing = tools::missing(&tools::KERNEL, &path);
    if missing.is_empty() {
        return Ok(());
    }
    if apt::available() {
        let packages: Vec<&str> = missing.iter().map(|n| n.packages[0]).collect();
        return apt_install(sh, &packages);
    }
    Err(tools::missing_text("building the guest kernel", &missing, tools::Manager::found(&path)))
}

/// `images/kernel.config` with the options of `extra` (`--kernel-config`)
/// put in place of its own: one fragment, each option once.
fn fragment(root: &Path, extra: Option<&Path>) -> Result<String, String> {
    let read = |p: &Path| fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()));
    let base = read(&root.join("images/kernel.config"))?;
    let Some(extra) = extra else { return Ok(base) };
    let more = read(extra)?;
    let name = |l: &str| l.split('=').next().unwrap_or_default().to_string();
    let given: Vec<String> = more.lines().filter(|l| l.starts_with("CONFIG_")).map(name).collect();
    let kept = base.lines().filter(|l| !(l.starts_with("CONFIG_") && given.contains(&name(l))));
    Ok(kept.chain(more.lines()).map(|l| format!("{l}\n")).collect())
}

/// Builds (or reuses) a bzImage from `tinyconfig` + `images/kernel.config`
/// (+ `extra`, `--kernel-config`).
pub fn build_kernel(
    sh: &Shell,
    root: &Path,
    (src, extra): (Option<&Path>, Option<&Path>),
    cache: &Path,
) -> Result<PathBuf, String> {
    let fragment = fragment(root, extra)?;
    let source_id = match src {
        Some(dir) => {
            let _d = sh.push_dir(dir);
            let v =
                cmd!(sh, "make -s kernelversion").read().map_err(err("reading the kernel version of --kernel-src"))?;
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
    build_tools(sh)?;
    if src.is_none() {
        apt_install(sh, &KERNEL_BUILD_DEPS)?;
        let installed = format!("{KERNEL_PACKAGE}:{}", package_version(sh, KERNEL_PACKAGE)?);
        if installed != source_id {
            return Err(format!("apt installed {installed}, not the {source_id} it announced: run again"));
        }
    }
    progress::say(&format!("xtask: building the guest kernel ({source_id}); this takes a few minutes once"));
    let tmp = tempfile::Builder::new().prefix("kbuild-").tempdir_in(cache).map_err(|e| e.to_string())?;
    let (tree, build) = match src {
        Some(dir) => (dir.to_path_buf(), tmp.path().join("out")),
        None => {
            let t = tmp.path();
            progress::run("kernel: unpack the source", cmd!(sh, "tar -xf {KERNEL_TARBALL} -C {t}"))?;
            let tree = t.join("linux-source-6.12");
            (tree.clone(), tree)
        }
    };
    fs::create_dir_all(&build).map_err(|e| e.to_string())?;
    let _d = sh.push_dir(&tree);
    let o = format!("O={}", build.display());
    let jobs = format!("-j{}", std::thread::available_parallelism().map_or(2, |n| n.get()));
    progress::run("kernel: make tinyconfig", cmd!(sh, "make -s {o} tinyconfig"))?;
    let config = build.join(".config");
    let fragment_path = build.join("fragment.config");
    fs::write(&fragment_path, &fragment).map_err(|e| format!("write {}: {e}", fragment_path.display()))?;
    cmd!(sh, "scripts/kconfig/merge_config.sh -m -O {build} {config} {fragment_path}")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(err("merging images/kernel.config"))?;
    progress::run("kernel: make olddefconfig", cmd!(sh, "make -s {o} olddefconfig"))?;
    let merged = fs::read_to_string(&config).map_err(|e| e.to_string())?;
    for line in fragment.lines().filter(|l| l.starts_with("CONFIG_")) {
        let survived = match line.strip_suffix("=n") {
            Some(name) => !merged.lines().any(|m| m.starts_with(&format!("{name}="))),
            None => merged.lines().any(|m| m == line),
        };
        if !survived {
            return Err(format!(
                "kernel option {line} (images/kernel.config, --kernel-config) did not survive olddefconfig"
            ));
        }
    }
    // Without -s: the make lines are the phase's progress.
    progress::run("kernel: make bzImage", cmd!(sh, "make {o} {jobs} bzImage"))?;
    fs::create_dir_all(out.parent().unwrap_or(cache)).map_err(|e| e.to_string())?;
    fs::copy(build.join("arch/x86/boot/bzImage"), &out).map_err(|e| format!("copy bzImage: {e}"))?;
    Ok(out)
}
