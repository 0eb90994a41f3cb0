//! The third-party backend under test, vhost-device-media: built once at a
//! pinned version (`cargo install --locked`) into the cache outside the clone,
//! or taken from `--media-backend PATH`; and the page-rounded build of the
//! same sources (`PAGE_ROUNDING`). Building only: running it and judging
//! it is `shmem_host::media`.

use std::fs;
use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

use shmem_host::bounded::version_line;
use shmem_host::vm::scenario::MediaBuild;

use crate::apt::apt_install;
use crate::kernel::{KERNEL_PACKAGE, KERNEL_TARBALL};
use crate::progress;
use crate::shell::err;

pub const MEDIA_CRATE: &str = "vhost-device-media";
pub const MEDIA_VERSION: &str = "0.1.1";
/// The virtio-media crate the pinned backend locks.
const VIRTIO_MEDIA_VERSION: &str = "0.0.8";
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

/// The change the page-rounded build makes to virtio-media's `src/memfd.rs`
/// (what is there, what replaces it): QEMU 11.1.3 maps whole pages and
/// refuses a file shorter than that.
const PAGE_ROUNDING: (&str, &str) =
    ("file.set_len(size.into())", "file.set_len(u64::from(size).next_multiple_of(4096))");

/// The suffix of a build's cache entry (`media-0.1.1-page-rounded/`).
fn suffix(which: MediaBuild) -> &'static str {
    match which {
        MediaBuild::Published => "",
        MediaBuild::PageRounded => "-page-rounded",
        // Not built here (`suite_setup::fake_media`); named apart all the same.
        MediaBuild::FakeWrongFrames | MediaBuild::FakeHideRefusal => "-not-vhost-device-media",
    }
}

/// `--media-backend PATH` (the published build only), else the cached
/// build, else builds it (a few minutes once).
pub fn media_backend(
    sh: &Shell,
    explicit: Option<&Path>,
    cache: &Path,
    which: MediaBuild,
) -> Result<MediaBackend, String> {
    let path = match explicit.filter(|_| which == MediaBuild::Published) {
        Some(p) if !p.is_file() => return Err(format!("--media-backend {}: no such file", p.display())),
        Some(p) => p.to_path_buf(),
        None => {
            let bin = cache.join(format!("media-{MEDIA_VERSION}{}/bin/{MEDIA_CRATE}", suffix(which)));
            if !bin.is_file() {
                if which == MediaBuild::PageRounded {
                    // The published build fetches the sources the page-rounded one is built from.
                    media_backend(sh, None, cache, MediaBuild::Published)?;
                }
                build(sh, cache, &bin, which)?;
            }
            bin
        }
    };
    let version =
        version_line(&path.display().to_string()).map_err(|e| format!("{e}: not a backend this appliance knows"))?;
    // The known defects of the published build must not apply to the changed one.
    let version = if which == MediaBuild::PageRounded { format!("{version} + page-rounded memfds") } else { version };
    Ok(MediaBackend { path, version })
}

fn build(sh: &Shell, cache: &Path, bin: &Path, which: MediaBuild) -> Result<(), String> {
    if crate::apt::available() {
        apt_install(sh, &MEDIA_BUILD_DEPS)?;
    } else {
        let path = std::env::var("PATH").unwrap_or_default();
        let missing = crate::tools::missing(&crate::tools::MEDIA, &path);
        if !missing.is_empty() {
            let found = crate::tools::Manager::found(&path);
            return Err(crate::tools::missing_text(&format!("building {MEDIA_CRATE}"), &missing, found));
        }
    }
    progress::say(&format!(
        "xtask: building {MEDIA_CRATE} {MEDIA_VERSION}{} (the backend under test); this takes a few minutes once",
        suffix(which)
    ));
    let tmp = tempfile::Builder::new().prefix("media-build-").tempdir_in(cache).map_err(|e| e.to_string())?;
    // Both builds in one place with the same environment: the second reuses
    // the first's compiled dependencies and rebuilds only what it patches.
    let shared = cache.join(format!("media-{MEDIA_VERSION}-build"));
    let headers = v4l2_headers(sh, &shared)?;
    let target = shared.join("target");
    let root = tmp.path().join("root");
    let _h = sh.push_env("V4L2R_VIDEODEV2_H_PATH", headers.join("linux"));
    let _c = sh.push_env("BINDGEN_EXTRA_CLANG_ARGS", format!("-I{}", headers.display()));
    let _t = sh.push_env("CARGO_TARGET_DIR", &target);
    match which {
        MediaBuild::Published => progress::run(
            "vhost-device-media: cargo install",
            cmd!(
                sh,
                "cargo install --locked {MEDIA_CRATE} --version {MEDIA_VERSION} --no-default-features --features simple-capture --root {root}"
            ),
        )?,
        MediaBuild::PageRounded => build_page_rounded(sh, (tmp.path(), &target), &root)?,
        fake => {
            return Err(format!("{} is the appliance's fake-media-backend, not a build of {MEDIA_CRATE}", fake.name()));
        }
    }
    let dest = bin.parent().and_then(Path::parent).ok_or("cache path has no parent")?;
    // Renamed into place whole: a build cut short leaves no half entry in the cache.
    fs::rename(&root, dest).map_err(|e| format!("moving the build into {}: {e}", dest.display()))?;
    // Once both builds are in the cache, what they shared is not needed again.
    let built = |w: MediaBuild| cache.join(format!("media-{MEDIA_VERSION}{}/bin/{MEDIA_CRATE}", suffix(w))).is_file();
    if built(MediaBuild::Published) && built(MediaBuild::PageRounded) {
        let _ = fs::remove_dir_all(&shared);
    }
    Ok(())
}

/// The V4L2 headers v4l2r binds, as userspace sees them, under
/// `dir/include/linux/` (written once: a header rewritten would rebuild
/// v4l2r); returns `dir/include`.
fn v4l2_headers(sh: &Shell, dir: &Path) -> Result<PathBuf, String> {
    let headers = dir.join("include");
    let linux = headers.join("linux");
    let complete = headers.join("complete");
    if complete.is_file() {
        return Ok(headers);
    }
    fs::create_dir_all(&linux).map_err(|e| e.to_string())?;
    let members: Vec<String> =
        V4L2_HEADERS.iter().map(|h| format!("linux-source-6.12/include/uapi/linux/{h}")).collect();
    cmd!(sh, "tar -xf {KERNEL_TARBALL} --strip-components=4 -C {linux} {members...}")
        .quiet()
        .run()
        .map_err(err("unpacking the V4L2 headers"))?;
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
    fs::write(&complete, "").map_err(|e| format!("write {}: {e}", complete.display()))?;
    Ok(headers)
}

/// Where cargo unpacked a registry crate (`$CARGO_HOME/registry/src/*/NAME-VERSION`), if it did.
fn registry_source(name: &str, version: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    fs::read_dir(home.join("registry/src"))
        .ok()?
        .flatten()
        .map(|d| d.path().join(format!("{name}-{version}")))
        .find(|p| p.is_dir())
}

/// Builds the published sources (copied into `tmp`) with virtio-media's
/// memfds page-rounded, through `[patch.crates-io]`; installs into `root/bin`.
fn build_page_rounded(sh: &Shell, (tmp, target): (&Path, &Path), root: &Path) -> Result<(), String> {
    let missing = || {
        format!(
            "the sources of {MEDIA_CRATE} {MEDIA_VERSION} and virtio-media {VIRTIO_MEDIA_VERSION} are not in cargo's registry (fetched by the published build)"
        )
    };
    let backend = registry_source(MEDIA_CRATE, MEDIA_VERSION).ok_or_else(missing)?;
    let lib = registry_source("virtio-media", VIRTIO_MEDIA_VERSION).ok_or_else(missing)?;
    let (src, patched) = (tmp.join("backend"), tmp.join("virtio-media"));
    cmd!(sh, "cp -r {backend} {src}").quiet().run().map_err(err("copying the backend's sources"))?;
    cmd!(sh, "cp -r {lib} {patched}").quiet().run().map_err(err("copying virtio-media's sources"))?;
    let memfd = patched.join("src/memfd.rs");
    let text = fs::read_to_string(&memfd).map_err(|e| format!("read {}: {e}", memfd.display()))?;
    if text.matches(PAGE_ROUNDING.0).count() != 1 {
        return Err(format!(
            "{}: `{}` is not there exactly once; the page rounding does not apply to this version",
            memfd.display(),
            PAGE_ROUNDING.0
        ));
    }
    fs::write(&memfd, text.replace(PAGE_ROUNDING.0, PAGE_ROUNDING.1))
        .map_err(|e| format!("write {}: {e}", memfd.display()))?;
    fs::create_dir_all(src.join(".cargo")).map_err(|e| e.to_string())?;
    let config = format!("[patch.crates-io]\nvirtio-media = {{ path = {:?} }}\n", patched.display().to_string());
    fs::write(src.join(".cargo/config.toml"), config).map_err(|e| format!("write the patch config: {e}"))?;
    let _d = sh.push_dir(&src);
    progress::run(
        "vhost-device-media (page-rounded): cargo build",
        cmd!(sh, "cargo build --release --offline --no-default-features --features simple-capture"),
    )?;
    fs::create_dir_all(root.join("bin")).map_err(|e| e.to_string())?;
    fs::copy(target.join("release").join(MEDIA_CRATE), root.join("bin").join(MEDIA_CRATE))
        .map_err(|e| format!("copying the page-rounded build: {e}"))?;
    Ok(())
}
