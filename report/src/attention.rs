//! What needs attention after a run, each with what to do next: its
//! one-line reason, the command that reruns it alone, its log directory,
//! and for a failure no entry names a known-defect entry ready to paste.
//! GitHub Actions annotations of the same. Formatting only.

use std::path::{Path, PathBuf};

use anstream::println;
use shmem_judge::compare::Comparison;
use shmem_judge::scenario::ScenarioReport;
use shmem_judge::verdict::{Judged, Verdict};
use shmem_judge::words::target_lines;

use super::style::paint;
use shmem_host::vm::{SHARED_BOOT, SuiteReport};

/// The longest reason a summary line shows (the evidence above has it all).
const REASON: usize = 160;

/// The command that reruns one scenario alone: `prefix` (this run's
/// command with its accelerator and lists), the QEMU it ran, and the
/// scenario's exact name.
pub struct Rerun {
    pub prefix: String,
}

impl Rerun {
    /// The whole suite for the shared boot's row (every shared scenario needs it).
    fn of(&self, qemu: &Path, scenario: &str) -> String {
        let suite = format!("{} --qemu {}", self.prefix, quoted(&qemu.display().to_string()));
        if scenario == SHARED_BOOT {
            return suite;
        }
        format!("{suite} --filter {} --exact", quoted(scenario))
    }
}

/// `s` as one shell word.
pub fn quoted(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// One scenario that needs attention.
pub struct Attention {
    /// FAIL, ERROR, UNEXPECTED-PASS, REGRESSED.
    pub word: &'static str,
    pub scenario: String,
    /// `qemu`, `model`, or `B` (a comparison).
    pub target: &'static str,
    pub reason: String,
    pub rerun: String,
    pub logs: Option<PathBuf>,
    /// For a QEMU failure no entry names: an entry to list it by.
    pub entry: Option<String>,
}

fn first_line(lines: &[String]) -> String {
    let line = lines.first().map(|l| l.lines().next().unwrap_or_default()).unwrap_or_default();
    if line.chars().count() > REASON {
        format!("{}...", line.chars().take(REASON).collect::<String>())
    } else {
        line.into()
    }
}

/// The scenario's own log directory in the kept run (an own boot's), else the run's.
fn logs_of(r: &SuiteReport, scenario: &str) -> Option<PathBuf> {
    let kept = r.kept_logs.as_ref()?;
    let own = kept.join(scenario);
    Some(if own.is_dir() { own } else { kept.clone() })
}

/// Every row whose QEMU or model verdict fails the run, in the report's order.
pub fn attention(r: &SuiteReport, rerun: &Rerun) -> Vec<Attention> {
    let mut out = Vec::new();
    for s in &r.scenarios {
        for (target, v) in [("qemu", &s.qemu), ("model", &s.model)] {
            if v.ok() {
                continue;
            }
            let inc = if target == "qemu" { s.qemu_inconclusive.as_slice() } else { &[] };
            out.push(Attention {
                word: v.label(),
                scenario: s.name.clone(),
                target,
                reason: first_line(&target_lines(v, inc, &[])),
                rerun: rerun.of(&r.qemu.path, &s.name),
                logs: logs_of(r, &s.name),
                entry: if target == "qemu" { entry(s, r) } else { None },
            });
        }
    }
    out
}

/// The regressions of a comparison, by scenario, with B's rerun and logs.
pub fn compare_attention(b: &SuiteReport, c: &Comparison, rerun: &Rerun) -> Vec<Attention> {
    let regressed = c.lines.iter().filter_map(|l| crate::compare_line(l)).filter(|(word, ..)| *word == "REGRESSED");
    regressed
        .map(|(_, scenario, rest)| {
            let scenario = scenario.to_string();
            let known = b.scenarios.iter().any(|s| s.name == scenario);
            Attention {
                word: "REGRESSED",
                reason: first_line(&[rest.to_string()]),
                rerun: rerun.of(&b.qemu.path, if known { &scenario } else { SHARED_BOOT }),
                logs: logs_of(b, &scenario),
                scenario,
                target: "B",
                entry: None,
            }
        })
        .collect()
}

/// An entry of `tests/known-defects.toml` for each QEMU failure that no
/// entry names (listed, listed elsewhere, or worse than listed), ready to
/// paste: its signature is every fact the check recorded.
fn entry(s: &ScenarioReport, r: &SuiteReport) -> Option<String> {
    let Verdict::Fail(judged) = &s.qemu else { return None };
    let unnamed: Vec<&Judged> = judged
        .iter()
        .filter(|j| j.defect.is_none() && j.listed.is_none() && j.listed_elsewhere.is_none() && j.worse.is_none())
        .collect();
    let entries: Vec<String> = unnamed.iter().map(|j| entry_text(&s.name, j, r)).collect();
    (!entries.is_empty()).then(|| entries.join("\n"))
}

fn entry_text(scenario: &str, j: &Judged, r: &SuiteReport) -> String {
    let c = &j.check;
    // Each value as a TOML literal (quoted and escaped).
    let lit = |v: &str| toml::Value::String(v.to_string()).to_string();
    let signature: Vec<String> = c.facts.iter().map(|(k, v)| format!("{k} = {}", lit(&v.to_string()))).collect();
    [
        "[[defect]]".to_string(),
        format!("id = {}", lit(&format!("{scenario}-{}", c.check.replace('/', "-")))),
        format!("scenario = {}", lit(scenario)),
        format!("check = {}", lit(&c.check)),
        format!("qemu = [{}]", lit(&r.qemu.build)),
        format!("accel = [{}]", lit(r.accel.name())),
        format!("signature = {{ {} }}", signature.join(", ")),
        format!("evidence = {}", lit(&c.evidence)),
    ]
    .join("\n")
}

/// The summary's list: each item with its reason, rerun command and logs;
/// an unnamed failure's entry; annotations on GitHub Actions.
pub(super) fn print_attention(items: &[Attention], github: bool) {
    if items.is_empty() {
        return;
    }
    println!("needs attention ({}):", items.len());
    for a in items {
        println!("  {} {} ({}): {}", paint(a.word, 0), a.scenario, a.target, a.reason);
        println!("      rerun: {}", a.rerun);
        if let Some(l) = &a.logs {
            println!("      logs:  {}", l.display());
        }
        if let Some(e) = &a.entry {
            println!(
                "      no known-defect entry names it; if it is a QEMU defect, list it in tests/known-defects.toml"
            );
            println!("      (keep the signature's facts that identify it, write what it is in evidence):");
            for line in e.lines() {
                println!("        {line}");
            }
        }
    }
    if github {
        for a in items {
            std::println!("{}", annotation(a));
        }
    }
}

/// A GitHub Actions `::error` line (its message escaped as the runner wants).
pub fn annotation(a: &Attention) -> String {
    let esc = |s: &str| s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let prop = |s: &str| esc(s).replace(':', "%3A").replace(',', "%2C");
    let title = prop(&format!("{} {} ({})", a.word, a.scenario, a.target));
    let logs = a.logs.as_ref().map(|l| format!("\nlogs: {}", l.display())).unwrap_or_default();
    format!("::error title={title}::{}", esc(&format!("{}\nrerun: {}{logs}", a.reason, a.rerun)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_quoted_for_the_shell_only_when_it_must_be() {
        assert_eq!(quoted("rw-basic"), "rw-basic");
        assert_eq!(quoted("it's here"), "'it'\\''s here'");
        let r = Rerun { prefix: "cargo xtask vm-test --accel tcg".into() };
        let q = Path::new("/opt/my qemu");
        assert_eq!(
            r.of(q, "rw-basic"),
            "cargo xtask vm-test --accel tcg --qemu '/opt/my qemu' --filter rw-basic --exact"
        );
        assert_eq!(r.of(q, SHARED_BOOT), "cargo xtask vm-test --accel tcg --qemu '/opt/my qemu'");
    }

    #[test]
    fn an_annotation_keeps_its_message_on_one_line() {
        let a = Attention {
            word: "FAIL",
            scenario: "rw-basic".into(),
            target: "qemu",
            reason: "ack 1: 100% wrong\nsecond".into(),
            rerun: "cargo xtask vm-test --filter rw-basic --exact".into(),
            logs: None,
            entry: None,
        };
        let line = annotation(&a);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.starts_with("::error title=FAIL rw-basic (qemu)::ack 1: 100%25 wrong%0Asecond%0Arerun: cargo"),
            "{line}"
        );
    }
}
