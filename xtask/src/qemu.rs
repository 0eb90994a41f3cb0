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
    install_prefix(&apt, sh, &want, &prefix)?;
    let info = probe(&wrapper).map_err(|e| format!("the provisioned QEMU failed the probe: {e}"))?;
    Ok((info, note))
}

/// `QEMU_PACKAGE` at `version` unpacked into `prefix/root` (the prefix
/// emptied first), with the wrapper, then marked complete.
fn install_prefix(apt: &PrivateApt, sh: &Shell, version: &str, prefix: &Path) -> Result<(), String> {
    println!("xtask: provisioning {QEMU_PACKAGE} {version} from Debian unstable into {}", prefix.display());
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
# (written by cargo xtask; see xtask/src/qemu.rs).
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

#[cfg(test)]
mod tests {
    use super::debian_version;

    #[test]
    fn the_debian_version_is_read_from_the_build() {
        assert_eq!(debian_version("11.1.3 (Debian 1:11.1.3+ds-1)"), Some("1:11.1.3+ds-1"));
        assert_eq!(debian_version("11.1.3 (v11.1.3-dirty)"), None);
    }
}
