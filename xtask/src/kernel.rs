//! The guest kernel artefact: a bzImage from `tinyconfig` + `images/kernel.config`,
//! built from Debian's linux-source or a given tree and cached by source version
//! and fragment. Must not boot anything.

use std::fs;
use std::path::{Path, PathBuf};

use shmem_host::files::fnv1a64;
use xshell::{Shell, cmd};

use crate::apt::{apt_install, package_version};
use crate::progress;
use crate::shell::err;

pub const KERNEL_PACKAGE: &str = "linux-source-6.12";
pub const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
const KERNEL_BUILD_DEPS: [&str; 6] = ["linux-source-6.12", "flex", "bison", "libelf-dev", "bc", "lz4"];

/// Builds (or reuses) a bzImage from `tinyconfig` + `images/kernel.config`.
pub fn build_kernel(sh: &Shell, root: &Path, src: Option<&Path>, cache: &Path) -> Result<PathBuf, String> {
    let fragment_path = root.join("images/kernel.config");
    let fragment = fs::read_to_string(&fragment_path).map_err(|e| format!("read {}: {e}", fragment_path.display()))?;
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
    cmd!(sh, "scripts/kconfig/merge_config.sh -m -O {build} {config} {fragment_path}")
        .quiet()
        .ignore_stdout()
        .run()
        .map_err(err("merging images/kernel.config"))?;
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
    // Without -s: the make lines are the phase's progress.
    progress::run("kernel: make bzImage", cmd!(sh, "make {o} {jobs} bzImage"))?;
    fs::create_dir_all(out.parent().unwrap_or(cache)).map_err(|e| e.to_string())?;
    fs::copy(build.join("arch/x86/boot/bzImage"), &out).map_err(|e| format!("copy bzImage: {e}"))?;
    Ok(out)
}
