//! `cargo xtask backend-test`: a vhost-user backend (built, given, or any
//! command) through every conformance session, the report printed and written.
//! The sessions and their judging are `shmem_host::conformance`.

use std::path::PathBuf;

use shmem_host::conformance::BackendUnderTest;
use shmem_host::vm::scenario::MediaBuild;
use xshell::Shell;

use crate::opts::take_opt;
use crate::suite_setup::{backend_defects, media_under_test};

/// `backend-test`: the backend under test (built, given, or any command),
/// every session, the report; fails on what the backend list does not name.
pub fn backend_test(args: &[String]) -> Result<bool, String> {
    let mut rest = args.to_vec();
    let command = take_opt::<String>(&mut rest, "--backend")?;
    let binary = take_opt::<PathBuf>(&mut rest, "--media-backend")?;
    let json = take_opt::<PathBuf>(&mut rest, "--json")?;
    let junit = take_opt::<PathBuf>(&mut rest, "--junit")?;
    let list = take_opt::<String>(&mut rest, "--known-defects")?;
    if let Some(other) = rest.first() {
        return Err(format!("backend-test: unknown option {other:?}"));
    }
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let backend = match command {
        Some(c) => {
            // A backend whose program does not say a version is keyed on its command line.
            let version = shmem_host::bounded::version_line(c.split_whitespace().next().unwrap_or("")).unwrap_or_else(|e| {
                println!("backend-test: {e}; its known defects are keyed on the command line");
                c.clone()
            });
            BackendUnderTest { version, command: c }
        }
        None => media_under_test(&sh, binary.as_deref(), MediaBuild::Published)?,
    };
    let defects = backend_defects(list.as_deref())?;
    println!("backend-test: {} ({})", backend.version, backend.command);
    let dir = tempfile::Builder::new().prefix("backend-test-").tempdir().map_err(|e| e.to_string())?;
    let sessions = shmem_host::conformance::run_all(&backend, &defects, dir.path(), &Default::default());
    shmem_host::conformance::report::print(&sessions);
    let write = |p: &Option<PathBuf>, text: String| p.as_ref().map_or(Ok(()), |p| std::fs::write(p, text).map_err(|e| format!("write {}: {e}", p.display())));
    write(&json, shmem_host::conformance::report::json(&sessions))?;
    write(&junit, shmem_host::conformance::report::junit(&sessions))?;
    Ok(sessions.iter().all(|s| s.judgement.verdict.ok()))
}
