//! Reads the known-defect lists from disk; their schema, rules and meaning
//! are the judge's (`shmem_judge::defects`). File reading only.

use std::path::Path;

use shmem_judge::defects::{KnownDefect, QEMU_ACCELS, parse_list};
use shmem_judge::parse::LoadError;

use super::scenario::read_text;

/// Loads and checks QEMU's list (`tests/known-defects.toml`).
pub fn load_known_defects(path: &Path) -> Result<Vec<KnownDefect>, LoadError> {
    load_defect_list(path, &QEMU_ACCELS)
}

/// Loads a list whose entries name one of `accels`.
pub fn load_defect_list(path: &Path, accels: &[&str]) -> Result<Vec<KnownDefect>, LoadError> {
    parse_list(path, &read_text(path)?, accels)
}
