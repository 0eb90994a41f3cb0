//! Rules of the source itself that no compiler checks: errors in the VM
//! runner are typed (strings only at the report), and every crate declares
//! the workspace's `rust-version`, so clippy's `incompatible_msrv` holds
//! the code to it.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("a source dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_vm_runner_returns_typed_errors_outside_the_report() {
    let vm = workspace().join("host/src/vm");
    let mut files = Vec::new();
    rust_files(&vm, &mut files);
    let mut found = Vec::new();
    for f in
        files.iter().filter(|f| !f.starts_with(vm.join("report")) && f.file_name().is_none_or(|n| n != "report.rs"))
    {
        let text = std::fs::read_to_string(f).expect("a source file");
        for (i, line) in text.lines().enumerate() {
            if line.contains("Result<") && line.contains(", String>") {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "Result<_, String> in host/src/vm:\n{}", found.join("\n"));
}

#[test]
fn every_crate_declares_the_workspace_rust_version() {
    let root = workspace();
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml")).expect("TOML");
    let members = manifest["workspace"]["members"].as_array().expect("members");
    assert!(manifest["workspace"]["package"].get("rust-version").is_some(), "the workspace names a rust-version");
    for m in members.iter().filter_map(|m| m.as_str()) {
        let text = std::fs::read_to_string(root.join(m).join("Cargo.toml")).expect("a member's Cargo.toml");
        let member: toml::Table = toml::from_str(&text).expect("TOML");
        let declared =
            member["package"].get("rust-version").and_then(|v| v.get("workspace")).and_then(toml::Value::as_bool);
        assert_eq!(declared, Some(true), "{m}/Cargo.toml: no `rust-version.workspace = true`");
    }
}
