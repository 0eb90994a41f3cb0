//! QEMU as a child process: capability probe, command line, start with the
//! agent's serial socket, and kill-and-reap on drop. It knows nothing of
//! scenarios.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

pub use super::qemu_exit::describe_status;
use super::qemu_exit::{as_qemu_ended, is_script};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::interrupted;
use shmem_judge::outcome::ErrorKind;

/// Oldest QEMU with vhost-user shared memory.
pub const MIN_VERSION: (u32, u32, u32) = (11, 1, 0);
pub const DEVICE: &str = "vhost-user-test-device-pci";
/// How long a QEMU whose sockets broke may take to be reaped.
pub const DEATH_GRACE: Duration = Duration::from_secs(2);
/// Why QEMU could not be used, started or talked to.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// The binary is not a usable QEMU: what was found, what is needed.
    #[error("{0}")]
    Unusable(String),
    /// The QEMU process ended (how, and what the runner was doing).
    #[error("QEMU exited ({exit}) while {during}")]
    Exited { exit: String, during: String },
    /// There is no QEMU process (never started, or already reaped).
    #[error("QEMU is not running ({during})")]
    NotRunning { during: String },
    #[error("timed out {during}")]
    Timeout { during: String },
    #[error("interrupted {during}")]
    Interrupted { during: String },
    /// The agent's serial port said something the protocol does not allow,
    /// or closed while QEMU lives.
    #[error("{0}")]
    Agent(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

impl QemuError {
    /// The kind of failure, for callers that decide by kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            QemuError::Unusable(_) => ErrorKind::BadInput,
            QemuError::Exited { .. } | QemuError::NotRunning { .. } => ErrorKind::Dead,
            QemuError::Timeout { .. } => ErrorKind::Timeout,
            QemuError::Interrupted { .. } => ErrorKind::Interrupted,
            QemuError::Agent(_) => ErrorKind::Protocol,
            QemuError::Io { .. } => ErrorKind::Io,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> QemuError {
    let what = what.into();
    move |source| QemuError::Io { what, source }
}

/// What the probe learnt of a QEMU binary.
#[derive(Clone, Debug)]
pub struct QemuInfo {
    pub path: PathBuf,
    pub version: (u32, u32, u32),
    pub version_text: String,
    /// The build's identity: what `--version` prints after "version ", e.g.
    /// "11.1.3 (Debian 1:11.1.3+ds-1)". Known defects key on it.
    pub build: String,
}

/// What kind of build a QEMU build string names, when it is not a release:
/// QEMU's own numbering puts development trees at x.y.50 (after x.y.0) and
/// release candidates of x.(y+1).0 at x.y.90 and up; a checkout's build
/// says which commit in parentheses (`v11.1.0-611-g1a2b3c4d`: 611 commits
/// after v11.1.0). `None` for a release (`11.1.3`, `11.1.3 (Debian ...)`).
pub fn development_kind(build: &str) -> Option<String> {
    let (number, rest) = build.split_once(' ').unwrap_or((build, ""));
    let tag = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).filter(|t| t.starts_with('v'));
    let at = tag.map(|t| format!(" ({t})")).unwrap_or_default();
    if let Some((_, rc)) = number.split_once("-rc") {
        return Some(format!("release candidate {rc} of {}", number.split_once('-').map_or(number, |(n, _)| n)));
    }
    let (major, minor, micro) = super::scenario::parse_version(number)?;
    match micro {
        90.. => Some(format!("a release candidate of {major}.{}.0{at}", minor + 1)),
        50..=89 => Some(format!("a development build after {major}.{minor}.0{at}")),
        _ if tag.is_some_and(|t| t.contains("-g")) => Some(format!("a development build{at}")),
        _ => None,
    }
}

fn run_probe(path: &Path, args: &[&str]) -> Result<String, QemuError> {
    let mut cmd = Command::new(path);
    cmd.args(args);
    let out = crate::bounded::output_within(cmd, crate::bounded::PROBE_TIMEOUT).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => QemuError::Unusable(format!(
            "`{} {}` gave no answer within {:?}",
            path.display(),
            args.join(" "),
            crate::bounded::PROBE_TIMEOUT
        )),
        _ => QemuError::Unusable(format!("{} cannot be run: {e}", path.display())),
    })?;
    if !out.status.success() {
        return Err(QemuError::Unusable(format!(
            "`{} {}` failed with {}: {}",
            path.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Accepts `path` only if it is a QEMU >= 11.1 with the test device.
pub fn probe(path: &Path) -> Result<QemuInfo, QemuError> {
    let text = run_probe(path, &["--version"])?;
    let first = text.lines().next().unwrap_or("").to_string();
    let build = first.split_once(" version ").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
    let version = build.split_whitespace().next().and_then(super::scenario::parse_version).ok_or_else(|| {
        QemuError::Unusable(format!("{} is not a QEMU: `--version` printed {first:?}", path.display()))
    })?;
    if version < MIN_VERSION {
        return Err(QemuError::Unusable(format!(
            "{} is QEMU {}.{}.{}; vhost-user shared memory needs QEMU >= {}.{}.{}",
            path.display(),
            version.0,
            version.1,
            version.2,
            MIN_VERSION.0,
            MIN_VERSION.1,
            MIN_VERSION.2
        )));
    }
    let devices = run_probe(path, &["-machine", "none", "-device", "help"])?;
    if !devices.contains(&format!("\"{DEVICE}\"")) {
        return Err(QemuError::Unusable(format!("{} (QEMU {first}) has no {DEVICE} device", path.display())));
    }
    Ok(QemuInfo { path: path.to_path_buf(), version, version_text: first, build })
}

/// Why a boot did not reach the agent: QEMU died (a verdict: how it ended
/// and what it said) or something else went wrong (an error).
#[derive(Debug, thiserror::Error)]
pub enum BootFailure {
    #[error("QEMU died while booting ({exit}); it said last:\n{said}")]
    Died { exit: String, said: String },
    #[error(transparent)]
    Other(QemuError),
}

/// Which accelerator a boot uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// As QEMU and the known-defects list name it: "kvm", "tcg".
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Everything one boot needs.
#[derive(Clone, Debug)]
pub struct BootConfig {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: Accel,
    pub vhost_socket: PathBuf,
    pub virtio_id: u16,
    /// Virtqueues of the device (`num_vqs`): 1 for the test device, 2 for virtio-media.
    pub num_vqs: u16,
    /// Where QEMU's stderr and the guest console are logged.
    pub log_dir: PathBuf,
    /// The agent's serial socket (a short path: sockets are limited to 108 bytes).
    pub agent_socket: PathBuf,
    pub ready_timeout: Duration,
    /// Guest vCPUs.
    pub smp: u8,
}

fn stderr_log(cfg: &BootConfig) -> PathBuf {
    cfg.log_dir.join(format!("qemu-{:?}.log", cfg.accel).to_lowercase())
}

/// The last 20 lines of a log file.
fn tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().rev().take(20).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A running QEMU with the agent connected. Killed and reaped on drop.
pub struct Qemu {
    child: Option<Child>,
    /// The program started is a script (a wrapper): see `qemu_exit::as_qemu_ended`.
    script: bool,
    /// How QEMU ended, once it was reaped.
    pub exit: Option<ExitStatus>,
    /// Guest vCPUs.
    pub smp: u8,
    pub accel: Accel,
    pub console_log: PathBuf,
    pub stderr_log: PathBuf,
    pub agent: BufReader<UnixStream>,
    pub ready_line: String,
    pub boot_time: Duration,
}

impl Qemu {
    /// Starts QEMU and waits for the agent's `ready` line. When QEMU itself
    /// died, the error is [`BootFailure::Died`] with how it ended ("signal 6
    /// (SIGABRT)") and what it said.
    pub fn boot(cfg: &BootConfig) -> Result<Self, BootFailure> {
        Self::boot_inner(cfg).map_err(|(e, exit)| match exit {
            // What QEMU itself said; the runner's own words (`e`) only restate the exit.
            Some(status) => BootFailure::Died { exit: describe_status(status), said: tail(&stderr_log(cfg)) },
            None => BootFailure::Other(e),
        })
    }

    fn boot_inner(cfg: &BootConfig) -> Result<Self, (QemuError, Option<ExitStatus>)> {
        let agent_sock = cfg.agent_socket.clone();
        let listener =
            UnixListener::bind(&agent_sock).map_err(|e| (io_err(format!("bind {}", agent_sock.display()))(e), None))?;
        // The socket file goes when boot ends, however it ends.
        struct Unlink<'a>(&'a Path);
        impl Drop for Unlink<'_> {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(self.0);
            }
        }
        let _unlink = Unlink(&agent_sock);
        listener.set_nonblocking(true).map_err(|e| (io_err("agent socket")(e), None))?;
        let console_log = cfg.log_dir.join(format!("console-{:?}.log", cfg.accel).to_lowercase());
        let stderr_log = stderr_log(cfg);
        let stderr =
            File::create(&stderr_log).map_err(|e| (io_err(format!("create {}", stderr_log.display()))(e), None))?;
        let accel = cfg.accel.name();
        let mut cmd = Command::new(&cfg.qemu);
        cmd.args(["-machine", &format!("q35,accel={accel},memory-backend=mem")])
            .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-m", "256M"])
            .args(["-smp", &cfg.smp.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(&cfg.kernel)
            .arg("-initrd")
            .arg(&cfg.initramfs)
            // noapictimer: no 0.2 s local APIC timer calibration (timer ticks come from the PIT);
            // noreplace-smp: a one-vCPU guest does not patch its lock prefixes away (60 ms of TB invalidation under TCG).
            .args([
                "-append",
                &format!("console=ttyS0 reboot=t panic=-1 noapictimer noreplace-smp agent.virtio_id={}", cfg.virtio_id),
            ])
            .args(["-serial", &format!("file:{}", console_log.display())])
            .args(["-chardev", &format!("socket,id=agent,path={}", agent_sock.display())])
            .args(["-device", "isa-serial,chardev=agent"])
            .args(["-chardev", &format!("socket,id=vu0,path={}", cfg.vhost_socket.display())])
            .args(["-device", &format!("{DEVICE},chardev=vu0,virtio-id={},num_vqs={}", cfg.virtio_id, cfg.num_vqs)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Own process group: a Ctrl-C reaches us, and we stop QEMU ourselves.
            .process_group(0);
        crate::spawn::stdio_only(&mut cmd);
        let start = Instant::now();
        let child = cmd.spawn().map_err(|e| (io_err(format!("starting {}", cfg.qemu.display()))(e), None))?;
        let mut q = Qemu {
            child: Some(child),
            script: is_script(&cfg.qemu),
            exit: None,
            smp: cfg.smp,
            accel: cfg.accel,
            console_log,
            stderr_log,
            agent: BufReader::new(UnixStream::pair().map_err(|e| (io_err("socket pair")(e), None))?.0),
            ready_line: String::new(),
            boot_time: Duration::ZERO,
        };
        match q.await_agent(&listener, start + cfg.ready_timeout, cfg.ready_timeout) {
            Ok(()) => {
                q.boot_time = start.elapsed();
                Ok(q)
            }
            Err(e) => Err((e, q.exit)),
        }
    }

    /// Waits for QEMU to connect the agent's serial port and for the agent's `ready` line.
    fn await_agent(&mut self, listener: &UnixListener, deadline: Instant, timeout: Duration) -> Result<(), QemuError> {
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_err("accept agent serial")(e)),
            }
            self.check_running("connecting the agent serial port")?;
            if interrupted() {
                return Err(QemuError::Interrupted {
                    during: "while waiting for QEMU to connect the agent serial port".into(),
                });
            }
            if Instant::now() > deadline {
                return Err(QemuError::Timeout {
                    during: format!("after {timeout:?} waiting for QEMU to connect the agent serial port"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stream.set_nonblocking(false).map_err(io_err("agent serial"))?;
        self.agent = BufReader::new(stream);
        let line = self.read_line(deadline, "waiting for the guest agent's ready line")?;
        if !line.starts_with("ready ") {
            return Err(QemuError::Agent(format!("guest agent's first line is not `ready`: {line:?}")));
        }
        self.ready_line = line;
        Ok(())
    }

    /// Err with the exit status if QEMU is gone.
    pub fn check_running(&mut self, during: &str) -> Result<(), QemuError> {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
            self.child = None;
            self.exit = Some(as_qemu_ended(status, self.script));
        }
        match self.exit {
            Some(status) => Err(QemuError::Exited { exit: describe_status(status), during: during.to_string() }),
            None => Ok(()),
        }
    }

    /// The process we started: QEMU, or a `--qemu` wrapper around it
    /// (the leader of their process group).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The QEMU a wrapper runs (the wrapper itself when it `exec`s): where
    /// its vCPU threads are.
    pub fn qemu_pid(&self) -> Option<u32> {
        self.pid().map(crate::spawn::leaf)
    }

    /// Reads one line from the agent before `deadline`, watching QEMU.
    pub fn read_line(&mut self, deadline: Instant, during: &str) -> Result<String, QemuError> {
        let mut line = String::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(QemuError::Timeout { during: during.to_string() });
            }
            if interrupted() {
                return Err(QemuError::Interrupted { during: during.to_string() });
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            self.agent.get_ref().set_read_timeout(Some(wait)).map_err(io_err("agent serial"))?;
            match self.agent.read_line(&mut line) {
                Ok(0) => {
                    self.check_exit_within(DEATH_GRACE, during)?;
                    return Err(QemuError::Agent(format!("agent serial closed {during}")));
                }
                Ok(_) if line.ends_with('\n') => return Ok(line.trim_end().to_string()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    self.check_running(during)?;
                }
                Err(e) => {
                    self.check_exit_within(DEATH_GRACE, during)?;
                    return Err(io_err(format!("reading the agent serial {during}"))(e));
                }
            }
        }
    }

    /// The serial socket breaks as QEMU dies, a moment before QEMU can be
    /// reaped: wait up to `grace` so the error names the death, not its symptom.
    fn check_exit_within(&mut self, grace: Duration, during: &str) -> Result<(), QemuError> {
        let deadline = Instant::now() + grace;
        loop {
            self.check_running(during)?;
            if Instant::now() >= deadline {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn send_line(&mut self, line: &str) -> Result<(), QemuError> {
        self.agent.get_mut().write_all(format!("{line}\n").as_bytes()).map_err(io_err("writing to the agent"))
    }

    /// Tail of QEMU's stderr, for reports.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr_log)
    }

    /// Asks QEMU to quit — through the agent's power-off, or with SIGTERM
    /// when the agent cannot be asked — and waits up to `timeout`; kills it
    /// if it does not go. Returns how it ended, or why it had to be killed.
    pub fn stop(&mut self, agent_answers: bool, timeout: Duration) -> Result<ExitStatus, QemuError> {
        if let Some(status) = self.exit {
            return Err(QemuError::Exited {
                exit: describe_status(status),
                during: "asked to quit (it had already ended)".into(),
            });
        }
        let how = if agent_answers {
            self.send_line("0 poweroff").map(|()| "the agent's power-off")
        } else {
            self.signal(libc::SIGTERM).map(|()| "SIGTERM")
        };
        let deadline = Instant::now() + timeout;
        while how.is_ok() && self.child.is_some() && Instant::now() < deadline {
            if self.check_running("shutting down").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let running = self.child.is_some();
        self.kill();
        match (how, self.exit) {
            (Err(e), _) => Err(QemuError::Agent(format!("could not ask QEMU to quit: {e}; killed"))),
            (Ok(_), Some(status)) if !running => Ok(status),
            (Ok(how), _) => {
                Err(QemuError::Timeout { during: format!("QEMU did not exit within {timeout:?} of {how}; killed") })
            }
        }
    }

    /// Signals QEMU itself: the program a wrapper runs (the wrapper itself
    /// when it `exec`s), so a wrapper that waits for it ends as QEMU did.
    fn signal(&self, sig: libc::c_int) -> Result<(), QemuError> {
        let pid = self.qemu_pid().ok_or_else(|| QemuError::NotRunning { during: format!("sending signal {sig}") })?;
        // SAFETY: signalling a process of our child's tree, not reaped yet.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            return Err(io_err(format!("kill -{sig} {pid}"))(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Fault injection: SIGKILL QEMU and leave it to be noticed (and reaped)
    /// like any other death.
    pub fn kill_unannounced(&mut self) -> Result<(), QemuError> {
        self.signal(libc::SIGKILL)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = crate::spawn::signal_group(c.id(), libc::SIGKILL);
            let _ = c.kill();
            if let Ok(status) = c.wait() {
                self.exit.get_or_insert(as_qemu_ended(status, self.script));
            }
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}
