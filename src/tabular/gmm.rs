//! A one-dimensional Gaussian mixture for mode-specific normalization (CTGAN
//! §4.2). CTGAN fits a variational (Dirichlet-process) mixture of up to 10
//! modes and keeps those weighing more than 0.005. Here the number of modes is
//! chosen by BIC over EM fits with 1 to 10 modes, which finds the few modes a
//! column has instead of splitting one hump into many, and the same 0.005
//! threshold prunes what is left. Initialisation is from quantiles, so a fit
//! depends only on the data (and the seeded subsample).

use rand::Rng;
use rand::seq::index::sample;

/// Most modes per column (CTGAN's `max_clusters`).
pub const MAX_MODES: usize = 10;
/// Modes lighter than this are pruned (CTGAN's `weight_threshold`).
pub const WEIGHT_THRESHOLD: f64 = 0.005;
/// Values used to fit at most; larger columns are subsampled (seeded).
const MAX_FIT_VALUES: usize = 20_000;
const MAX_ITERATIONS: usize = 100;
const TOLERANCE: f64 = 1e-7;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mixture {
    pub weights: Vec<f64>,
    pub means: Vec<f64>,
    pub stds: Vec<f64>,
}

impl Mixture {
    /// Fits `values` (finite, at least two distinct). `rng` picks the subsample.
    pub fn fit(values: &[f64], rng: &mut impl Rng) -> Mixture {
        let mut xs: Vec<f64> = if values.len() > MAX_FIT_VALUES {
            sample(rng, values.len(), MAX_FIT_VALUES).into_iter().map(|i| values[i]).collect()
        } else {
            values.to_vec()
        };
        xs.sort_by(f64::total_cmp);
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        // Keeps every mode's variance positive on columns with repeated values.
        let floor = (var * 1e-6).max(1e-12);
        let mut distinct = xs.clone();
        distinct.dedup();
        // BIC over 1..=10 modes; stop once two more modes in a row did not help.
        let mut best: Option<(f64, Mixture)> = None;
        let mut worse = 0;
        for k in 1..=MAX_MODES.min(distinct.len()) {
            let (m, log_likelihood) = Self::fit_k(&xs, k, var, floor);
            let bic = -2.0 * log_likelihood + (3 * k - 1) as f64 * n.ln();
            match &best {
                Some((b, _)) if bic >= *b => {
                    worse += 1;
                    if worse == 2 {
                        break;
                    }
                }
                _ => {
                    best = Some((bic, m));
                    worse = 0;
                }
            }
        }
        let mut m =
            best.map(|(_, m)| m).unwrap_or(Mixture { weights: vec![1.0], means: vec![mean], stds: vec![var.max(floor).sqrt()] });
        m.prune();
        m
    }

    /// EM with `k` modes from quantile starts; returns the fit and its log-likelihood.
    fn fit_k(xs: &[f64], k: usize, var: f64, floor: f64) -> (Mixture, f64) {
        let n = xs.len() as f64;
        let mut m = Mixture {
            weights: vec![1.0 / k as f64; k],
            means: (0..k).map(|j| xs[(((j as f64 + 0.5) / k as f64 * n) as usize).min(xs.len() - 1)]).collect(),
            stds: vec![(var / (k * k) as f64).max(floor).sqrt(); k],
        };
        let mut resp = vec![0.0; xs.len() * k];
        let mut previous = f64::NEG_INFINITY;
        let mut log_likelihood = f64::NEG_INFINITY;
        for _ in 0..MAX_ITERATIONS {
            log_likelihood = m.expect(xs, &mut resp);
            m.maximise(xs, &resp, floor);
            if (log_likelihood - previous).abs() <= TOLERANCE * log_likelihood.abs().max(1.0) {
                break;
            }
            previous = log_likelihood;
        }
        (m, log_likelihood)
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// E step: responsibilities into `resp` (row-major, one row per value);
    /// returns the log-likelihood.
    fn expect(&self, xs: &[f64], resp: &mut [f64]) -> f64 {
        let k = self.len();
        let mut total = 0.0;
        for (i, &x) in xs.iter().enumerate() {
            let row = &mut resp[i * k..(i + 1) * k];
            total += self.log_posterior(x, row);
        }
        total
    }

    /// Posterior probabilities of each mode for `x` into `out`; returns log p(x).
    pub fn log_posterior(&self, x: f64, out: &mut [f64]) -> f64 {
        let mut max = f64::NEG_INFINITY;
        for j in 0..self.len() {
            let z = (x - self.means[j]) / self.stds[j];
            let lp = if self.weights[j] > 0.0 {
                self.weights[j].ln() - self.stds[j].ln() - 0.5 * z * z - 0.918_938_533_204_672_7
            } else {
                f64::NEG_INFINITY
            };
            out[j] = lp;
            max = max.max(lp);
        }
        let sum: f64 = out.iter().map(|lp| (lp - max).exp()).sum();
        for lp in out.iter_mut() {
            *lp = (*lp - max).exp() / sum;
        }
        max + sum.ln()
    }

    /// M step.
    fn maximise(&mut self, xs: &[f64], resp: &[f64], floor: f64) {
        let k = self.len();
        let mut count = vec![0.0; k];
        let mut sum = vec![0.0; k];
        for (i, &x) in xs.iter().enumerate() {
            for j in 0..k {
                let r = resp[i * k + j];
                count[j] += r;
                sum[j] += r * x;
            }
        }
        for j in 0..k {
            if count[j] > 1e-12 {
                self.means[j] = sum[j] / count[j];
            }
        }
        let mut sq = vec![0.0; k];
        for (i, &x) in xs.iter().enumerate() {
            for j in 0..k {
                sq[j] += resp[i * k + j] * (x - self.means[j]).powi(2);
            }
        }
        let total: f64 = count.iter().sum();
        for j in 0..k {
            self.weights[j] = if total > 0.0 { count[j] / total } else { 1.0 / k as f64 };
            if count[j] > 1e-12 {
                self.stds[j] = (sq[j] / count[j]).max(floor).sqrt();
            }
        }
    }

    /// Drops modes under the weight threshold and renormalises.
    fn prune(&mut self) {
        let keep: Vec<usize> = (0..self.len()).filter(|&j| self.weights[j] > WEIGHT_THRESHOLD).collect();
        let keep = if keep.is_empty() {
            // Cannot happen with at least one value, but never leave no mode.
            vec![(0..self.len()).max_by(|&a, &b| self.weights[a].total_cmp(&self.weights[b])).unwrap_or(0)]
        } else {
            keep
        };
        let total: f64 = keep.iter().map(|&j| self.weights[j]).sum();
        *self = Mixture {
            weights: keep.iter().map(|&j| self.weights[j] / total).collect(),
            means: keep.iter().map(|&j| self.means[j]).collect(),
            stds: keep.iter().map(|&j| self.stds[j]).collect(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Deterministic draws from a normal distribution (Box-Muller).
    fn normal(rng: &mut StdRng, mean: f64, std: f64) -> f64 {
        let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        mean + std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    #[test]
    fn finds_the_modes_of_a_bimodal_column_and_prunes_the_rest() {
        let mut rng = StdRng::seed_from_u64(7);
        let xs: Vec<f64> =
            (0..6000).map(|i| if i % 3 == 0 { normal(&mut rng, 10.0, 1.0) } else { normal(&mut rng, -5.0, 0.5) }).collect();
        let m = Mixture::fit(&xs, &mut StdRng::seed_from_u64(1));
        assert!(m.len() >= 2 && m.len() <= 4, "{m:?}");
        let heavy: Vec<usize> = (0..m.len()).filter(|&j| m.weights[j] > 0.2).collect();
        assert_eq!(heavy.len(), 2, "{m:?}");
        let mut means: Vec<f64> = heavy.iter().map(|&j| m.means[j]).collect();
        means.sort_by(f64::total_cmp);
        assert!((means[0] + 5.0).abs() < 0.2 && (means[1] - 10.0).abs() < 0.3, "{m:?}");
        assert!((m.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(m.weights.iter().all(|&w| w > WEIGHT_THRESHOLD));
    }

    #[test]
    fn the_same_data_fits_the_same_mixture() {
        let xs: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64 / 10.0).collect();
        let a = Mixture::fit(&xs, &mut StdRng::seed_from_u64(3));
        let b = Mixture::fit(&xs, &mut StdRng::seed_from_u64(3));
        assert_eq!(a, b);
    }
}
