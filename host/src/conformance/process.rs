//! A backend under test as a child process: started from a command line with
//! `{socket}` in it, its stderr kept; waited for until it listens on its
//! socket; on drop its process group killed (a wrapper that does not `exec`
//! and the backend it started alike) and reaped, its socket file removed.
//! Its own process group: the runner stops it, on Ctrl-C too. What it holds
//! is read from `/proc` for every process of its tree.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct BackendProcess {
    child: Child,
    pub stderr: PathBuf,
    /// Its listening socket: a killed backend leaves the file behind, so it goes on drop.
    socket: PathBuf,
}

/// `__SO_ACCEPTCON` in `/proc/net/unix`'s Flags: the socket listens.
const ACCEPTING: u32 = 0x1_0000;

/// Whether a socket bound at `path` listens, from `/proc/net/unix` (a
/// connect to find out would take the backend's one frontend).
fn listening(path: &Path) -> bool {
    let want = path.display().to_string();
    let table = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        fields.len() >= 8 && fields[7] == want && u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & ACCEPTING != 0)
    })
}

impl BackendProcess {
    /// Starts `command` (words split on spaces, `{socket}` replaced) and
    /// waits up to `timeout` for it to listen at `socket`.
    pub fn start(command: &str, socket: &Path, log_dir: &Path, timeout: Duration) -> Result<Self, String> {
        let words: Vec<String> =
            command.split_whitespace().map(|w| w.replace("{socket}", &socket.display().to_string())).collect();
        let (prog, args) = words.split_first().ok_or("the backend command is empty")?;
        if !command.contains("{socket}") {
            return Err(format!("backend command {command:?} has no {{socket}} to put the socket path in"));
        }
        let stderr = log_dir.join("backend.stderr");
        let log = fs::File::create(&stderr).map_err(|e| format!("create {}: {e}", stderr.display()))?;
        let mut cmd = Command::new(prog);
        let child = crate::spawn::stdio_only(&mut cmd)
            .process_group(0)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting backend {prog:?}: {e}"))?;
        let mut p = BackendProcess { child, stderr, socket: socket.to_path_buf() };
        let deadline = Instant::now() + timeout;
        // Not just the file: between bind and listen a connect is refused (seen, 1 run in 5 of a suite).
        while !listening(socket) {
            if let Some(gone) = p.gone() {
                return Err(format!("backend {prog:?} ended before listening: {gone}"));
            }
            if Instant::now() >= deadline {
                let made = if socket.exists() { "created but did not listen on" } else { "did not create" };
                return Err(format!("backend {prog:?} {made} {} within {timeout:?}", socket.display()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(p)
    }

    /// How it ended, if it has.
    fn death(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("exited: {status}")),
            Ok(None) => None,
            Err(e) => Some(format!("cannot be waited for: {e}")),
        }
    }

    /// How it ended and the end of its stderr, if it has ended (what a report says of a dead backend).
    pub fn gone(&mut self) -> Option<String> {
        self.death().map(|d| format!("{d}; stderr: {}", self.stderr_tail()))
    }

    /// The end of its stderr (for reports).
    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Its processes: itself (a wrapper, maybe) and every one it started.
    pub fn processes(&self) -> Vec<u32> {
        crate::spawn::tree(self.child.id())
    }

    /// How many memfds it holds open, with every process it started (a
    /// wrapper's child is the backend then). An error when its fds cannot
    /// be read: it is gone, or not ours to look at; never a count of 0.
    pub fn memfds(&self) -> Result<usize, String> {
        let mut total = 0;
        for pid in self.processes() {
            // A process that has ended holds no fd, and that says nothing of what it released.
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("process {pid}: {e}"))?;
            if matches!(stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()), Some('Z' | 'X') | None) {
                return Err(format!("process {pid} has ended"));
            }
            let dir = format!("/proc/{pid}/fd");
            let rd = fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
            total += rd
                .flatten()
                .filter(|e| fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("/memfd:")))
                .count();
        }
        Ok(total)
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = crate::spawn::signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A Unix socket bound at `path` that does not listen (the moment between bind and listen).
    fn bound_only(path: &Path) -> std::os::fd::OwnedFd {
        // SAFETY: a new socket, owned at once; bind on a sockaddr_un we fill.
        unsafe {
            let fd = std::os::fd::OwnedFd::from_raw_fd(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0));
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in addr.sun_path.iter_mut().zip(path.display().to_string().bytes()) {
                *d = s as libc::c_char;
            }
            let rc = libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as u32,
            );
            assert_eq!(rc, 0, "bind {}", path.display());
            fd
        }
    }

    #[test]
    fn a_socket_counts_as_listening_only_once_it_listens() {
        let dir = tempfile::tempdir().unwrap();
        let (bound, listens) = (dir.path().join("bound.sock"), dir.path().join("listens.sock"));
        assert!(!listening(&listens), "no socket yet");
        let _b = bound_only(&bound);
        assert!(bound.exists() && !listening(&bound), "bound, not listening: a connect would be refused");
        let _l = std::os::unix::net::UnixListener::bind(&listens).unwrap();
        assert!(listening(&listens));
    }
}
