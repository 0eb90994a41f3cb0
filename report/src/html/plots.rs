//! The probe's plots, as inline SVG, from a probe check's facts: the stale
//! reads per block of iterations, the first-read latency histograms of
//! fresh and stale reads, and the share of acked requests whose memory
//! table reached the backend first (the order on the wire). Formatting only.

use std::fmt::Write as _;

use maud::{Markup, PreEscaped, html};
use shmem_judge::check::CheckResult;

use super::esc;

/// `"3/50 0/50 ..."` as (stale, n) pairs.
fn blocks(text: &str) -> Vec<(u64, u64)> {
    text.split_whitespace()
        .filter_map(|b| b.split_once('/'))
        .filter_map(|(s, n)| Some((s.parse().ok()?, n.parse().ok()?)))
        .collect()
}

/// `"<2us:0 <5us:166 ... >=2000us:1"` as (bucket, count) pairs.
fn histogram(text: &str) -> Vec<(String, u64)> {
    text.split_whitespace()
        .filter_map(|b| b.rsplit_once(':'))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Bars of `values` with their labels, scaled to the largest.
fn bars(title: &str, class: &str, values: &[(String, f64, String)]) -> String {
    let (w, h, pad) = ((40 * values.len() + 60).max(240), 150, 30);
    let top = values.iter().map(|v| v.1).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let mut svg = format!(r#"<svg class="plot {class}" width="{w}" height="{h}"><text x="4" y="14">{title}</text>"#);
    for (k, (label, v, tip)) in values.iter().enumerate() {
        let bh = ((v / top) * (h - 2 * pad - 10) as f64).round() as usize;
        let x = 40 + k * 40;
        let _ = write!(
            svg,
            r#"<g class="bar"><title>{tip}</title><rect x="{x}" y="{}" width="28" height="{bh}"/><text x="{}" y="{}" text-anchor="middle">{label}</text></g>"#,
            h - pad - bh,
            x + 14,
            h - pad + 14,
            tip = esc(tip),
            label = esc(label),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The order on the wire: of the acked requests, how many had their table first.
fn order(acked: u64, first: u64) -> String {
    let share = if acked == 0 { 0.0 } else { first as f64 / acked as f64 };
    let w = (share * 300.0).round() as usize;
    format!(
        r#"<svg class="plot order" width="420" height="44"><text x="4" y="14">table reached the backend before the reply: {first} of {acked} acked ({:.1} %)</text><rect class="reply-first" x="4" y="22" width="300" height="14"/><rect class="table-first" x="4" y="22" width="{w}" height="14"/></svg>"#,
        share * 100.0
    )
}

/// The plots of one probe direction's check, if it is one.
pub fn probe_plots(c: &CheckResult) -> Option<Markup> {
    let fact = |k: &str| c.facts.get(k).map(ToString::to_string);
    let per_block = blocks(&fact("blocks")?);
    let block_bars: Vec<(String, f64, String)> = per_block
        .iter()
        .enumerate()
        .map(|(i, (s, n))| ((i + 1).to_string(), *s as f64, format!("block {}: {s} stale of {n}", i + 1)))
        .collect();
    let hist = |k: &str| -> Vec<(String, f64, String)> {
        histogram(&fact(k).unwrap_or_default())
            .into_iter()
            .map(|(b, n)| (b.trim_end_matches("us").to_string(), n as f64, format!("{b}: {n} reads")))
            .collect()
    };
    let num = |k: &str| fact(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut svg = bars("stale reads per block of iterations", "blocks", &block_bars);
    svg.push_str(&bars("first-read latency, fresh (us)", "fresh", &hist("fresh_us")));
    svg.push_str(&bars("first-read latency, stale (us)", "stale", &hist("stale_us")));
    svg.push_str(&order(num("acked"), num("table_first")));
    Some(html! {
        div.probe data-check=(c.check) {
            h4 { (c.check) ": " (num("stale")) " stale of " (num("n")) }
            (PreEscaped(svg))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_read_as_the_probe_writes_them() {
        assert_eq!(blocks("3/50 0/50"), vec![(3, 50), (0, 50)]);
        let h = histogram("<2us:0 <5us:166 >=2000us:1");
        assert_eq!(h, vec![("<2us".into(), 0), ("<5us".into(), 166), (">=2000us".into(), 1)]);
        let c = CheckResult::new("rbc-rw/map", false, "")
            .with("blocks", "1/50 0/50")
            .with("fresh_us", "<2us:0 <5us:3")
            .with("stale_us", "<2us:0 <5us:1")
            .with("acked", 10u64)
            .with("table_first", 4u64);
        let text = probe_plots(&c).expect("a probe check").into_string();
        assert!(text.contains("4 of 10 acked (40.0 %)"), "{text}");
        assert!(probe_plots(&CheckResult::new("other", true, "")).is_none());
    }
}
