//! The layering of ARCHITECTURE.md, held by a test anyone can run: each
//! crate depends only on crates of lower floors (the path dependencies of
//! its Cargo.toml), the judge does no I/O (no file, socket, process,
//! thread, environment or clock), and each room of `host/src` refers only
//! to rooms of its floor or below (`crate::ROOM` in code, comments aside).

use std::path::{Path, PathBuf};

/// The crates by floor (ARCHITECTURE.md, "Layers").
const CRATES: [(&str, u8); 8] = [
    ("proto", 1),
    ("pattern", 1),
    ("virtio-media", 1),
    ("judge", 2),
    ("guest-agent", 2),
    ("host", 3),
    ("report", 7),
    ("xtask", 8),
];

/// The rooms of `host/src` by floor.
const ROOMS: [(&str, u8); 15] = [
    ("spec", 3),
    ("wire", 3),
    ("bounded", 3),
    ("memprobe", 3),
    ("files", 3),
    ("channel", 3),
    ("backend", 3),
    ("spawn", 3),
    ("server", 4),
    ("manager", 4),
    ("model", 4),
    ("fake_media", 4),
    ("relay", 4),
    ("conformance", 5),
    ("vm", 6),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_file() {
        out.push(p.to_path_buf());
    }
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let q = e.path();
        if q.is_dir() {
            rust_files(&q, out);
        } else if q.extension().is_some_and(|x| x == "rs") {
            out.push(q);
        }
    }
}

/// The code of a file: its lines without comments.
fn code(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).expect("a source file");
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or_default().to_string()))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

/// The rooms a line names after `crate::`, in `crate::vm::x`, `crate::vm`
/// and `crate::{vm::x, model}` alike.
fn rooms_named(line: &str) -> Vec<String> {
    let ident = |s: &str| s.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut out = Vec::new();
    for (_, rest) in line.match_indices("crate::").map(|(i, m)| (i, &line[i + m.len()..])) {
        match rest.strip_prefix('{') {
            Some(group) => out.extend(group.split('}').next().unwrap_or_default().split(',').map(ident)),
            None => out.push(ident(rest)),
        }
    }
    out
}

#[test]
fn rooms_are_read_in_every_form_of_path() {
    assert_eq!(rooms_named("use crate::vm::boot::Emulation;"), ["vm"]);
    assert_eq!(rooms_named("use crate::{model, vm::x};"), ["model", "vm"]);
    assert_eq!(rooms_named("let a = crate::vm::interrupted() && crate::relay::x;"), ["vm", "relay"]);
}

#[test]
fn every_crate_depends_only_on_lower_floors() {
    let root = workspace();
    let floor = |name: &str| CRATES.iter().find(|(c, _)| *c == name).map(|(_, f)| *f);
    let mut up = Vec::new();
    for (krate, f) in CRATES {
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(root.join(krate).join("Cargo.toml")).expect("Cargo.toml"))
                .expect("TOML");
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let deps = manifest.get(section).and_then(toml::Value::as_table).cloned().unwrap_or_default();
            for (name, spec) in deps {
                let Some(path) = spec.get("path").and_then(toml::Value::as_str) else { continue };
                let to = path.trim_start_matches("../");
                match floor(to) {
                    Some(g) if g < f => {}
                    other => up.push(format!("{krate} (floor {f}) -> {name} at {path} (floor {other:?})")),
                }
            }
        }
    }
    assert!(up.is_empty(), "dependencies that do not go down a floor:\n{}", up.join("\n"));
}

#[test]
fn the_judge_does_no_io() {
    let mut files = Vec::new();
    rust_files(&workspace().join("judge/src"), &mut files);
    let io = [
        "std::fs",
        "std::net",
        "std::process",
        "std::thread",
        "std::env",
        "std::os",
        "Instant::now",
        "SystemTime",
        "std::io::Read",
        "std::io::Write",
        "File::",
    ];
    let mut found = Vec::new();
    for f in &files {
        for (n, line) in code(f) {
            if let Some(w) = io.iter().find(|w| line.contains(*w)) {
                found.push(format!("{}:{n}: {w}: {}", f.display(), line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "I/O in the judge:\n{}", found.join("\n"));
}

#[test]
fn each_room_of_host_refers_only_to_its_floor_or_below() {
    let src = workspace().join("host/src");
    let mut up = Vec::new();
    for (room, f) in ROOMS {
        let mut files = Vec::new();
        rust_files(&src.join(room), &mut files);
        rust_files(&src.join(format!("{room}.rs")), &mut files);
        assert!(!files.is_empty(), "room {room} has no source");
        for file in &files {
            for (n, line) in code(file) {
                let named = rooms_named(&line);
                for (other, g) in ROOMS.iter().filter(|(o, g)| *g > f && named.iter().any(|n| n == o)) {
                    up.push(format!(
                        "{}:{n}: {room} (floor {f}) -> {other} (floor {g}): {}",
                        file.display(),
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(up.is_empty(), "references up a floor:\n{}", up.join("\n"));
}
