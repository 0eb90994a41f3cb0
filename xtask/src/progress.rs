//! Long build phases shown while they run: on a terminal a line with the
//! phase's name, its elapsed time and the last lines of its output
//! (indicatif, redrawn in place); otherwise a line when it starts and one
//! when it ends, so CI logs stay plain. A failed phase prints its last
//! lines. Runs the command it is given; decides nothing else.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How many of a phase's last output lines it shows while it runs.
const SHOWN: usize = 3;
/// How many it prints when it fails.
const KEPT: usize = 30;

/// Every phase's line, stacked: phases that overlap (QEMU's download
/// beside the kernel build) each keep their own.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| {
        // NO_COLOR or a dumb terminal: plain lines, no cursor movement either.
        let plain = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if plain { MultiProgress::with_draw_target(ProgressDrawTarget::hidden()) } else { MultiProgress::new() }
    })
}

/// A line of the build's story: above the phases' lines on a terminal,
/// as it is otherwise.
pub fn say(line: &str) {
    if bars().is_hidden() {
        println!("{line}");
    } else {
        let _ = bars().println(line);
    }
}

/// `1m05s`, `12.3s`.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 { format!("{s:.1}s") } else { format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60) }
}

/// Sends each line of `from` to `to`, lossily decoded.
fn forward(from: impl Read + Send + 'static, to: mpsc::Sender<String>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            if to.send(line).is_err() {
                break;
            }
        }
    })
}

/// How a phase that ran ended badly: its status, its time, its last lines.
struct Failed {
    status: std::process::ExitStatus,
    took: Duration,
    tail: VecDeque<String>,
}

/// Runs `cmd` as the phase `name`: its output shown as said above, its
/// end said with its time. An error names the phase and its exit status,
/// its last lines printed on stderr.
pub fn run(name: &str, cmd: impl Into<Command>) -> Result<(), String> {
    let Err(f) = phase(name, cmd.into())? else { return Ok(()) };
    eprintln!("xtask: {name} failed after {}; its last {} lines:", elapsed(f.took), f.tail.len());
    f.tail.iter().for_each(|l| eprintln!("    {l}"));
    Err(format!("{name} failed ({})", f.status))
}

/// A first try whose failure the caller answers itself (apt-get install
/// before the lists are updated): whether it passed; a failure is one line.
pub fn attempt(name: &str, cmd: impl Into<Command>) -> Result<bool, String> {
    let Err(f) = phase(name, cmd.into())? else { return Ok(true) };
    say(&format!("xtask: {name}: failed after {} ({})", elapsed(f.took), f.status));
    Ok(false)
}

/// The phase itself; the outer error: it could not be started or waited for.
fn phase(name: &str, mut cmd: Command) -> Result<Result<(), Failed>, String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let bar = bars().add(ProgressBar::new_spinner().with_prefix(name.to_string()));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}]\n{wide_msg:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    if bar.is_hidden() {
        say(&format!("xtask: {name} ..."));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut child = cmd.spawn().map_err(|e| format!("{name}: could not start {:?}: {e}", cmd.get_program()))?;
    let (tx, rx) = mpsc::channel();
    let readers = [child.stdout.take().map(|o| forward(o, tx.clone())), child.stderr.take().map(|e| forward(e, tx))];
    let mut tail: VecDeque<String> = VecDeque::new();
    for line in rx {
        if tail.len() == KEPT {
            tail.pop_front();
        }
        tail.push_back(line);
        let shown: Vec<&str> = tail.iter().rev().take(SHOWN).rev().map(String::as_str).collect();
        bar.set_message(shown.join("\n"));
    }
    readers.into_iter().flatten().for_each(|r| drop(r.join()));
    let status = child.wait().map_err(|e| format!("{name}: waiting for it: {e}"))?;
    bar.finish_and_clear();
    bars().remove(&bar);
    if status.success() {
        say(&format!("xtask: {name}: done in {}", elapsed(start.elapsed())));
        return Ok(Ok(()));
    }
    Ok(Err(Failed { status, took: start.elapsed(), tail }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_that_fails_names_itself_and_its_status() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo one; echo two >&2; exit 3"]);
        let e = run("a test phase", c).expect_err("it exits 3");
        assert!(e.starts_with("a test phase failed") && e.contains('3'), "{e}");
        let mut ok = Command::new("true");
        ok.arg("x");
        run("a test phase", ok).expect("true passes");
    }

    #[test]
    fn times_read_as_people_write_them() {
        assert_eq!(elapsed(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(elapsed(Duration::from_secs(65)), "1m05s");
    }
}
