//! `--junit`: the suite's report (or a comparison's) as JUnit XML, a test
//! case per scenario and target. Formatting only.

use shmem_judge::compare::Comparison;

use shmem_host::vm::SuiteReport;
use shmem_judge::verdict::Verdict;
use shmem_judge::words::target_lines;

fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => format!("&#{};", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// `--junit`: one test case per scenario and target; known failures pass
/// with their evidence in system-out, so CI stays green only when it should.
pub fn junit_report(r: &SuiteReport) -> String {
    let mut cases = String::new();
    let mut failures = 0;
    for s in &r.scenarios {
        for (target, v, checks, t, inc, gone) in [
            ("qemu", &s.qemu, &s.qemu_checks, s.qemu_time, s.qemu_inconclusive.as_slice(), &s.not_shown[0]),
            ("model", &s.model, &s.model_checks, s.model_time, &[], &s.not_shown[1]),
        ] {
            let detail: String = checks
                .iter()
                .map(|c| format!("{} {}: {}\n", if c.passed { "PASS" } else { "FAIL" }, c.check, c.evidence))
                .collect();
            cases.push_str(&format!(
                "  <testcase classname=\"vm-test.{target}\" name=\"{}\" time=\"{:.3}\">\n",
                xml(&s.name),
                t.as_secs_f64()
            ));
            if !v.ok() {
                failures += 1;
                let msg = match v {
                    Verdict::Error(e) => e.clone(),
                    _ => format!("{}: {}", v.label(), target_lines(v, inc, gone).join("; ")),
                };
                let log = if target == "qemu" { s.qemu_log.clone().unwrap_or_default() } else { String::new() };
                cases.push_str(&format!(
                    "    <failure message=\"{}\">{}{}</failure>\n",
                    xml(&msg),
                    xml(&detail),
                    xml(&log)
                ));
            } else if let Verdict::Skipped(why) = v {
                cases.push_str(&format!("    <skipped message=\"{}\"/>\n", xml(why)));
            } else if matches!(v, Verdict::KnownFailure(_)) {
                let known = target_lines(v, inc, gone).join("\n");
                cases.push_str(&format!(
                    "    <system-out>KNOWN-FAIL (listed defects, matched by signature)\n{}\n{}</system-out>\n",
                    xml(&known),
                    xml(&detail)
                ));
            }
            cases.push_str("  </testcase>\n");
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"vm-test\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n{cases}</testsuite>\n",
        r.scenarios.len() * 2,
        r.suite_time.as_secs_f64()
    )
}

/// `--junit` for a run that could not start: one failing test case.
pub fn junit_error(error: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"vm-test\" tests=\"1\" failures=\"1\">\n  <testcase classname=\"vm-test\" name=\"run\">\n    <failure message=\"{}\"/>\n  </testcase>\n</testsuite>\n",
        xml(error)
    )
}

/// `--junit` of a `--compare` run: one test case per scenario of B, failing
/// when the comparison calls it REGRESSED, with every line about it in
/// system-out; the lines about no one scenario (replicated counts, boots)
/// in the suite's system-out. It fails exactly when the run does.
pub fn junit_compare(b: &SuiteReport, c: &Comparison) -> String {
    let about = |name: &str, l: &str| crate::compare_line(l).is_some_and(|(_, scenario, _)| scenario == name);
    let mut cases = String::new();
    for s in &b.scenarios {
        let lines: Vec<&String> = c.lines.iter().filter(|l| about(&s.name, l)).collect();
        cases.push_str(&format!("  <testcase classname=\"vm-test.compare\" name=\"{}\">\n", xml(&s.name)));
        let regressed: Vec<&&String> = lines.iter().filter(|l| l.starts_with("REGRESSED: ")).collect();
        if let Some(first) = regressed.first() {
            let all: String = regressed.iter().map(|l| format!("{l}\n")).collect();
            cases.push_str(&format!("    <failure message=\"{}\">{}</failure>\n", xml(first), xml(&all)));
        }
        if !lines.is_empty() {
            let out: String = lines.iter().map(|l| format!("{l}\n")).collect();
            cases.push_str(&format!("    <system-out>{}</system-out>\n", xml(&out)));
        }
        cases.push_str("  </testcase>\n");
    }
    let unattributed: Vec<&String> =
        c.lines.iter().filter(|l| !b.scenarios.iter().any(|s| about(&s.name, l))).collect();
    if let Some(first) = unattributed.iter().find(|l| l.starts_with("REGRESSED: ")) {
        let msg = xml(first);
        cases.push_str(&format!("  <testcase classname=\"vm-test.compare\" name=\"other\">\n    <failure message=\"{msg}\"/>\n  </testcase>\n"));
    }
    let rest: String = unattributed.iter().map(|l| format!("{l}\n")).collect();
    let (tests, failures) = (cases.matches("<testcase ").count(), cases.matches("<failure ").count());
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"vm-test-compare\" tests=\"{tests}\" failures=\"{failures}\">\n{cases}  <system-out>{}</system-out>\n</testsuite>\n",
        xml(&rest)
    )
}
