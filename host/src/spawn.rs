//! Children get their stdio and nothing else: every other fd this process
//! holds (a memory-table memfd, a vring eventfd, a mapped file, received by
//! our code or by a library's `recvmsg`) is made close-on-exec in the child
//! just before it execs, so no QEMU, backend or worker of ours inherits the
//! shared boot's fds. Process setup only; it starts nothing itself.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// `close_range(2)`'s flag: mark the range close-on-exec instead of closing it.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Makes `cmd`'s child close every fd above stderr when it execs (what
/// `Stdio` set up on 0, 1 and 2 stays). Returns `cmd` for chaining.
pub fn stdio_only(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (close_range, getrlimit, fcntl).
    unsafe { cmd.pre_exec(cloexec_above_stderr) }
}

/// Marks fds 3 and up close-on-exec: `close_range` (Linux 5.11), else fd by
/// fd up to the open-file limit.
fn cloexec_above_stderr() -> std::io::Result<()> {
    // SAFETY: a plain syscall on this process's own fd table.
    if unsafe { libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) } == 0 {
        return Ok(());
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we own.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur.min(1 << 20) as libc::c_int } else { 4096 };
    for fd in 3..max {
        // SAFETY: fcntl on a number that may not be open fails with EBADF, harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// What `sh`'s fds point at, as its child sees them.
    fn fds_seen(guarded: bool) -> String {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ls -l /proc/$$/fd"]);
        if guarded {
            stdio_only(&mut cmd);
        }
        String::from_utf8_lossy(&cmd.output().expect("sh runs").stdout).into_owned()
    }

    #[test]
    fn a_child_inherits_no_fd_but_its_stdio() {
        // An fd without close-on-exec, as a library's recvmsg(.., 0) leaves one.
        let file = tempfile::tempfile().expect("a temp file");
        // SAFETY: clears the flag on an fd we own.
        assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) }, 0);
        let name = format!("/proc/self/fd/{}", file.as_raw_fd());
        let target = std::fs::read_link(&name).expect("the fd's target").display().to_string();
        assert!(fds_seen(false).contains(&target), "without the guard the child holds {target}: the test would show nothing");
        let seen = fds_seen(true);
        assert!(!seen.contains(&target), "{seen}");
        // Its stdio is still there (the pipe `output` reads).
        assert!(seen.contains(" 1 -> pipe:"), "{seen}");
    }
}
