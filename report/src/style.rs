//! The verdict words in colour: red for what fails, yellow for what
//! surprises, dim for what is listed, green for a pass. The styles are
//! written always; `anstream` drops them when stdout is not a terminal or
//! `NO_COLOR` is set, so piped output and CI logs stay plain.

use anstyle::{AnsiColor, Style};

/// A word of the report with its style.
pub struct Word<'a>(pub &'a str);

impl Word<'_> {
    fn style(&self) -> Style {
        let bold = Style::new().bold();
        match self.0 {
            "FAIL" | "ERROR" | "REGRESSED" => bold.fg_color(Some(AnsiColor::Red.into())),
            "UNEXPECTED-PASS" => bold.fg_color(Some(AnsiColor::Yellow.into())),
            "KNOWN-FAIL" | "SKIPPED" => Style::new().fg_color(Some(AnsiColor::Yellow.into())).dimmed(),
            "PASS" | "fixed" => Style::new().fg_color(Some(AnsiColor::Green.into())),
            _ => Style::new(),
        }
    }
}

/// `word` padded to `width` (right-aligned when negative), in its style.
pub fn paint(word: &str, width: isize) -> String {
    let style = Word(word).style();
    let w = width.unsigned_abs();
    let padded = if width < 0 { format!("{word:>w$}") } else { format!("{word:<w$}") };
    format!("{style}{padded}{style:#}")
}
