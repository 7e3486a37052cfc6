//! Quantile sketches: a distribution kept as a few of its quantiles on a
//! fixed grid, small enough to ship one per node label in a packet.
//!
//! A sketch of `n` values keeps `k` of their quantiles, minimum and maximum
//! included; `k` grows with the square root of `n` (the sampling error of an
//! empirical quantile shrinks the same way, so more points would store
//! noise), capped by the caller. Windows with at most `k` values keep them
//! all, at probabilities `i / (k − 1)`. Larger ones keep quantiles at
//! probabilities `F(i / (k − 1))` with `F(x) = 3x² − 2x³`, which puts points
//! closer together towards both ends: a sketch whose last step spans
//! `1 / (k − 1)` of the mass reads a lone outlier back in that whole share of
//! draws (one slow request in 300, from a 26-point sketch, came back as one
//! in 20), while `F` leaves the last step `3 / (k − 1)²`, about one value of
//! the `n`. The middle steps are at most 1.5 times as wide, where the density
//! is smooth and interpolation costs little. Values are rounded to a grid of `resolution`
//! and stored as the first grid index plus non-negative steps, which are small
//! varints and compress well. Reading a quantile interpolates linearly between
//! the stored points, so the sketch is a continuous distribution from the
//! minimum to the maximum.
//!
//! Also here: the standard normal distribution function and its inverse, which
//! move values between ranks and normal scores (the Gaussian copula of
//! [`crate::gent`]'s calibrated timing).

/// Most points a sketch may hold; decoding refuses more.
pub const MAX_POINTS: usize = 4096;
/// Largest grid index magnitude; values beyond it are clamped (with the
/// default resolution of 1/64 this is ±2²⁴/64, far past any log duration).
const MAX_INDEX: i64 = 1 << 24;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SketchError {
    #[error("a sketch holds {0} points, at most {MAX_POINTS} are allowed")]
    TooLarge(usize),
    #[error("a sketch holds no points")]
    Empty,
    #[error("a sketch's grid index leaves its range")]
    Range,
    #[error("the sketch columns disagree in length")]
    Columns,
}

/// Quantiles of one distribution (see the module documentation).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantileSketch {
    /// Grid index of the smallest value.
    first: i32,
    /// Grid steps from each stored quantile to the next.
    steps: Vec<u32>,
    /// Points at probabilities `F(i / (k − 1))` (fewer points than values),
    /// not `i / (k − 1)` (every value kept).
    tails: bool,
}

impl QuantileSketch {
    /// A sketch of `values` (not empty, finite) with at most `max_points`
    /// quantiles, `points_per_root` per square root of the value count.
    pub fn of(values: &mut [f64], resolution: f64, max_points: usize, points_per_root: f64) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let k = points(n, max_points, points_per_root);
        let index = |v: f64| (v / resolution).round().clamp(-(MAX_INDEX as f64), MAX_INDEX as f64) as i64;
        let tails = k < n;
        let mut grid: Vec<i64> = Vec::with_capacity(k);
        for i in 0..k {
            let p = if k == 1 { 0.5 } else { probability(i as f64 / (k - 1) as f64, tails) };
            grid.push(index(quantile_of_sorted(values, p)));
        }
        let first = grid[0] as i32;
        let steps = grid.windows(2).map(|w| (w[1] - w[0]).max(0) as u32).collect();
        Some(QuantileSketch { first, steps, tails })
    }

    /// Number of stored quantiles.
    pub fn len(&self) -> usize {
        self.steps.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Checks a decoded sketch before use: bounded size and grid range.
    pub fn validate(&self) -> Result<(), SketchError> {
        if self.len() > MAX_POINTS {
            return Err(SketchError::TooLarge(self.len()));
        }
        let mut at = i64::from(self.first);
        for &s in &self.steps {
            at += i64::from(s);
            if at > MAX_INDEX {
                return Err(SketchError::Range);
            }
        }
        if i64::from(self.first).abs() > MAX_INDEX {
            return Err(SketchError::Range);
        }
        Ok(())
    }

    /// The stored quantiles as values.
    pub fn points(&self, resolution: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.len());
        let mut at = i64::from(self.first);
        out.push(at as f64 * resolution);
        for &s in &self.steps {
            at += i64::from(s);
            out.push(at as f64 * resolution);
        }
        out
    }
}

/// Sketches as a packet holds them: column by column (every sketch's first
/// grid index as its difference from the previous sketch's, then every
/// sketch's number of steps, whether it keeps tails, then all steps), so
/// that like numbers sit together and compress far better than sketch
/// after sketch.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SketchColumns {
    firsts: Vec<i32>,
    lengths: Vec<u32>,
    tails: Vec<bool>,
    steps: Vec<u32>,
}

impl SketchColumns {
    /// `sketches`, in order, as columns.
    pub fn of<'a>(sketches: impl IntoIterator<Item = &'a QuantileSketch>) -> Self {
        let (mut c, mut previous) = (SketchColumns::default(), 0i32);
        for sketch in sketches {
            c.firsts.push(sketch.first.wrapping_sub(previous));
            previous = sketch.first;
            c.lengths.push(sketch.steps.len() as u32);
            c.tails.push(sketch.tails);
            c.steps.extend_from_slice(&sketch.steps);
        }
        c
    }

    /// Number of sketches held.
    pub fn len(&self) -> usize {
        self.firsts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.firsts.is_empty()
    }

    /// The sketches back, in order, each checked as [`QuantileSketch::validate`]
    /// checks it; the columns must agree in length.
    pub fn into_sketches(self) -> Result<Vec<QuantileSketch>, SketchError> {
        let n = self.firsts.len();
        let total: u64 = self.lengths.iter().map(|&l| u64::from(l)).sum();
        if self.lengths.len() != n || self.tails.len() != n || total != self.steps.len() as u64 {
            return Err(SketchError::Columns);
        }
        let mut steps = self.steps.into_iter();
        let mut out = Vec::with_capacity(n);
        let mut first = 0i32;
        for ((delta, length), tails) in self.firsts.into_iter().zip(self.lengths).zip(self.tails) {
            first = first.wrapping_add(delta);
            if length as usize >= MAX_POINTS {
                return Err(SketchError::TooLarge(length as usize + 1));
            }
            let sketch = QuantileSketch { first, steps: steps.by_ref().take(length as usize).collect(), tails };
            sketch.validate()?;
            out.push(sketch);
        }
        Ok(out)
    }
}

/// The probability of the point at `x = i / (k − 1)` along a sketch.
fn probability(x: f64, tails: bool) -> f64 {
    if tails { x * x * (3.0 - 2.0 * x) } else { x }
}

/// How many quantiles a sketch of `n` values keeps.
fn points(n: usize, max_points: usize, points_per_root: f64) -> usize {
    let wanted = ((n as f64).sqrt() * points_per_root).ceil() as usize;
    wanted.clamp(2, max_points.clamp(2, MAX_POINTS)).min(n)
}

/// The `p` quantile of sorted values, interpolated.
pub fn quantile_of_sorted(sorted: &[f64], p: f64) -> f64 {
    let x = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let i = x.floor() as usize;
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] + (sorted[j] - sorted[i]) * (x - i as f64)
}

/// A sketch's stored points ready to read quantiles from: a distribution
/// uniform between each stored point and the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantiles {
    points: Vec<f64>,
    /// The probability of each point.
    probabilities: Vec<f64>,
}

impl Quantiles {
    pub fn new(sketch: &QuantileSketch, resolution: f64) -> Self {
        let points = sketch.points(resolution);
        let last = points.len().saturating_sub(1).max(1) as f64;
        let probabilities = (0..points.len()).map(|i| probability(i as f64 / last, sketch.tails)).collect();
        Quantiles { points, probabilities }
    }

    /// The value at probability `u` in [0, 1].
    pub fn at(&self, u: f64) -> f64 {
        let (p, q) = (&self.points, &self.probabilities);
        if p.len() == 1 {
            return p[0];
        }
        let u = u.clamp(0.0, 1.0);
        let i = q.partition_point(|&x| x <= u).saturating_sub(1).min(p.len() - 2);
        let t = if q[i + 1] > q[i] { ((u - q[i]) / (q[i + 1] - q[i])).clamp(0.0, 1.0) } else { 0.0 };
        p[i] + (p[i + 1] - p[i]) * t
    }

    /// The probability of `value`: the inverse of [`Quantiles::at`] (the
    /// middle of a run of equal points).
    pub fn rank(&self, value: f64) -> f64 {
        let (p, q) = (&self.points, &self.probabilities);
        if p.len() == 1 {
            return 0.5;
        }
        let below = p.partition_point(|&x| x < value);
        let upto = p.partition_point(|&x| x <= value);
        if below < upto {
            return (q[below] + q[upto - 1]) / 2.0;
        }
        if below == 0 {
            return 0.0;
        }
        if below == p.len() {
            return 1.0;
        }
        let (lo, hi) = (p[below - 1], p[below]);
        q[below - 1] + (q[below] - q[below - 1]) * (value - lo) / (hi - lo)
    }
}

/// The standard normal distribution function Φ.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Φ⁻¹: the normal score of probability `p` (clamped into (0, 1)). Acklam's
/// rational approximation refined by one Halley step on Φ, accurate to about
/// 1e-12 over the range.
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let x = rough_normal_quantile(p);
    let e = normal_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// Φ⁻¹ by Acklam's rational approximation alone: relative error under
/// 1.2e-9, at a third of [`normal_quantile`]'s cost (no Φ, no exp), for
/// where a score is placed within a slice of probability, not read as one.
pub fn rough_normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sketch_of_few_values_keeps_them_all() {
        let mut v = vec![3.0, 1.0, 2.0];
        let s = QuantileSketch::of(&mut v, 1.0 / 64.0, 32, 2.0).unwrap();
        assert_eq!(s.points(1.0 / 64.0), vec![1.0, 2.0, 3.0]);
        let q = Quantiles::new(&s, 1.0 / 64.0);
        assert_eq!(q.at(0.0), 1.0);
        assert_eq!(q.at(0.5), 2.0);
        assert_eq!(q.at(0.75), 2.5);
        assert_eq!(q.rank(2.5), 0.75);
    }

    #[test]
    fn quantiles_of_many_values_are_close_and_bounded_in_number() {
        let mut v: Vec<f64> = (0..10_000).map(|i| (i as f64 / 10_000.0).powi(2) * 10.0).collect();
        let s = QuantileSketch::of(&mut v, 1.0 / 64.0, 32, 2.0).unwrap();
        assert_eq!(s.len(), 32);
        let q = Quantiles::new(&s, 1.0 / 64.0);
        for p in [0.1, 0.5, 0.9] {
            let exact = quantile_of_sorted(&v, p);
            assert!((q.at(p) - exact).abs() < 0.1, "p {p}: {} vs {exact}", q.at(p));
            assert!((q.rank(q.at(p)) - p).abs() < 1e-9);
        }
    }

    #[test]
    fn a_lone_outlier_comes_back_about_as_often_as_it_was_seen() {
        // 299 values between 1 and 2, and one at 10: one in 300.
        let mut v: Vec<f64> = (0..299).map(|i| 1.0 + i as f64 / 299.0).chain([10.0]).collect();
        let s = QuantileSketch::of(&mut v, 1.0 / 64.0, 128, 1.5).unwrap();
        assert_eq!(s.len(), 26);
        let q = Quantiles::new(&s, 1.0 / 64.0);
        let draws = 100_000;
        let far = (0..draws).filter(|&j| q.at((j as f64 + 0.5) / draws as f64) > 3.0).count();
        // Evenly spaced points would read the last 1/25 of the mass (4 %)
        // between the 299th value and the outlier.
        assert!((far as f64) < 0.01 * draws as f64, "{far} of {draws} draws beyond 3");
        assert_eq!(q.at(1.0), 10.0);
        assert_eq!(q.at(0.0), 1.0);
        // The body still reads back close, and rank inverts it.
        for p in [0.1, 0.5, 0.9] {
            let exact = quantile_of_sorted(&v, p);
            assert!((q.at(p) - exact).abs() < 0.02, "p {p}: {} vs {exact}", q.at(p));
            assert!((q.rank(q.at(p)) - p).abs() < 1e-9, "p {p}");
        }
    }

    #[test]
    fn normal_quantile_inverts_the_distribution_function() {
        for p in [1e-10, 0.001, 0.02, 0.3, 0.5, 0.77, 0.99, 1.0 - 1e-9] {
            let z = normal_quantile(p);
            assert!((normal_cdf(z) - p).abs() < 1e-12 * p.max(1e-3) * 1e3, "p {p} z {z}");
        }
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-9);
    }

    #[test]
    fn the_rough_normal_quantile_is_within_its_stated_error() {
        for i in 1..10_000 {
            let p = f64::from(i) / 10_000.0;
            let (rough, exact) = (rough_normal_quantile(p), normal_quantile(p));
            assert!((rough - exact).abs() <= 1.2e-9 * exact.abs().max(1.0), "p {p}: {rough} against {exact}");
        }
        for p in [1e-12, 1e-6, 1.0 - 1e-6] {
            let (rough, exact) = (rough_normal_quantile(p), normal_quantile(p));
            assert!((rough - exact).abs() <= 1.2e-9 * exact.abs(), "p {p}: {rough} against {exact}");
        }
    }

    #[test]
    fn a_hostile_sketch_is_refused() {
        let s = QuantileSketch { first: 0, steps: vec![u32::MAX; 3], tails: true };
        assert_eq!(s.validate(), Err(SketchError::Range));
        let s = QuantileSketch { first: 0, steps: vec![0; MAX_POINTS], tails: false };
        assert_eq!(s.validate(), Err(SketchError::TooLarge(MAX_POINTS + 1)));
    }

    #[test]
    fn sketches_come_back_from_their_columns_and_hostile_columns_are_refused() {
        let sketches: Vec<QuantileSketch> = [vec![5.0, -3.0, 2.5], vec![7.0], (0..400).map(f64::from).collect()]
            .into_iter()
            .map(|mut v| QuantileSketch::of(&mut v, 1.0 / 64.0, 32, 1.5).unwrap())
            .collect();
        let columns = SketchColumns::of(&sketches);
        let bytes = postcard::to_stdvec(&columns).unwrap();
        let back: SketchColumns = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.into_sketches().unwrap(), sketches);

        let mut short = columns.clone();
        short.steps.pop();
        assert_eq!(short.into_sketches(), Err(SketchError::Columns));
        let mut lengths = columns.clone();
        lengths.tails.pop();
        assert_eq!(lengths.into_sketches(), Err(SketchError::Columns));
        let mut far = columns.clone();
        far.firsts[1] = i32::MAX;
        assert_eq!(far.into_sketches(), Err(SketchError::Range));
        let huge =
            SketchColumns { firsts: vec![0], lengths: vec![MAX_POINTS as u32], tails: vec![true], steps: vec![0; MAX_POINTS] };
        assert_eq!(huge.into_sketches(), Err(SketchError::TooLarge(MAX_POINTS + 1)));
    }
}
