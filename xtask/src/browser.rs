//! The HTML report checked in a real browser: headless Chromium (installed
//! with apt when missing, on Debian) opens the report of a real run of a
//! media scenario and the probe, and what it rendered is checked: the chart
//! of `media-stream-page-rounded` with a SHMEM reply linked to the memory
//! table that commits it, later; the probe's plots; no resource from a
//! network. A screenshot is kept beside the run's logs for a person to
//! look at. Part of `cargo xtask test`; checks only its own expectations.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::exit::Failure;
use crate::opts::ContractArgs;
use crate::shell::root;

const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
const MEDIA: &str = "media-stream-page-rounded";

/// Chromium on PATH, installed with apt when it is missing and apt can.
fn chromium() -> Result<PathBuf, String> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = || BROWSERS.iter().find_map(|b| crate::tools::on_path(&path, b));
    if let Some(b) = found() {
        return Ok(b);
    }
    if crate::apt::available() {
        let sh = xshell::Shell::new().map_err(|e| e.to_string())?;
        crate::apt::apt_install(&sh, &["chromium"])?;
    }
    found().ok_or_else(|| {
        let manager = crate::tools::Manager::found(&path);
        let line = manager.map_or("apt-get install -y chromium".to_string(), |m| m.install_line(&["chromium"]));
        format!("the HTML report's browser test needs Chromium (one of {}): {line}", BROWSERS.join(", "))
    })
}

/// Chromium, headless, on `page`, with `args`; its stdout. Bounded: a
/// browser that hangs is killed after two minutes.
fn headless(browser: &Path, page: &Path, args: &[&str]) -> Result<String, String> {
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut c = Command::new("timeout");
    c.args(["--kill-after=5", "120"]).arg(browser);
    c.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"]);
    c.arg(format!("--user-data-dir={}", profile.path().display()));
    c.args(args).arg(format!("file://{}", page.display()));
    let out = c.stdin(Stdio::null()).output().map_err(|e| format!("running {}: {e}", browser.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {args:?} failed ({}): {}",
            browser.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rendered section of scenario `name` (`id="run-NAME"`), up to the next section.
fn section<'a>(dom: &'a str, name: &str) -> &'a str {
    let Some(start) = dom.find(&format!("id=\"run-{name}\"")) else { return "" };
    let rest = &dom[start..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

/// Whether a rendered SHMEM link has its reply before its memory table.
fn reply_before_table(section: &str) -> bool {
    let attr = |tag: &str, key: &str| -> Option<usize> {
        let at = tag.find(&format!("{key}=\""))? + key.len() + 2;
        tag[at..].split('"').next()?.parse().ok()
    };
    section.match_indices("class=\"shmem-link reply-first\"").any(|(i, _)| {
        let tag = &section[i..section[i..].find('>').map_or(section.len(), |e| i + e)];
        matches!((attr(tag, "data-reply"), attr(tag, "data-table")), (Some(r), Some(t)) if r < t)
    })
}

/// Every check; whether all held.
pub fn check(a: &ContractArgs) -> Result<bool, Failure> {
    let browser = chromium()?;
    let dir = root().join("target/vm-test");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let page = dir.join("report.html");
    let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    c.args(["vm-test", "--filter", MEDIA, "--filter", "reply-before-commit", "--exact", "--html"]).arg(&page);
    c.args(a.guest.to_args());
    let status = c.current_dir(root()).stdin(Stdio::null()).status().map_err(|e| format!("vm-test: {e}"))?;
    let mut checks = crate::checks::Checks::new("html");
    let mut say = |what: &str, held: bool| checks.say(what, held, "");
    say("vm-test --html ran (exit 0)", status.success());
    let html = std::fs::read_to_string(&page).map_err(|e| format!("{}: {e}", page.display()))?;
    say("the page names no http(s):// resource", !html.contains("http://") && !html.contains("https://"));
    let dom = headless(&browser, &page, &["--dump-dom", "--virtual-time-budget=2000"])?;
    let media = section(&dom, MEDIA);
    say(&format!("Chromium rendered the chart of {MEDIA}"), media.contains("<svg class=\"sequence\""));
    say("... with SHMEM_MAP requests linked to their replies", media.contains("data-request=\"SHMEM_MAP\""));
    say("... and a reply drawn before the memory table that commits it", reply_before_table(media));
    let probe = section(&dom, "reply-before-commit");
    say(
        "the probe's section has its plots",
        probe.contains("class=\"plot blocks\"") && probe.contains("class=\"plot order\""),
    );
    let shot = dir.join("report-screenshot.png");
    headless(
        &browser,
        &page,
        &[&format!("--screenshot={}", shot.display()), "--window-size=1400,2600", "--hide-scrollbars"],
    )?;
    std::thread::sleep(Duration::from_millis(100));
    say(&format!("a screenshot for a person to look at: {}", shot.display()), shot.is_file());
    Ok(checks.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_counts_only_when_its_reply_comes_before_its_table() {
        let first =
            r#"<g class="shmem-link reply-first" data-request="SHMEM_MAP" data-at="4" data-reply="5" data-table="9">"#;
        assert!(reply_before_table(first));
        let wrong =
            r#"<g class="shmem-link reply-first" data-request="SHMEM_MAP" data-at="4" data-reply="9" data-table="5">"#;
        assert!(!reply_before_table(wrong));
        assert!(!reply_before_table(r#"<g class="shmem-link table-first" data-reply="5" data-table="9">"#));
    }
}
