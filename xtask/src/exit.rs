//! The exit statuses every command ends with (docs/ci.md): 0 all passed,
//! 1 a verdict failed, 2 a usage error, 3 could not run, 130 interrupted.
//! Deciding which is here; printing the error is the only I/O.

use std::process::ExitCode;

pub const PASSED: u8 = 0;
pub const VERDICT_FAILED: u8 = 1;
/// clap's own status for a usage error, kept for ours.
pub const USAGE: u8 = 2;
pub const COULD_NOT_RUN: u8 = 3;
/// 128 + SIGINT, as a shell reports a command it interrupted (SIGTERM too).
pub const INTERRUPTED: u8 = 130;

/// Why a command ended without a verdict.
#[derive(Debug)]
pub enum Failure {
    /// The options ask for something that cannot be done (e.g. `--bless` with `--known-defects none`).
    Usage(String),
    /// Something the run needs failed: a build, a QEMU, a boot, a file.
    Run(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Run(e)
    }
}

/// The error's words (for a report that goes on after it).
pub fn text(f: &Failure) -> &str {
    match f {
        Failure::Usage(e) | Failure::Run(e) => e,
    }
}

/// The status of a command's result: `Ok(true)` passed, `Ok(false)` a
/// verdict failed; an error is printed on stderr.
pub fn code(res: Result<bool, Failure>) -> ExitCode {
    let status = status(&res, shmem_host::vm::interrupted());
    match res {
        Err(Failure::Usage(e)) => eprintln!("error: {e}\n\nFor more information, try '--help'."),
        Err(Failure::Run(e)) => eprintln!("xtask: {e}"),
        Ok(_) if status == INTERRUPTED => eprintln!("xtask: interrupted"),
        Ok(_) => {}
    }
    ExitCode::from(status)
}

/// Which status: an interrupted run is 130 whatever it got to say.
pub fn status(res: &Result<bool, Failure>, interrupted: bool) -> u8 {
    match res {
        _ if interrupted => INTERRUPTED,
        Ok(true) => PASSED,
        Ok(false) => VERDICT_FAILED,
        Err(Failure::Usage(_)) => USAGE,
        Err(Failure::Run(_)) => COULD_NOT_RUN,
    }
}
