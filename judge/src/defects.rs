//! The known-defect lists (`tests/known-defects.toml`, `tests/backend-defects.toml`):
//! their schema and the rules every entry keeps, checked when a list's text
//! is parsed, with errors that name the file. What an entry means for a
//! verdict (matching, the intermittent rule) is `listing`'s.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::parse::{LoadError, parse_toml};

/// One known frontend defect: what a check's failure looks like on the
/// QEMU builds and accelerators it was measured on. A failure matches only
/// when every fact of the signature is seen (see `verdict`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnownDefect {
    /// Stable name; the report names it when the entry should be dropped.
    pub id: String,
    pub scenario: String,
    pub check: String,
    /// Exact builds, as `--version` prints them after "version ":
    /// "11.1.3 (Debian 1:11.1.3+ds-1)". No ranges: widen only after measuring.
    /// In the backend list (`backend = [...]`), the backend's `--version` line.
    /// In the backend list an entry applies to the exact line only: another
    /// version, or the same version built with a change, is another backend.
    #[serde(alias = "backend")]
    pub qemu: Vec<String>,
    /// In the backend list, for an entry of QEMU's row (accel `tcg`/`kvm`):
    /// the QEMU builds it was measured behind, carried over as QEMU entries
    /// are (another build of the same upstream version). Empty for the
    /// model's row and in the QEMU list.
    #[serde(default)]
    pub frontend: Vec<String>,
    /// Accelerators it was measured under: "tcg", "kvm". Under another it
    /// applies as carried over (see `accel_specific`).
    pub accel: Vec<String>,
    /// `"BUILD/ACCEL"` pairs `--bless` added to an entry with a `rate`
    /// (the fuzzer's): its signature was seen there, its figures were measured
    /// elsewhere. There it applies as carried over ("measured on" the pair
    /// it was measured on) until a run measures it and the pair is dropped.
    #[serde(default)]
    pub unmeasured: Vec<String>,
    /// Facts the failed check must show, all of them (`said` by substring,
    /// every other fact exactly).
    pub signature: BTreeMap<String, String>,
    /// For an intermittent defect: a conservative bound of the rate it was
    /// measured at (the lowest of every run; a run that saw none counts as
    /// 0.69/n). A run that does not see it is an unexpected pass only when
    /// a defect still there at a quarter of this rate would have shown with
    /// probability above 99.9 % (`KnownDefect::inconclusive`); otherwise it
    /// is inconclusive and stays a known failure.
    pub rate: Option<f64>,
    /// For a race (a doorbell probe's check): the stale kinds this entry
    /// covers. A stale kind outside them is another bug (the fact
    /// `stale_kinds` lists what a run saw, joined by " | "). A race lists no
    /// count and no rate: how often it shows is a fact of the machine it ran
    /// on (its CPU model, its load, what runs beside it), never a threshold
    /// on another. A fix shows in the order on the wire, or in a comparison
    /// of rates within one invocation (`vm-test --compare`).
    #[serde(default)]
    pub stale_kinds: Vec<String>,
    /// Whether the signature depends on the accelerator (KVM maps a
    /// read-only region as `KVM_MEM_READONLY`, TCG does not): then the
    /// entry applies under the accelerators it lists only. Otherwise an
    /// entry measured under one accelerator is carried over to another.
    #[serde(default)]
    pub accel_specific: bool,
    /// What was measured, for people.
    pub evidence: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct DefectsFile {
    defect: Vec<KnownDefect>,
}

/// The accelerator name of the backend list's rows that run on the model
/// frontend (backend-test's sessions, a media scenario's model half).
pub const MODEL_ACCEL: &str = "model";

/// The accelerators QEMU's list names.
pub const QEMU_ACCELS: [&str; 2] = ["tcg", "kvm"];

/// Parses and checks the list `text` of file `path`, whose entries name one
/// of `accels` ([`QEMU_ACCELS`]; with [`MODEL_ACCEL`] for the backend list:
/// its sessions run on the model frontend): unique ids, at least one build,
/// accelerator and fact per entry, rates in (0, 1].
pub fn parse_list(path: &Path, text: &str, accels: &[&str]) -> Result<Vec<KnownDefect>, LoadError> {
    let f: DefectsFile = parse_toml(path, text)?;
    let bad = |message: String| LoadError::in_file(path, message);
    let mut ids = std::collections::BTreeSet::new();
    for d in &f.defect {
        if !ids.insert(&d.id) {
            return Err(bad(format!("defect id {:?} is used twice", d.id)));
        }
        if d.qemu.is_empty() || d.accel.is_empty() || (d.signature.is_empty() && d.stale_kinds.is_empty()) {
            return Err(bad(format!(
                "defect {:?}: `qemu`, `accel` and `signature` (or, for a race, `stale_kinds`) must each name at least one build, accelerator and fact",
                d.id
            )));
        }
        if !d.stale_kinds.is_empty() && d.rate.is_some() {
            return Err(bad(format!(
                "defect {:?}: a race lists its `stale_kinds` and no `rate`: its rate is a fact of the machine it ran on, not a threshold on another",
                d.id
            )));
        }
        if let Some((k, _)) = d.signature.iter().find(|(k, v)| v.is_empty() && k.as_str() == "said") {
            return Err(bad(format!(
                "defect {:?}: `{k} = \"\"` would match anything said: name what must be said",
                d.id
            )));
        }
        if d.rate.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
            return Err(bad(format!("defect {:?}: rate must be in (0, 1]", d.id)));
        }
        if let Some(u) =
            d.unmeasured.iter().find(|u| !d.qemu.iter().any(|q| d.accel.iter().any(|a| **u == format!("{q}/{a}"))))
        {
            return Err(bad(format!("defect {:?}: unmeasured {u:?} is no BUILD/ACCEL pair the entry lists", d.id)));
        }
        if let Some(a) = d.accel.iter().find(|a| !accels.contains(&a.as_str())) {
            return Err(bad(format!("defect {:?}: accel {a:?} is not one of {}", d.id, accels.join(", "))));
        }
        let qemu_row = d.accel.iter().any(|a| a != MODEL_ACCEL);
        let backend_list = accels.contains(&MODEL_ACCEL);
        if backend_list && qemu_row == d.frontend.is_empty() {
            return Err(bad(format!(
                "defect {:?}: an entry of QEMU's row (accel tcg or kvm) names the QEMU builds it was measured behind in `frontend`, and only such an entry does; one accel list per row",
                d.id
            )));
        }
        if backend_list && qemu_row && d.accel.iter().any(|a| a == MODEL_ACCEL) {
            return Err(bad(format!(
                "defect {:?}: the model's row and QEMU's are listed apart (accel \"model\" alone, or tcg/kvm with `frontend`)",
                d.id
            )));
        }
        if !backend_list && !d.frontend.is_empty() {
            return Err(bad(format!("defect {:?}: `frontend` belongs in the backend list", d.id)));
        }
    }
    Ok(f.defect)
}
