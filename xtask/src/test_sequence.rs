//! `cargo xtask test`: the whole test sequence `.ci/run` calls: the format
//! check, clippy, the workspace tests, the VM suite, the CI contract
//! (exit codes, reports), a machine without apt, the HTML report in a
//! browser, a short fuzz, moved-qemu and backend-test.

use xshell::{Shell, cmd};

use crate::exit::Failure;
use crate::opts::{BackendTestArgs, FuzzArgs, MovedArgs, SuiteOpts, TestArgs, VmTestArgs};
use crate::shell::root;
use crate::{backend_test, browser, contract, fuzz, moved, no_apt, vm_test};

/// Every step runs; the sequence passes when each did.
pub fn test(a: &TestArgs) -> Result<bool, Failure> {
    let sh = Shell::new().map_err(|e| e.to_string())?;
    sh.change_dir(root());
    fn step(what: &'static str) -> impl FnOnce(xshell::Error) -> Failure {
        move |e| Failure::Run(format!("{what}: {e}"))
    }
    cmd!(sh, "cargo fmt --all --check").run().map_err(step("cargo fmt --check (run `cargo fmt` to format)"))?;
    cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run().map_err(step("clippy"))?;
    cmd!(sh, "cargo test --workspace").run().map_err(step("cargo test"))?;
    let suite = vm_test::vm_test(&VmTestArgs::plain(a.guest.clone(), SuiteOpts::defaults()))?;
    // The CI contract, with the QEMU the suite found.
    let contract_ok = contract::check(&a.guest, &suite.run.qemu.path)?;
    // A machine without apt: the host's kernel, QEMU from PATH, build tools named.
    let no_apt_ok = no_apt::check(&a.guest, &suite.run.qemu.path)?;
    // The HTML report as a browser renders it.
    let html_ok = browser::check(&crate::opts::ContractArgs { guest: a.guest.clone() })?;
    // A short fuzz keeps the fuzzer working: fixed seed, found scenarios under target/.
    let fuzz_ok = fuzz::fuzz(&FuzzArgs {
        guest: a.guest.clone(),
        seed: Some(1),
        time: 45,
        ops: None,
        shrink_time: 120,
        out: Some("target/fuzz-found".into()),
        known_defects: None,
    })?;
    let moved_ok = moved::command(&MovedArgs { guest: a.guest.clone() })?;
    // backend-test with every report file, the HTML page among them.
    let mut backend = BackendTestArgs::default();
    backend.files.html = Some(root().join("target/backend-test.html"));
    let backend_ok = backend_test::backend_test(&backend)?;
    let page = std::fs::read_to_string(root().join("target/backend-test.html")).unwrap_or_default();
    let page_ok = page.contains("<h1>backend-test</h1>") && page.contains("own-session");
    println!("backend-test: --html wrote its sessions: {}", if page_ok { "ok" } else { "FAILED" });
    Ok(suite.ok() && contract_ok && no_apt_ok && html_ok && fuzz_ok && moved_ok && backend_ok && page_ok)
}
