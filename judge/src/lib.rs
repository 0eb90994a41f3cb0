//! The judge: what a recorded run means, for every runner (vm-test's QEMU
//! and model rows, backend-test's sessions, the fuzzer). Known-defect lists
//! and how an entry applies, signatures, the intermittent rule, verdicts,
//! comparing two runs, significance, and a backend session's checks.
//!
//! It must not do I/O: no process, file, socket or clock (its Cargo.toml
//! has no I/O crate). Runners record; they hand the judge their records.
//!
//! - [`check`]: what a check records (pass, evidence, facts).
//! - [`outcome`]: a run's checks, or the failure that ended it, with its kind.
//! - [`parse`]: a TOML text to its typed form, errors at `file:line:col`.
//! - [`defects`]: the known-defect lists' schema and rules.
//! - [`listing`]: how an entry applies to a run; signatures; races; the intermittent rule.
//! - [`verdict`]: checks + listing -> verdict.
//! - [`scenario`]: one scenario's two rows, judged.
//! - [`compare`]: run A against run B.
//! - [`significance`]: whether two stale rates differ beyond their spread.
//! - [`backend`]: a backend session's record, check by check.
//! - [`words`]: a judgement in words, for every report.

pub mod backend;
pub mod check;
pub mod compare;
pub mod defects;
pub mod listing;
pub mod outcome;
pub mod parse;
pub mod scenario;
pub mod significance;
pub mod verdict;
pub mod words;
