//! Scenario files a user may write, generated and mutated by the thousand:
//! none panics, aborts or hangs the appliance. Each is refused at load with
//! `file:line:col`, or runs on the model to a verdict.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use shmem_host::model::Faults;
use shmem_host::vm::scenario::{Scenario, SuiteFile};
use shmem_host::vm::{bounds, model_target, run_on, scenario_spec};
use shmem_judge::verdict::{Verdict, judge};

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Values a careless or hostile file may hold, for any key.
const VALUES: [&str; 16] = [
    "0",
    "1",
    "8",
    "0x1000",
    "\"4K\"",
    "\"64K\"",
    "\"1M\"",
    "\"0x10000000000\"",
    "\"0xffffffffffffffff\"",
    "-1",
    "\"12Q\"",
    "true",
    "\"f\"",
    "\"\"",
    "4294967296",
    "\"0123456789abcdef\"",
];

/// Every step kind with its keys.
const KINDS: [(&str, &[&str]); 18] = [
    ("file", &["name", "size"]),
    ("fill", &["file", "seed", "offset", "len"]),
    (
        "map",
        &[
            "shmid",
            "file",
            "fd_offset",
            "shm_offset",
            "len",
            "rw",
            "ack",
            "attach",
            "readonly_fd",
            "flags",
            "reason",
            "check",
        ],
    ),
    ("unmap", &["shmid", "shm_offset", "len", "ack", "reason", "check"]),
    ("map-many", &["check", "shmid", "file", "count", "len", "expect_accepted"]),
    ("guest-reset", &["init"]),
    ("guest-write", &["shmid", "offset", "len", "seed"]),
    ("host-write", &["file", "offset", "len", "seed"]),
    ("expect-guest", &["check", "shmid", "offset", "len", "seed"]),
    ("expect-guest-not", &["check", "shmid", "offset", "len", "file", "fd_offset"]),
    ("expect-file", &["check", "file", "offset", "len", "seed"]),
    ("expect-alive", &["check"]),
    ("expect-digest", &["check", "shmid", "file", "offset", "len", "digest"]),
    ("expect-released", &["check", "file"]),
    ("expect-mem-table", &["check", "shmid", "shm_offset", "len", "file", "present"]),
    ("expect-no-answer", &["check", "from"]),
    (
        "probe-reply-before-commit",
        &["check", "shmid", "shm_offset", "doorbell_shmid", "doorbell_offset", "iterations", "rw", "writes"],
    ),
    ("inject", &["fault"]),
];

/// A plausible value for `key` most of the time, any value otherwise.
fn value(key: &str, pick: usize, wild: bool) -> String {
    let names = ["\"f\"", "\"g\"", "\"c1\"", "\"c2\""];
    match key {
        _ if wild => VALUES[pick % VALUES.len()].to_string(),
        "name" | "file" => names[pick % 2].to_string(),
        "check" => names[2 + pick % 2].to_string(),
        "shmid" | "doorbell_shmid" => ["0", "2", "1", "7"][pick % 4].to_string(),
        "rw" | "attach" | "readonly_fd" | "init" | "present" | "writes" => ["true", "false"][pick % 2].to_string(),
        "from" => "\"guest\"".into(),
        "fault" => "\"kill-qemu\"".into(),
        "reason" => "\"mapping overlap\"".into(),
        "digest" => "\"0123456789abcdef\"".into(),
        "seed" | "ack" => ["0", "1", "66"][pick % 3].to_string(),
        _ => ["0", "8", "0x1000", "\"16K\"", "\"64K\"", "3", "0x2000"][pick % 7].to_string(),
    }
}

/// Per key of a step: which value, whether any value, whether left out.
type Picks = Vec<(usize, bool, bool)>;

/// A scenario file from a list of (kind, per-key picks) and a few switches.
fn render(steps: &[(usize, Picks)], own_boot: bool) -> String {
    let mut t = String::from("description = \"generated\"\n");
    if own_boot {
        t.push_str("own_boot = true\n\n[device]\nvirtio_id = 45\nregions = [\"64K\", 0, \"256K\"]\nlayout = [\"0@0+0x10000\", \"2@0x10000+0x40000\"]\n");
    }
    for (kind, picks) in steps {
        let (name, keys) = KINDS[*kind % KINDS.len()];
        t.push_str(&format!("\n[[step]]\ndo = \"{name}\"\n"));
        for (key, (pick, wild, drop)) in keys.iter().zip(picks) {
            if !drop {
                t.push_str(&format!("{key} = {}\n", value(key, *pick, *wild)));
            }
        }
    }
    t
}

/// One of a few ways to damage a shipped file.
fn mutate(text: &str, how: usize, at: usize, pick: usize) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let k = at % lines.len().max(1);
    match how % 4 {
        0 => {
            lines.remove(k);
        }
        1 => lines.insert(k, lines[k].clone()),
        2 => {
            if let Some((key, _)) = lines[k].split_once('=') {
                lines[k] = format!("{key}= {}", VALUES[pick % VALUES.len()]);
            }
        }
        _ => lines.truncate(k),
    }
    lines.join("\n") + "\n"
}

/// Load, bound and (when both pass) run on the model, within a minute.
fn load_or_run(name: &str, text: &str) -> Result<(), TestCaseError> {
    let path = Path::new("/generated").join(name);
    let suite = SuiteFile::load(&root().join("tests/suite.toml")).expect("suite");
    let scn = match Scenario::parse(&path, text) {
        Ok(s) => s,
        Err(e) => {
            prop_assert!(e.line > 0 && e.path == path, "refused without a line: {e}\n{text}");
            return Ok(());
        }
    };
    let spec = scenario_spec(&suite.device.spec(), &scn);
    if let Err(e) = bounds::check(&scn, &spec.regions) {
        prop_assert!(e.line > 0, "refused without a line: {e}\n{text}");
        return Ok(());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let dir = tempfile::tempdir().expect("tempdir");
        let verdict = match model_target(&spec, Faults::default(), scn.init, dir.path()) {
            Ok(mut t) => judge(run_on(&scn, &mut t, false).0, &[]).verdict,
            Err(e) => Verdict::Error(e.to_string()),
        };
        let _ = tx.send(verdict);
    });
    let verdict = rx.recv_timeout(Duration::from_secs(60));
    prop_assert!(verdict.is_ok(), "hung for a minute:\n{text}");
    if let Ok(Verdict::Error(e)) = &verdict {
        prop_assert!(!e.contains("panicked"), "{e}\n{text}");
    }
    Ok(())
}

fn step_strategy() -> impl Strategy<Value = (usize, Picks)> {
    (0..KINDS.len(), prop::collection::vec((0usize..64, prop::bool::weighted(0.1), prop::bool::weighted(0.08)), 12))
}

proptest! {
    // Few shrink steps: a case that hangs costs a minute each time it is tried.
    #![proptest_config(ProptestConfig { cases: 1500, max_shrink_iters: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_scenario_files_are_refused_with_a_line_or_run_to_a_verdict(
        steps in prop::collection::vec(step_strategy(), 1..6),
        own_boot in prop::bool::weighted(0.2),
    ) {
        load_or_run("generated.toml", &render(&steps, own_boot))?;
    }

    #[test]
    fn damaged_shipped_files_are_refused_with_a_line_or_run_to_a_verdict(which in 0usize..64, how in 0usize..4, at in 0usize..200, pick in 0usize..64) {
        let mut files: Vec<_> = std::fs::read_dir(root().join("tests/scenarios")).expect("dir").flatten().map(|e| e.path()).collect();
        files.sort();
        // Scenarios that only QEMU can run, or that wait on purpose, are left out.
        files.retain(|p| ["fault-", "reply-before-commit", "many-mappings"].iter().all(|slow| !p.to_string_lossy().contains(slow)));
        let path = &files[which % files.len()];
        let text = std::fs::read_to_string(path).expect("read");
        load_or_run(&path.file_name().expect("name").to_string_lossy(), &mutate(&text, how, at, pick))?;
    }
}
