//! What every command and artefact shares: where the clone is, the cache
//! directory outside it, a failed command said with what was being done,
//! and the small scripts the checks put in front of a program.
//! No artefact or command logic here.

use std::fs;
use std::path::{Path, PathBuf};

/// The workspace root: the clone this xtask was built from.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

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

/// `body` written to `path` as an executable script (mode 0755).
pub fn write_script(path: &Path, body: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, body).map_err(|e| format!("write {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// A script at `path` that execs `program` with its arguments: the same
/// program at a path of its own (an emulation `@PATH` then applies to it alone).
pub fn exec_wrapper(path: &Path, program: &Path) -> Result<(), String> {
    let quoted = shmem_report::quoted(&program.display().to_string());
    write_script(path, &format!("#!/bin/sh\nexec {quoted} \"$@\"\n"))
}
