//! The QEMU artefact: `--qemu`, `$QEMU`, the one on PATH, or one provisioned
//! from Debian unstable into a private prefix under the cache (pinned by
//! `tests/qemu.toml`), run through a wrapper. The probe of what a QEMU supports
//! is the host runner's (`shmem_host::vm::qemu`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shmem_host::vm::qemu::{QemuInfo, probe};
use xshell::{Shell, cmd};

use crate::apt::PrivateApt;

const QEMU_PACKAGE: &str = "qemu-system-x86";

/// `--qemu`, then `$QEMU`: used if they pass the probe, refused otherwise.
/// Then `qemu-system-x86_64` on PATH, then the cached or a newly provisioned
/// one (see [`provisioned_qemu`]). With a note when it is not the pinned build.
/// With `pinned_first` (a `--compare` baseline), a QEMU on PATH is passed
/// over for the provisioned pinned build, whose defects are measured.
pub fn find_qemu(
    sh: &Shell,
    explicit: Option<&Path>,
    cache: &Path,
    pin: &str,
    pinned_first: bool,
) -> Result<(QemuInfo, Option<String>), String> {
    if let Some(p) = explicit {
        return probe(p).map(|i| (i, None)).map_err(|e| format!("--qemu refused: {e}"));
    }
    if let Some(p) = std::env::var_os("QEMU").filter(|v| !v.is_empty()) {
        return probe(Path::new(&p)).map(|i| (i, None)).map_err(|e| format!("$QEMU refused: {e}"));
    }
    if pinned_first {
        return provisioned_qemu(sh, cache, pin);
    }
    let mut on_path = None;
    if let Ok(p) = cmd!(sh, "which qemu-system-x86_64").quiet().ignore_stderr().read() {
        match probe(Path::new(p.trim())) {
            Ok(info) => return Ok((info, None)),
            Err(e) => on_path = Some(e.to_string()),
        }
    }
    if !crate::apt::available() && !prefix_intact(&cache.join("qemu")) {
        let seen = on_path.map_or_else(|| "none is on PATH".to_string(), |e| format!("the one on PATH: {e}"));
        return Err(format!(
            "no QEMU 11.1 or later ({seen}), and no apt here to provision the pinned Debian build: \
             pass --qemu PATH (or set $QEMU) with a build of QEMU 11.1 or later"
        ));
    }
    if let Some(e) = on_path {
        crate::progress::say(&format!(
            "xtask: not using the QEMU on PATH: {e}; using the pinned build (provisioned into the cache) instead"
        ));
    }
    provisioned_qemu(sh, cache, pin)
}

/// The QEMU `vm-test` would use with `guest` (no `--compare`).
pub fn in_use(guest: &crate::opts::GuestOpts) -> Result<QemuInfo, String> {
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let pin = pinned_qemu(&crate::shell::root())?;
    Ok(find_qemu(&sh, guest.qemu.as_deref(), &crate::shell::cache_dir()?, &pin, false)?.0)
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
        Some(
            probe(&wrapper)
                .map_err(|e| format!("the provisioned QEMU in {} failed the probe: {e}", prefix.display()))?,
        )
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
    let want = if versions.iter().any(|v| v == pin) {
        pin.to_string()
    } else {
        versions.first().cloned().ok_or(format!("the mirror has no {QEMU_PACKAGE}"))?
    };
    let note = (want != pin).then(|| format!("not the pinned build: the mirror has no {QEMU_PACKAGE} {pin} (what tests/known-defects.toml was measured on), so {want} was provisioned"));
    if let Some(info) = cached.filter(|i| debian_version(&i.build) == Some(want.as_str())) {
        return Ok((info, note));
    }
    install_prefix(&apt, sh, &want, &prefix)?;
    let info = probe(&wrapper).map_err(|e| format!("the provisioned QEMU failed the probe: {e}"))?;
    Ok((info, note))
}

/// `QEMU_PACKAGE` at `version` unpacked into `prefix/root` (the prefix
/// emptied first), with the wrapper, then marked complete.
fn install_prefix(apt: &PrivateApt, sh: &Shell, version: &str, prefix: &Path) -> Result<(), String> {
    crate::progress::say(&format!(
        "xtask: provisioning {QEMU_PACKAGE} {version} from Debian unstable into {}",
        prefix.display()
    ));
    let _ = fs::remove_dir_all(prefix);
    let root = prefix.join("root");
    apt.install_into(sh, QEMU_PACKAGE, version, &root)?;
    fs::create_dir_all(root.join(MODULE_DIR.trim_start_matches('/'))).map_err(|e| e.to_string())?;
    write_wrapper(prefix)?;
    fs::write(prefix.join(COMPLETE), "").map_err(|e| e.to_string())
}

/// The pinned Debian version of QEMU, from `tests/qemu.toml`.
pub fn pinned_qemu(root: &Path) -> Result<String, String> {
    let path = root.join("tests/qemu.toml");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("debian_version")?
                .trim_start()
                .strip_prefix('=')
                .map(|v| v.trim().trim_matches('"').to_string())
        })
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
        && std::process::Command::new(prefix.join("qemu-system-x86_64"))
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
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
/// re-executes itself in a user and mount namespace of its own where the
/// prefix's module directory is bind-mounted over the system's. Run as
/// root (a nightly), it always does: QEMU, and every QEMU the fuzzer
/// starts, keeps root's uid for its files but holds no capability over
/// the host (only the apt step needs root). Where namespaces are refused
/// (a container's seccomp), root's QEMU runs as it is, said on stderr.
/// `exec` all the way: QEMU keeps the wrapper's pid.
fn write_wrapper(prefix: &Path) -> Result<(), String> {
    let script = format!(
        r#"#!/bin/sh
# Runs the privately provisioned QEMU through its own loader and libraries
# (written by cargo xtask; see xtask/src/qemu.rs).
R="$(cd "$(dirname "$0")" && pwd)/root"
MODS={MODULE_DIR}
if [ -z "$SHMEM_QEMU_PRIVATE_MODULES" ] && {{ [ -d "$MODS" ] || [ "$(id -u)" = 0 ]; }}; then
  export SHMEM_QEMU_PRIVATE_MODULES=1
  if unshare --user --map-root-user --mount --propagation private true 2>/dev/null; then
    exec unshare --user --map-root-user --mount --propagation private "$0" "$@"
  elif [ -d "$MODS" ]; then
    echo "qemu wrapper: no user and mount namespace (unshare refused) to hide the system QEMU's modules in $MODS" >&2; exit 1
  fi
  echo "qemu wrapper: no user namespace (unshare refused): QEMU runs as root" >&2
fi
if [ -n "$SHMEM_QEMU_PRIVATE_MODULES" ] && [ -d "$MODS" ]; then
  mount --bind "$R$MODS" "$MODS" || {{ echo "qemu wrapper: cannot hide the system QEMU's modules in $MODS" >&2; exit 1; }}
fi
exec "$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$R/usr/lib/x86_64-linux-gnu" \
  "$R/usr/bin/qemu-system-x86_64" -L "$R/usr/share/qemu" -L "$R/usr/share/seabios" "$@"
"#
    );
    // Written beside it and renamed over it: another run sharing the cache may be starting QEMU through it.
    let wrapper = prefix.join("qemu-system-x86_64");
    let mut new =
        tempfile::NamedTempFile::new_in(prefix).map_err(|e| format!("a temp file in {}: {e}", prefix.display()))?;
    std::io::Write::write_all(&mut new, script.as_bytes())
        .map_err(|e| format!("write {}: {e}", new.path().display()))?;
    fs::set_permissions(new.path(), fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", new.path().display()))?;
    new.persist(&wrapper).map(drop).map_err(|e| format!("rename over {}: {e}", wrapper.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::{MODULE_DIR, debian_version, write_wrapper};

    /// The wrapper around a stand-in "loader" that says which user
    /// namespace and uid the QEMU it would start runs in.
    #[test]
    fn root_s_qemu_runs_in_a_user_namespace_of_its_own() {
        let prefix = tempfile::tempdir().expect("a prefix");
        let lib = prefix.path().join("root/usr/lib/x86_64-linux-gnu");
        // As install_prefix leaves it: the module directory the wrapper binds over a system QEMU's.
        std::fs::create_dir_all(prefix.path().join("root").join(MODULE_DIR.trim_start_matches('/')))
            .expect("module dir");
        let loader = lib.join("ld-linux-x86-64.so.2");
        std::fs::write(&loader, "#!/bin/sh\nreadlink /proc/self/ns/user; id -u\n").expect("stand-in loader");
        std::fs::set_permissions(&loader, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        write_wrapper(prefix.path()).expect("wrapper");
        let out = std::process::Command::new(prefix.path().join("qemu-system-x86_64"))
            .arg("--version")
            .env_remove("SHMEM_QEMU_PRIVATE_MODULES")
            .output()
            .expect("runs");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let ours = std::fs::read_link("/proc/self/ns/user").expect("our user namespace").display().to_string();
        // SAFETY: getuid has no preconditions.
        let root = unsafe { libc::getuid() } == 0;
        let refused = String::from_utf8_lossy(&out.stderr).contains("unshare refused");
        let ns = said.lines().next().unwrap_or_default();
        assert!(out.status.success() && !ns.is_empty(), "{out:?}");
        // Its own namespace when run as root (or to hide a system QEMU's modules), unless namespaces are refused.
        let own = (root || std::path::Path::new(MODULE_DIR).is_dir()) && !refused;
        assert_eq!(ns != ours, own, "root {root}, refused {refused}: {said}");
    }

    #[test]
    fn the_debian_version_is_read_from_the_build() {
        assert_eq!(debian_version("11.1.3 (Debian 1:11.1.3+ds-1)"), Some("1:11.1.3+ds-1"));
        assert_eq!(debian_version("11.1.3 (v11.1.3-dirty)"), None);
    }
}
