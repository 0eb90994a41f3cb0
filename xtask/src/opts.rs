//! The command line of vm-test, bench, fuzz and moved-qemu: options parsed
//! into `Opts`, and `--key VALUE` taken out of a list. Parsing only.

use std::path::PathBuf;

use shmem_host::vm::AccelChoice;

pub struct Opts {
    pub qemu: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
    pub kernel_src: Option<PathBuf>,
    pub accel: AccelChoice,
    /// `--filter TEXT`, repeatable: scenarios whose name contains any of them.
    pub filter: Vec<String>,
    pub probe_scale: u32,
    pub list: bool,
    pub json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub known_defects: Option<String>,
    /// `--backend-defects PATH`: the backend list the media scenarios are judged by (default tests/backend-defects.toml).
    pub backend_defects: Option<PathBuf>,
    pub compare: Option<PathBuf>,
    /// `--scenarios DIR`, repeatable (default: tests/scenarios).
    pub scenarios: Vec<PathBuf>,
    /// `--bless`: add this build and accelerator to the entries listed elsewhere that the run's failures matched.
    pub bless: bool,
    /// `--media-backend PATH`: the virtio-media backend of media scenarios (default: built and cached).
    pub media_backend: Option<PathBuf>,
    /// `--compare-budget SECS`: how long `--compare` may boot the probe for
    /// A and B in turn to compare their rates (0: not at all).
    pub compare_budget: u64,
}

/// `--compare-budget`'s default: about two minutes of probe boots, which
/// under TCG on two cores is some 9-12 boots a side idle, 6-8 busy.
pub const COMPARE_BUDGET: u64 = 120;

pub fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        qemu: None,
        kernel: None,
        kernel_src: None,
        accel: AccelChoice::Auto,
        filter: Vec::new(),
        probe_scale: 1,
        list: false,
        json: None,
        junit: None,
        known_defects: None,
        backend_defects: None,
        compare: None,
        scenarios: Vec::new(),
        bless: false,
        media_backend: None,
        compare_budget: COMPARE_BUDGET,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--qemu" => o.qemu = Some(val()?.into()),
            "--kernel" => o.kernel = Some(val()?.into()),
            "--kernel-src" => o.kernel_src = Some(val()?.into()),
            "--accel" => {
                o.accel = match val()?.as_str() {
                    "auto" => AccelChoice::Auto,
                    "kvm" => AccelChoice::Kvm,
                    "tcg" => AccelChoice::Tcg,
                    other => return Err(format!("--accel {other:?}: use auto, kvm or tcg")),
                }
            }
            "--filter" => o.filter.push(val()?),
            "--probe-scale" => o.probe_scale = parse_probe_scale(&val()?)?,
            "--list" => o.list = true,
            "--json" => o.json = Some(val()?.into()),
            "--junit" => o.junit = Some(val()?.into()),
            "--known-defects" => o.known_defects = Some(val()?),
            "--backend-defects" => o.backend_defects = Some(val()?.into()),
            "--compare" => o.compare = Some(val()?.into()),
            "--scenarios" => o.scenarios.push(val()?.into()),
            "--bless" => o.bless = true,
            "--media-backend" => o.media_backend = Some(val()?.into()),
            "--compare-budget" => o.compare_budget = val()?.parse().map_err(|_| format!("{a}: a number of seconds"))?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

pub fn parse_probe_scale(v: &str) -> Result<u32, String> {
    v.parse().ok().filter(|&k| k >= 1).ok_or_else(|| format!("--probe-scale {v:?}: a whole number, at least 1"))
}

/// Takes `--key VALUE` out of `args`, parsed.
pub fn take_opt<T: std::str::FromStr>(args: &mut Vec<String>, key: &str) -> Result<Option<T>, String> {
    let Some(i) = args.iter().position(|a| a == key) else { return Ok(None) };
    let v = args.get(i + 1).cloned().ok_or_else(|| format!("{key} needs a value"))?;
    args.drain(i..i + 2);
    v.parse().map(Some).map_err(|_| format!("{key} {v:?}: not a valid value"))
}
