//! Shrinking a divergence by delta debugging on fresh frontends, and
//! writing what is left as a scenario (`found-HASH.toml`) that fails where
//! the subject diverged and passes on the correct model.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::ops::{FILES, Op};
use super::oracle::{create_files, expect, first_seed, fresh};
use super::{Context, Divergence, Found, FuzzConfig, FuzzError, Targets, play};
use crate::files::fnv1a64;
use crate::vm::scenario::{Scenario, Size, Step};
use shmem_judge::check::facts_text;

/// Whether `ops`, replayed on fresh targets, shows the divergence `key`.
fn reproduces(t: &mut Targets<'_>, ops: &[Op], key: &str) -> Result<bool, FuzzError> {
    let (mut s, mut o) = fresh(t)?;
    Ok(play(ops, &mut s, &mut o, &[], Some(key), 0, &mut Context::fresh())?.unknown.is_some())
}

/// Delta debugging (ddmin): drops chunks of operations while the shorter
/// sequence, replayed on fresh frontends, still shows the divergence.
pub(super) fn shrink(
    cfg: &FuzzConfig,
    t: &mut Targets<'_>,
    history: Vec<Op>,
    d: Divergence,
) -> Result<Found, FuzzError> {
    let key = d.key();
    let original_len = history.len();
    let deadline = Instant::now() + cfg.shrink_time;
    let mut ops = history;
    let mut minimal = false;
    if !reproduces(t, &ops, &key)? {
        return Err(FuzzError::NotReproducible(key));
    }
    let mut n = 2usize;
    let mut out_of_time = false;
    while ops.len() >= 2 && !out_of_time {
        let chunk = ops.len().div_ceil(n);
        let mut shorter = None;
        for i in 0..n {
            if Instant::now() > deadline || crate::vm::interrupted() {
                out_of_time = true;
                break;
            }
            let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(ops.len()));
            if lo >= hi {
                continue;
            }
            let candidate: Vec<Op> = ops[..lo].iter().chain(&ops[hi..]).cloned().collect();
            if !candidate.is_empty() && reproduces(t, &candidate, &key)? {
                shorter = Some(candidate);
                break;
            }
        }
        match shorter {
            Some(c) => {
                ops = c;
                n = (n - 1).max(2);
            }
            None if out_of_time => {}
            None if n >= ops.len() => {
                minimal = true;
                break;
            }
            None => n = (n * 2).min(ops.len()),
        }
    }
    if ops.len() == 1 {
        minimal = true;
    }
    let scenario = write_scenario(cfg, t, &ops, &d, original_len, minimal)?;
    Ok(Found { divergence: d, original_len, ops, minimal, scenario })
}

#[derive(Serialize)]
struct ScenarioOut {
    description: String,
    own_boot: bool,
    step: Vec<Step>,
}

/// Writes `found-HASH.toml`: the files, then each operation as a step with
/// the oracle's expectation. It fails where the subject diverged and passes
/// on the correct model.
fn write_scenario(
    cfg: &FuzzConfig,
    t: &mut Targets<'_>,
    ops: &[Op],
    d: &Divergence,
    original_len: usize,
    minimal: bool,
) -> Result<PathBuf, FuzzError> {
    let mut oracle = (t.oracle)()?;
    let mut steps = Vec::new();
    create_files(&mut oracle)?;
    for (i, (name, size)) in FILES.iter().enumerate() {
        steps.push(Step::File { name: name.to_string(), size: Size(*size) });
        steps.push(Step::Fill { file: name.to_string(), seed: first_seed(i), offset: Size(0), len: None });
    }
    for (i, op) in ops.iter().enumerate() {
        steps.push(expect(op, i, &mut oracle)?.0);
    }
    steps.push(Step::ExpectAlive { check: "alive-at-the-end".into() });
    let mut facts = d.check.facts.clone();
    facts.retain(|k, _| !matches!(k.as_str(), "said" | "op"));
    let description = format!(
        "found by cargo xtask fuzz (seed {}, {original_len} operations, shrunk to {}{}): {} failed ({})",
        cfg.seed,
        ops.len(),
        if minimal { "" } else { ", not minimal: shrinking ran out of time" },
        d.kind,
        facts_text(&facts)
    );
    let text = toml::to_string(&ScenarioOut { description, own_boot: true, step: steps })
        .map_err(|e| FuzzError::Write(e.to_string()))?;
    let name = format!("found-{:08x}", fnv1a64(text.as_bytes()) as u32);
    std::fs::create_dir_all(&cfg.out_dir)
        .map_err(|e| FuzzError::Write(format!("create {}: {e}", cfg.out_dir.display())))?;
    let path = cfg.out_dir.join(format!("{name}.toml"));
    Scenario::parse(&path, &text).map_err(|e| FuzzError::Write(format!("the written scenario does not load: {e}")))?;
    std::fs::write(&path, text).map_err(|e| FuzzError::Write(format!("write {}: {e}", path.display())))?;
    Ok(path)
}
