//! The backend test's report: one line per session and verdict, the failed
//! checks under it; `--json` and `--junit`. Formats; decides nothing.

use shmem_host::conformance::judged::SessionVerdict;
use shmem_judge::words::target_lines;

pub fn print(sessions: &[SessionVerdict]) {
    for s in sessions {
        println!("{:<44} {:<16} {}", s.session, s.judgement.verdict.label(), s.backend);
        for l in target_lines(&s.judgement.verdict, &s.judgement.inconclusive, &s.judgement.not_shown) {
            for (i, part) in l.lines().enumerate() {
                println!("    {}{part}", if i == 0 { "" } else { "  " });
            }
        }
    }
    let bad = sessions.iter().filter(|s| !s.judgement.verdict.ok()).count();
    println!("backend-test: {} sessions, {bad} not ok", sessions.len());
}

/// `--json` of backend-test (`format` as vm-test's).
pub fn json(sessions: &[SessionVerdict]) -> String {
    let v: Vec<serde_json::Value> = sessions
        .iter()
        .map(|s| {
            serde_json::json!({
                "backend": s.backend,
                "session": s.session,
                "verdict": s.judgement.verdict.label(),
                "lines": target_lines(&s.judgement.verdict, &s.judgement.inconclusive, &s.judgement.not_shown),
                "checks": s.checks,
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "format": crate::FORMAT, "kind": "backend-test", "sessions": v }))
        .unwrap_or_default()
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn junit(sessions: &[SessionVerdict]) -> String {
    let failures = sessions.iter().filter(|s| !s.judgement.verdict.ok()).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"backend-test\" tests=\"{}\" failures=\"{failures}\">\n",
        sessions.len()
    );
    for s in sessions {
        let name = format!("{} ({})", s.session, s.backend);
        out.push_str(&format!("  <testcase classname=\"backend-test\" name=\"{}\">", xml(&name)));
        let lines = target_lines(&s.judgement.verdict, &s.judgement.inconclusive, &s.judgement.not_shown).join("\n");
        if !s.judgement.verdict.ok() {
            out.push_str(&format!("<failure message=\"{}\">{}</failure>", s.judgement.verdict.label(), xml(&lines)));
        } else if !lines.is_empty() {
            out.push_str(&format!("<system-out>{} {}</system-out>", s.judgement.verdict.label(), xml(&lines)));
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("</testsuite>\n");
    out
}
