//! Whether two counts differ by more than chance: Fisher's exact test on
//! "k of n" against "k of n". Used by `--compare` on probe checks and by
//! race entries' "worse than listed" rule. Arithmetic only.

/// `ln(i!)` for every i up to `n`.
fn log_factorials(n: u64) -> Vec<f64> {
    let mut out = Vec::with_capacity(n as usize + 1);
    out.push(0.0);
    let mut acc = 0.0;
    for i in 1..=n {
        acc += (i as f64).ln();
        out.push(acc);
    }
    out
}

/// The probabilities of every table with the margins of `k1 of n1` against
/// `k2 of n2`, indexed by its first cell; and the observed first cell.
fn hypergeometric(k1: u64, n1: u64, k2: u64, n2: u64) -> (Vec<(u64, f64)>, u64) {
    let (k1, k2) = (k1.min(n1), k2.min(n2));
    let (n, k) = (n1 + n2, k1 + k2);
    let lf = log_factorials(n);
    let f = |x: u64| lf[x as usize];
    let lo = k.saturating_sub(n2);
    let hi = k.min(n1);
    let p = |a: u64| (f(k) + f(n - k) + f(n1) + f(n2) - f(n) - f(a) - f(k - a) - f(n1 - a) - f(n2 - (k - a))).exp();
    ((lo..=hi).map(|a| (a, p(a))).collect(), k1)
}

/// Two-sided p-value of Fisher's exact test: the probability, with equal
/// rates, of a table at most as likely as the one observed.
pub fn fisher_two_sided(k1: u64, n1: u64, k2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (tables, seen) = hypergeometric(k1, n1, k2, n2);
    let p_seen = tables.iter().find(|(a, _)| *a == seen).map_or(0.0, |t| t.1);
    tables.iter().filter(|(_, p)| *p <= p_seen * (1.0 + 1e-7)).map(|(_, p)| p).sum::<f64>().min(1.0)
}

/// One-sided p-value that the second rate is higher than the first
/// (`k2 of n2` against `k1 of n1`).
pub fn fisher_second_higher(k1: u64, n1: u64, k2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (tables, seen) = hypergeometric(k1, n1, k2, n2);
    // A higher second rate is a lower first cell.
    tables.iter().filter(|(a, _)| *a <= seen).map(|(_, p)| p).sum::<f64>().min(1.0)
}

/// The level below which a difference is called significant.
pub const SIGNIFICANT: f64 = 0.01;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fishers_test_gives_the_textbook_values() {
        // The tea-tasting style table [[1, 9], [11, 3]]: p = 0.002759.
        assert!((fisher_two_sided(1, 10, 11, 14) - 0.002759).abs() < 1e-5, "{}", fisher_two_sided(1, 10, 11, 14));
        // Equal counts say nothing.
        assert!(fisher_two_sided(5, 1000, 5, 1000) > 0.99);
        // 1 stale of 1000 against 0 of 1000 is no evidence of a fix.
        assert!(fisher_two_sided(1, 1000, 0, 1000) > 0.5);
        // 20 of 1000 against 0 of 1000 is.
        assert!(fisher_two_sided(20, 1000, 0, 1000) < SIGNIFICANT);
        assert!(fisher_second_higher(5, 1000, 30, 1000) < SIGNIFICANT);
        assert!(fisher_second_higher(30, 1000, 5, 1000) > 0.99);
    }
}
