//! Whether the doorbell probe's stale rate differs between two QEMUs, from
//! boots of both in one invocation: each boot gives one rate per probe
//! direction, the spread between boots of the same QEMU is estimated from
//! those replicates (never assumed, never carried from another machine),
//! and a sequential rule says when the ratio B/A is known well enough.
//! Arithmetic only.

/// One run's count of a probe direction: `stale` of `n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counts {
    pub stale: u64,
    pub n: u64,
}

/// Counts as text: `"k/n k/n ..."` (a probe's blocks, a comparison's boots).
pub fn counts_text(counts: &[(u64, u64)]) -> String {
    counts.iter().map(|(k, n)| format!("{k}/{n}")).collect::<Vec<_>>().join(" ")
}

/// A boot's count on the square-root scale, where a count's variance is
/// about a quarter whatever its size, zero included (Anscombe's transform
/// of a Poisson count), scaled to `n` iterations: `sqrt(k * n / n_i + 3/8)`.
fn root(k: f64, n_i: u64, n: f64) -> f64 {
    (k * n / n_i.max(1) as f64 + 0.375).sqrt()
}

/// The sample variance's sum of squares, and the mean, of some values.
fn mean_ss(x: &[f64]) -> (f64, f64) {
    let m = x.iter().sum::<f64>() / x.len() as f64;
    (m, x.iter().map(|v| (v - m).powi(2)).sum())
}

/// The overall level of a replicated comparison: the chance that a QEMU
/// compared with itself has any direction called fixed or REGRESSED,
/// shared out over the directions and the two looks (Bonferroni).
pub const LEVEL: f64 = 0.01;

/// Boots per side before a look can call anything: fewer leave the spread
/// between boots unknown.
pub const MIN_BOOTS: usize = 3;

/// Boots per side at most: the last look is then, if the budget has not
/// ended the boots before.
pub const MAX_BOOTS: usize = 12;

/// When the boots so far are judged. Two looks, each spending a share of
/// [`LEVEL`]: every look spends level, so a look after each boot (ten
/// looks) would need a t about a third larger for the same false-alarm
/// rate and call a real change in fewer comparisons.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Look {
    /// Halfway (half the budget or half of [`MAX_BOOTS`]): a clear change
    /// stops the boots early; a quarter of the level.
    Interim,
    /// When the budget or [`MAX_BOOTS`] ends the boots: the rest.
    Final,
}

impl Look {
    /// The share of [`LEVEL`] this look spends.
    pub fn share(self) -> f64 {
        match self {
            Look::Interim => 0.25,
            Look::Final => 0.75,
        }
    }
}

/// The ratio inside which a change is called "no change beyond": B/A
/// known to lie within [1/BAND, BAND].
pub const BAND: f64 = 2.0;

/// What the boots so far say of one direction's ratio B/A (its interval
/// at the comparison's level).
#[derive(Clone, Debug, PartialEq)]
pub enum RateCall {
    /// B's rate is lower: the interval lies below 1.
    Fixed(Ratio),
    /// B's rate is higher: the interval lies above 1.
    Regressed(Ratio),
    /// The interval lies within [1/BAND, BAND].
    NoChange(Ratio),
    /// Not known well enough yet (or too few boots: `None`).
    Open(Option<Ratio>),
}

impl RateCall {
    /// Whether more boots could change what is said.
    pub fn open(&self) -> bool {
        matches!(self, RateCall::Open(_))
    }
}

/// The ratio of B's rate to A's (geometric means over the boots) and its
/// interval, with the boots it rests on.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
    pub boots: (usize, usize),
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "B/A = {:.2} ({:.2}-{:.2}, {} boots of A, {} of B)",
            self.ratio, self.low, self.high, self.boots.0, self.boots.1
        )
    }
}

/// One direction's ratio B/A from the boots of A and of B (`stale`, `n`
/// each), judged at `look` with `directions` directions compared at once.
///
/// Each boot's count goes on the square-root scale ([`root`]); the spread
/// between boots of one QEMU is the pooled variance of those roots, never
/// below a Poisson count's (a quarter). A ratio `r` is in the interval when
/// B's boots and A's counts times `r` do not differ by Student's t at
/// the look's share of [`LEVEL`] shared over directions (the test inverted, so a
/// side with no stale read at all still bounds the ratio).
pub fn call_rates(a: &[(u64, u64)], b: &[(u64, u64)], directions: usize, look: Look) -> RateCall {
    if a.len() < MIN_BOOTS || b.len() < MIN_BOOTS {
        return RateCall::Open(None);
    }
    let total = |s: &[(u64, u64)]| s.iter().fold((0u64, 0u64), |(k, n), x| (k + x.0, n + x.1));
    let ((ka, na), (kb, nb)) = (total(a), total(b));
    let n = (na + nb) as f64 / (a.len() + b.len()) as f64;
    let (yb, ssb) = mean_ss(&b.iter().map(|&(k, m)| root(k as f64, m, n)).collect::<Vec<_>>());
    let df = (a.len() + b.len() - 2) as f64;
    let t = t_quantile(1.0 - LEVEL * look.share() / (2.0 * directions.max(1) as f64), df);
    let scale = 1.0 / a.len() as f64 + 1.0 / b.len() as f64;
    // How far B's mean root lies above A's scaled by r, in units of t * se: decreasing in r.
    let gap = |r: f64| {
        let (ya, ssa) = mean_ss(&a.iter().map(|&(k, m)| root(r * k as f64, m, n)).collect::<Vec<_>>());
        (yb - ya) / (t * (((ssa + ssb) / df).max(0.25) * scale).sqrt())
    };
    let (low, high) = (solve(|r| gap(r) - 1.0), solve(|r| gap(r) + 1.0));
    let ratio = if ka == 0 { f64::INFINITY } else { (kb as f64 / nb as f64) / (ka as f64 / na as f64) };
    let r = Ratio { ratio, low, high, boots: (a.len(), b.len()) };
    if r.high < 1.0 {
        RateCall::Fixed(r)
    } else if r.low > 1.0 {
        RateCall::Regressed(r)
    } else if r.low >= 1.0 / BAND && r.high <= BAND {
        RateCall::NoChange(r)
    } else {
        RateCall::Open(Some(r))
    }
}

/// Where a decreasing function of a ratio crosses zero, by bisection on
/// its log between 1e-6 and 1e6: 0 when it is below zero already at the
/// bottom, infinity when it is above zero at the top.
fn solve(f: impl Fn(f64) -> f64) -> f64 {
    let (mut lo, mut hi) = (-6.0 * std::f64::consts::LN_10, 6.0 * std::f64::consts::LN_10);
    if f(lo.exp()) <= 0.0 {
        return 0.0;
    }
    if f(hi.exp()) >= 0.0 {
        return f64::INFINITY;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if f(mid.exp()) > 0.0 { lo = mid } else { hi = mid }
    }
    (0.5 * (lo + hi)).exp()
}

/// The `p` quantile of Student's t with `df` degrees of freedom (bisection
/// on [`t_cdf`]; `p` above one half).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1e4);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

/// Student's t distribution function at `t` (through the regularized
/// incomplete beta function).
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// The regularized incomplete beta function I_x(a, b) (Numerical Recipes'
/// continued fraction, with the symmetry that makes it converge).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return x.clamp(0.0, 1.0);
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    d = 1.0 / if d.abs() < tiny { tiny } else { d };
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            d = 1.0 / if d.abs() < tiny { tiny } else { d };
            c = 1.0 + num / c;
            c = if c.abs() < tiny { tiny } else { c };
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-14 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let s: f64 = C[0] + C[1..].iter().enumerate().map(|(i, c)| c / (x + i as f64 + 1.0)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn students_t_is_right() {
        // Tables: t(0.975; 1) = 12.706, t(0.975; 10) = 2.228, t(0.995; 4) = 4.604, t(0.9995; 20) = 3.850.
        for (p, df, want) in [(0.975, 1.0, 12.706), (0.975, 10.0, 2.228), (0.995, 4.0, 4.604), (0.9995, 20.0, 3.850)] {
            assert!((t_quantile(p, df) - want).abs() < 2e-3, "t({p}; {df}) = {}", t_quantile(p, df));
        }
        assert!((t_cdf(0.0, 5.0) - 0.5).abs() < 1e-12);
        assert!((t_cdf(-2.228, 10.0) - 0.025).abs() < 1e-4);
        assert_eq!(counts_text(&[(1, 2), (3, 4)]), "1/2 3/4");
    }

    /// Boots of one direction whose counts scatter around `k` of 1000 by `spread` (a factor).
    fn boots(k: f64, spread: f64, n: usize) -> Vec<(u64, u64)> {
        (0..n).map(|i| ((k * if i % 2 == 0 { spread } else { 1.0 / spread }).round() as u64, 1000)).collect()
    }

    #[test]
    fn too_few_boots_say_nothing() {
        assert_eq!(call_rates(&boots(20.0, 1.2, 2), &boots(2.0, 1.2, 5), 5, Look::Final), RateCall::Open(None));
    }

    #[test]
    fn a_threefold_change_is_called_once_the_boots_agree() {
        // 15-25 against 5-8 of 1000 (the unmap race with replies held 1 ms).
        let (a, b) = (boots(20.0, 1.25, 6), boots(6.5, 1.25, 6));
        match call_rates(&a, &b, 5, Look::Final) {
            RateCall::Fixed(r) => {
                assert!(r.low < r.ratio && r.ratio < r.high && r.high < 1.0 && (r.ratio - 0.325).abs() < 0.05, "{r}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(call_rates(&b, &a, 5, Look::Final), RateCall::Regressed(_)));
        // A complete fix by other means: 10 of 1000 to none.
        assert!(matches!(call_rates(&boots(10.0, 1.3, 5), &[(0, 1000); 5], 5, Look::Final), RateCall::Fixed(_)));
    }

    #[test]
    fn the_interim_look_is_stricter_and_measured_comparisons_are_called_as_measured() {
        // This machine (TCG), read-write unmap, replies held 150 us on B (a bench --self-compare --hold-reply-us 150 run).
        let held = ([5, 3, 6, 3, 6, 2, 11, 3].map(|k| (k, 1000)), [0, 1, 0, 0, 0, 1, 0, 0].map(|k| (k, 1000)));
        assert!(matches!(call_rates(&held.0, &held.1, 5, Look::Final), RateCall::Fixed(_)));
        // The same QEMU against itself, idle (a bench --self-compare run): nothing called.
        let same = ([5, 1, 3, 3, 2, 2, 8, 5, 3].map(|k| (k, 1000)), [3, 7, 3, 5, 1, 0, 4, 5].map(|k| (k, 1000)));
        assert!(call_rates(&same.0, &same.1, 5, Look::Final).open());
        // A change the last look calls and the interim one, spending less of the level, does not.
        let (a, b) = (boots(8.0, 1.4, 5), boots(1.5, 1.4, 5));
        assert!(matches!(call_rates(&a, &b, 5, Look::Final), RateCall::Fixed(_)));
        assert!(call_rates(&a, &b, 5, Look::Interim).open());
    }

    #[test]
    fn boots_that_scatter_widely_keep_it_open_and_alike_ones_say_no_change() {
        // Load moves a rate 10x between boots: a 3x difference is not told.
        assert!(call_rates(&boots(20.0, 3.0, 4), &boots(7.0, 3.0, 4), 5, Look::Final).open());
        // The same QEMU, steady boots: no change beyond 2x.
        match call_rates(&boots(200.0, 1.1, 8), &boots(200.0, 1.1, 8), 5, Look::Final) {
            RateCall::NoChange(r) => assert!(r.low > 0.5 && r.high < 2.0, "{r}"),
            other => panic!("{other:?}"),
        }
        // Counts too small for their Poisson spread to be narrow stay open, however alike.
        assert!(call_rates(&[(1, 1000); 6], &[(1, 1000); 6], 5, Look::Final).open());
        assert!(call_rates(&[(0, 1000); 6], &[(0, 1000); 6], 5, Look::Final).open());
    }
}
