//! The CI contract, checked the way CI meets it: this binary's `vm-test`
//! run as a child, each exit status in turn (0 passed, 1 a verdict failed,
//! 2 usage error, 3 could not run, 130 interrupted), the JSON reports
//! against `docs/report.schema.json`, a FAIL's summary (reason, rerun
//! command, logs) and its rerun pasted into a shell, colour on a terminal
//! only and never with `NO_COLOR`, and `--compare --junit` of a
//! regression. Runs `cargo xtask test`'s last step; judges only its own
//! expectations of the CLI.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::checks::{self, Checks};
use crate::exit;
use crate::exit::Failure;
use crate::opts::{ContractArgs, GuestOpts};
use crate::shell::root;

/// The failing scenario's directory and name (`tests/contract`).
const FAILING_DIR: &str = "tests/contract";
const FAILING: &str = "contract-wrong-digest";

/// The checks' tally, and what every vm-test child gets: the kernel and
/// accelerator options (`guest`) and, unless it runs a QEMU of its own, the
/// QEMU in use.
struct Said {
    checks: Checks,
    guest: Vec<String>,
    qemu: String,
}

impl Said {
    fn say(&mut self, what: &str, held: bool, seen: &str) {
        self.checks.say(what, held, seen);
    }

    /// `guest` and `--qemu` the QEMU in use.
    fn with_qemu(&self) -> Vec<String> {
        self.guest.iter().cloned().chain(["--qemu".to_string(), self.qemu.clone()]).collect()
    }
}

fn xtask() -> Result<Command, String> {
    let mut c = Command::new(std::env::current_exe().map_err(|e| format!("locating the xtask binary: {e}"))?);
    c.current_dir(root()).stdin(Stdio::null()).env_remove("NO_COLOR").env_remove("GITHUB_ACTIONS");
    Ok(c)
}

/// `args` of vm-test on a terminal (`script` gives it a pseudo-terminal).
fn on_terminal(args: &[&str], guest: &[String], no_color: bool) -> Result<(u8, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let line = std::iter::once(exe.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .chain(guest.iter().cloned())
        .map(|w| shmem_report::quoted(&w))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = Command::new("script");
    c.args(["-qefc", &line, "/dev/null"]).current_dir(root()).stdin(Stdio::null()).env_remove("GITHUB_ACTIONS");
    if no_color {
        c.env("NO_COLOR", "1")
    } else {
        c.env_remove("NO_COLOR")
    };
    checks::run(&mut c)
}

/// The report's words without their styles.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// Whether the JSON report at `path` validates against the published schema; the errors.
fn validates(path: &Path) -> Result<Vec<String>, String> {
    let schema_path = root().join("docs/report.schema.json");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&schema_path).map_err(|e| format!("{}: {e}", schema_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", schema_path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| format!("the schema does not compile: {e}"))?;
    Ok(validator.iter_errors(&doc).map(|e| format!("{}: {e}", e.instance_path)).collect())
}

/// The scenarios a JSON report ran, but the shared boot's row.
fn ran(path: &Path) -> Vec<String> {
    let doc = checks::report(path);
    let names = doc["scenarios"].as_array().cloned().unwrap_or_default();
    names.iter().filter_map(|s| s["name"].as_str()).filter(|n| *n != "shared-boot").map(str::to_string).collect()
}

/// Every check of the contract; whether all held.
pub fn check(guest: &GuestOpts, qemu: &Path) -> Result<bool, String> {
    let dir = tempfile::Builder::new().prefix("contract-").tempdir().map_err(|e| e.to_string())?;
    let json = |name: &str| dir.path().join(name).display().to_string();
    let guest = GuestOpts { qemu: None, ..guest.clone() }.to_args();
    let mut s = Said { checks: Checks::new("contract"), guest, qemu: qemu.display().to_string() };
    passing_and_usage(&mut s, &json("pass.json"))?;
    failing_and_rerun(&mut s, (&json("fail.json"), &json("rerun.json"), &json("entry.json")))?;
    could_not_run_and_interrupted(&mut s, &json("error.json"))?;
    compare_junit(&mut s, dir.path(), qemu)?;
    Ok(s.checks.ok)
}

/// 0 on a terminal with NO_COLOR (no styles), the report valid; 2 for usage errors.
fn passing_and_usage(s: &mut Said, json: &str) -> Result<(), String> {
    let (code, out) =
        on_terminal(&["vm-test", "--filter", "rw-basic", "--exact", "--json", json], &s.with_qemu(), true)?;
    s.say("a passing run exits 0", code == exit::PASSED, &out);
    s.say("NO_COLOR=1 on a terminal: no escape codes", !out.contains('\x1b'), &out);
    let errors = validates(Path::new(json))?;
    s.say("its --json validates against docs/report.schema.json", errors.is_empty(), &errors.join("\n"));
    s.say("--filter rw-basic --exact ran rw-basic alone", ran(Path::new(json)) == ["rw-basic"], &out);
    for args in [&["vm-test", "--qemu", "a", "--qemu", "b"][..], &["vm-test", "--bless", "--known-defects", "none"]] {
        let mut c = xtask()?;
        let (code, out) = checks::run(c.args(args))?;
        s.say(&format!("{} exits 2 (usage)", args.join(" ")), code == exit::USAGE, &out);
    }
    Ok(())
}

/// 1 for a FAIL, on a terminal in colour, its summary leading to the fix;
/// its rerun command, pasted into a shell, reruns just it (piped: plain).
fn failing_and_rerun(s: &mut Said, (json, rerun_json, entry_json): (&str, &str, &str)) -> Result<(), String> {
    let (code, out) = on_terminal(&["vm-test", "--scenarios", FAILING_DIR, "--json", json], &s.with_qemu(), false)?;
    s.say("a run with a FAIL exits 1", code == exit::VERDICT_FAILED, &out);
    s.say("on a terminal the verdicts are in colour", out.contains("\x1b["), &out);
    let text = plain(&out);
    let summary = text.split_once("needs attention").map(|(_, rest)| rest).unwrap_or_default();
    let named = summary.contains(&format!("FAIL {FAILING} (qemu): digest-is-wrong-on-purpose"));
    s.say("the summary names the FAIL with its reason", named, &text);
    let logs = summary.lines().find_map(|l| l.trim().strip_prefix("logs:")).map(str::trim);
    s.say("... and its log directory", logs.is_some_and(|l| Path::new(l).is_dir()), &text);
    s.say("... and an entry to list it by", summary.contains("[[defect]]"), &text);
    let errors = validates(Path::new(json))?;
    s.say("the failing run's --json validates", errors.is_empty(), &errors.join("\n"));
    let Some(rerun) = summary.lines().find_map(|l| l.trim().strip_prefix("rerun:")).map(str::trim) else {
        s.say("... and the command that reruns it", false, &text);
        return Ok(());
    };
    // Pasted as printed; `cargo xtask` is this binary here.
    let pasted = rerun.replacen("cargo xtask", "\"$XTASK\"", 1);
    let mut sh = Command::new("sh");
    sh.args(["-c", &format!("{pasted} --json {rerun_json}")]).current_dir(root()).stdin(Stdio::null());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (code, out) = checks::run(sh.env("XTASK", &exe).env_remove("NO_COLOR"))?;
    s.say(&format!("the rerun command ({rerun}) exits 1"), code == exit::VERDICT_FAILED, &out);
    s.say("... and reruns just that scenario", ran(Path::new(rerun_json)) == [FAILING], &out);
    s.say("piped, the report has no escape codes", !out.contains('\x1b'), &out);
    pasted_entry(s, summary, (&pasted, entry_json))
}

/// The entry the summary offers, pasted into a list of its own: the
/// rerun judged by it has QEMU's row KNOWN-FAIL.
fn pasted_entry(s: &mut Said, summary: &str, (pasted, json): (&str, &str)) -> Result<(), String> {
    let entry: Vec<&str> = summary
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "[[defect]]")
        .take_while(|l| !l.is_empty() && !l.starts_with("FAIL") && !l.starts_with("vm-test:"))
        .collect();
    let list = Path::new(json).with_extension("toml");
    std::fs::write(&list, entry.join("\n") + "\n").map_err(|e| format!("write {}: {e}", list.display()))?;
    let mut sh = Command::new("sh");
    sh.args(["-c", &format!("{pasted} --known-defects {} --json {json}", list.display())]).current_dir(root());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (_, out) = checks::run(sh.env("XTASK", exe).stdin(Stdio::null()))?;
    let doc = checks::report(Path::new(json));
    let row = doc["scenarios"].as_array().into_iter().flatten().find(|r| r["name"] == FAILING);
    let known = row.is_some_and(|r| r["qemu"]["verdict"] == "KNOWN-FAIL");
    s.say(
        "the entry it offers, pasted into a list, makes QEMU's row KNOWN-FAIL",
        known,
        &format!("{}\n{out}", entry.join("\n")),
    );
    Ok(())
}

/// 3 for a QEMU that cannot run (its JSON still written, valid); 130 for
/// SIGINT during a run, within a minute, nothing left running.
fn could_not_run_and_interrupted(s: &mut Said, json: &str) -> Result<(), String> {
    let mut c = xtask()?;
    let (code, out) =
        checks::run(c.args(["vm-test", "--qemu", "/nonexistent/qemu-system-x86_64", "--json", json]).args(&s.guest))?;
    s.say("a QEMU that cannot run: exit 3", code == exit::COULD_NOT_RUN, &out);
    let errors = validates(Path::new(json))?;
    s.say("... and its --json (kind error) validates", errors.is_empty(), &errors.join("\n"));
    let mut c = xtask()?;
    c.args(["vm-test", "--filter", "reply-before-commit", "--exact"]).args(s.with_qemu());
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().map_err(|e| format!("starting vm-test: {e}"))?;
    std::thread::sleep(Duration::from_secs(4));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(st) => break Some(st),
            None if start.elapsed() > Duration::from_secs(60) => break None,
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let code = status.and_then(|st| st.code());
    s.say(
        "SIGINT during a run: exit 130 within a minute",
        code == Some(i32::from(exit::INTERRUPTED)),
        &format!("{code:?}"),
    );
    Ok(())
}

/// `--compare --junit` of a regression: A commits before it replies
/// (emulated), B is QEMU as it is; the JUnit file fails where the run does.
fn compare_junit(s: &mut Said, dir: &Path, qemu: &Path) -> Result<(), String> {
    let a = dir.join("qemu-commits-first");
    crate::shell::exec_wrapper(&a, qemu)?;
    let junit = dir.join("compare.xml");
    let mut c = xtask()?;
    c.env(shmem_host::vm::boot::EMULATE_VAR, format!("commit-before-reply@{}", a.display()));
    let q = qemu.display().to_string();
    let a = a.display().to_string();
    let j = junit.display().to_string();
    let json = dir.join("compare.json");
    let js = json.display().to_string();
    let html = dir.join("compare.html");
    let hs = html.display().to_string();
    let args = [
        "vm-test",
        "--compare",
        &q,
        "--filter",
        "reply-before-commit",
        "--exact",
        "--compare-budget",
        "0",
        "--junit",
        &j,
        "--json",
        &js,
        "--html",
        &hs,
    ];
    let (code, out) = checks::run(c.args(args).args(&s.guest).args(["--qemu", &a]))?;
    s.say("--compare with a regression exits 1", code == exit::VERDICT_FAILED, &out);
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    let failing = xml.contains("name=\"reply-before-commit\">\n    <failure message=\"REGRESSED: reply-before-commit");
    s.say("... and its --junit fails reply-before-commit as REGRESSED", failing, &xml);
    let errors = validates(&json)?;
    s.say("... and its --json (kind compare) validates", errors.is_empty(), &errors.join("\n"));
    let page = std::fs::read_to_string(&html).unwrap_or_default();
    let sides = page.contains("<div class=\"sides\">") && page.contains("<h2>A: QEMU") && page.contains("<h2>B: QEMU");
    let marked = page.contains("<li class=\"attention\">REGRESSED: reply-before-commit");
    s.say("... and its --html has A and B side by side, the regression marked", sides && marked, &page);
    Ok(())
}

/// `contract`: the QEMU vm-test would use, then every check.
pub fn command(a: &ContractArgs) -> Result<bool, Failure> {
    Ok(check(&a.guest, &crate::qemu::in_use(&a.guest)?.path)?)
}
