//! The runner's check on itself: after a scenario's QEMU and backend are torn
//! down, no child process, extra fd, socket or temp dir of ours remains.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Our fds (number -> target) at one moment.
pub struct Snapshot {
    fds: Vec<(String, String)>,
}

fn fds() -> Vec<(String, String)> {
    fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let target = fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default();
                    (e.file_name().to_string_lossy().into_owned(), target)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every process we started that is still there, with what they started
/// (a wrapper's QEMU or backend), by pid and command line.
fn children() -> Vec<String> {
    let mut out = Vec::new();
    for pid in crate::spawn::tree(std::process::id()).into_iter().skip(1) {
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        out.push(format!("child process {pid} ({})", cmd.trim()));
    }
    out
}

fn leftovers(dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if ft.is_dir() {
            if name.starts_with("shmem-backend-") || name.starts_with(".tmp") {
                out.push(format!("temp dir {}", p.display()));
            }
            leftovers(&p, out);
        } else if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            out.push(format!("socket {}", p.display()));
        }
    }
}

/// The fds above stderr this process holds now, as `fd N -> target`: at a
/// worker's start, what it inherited (the runner's children get their
/// stdio only, `crate::spawn`).
pub fn inherited() -> Vec<String> {
    fds()
        .into_iter()
        .filter(|(n, t)| n.parse::<u32>().is_ok_and(|n| n > 2) && !t.starts_with("/proc/"))
        .map(|(n, t)| format!("fd {n} -> {t}"))
        .collect()
}

impl Snapshot {
    pub fn take() -> Self {
        Snapshot { fds: fds() }
    }

    /// As [`Self::leaks_since`], allowing `grace` for threads that were told
    /// to exit to close their fds.
    pub fn leaks_after(&self, dir: &Path, grace: Duration) -> Vec<String> {
        let deadline = Instant::now() + grace;
        loop {
            let leaks = self.leaks_since(dir);
            if leaks.is_empty() || Instant::now() >= deadline {
                return leaks;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sockets and temp dirs left under `dir` (for a second directory).
    pub fn leftovers_in(&self, dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        leftovers(dir, &mut out);
        out
    }

    /// What is left now that was not there at the snapshot: child
    /// processes, fds, and sockets or temp dirs under `dir`.
    pub fn leaks_since(&self, dir: &Path) -> Vec<String> {
        let mut out = children();
        let now = fds();
        // The fd used to read /proc/self/fd itself is gone again by now;
        // compare by target so a reused number with the same target is fine.
        let mut before: Vec<&String> = self.fds.iter().map(|(_, t)| t).collect();
        for (n, target) in &now {
            match before.iter().position(|t| *t == target) {
                Some(i) => {
                    before.remove(i);
                }
                None if target.starts_with("/proc/") => {}
                None => out.push(format!("fd {n} -> {target}")),
            }
        }
        leftovers(dir, &mut out);
        out
    }
}
