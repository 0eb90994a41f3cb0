//! Scenario and suite files (TOML, one scenario per file): schema, step
//! labels, loading, and errors that name file:line:col. No execution and no
//! judging here (the known-defects list is `defects`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use shmem_judge::parse::{LoadError, parse_toml};

use crate::spec::{DeviceSpec, parse_size};

/// A size written as a number or as `"64K"`, `"1M"`, `"0x1000"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size(pub u64);

/// Written as `"0x1000"` (TOML integers stop at 2^63).
impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// One step of a scenario. `check` names a verdict-bearing step; the
/// known-defects list refers to it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Create a host file (memfd) of `size` bytes, zero-filled.
    File { name: String, size: Size },
    /// Host fills `len` bytes (default: to the end) at `offset` with pattern `seed`.
    Fill {
        file: String,
        seed: u8,
        #[serde(default)]
        offset: Size,
        len: Option<Size>,
    },
    /// Backend asks the frontend to map; the ack must be `ack` (default 0),
    /// a check named `LABEL/ack`. `attach = false` sends no fd; `flags`
    /// overrides the flags `rw` implies (unknown bits, for error cases);
    /// `reason` must appear in what the frontend says about a rejection
    /// (QEMU's stderr, the model's reason), a check named `LABEL/reason`.
    /// LABEL is `check`, or derived from the request (see [`Step::label`]).
    Map {
        check: Option<String>,
        shmid: u8,
        file: String,
        #[serde(default)]
        fd_offset: Size,
        shm_offset: Size,
        len: Size,
        rw: bool,
        #[serde(default)]
        ack: u64,
        #[serde(default = "yes")]
        attach: bool,
        /// Attach the file re-opened read-only instead.
        #[serde(default)]
        readonly_fd: bool,
        flags: Option<u64>,
        reason: Option<String>,
        /// Any stated reason will do (a check `LABEL/reason` that passes
        /// when the frontend said anything about the request).
        #[serde(default, skip_serializing_if = "is_false")]
        stated: bool,
    },
    /// Fault injection (QEMU only): `kill-qemu`, `kill-backend`, `hang-agent`.
    Inject { fault: Fault },
    /// Check: the guest gives no answer to a ping within a short timeout
    /// because it hangs (a timeout) or its frontend is dead, and the runner
    /// names which; any other error fails the check.
    ExpectNoAnswer { check: String, from: Party },
    /// Check: of `count` mappings of `len` bytes of `file` side by side from
    /// offset 0 of region `shmid`, the first `expect_accepted` (default 1)
    /// are accepted, and every one the frontend accepts reaches the
    /// backend's memory table (refusing what it cannot hold is fine).
    MapMany {
        check: String,
        shmid: u8,
        file: String,
        count: u32,
        len: Size,
        #[serde(default = "one_u32")]
        expect_accepted: u32,
    },
    /// Backend asks the frontend to unmap; `check`, `ack` and `reason` as for `map`.
    Unmap {
        check: Option<String>,
        shmid: u8,
        shm_offset: Size,
        len: Size,
        #[serde(default)]
        ack: u64,
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        stated: bool,
    },
    /// The guest resets the device (status 0) and, unless `init = false`,
    /// re-initialises it to DRIVER_OK. The ledger is cleared: the spec says
    /// a reset drops every mapping.
    GuestReset {
        #[serde(default = "yes")]
        init: bool,
    },
    /// The guest writes pattern `seed` into its region view.
    GuestWrite { shmid: u8, offset: Size, len: Size, seed: u8 },
    /// The host writes pattern `seed` into a file.
    HostWrite { file: String, offset: Size, len: Size, seed: u8 },
    /// Check: the guest's view equals what the ledger says is mapped there,
    /// or, with `seed`, pattern `seed` (what the host put there on purpose,
    /// whatever the file holds now).
    ExpectGuest { check: String, shmid: u8, offset: Size, len: Size, seed: Option<u8> },
    /// Check: the guest's view does NOT show these bytes of `file` (after unmap, elsewhere).
    ExpectGuestNot {
        check: String,
        shmid: u8,
        offset: Size,
        len: Size,
        file: String,
        #[serde(default)]
        fd_offset: Size,
    },
    /// Check: the host file holds pattern `seed` at `offset`.
    ExpectFile { check: String, file: String, offset: Size, len: Size, seed: u8 },
    /// Check: the frontend still runs and the guest still answers.
    ExpectAlive { check: String },
    /// Check: the FNV-1a digest (16 hex digits) of `len` bytes at `offset`
    /// of the guest's view of region `shmid` (a byte where nothing is
    /// mapped counts as zero) or of host file `file` (exactly one of them).
    ExpectDigest { check: String, shmid: Option<u8>, file: Option<String>, offset: Size, len: Size, digest: String },
    /// Check: the frontend holds no fd and no memory mapping of `file`.
    ExpectReleased { check: String, file: String },
    /// Check: within a timeout, the backend's latest memory table holds
    /// (`present = true`) or no longer holds the mapping of `file` at the
    /// region's guest address + `shm_offset`, `len` bytes. Reports the lag
    /// after the last ack.
    ExpectMemTable { check: String, shmid: u8, shm_offset: Size, len: Size, file: String, present: bool },
    /// The reply-before-commit probe: `iterations` times, map a file at
    /// `shm_offset` of region `shmid` (`rw` or read-only), ring the guest
    /// through a doorbell at `doorbell_offset` of region `doorbell_shmid`
    /// right after the ack, and see what the guest's first read shows; then
    /// unmap and do the same. With `writes` (read-write only), every other
    /// map is followed by a guest write instead of a read. Checks
    /// `CHECK/map`, `CHECK/unmap` (and `CHECK/write`): no stale observation;
    /// `CHECK/unmap-effect`: after every UNMAP ack the range can be mapped
    /// again; and `CHECK/no-deadlock`: every request got its ack and every
    /// ring its answer.
    ProbeReplyBeforeCommit {
        check: String,
        shmid: u8,
        shm_offset: Size,
        doorbell_shmid: u8,
        doorbell_offset: Size,
        iterations: u32,
        rw: bool,
        #[serde(default)]
        writes: bool,
    },
}

/// A fault the runner can inject.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    KillQemu,
    KillBackend,
    HangAgent,
}

/// Who is expected not to answer (only the guest: a frontend asked through
/// a channel the runner closed itself would say nothing about the frontend).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Party {
    Guest,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Step {
    /// The step's kind, as written after `do =`.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::File { .. } => "file",
            Step::Fill { .. } => "fill",
            Step::Map { .. } => "map",
            Step::MapMany { .. } => "map-many",
            Step::Inject { .. } => "inject",
            Step::ExpectNoAnswer { .. } => "expect-no-answer",
            Step::Unmap { .. } => "unmap",
            Step::GuestReset { .. } => "guest-reset",
            Step::GuestWrite { .. } => "guest-write",
            Step::HostWrite { .. } => "host-write",
            Step::ExpectGuest { .. } => "expect-guest",
            Step::ExpectGuestNot { .. } => "expect-guest-not",
            Step::ExpectFile { .. } => "expect-file",
            Step::ExpectAlive { .. } => "expect-alive",
            Step::ExpectDigest { .. } => "expect-digest",
            Step::ExpectReleased { .. } => "expect-released",
            Step::ExpectMemTable { .. } => "expect-mem-table",
            Step::ProbeReplyBeforeCommit { .. } => "probe-reply-before-commit",
        }
    }

    /// The label of a map or unmap without its `#N` repeat suffix: its
    /// `check`, else the request itself (`map 0:0x10000+0x8000`).
    fn base_label(&self) -> Option<String> {
        match self {
            Step::Map { check: Some(c), .. } | Step::Unmap { check: Some(c), .. } => Some(c.clone()),
            Step::Map { shmid, shm_offset, len, .. } => Some(format!("map {shmid}:{:#x}+{:#x}", shm_offset.0, len.0)),
            Step::Unmap { shmid, shm_offset, len, .. } => Some(format!("unmap {shmid}:{:#x}+{:#x}", shm_offset.0, len.0)),
            _ => None,
        }
    }

    /// A named verdict-bearing step's check name.
    pub fn check(&self) -> Option<&str> {
        match self {
            Step::ExpectGuest { check, .. }
            | Step::ExpectGuestNot { check, .. }
            | Step::ExpectFile { check, .. }
            | Step::ExpectAlive { check }
            | Step::ExpectDigest { check, .. }
            | Step::ExpectReleased { check, .. }
            | Step::ExpectMemTable { check, .. }
            | Step::ProbeReplyBeforeCommit { check, .. }
            | Step::MapMany { check, .. }
            | Step::ExpectNoAnswer { check, .. } => Some(check),
            _ => None,
        }
    }
}

impl Step {
    /// The names of the checks this step records, given its label.
    pub fn produced_checks(&self, label: &str) -> Vec<String> {
        match self {
            Step::Map { reason, stated, .. } | Step::Unmap { reason, stated, .. } => {
                let mut v = vec![format!("{label}/ack")];
                v.extend((reason.is_some() || *stated).then(|| format!("{label}/reason")));
                v
            }
            Step::ProbeReplyBeforeCommit { check, rw, writes, .. } => {
                let mut v: Vec<String> = ["map", "unmap", "unmap-effect", "no-deadlock"].iter().map(|d| format!("{check}/{d}")).collect();
                if *rw && *writes {
                    v.push(format!("{check}/write"));
                }
                v
            }
            other => other.check().map(str::to_string).into_iter().collect(),
        }
    }
}

/// Every step's label, in order: a check's name; for a map or unmap its
/// `check` or its request; for any other step its kind. Repeats get `#2`,
/// `#3`... Labels depend on content, not position, so inserting a step
/// never renames another step's checks (which the known defects refer to).
pub fn step_labels(steps: &[Step]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    steps
        .iter()
        .map(|s| {
            let base = s.check().map(str::to_string).or_else(|| s.base_label()).unwrap_or_else(|| s.kind().to_string());
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 { base } else { format!("{base}#{n}") }
        })
        .collect()
}

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

/// A capture session through QEMU's `vhost-user-test-device-pci` with two
/// queues against the virtio-media backend under test, the guest agent as
/// its driver; the model runs the same session.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MediaScenario {
    /// The device's virtio id: one the frontend knows (QEMU 11.1 aborts on
    /// 48, VIRTIO_ID_MEDIA; see `hazard-unknown-virtio-id`).
    pub virtio_id: u16,
    /// Buffers asked for with REQBUFS.
    pub buffers: u32,
    /// Frames read through the shared-memory BAR.
    pub frames: usize,
    /// Which build of the backend (default: as published).
    #[serde(default)]
    pub build: MediaBuild,
    /// Instead of a capture: MMAP and MUNMAP of one buffer this many times,
    /// each sent as soon as the last is answered (at most
    /// [`MAX_CHURN`]; the session also stops at its time bound).
    #[serde(default)]
    pub churn: Option<usize>,
}

/// The most MMAP/MUNMAP cycles a media scenario's churn may ask for.
pub const MAX_CHURN: usize = 100_000;

/// A build of the virtio-media backend under test.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum MediaBuild {
    /// As published.
    #[default]
    Published,
    /// With its buffer memfds sized to whole pages (a one-line change to
    /// virtio-media, made by xtask): the build QEMU 11.1.3 can map.
    PageRounded,
}

impl MediaBuild {
    pub const ALL: [MediaBuild; 2] = [MediaBuild::Published, MediaBuild::PageRounded];

    /// As written in a scenario file and on a worker's command line.
    pub fn name(self) -> &'static str {
        match self {
            MediaBuild::Published => "published",
            MediaBuild::PageRounded => "page-rounded",
        }
    }
}

/// How the backend serves the frontend while a map or unmap waits for its ack.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BackendMode {
    /// Another thread serves the frontend meanwhile.
    #[default]
    MultiThreaded,
    /// Nothing does: the request goes out from the thread that serves the
    /// frontend and waits there (as libvhost-user's callers do).
    SingleThreaded,
}

fn one() -> u8 {
    1
}

fn one_u32() -> u32 {
    1
}

/// A loaded scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    pub own_boot: bool,
    pub device: Option<SuiteDevice>,
    pub init: bool,
    pub qemu_only: bool,
    pub smp: u8,
    pub boot_refusal_ok: bool,
    pub backend: BackendMode,
    pub media: Option<MediaScenario>,
    pub steps: Vec<Step>,
    /// Each step's label (see [`step_labels`]).
    pub labels: Vec<String>,
    /// The line of each step's `[[step]]` header (0 where unknown), for errors.
    pub lines: Vec<usize>,
}

/// The device the whole suite boots with (one boot runs every scenario).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuiteDevice {
    pub virtio_id: u16,
    pub regions: Vec<Size>,
    /// Where the guest must find each region in the shared-memory BAR,
    /// stated by hand (`"SHMID@OFFSET+LEN"`): the check
    /// `layout-matches-spec` compares what the guest found with this, never
    /// with a layout computed by the rule a frontend follows.
    pub layout: Vec<Window>,
}

/// One region where the guest must find it: shmid, offset in the BAR,
/// length; written `"2@0xc0000+0x40000"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(pub u8, pub u64, pub u64);

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = |why: &str| serde::de::Error::custom(format!("window {text:?}: {why}; write SHMID@OFFSET+LEN, e.g. \"2@0xc0000+0x40000\""));
        let (id, rest) = text.split_once('@').ok_or_else(|| bad("no `@`"))?;
        let (off, len) = rest.split_once('+').ok_or_else(|| bad("no `+`"))?;
        let id = id.trim().parse().map_err(|_| bad("shmid is not a number below 256"))?;
        let size = |v: &str| parse_size(v).map_err(|e| bad(&e.to_string()));
        Ok(Window(id, size(off)?, size(len)?))
    }
}

impl SuiteDevice {
    /// The stated layout as (shmid, offset, length), in shmid order.
    pub fn layout(&self) -> Vec<(u8, u64, u64)> {
        let mut l: Vec<(u8, u64, u64)> = self.layout.iter().map(|w| (w.0, w.1, w.2)).collect();
        l.sort_unstable();
        l
    }

    /// The device spec as written, not validated (probes try bad layouts;
    /// callers that need a valid one call `validate`).
    pub fn spec(&self) -> DeviceSpec {
        DeviceSpec { virtio_id: self.virtio_id, num_queues: 1, regions: self.regions.iter().map(|s| s.0).collect() }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    pub device: SuiteDevice,
}

/// Checks the runner adds to every scenario or boot; a step may not take their names.
pub const RESERVED_CHECKS: [&str; 6] = ["frontend-survives", "clean-shutdown", "layout-matches-spec", "no-leaks", "shared-boot", "boot-refused-cleanly"];

/// The line where `key = ...` (or the table `[key]`) is first written, 0 if nowhere.
fn key_line(text: &str, key: &str) -> usize {
    let is_key = |l: &str| l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')) || l == format!("[{key}]");
    text.lines().position(|l| is_key(l.trim())).map_or(0, |i| i + 1)
}

/// What the file's own keys allow together; an error names the key's line.
fn check_file_keys(path: &Path, text: &str, f: &ScenarioFile) -> Result<(), LoadError> {
    let at = |key: &str, message: String| LoadError { path: path.to_path_buf(), line: key_line(text, key), col: 1, message };
    if f.step.iter().any(|s| matches!(s, Step::Inject { .. })) && !(f.own_boot && f.qemu_only) {
        let line = text.lines().position(|l| l.trim().replace(' ', "") == "do=\"inject\"").map_or(0, |i| i + 1);
        return Err(LoadError { path: path.to_path_buf(), line, col: 1, message: "`inject` needs `own_boot = true` and `qemu_only = true`".into() });
    }
    if f.smp != 1 && !f.own_boot {
        return Err(at("smp", "`smp` needs `own_boot = true`: one boot runs every shared scenario".into()));
    }
    if !(1..=4).contains(&f.smp) {
        return Err(at("smp", format!("`smp = {}`: the guest kernel takes 1 to 4 vCPUs", f.smp)));
    }
    if f.boot_refusal_ok && !f.own_boot {
        return Err(at("boot_refusal_ok", "`boot_refusal_ok` needs `own_boot = true`: a refused boot runs nothing else".into()));
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
        None if f.step.is_empty() => Err(("description", "no `[[step]]`: a scenario needs steps, or a `[media]` table")),
        None => Ok(()),
        Some(_) if !f.own_boot => Err(("media", "`[media]` needs `own_boot = true`: it boots a device of its own")),
        Some(_) if !f.step.is_empty() => Err(("media", "`[media]` runs a session of its own: no `[[step]]` with it")),
        Some(_) if f.device.is_some() || f.qemu_only || f.boot_refusal_ok => Err(("media", "`[media]` takes no `device`, `qemu_only` or `boot_refusal_ok`")),
        Some(m) if m.buffers == 0 || m.frames == 0 => Err(("media", "`[media]` needs at least one buffer and one frame")),
        Some(m) if m.churn.is_some_and(|n| n == 0 || n > MAX_CHURN) => Err(("media", "`churn` is a number of MMAP/MUNMAP cycles, 1 to 100000")),
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
    let mut lines: Vec<usize> = text.lines().enumerate().filter(|(_, l)| l.trim() == "[[step]]").map(|(i, _)| i + 1).collect();
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

/// "11.1.3" -> (11, 1, 3); missing parts are 0.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    // A release candidate's tag ("11.2.0-rc1") ends after the last number.
    let v = v.trim();
    let numeric = v.split_once('-').map_or(v, |(n, _)| n);
    let mut it = numeric.split('.').map(|p| p.parse::<u32>());
    let major = it.next()?.ok()?;
    let minor = it.next().unwrap_or(Ok(0)).ok()?;
    let micro = it.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, micro))
}
