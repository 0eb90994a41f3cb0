//! A TOML text read into its typed form, with errors that name the file,
//! line and column: the one parser of the project's list and scenario
//! files. Text in, values out; reading the file is the caller's.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A parse error that names where it is.
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.col, self.message)
        }
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// An error about the whole file (no line to point at).
    pub fn in_file(path: &Path, message: impl Into<String>) -> Self {
        LoadError { path: path.to_path_buf(), line: 0, col: 0, message: message.into() }
    }
}

/// Parses TOML into `T`; an error names the line and column.
pub fn parse_toml<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, LoadError> {
    toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map_or((0, 0), |s| {
            let before = &text[..s.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, col)
        });
        LoadError { path: path.to_path_buf(), line, col, message: e.message().to_string() }
    })
}
