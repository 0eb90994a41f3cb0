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
pub fn output_within(mut cmd: Command, timeout: Duration) -> io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = spawn_when_not_busy(&mut cmd, timeout)?;
    let pipes = (child.stdout.take(), child.stderr.take());
    let readers = [pipes.0.map(reader), pipes.1.map(reader)];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            // The whole group: a wrapper script's own children too.
            // SAFETY: kill with a negative pid signals the group the child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{:?} did not end within {timeout:?}", cmd.get_program())));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let [out, err] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
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
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
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
    said.lines().next().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).ok_or_else(|| format!("`{prog} --version` printed nothing ({})", out.status))
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_ends_gives_its_output_and_one_that_stalls_is_killed_in_time() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hello; echo oops >&2; exit 3"]);
        let out = output_within(c, Duration::from_secs(5)).expect("runs");
        assert_eq!((out.stdout.as_slice(), out.stderr.as_slice(), out.status.code()), (&b"hello\n"[..], &b"oops\n"[..], Some(3)));
        let mut c = Command::new("sh");
        c.args(["-c", "sleep 60; echo late"]);
        let started = Instant::now();
        let e = output_within(c, Duration::from_millis(300)).expect_err("times out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5), "the grandchild holding the pipe was killed too");
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
        let out = output_within(Command::new(&path), Duration::from_secs(5)).expect("runs once the file is no longer busy");
        assert_eq!(out.stdout, b"ran\n");
        releaser.join().expect("releaser");
    }
}
