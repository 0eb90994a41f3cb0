//! What a check records: pass or fail, evidence for people, and the facts a
//! known-defect signature is matched against. Recording only; the verdict
//! layer (`verdict`) decides what a failed check means.

use std::collections::BTreeMap;

use super::guest::Death;

/// The outcome of one check: the evidence for people, and the facts a
/// known-defect signature is matched against (`exit`, `step`, `ack`,
/// `said`, `seen`, counts...).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub evidence: String,
    pub facts: BTreeMap<String, String>,
}

/// What a frontend said, as a fact: its distinct lines, at most 5, in order.
pub fn said_fact(said: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for l in said.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !lines.contains(&l) && lines.len() < 5 {
            lines.push(l);
        }
    }
    lines.join("\n")
}

/// Facts as `key=value, ...` (values quoted when they hold spaces).
pub fn facts_text(facts: &BTreeMap<String, String>) -> String {
    facts.iter().map(|(k, v)| if v.contains(char::is_whitespace) || v.is_empty() { format!("{k}={v:?}") } else { format!("{k}={v}") }).collect::<Vec<_>>().join(", ")
}

/// The check every scenario ends with: the frontend lived through every step.
pub const FRONTEND_SURVIVES: &str = "frontend-survives";

impl CheckResult {
    pub fn new(check: impl Into<String>, passed: bool, evidence: impl Into<String>) -> Self {
        CheckResult { check: check.into(), passed, evidence: evidence.into(), facts: BTreeMap::new() }
    }

    /// Adds a fact.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.facts.insert(key.to_string(), value.to_string());
        self
    }

    /// `frontend-survives`, failed: how the frontend died and at which step.
    pub fn died(step: &str, death: &Death) -> Self {
        CheckResult::new(FRONTEND_SURVIVES, false, format!("died at step {step:?}: {death}")).with("exit", &death.exit).with("step", step).with("said", said_fact(&death.said))
    }
}
