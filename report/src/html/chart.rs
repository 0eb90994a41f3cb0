//! The sequence chart of a relay's record, as inline SVG: the frontend,
//! the relay and the backend as lanes; the main channel solid, the
//! backend's request channel dashed; each message with its name and time,
//! its decoded payload on hover; each SHMEM request linked to its reply and
//! to the memory table that commits it, the lag written on the link and a
//! reply that came first marked; what the relay injected marked. A long
//! record is summarised: its first and last rows drawn, the rest counted.
//! Formatting only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use maud::{Markup, PreEscaped, html};
use shmem_judge::backend::record::Lag;
use shmem_judge::backend::wire::{Channel, Sender, WireMsg, WireRecord};

use super::esc;

/// How many rows are drawn at each end of a long record.
const DRAWN: usize = 150;
const ROW: usize = 22;
const TOP: usize = 40;
const LANE: [usize; 3] = [170, 420, 670];
const WIDTH: usize = 1080;

fn lane(s: Sender) -> usize {
    match s {
        Sender::Frontend => LANE[0],
        Sender::Relay => LANE[1],
        Sender::Backend => LANE[2],
    }
}

/// Where a message goes: the other end of its channel.
fn target(m: &WireMsg) -> usize {
    match m.sender {
        Sender::Backend => LANE[0],
        Sender::Frontend | Sender::Relay => LANE[2],
    }
}

fn is_reply(m: &WireMsg) -> bool {
    m.flags & 0x4 != 0
}

/// The indexes of the record drawn: all, or the first and last `DRAWN`.
fn drawn(w: &WireRecord) -> Vec<usize> {
    let n = w.messages.len();
    if n <= 2 * DRAWN { (0..n).collect() } else { (0..DRAWN).chain(n - DRAWN..n).collect() }
}

/// One message's row: an arrow from its sender's lane to the other end,
/// through the relay, with its name, time and payload.
fn message_row(out: &mut String, i: usize, m: &WireMsg, y: usize, t0: u64) {
    let (x1, x2) = (lane(m.sender), target(m));
    let channel = match m.channel {
        Channel::Main => "main",
        Channel::Backend => "backend",
    };
    let kind = if is_reply(m) { "reply" } else { "request" };
    let injected = if m.sender == Sender::Relay { " injected" } else { "" };
    let ms = (m.at_ns.saturating_sub(t0)) as f64 / 1e6;
    let payload = serde_json::to_string(&m.payload).unwrap_or_default();
    let label_x = if x1 < x2 { x1 + 8 } else { x2 + 8 };
    let _ = write!(
        out,
        r#"<g class="msg {channel} {kind}{injected}" data-index="{i}" data-name="{name}"><title>#{i} {ms:.3} ms, {channel} channel, {sender:?} {kind} {name}, {size} bytes, {nfds} fds
{payload}</title><line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" marker-end="url(#arrow)"/><circle cx="{relay}" cy="{y}" r="3"/><text x="10" y="{ty}" class="time">{ms:.3} ms</text><text x="{label_x}" y="{ly}">{name}{mark}</text></g>"#,
        name = esc(&m.name),
        sender = m.sender,
        size = m.size,
        nfds = m.nfds,
        payload = esc(&payload),
        relay = LANE[1],
        ty = y + 4,
        ly = y - 4,
        mark = if injected.is_empty() { "" } else { " (injected by the relay)" },
    );
}

/// The link of a SHMEM request to its reply and to the table that commits
/// it, drawn right of the lanes, with the lag.
fn lag_link(out: &mut String, lag: &Lag, y_of: &BTreeMap<usize, usize>) {
    let y = |i: usize| y_of.get(&i).copied();
    let (Some(yr), Some(ya)) = (y(lag.at), lag.reply.and_then(y)) else { return };
    let op = if lag.request == shmem_proto::ShmemOp::Map.code() { "SHMEM_MAP" } else { "SHMEM_UNMAP" };
    let x = LANE[2] + 40;
    let _ = write!(out, r#"<path class="link reply" d="M{x} {yr} C{} {yr} {} {ya} {x} {ya}"/>"#, x + 30, x + 30);
    let Some(yt) = lag.table.and_then(y) else {
        let _ =
            write!(out, r#"<text class="lag never" x="{}" y="{}">{op}: no table committed it</text>"#, x + 40, ya + 4);
        return;
    };
    let micros = lag.micros.unwrap_or_default();
    let (class, words) = if micros > 0.0 {
        ("reply-first", format!("reply {micros:.0} us before the table"))
    } else {
        ("table-first", format!("table {:.0} us before the reply", -micros))
    };
    let _ = write!(
        out,
        r#"<g class="shmem-link {class}" data-request="{op}" data-at="{at}" data-reply="{reply}" data-table="{table}" data-lag-us="{micros:.1}"><path class="link commit" d="M{x} {ya} C{c} {ya} {c} {yt} {x} {yt}"/><text class="lag" x="{tx}" y="{ty}">{words}</text></g>"#,
        at = lag.at,
        reply = lag.reply.unwrap_or_default(),
        table = lag.table.unwrap_or_default(),
        c = x + 60,
        tx = x + 70,
        ty = (ya + yt) / 2 + 4,
    );
}

/// How many messages of each name a summarised stretch held.
fn counted(w: &WireRecord, from: usize, to: usize) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &w.messages[from..to] {
        *by.entry(m.name.as_str()).or_default() += 1;
    }
    by.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ")
}

/// The chart of `w`: lanes, the drawn messages, the summary of those left
/// out, the SHMEM links.
pub fn chart(w: &WireRecord) -> Markup {
    let rows = drawn(w);
    let gap = rows.windows(2).position(|p| p[1] != p[0] + 1);
    // Each drawn message's height: a row each, one more for the summary line.
    let y_of: BTreeMap<usize, usize> = rows
        .iter()
        .enumerate()
        .map(|(r, &i)| (i, TOP + r * ROW + if gap.is_some_and(|g| r > g) { ROW } else { 0 }))
        .collect();
    let t0 = w.messages.first().map_or(0, |m| m.at_ns);
    let height = TOP + (rows.len() + 2) * ROW;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="sequence" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z"/></marker></defs>"#
    );
    for (x, name) in LANE.iter().zip(["frontend (QEMU)", "relay", "backend"]) {
        let _ = write!(
            svg,
            r#"<text class="lane" x="{x}" y="20" text-anchor="middle">{name}</text><line class="lane" x1="{x}" y1="28" x2="{x}" y2="{height}"/>"#
        );
    }
    for (&i, &y) in &y_of {
        message_row(&mut svg, i, &w.messages[i], y, t0);
    }
    if let Some(g) = gap {
        let (from, to) = (rows[g] + 1, rows[g + 1]);
        let y = TOP + (g + 1) * ROW;
        let _ = write!(
            svg,
            r#"<text class="summary" x="10" y="{y}">… {} messages not drawn here ({}), and {} the relay did not keep</text>"#,
            to - from,
            esc(&counted(w, from, to)),
            w.left_out
        );
    }
    for lag in &w.lags {
        lag_link(&mut svg, lag, &y_of);
    }
    svg.push_str("</svg>");
    html! {
        p.chart-legend {
            "Main channel solid, the backend's channel dashed; hover a message for its time and payload. "
            "Green links join a SHMEM request to its reply; red links join the reply to the memory table "
            "that commits it when the reply came first, blue when the table came first."
        }
        div.chart { (PreEscaped(svg)) }
    }
}
