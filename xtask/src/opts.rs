//! The command line of every `cargo xtask` command, declared once with
//! clap: the parser, `--help`, and `docs/cli.md` (generated from these
//! declarations and held to them by a test). Parsing only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shmem_host::vm::AccelChoice;

/// The end-to-end test appliance for vhost-user shared memory: a real QEMU,
/// a real guest kernel, real vhost-user sockets, and a model of QEMU's
/// semantics beside it.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, propagate_version = true)]
#[command(after_help = "Exit status: 0 all passed, 1 a verdict failed, 2 usage error, 3 could not run, \
                        130 interrupted (docs/ci.md).")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole test sequence `.ci/run` calls: cargo fmt --check, clippy, the workspace's tests, the VM suite,
    /// a 45 s fuzz, moved-qemu and backend-test.
    Test(TestArgs),
    /// Build what the guest needs, boot QEMU, run the scenarios on QEMU and on the model, report.
    VmTest(VmTestArgs),
    /// Differential fuzzer, QEMU against the model; an unlisted divergence is shrunk into DIR/found-HASH.toml
    /// and fails the run.
    Fuzz(FuzzArgs),
    /// The suite against wrappers of the QEMU in use that print another --version: the same upstream carries
    /// the listed entries over; another upstream fails naming them, --bless adds it, the next run passes.
    MovedQemu(MovedArgs),
    /// A vhost-user backend that sends SHMEM_MAP (a virtio-media one) against the model frontend, as its
    /// virtio-media driver, with refused, delayed and dropped requests; then the appliance's own backend.
    BackendTest(BackendTestArgs),
    /// vm-test N times, then every figure's min/median/max as JSON (or --self-compare: the false-alarm rate
    /// of --compare).
    Bench(BenchArgs),
    /// The CI contract as CI meets it: each exit status, the JSON reports against the schema, a FAIL's
    /// summary and its rerun command pasted into a shell, colour only on a terminal, --compare --junit.
    Contract(ContractArgs),
    /// A machine without Debian's tools, as vm-test meets one: apt and dpkg hidden in a private mount
    /// namespace, Debian's stock kernel as the host's kernel, QEMU from PATH; the suite must pass, and a
    /// missing build tool must be named with its install commands.
    NoApt(ContractArgs),
    /// The HTML report in a real browser: headless Chromium (installed when missing) renders the report of
    /// a media scenario and the probe; the chart, the links and the plots are checked; a screenshot is kept.
    HtmlCheck(ContractArgs),
    /// Internal: one own-boot scenario in a process of its own, started by the runner.
    #[command(hide = true)]
    OwnBootWorker(WorkerArgs),
}

/// `--accel`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccelArg {
    /// KVM if it boots and is hardware-backed, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl AccelArg {
    pub fn choice(self) -> AccelChoice {
        match self {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Kvm => AccelChoice::Kvm,
            AccelArg::Tcg => AccelChoice::Tcg,
        }
    }
}

/// Where QEMU and the guest come from: every command that boots.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "QEMU and guest")]
pub struct GuestOpts {
    /// QEMU to use (else $QEMU, else qemu-system-x86_64 on PATH, else the pinned build, provisioned).
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// Use this bzImage instead of building one; `host`: the host's own kernel (/boot/vmlinuz-*), also what
    /// runs when there is no apt for Debian's kernel source and no --kernel-src.
    #[arg(long, value_name = "FILE|host")]
    pub kernel: Option<PathBuf>,
    /// Build the kernel from this source tree (default: Debian's linux-source-6.12).
    #[arg(long, value_name = "DIR")]
    pub kernel_src: Option<PathBuf>,
    /// A kernel config fragment whose options replace those of images/kernel.config in the kernel built
    /// (images/kernel-virtio-pci.config: virtio_pci built in, as Fedora's, Arch's and Ubuntu's kernels have it).
    #[arg(long, value_name = "FILE", conflicts_with = "kernel")]
    pub kernel_config: Option<PathBuf>,
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
}

impl GuestOpts {
    /// These options as arguments again (for a command run as a child).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let given = [
            ("--qemu", &self.qemu),
            ("--kernel", &self.kernel),
            ("--kernel-src", &self.kernel_src),
            ("--kernel-config", &self.kernel_config),
        ];
        for (key, v) in given {
            if let Some(v) = v {
                a.extend([key.to_string(), v.display().to_string()]);
            }
        }
        let accel = self.accel.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
        a.extend(["--accel".into(), accel]);
        a
    }
}

/// Which scenarios run and which lists judge them.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Scenarios and lists")]
pub struct SuiteOpts {
    /// Run the scenario files (*.toml) of DIR instead of tests/scenarios; repeatable.
    #[arg(long, value_name = "DIR")]
    pub scenarios: Vec<PathBuf>,
    /// Run only scenarios whose name contains TEXT; repeatable (any of them).
    #[arg(long, value_name = "TEXT")]
    pub filter: Vec<String>,
    /// With --filter: the name must equal TEXT, not contain it.
    #[arg(long, requires = "filter")]
    pub exact: bool,
    /// Run K times the iterations of every doorbell probe: a rare stale read, or its absence, needs more.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub probe_scale: u32,
    /// List the scenarios (name and description) and exit.
    #[arg(long)]
    pub list: bool,
    /// Judge by this list of known QEMU defects (default tests/known-defects.toml); none: every failure is a
    /// FAIL (QEMU's and the backends' lists).
    #[arg(long, value_name = "PATH|none")]
    pub known_defects: Option<String>,
    /// Judge the media scenarios' backends by this list (default tests/backend-defects.toml).
    #[arg(long, value_name = "PATH")]
    pub backend_defects: Option<PathBuf>,
    /// The published vhost-device-media binary the media scenarios run against (default: built once, cached).
    #[arg(long, value_name = "PATH")]
    pub media_backend: Option<PathBuf>,
}

impl SuiteOpts {
    /// The suite as `vm-test` runs it with no option.
    pub fn defaults() -> Self {
        SuiteOpts {
            scenarios: Vec::new(),
            filter: Vec::new(),
            exact: false,
            probe_scale: 1,
            list: false,
            known_defects: None,
            backend_defects: None,
            media_backend: None,
        }
    }
}

/// The report's files.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Reports")]
pub struct FileReports {
    /// Also write the report as JSON (`format` 1; vm-test's is published as docs/report.schema.json).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Also write the report as JUnit XML (with --compare: the comparison, a regression a failure).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page: the verdicts, every check, and for vm-test the
    /// sequence chart of each scenario the relay recorded and the probe's plots (--compare: A and B side by side).
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
}

/// What is written and shown besides the verdict table.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Reports")]
pub struct ReportOpts {
    #[command(flatten)]
    pub files: FileReports,
    /// Show every KNOWN-FAIL's evidence, not one line each.
    #[arg(long, short)]
    pub verbose: bool,
    /// Print GitHub Actions annotations for what needs attention (default: when GITHUB_ACTIONS=true).
    #[arg(long)]
    pub github: bool,
}

/// `--compare-budget`'s default: about two minutes of probe boots, which
/// under TCG on two cores is some 9-12 boots a side idle, 6-8 busy.
pub const COMPARE_BUDGET: u64 = 120;

#[derive(Args, Clone, Debug)]
pub struct VmTestArgs {
    #[command(flatten)]
    pub guest: GuestOpts,
    #[command(flatten)]
    pub suite: SuiteOpts,
    #[command(flatten)]
    pub report: ReportOpts,
    /// Run the suite on --qemu (A, the baseline) and on QEMU2 (B); print what B fixed, regressed and fails
    /// differently; fail on a regression only.
    #[arg(long, value_name = "QEMU2", help_heading = "Comparing and blessing")]
    pub compare: Option<PathBuf>,
    /// How long --compare may boot the probe for A and B in turn to compare their rates (0: not at all).
    #[arg(long, value_name = "SECS", default_value_t = COMPARE_BUDGET, help_heading = "Comparing and blessing")]
    pub compare_budget: u64,
    /// Add this QEMU build and accelerator to exactly the known-defect entries (listed for another version
    /// or accelerator) whose signatures this run's failures showed, in QEMU's list and the backends'.
    #[arg(long, conflicts_with = "compare", help_heading = "Comparing and blessing")]
    pub bless: bool,
}

impl VmTestArgs {
    /// One suite run of `guest` and `suite`: no comparison, no report file.
    pub fn plain(guest: GuestOpts, suite: SuiteOpts) -> Self {
        let report = ReportOpts::default();
        VmTestArgs { guest, suite, report, compare: None, compare_budget: COMPARE_BUDGET, bless: false }
    }
}

#[derive(Args, Clone, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    pub guest: GuestOpts,
}

#[derive(Args, Clone, Debug)]
pub struct FuzzArgs {
    #[command(flatten)]
    pub guest: GuestOpts,
    /// The generator's seed (default: from the clock; printed first, so a run can be repeated).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// How long to generate operations.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub time: u64,
    /// Stop after N operations (default: no limit).
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,
    /// How long shrinking a divergence may take.
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    pub shrink_time: u64,
    /// Where a shrunk divergence is written (default tests/scenarios).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Judge by this list of known QEMU defects (default tests/known-defects.toml); none: every divergence
    /// fails.
    #[arg(long, value_name = "PATH|none")]
    pub known_defects: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct ContractArgs {
    #[command(flatten)]
    pub guest: GuestOpts,
}

#[derive(Args, Clone, Debug)]
pub struct MovedArgs {
    #[command(flatten)]
    pub guest: GuestOpts,
}

#[derive(Args, Clone, Debug, Default)]
pub struct BackendTestArgs {
    /// The backend's command line, {socket} standing for its socket path (default: vhost-device-media with
    /// simple-capture, built once).
    #[arg(long, value_name = "CMD")]
    pub backend: Option<String>,
    /// The vhost-device-media binary to test (instead of building the published crate).
    #[arg(long, value_name = "PATH", conflicts_with = "backend")]
    pub media_backend: Option<PathBuf>,
    /// Run only the sessions named NAME; repeatable.
    #[arg(long, value_name = "NAME")]
    pub session: Vec<String>,
    /// List the sessions and exit.
    #[arg(long)]
    pub list: bool,
    /// Judge by this list of backend defects (default tests/backend-defects.toml); none: every failure fails.
    #[arg(long, value_name = "PATH|none")]
    pub known_defects: Option<String>,
    #[command(flatten)]
    pub files: FileReports,
}

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub guest: GuestOpts,
    #[command(flatten)]
    pub suite: SuiteOpts,
    /// How many times to run the suite.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Instead: --compare of the QEMU with itself N times idle, then N times with a CPU hog from 12 s on.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub self_compare: Option<u32>,
    /// With --self-compare: B holds every SHMEM reply this long (a known change to detect), idle only.
    #[arg(long, value_name = "US", requires = "self_compare")]
    pub hold_reply_us: Option<u64>,
}

/// What the runner passes a worker: everything one own boot needs.
#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    #[arg(long)]
    pub qemu: PathBuf,
    #[arg(long)]
    pub build: String,
    #[arg(long)]
    pub kernel: PathBuf,
    #[arg(long)]
    pub initramfs: PathBuf,
    #[arg(long)]
    pub scenario: PathBuf,
    #[arg(long)]
    pub accel: String,
    #[arg(long)]
    pub logs: PathBuf,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub probe_scale: u32,
    /// QEMU's half alone (`--compare`'s replicated probe boots).
    #[arg(long)]
    pub qemu_only: bool,
    /// Each virtio-media backend build, with its command and version at the same position.
    #[arg(long)]
    pub media_build: Vec<String>,
    #[arg(long)]
    pub media_command: Vec<String>,
    #[arg(long)]
    pub media_version: Vec<String>,
}
