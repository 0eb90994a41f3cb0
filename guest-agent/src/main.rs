//! Guest agent: the test guest's `/init`. Owns the vhost-user test device from
//! userspace (sysfs), drives it to DRIVER_OK, maps the shared-memory BAR and
//! serves the host's line commands on /dev/ttyS1. It never judges results;
//! it reports what it saw and the host decides.
//!
//! Protocol: the host sends `ID CMD ARGS...\n`; the agent answers
//! `ID ok ...\n` or `ID err MESSAGE\n`. At start it prints `ready ...`.

mod device;
mod media_driver;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use device::Device;
use media_driver::Media;
use shmem_pattern::{Fnv1a64, pattern_byte};

/// The agent reboots (QEMU then exits, `-no-reboot`) when the host has been
/// silent this long: a guest never outlives its host.
const HOST_SILENCE_LIMIT: Duration = Duration::from_secs(120);
/// Largest read/write carried as hex in one line.
const MAX_HEX: u64 = 4096;

fn mount(src: &str, target: &str, fstype: &str) {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (src, target, fstype) = (c(src), c(target), c(fstype));
    // SAFETY: plain mount(2) with valid C strings.
    unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
}

fn power_off() -> ! {
    // SAFETY: sync and reboot(2); QEMU runs with -no-reboot so a reboot ends it.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn raw_serial(path: &str) -> io::Result<File> {
    let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(path)?;
    // SAFETY: termios calls on our own tty fd with a zeroed struct filled by tcgetattr.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = 10; // read() returns after 1 s of silence
        if libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(f)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.is_ascii() || !s.len().is_multiple_of(2) {
        return Err("data must be an even number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex at {i}: {e}")))
        .collect()
}

pub(crate) fn num(s: Option<&str>, what: &str) -> Result<u64, String> {
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("bad {what} {s:?}: {e}"))
}

/// The commands that need no device: `ping`, `tsc`, `hang`, `poweroff`.
fn without_device(cmd: &str, args: &mut std::str::SplitWhitespace<'_>) -> Option<Result<String, String>> {
    Some(match cmd {
        "ping" => Ok("pong".into()),
        // The guest's fine clock: the host calibrates it against its own
        // (the kernel's clocksource under TCG has tick resolution).
        "tsc" => Ok(format!("tsc={}", device::rdtsc())),
        // Fault injection: stop answering for N seconds.
        "hang" => num(args.next(), "seconds").map(|secs| {
            std::thread::sleep(Duration::from_secs(secs));
            "awake".into()
        }),
        "poweroff" => Ok("bye".into()),
        _ => return None,
    })
}

/// Runs one command line; `Ok(text)` for `ok text`.
fn execute(
    dev: &mut Option<Device>,
    media: &mut Option<Media>,
    cmd: &str,
    args: &mut std::str::SplitWhitespace<'_>,
) -> Result<String, String> {
    if let Some(answer) = without_device(cmd, args) {
        return answer;
    }
    let dev = dev.as_mut().ok_or("no test device was found at boot")?;
    if cmd.starts_with("media-") {
        return media_driver::execute(dev, media, cmd, args);
    }
    match cmd {
        "info" => Ok(dev.info()),
        "init" => dev.init().map(|s| format!("status={s:#x}")),
        "reset" => dev.reset().map(|us| format!("reset_us={us}")),
        "status" => Ok(format!("status={:#x}", dev.status())),
        "read" => {
            let (shmid, off, len) = (num(args.next(), "shmid")?, num(args.next(), "offset")?, num(args.next(), "len")?);
            if len > MAX_HEX {
                return Err(format!("read of {len} bytes; at most {MAX_HEX} per line (use digest)"));
            }
            let mut data = Vec::with_capacity(len as usize);
            dev.read_each(shmid, off, len, |b| data.push(b))?;
            Ok(hex(&data))
        }
        "digest" => {
            let (shmid, off, len) = (num(args.next(), "shmid")?, num(args.next(), "offset")?, num(args.next(), "len")?);
            let (mut digest, mut zero, mut head) = (Fnv1a64::new(), true, Vec::with_capacity(16));
            dev.read_each(shmid, off, len, |b| {
                digest.update(b);
                zero &= b == 0;
                if head.len() < 16 {
                    head.push(b);
                }
            })?;
            Ok(format!("{:016x} zero={zero} head={}", digest.value(), hex(&head)))
        }
        "write" => {
            let (shmid, off) = (num(args.next(), "shmid")?, num(args.next(), "offset")?);
            let data = unhex(args.next().ok_or("missing data")?)?;
            dev.write_each(shmid, off, data.len() as u64, |i| data[i as usize]).map(|()| "written".into())
        }
        "fill" => {
            let (shmid, off, len, seed) = (
                num(args.next(), "shmid")?,
                num(args.next(), "offset")?,
                num(args.next(), "len")?,
                num(args.next(), "seed")?,
            );
            let seed = u8::try_from(seed).map_err(|_| format!("seed {seed} is not a byte"))?;
            dev.write_each(shmid, off, len, |i| pattern_byte(seed, i)).map(|()| "filled".into())
        }
        "bw" => {
            let (shmid, len, iters, rounds) = (
                num(args.next(), "shmid")?,
                num(args.next(), "len")?,
                num(args.next(), "iters")?,
                num(args.next(), "rounds")?,
            );
            dev.bandwidth(shmid, len, iters, rounds)
        }
        "probe" => {
            let (db_shmid, db_off, t_shmid, t_off, idle_ms) = (
                num(args.next(), "doorbell shmid")?,
                num(args.next(), "doorbell offset")?,
                num(args.next(), "target shmid")?,
                num(args.next(), "target offset")?,
                num(args.next(), "idle ms")?,
            );
            pin_to_last_cpu();
            dev.probe(db_shmid, db_off, t_shmid, t_off, idle_ms)
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Runs the agent on the last CPU: the host keeps its probe thread off the
/// host core that runs this vCPU.
fn pin_to_last_cpu() {
    // SAFETY: sysconf and sched_setaffinity on our own thread with a zeroed, then filled, set.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
        if n > 1 {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET((n - 1) as usize, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

fn main() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    let serial = match raw_serial("/dev/ttyS1") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("guest-agent: cannot open /dev/ttyS1: {e}");
            power_off();
        }
    };
    let mut out = match serial.try_clone() {
        Ok(o) => o,
        Err(_) => power_off(),
    };
    let (mut dev, found) = match Device::find() {
        Ok(d) => {
            let info = d.info();
            (Some(d), format!("device {info}"))
        }
        Err(e) => (None, format!("nodevice {}", e.replace(' ', "_"))),
    };
    eprintln!("guest-agent: ready, {found}");
    let _ = writeln!(out, "ready {found}");
    // The virtio-media driver, once `media-up` set it up.
    let mut media: Option<Media> = None;
    let mut reader = BufReader::new(serial);
    let mut line = Vec::new();
    let mut last = Instant::now();
    loop {
        // A line may arrive in pieces across read timeouts: keep what came.
        match reader.read_until(b'\n', &mut line) {
            Ok(_) if line.last() == Some(&b'\n') => {}
            Ok(0) if last.elapsed() > HOST_SILENCE_LIMIT => {
                eprintln!("guest-agent: host silent for {HOST_SILENCE_LIMIT:?}, powering off");
                power_off();
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                eprintln!("guest-agent: serial port failed ({e}), powering off");
                power_off();
            }
        }
        last = Instant::now();
        let text = String::from_utf8_lossy(&line).into_owned();
        line.clear();
        let mut words = text.split_whitespace();
        let (Some(id), Some(cmd)) = (words.next(), words.next()) else { continue };
        let reply = match execute(&mut dev, &mut media, cmd, &mut words) {
            Ok(text) => format!("{id} ok {text}"),
            Err(e) => format!("{id} err {}", e.replace('\n', " ")),
        };
        let _ = writeln!(out, "{reply}");
        if cmd == "poweroff" {
            let _ = out.flush();
            power_off();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or_default();
        execute(&mut None, &mut None, cmd, &mut words)
    }

    #[test]
    fn bad_commands_get_errors_not_panics() {
        assert_eq!(run("ping"), Ok("pong".into()));
        assert!(run("tsc").unwrap().starts_with("tsc="));
        for bad in ["frobnicate", "read", "read x y z", "write 0 0 é1", "fill 0 0 4 999", "digest 0 0", "info", "bw 0"]
        {
            assert!(run(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(run("hang").unwrap_err().contains("missing seconds"));
    }

    #[test]
    fn hex_round_trips_and_refuses_non_hex() {
        assert_eq!(unhex(&hex(&[0, 0xab, 0xff])), Ok(vec![0, 0xab, 0xff]));
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
        assert!(unhex("éé").is_err());
    }

    #[test]
    fn numbers_parse_as_decimal_or_hex() {
        assert_eq!(num(Some("0x10"), "n"), Ok(16));
        assert_eq!(num(Some("10"), "n"), Ok(10));
        assert!(num(None, "n").unwrap_err().contains("missing n"));
    }

    #[test]
    fn offsets_from_the_device_are_checked_before_any_access() {
        use device::{NotifyCap, common_cfg_fits};
        assert!(common_cfg_fits(0, 0x1000).is_ok() && common_cfg_fits(0x1000 - 0x38, 0x1000).is_ok());
        // Past the BAR, overflowing, misaligned: refused, never read.
        for off in [0x1000 - 0x37, usize::MAX - 4, 2] {
            assert!(common_cfg_fits(off, 0x1000).is_err(), "{off:#x}");
        }
        let cap = NotifyCap { bar: 4, offset: 0x3000, multiplier: 4 };
        assert_eq!(cap.doorbell(1, 0x4000), Ok(0x3004));
        assert!(cap.doorbell(0x400, 0x4000).is_err(), "one past the BAR");
        assert!(NotifyCap { multiplier: u32::MAX, ..cap }.doorbell(u16::MAX, 0x4000).is_err());
        assert!(NotifyCap { offset: usize::MAX - 1, ..cap }.doorbell(1, usize::MAX).is_err(), "overflow");
        assert!(NotifyCap { offset: 0x3001, ..cap }.doorbell(0, 0x4000).is_err(), "misaligned");
    }
}
