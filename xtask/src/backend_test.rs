//! `cargo xtask backend-test`: a vhost-user backend (built, given, or any
//! command) through every conformance session, the report printed and written.
//! The sessions and their judging are `shmem_host::conformance`.

use std::path::PathBuf;

use shmem_host::conformance::BackendUnderTest;
use shmem_host::vm::scenario::MediaBuild;
use xshell::Shell;

use crate::exit::Failure;
use crate::opts::BackendTestArgs;
use crate::suite_setup::{backend_defects, media_under_test};

/// `backend-test`: the backend under test (built, given, or any command),
/// every session, the report; fails on what the backend list does not name.
pub fn backend_test(a: &BackendTestArgs) -> Result<bool, Failure> {
    let names = shmem_host::conformance::session_names();
    if a.list {
        names.iter().for_each(|n| println!("{n}"));
        return Ok(true);
    }
    if let Some(unknown) = a.session.iter().find(|s| !names.contains(s)) {
        return Err(Failure::Usage(format!("--session {unknown:?}: no such session (--list names them)")));
    }
    let (command, binary, json, junit, list) =
        (a.backend.clone(), a.media_backend.as_deref(), &a.files.json, &a.files.junit, a.known_defects.as_deref());
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let backend = match command {
        Some(c) => {
            // A backend whose program does not say a version is keyed on its command line.
            let version =
                shmem_host::bounded::version_line(c.split_whitespace().next().unwrap_or("")).unwrap_or_else(|e| {
                    println!("backend-test: {e}; its known defects are keyed on the command line");
                    c.clone()
                });
            BackendUnderTest { version, command: c }
        }
        None => media_under_test(&sh, binary, MediaBuild::Published)?,
    };
    let defects = backend_defects(list)?;
    println!("backend-test: {} ({})", backend.version, backend.command);
    let dir = tempfile::Builder::new().prefix("backend-test-").tempdir().map_err(|e| e.to_string())?;
    let sessions = shmem_host::conformance::run_all(&backend, &defects, (dir.path(), &a.session), &Default::default());
    shmem_report::backend::print(&sessions);
    let write = |p: &Option<PathBuf>, text: String| {
        p.as_ref().map_or(Ok(()), |p| std::fs::write(p, text).map_err(|e| format!("write {}: {e}", p.display())))
    };
    write(json, shmem_report::backend::json(&sessions))?;
    write(junit, shmem_report::backend::junit(&sessions))?;
    write(&a.files.html, shmem_report::html::backend_html(&sessions))?;
    Ok(sessions.iter().all(|s| s.judgement.verdict.ok()))
}
