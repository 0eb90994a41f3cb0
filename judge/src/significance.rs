//! Whether two stale rates of the doorbell probe differ by more than the
//! machine makes them differ: log-rate tests whose variance is measured, not
//! assumed. Within a run, from the spread between its blocks (quasi-binomial
//! dispersion, never below a coin's); between runs of the same QEMU, the
//! spread measured by `bench --self-compare` ([`RUN_SPREAD`]). Used by
//! `--compare` on probe checks and by race entries' "worse than listed"
//! rule. Arithmetic only.

/// One run's count of a probe direction: `stale` of `n`, and the same per
/// block of consecutive iterations (`k/n` each).
#[derive(Clone, Debug, PartialEq)]
pub struct Counts {
    pub stale: u64,
    pub n: u64,
    pub blocks: Vec<(u64, u64)>,
}

/// Standard deviation of a probe rate's natural log between runs of the
/// same QEMU on the same machine, idle or with a CPU hog on the other
/// core: what load alone does (measured with `cargo xtask bench
/// --self-compare`, see README "Noise"). A difference between two runs is
/// judged against this and the runs' own dispersion together.
pub const RUN_SPREAD: f64 = 0.9;

/// The level below which a difference is called significant.
pub const SIGNIFICANT: f64 = 0.01;

/// Blocks as a fact: `"k/n k/n ..."`.
pub fn blocks_text(blocks: &[(u64, u64)]) -> String {
    blocks.iter().map(|(k, n)| format!("{k}/{n}")).collect::<Vec<_>>().join(" ")
}

/// The blocks a fact wrote; `None` when any is unreadable.
pub fn blocks_parse(s: &str) -> Option<Vec<(u64, u64)>> {
    s.split_whitespace().map(|b| b.split_once('/').and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)))).collect()
}

/// Pearson's dispersion of a run's blocks around its own rate (chi-square
/// over its degrees of freedom), never below 1 (a coin's): how much more
/// the blocks vary than independent iterations would.
pub fn dispersion(c: &Counts) -> f64 {
    let p = if c.n == 0 { 0.0 } else { c.stale as f64 / c.n as f64 };
    let used: Vec<&(u64, u64)> = c.blocks.iter().filter(|(_, n)| *n > 0).collect();
    if used.len() < 2 || p <= 0.0 || p >= 1.0 {
        return 1.0;
    }
    let chi2: f64 = used.iter().map(|(k, n)| (*k as f64 - *n as f64 * p).powi(2) / (*n as f64 * p * (1.0 - p))).sum();
    (chi2 / (used.len() - 1) as f64).max(1.0)
}

/// The log of a rate (a half stale added on each side, so zero counts have
/// one) and the variance of that log within its run (binomial, times the
/// run's dispersion).
pub fn log_rate(c: &Counts) -> (f64, f64) {
    let r = (c.stale as f64 + 0.5) / (c.n as f64 + 1.0);
    (r.ln(), dispersion(c) * (1.0 - r) / ((c.n as f64 + 1.0) * r))
}

/// Two-sided p-value that `b`'s rate differs from `a`'s by more than their
/// own dispersion and the spread between runs allow.
pub fn differ(a: &Counts, b: &Counts) -> f64 {
    let ((la, va), (lb, vb)) = (log_rate(a), log_rate(b));
    let z = (lb - la) / (va + vb + 2.0 * RUN_SPREAD * RUN_SPREAD).sqrt();
    erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// One-sided p-value that a run's rate is above the highest listed one
/// (`stale` of `of`, a run of its own): the two runs' dispersion, the
/// run's measured from its blocks and taken for both. The spread between
/// runs is not added: the highest listed is already the worst of many.
pub fn above_highest(run: &Counts, (stale, of): (u64, u64)) -> f64 {
    let highest = Counts { stale, n: of, blocks: Vec::new() };
    let phi = dispersion(run);
    let ((lr, vr), (lh, vh)) = (log_rate(run), log_rate(&highest));
    let z = (lr - lh) / (vr + vh * phi).sqrt();
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' `erfcc`,
/// fractional error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68 + t * (0.374_091_96 + t * (0.096_784_18 + t * (-0.186_288_06 + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(blocks: &[(u64, u64)]) -> Counts {
        Counts { stale: blocks.iter().map(|b| b.0).sum(), n: blocks.iter().map(|b| b.1).sum(), blocks: blocks.to_vec() }
    }

    #[test]
    fn the_normal_tail_is_right() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-6);
        assert!((0.5 * erfc(1.959_964 / std::f64::consts::SQRT_2) - 0.025).abs() < 1e-6);
        assert!((0.5 * erfc(3.090_232 / std::f64::consts::SQRT_2) - 0.001).abs() < 1e-6);
        assert!((erfc(-1.0) - 1.842_700_8).abs() < 1e-6);
    }

    #[test]
    fn blocks_that_vary_more_than_a_coin_raise_the_dispersion() {
        let even = counts(&[(2, 100); 10]);
        assert!((dispersion(&even) - 1.0).abs() < 1e-9, "a coin's at least");
        let bursty = counts(&[(20, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100)]);
        assert!(dispersion(&bursty) > 10.0, "{}", dispersion(&bursty));
        assert_eq!(blocks_parse(&blocks_text(&bursty.blocks)), Some(bursty.blocks.clone()));
        assert_eq!(blocks_parse("1/2 x"), None);
    }

    #[test]
    fn load_sized_differences_are_no_change_and_an_order_of_magnitude_more_is() {
        // 7 and 45 of 500: two idle runs of one QEMU (the spread the README measures).
        let low = counts(&[(1, 50), (0, 50), (1, 50), (1, 50), (0, 50), (1, 50), (1, 50), (0, 50), (1, 50), (1, 50)]);
        let high = counts(&[(5, 50), (4, 50), (5, 50), (4, 50), (5, 50), (4, 50), (5, 50), (4, 50), (5, 50), (4, 50)]);
        assert!(differ(&low, &high) > 0.01, "{}", differ(&low, &high));
        // 19 against 55 of 2000: the hog's doing.
        assert!(differ(&counts(&[(2, 200); 10]), &counts(&[(5, 200), (6, 200), (5, 200), (6, 200), (5, 200), (6, 200), (5, 200), (6, 200), (5, 200), (6, 200)])) > 0.01);
        // 0.1 % against 60 %: a QEMU that changed (1 % against 60 % is only p = 0.002: load moves rates that much).
        assert!(differ(&counts(&[(1, 1000)]), &counts(&[(600, 1000)])) < 1e-3);
    }

    #[test]
    fn above_the_highest_needs_more_than_its_runs_own_noise() {
        // 45 of 500 against a highest of 21 of 500: no longer called worse.
        assert!(above_highest(&counts(&[(5, 50), (4, 50), (5, 50), (4, 50), (5, 50), (4, 50), (5, 50), (4, 50), (5, 50), (4, 50)]), (21, 500)) > 0.001);
        // Ten times the highest is worse.
        assert!(above_highest(&counts(&[(21, 100); 10]), (21, 1000)) < 1e-6);
        // Bursty blocks widen the run's own interval.
        let bursty = counts(&[(40, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100), (0, 100)]);
        assert!(above_highest(&bursty, (10, 1000)) > above_highest(&counts(&[(4, 100); 10]), (10, 1000)));
    }
}
