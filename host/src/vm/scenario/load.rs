//! Loading scenario and suite files: TOML through serde, then the checks
//! serde cannot make (keys that go together, check names), each error
//! naming file:line:col. Must not run or judge anything.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use shmem_judge::parse::{LoadError, parse_toml};

use super::step::{Step, step_labels};
use super::{
    BackendMode, MAX_ACK_DELAY_MS, MAX_BUFFERS, MAX_CHURN, MAX_FRAMES, MediaScenario, Scenario, SuiteDevice, SuiteFile,
    one, yes,
};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    description: String,
    /// Run in a QEMU (and model) of its own: for probes that may kill QEMU
    /// or need another device.
    #[serde(default)]
    own_boot: bool,
    /// The device for an own boot (default: the suite's). Not validated, so
    /// probes can try layouts QEMU should refuse.
    device: Option<SuiteDevice>,
    /// Whether the device is initialised (DRIVER_OK) before the first step.
    #[serde(default = "yes")]
    init: bool,
    /// Fault scenarios exercise the appliance against QEMU; the model
    /// verdict is reported as skipped.
    #[serde(default)]
    qemu_only: bool,
    /// Guest vCPUs (own boot only).
    #[serde(default = "one")]
    smp: u8,
    /// A frontend may refuse this scenario's device at realize, cleanly (a
    /// non-zero status, no signal, and a message): the check
    /// `boot-refused-cleanly` then passes and no step runs (own boot only).
    #[serde(default)]
    boot_refusal_ok: bool,
    /// How the backend serves the frontend while it waits for an ack.
    #[serde(default)]
    backend: BackendMode,
    /// A media scenario (own boot, no steps): the virtio-media backend under
    /// test behind QEMU, the agent as its driver.
    media: Option<MediaScenario>,
    #[serde(default)]
    step: Vec<Step>,
}

/// Checks the runner adds to every scenario or boot; a step may not take their names.
pub const RESERVED_CHECKS: [&str; 6] =
    ["frontend-survives", "clean-shutdown", "layout-matches-spec", "no-leaks", "shared-boot", "boot-refused-cleanly"];

/// The line where `key = ...` (or the table `[key]`) is first written, 0 if nowhere.
fn key_line(text: &str, key: &str) -> usize {
    let is_key =
        |l: &str| l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')) || l == format!("[{key}]");
    text.lines().position(|l| is_key(l.trim())).map_or(0, |i| i + 1)
}

/// What the file's own keys allow together; an error names the key's line.
fn check_file_keys(path: &Path, text: &str, f: &ScenarioFile) -> Result<(), LoadError> {
    let at =
        |key: &str, message: String| LoadError { path: path.to_path_buf(), line: key_line(text, key), col: 1, message };
    if f.step.iter().any(|s| matches!(s, Step::Inject { .. })) && !(f.own_boot && f.qemu_only) {
        let line = text.lines().position(|l| l.trim().replace(' ', "") == "do=\"inject\"").map_or(0, |i| i + 1);
        return Err(LoadError {
            path: path.to_path_buf(),
            line,
            col: 1,
            message: "`inject` needs `own_boot = true` and `qemu_only = true`".into(),
        });
    }
    if f.smp != 1 && !f.own_boot {
        return Err(at("smp", "`smp` needs `own_boot = true`: one boot runs every shared scenario".into()));
    }
    if !(1..=4).contains(&f.smp) {
        return Err(at("smp", format!("`smp = {}`: the guest kernel takes 1 to 4 vCPUs", f.smp)));
    }
    if f.boot_refusal_ok && !f.own_boot {
        return Err(at(
            "boot_refusal_ok",
            "`boot_refusal_ok` needs `own_boot = true`: a refused boot runs nothing else".into(),
        ));
    }
    if f.device.is_some() && !f.own_boot {
        return Err(at("device", "`device` needs `own_boot = true`: one boot runs every shared scenario".into()));
    }
    check_media_keys(f).map_err(|(key, why)| at(key, why.into()))
}

/// A media scenario runs a session of its own: an own boot, no steps, no
/// device of the appliance's own backend. An error names the key at fault.
fn check_media_keys(f: &ScenarioFile) -> Result<(), (&'static str, &'static str)> {
    match &f.media {
        None if f.step.is_empty() => {
            Err(("description", "no `[[step]]`: a scenario needs steps, or a `[media]` table"))
        }
        None => Ok(()),
        Some(_) if !f.own_boot => Err(("media", "`[media]` needs `own_boot = true`: it boots a device of its own")),
        Some(_) if !f.step.is_empty() => Err(("media", "`[media]` runs a session of its own: no `[[step]]` with it")),
        Some(_) if f.device.is_some() || f.qemu_only || f.boot_refusal_ok => {
            Err(("media", "`[media]` takes no `device`, `qemu_only` or `boot_refusal_ok`"))
        }
        Some(m) if m.buffers == 0 || m.buffers > MAX_BUFFERS => {
            Err(("media", "`buffers` is 1 to 32 (what a V4L2 queue holds)"))
        }
        Some(m) if m.frames == 0 || m.frames > MAX_FRAMES => Err(("media", "`frames` is 1 to 1000")),
        Some(m) if m.churn.is_some_and(|n| n == 0 || n > MAX_CHURN) => {
            Err(("media", "`churn` is a number of MMAP/MUNMAP cycles, 1 to 100000"))
        }
        Some(m)
            if [
                m.churn.is_some(),
                m.refuse_map.is_some(),
                m.ack_delay_ms.is_some(),
                m.reset_mid_stream,
                m.close_channel,
            ]
            .iter()
            .filter(|x| **x)
            .count()
                > 1 =>
        {
            Err((
                "media",
                "`churn`, `refuse_map`, `ack_delay_ms`, `reset_mid_stream` and `close_channel` are sessions of their own: one at most",
            ))
        }
        Some(m) if (m.reset_mid_stream || m.close_channel) && (m.frames < 2 || m.buffers < 2) => Err((
            "media",
            "`reset_mid_stream` and `close_channel` act after the first frame and hold a buffer back: 2 frames and 2 buffers at least",
        )),
        Some(m) if m.refuse_map.is_some_and(|k| k == 0 || k > m.buffers as usize) => {
            Err(("media", "`refuse_map` is the k-th SHMEM_MAP, 1 to the number of buffers"))
        }
        Some(m) if m.ack_delay_ms.is_some_and(|d| d == 0 || d > MAX_ACK_DELAY_MS) => {
            Err(("media", "`ack_delay_ms` is 1 to 2000"))
        }
        Some(_) => Ok(()),
    }
}

/// Check names are unique and none is the runner's; an error names the step's line.
fn check_names(path: &Path, steps: &[Step], lines: &[usize]) -> Result<(), LoadError> {
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in steps.iter().enumerate() {
        let named = match s {
            Step::Map { check, .. } | Step::Unmap { check, .. } => check.as_deref(),
            _ => s.check(),
        };
        let Some(c) = named else { continue };
        let why = if RESERVED_CHECKS.contains(&c) {
            "reserved for the runner"
        } else if c.is_empty() {
            "empty"
        } else if !names.insert(c) {
            "used twice: known defects name checks, so names must be unique"
        } else {
            continue;
        };
        let message = format!("step {} (`do = \"{}\"`): check name {c:?} is {why}", i + 1, s.kind());
        return Err(LoadError { path: path.to_path_buf(), line: lines.get(i).copied().unwrap_or(0), col: 1, message });
    }
    Ok(())
}

/// The line of each of the first `n` `[[step]]` headers of `text` (0 for
/// steps written another way).
fn step_lines(text: &str, n: usize) -> Vec<usize> {
    let mut lines: Vec<usize> =
        text.lines().enumerate().filter(|(_, l)| l.trim() == "[[step]]").map(|(i, _)| i + 1).collect();
    lines.resize(n, 0);
    lines
}

/// A file's text; an error names the file.
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::in_file(path, e.to_string()))
}

impl Scenario {
    pub fn parse(path: &Path, text: &str) -> Result<Self, LoadError> {
        let f: ScenarioFile = parse_toml(path, text)?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("scenario").to_string();
        let lines = step_lines(text, f.step.len());
        check_file_keys(path, text, &f)?;
        check_names(path, &f.step, &lines)?;
        let labels = step_labels(&f.step);
        Ok(Scenario {
            name,
            description: f.description,
            path: path.to_path_buf(),
            own_boot: f.own_boot,
            device: f.device,
            init: f.init,
            qemu_only: f.qemu_only,
            smp: f.smp,
            boot_refusal_ok: f.boot_refusal_ok,
            backend: f.backend,
            media: f.media,
            lines,
            steps: f.step,
            labels,
        })
    }

    /// Every `*.toml` in `dir`, sorted by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, LoadError> {
        let entries = std::fs::read_dir(dir).map_err(|e| LoadError::in_file(dir, e.to_string()))?;
        let mut paths: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
        paths.sort();
        paths.iter().map(|p| Scenario::parse(p, &read_text(p)?)).collect()
    }
}

impl SuiteFile {
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        parse_toml(path, &read_text(path)?)
    }
}
