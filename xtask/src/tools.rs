//! What a build needs from the machine, checked before it starts: each
//! tool or library that is missing named, with the command that installs
//! it for the package manager this machine has (apt, dnf, pacman, zypper,
//! apk). Looks only; installing is `apt.rs`'s, and only on Debian.

use std::path::{Path, PathBuf};

/// The package managers whose install commands are known, in the order they are looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Apt,
    Dnf,
    Pacman,
    Zypper,
    Apk,
}

impl Manager {
    const ALL: [Manager; 5] = [Manager::Apt, Manager::Dnf, Manager::Pacman, Manager::Zypper, Manager::Apk];

    fn program(self) -> &'static str {
        match self {
            Manager::Apt => "apt-get",
            Manager::Dnf => "dnf",
            Manager::Pacman => "pacman",
            Manager::Zypper => "zypper",
            Manager::Apk => "apk",
        }
    }

    /// The command that installs `packages`.
    pub fn install_line(self, packages: &[&str]) -> String {
        let list = packages.join(" ");
        match self {
            Manager::Apt => format!("apt-get install -y {list}"),
            Manager::Dnf => format!("dnf install -y {list}"),
            Manager::Pacman => format!("pacman -S --needed {list}"),
            Manager::Zypper => format!("zypper install -y {list}"),
            Manager::Apk => format!("apk add {list}"),
        }
    }

    /// The first package manager on `path` (a `PATH` value).
    pub fn found(path: &str) -> Option<Manager> {
        Manager::ALL.into_iter().find(|m| on_path(path, m.program()).is_some())
    }
}

/// How a need is looked for.
#[derive(Clone, Copy, Debug)]
pub enum Look {
    /// A program on PATH.
    Program(&'static str),
    /// A header under /usr/include.
    Header(&'static str),
    /// A shared library (`NAME.so*`) in the usual library directories.
    Library(&'static str),
}

/// One thing a build needs, and its package under each manager
/// (apt, dnf, pacman, zypper, apk).
#[derive(Clone, Copy, Debug)]
pub struct Need {
    pub what: &'static str,
    pub look: Look,
    pub packages: [&'static str; 5],
}

impl Need {
    fn package(&self, m: Manager) -> &'static str {
        self.packages[Manager::ALL.iter().position(|x| *x == m).unwrap_or(0)]
    }
}

/// What building the guest kernel needs (`make tinyconfig` + the fragment + `bzImage`, LZ4-compressed).
pub const KERNEL: [Need; 8] = [
    Need { what: "a C compiler (cc)", look: Look::Program("cc"), packages: ["gcc", "gcc", "gcc", "gcc", "gcc"] },
    Need { what: "make", look: Look::Program("make"), packages: ["make"; 5] },
    Need { what: "flex", look: Look::Program("flex"), packages: ["flex"; 5] },
    Need { what: "bison", look: Look::Program("bison"), packages: ["bison"; 5] },
    Need { what: "bc", look: Look::Program("bc"), packages: ["bc"; 5] },
    Need { what: "lz4", look: Look::Program("lz4"), packages: ["lz4"; 5] },
    Need {
        what: "xz (to unpack the source)",
        look: Look::Program("xz"),
        packages: ["xz-utils", "xz", "xz", "xz", "xz"],
    },
    Need {
        what: "the libelf headers (gelf.h)",
        look: Look::Header("gelf.h"),
        packages: ["libelf-dev", "elfutils-libelf-devel", "libelf", "libelf-devel", "elfutils-dev"],
    },
];

/// What building vhost-device-media needs besides cargo: bindgen's libclang and a linker.
pub const MEDIA: [Need; 2] = [
    Need { what: "a C compiler (cc)", look: Look::Program("cc"), packages: ["gcc", "gcc", "gcc", "gcc", "gcc"] },
    Need {
        what: "libclang (for bindgen)",
        look: Look::Library("libclang"),
        packages: ["libclang1-14", "clang-libs", "clang", "libclang13", "clang-libs"],
    },
];

/// `name` as a regular executable file in a directory of `path`.
pub fn on_path(path: &str, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn found(look: Look, path: &str) -> bool {
    match look {
        Look::Program(p) => on_path(path, p).is_some(),
        Look::Header(h) => Path::new("/usr/include").join(h).is_file(),
        Look::Library(l) => {
            ["/usr/lib", "/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/llvm"]
                .iter()
                .filter_map(|d| std::fs::read_dir(d).ok())
                .flat_map(|r| r.flatten())
                .any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(l) && n.contains(".so")))
        }
    }
}

/// The needs of `needs` not met on this machine (`path`: its PATH).
pub fn missing(needs: &[Need], path: &str) -> Vec<Need> {
    needs.iter().copied().filter(|n| !found(n.look, path)).collect()
}

/// The error for what is missing: each named, and the install command for
/// `manager` (the one found), or for apt and dnf when none was found.
pub fn missing_text(build: &str, missing: &[Need], manager: Option<Manager>) -> String {
    let names: Vec<&str> = missing.iter().map(|n| n.what).collect();
    let lines: Vec<String> = match manager {
        Some(m) => vec![line(m, missing)],
        None => [Manager::Apt, Manager::Dnf].map(|m| line(m, missing)).to_vec(),
    };
    format!("{build} needs what this machine lacks: {}; install it with:\n  {}", names.join(", "), lines.join("\n  "))
}

fn line(m: Manager, missing: &[Need]) -> String {
    let mut pkgs: Vec<&str> = missing.iter().map(|n| n.package(m)).collect();
    pkgs.dedup();
    m.install_line(&pkgs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_install_command() {
        let bison = [KERNEL[3]];
        let apt = missing_text("building the guest kernel", &bison, Some(Manager::Apt));
        assert!(apt.contains("bison") && apt.ends_with("apt-get install -y bison"), "{apt}");
        let dnf = missing_text("building the guest kernel", &[KERNEL[7]], Some(Manager::Dnf));
        assert!(dnf.ends_with("dnf install -y elfutils-libelf-devel"), "{dnf}");
        let none = missing_text("building the guest kernel", &bison, None);
        assert!(none.contains("apt-get install -y bison") && none.contains("dnf install -y bison"), "{none}");
    }

    #[test]
    fn a_tool_is_found_on_path_only_as_an_executable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bison"), "").expect("write");
        let path = dir.path().display().to_string();
        assert!(on_path(&path, "bison").is_none(), "a file that cannot run is not bison");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("bison"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(on_path(&path, "bison").is_some());
        assert_eq!(missing(&[KERNEL[3]], &path).len(), 0);
        assert_eq!(missing(&[KERNEL[2]], &path).len(), 1, "flex is not in that directory");
    }
}
