//! What a check records: pass or fail, evidence for people, and the facts a
//! known-defect signature is matched against. Recording only; the verdict
//! (`verdict`) decides what a failed check means.

use std::collections::BTreeMap;
use std::fmt;

/// One fact of a check: a word (an exit, what was seen, what was said) or
/// a count. It serialises as its text, so reports and known-defect
/// signatures see the same strings; counts are read as counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    Text(String),
    Count(u64),
}

impl Fact {
    /// The fact as a count, when it is one.
    pub fn count(&self) -> Option<u64> {
        match self {
            Fact::Count(n) => Some(*n),
            Fact::Text(_) => None,
        }
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::Text(t) => f.write_str(t),
            Fact::Count(n) => write!(f, "{n}"),
        }
    }
}

impl PartialEq<&str> for Fact {
    fn eq(&self, other: &&str) -> bool {
        match self {
            Fact::Text(t) => t == other,
            Fact::Count(n) => other.parse::<u64>().ok() == Some(*n),
        }
    }
}

impl From<&str> for Fact {
    fn from(t: &str) -> Self {
        Fact::Text(t.to_string())
    }
}

impl From<String> for Fact {
    fn from(t: String) -> Self {
        Fact::Text(t)
    }
}

impl From<&String> for Fact {
    fn from(t: &String) -> Self {
        Fact::Text(t.clone())
    }
}

impl From<u64> for Fact {
    fn from(n: u64) -> Self {
        Fact::Count(n)
    }
}

impl From<u32> for Fact {
    fn from(n: u32) -> Self {
        Fact::Count(u64::from(n))
    }
}

impl From<usize> for Fact {
    fn from(n: usize) -> Self {
        Fact::Count(n as u64)
    }
}

impl serde::Serialize for Fact {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read back from its text (own boots cross a process as JSON): a decimal
/// number is a count, anything else a word.
impl<'de> serde::Deserialize<'de> for Fact {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = String::deserialize(d)?;
        Ok(match t.parse::<u64>() {
            Ok(n) if n.to_string() == t => Fact::Count(n),
            _ => Fact::Text(t),
        })
    }
}

/// A check's facts by name.
pub type Facts = BTreeMap<String, Fact>;

/// The outcome of one check: the evidence for people, and the facts a
/// known-defect signature is matched against (`exit`, `step`, `ack`,
/// `said`, `seen`, counts...).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub evidence: String,
    pub facts: Facts,
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

/// Facts (or a signature) as `key=value, ...` (values quoted when they hold spaces).
pub fn facts_text<V: fmt::Display>(facts: &BTreeMap<String, V>) -> String {
    facts
        .iter()
        .map(|(k, v)| {
            let v = v.to_string();
            if v.contains(char::is_whitespace) || v.is_empty() { format!("{k}={v:?}") } else { format!("{k}={v}") }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The check every scenario ends with: the frontend lived through every step.
pub const FRONTEND_SURVIVES: &str = "frontend-survives";

impl CheckResult {
    pub fn new(check: impl Into<String>, passed: bool, evidence: impl Into<String>) -> Self {
        CheckResult { check: check.into(), passed, evidence: evidence.into(), facts: BTreeMap::new() }
    }

    /// Adds a fact.
    pub fn with(mut self, key: &str, value: impl Into<Fact>) -> Self {
        self.facts.insert(key.to_string(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_serialise_as_text_and_read_back_typed() {
        let c = CheckResult::new("c", false, "")
            .with("ack", 1u64)
            .with("exit", "signal 11 (SIGSEGV)")
            .with("first_diff", "0x0");
        let json = serde_json::to_string(&c.facts).unwrap();
        assert_eq!(
            json, r#"{"ack":"1","exit":"signal 11 (SIGSEGV)","first_diff":"0x0"}"#,
            "the same JSON as when facts were strings"
        );
        let back: Facts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c.facts);
        assert_eq!(back["ack"].count(), Some(1));
        assert!(back["exit"] == "signal 11 (SIGSEGV)" && back["ack"] == "1");
    }
}
