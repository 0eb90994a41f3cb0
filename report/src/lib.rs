//! Reports of a suite run: the progress lines, the human report and its
//! summary of what needs attention, `--json`, `--junit`, `--compare` and the
//! benchmark summary. Formatting only: verdicts and comparisons are made by
//! the judge (`shmem_judge`). Strings are the edge here.

mod attention;
pub mod backend;
mod bench;
pub mod html;
mod json;
mod junit;
mod style;
mod text;

pub use attention::{Attention, Rerun, annotation, attention, compare_attention, quoted};
pub use bench::bench_report;
pub use json::{FORMAT, json_compare, json_error, json_report};
pub use junit::{junit_compare, junit_error, junit_report};
pub use style::{Word, paint};

/// A comparison line's word and what follows it, and the scenario it is
/// about: `REGRESSED: NAME/check: ...` gives ("REGRESSED", "NAME", "NAME/check: ...").
/// A line of facts (`replicated counts: ...`) gives a "scenario" no run has.
pub(crate) fn compare_line(line: &str) -> Option<(&str, &str, &str)> {
    let (word, rest) = line.split_once(": ")?;
    Some((word, rest.split(['/', ':']).next().unwrap_or_default(), rest))
}
pub use text::{TextOpts, differences, print_comparison, print_report, progress_line};
