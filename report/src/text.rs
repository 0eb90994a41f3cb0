//! The human report: a progress line per scenario as it finishes, then the
//! evidence of what needs attention (every row with `--verbose`), the
//! summary and what to do next. Formatting only.

use anstream::println;
use shmem_judge::compare::Comparison;
use shmem_judge::scenario::ScenarioReport;
use shmem_judge::verdict::Verdict;
use shmem_judge::words::target_lines;

use super::attention::{Rerun, attention, print_attention};
use super::style::paint;
use shmem_host::vm::SuiteReport;

/// How many of the relay's last messages the human report shows under a
/// failing QEMU row (the JSON has them all, the log the last 16).
const TEXT_TAIL: usize = 6;

/// How the text report is told.
pub struct TextOpts {
    /// Every row's evidence, KNOWN-FAIL's too, and the whole table.
    pub verbose: bool,
    /// GitHub Actions annotations for what needs attention.
    pub github: bool,
    /// The command that reruns one scenario alone with this run's QEMU and options.
    pub rerun: Rerun,
}

/// The row's word: the worse of its two verdicts.
fn row_word(s: &ScenarioReport) -> &'static str {
    let rank = |v: &Verdict| match v {
        Verdict::Fail(_) => 5,
        Verdict::Error(_) => 4,
        Verdict::UnexpectedPass(_) => 3,
        Verdict::KnownFailure(_) => 2,
        Verdict::Skipped(_) => 1,
        Verdict::Pass => 0,
    };
    if rank(&s.qemu) >= rank(&s.model) { s.qemu.label() } else { s.model.label() }
}

/// One line of a finished scenario: its word, name, both verdicts and times.
pub fn progress_line(s: &ScenarioReport) -> String {
    format!(
        "{} {:<36} qemu {} {:>7.2}s  model {} {:>6.2}s",
        paint(row_word(s), -15),
        s.name,
        paint(s.qemu.label(), 15),
        s.qemu_time.as_secs_f64(),
        paint(s.model.label(), 10),
        s.model_time.as_secs_f64()
    )
}

/// A row's evidence: each target's lines, where QEMU and the model differ,
/// and the relay's last messages under a failing QEMU row.
fn print_evidence(s: &ScenarioReport) {
    let qemu_gone: Vec<String> = s.not_shown[0].iter().chain(&s.qemu_unseen).cloned().collect();
    for (target, v, inc, gone) in
        [("qemu", &s.qemu, s.qemu_inconclusive.as_slice(), &qemu_gone), ("model", &s.model, &[], &s.not_shown[1])]
    {
        for line in target_lines(v, inc, gone) {
            println!("    {target}: {}", line.replace('\n', "\n        "));
        }
    }
    for d in differences(s) {
        println!("    differs: {d}");
    }
    if let Some(w) = s.qemu_wire.as_ref().filter(|_| !s.qemu.ok()) {
        println!("    qemu: the relay's last {TEXT_TAIL} of {} messages:", w.messages.len() + w.left_out);
        for line in w.tail(TEXT_TAIL).lines() {
            println!("        {line}");
        }
    }
}

/// The report: the evidence of every row that needs attention (of every
/// row, table first, with `--verbose`; a KNOWN-FAIL is its progress line
/// otherwise), then the summary.
pub fn print_report(r: &SuiteReport, o: &TextOpts) {
    let shown: Vec<&ScenarioReport> = r.scenarios.iter().filter(|s| o.verbose || !s.ok()).collect();
    if !o.verbose && !shown.is_empty() {
        println!("\nfailures:");
    }
    for s in shown {
        println!("{}", progress_line(s));
        print_evidence(s);
    }
    println!();
    print_summary(r, o);
}

/// The run's first facts, its counts, and what needs attention.
fn print_summary(r: &SuiteReport, o: &TextOpts) {
    println!(
        "QEMU {} at {}{}, accel {}{}; known defects: {}",
        r.qemu.build,
        r.qemu.path.display(),
        r.qemu_note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default(),
        r.accel.name(),
        r.accel_note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default(),
        r.known_defects
    );
    let (mut pass, mut known, mut fail, mut skipped) = (0, 0, 0, 0);
    for v in r.scenarios.iter().flat_map(|s| [&s.qemu, &s.model]) {
        match v {
            Verdict::Pass => pass += 1,
            Verdict::KnownFailure(_) => known += 1,
            Verdict::Skipped(_) => skipped += 1,
            _ => fail += 1,
        }
    }
    println!("boot to agent ready {:.2}s, whole suite {:.2}s", r.boot_time.as_secs_f64(), r.suite_time.as_secs_f64());
    if let Some(p) = &r.kept_logs {
        println!("logs kept in {}", p.display());
    }
    println!("{known} known failures (listed defects of this QEMU build, matched by signature; --verbose shows them)");
    print_attention(&attention(r, &o.rerun), o.github);
    println!("vm-test: {} passed, {fail} failed, {skipped} skipped", pass + known);
}

/// Checks whose outcome differs between QEMU and the model.
pub fn differences(s: &ScenarioReport) -> Vec<String> {
    s.qemu_checks
        .iter()
        .filter_map(|q| {
            let m = s.model_checks.iter().find(|m| m.check == q.check)?;
            (m.passed != q.passed)
                .then(|| format!("{}: QEMU {} / model {}", q.check, passed_word(q.passed), passed_word(m.passed)))
        })
        .collect()
}

fn passed_word(p: bool) -> &'static str {
    if p { "passed" } else { "failed" }
}

/// The comparison as printed after both runs, the regressions last.
pub fn print_comparison(a: &SuiteReport, b: &SuiteReport, c: &Comparison, o: &TextOpts) {
    println!(
        "compare: A = QEMU {} ({}), B = QEMU {} ({})",
        a.qemu.build,
        a.qemu.path.display(),
        b.qemu.build,
        b.qemu.path.display()
    );
    for l in &c.lines {
        match l.split_once(": ") {
            Some((word @ ("REGRESSED" | "fixed"), rest)) => println!("  {}: {rest}", paint(word, 0)),
            _ => println!("  {l}"),
        }
    }
    print_attention(&super::attention::compare_attention(b, c, &o.rerun), o.github);
    println!(
        "compare: {} fixed, {} regressed, {} unmasked (B reached checks A never did), {} with changed evidence",
        c.fixed, c.regressed, c.unmasked, c.changed
    );
}
