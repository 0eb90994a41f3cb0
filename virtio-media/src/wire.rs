//! The guest agent's text form of driver results, written by the agent and
//! read by the host: buffer infos, events and driver errors, each one word
//! (errors: a kind, then the step's words). Both sides use these functions,
//! so the form has one definition.

use crate::driver::MediaError;
use crate::proto::{BufferInfo, Event};

/// `index:sequence:flags:mem_offset:length:bytesused`, decimal.
pub fn buffer_text(b: &BufferInfo) -> String {
    format!("{}:{}:{}:{}:{}:{}", b.index, b.sequence, b.flags, b.mem_offset, b.length, b.bytesused)
}

pub fn buffer_parse(s: &str) -> Option<BufferInfo> {
    let v: Vec<u32> = s.split(':').map(str::parse).collect::<Result<_, _>>().ok()?;
    match v[..] {
        [index, sequence, flags, mem_offset, length, bytesused] => {
            Some(BufferInfo { index, sequence, flags, mem_offset, length, bytesused })
        }
        _ => None,
    }
}

/// `dqbuf/SESSION/BUFFER`, `error/SESSION/ERRNO` or `other/KIND/SESSION`.
pub fn event_text(e: &Event) -> String {
    match e {
        Event::Dqbuf { session, buffer } => format!("dqbuf/{session}/{}", buffer_text(buffer)),
        Event::Error { session, errno } => format!("error/{session}/{errno}"),
        Event::Other { kind, session } => format!("other/{kind}/{session}"),
    }
}

pub fn event_parse(s: &str) -> Option<Event> {
    let mut p = s.split('/');
    let (kind, a, b) = (p.next()?, p.next()?, p.next()?);
    Some(match kind {
        "dqbuf" => Event::Dqbuf { session: a.parse().ok()?, buffer: buffer_parse(b)? },
        "error" => Event::Error { session: a.parse().ok()?, errno: b.parse().ok()? },
        "other" => Event::Other { kind: a.parse().ok()?, session: b.parse().ok()? },
        _ => return None,
    })
}

/// `timeout WHAT`, `errno=N WHAT`, `malformed WHAT`, `full WHAT` or `stale WHAT`.
pub fn error_text(e: &MediaError) -> String {
    match e {
        MediaError::Timeout(w) => format!("timeout {w}"),
        MediaError::Errno(w, n) => format!("errno={n} {w}"),
        MediaError::Malformed(w) => format!("malformed {w}"),
        MediaError::Full(w) => format!("full {w}"),
        MediaError::Stale(w) => format!("stale {w}"),
    }
}

/// The error `error_text` wrote; any other text is a malformed answer, kept whole.
pub fn error_parse(s: &str) -> MediaError {
    let (kind, what) = s.split_once(' ').unwrap_or((s, ""));
    let what = what.to_string();
    match kind {
        "timeout" => MediaError::Timeout(what),
        "malformed" => MediaError::Malformed(what),
        "full" => MediaError::Full(what),
        "stale" => MediaError::Stale(what),
        k => match k.strip_prefix("errno=").and_then(|n| n.parse().ok()) {
            Some(n) => MediaError::Errno(what, n),
            None => MediaError::Malformed(format!("unreadable driver error {s:?}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_reads_back_and_garbage_does_not() {
        let b =
            BufferInfo { index: 3, sequence: 77, flags: 1, mem_offset: 0x3000, length: 460_800, bytesused: 460_800 };
        assert_eq!(buffer_parse(&buffer_text(&b)), Some(b));
        for e in [
            Event::Dqbuf { session: 1, buffer: b },
            Event::Error { session: 2, errno: -5 },
            Event::Other { kind: 9, session: 4 },
        ] {
            assert_eq!(event_parse(&event_text(&e)), Some(e));
        }
        for e in [
            MediaError::Timeout("OPEN".into()),
            MediaError::Errno("MMAP offset 0x0".into(), 16),
            MediaError::Malformed("S_FMT".into()),
            MediaError::Full("QBUF 1".into()),
            MediaError::Stale("QBUF 2 (after OPEN)".into()),
        ] {
            assert_eq!(error_parse(&error_text(&e)), e);
        }
        assert_eq!(buffer_parse("1:2:3"), None);
        assert_eq!(event_parse("dqbuf/1/x"), None);
        assert!(matches!(error_parse("what"), MediaError::Malformed(m) if m.contains("what")));
    }
}
