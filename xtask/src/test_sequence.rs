//! `cargo xtask test`: the whole test sequence `.ci/run` calls: clippy, the
//! workspace tests, the VM suite, a short fuzz, moved-qemu and backend-test.

use xshell::{Shell, cmd};

use crate::shell::root;
use crate::{backend_test, fuzz, moved, vm_test};

/// Every step runs; the sequence passes when each did.
pub fn test(args: &[String]) -> Result<bool, String> {
    let sh = Shell::new().map_err(|e| e.to_string())?;
    sh.change_dir(root());
    cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run().map_err(|e| e.to_string())?;
    cmd!(sh, "cargo test --workspace").run().map_err(|e| e.to_string())?;
    let suite_ok = vm_test::vm_test(args)?.ok();
    // A short fuzz keeps the fuzzer working: fixed seed, found scenarios under target/.
    let fuzz_ok = fuzz::fuzz(&["--seed", "1", "--time", "45", "--shrink-time", "120", "--out", "target/fuzz-found"].map(String::from))?;
    let moved_ok = moved::command(args)?;
    let backend_ok = backend_test::backend_test(&[])?;
    Ok(suite_ok && fuzz_ok && moved_ok && backend_ok)
}
