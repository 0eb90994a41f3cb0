//! The doorbell probe's statistics: per direction, how many rings, how many
//! stale, what was seen, first-read latency histograms, and the upper bound
//! of the stale rate. Arithmetic only.

use std::collections::BTreeMap;

use shmem_judge::check::CheckResult;

/// Upper confidence limit of a rate after `k` events in `n` trials: for
/// k = 0 the exact one-sided 95 % limit (Clopper-Pearson, `1 - 0.05^(1/n)`);
/// for k > 0 the upper end of Wilson's two-sided 95 % score interval (so a
/// one-sided 97.5 % limit). Reported as the fact `upper95`.
pub fn rate_upper_bound(k: u32, n: u32) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let n = f64::from(n);
    if k == 0 {
        return 1.0 - 0.05f64.powf(1.0 / n);
    }
    let (p, z) = (f64::from(k) / n, 1.96f64);
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre + spread) / (1.0 + z * z / n)).min(1.0)
}

/// First-read latency buckets of the probe, upper bounds in microseconds.
const LATENCY_BUCKETS: [f64; 6] = [2.0, 5.0, 20.0, 100.0, 500.0, 2000.0];

fn histogram(us: &[f64]) -> String {
    if us.is_empty() {
        return "none".into();
    }
    let mut counts = [0u32; LATENCY_BUCKETS.len() + 1];
    for &u in us {
        counts[LATENCY_BUCKETS.iter().position(|&b| u < b).unwrap_or(LATENCY_BUCKETS.len())] += 1;
    }
    let mut parts: Vec<String> = LATENCY_BUCKETS.iter().zip(&counts).map(|(b, c)| format!("<{b}us:{c}")).collect();
    parts.push(format!(">={}us:{}", LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1], counts[LATENCY_BUCKETS.len()]));
    parts.join(" ")
}

/// One direction of the probe: how many rings, how many stale, what was seen.
#[derive(Default)]
pub struct Tally {
    pub n: u32,
    stale: u32,
    /// Per block of consecutive iterations: (stale, rings).
    blocks: Vec<(u64, u64)>,
    seen: BTreeMap<&'static str, u32>,
    first_stale: Option<String>,
    fresh_us: Vec<f64>,
    stale_us: Vec<f64>,
}

impl Tally {
    /// One ring at iteration `i` (in block `block`): what the first read
    /// showed, whether that is stale, and how long the read took.
    pub fn add(&mut self, (i, block): (u32, usize), kind: &'static str, stale: bool, us: Option<f64>) {
        if self.blocks.len() <= block {
            self.blocks.resize(block + 1, (0, 0));
        }
        self.blocks[block].0 += u64::from(stale);
        self.blocks[block].1 += 1;
        self.n += 1;
        *self.seen.entry(kind).or_insert(0) += 1;
        if stale {
            self.stale += 1;
            self.first_stale.get_or_insert_with(|| format!("iteration {i}: {kind}"));
        }
        if let Some(us) = us {
            if stale { self.stale_us.push(us) } else { self.fresh_us.push(us) }
        }
    }

    /// The direction's check: passes when no ring was stale. `order`: of the
    /// requests of its kind acked, how many had their memory table reach
    /// the backend first (facts `acked`, `table_first`).
    pub fn check(&self, name: String, what: &str, conditions: &str, order: (u32, u32)) -> CheckResult {
        let rate = if self.n == 0 { 0.0 } else { f64::from(self.stale) / f64::from(self.n) };
        let bound = rate_upper_bound(self.stale, self.n);
        let seen: Vec<String> = self.seen.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let verdict = if self.stale == 0 {
            format!("not observed in {} (rate < {:.3} % at 95 %)", self.n, bound * 100.0)
        } else {
            format!(
                "{} stale of {} ({:.3} %, < {:.3} % at 95 %); first at {}",
                self.stale,
                self.n,
                rate * 100.0,
                bound * 100.0,
                self.first_stale.as_deref().unwrap_or("?")
            )
        };
        let evidence = format!(
            "{what}: {verdict}; seen: {}; first-read latency, fresh: {}; stale: {}; the memory table that commits the request had reached the backend when it had the ack for {} of {} requests; {conditions}",
            seen.join(", "),
            histogram(&self.fresh_us),
            histogram(&self.stale_us),
            order.1,
            order.0
        );
        let mut c = CheckResult::new(name, self.stale == 0 && self.n > 0, evidence)
            .with("n", self.n)
            .with("stale", self.stale)
            .with("upper95", format!("{bound:.6}"));
        c = c
            .with("acked", order.0)
            .with("table_first", order.1)
            .with("blocks", shmem_judge::significance::counts_text(&self.blocks))
            // The first reads' latencies, fresh and stale, for the report's plots.
            .with("fresh_us", histogram(&self.fresh_us))
            .with("stale_us", histogram(&self.stale_us));
        // Every stale kind seen, for race entries: a kind they do not list is another bug.
        let kinds: Vec<&str> = self.seen.keys().copied().filter(|k| !k.starts_with("fresh")).collect();
        c = c.with("stale_kinds", kinds.join(" | "));
        // What a stale read showed most often (ties: the first by name).
        if let Some((kind, _)) =
            self.seen.iter().filter(|(k, _)| !k.starts_with("fresh")).max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k)))
        {
            c = c.with("stale_seen", *kind);
        }
        c
    }
}
