//! Debian packages through the machine's own apt configuration: what is
//! installed, installing what is missing (as root), a package's version, and a
//! private apt state reading Debian unstable from the machine's mirror (never a
//! hardcoded host). Nothing here decides which QEMU to use.

use std::fs;
use std::path::Path;

use xshell::{Shell, cmd};

use crate::progress;
use crate::shell::err;

pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// Whether this machine has apt: `apt-get` and `dpkg-query` on PATH and dpkg's database.
pub fn available() -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    ["apt-get", "dpkg-query"].iter().all(|p| crate::tools::on_path(&path, p).is_some())
        && Path::new("/var/lib/dpkg/status").is_file()
}

/// The machine's apt, one caller at a time: the kernel's and the backends'
/// builds run side by side, and apt-get and dpkg take their locks one at a
/// time (a second `apt-get update` fails at once instead of waiting).
fn system_apt_turn() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn package_installed(sh: &Shell, name: &str) -> bool {
    let fmt = "-f=${Status}";
    cmd!(sh, "dpkg-query -W {fmt} {name}")
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|s| s.contains("install ok installed"))
}

/// Installs what is missing of `packages`; calls apt only when something is.
/// Without root it installs nothing and says the exact command to run.
pub fn apt_install(sh: &Shell, packages: &[&str]) -> Result<(), String> {
    let _turn = system_apt_turn();
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !package_installed(sh, p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        return Err(format!("missing Debian packages: {list}; run as root: apt-get install -y {list}"));
    }
    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    let m = &missing;
    let phase = format!("apt-get install {list}");
    // Lists empty or old: the first try fails, the lists are updated, then the install.
    if !progress::attempt(&phase, cmd!(sh, "apt-get install -y -q {m...}"))? {
        progress::run("apt-get update", cmd!(sh, "apt-get update -q"))?;
        progress::run(&phase, cmd!(sh, "apt-get install -y -q {m...}"))
            .map_err(|e| format!("{e}; as root, run: apt-get install -y {list}"))?;
    }
    Ok(())
}

/// The installed version of a package, else apt's candidate (`None`: apt
/// knows none), and what `apt-cache policy` said.
fn known_version(sh: &Shell, name: &str) -> Result<(Option<String>, String), String> {
    let fmt = "-f=${Version}";
    if package_installed(sh, name) {
        return Ok((Some(cmd!(sh, "dpkg-query -W {fmt} {name}").read().map_err(err("dpkg-query"))?), String::new()));
    }
    let policy = cmd!(sh, "apt-cache policy {name}").quiet().ignore_stderr().read().map_err(err("apt-cache policy"))?;
    let found = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:").map(str::trim))
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_string);
    Ok((found, policy))
}

/// The version of a Debian package: installed, else the one apt would
/// install. A fresh machine's apt lists may be empty or old: when apt knows
/// no candidate, they are updated once (as root) and apt is asked again.
pub fn package_version(sh: &Shell, name: &str) -> Result<String, String> {
    let (found, mut said) = known_version(sh, name)?;
    if let Some(v) = found {
        return Ok(v);
    }
    if is_root() {
        let _turn = system_apt_turn();
        // The other build may have updated the lists, or installed it, while this one waited.
        if let (Some(v), _) = known_version(sh, name)? {
            return Ok(v);
        }
        progress::say(&format!("xtask: apt knows no version of {name}; updating the package lists"));
        let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
        progress::run("apt-get update", cmd!(sh, "apt-get update -q"))?;
        let (found, policy) = known_version(sh, name)?;
        if let Some(v) = found {
            return Ok(v);
        }
        said = policy;
    }
    let said = if said.trim().is_empty() { "nothing".to_string() } else { format!("{:?}", said.trim()) };
    let update = if is_root() { "after apt-get update, " } else { "(not root, so the lists were not updated) " };
    Err(format!(
        "{name} is not installed and apt knows no version of it {update}`apt-cache policy {name}` said {said}: pass --kernel or --kernel-src"
    ))
}

/// The base mirror this machine's apt already uses (never a hardcoded host).
fn machine_mirror(sh: &Shell) -> Result<String, String> {
    let fmt = "$(REPO_URI)\t$(RELEASE)\t$(TARGET_OF)";
    // --no-release-info: from the sources alone, so it works before the first `apt-get update`.
    let targets = cmd!(sh, "apt-get indextargets --no-release-info --format {fmt}")
        .read()
        .map_err(err("apt-get indextargets"))?;
    targets
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?, f.next()?, f.next()?))
        })
        .find(|(_, release, kind)| *kind == "deb" && !release.contains('-') && !release.contains('/'))
        .map(|(uri, _, _)| uri.to_string())
        .ok_or_else(|| {
            "the machine's apt configuration names no Debian base suite to take a mirror from; pass --qemu".into()
        })
}

/// apt with a private state under the cache, reading Debian unstable from
/// the mirror this machine's apt already uses. Nothing is installed
/// system-wide.
pub struct PrivateApt {
    dir: tempfile::TempDir,
    opts: Vec<String>,
}

impl PrivateApt {
    /// A private state with unstable's package lists, freshly updated.
    pub fn update(sh: &Shell, cache: &Path) -> Result<Self, String> {
        if cmd!(sh, "which apt-get dpkg-deb").quiet().ignore_stdout().ignore_stderr().run().is_err() {
            return Err(format!(
                "no QEMU >= 11.1 with {} found, and this is not a Debian machine to provision one: pass --qemu PATH",
                shmem_host::vm::qemu::DEVICE
            ));
        }
        let mirror = machine_mirror(sh)?;
        let dir = tempfile::Builder::new().prefix("qemu-apt-").tempdir_in(cache).map_err(|e| e.to_string())?;
        let t = dir.path();
        for d in ["state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"] {
            fs::create_dir_all(t.join(d)).map_err(|e| e.to_string())?;
        }
        fs::write(t.join("state/status"), "").map_err(|e| e.to_string())?;
        fs::write(
            t.join("etc/sources.list"),
            format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} unstable main\n"),
        )
        .map_err(|e| e.to_string())?;
        let d = t.display();
        let opts: Vec<String> = [
            format!("Dir::State={d}/state"),
            format!("Dir::State::status={d}/state/status"),
            format!("Dir::Cache={d}/cache"),
            format!("Dir::Etc::SourceList={d}/etc/sources.list"),
            format!("Dir::Etc::SourceParts={d}/etc/sources.list.d"),
            format!("Dir::Etc::Preferences={d}/etc/preferences"),
            format!("Dir::Etc::PreferencesParts={d}/etc/preferences.d"),
            "APT::Architectures::=amd64".into(),
            "Debug::NoLocking=1".into(),
        ]
        .into_iter()
        // As root, apt would download as `_apt`, which cannot enter our private dirs.
        .chain(is_root().then(|| "APT::Sandbox::User=root".to_string()))
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        let o = &opts;
        progress::run("Debian unstable's package lists (private apt state)", cmd!(sh, "apt-get -q {o...} update"))?;
        Ok(PrivateApt { dir, opts })
    }

    /// The versions of `package` the mirror has, the candidate first.
    pub fn versions(&self, package: &str) -> Result<Vec<String>, String> {
        let sh = Shell::new().map_err(|e| e.to_string())?;
        let o = &self.opts;
        let text = cmd!(sh, "apt-cache {o...} madison {package}").quiet().read().map_err(err("apt-cache madison"))?;
        Ok(text
            .lines()
            .filter_map(|l| Some(l.split('|').nth(1)?.trim().to_string()))
            .filter(|v| !v.is_empty())
            .collect())
    }

    /// Downloads `package` at `version` and its whole dependency closure
    /// and unpacks them into `root` (emptied first).
    pub fn install_into(&self, sh: &Shell, package: &str, version: &str, root: &Path) -> Result<(), String> {
        let o = &self.opts;
        let spec = format!("{package}={version}");
        progress::run(
            &format!("{package}: download with its dependencies"),
            cmd!(sh, "apt-get -q -y {o...} --download-only --no-install-recommends install {spec}"),
        )?;
        let _ = fs::remove_dir_all(root);
        fs::create_dir_all(root).map_err(|e| e.to_string())?;
        let debs = fs::read_dir(self.dir.path().join("cache/archives")).map_err(|e| e.to_string())?;
        for deb in debs.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "deb")) {
            cmd!(sh, "dpkg-deb -x {deb} {root}").quiet().run().map_err(err("unpacking a package"))?;
        }
        Ok(())
    }
}
