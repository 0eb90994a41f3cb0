//! A machine without Debian's tools, as `vm-test` meets one: in a private
//! mount namespace `apt-get`, `apt-cache`, `dpkg`, `dpkg-query`,
//! `dpkg-deb`, `/etc/apt` and `/var/lib/dpkg` are hidden, the QEMU in use
//! is on PATH, and Debian's stock kernel (unpacked from its package once,
//! cached) stands in for `/boot`. `vm-test` with no kernel option must boot
//! the host's kernel and pass; with `bison` missing, `--kernel-src` must
//! fail naming it with its install commands. And a guest kernel like the
//! distributions' (virtio_pci built in, `images/kernel-virtio-pci.config`):
//! the agent takes the device over and the suite passes. Part of `cargo
//! xtask test`; checks only its own expectations.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use xshell::{Shell, cmd};

use crate::checks::{self, Checks};
use crate::exit;
use crate::opts::GuestOpts;
use crate::shell::{err, root};

const HIDDEN_PROGRAMS: [&str; 5] = ["apt-get", "apt-cache", "dpkg", "dpkg-query", "dpkg-deb"];
const HIDDEN_DIRS: [&str; 2] = ["/etc/apt", "/var/lib/dpkg"];

/// Debian's stock kernel image, downloaded and unpacked once into the cache
/// (`stock-kernel/boot/vmlinuz-*`); the directory that stands in for /boot.
fn stock_kernel(sh: &Shell, cache: &Path) -> Result<PathBuf, String> {
    let boot = cache.join("stock-kernel/boot");
    let has_image = |d: &Path| {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
    };
    if has_image(&boot) {
        return Ok(boot);
    }
    let depends =
        |sh: &Shell| cmd!(sh, "apt-cache depends --important linux-image-amd64").quiet().ignore_stderr().read();
    let mut text = depends(sh).unwrap_or_default();
    if !text.contains("Depends: linux-image-") && crate::apt::is_root() {
        crate::progress::run("apt-get update", cmd!(sh, "apt-get update -q"))?;
        text = depends(sh).unwrap_or_default();
    }
    let package = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .ok_or("apt knows no linux-image-amd64 (Debian's stock kernel) to stand in for /boot")?
        .to_string();
    let tmp = tempfile::Builder::new().prefix("stock-kernel-").tempdir_in(cache).map_err(|e| e.to_string())?;
    let _d = sh.push_dir(tmp.path());
    crate::progress::run(&format!("{package}: apt-get download"), cmd!(sh, "apt-get download {package}"))?;
    let deb = std::fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let unpacked = tmp.path().join("x");
    cmd!(sh, "dpkg-deb -x {deb} {unpacked}").quiet().run().map_err(err("unpacking Debian's stock kernel"))?;
    let staged = tmp.path().join("boot");
    std::fs::create_dir_all(&staged).map_err(|e| e.to_string())?;
    for e in std::fs::read_dir(unpacked.join("boot")).map_err(|e| e.to_string())?.flatten() {
        if e.file_name().to_string_lossy().starts_with("vmlinuz-") {
            std::fs::copy(e.path(), staged.join(e.file_name())).map_err(|e| e.to_string())?;
        }
    }
    std::fs::create_dir_all(boot.parent().unwrap_or(cache)).map_err(|e| e.to_string())?;
    std::fs::rename(&staged, &boot).map_err(|e| format!("moving the stock kernel into {}: {e}", boot.display()))?;
    Ok(boot)
}

/// A shell line that hides Debian's tools, puts `boot` over /boot, then runs `args` (words).
fn hidden(boot: &Path, empty: &Path, args: &[String]) -> String {
    let q = |s: &str| shmem_report::quoted(s);
    let mut line = String::from("set -e; ");
    for p in HIDDEN_PROGRAMS {
        line.push_str(&format!("for f in /usr/bin/{p} /bin/{p} /usr/sbin/{p} /sbin/{p}; do [ -e \"$f\" ] && mount --bind /dev/null \"$f\"; done; "));
    }
    for d in HIDDEN_DIRS {
        line.push_str(&format!("[ -d {d} ] && mount --bind {} {d}; ", q(&empty.display().to_string())));
    }
    line.push_str(&format!("mkdir -p /boot; mount --bind {} /boot; exec ", q(&boot.display().to_string())));
    line.push_str(&args.iter().map(|a| q(a)).collect::<Vec<_>>().join(" "));
    line
}

/// `line` in a private mount namespace (a user namespace too when not root); exit status and output.
fn in_namespace(line: &str, path: &str) -> Result<(u8, String), String> {
    let mut c = Command::new("unshare");
    if !crate::apt::is_root() {
        c.args(["--user", "--map-root-user"]);
    }
    c.args(["--mount", "--propagation", "private", "sh", "-c", line]);
    checks::run(c.env("PATH", path).env_remove("NO_COLOR").current_dir(root()).stdin(Stdio::null()))
}

/// A directory of links to every program of `path` but `without`: that PATH lacks it.
fn path_without(path: &str, without: &str, dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    for d in std::env::split_paths(path) {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let link = dir.join(e.file_name());
            // The first of a name on PATH wins, as it does for the shell.
            if e.file_name() != without && link.symlink_metadata().is_err() {
                symlink(e.path(), &link).map_err(|e| format!("link {}: {e}", link.display()))?;
            }
        }
    }
    Ok(dir.display().to_string())
}

/// Every check; whether all held.
pub fn check(guest: &GuestOpts, qemu: &Path) -> Result<bool, String> {
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let cache = crate::shell::cache_dir()?;
    let boot = stock_kernel(&sh, &cache)?;
    let dir = tempfile::Builder::new().prefix("no-apt-").tempdir().map_err(|e| e.to_string())?;
    let (bin, empty) = (dir.path().join("bin"), dir.path().join("empty"));
    std::fs::create_dir_all(&bin).and_then(|()| std::fs::create_dir_all(&empty)).map_err(|e| e.to_string())?;
    symlink(qemu, bin.join("qemu-system-x86_64")).map_err(|e| format!("linking QEMU onto PATH: {e}"))?;
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?.display().to_string();
    let accel =
        GuestOpts { qemu: None, kernel: None, kernel_src: None, kernel_config: None, ..guest.clone() }.to_args();
    let mut checks = Checks::new("no-apt");
    let mut say = |what: &str, held: bool, out: &str| checks.say(what, held, out);
    let args: Vec<String> = [exe.clone(), "vm-test".into()].into_iter().chain(accel.clone()).collect();
    let (code, out) = in_namespace(&hidden(&boot, &empty, &args), &path)?;
    let host = out.contains("booting the host's kernel /boot/vmlinuz-");
    say(
        "without apt, the host's kernel (Debian's stock kernel in /boot) and QEMU from PATH: the suite passes",
        code == exit::PASSED && host,
        &out,
    );
    // A kernel tree that only says its version: the tools are checked before anything is built.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).map_err(|e| e.to_string())?;
    std::fs::write(tree.join("Makefile"), "kernelversion:\n\t@echo 6.12.0-no-apt-check\n")
        .map_err(|e| e.to_string())?;
    let no_bison = path_without(&path, "bison", &dir.path().join("no-bison"))?;
    let src = tree.display().to_string();
    let args: Vec<String> = [exe, "vm-test".into(), "--kernel-src".into(), src].into_iter().chain(accel).collect();
    let (code, out) = in_namespace(&hidden(&boot, &empty, &args), &no_bison)?;
    let named =
        out.contains("bison") && out.contains("apt-get install -y bison") && out.contains("dnf install -y bison");
    say(
        "without bison, --kernel-src fails (exit 3) naming it with its apt and dnf commands",
        code == exit::COULD_NOT_RUN && named,
        &out,
    );
    let (held, out) = builtin_virtio_pci(guest, &dir.path().join("virtio-pci.json"))?;
    say("a guest kernel with virtio_pci built in: the agent takes the device over, the suite passes", held, &out);
    Ok(checks.ok)
}

/// The suite on the appliance's kernel built with virtio_pci built in
/// (cached after the first time): it passes, and the shared boot's
/// layout check says the agent took the device from virtio-pci.
fn builtin_virtio_pci(guest: &GuestOpts, json: &Path) -> Result<(bool, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = Command::new(exe);
    c.args(["vm-test", "--kernel-config", "images/kernel-virtio-pci.config", "--json"]).arg(json);
    c.args(GuestOpts { kernel: None, kernel_src: None, kernel_config: None, ..guest.clone() }.to_args());
    let (code, text) = checks::run(c.current_dir(root()).stdin(Stdio::null()))?;
    let doc = checks::report(json);
    let taken =
        doc["scenarios"].as_array().into_iter().flatten().any(|s| {
            s["qemu_checks"].as_array().into_iter().flatten().any(|c| c["facts"]["taken_from"] == "virtio-pci")
        });
    Ok((code == exit::PASSED && taken, text))
}
