//! How verdicts follow a QEMU that changed, tested the way a user meets it:
//! wrappers around the QEMU in use that print another `--version` and
//! otherwise run it (one as its child, without `exec`). Another build of the same upstream version carries
//! the listed entries over; another upstream version fails naming the
//! entries it matches, `--bless` adds it to exactly those, and the next run
//! passes. Runs `cargo xtask vm-test` as a user would (this binary).

use std::collections::BTreeSet;
use std::path::Path;

use shmem_host::vm::qemu::QemuInfo;

use crate::exit::{self, Failure};
use crate::opts::{GuestOpts, MovedArgs};
use crate::shell::root;
use crate::suite_setup::BACKEND_LIST_ACCELS;
use crate::{qemu, shell};

/// A media scenario whose entries behind QEMU live in the backends' list
/// (keyed by `frontend`), with the appliance's own fake backend.
const FROM_BACKEND_LIST: &str = "media-fake-hide-refusal";

/// A wrapper script that says it is `build` and runs `real` otherwise:
/// with `exec`, or (`exec` false) as its child, the shell staying its
/// parent, as many a user's wrapper does.
fn wrapper(dir: &Path, name: &str, build: &str, real: &Path, exec: bool) -> Result<std::path::PathBuf, String> {
    let path = dir.join(name);
    let run = if exec {
        format!("exec \"{}\" \"$@\"", real.display())
    } else {
        format!("\"{}\" \"$@\"\nexit $?", real.display())
    };
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo \"QEMU emulator version {build}\"; exit 0; fi\n{run}\n"
    );
    shell::write_script(&path, &script)?;
    Ok(path)
}

/// Runs this binary's `vm-test` with `args` (and the kernel and accelerator
/// options of `guest`); its exit status (`exit`), and its JSON report.
fn vm_test(args: &[&str], guest: &[String], json: &Path) -> Result<(u8, serde_json::Value), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let status = std::process::Command::new(exe)
        .arg("vm-test")
        .args(args)
        .args(guest)
        .arg("--json")
        .arg(json)
        .status()
        .map_err(|e| e.to_string())?;
    let code = crate::checks::code(status);
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    Ok((code, serde_json::from_str(&text).map_err(|e| e.to_string())?))
}

/// The judged failures of the QEMU verdicts of a JSON report.
fn judged(report: &serde_json::Value) -> Vec<serde_json::Value> {
    let scenarios = report["scenarios"].as_array().cloned().unwrap_or_default();
    scenarios.iter().flat_map(|s| s["qemu"]["failed"].as_array().cloned().unwrap_or_default()).collect()
}

/// The builds the report's known failures were measured on (carried over).
fn measured_on(report: &serde_json::Value) -> BTreeSet<String> {
    judged(report).iter().filter_map(|j| j["measured_on"].as_str().map(str::to_string)).collect()
}

/// The entries listed elsewhere whose signatures the report's failures showed.
fn matched_elsewhere(report: &serde_json::Value) -> BTreeSet<String> {
    judged(report)
        .iter()
        .filter_map(|j| j["matches_entry_listed_elsewhere"]["id"].as_str().map(str::to_string))
        .collect()
}

/// Every build a known-defects file lists of upstream version `upstream`.
fn listed_builds(path: &Path, upstream: &str) -> Result<BTreeSet<String>, String> {
    let all = shmem_host::vm::lists::load_known_defects(path).map_err(|e| e.to_string())?;
    Ok(all.into_iter().flat_map(|d| d.qemu).filter(|b| b.split_whitespace().next() == Some(upstream)).collect())
}

/// The entries that list QEMU build `build`: in QEMU's list at `kd` (as
/// `qemu`) and in the backends' at `bd` (as `frontend`).
fn listing(kd: &Path, bd: &Path, build: &str) -> Result<BTreeSet<String>, String> {
    let qemu = shmem_host::vm::lists::load_known_defects(kd).map_err(|e| e.to_string())?;
    let of_qemu = qemu.into_iter().filter(|d| d.qemu.iter().any(|q| q == build)).map(|d| d.id);
    Ok(of_qemu.chain(behind(bd, |q| q == build)?).collect())
}

/// The entries of the backends' list at `bd` measured behind a QEMU build
/// that `is` accepts.
fn behind(bd: &Path, is: impl Fn(&str) -> bool) -> Result<BTreeSet<String>, String> {
    let all = shmem_host::vm::lists::load_defect_list(bd, &BACKEND_LIST_ACCELS).map_err(|e| e.to_string())?;
    Ok(all.into_iter().filter(|d| d.frontend.iter().any(|q| is(q))).map(|d| d.id).collect())
}

/// The checks; prints each outcome, Ok(true) when all hold.
pub fn run(real: &QemuInfo, root: &Path, guest: &[String]) -> Result<bool, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let upstream = real.build.split_whitespace().next().unwrap_or("0.0.0").to_string();
    let (maj, min, _) = real.version;
    let same = format!("{upstream} (another build of {upstream})");
    let other = format!("{maj}.{}.0 (Debian 1:{maj}.{}.0+ds-1)", min + 1, min + 1);
    let mut checks = crate::checks::Checks::new("moved-qemu");
    // The runs print their reports as they go: nothing more to show on a failure.
    let mut say = |what: &str, held: bool| checks.say(what, held, "");
    // Without exec: QEMU is the wrapper's child, and what it holds, its death and its stop are still QEMU's.
    let w = wrapper(dir.path(), "same-upstream", &same, &real.path, false)?;
    let (code, report) = vm_test(&["--qemu", &w.to_string_lossy()], guest, &dir.path().join("same.json"))?;
    // Carried over from the builds the list names for this upstream version
    // (the QEMU in use may itself be another Debian build than the pinned one).
    let listed = listed_builds(&root.join("tests/known-defects.toml"), &upstream)?;
    let measured = measured_on(&report);
    say(
        &format!(
            "{same} (a wrapper that does not exec): the run passes with the entries carried over, measured on {}",
            measured.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        code == exit::PASSED && !measured.is_empty() && measured.is_subset(&listed),
    );
    // Both lists an entry can live in, copied: QEMU's and the backends' (a media scenario behind QEMU).
    let (kd, bd) = (dir.path().join("known-defects.toml"), dir.path().join("backend-defects.toml"));
    for (from, to) in [("tests/known-defects.toml", &kd), ("tests/backend-defects.toml", &bd)] {
        std::fs::copy(root.join(from), to).map_err(|e| format!("copying {from}: {e}"))?;
    }
    let w = wrapper(dir.path(), "other-upstream", &other, &real.path, true)?;
    let args = [
        "--qemu",
        &w.to_string_lossy(),
        "--filter",
        "hazard",
        "--filter",
        FROM_BACKEND_LIST,
        "--known-defects",
        &kd.to_string_lossy(),
        "--backend-defects",
        &bd.to_string_lossy(),
    ]
    .map(|s| s.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, report) = vm_test(&args, guest, &dir.path().join("other.json"))?;
    let matched = matched_elsewhere(&report);
    let of_backends = behind(&bd, |q| q.split_whitespace().next() == Some(upstream.as_str()))?;
    say(
        &format!(
            "{other}: the run fails naming the entries it matches ({}, {} of them in the backends' list)",
            matched.len(),
            matched.intersection(&of_backends).count()
        ),
        code == exit::VERDICT_FAILED && !matched.is_empty() && !matched.is_disjoint(&of_backends),
    );
    let blessed = vm_test(&[args.as_slice(), &["--bless"]].concat(), guest, &dir.path().join("bless.json")).is_ok()
        && listing(&kd, &bd, &other)? == matched;
    say("--bless adds the build to exactly those entries, in both lists", blessed);
    let (code, _) = vm_test(&args, guest, &dir.path().join("again.json"))?;
    say("the next run passes", code == exit::PASSED);
    Ok(checks.ok)
}

/// `moved-qemu`: verdicts that follow a QEMU that changed, against
/// wrappers of the QEMU in use (see this module).
pub fn command(a: &MovedArgs) -> Result<bool, Failure> {
    let qemu = qemu::in_use(&a.guest)?;
    Ok(run(&qemu, &root(), &GuestOpts { qemu: None, ..a.guest.clone() }.to_args())?)
}
