//! The guest's initramfs artefact: the static guest agent, built with
//! `+crt-static`, as `/init` of a newc cpio. Must not boot anything.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

pub fn build_agent(sh: &Shell, root: &Path) -> Result<PathBuf, String> {
    let _dir = sh.push_dir(root);
    let _flags = sh.push_env("RUSTFLAGS", "-C target-feature=+crt-static");
    crate::progress::run(
        "guest agent: cargo build (static)",
        cmd!(sh, "cargo build --release -p guest-agent --target x86_64-unknown-linux-gnu --target-dir target/agent"),
    )?;
    Ok(root.join("target/agent/x86_64-unknown-linux-gnu/release/guest-agent"))
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
