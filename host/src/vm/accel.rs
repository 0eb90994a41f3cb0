//! Which accelerator a run boots with: the one rule for `--accel`. KVM only
//! where it is hardware-backed; `auto` falls back to TCG and says why.

use std::path::Path;

use super::qemu::Accel;

/// `--accel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

/// Why KVM cannot run a guest at native speed here, if it cannot: it needs
/// `/dev/kvm` to open and to be hardware-backed. A `/dev/kvm` from
/// `kvm_pvm`, or on a CPU without vmx/svm, emulates every guest instruction
/// (about 1000x slower than native, measured): a boot would never finish.
fn why_no_kvm() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Some(format!("/dev/kvm: {e}"));
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Some("/dev/kvm comes from kvm_pvm, not hardware virtualization".into());
    }
    let cpuinfo = match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(c) => c,
        Err(e) => return Some(format!("/proc/cpuinfo: {e}")),
    };
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    (!hw).then(|| "/dev/kvm exists but the CPU has no vmx/svm flag: not hardware virtualization".into())
}

/// What `--accel` comes to on this machine, before any boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelPlan {
    /// The accelerator the first boot uses.
    pub first: Accel,
    /// Whether a failed KVM boot falls back to TCG (`auto` on a KVM host).
    pub fallback: bool,
    /// Why `auto` chose TCG.
    pub note: Option<String>,
}

impl AccelPlan {
    pub fn of(choice: AccelChoice) -> Self {
        match choice {
            AccelChoice::Tcg => AccelPlan { first: Accel::Tcg, fallback: false, note: None },
            AccelChoice::Kvm => AccelPlan { first: Accel::Kvm, fallback: false, note: None },
            AccelChoice::Auto => match why_no_kvm() {
                None => AccelPlan { first: Accel::Kvm, fallback: true, note: None },
                Some(why) => AccelPlan { first: Accel::Tcg, fallback: false, note: Some(format!("TCG: {why}")) },
            },
        }
    }

    /// The accelerator, when no boot can change it (no fallback).
    pub fn settled(&self) -> Option<Accel> {
        (!self.fallback).then_some(self.first)
    }
}
