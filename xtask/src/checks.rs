//! What the commands that check the appliance from outside share
//! (`contract`, `no-apt`, `html-check`, `moved-qemu`): expectations said one
//! a line as they are checked and tallied, a child run to its end with its
//! exit status and output, and a JSON report read back. Judges only its
//! callers' own expectations.

use std::path::Path;
use std::process::{Command, ExitStatus, Output};

use crate::exit;

/// Expectations said as `PREFIX: WHAT: ok` (or `FAILED` with the last
/// lines of what was seen), and whether all held.
pub struct Checks {
    prefix: &'static str,
    pub ok: bool,
}

impl Checks {
    pub fn new(prefix: &'static str) -> Self {
        Checks { prefix, ok: true }
    }

    pub fn say(&mut self, what: &str, held: bool, seen: &str) {
        println!("{}: {what}: {}", self.prefix, if held { "ok" } else { "FAILED" });
        if !held {
            let lines: Vec<&str> = seen.lines().collect();
            lines[lines.len().saturating_sub(40)..].iter().for_each(|l| println!("{}:     {l}", self.prefix));
        }
        self.ok &= held;
    }
}

/// A child's exit status as the CLI contract counts it (a signal: could not run).
pub fn code(status: ExitStatus) -> u8 {
    status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(exit::COULD_NOT_RUN)
}

/// `cmd` run to its end: its exit status and its stdout and stderr as text.
pub fn run(cmd: &mut Command) -> Result<(u8, String), String> {
    let Output { status, stdout, stderr } = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    Ok((code(status), format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr))))
}

/// A JSON report read back (null when it is missing or not JSON).
pub fn report(path: &Path) -> serde_json::Value {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}
