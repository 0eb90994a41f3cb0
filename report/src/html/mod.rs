//! `--html`: one self-contained page (no request to a network, readable
//! offline and as a CI artifact): the verdict table in the report's words
//! and colours, a filter for what needs attention, every check with its
//! evidence, the sequence chart of every scenario the relay recorded, and
//! the probe's plots; with `--compare`, A and B side by side. Formatting
//! only (maud templates, inline SVG and CSS).

mod chart;
mod plots;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use shmem_host::conformance::judged::SessionVerdict;
use shmem_host::vm::SuiteReport;
use shmem_judge::check::CheckResult;
use shmem_judge::compare::Comparison;
use shmem_judge::scenario::ScenarioReport;
use shmem_judge::words::target_lines;

/// `s` safe inside HTML and SVG text and attributes.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = include_str!("style.css");

fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                input #attention-only type="checkbox";
                label for="attention-only" { "show only what needs attention" }
                main { (body) }
            }
        }
    }
    .into_string()
}

fn word(label: &str) -> Markup {
    html! { span class={ "verdict " (label) } { (label) } }
}

/// The verdict table of one run.
fn table(r: &SuiteReport, side: &str) -> Markup {
    html! {
        table.verdicts {
            tr { th { "scenario" } th { "QEMU" } th { "model" } th { "QEMU s" } th { "model s" } }
            @for s in &r.scenarios {
                tr class=(if !s.ok() { "row attention" } else { "row" }) {
                    td { a href={ "#" (side) "-" (s.name) } { (s.name) } }
                    td { (word(s.qemu.label())) } td { (word(s.model.label())) }
                    td.num { (format!("{:.2}", s.qemu_time.as_secs_f64())) }
                    td.num { (format!("{:.2}", s.model_time.as_secs_f64())) }
                }
            }
        }
    }
}

fn checks(title: &str, checks: &[CheckResult]) -> Markup {
    html! {
        @if !checks.is_empty() {
            h4 { (title) }
            table.checks {
                @for c in checks {
                    tr { td { (word(if c.passed { "PASS" } else { "FAIL" })) } td.name { (c.check) } td { (c.evidence) } }
                }
            }
        }
    }
}

/// One scenario of one run: its verdict lines, checks, chart and plots.
fn scenario(s: &ScenarioReport, side: &str) -> Markup {
    let lines = target_lines(&s.qemu, &s.qemu_inconclusive, &s.not_shown[0]);
    let probes: Vec<Markup> = s.qemu_checks.iter().filter_map(plots::probe_plots).collect();
    html! {
        section id={ (side) "-" (s.name) } class=(if !s.ok() { "scenario attention" } else { "scenario" }) {
            h3 { (s.name) " " (word(s.qemu.label())) " " (word(s.model.label())) }
            p.description { (s.description) }
            @for l in &lines { pre.line { (l) } }
            @if !probes.is_empty() {
                h4 { "the probe" }
                @for p in &probes { (p) }
            }
            @if let Some(w) = &s.qemu_wire {
                h4 { "the conversation, as the relay recorded it (" (w.messages.len() + w.left_out) " messages)" }
                (chart::chart(w))
            }
            details { summary { "every check" } (checks("QEMU", &s.qemu_checks)) (checks("model", &s.model_checks)) }
        }
    }
}

fn run(r: &SuiteReport, side: &str) -> Markup {
    let failed = r.scenarios.iter().filter(|s| !s.ok()).count();
    html! {
        div.run {
            h2 { (side) ": QEMU " (r.qemu.build) }
            p { "at " (r.qemu.path.display().to_string()) ", accel " (r.accel.name()) "; known defects: " (r.known_defects) }
            p { (r.scenarios.len()) " scenarios, " (failed) " need attention; boot to agent ready "
                (format!("{:.2}", r.boot_time.as_secs_f64())) " s, whole suite " (format!("{:.2}", r.suite_time.as_secs_f64())) " s" }
            (table(r, side))
            @for s in &r.scenarios { (scenario(s, side)) }
        }
    }
}

/// The page of a suite run.
pub fn suite_html(r: &SuiteReport) -> String {
    page("vm-test report", html! { h1 { "vm-test" } (run(r, "run")) })
}

/// The page of a `--compare` run: what changed, then A and B side by side.
pub fn compare_html(a: &SuiteReport, b: &SuiteReport, c: &Comparison) -> String {
    let body = html! {
        h1 { "vm-test --compare" }
        p { (c.fixed) " fixed, " (c.regressed) " regressed, " (c.unmasked) " unmasked, " (c.changed) " with changed evidence" }
        ul.compare {
            @for l in &c.lines {
                @let w = crate::compare_line(l).map_or("", |(word, ..)| word);
                li class=(if w == "REGRESSED" { "attention" } else { "" }) { (l) }
            }
        }
        div.sides { (run(a, "A")) (run(b, "B")) }
    };
    page("vm-test --compare report", body)
}

/// The page of a run that could not start.
pub fn error_html(error: &str) -> String {
    page("vm-test report", html! { h1 { "vm-test could not run" } pre.line { (error) } })
}

/// The page of a backend-test run: each session, its verdict and checks.
pub fn backend_html(sessions: &[SessionVerdict]) -> String {
    let body = html! {
        h1 { "backend-test" }
        table.verdicts {
            tr { th { "session" } th { "verdict" } th { "backend" } }
            @for s in sessions {
                tr class=(if s.judgement.verdict.ok() { "row" } else { "row attention" }) {
                    td { (s.session) } td { (word(s.judgement.verdict.label())) } td { (s.backend) }
                }
            }
        }
        @for s in sessions {
            section class=(if s.judgement.verdict.ok() { "scenario" } else { "scenario attention" }) {
                h3 { (s.session) " " (word(s.judgement.verdict.label())) }
                @for l in target_lines(&s.judgement.verdict, &s.judgement.inconclusive, &s.judgement.not_shown) {
                    pre.line { (l) }
                }
                details { summary { "every check" } (checks("backend", &s.checks)) }
            }
        }
    };
    page("backend-test report", body)
}
