//! What every command and artefact shares: where the clone is, the cache
//! directory outside it, and a failed command said with what was being done.
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
