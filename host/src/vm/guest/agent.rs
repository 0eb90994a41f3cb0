//! The guest agent's line protocol on its serial port, host side: numbered
//! commands, their `ok`/`err` answers, and the `key=value` words of answers
//! and of the ready line. Parsing only; the port itself is `qemu::Qemu`'s.

use super::{GuestError, RegionWindow};

/// A `key=value` word of an answer.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// A hex number, with or without `0x`.
pub fn hex(v: &str) -> Option<u64> {
    u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

/// The agent's answer to command `id`, read from `line`: `None` when the
/// line answers another command (or is none), else the text after `ok`, or
/// the agent's reason after `err` (or the whole line when it is neither).
pub fn answer<'a>(id: &str, line: &'a str) -> Option<Result<&'a str, Refusal<'a>>> {
    let rest = line.strip_prefix(id)?.strip_prefix(' ')?;
    Some(match rest.split_once(' ').unwrap_or((rest, "")) {
        ("ok", text) => Ok(text),
        ("err", text) => Err(Refusal::Err(text)),
        _ => Err(Refusal::Garbled(line)),
    })
}

/// An answer that is not `ok`.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal<'a> {
    /// `err TEXT`.
    Err(&'a str),
    /// Neither `ok` nor `err`: the whole line.
    Garbled(&'a str),
}

impl Refusal<'_> {
    /// As the error of command `cmd`.
    pub fn into_error(self, cmd: &str) -> GuestError {
        match self {
            Refusal::Err(text) => GuestError::AgentRefused { cmd: cmd.to_string(), text: text.to_string() },
            Refusal::Garbled(line) => {
                GuestError::BadAnswer { what: format!("agent answered `{cmd}` with"), text: line.to_string() }
            }
        }
    }
}

/// What the agent's ready line says about the device: the shared-memory
/// BAR's guest-physical address and the regions it found there
/// (`bar_addr=HEX regions=SHMID:BAR:OFFSET:LEN,...`).
pub struct ReadyLine<'a>(pub &'a str);

impl ReadyLine<'_> {
    pub fn bar_addr(&self) -> Result<u64, GuestError> {
        field(self.0, "bar_addr").and_then(hex).ok_or_else(|| self.bad("names no BAR address"))
    }

    pub fn regions(&self) -> Result<Vec<RegionWindow>, GuestError> {
        let list = field(self.0, "regions").ok_or_else(|| self.bad("has no readable regions"))?;
        let window = |r: &str| -> Option<RegionWindow> {
            match r.split(':').collect::<Vec<_>>().as_slice() {
                [id, _bar, off, len] => Some((id.parse().ok()?, hex(off)?, hex(len)?)),
                _ => None,
            }
        };
        list.split(',')
            .filter(|r| !r.is_empty())
            .map(|r| window(r).ok_or_else(|| self.bad("has no readable regions")))
            .collect()
    }

    /// Whether the agent found the test device at all.
    pub fn has_device(&self) -> bool {
        self.0.contains(" device ")
    }

    fn bad(&self, what: &str) -> GuestError {
        GuestError::BadAnswer { what: format!("the agent's ready line {what}"), text: self.0.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_matched_to_their_command() {
        assert_eq!(answer("7", "7 ok zero=true"), Some(Ok("zero=true")));
        assert_eq!(answer("7", "7 err no such region"), Some(Err(Refusal::Err("no such region"))));
        assert_eq!(answer("7", "7 what"), Some(Err(Refusal::Garbled("7 what"))));
        assert_eq!(answer("7", "17 ok"), None, "another command's answer");
        assert_eq!(answer("7", "70 ok"), None);
    }

    #[test]
    fn the_ready_line_gives_the_bar_and_the_regions() {
        let r = ReadyLine("ready device 0000:00:03.0 bar_addr=0xfe000000 regions=0:4:0x0:0x40000,2:4:0x40000:0x40000");
        assert_eq!(r.bar_addr().ok(), Some(0xfe00_0000));
        assert_eq!(r.regions().ok(), Some(vec![(0, 0, 0x40000), (2, 0x40000, 0x40000)]));
        assert!(ReadyLine("ready device regions=0:4:zz:1").regions().is_err());
    }
}
