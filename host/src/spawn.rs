//! Children of ours and the processes they start. A child gets its stdio
//! and nothing else: every other fd this process holds (a memory-table
//! memfd, a vring eventfd, a mapped file, received by our code or by a
//! library's `recvmsg`) is made close-on-exec in the child just before it
//! execs, so no QEMU, backend or worker of ours inherits the shared boot's
//! fds. A child that is a wrapper (a script that runs QEMU or a backend
//! without `exec`) is one process of a tree: [`tree`] finds them all,
//! [`leaf`] the program it wraps, [`signal_group`] reaches every one.
//! Process setup and `/proc` reading only; it starts nothing itself.

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

/// The children of `pid`, of all its threads (`/proc/PID/task/TID/children`).
fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| rd.flatten().map(|t| t.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut kids = Vec::new();
    for t in tasks {
        let list = std::fs::read_to_string(t.join("children")).unwrap_or_default();
        kids.extend(list.split_whitespace().filter_map(|k| k.parse::<u32>().ok()));
    }
    kids
}

/// `pid` and its descendants, parents first.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while let Some(&p) = all.get(i) {
        let new: Vec<u32> = children(p).into_iter().filter(|k| !all.contains(k)).collect();
        all.extend(new);
        i += 1;
    }
    all
}

/// The program a wrapper at `pid` runs: down the tree while a process has
/// exactly one child (a wrapper that `exec`s is its own leaf).
pub fn leaf(pid: u32) -> u32 {
    let mut at = pid;
    loop {
        match children(at).as_slice() {
            [only] => at = *only,
            _ => return at,
        }
    }
}

/// What the processes of `root`'s tree hold of the file `(dev, ino)`: their
/// fds to it and their mappings of it (a memfd), each named with its pid.
pub fn holding(root: u32, (dev, ino): (u64, u64)) -> std::io::Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for pid in tree(root) {
        for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
            if std::fs::metadata(e.path()).is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino)) {
                found.push(format!("process {pid} fd {}", e.file_name().to_string_lossy()));
            }
        }
        for line in std::fs::read_to_string(format!("/proc/{pid}/maps"))?.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 6 && f[5].starts_with("/memfd:") && f[4].parse::<u64>().ok() == Some(ino) {
                found.push(format!("process {pid} mapping {}", f[0]));
            }
        }
    }
    Ok(found)
}

/// Sends `sig` to the process group `leader` leads (a child started with
/// `process_group(0)`): a wrapper and whatever it started, unless they left
/// the group.
pub fn signal_group(leader: u32, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill with a negative pid signals the group our child leads.
    if unsafe { libc::kill(-(leader as libc::pid_t), sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        4096
    };
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
    fn a_wrapper_that_does_not_exec_is_seen_through_and_signalled_as_a_group() {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::process::CommandExt as _;
        // `sleep` as the wrapped program, holding a file; `sh` staying as its parent (no exec).
        let file = tempfile::NamedTempFile::new().expect("a file");
        let meta = std::fs::metadata(file.path()).expect("its inode");
        let mut wrapper = Command::new("sh");
        wrapper.args(["-c", &format!("sleep 30 3<'{}'; echo done", file.path().display())]).process_group(0);
        let mut child = stdio_only(&mut wrapper).spawn().expect("sh runs");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while tree(pid).len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let all = tree(pid);
        let wrapped = leaf(pid);
        assert!(all.len() == 2 && wrapped != pid && all.contains(&wrapped), "{all:?} -> {wrapped}");
        let comm = std::fs::read_to_string(format!("/proc/{wrapped}/comm")).expect("its name");
        assert_eq!(comm.trim(), "sleep");
        // What the wrapped program holds is found through the wrapper.
        let held = holding(pid, (meta.dev(), meta.ino())).expect("readable");
        assert!(held.iter().any(|h| h.starts_with(&format!("process {wrapped} fd 3"))), "{held:?}");
        signal_group(pid, libc::SIGKILL).expect("signalled");
        child.wait().expect("reaped");
        // The wrapped program went with the group, not just the wrapper.
        let gone = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{wrapped}/stat")).is_ok_and(|s| !s.contains(") Z"))
            && std::time::Instant::now() < gone
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            std::fs::read_to_string(format!("/proc/{wrapped}/stat")).map_or(true, |s| s.contains(") Z")),
            "the wrapped program outlived its group's kill"
        );
    }

    #[test]
    fn a_child_inherits_no_fd_but_its_stdio() {
        // An fd without close-on-exec, as a library's recvmsg(.., 0) leaves one.
        let file = tempfile::tempfile().expect("a temp file");
        // SAFETY: clears the flag on an fd we own.
        assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) }, 0);
        let name = format!("/proc/self/fd/{}", file.as_raw_fd());
        let target = std::fs::read_link(&name).expect("the fd's target").display().to_string();
        assert!(
            fds_seen(false).contains(&target),
            "without the guard the child holds {target}: the test would show nothing"
        );
        let seen = fds_seen(true);
        assert!(!seen.contains(&target), "{seen}");
        // Its stdio is still there (the pipe `output` reads).
        assert!(seen.contains(" 1 -> pipe:"), "{seen}");
    }
}
