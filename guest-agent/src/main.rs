//! Guest agent: the test guest's `/init`. Owns the vhost-user test device from
//! userspace (sysfs), drives it to DRIVER_OK, maps the shared-memory BAR and
//! serves the host's line commands on /dev/ttyS1. It never judges results;
//! it reports what it saw and the host decides.
//!
//! Protocol: the host sends `ID CMD ARGS...\n`; the agent answers
//! `ID ok ...\n` or `ID err MESSAGE\n`. At start it prints `ready ...`.

mod device;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use device::Device;
use shmem_pattern::{fnv1a64, pattern_byte};

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
    if !s.len().is_multiple_of(2) {
        return Err("hex string has odd length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex at {i}: {e}")))
        .collect()
}

fn num(s: Option<&str>, what: &str) -> Result<u64, String> {
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("bad {what} {s:?}: {e}"))
}

/// Runs one command line; `Ok(text)` for `ok text`.
fn execute(dev: &mut Option<Device>, cmd: &str, args: &mut std::str::SplitWhitespace<'_>) -> Result<String, String> {
    if cmd == "ping" {
        return Ok("pong".into());
    }
    if cmd == "hang" {
        // Fault injection: stop answering for N seconds.
        let secs = num(args.next(), "seconds")?;
        std::thread::sleep(Duration::from_secs(secs));
        return Ok("awake".into());
    }
    if cmd == "poweroff" {
        return Ok("bye".into());
    }
    let dev = dev.as_mut().ok_or("no test device was found at boot")?;
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
            Ok(hex(&dev.read(shmid, off, len)?))
        }
        "digest" => {
            let (shmid, off, len) = (num(args.next(), "shmid")?, num(args.next(), "offset")?, num(args.next(), "len")?);
            let data = dev.read(shmid, off, len)?;
            let zero = data.iter().all(|&b| b == 0);
            Ok(format!("{:016x} zero={} head={}", fnv1a64(&data), zero, hex(&data[..data.len().min(16)])))
        }
        "write" => {
            let (shmid, off) = (num(args.next(), "shmid")?, num(args.next(), "offset")?);
            let data = unhex(args.next().ok_or("missing data")?)?;
            dev.write(shmid, off, &data).map(|()| "written".into())
        }
        "fill" => {
            let (shmid, off, len, seed) =
                (num(args.next(), "shmid")?, num(args.next(), "offset")?, num(args.next(), "len")?, num(args.next(), "seed")?);
            let data: Vec<u8> = (0..len).map(|i| pattern_byte(seed as u8, i)).collect();
            dev.write(shmid, off, &data).map(|()| "filled".into())
        }
        "bw" => {
            let (shmid, len, iters) = (num(args.next(), "shmid")?, num(args.next(), "len")?, num(args.next(), "iters")?);
            dev.bandwidth(shmid, len, iters)
        }
        other => Err(format!("unknown command {other:?}")),
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
    let mut reader = BufReader::new(serial);
    let mut line = String::new();
    let mut last = Instant::now();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                if last.elapsed() > HOST_SILENCE_LIMIT {
                    eprintln!("guest-agent: host silent for {HOST_SILENCE_LIMIT:?}, powering off");
                    power_off();
                }
                continue;
            }
            Ok(_) if !line.ends_with('\n') => continue,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => power_off(),
        }
        last = Instant::now();
        let mut words = line.split_whitespace();
        let (Some(id), Some(cmd)) = (words.next(), words.next()) else { continue };
        let reply = match execute(&mut dev, cmd, &mut words) {
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
