//! How QEMU's end is named in reports and known-defect signatures ("signal
//! 6 (SIGABRT)", "status 1"), seen through a `--qemu` wrapper that ran it
//! as its child. Naming only.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

/// An exit status as the reports and known-defect signatures name it:
/// "status 0", "signal 11 (SIGSEGV)".
pub fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("status {c}"),
        (None, Some(sig)) => format!("signal {sig} ({})", signal_name(sig)),
        _ => format!("{s}"),
    }
}

/// How QEMU ended, from the status of the program we started: a script (a
/// `--qemu` wrapper) whose shell ran QEMU as its child exits 128+N when
/// QEMU died of signal N, which is taken as that signal, as a wrapper that
/// `exec`s shows it (no QEMU exits 129 to 192 of its own accord).
pub(super) fn as_qemu_ended(status: ExitStatus, script: bool) -> ExitStatus {
    match status.code() {
        Some(c) if script && (129..=192).contains(&c) => ExitStatus::from_raw(c - 128),
        _ => status,
    }
}

/// Whether the program at `path` is a script (`#!`): a wrapper.
pub(super) fn is_script(path: &Path) -> bool {
    let mut head = [0u8; 2];
    File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok_and(|()| &head == b"#!")
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        _ => "other signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrappers_shell_status_is_read_as_the_signal_qemu_died_of() {
        let status = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(describe_status(as_qemu_ended(status(134), true)), "signal 6 (SIGABRT)");
        assert_eq!(describe_status(as_qemu_ended(status(139), true)), "signal 11 (SIGSEGV)");
        // Not a script: a status is a status; nor is 1 or 255 a signal.
        assert_eq!(describe_status(as_qemu_ended(status(134), false)), "status 134");
        assert_eq!(describe_status(as_qemu_ended(status(1), true)), "status 1");
        assert_eq!(describe_status(as_qemu_ended(status(255), true)), "status 255");
        let dir = tempfile::tempdir().expect("a dir");
        std::fs::write(dir.path().join("w"), "#!/bin/sh\n").expect("a script");
        std::fs::write(dir.path().join("b"), "\x7fELF").expect("a binary");
        assert!(
            is_script(&dir.path().join("w"))
                && !is_script(&dir.path().join("b"))
                && !is_script(&dir.path().join("none"))
        );
    }
}
