//! A judgement in words, the same for every runner's report: a verdict's
//! lines (each failed check with its known defect, or why it fails
//! differently), the inconclusive entries and the entries that did not show.

use crate::check::facts_text;
use crate::verdict::{Judged, Verdict};

/// What a verdict says beyond its label, one line per failed check or entry.
pub fn verdict_lines(v: &Verdict) -> Vec<String> {
    match v {
        Verdict::Fail(j) | Verdict::KnownFailure(j) => j.iter().map(judged_line).collect(),
        Verdict::UnexpectedPass(msgs) => msgs.clone(),
        Verdict::Error(e) => vec![format!("error: {e}")],
        Verdict::Pass | Verdict::Skipped(_) => Vec::new(),
    }
}

/// A verdict's lines, then the inconclusive entries and the listed entries
/// that did not show behind a FAIL (listed whatever the verdict).
pub fn target_lines(v: &Verdict, inconclusive: &[Judged], not_shown: &[String]) -> Vec<String> {
    let gone = not_shown.iter().map(|g| format!("also: {g}"));
    verdict_lines(v).into_iter().chain(inconclusive.iter().map(inconclusive_line)).chain(gone).collect()
}

/// A listed intermittent defect whose check passed in a run too short to tell a fix.
fn inconclusive_line(j: &Judged) -> String {
    format!(
        "{} inconclusive: {} [known defect `{}` stays listed]",
        j.check.check,
        j.check.evidence,
        j.defect.as_deref().unwrap_or("?")
    )
}

fn judged_line(j: &Judged) -> String {
    let mut line = format!("{} failed: {}", j.check.check, j.check.evidence);
    match (&j.defect, &j.measured_on) {
        (Some(id), Some(on)) => line.push_str(&format!(" [known defect `{id}`, measured on {on}]")),
        (Some(id), None) => line.push_str(&format!(" [known defect `{id}`]")),
        _ => {}
    }
    match (&j.listed, &j.worse) {
        (Some((id, _)), Some(worse)) => {
            line.push_str(&format!("\nlisted as known defect `{id}`, but worse than listed: {worse}"))
        }
        (Some((id, sig)), None) => line.push_str(&format!(
            "\nlisted as known defect `{id}` with signature {{{sig}}}, but seen {{{}}}: it fails differently",
            facts_text(&j.check.facts)
        )),
        _ => {}
    }
    if let Some((id, listed_for)) = &j.listed_elsewhere {
        line.push_str(&format!("\nmatches `{id}`, listed for {listed_for}: if this build has the same defect, `--bless` adds it to the entry"));
    }
    line
}
