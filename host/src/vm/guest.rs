//! The two guests a scenario runs against: a real QEMU guest (through the
//! guest agent on its serial port) and the reference model. Both answer the
//! same questions; neither judges.

use std::time::{Duration, Instant};

use super::qemu::Qemu;
use crate::files::{fnv1a64, pattern_byte};
use crate::model::ModelFrontend;

/// Time one agent command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest chunk the agent digests or fills per command.
const CHUNK: u64 = 1 << 20;

/// What the guest saw in a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Bytes were readable: their digest, whether all were zero, the first few.
    Bytes { digest: u64, zero: bool, head: String },
    /// The range could not be read at all (the model's unmapped ranges).
    Inaccessible,
}

impl Observed {
    pub fn of(data: &[u8]) -> Self {
        let head = data.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Observed::Bytes { digest: fnv1a64(data), zero: data.iter().all(|&b| b == 0), head }
    }

    pub fn describe(&self) -> String {
        match self {
            Observed::Bytes { digest, zero, head } => format!("digest {digest:016x}{} first bytes {head}", if *zero { " (all zero)" } else { "" }),
            Observed::Inaccessible => "inaccessible".into(),
        }
    }
}

pub trait Guest {
    /// "qemu" or "model".
    fn kind(&self) -> &'static str;
    fn observe(&mut self, shmid: u8, offset: u64, len: u64) -> Result<Observed, String>;
    /// Writes pattern `seed`; returns a note on what happened (the model may refuse).
    fn fill(&mut self, shmid: u8, offset: u64, len: u64, seed: u8) -> Result<String, String>;
    /// Device reset, then re-initialisation to DRIVER_OK.
    fn reinit(&mut self) -> Result<(), String>;
    fn alive(&mut self) -> Result<(), String>;
}

/// A QEMU guest driven through the agent.
pub struct QemuGuest {
    pub qemu: Qemu,
    seq: u64,
}

impl QemuGuest {
    pub fn new(qemu: Qemu) -> Self {
        QemuGuest { qemu, seq: 0 }
    }

    /// Sends one command and returns the text after `ok`.
    pub fn command(&mut self, cmd: &str) -> Result<String, String> {
        self.seq += 1;
        let id = self.seq.to_string();
        self.qemu.send_line(&format!("{id} {cmd}"))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let line = self.qemu.read_line(deadline, &format!("waiting for the agent's answer to `{cmd}`"))?;
            let Some(rest) = line.strip_prefix(&format!("{id} ")) else { continue };
            return match rest.split_once(' ').unwrap_or((rest, "")) {
                ("ok", text) => Ok(text.to_string()),
                ("err", text) => Err(format!("agent refused `{cmd}`: {text}")),
                _ => Err(format!("agent answered `{cmd}` with {line:?}")),
            };
        }
    }
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

impl Guest for QemuGuest {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn observe(&mut self, shmid: u8, offset: u64, len: u64) -> Result<Observed, String> {
        if len > CHUNK {
            return Err(format!("observe of {len:#x} bytes; at most {CHUNK:#x} per check"));
        }
        let text = self.command(&format!("digest {shmid} {offset:#x} {len:#x}"))?;
        let mut words = text.split_whitespace();
        let digest = words.next().and_then(|d| u64::from_str_radix(d, 16).ok()).ok_or_else(|| format!("bad digest reply {text:?}"))?;
        Ok(Observed::Bytes {
            digest,
            zero: field(&text, "zero") == Some("true"),
            head: field(&text, "head").unwrap_or("").to_string(),
        })
    }

    fn fill(&mut self, shmid: u8, offset: u64, len: u64, seed: u8) -> Result<String, String> {
        self.command(&format!("fill {shmid} {offset:#x} {len:#x} {seed}")).map(|_| "written by the guest CPU".into())
    }

    fn reinit(&mut self) -> Result<(), String> {
        self.command("reset")?;
        let status = self.command("init")?;
        match status.as_str() {
            "status=0xf" => Ok(()),
            other => Err(format!("device status after init is {other}, want 0xf")),
        }
    }

    fn alive(&mut self) -> Result<(), String> {
        self.qemu.check_running("checking that QEMU still runs")?;
        self.command("ping").map(|_| ())
    }
}

/// The reference model as a guest.
pub struct ModelGuest {
    pub model: ModelFrontend,
}

const SYNC: Duration = Duration::from_secs(5);

impl Guest for ModelGuest {
    fn kind(&self) -> &'static str {
        "model"
    }

    fn observe(&mut self, shmid: u8, offset: u64, len: u64) -> Result<Observed, String> {
        self.model.sync(SYNC).map_err(|e| e.to_string())?;
        match self.model.read(shmid, offset, len).map_err(|e| e.to_string())? {
            Ok(data) => Ok(Observed::of(&data)),
            Err(_) => Ok(Observed::Inaccessible),
        }
    }

    fn fill(&mut self, shmid: u8, offset: u64, len: u64, seed: u8) -> Result<String, String> {
        self.model.sync(SYNC).map_err(|e| e.to_string())?;
        let data: Vec<u8> = (0..len).map(|i| pattern_byte(seed, i)).collect();
        match self.model.write(shmid, offset, &data).map_err(|e| e.to_string())? {
            Ok(()) => Ok("written".into()),
            Err(a) => Ok(format!("write refused ({a:?})")),
        }
    }

    fn reinit(&mut self) -> Result<(), String> {
        self.model.reset().map_err(|e| e.to_string())?;
        self.model.start().map_err(|e| e.to_string())
    }

    fn alive(&mut self) -> Result<(), String> {
        Ok(())
    }
}
