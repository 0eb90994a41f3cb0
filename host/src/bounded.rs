//! Short commands run with a bound on how long they may take (a `--version`
//! probe, `-device help`): output collected, the command and everything it
//! started killed and reaped when the bound passes. Not for long-lived
//! children (QEMU, backends): those have owners of their own.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a probe of a program's identity may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `cmd` (stdin empty) and returns its output, or an error of kind
/// `TimedOut` naming the bound when it has not ended within `timeout`.
/// Its output is read until the same bound: a command that ended but left
/// a process holding its stdout (a background job of a wrapper) has its
/// process group killed then, and gives what it wrote so far.
pub fn output_within(mut cmd: Command, timeout: Duration) -> io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    crate::spawn::stdio_only(&mut cmd);
    let mut child = spawn_when_not_busy(&mut cmd, timeout)?;
    let pipes = (child.stdout.take(), child.stderr.take());
    let readers = [pipes.0.map(reader), pipes.1.map(reader)];
    let deadline = Instant::now() + timeout;
    // The whole group: a wrapper script's own children too.
    let group = child.id();
    let kill_group = || drop(crate::spawn::signal_group(group, libc::SIGKILL));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            kill_group();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{:?} did not end within {timeout:?}", cmd.get_program()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let done = |rs: &[Option<Reader>; 2]| rs.iter().flatten().all(|r| r.1.is_finished());
    while !done(&readers) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !done(&readers) {
        kill_group();
        let grace = Instant::now() + Duration::from_millis(500);
        while !done(&readers) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let [out, err] = readers.map(|r| {
        r.map(|(got, _)| std::mem::take(&mut *got.lock().unwrap_or_else(std::sync::PoisonError::into_inner)))
            .unwrap_or_default()
    });
    Ok(Output { status, stdout: out, stderr: err })
}

/// Spawns `cmd`, retrying within `timeout` while its program is "text file
/// busy" (ETXTBSY): a script just written, whose write fd a child forked
/// meanwhile by another thread of this process still holds until that
/// child's exec closes it (seen: a test's stand-in QEMU, written by one
/// test thread while another spawned a process).
fn spawn_when_not_busy(cmd: &mut Command, timeout: Duration) -> io::Result<std::process::Child> {
    let deadline = Instant::now() + timeout;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other,
        }
    }
}

/// The first line `prog --version` prints (the key of a backend's known
/// defects). A program that does not answer within [`PROBE_TIMEOUT`] is
/// killed, and the error says so.
pub fn version_line(prog: &str) -> Result<String, String> {
    let mut c = Command::new(prog);
    c.arg("--version");
    let out = output_within(c, PROBE_TIMEOUT).map_err(|e| format!("`{prog} --version`: {e}"))?;
    let said = String::from_utf8_lossy(&out.stdout);
    said.lines()
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("`{prog} --version` printed nothing ({})", out.status))
}

/// A pipe read on a thread of its own into a buffer the caller can take
/// at any time: a reader blocked on a pipe someone else holds is left
/// behind, not waited for.
type Reader = (std::sync::Arc<std::sync::Mutex<Vec<u8>>>, std::thread::JoinHandle<()>);

fn reader(mut pipe: impl Read + Send + 'static) -> Reader {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = got.clone();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            into.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(&buf[..n]);
        }
    });
    (got, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_ends_gives_its_output_and_one_that_stalls_is_killed_in_time() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hello; echo oops >&2; exit 3"]);
        let out = output_within(c, Duration::from_secs(5)).expect("runs");
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice(), out.status.code()),
            (&b"hello\n"[..], &b"oops\n"[..], Some(3))
        );
        let mut c = Command::new("sh");
        c.args(["-c", "sleep 60; echo late"]);
        let started = Instant::now();
        let e = output_within(c, Duration::from_millis(300)).expect_err("times out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5), "the grandchild holding the pipe was killed too");
    }

    #[test]
    fn a_command_that_leaves_a_process_holding_its_output_gives_what_it_wrote_within_the_bound() {
        let mut c = Command::new("sh");
        // A wrapper that answers, then leaves a background job with its stdout.
        c.args(["-c", "echo 'version 1.0'; sleep 60 &"]);
        let started = Instant::now();
        let out = output_within(c, Duration::from_millis(500)).expect("it ended");
        assert_eq!((out.stdout.as_slice(), out.status.success()), (&b"version 1.0\n"[..], true));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn a_script_still_open_for_writing_runs_once_the_writer_lets_go() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("script");
        let mut writer = std::fs::File::create(&path).expect("create");
        writer.write_all(b"#!/bin/sh\necho ran\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // As a child forked by another thread would, the writer holds the file open a while.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(writer);
        });
        let out =
            output_within(Command::new(&path), Duration::from_secs(5)).expect("runs once the file is no longer busy");
        assert_eq!(out.stdout, b"ran\n");
        releaser.join().expect("releaser");
    }
}
