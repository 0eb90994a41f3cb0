//! `vm-test --bless`: adds the run's QEMU build and accelerator to exactly
//! the known-defect entries whose signatures the run's failures showed
//! (entries listed for another upstream version or accelerator), in
//! whichever list holds each (QEMU's keys the build as `qemu`, the
//! backends' as `frontend`), and changes nothing else in the files. Text
//! edits, line by line, so comments and layout stay.

use std::collections::BTreeSet;
use std::path::Path;

use shmem_host::vm::SuiteReport;
use shmem_judge::verdict::Verdict;

/// The ids of the entries listed elsewhere whose signatures this run
/// showed, and of those carried over from another accelerator that showed.
pub fn matched_elsewhere(r: &SuiteReport) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for s in &r.scenarios {
        if let Verdict::Fail(judged) | Verdict::KnownFailure(judged) = &s.qemu {
            ids.extend(judged.iter().filter_map(|j| j.listed_elsewhere.as_ref().map(|(id, _)| id.clone())));
            ids.extend(judged.iter().filter(|j| j.other_accel).filter_map(|j| j.defect.clone()));
        }
    }
    ids
}

/// `key = ["a", "b"]` with `add` appended when missing; `None` when the
/// line is not such an array on one line.
fn with_added(line: &str, key: &str, add: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(line).ok()?;
    let mut items: Vec<String> =
        table.get(key)?.as_array()?.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<_>>()?;
    if !items.iter().any(|i| i == add) {
        items.push(add.to_string());
    }
    let quoted: Vec<String> = items.iter().map(|i| serde_json::to_string(i).unwrap_or_default()).collect();
    Some(format!("{key} = [{}]", quoted.join(", ")))
}

/// The `[[defect]]` block each line belongs to (its index), and each block's id.
fn blocks(lines: &[&str]) -> (Vec<Option<usize>>, Vec<Option<String>>) {
    let mut of_line = Vec::new();
    let mut ids: Vec<Option<String>> = Vec::new();
    for l in lines {
        if l.trim() == "[[defect]]" {
            ids.push(None);
        }
        if let (Some(id), Some(last)) =
            (l.trim().strip_prefix("id").and_then(|r| r.trim_start().strip_prefix('=')), ids.last_mut())
        {
            *last = Some(id.trim().trim_matches('"').to_string());
        }
        of_line.push(ids.len().checked_sub(1));
    }
    (of_line, ids)
}

/// The ids of the entries of the list at `path`.
pub fn ids_in(path: &Path) -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(blocks(&text.lines().collect::<Vec<_>>()).1.into_iter().flatten().collect())
}

/// Adds `build` (to the array `build_key`: `qemu` in QEMU's list,
/// `frontend` in the backends') and `accel` to the entries `ids` of the
/// list at `path`; to an entry with measured figures (`rate`) also the
/// pair to `unmeasured` (its figures were measured elsewhere). Returns the
/// changed lines as a diff (`path:line: -old` / `+new`).
pub fn bless(
    path: &Path,
    ids: &BTreeSet<String>,
    build_key: &str,
    build: &str,
    accel: &str,
) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let (of_line, block_ids) = blocks(&lines);
    let figured = measured_blocks(&lines, &of_line);
    let pair = format!("{build}/{accel}");
    let mut out = Vec::new();
    let mut diff = Vec::new();
    let mut touched = BTreeSet::new();
    for (n, line) in lines.iter().enumerate() {
        let block = of_line[n];
        let id = block.and_then(|b| block_ids[b].as_ref()).filter(|id| ids.contains(*id));
        let key = [build_key, "accel", "unmeasured"].into_iter().find(|k| sets(line, k));
        let mut new = vec![match (id, key) {
            (Some(id), Some(key)) => {
                touched.insert((id.clone(), key));
                let add = match key {
                    "accel" => accel,
                    "unmeasured" => &pair,
                    _ => build,
                };
                with_added(line.trim(), key, add).ok_or_else(|| {
                    format!(
                        "{}:{}: `{key}` of entry {id:?} is not an array of strings on one line: add {add:?} by hand",
                        path.display(),
                        n + 1
                    )
                })?
            }
            _ => line.to_string(),
        }];
        // An entry with figures and no `unmeasured` yet gets one after its `accel`.
        if let (Some(id), Some("accel")) = (id, key)
            && block.is_some_and(|b| figured.contains(&b))
            && !lines.iter().zip(&of_line).any(|(l, b)| *b == block && sets(l, "unmeasured"))
        {
            new.push(format!("unmeasured = [{}]", serde_json::to_string(&pair).unwrap_or_default()));
            touched.insert((id.clone(), "unmeasured"));
        }
        let joined = new.join("\n");
        if joined != *line {
            diff.push(format!("{}:{}:\n- {line}\n+ {}", path.display(), n + 1, new.join("\n+ ")));
        }
        out.push(joined);
    }
    if let Some(id) = ids
        .iter()
        .find(|id| !touched.contains(&((*id).clone(), build_key)) || !touched.contains(&((*id).clone(), "accel")))
    {
        return Err(format!("{}: entry {id:?} has no one-line `{build_key}` and `accel` to add to", path.display()));
    }
    std::fs::write(path, out.join("\n") + "\n").map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(diff)
}

/// Whether `line` sets `key` (`key = ...`).
fn sets(line: &str, key: &str) -> bool {
    line.trim_start().strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('='))
}

/// The blocks that carry measured figures (`rate`).
fn measured_blocks(lines: &[&str], of_line: &[Option<usize>]) -> BTreeSet<usize> {
    lines.iter().zip(of_line).filter(|(l, _)| sets(l, "rate")).filter_map(|(_, b)| *b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bless_adds_the_build_to_exactly_the_named_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kd.toml");
        let text = "# keep me\n[[defect]]\nid = \"a\"\nqemu = [\"11.1.3 (Debian 1:11.1.3+ds-1)\"]\naccel = [\"tcg\"]\n\n[[defect]]\nid = \"b\"\nqemu = [\"11.1.3 (Debian 1:11.1.3+ds-1)\"]\naccel = [\"tcg\"]\n";
        std::fs::write(&path, text).unwrap();
        let diff =
            bless(&path, &BTreeSet::from(["b".to_string()]), "qemu", "11.2.0 (Debian 1:11.2.0+ds-1)", "tcg").unwrap();
        assert_eq!(diff.len(), 1, "{diff:?}");
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            text.replace(
                "id = \"b\"\nqemu = [\"11.1.3 (Debian 1:11.1.3+ds-1)\"]",
                "id = \"b\"\nqemu = [\"11.1.3 (Debian 1:11.1.3+ds-1)\", \"11.2.0 (Debian 1:11.2.0+ds-1)\"]"
            )
        );
        let diff =
            bless(&path, &BTreeSet::from(["a".to_string()]), "qemu", "11.1.3 (Debian 1:11.1.3+ds-1)", "kvm").unwrap();
        assert!(diff.len() == 1 && diff[0].contains("+ accel = [\"tcg\", \"kvm\"]"), "{diff:?}");
    }

    #[test]
    fn bless_marks_copied_figures_unmeasured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kd.toml");
        let text =
            "[[defect]]\nid = \"race\"\nqemu = [\"11.1.3 (Debian 1:11.1.3+ds-1)\"]\naccel = [\"tcg\"]\nrate = 0.01\n";
        std::fs::write(&path, text).unwrap();
        bless(&path, &BTreeSet::from(["race".to_string()]), "qemu", "11.2.0", "tcg").unwrap();
        bless(&path, &BTreeSet::from(["race".to_string()]), "qemu", "11.1.3 (Debian 1:11.1.3+ds-1)", "kvm").unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(after.contains("accel = [\"tcg\", \"kvm\"]\nunmeasured = [\"11.2.0/tcg\", \"11.1.3 (Debian 1:11.1.3+ds-1)/kvm\"]\nrate = 0.01"), "{after}");
        let d: toml::Table = toml::from_str(&after).unwrap();
        assert!(d.contains_key("defect"));
    }

    #[test]
    fn bless_adds_a_frontend_to_an_entry_of_the_backend_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bd.toml");
        let text = "[[defect]]\nid = \"m\"\nbackend = [\"fake 0.1.0\"]\naccel = [\"tcg\"]\nfrontend = [\"11.1.3 (Debian 1:11.1.3+ds-1)\"]\n";
        std::fs::write(&path, text).unwrap();
        assert_eq!(ids_in(&path).unwrap(), BTreeSet::from(["m".to_string()]));
        let diff = bless(&path, &BTreeSet::from(["m".to_string()]), "frontend", "11.2.0 (Debian 1:11.2.0+ds-1)", "tcg")
            .unwrap();
        assert_eq!(diff.len(), 1, "{diff:?}");
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(
            after.contains("backend = [\"fake 0.1.0\"]\n")
                && after.contains("frontend = [\"11.1.3 (Debian 1:11.1.3+ds-1)\", \"11.2.0 (Debian 1:11.2.0+ds-1)\"]"),
            "{after}"
        );
        // QEMU's key on the backend list finds nothing to add to: said, file untouched.
        let err = bless(&path, &BTreeSet::from(["m".to_string()]), "qemu", "11.3.0", "tcg").unwrap_err();
        assert!(err.contains("no one-line `qemu`"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), after);
    }
}
