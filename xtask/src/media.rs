//! The third-party backend under test, vhost-device-media: built once at a
//! pinned version (`cargo install --locked`) into the cache outside the clone,
//! or taken from `--media-backend PATH`. Building only: running it and judging
//! it is `shmem_host::media`.

use std::fs;
use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

use crate::artefacts::{KERNEL_PACKAGE, KERNEL_TARBALL, apt_install, err};

pub const MEDIA_CRATE: &str = "vhost-device-media";
pub const MEDIA_VERSION: &str = "0.1.1";
/// bindgen (through v4l2r) needs libclang; the V4L2 headers come from the
/// kernel source the guest kernel is built from.
const MEDIA_BUILD_DEPS: [&str; 2] = ["libclang1-14", KERNEL_PACKAGE];
/// Headers v4l2r binds, from the 6.12 source: Debian 12's own 6.1 headers lack controls it uses.
const V4L2_HEADERS: [&str; 3] = ["videodev2.h", "v4l2-controls.h", "v4l2-common.h"];

/// The backend binary and the version it reports (`NAME VERSION`, the key of
/// its known defects).
pub struct MediaBackend {
    pub path: PathBuf,
    pub version: String,
}

/// `--media-backend PATH`, else the cached build of the pinned version, else
/// builds it (about 2 minutes once).
pub fn media_backend(sh: &Shell, explicit: Option<&Path>, cache: &Path) -> Result<MediaBackend, String> {
    let path = match explicit {
        Some(p) if !p.is_file() => return Err(format!("--media-backend {}: no such file", p.display())),
        Some(p) => p.to_path_buf(),
        None => {
            let bin = cache.join(format!("media-{MEDIA_VERSION}/bin/{MEDIA_CRATE}"));
            if !bin.is_file() {
                build(sh, cache, &bin)?;
            }
            bin
        }
    };
    let version = version_line(sh, &path.display().to_string())
        .ok_or_else(|| format!("{} --version printed nothing: not a backend this appliance knows", path.display()))?;
    Ok(MediaBackend { path, version })
}

/// The first line `prog --version` prints (the key of a backend's known defects), if any.
pub fn version_line(sh: &Shell, prog: &str) -> Option<String> {
    let said = cmd!(sh, "{prog} --version").quiet().ignore_stderr().read().ok()?;
    Some(said.lines().next()?.trim().to_string()).filter(|v| !v.is_empty())
}

fn build(sh: &Shell, cache: &Path, bin: &Path) -> Result<(), String> {
    apt_install(sh, &MEDIA_BUILD_DEPS)?;
    println!("xtask: building {MEDIA_CRATE} {MEDIA_VERSION} (the backend under test); this takes a few minutes once");
    let tmp = tempfile::Builder::new().prefix("media-build-").tempdir_in(cache).map_err(|e| e.to_string())?;
    let headers = tmp.path().join("include");
    let linux = headers.join("linux");
    fs::create_dir_all(&linux).map_err(|e| e.to_string())?;
    let members: Vec<String> = V4L2_HEADERS.iter().map(|h| format!("linux-source-6.12/include/uapi/linux/{h}")).collect();
    cmd!(sh, "tar -xf {KERNEL_TARBALL} --strip-components=4 -C {linux} {members...}").run().map_err(err("unpacking the V4L2 headers"))?;
    for h in V4L2_HEADERS {
        let p = linux.join(h);
        let text = fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        // As userspace sees them: no kernel-only include, no __user annotation.
        let cleaned: String = text
            .lines()
            .filter(|l| l.trim() != "#include <linux/compiler.h>")
            .map(|l| l.replace("__user", "") + "\n")
            .collect();
        fs::write(&p, cleaned).map_err(|e| format!("write {}: {e}", p.display()))?;
    }
    let root = tmp.path().join("root");
    let _h = sh.push_env("V4L2R_VIDEODEV2_H_PATH", &linux);
    let _c = sh.push_env("BINDGEN_EXTRA_CLANG_ARGS", format!("-I{}", headers.display()));
    let _t = sh.push_env("CARGO_TARGET_DIR", tmp.path().join("target"));
    cmd!(sh, "cargo install --quiet --locked {MEDIA_CRATE} --version {MEDIA_VERSION} --no-default-features --features simple-capture --root {root}")
        .run()
        .map_err(err("building vhost-device-media (cargo install)"))?;
    let dest = bin.parent().and_then(Path::parent).ok_or("cache path has no parent")?;
    // Renamed into place whole: a build cut short leaves no half entry in the cache.
    fs::rename(&root, dest).map_err(|e| format!("moving the build into {}: {e}", dest.display()))
}
