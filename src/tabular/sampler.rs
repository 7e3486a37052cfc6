//! Conditional vectors and training-by-sampling (CTGAN §4.3). For each row of a
//! batch: pick a categorical column uniformly, a category of it with
//! probability proportional to the log of its frequency (so rare categories are
//! seen), and a real row holding that category. The conditional vector is the
//! one-hot of the chosen category over all categorical columns' categories.

use rand::Rng;

use super::transformer::{ColumnTransform, Transformer};

/// One batch of conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct CondBatch {
    /// `rows × cond_width` one-hots.
    pub cond: Vec<f32>,
    /// Per row: index of the chosen column among the categorical columns.
    pub column: Vec<usize>,
    /// Per row: the chosen category within that column.
    pub category: Vec<usize>,
}

struct Discrete {
    /// Offset of the column's one-hot within an encoded row.
    data_offset: usize,
    /// Offset of its categories within the conditional vector.
    cond_offset: usize,
    /// Cumulative log-frequency probabilities, for training.
    log_cdf: Vec<f64>,
    /// Cumulative empirical probabilities, for generation.
    cdf: Vec<f64>,
    /// Rows of the training data per category (kept, so it can be stored).
    counts: Vec<u64>,
    /// Rows holding each category (empty in a sampler built from counts).
    rows: Vec<Vec<usize>>,
}

pub struct ConditionalSampler {
    discrete: Vec<Discrete>,
    cond_width: usize,
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let weights: Vec<f64> = weights.collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

fn draw(cdf: &[f64], rng: &mut impl Rng) -> usize {
    let u: f64 = rng.random();
    cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
}

impl ConditionalSampler {
    /// Indexes the categories of `data` (encoded by `transformer`, `rows × width`).
    pub fn new(transformer: &Transformer, data: &[f32]) -> Self {
        let width = transformer.width();
        let rows = data.len() / width.max(1);
        let mut by_column = Vec::new();
        let mut data_offset = 0;
        for column in &transformer.columns {
            if let ColumnTransform::Categorical { categories, .. } = column {
                let mut by_category = vec![Vec::new(); categories.len()];
                for r in 0..rows {
                    let cells = &data[r * width + data_offset..r * width + data_offset + categories.len()];
                    if let Some(j) = cells.iter().position(|&v| v > 0.5) {
                        by_category[j].push(r);
                    }
                }
                by_column.push(by_category);
            }
            data_offset += column.width();
        }
        Self::build(transformer, by_column.iter().map(|c| c.iter().map(|r| r.len() as u64).collect()).collect(), by_column)
    }

    /// A sampler for generation only, from the category counts of the training
    /// data (what [`ConditionalSampler::counts`] returned). `None` when the
    /// counts do not fit the transformer's categorical columns.
    pub fn from_counts(transformer: &Transformer, counts: Vec<Vec<u64>>) -> Option<Self> {
        let widths: Vec<usize> = transformer
            .columns
            .iter()
            .filter_map(|c| match c {
                ColumnTransform::Categorical { categories, .. } => Some(categories.len()),
                _ => None,
            })
            .collect();
        let fits =
            widths.len() == counts.len() && widths.iter().zip(&counts).all(|(&w, c)| w == c.len() && c.iter().any(|&n| n > 0));
        fits.then(|| Self::build(transformer, counts, Vec::new()))
    }

    fn build(transformer: &Transformer, counts: Vec<Vec<u64>>, mut rows: Vec<Vec<Vec<usize>>>) -> Self {
        rows.resize(counts.len(), Vec::new());
        let mut discrete = Vec::with_capacity(counts.len());
        let (mut data_offset, mut cond_offset, mut k) = (0, 0, 0);
        for column in &transformer.columns {
            if let ColumnTransform::Categorical { categories, .. } = column {
                let n = &counts[k];
                discrete.push(Discrete {
                    data_offset,
                    cond_offset,
                    log_cdf: cumulative(n.iter().map(|&c| (c as f64 + 1.0).ln())),
                    cdf: cumulative(n.iter().map(|&c| c as f64)),
                    counts: n.clone(),
                    rows: std::mem::take(&mut rows[k]),
                });
                cond_offset += categories.len();
                k += 1;
            }
            data_offset += column.width();
        }
        ConditionalSampler { discrete, cond_width: cond_offset }
    }

    /// Rows per category of every categorical column, in column order.
    pub fn counts(&self) -> Vec<Vec<u64>> {
        self.discrete.iter().map(|d| d.counts.clone()).collect()
    }

    /// Width of the conditional vector (0 without categorical columns).
    pub fn cond_width(&self) -> usize {
        self.cond_width
    }

    /// Offset, within an encoded row, of categorical column `column`'s one-hot.
    pub fn data_offset(&self, column: usize) -> usize {
        self.discrete[column].data_offset
    }

    /// Offset, within the conditional vector, of categorical column `column`.
    pub fn cond_offset(&self, column: usize) -> usize {
        self.discrete[column].cond_offset
    }

    /// Conditions for training: categories by log-frequency. `None` when the
    /// table has no categorical column.
    pub fn sample_train(&self, batch: usize, rng: &mut impl Rng) -> Option<CondBatch> {
        self.sample(batch, rng, |d| &d.log_cdf)
    }

    /// Conditions for generation: categories by their real frequency, so the
    /// generated marginals follow the data.
    pub fn sample_original(&self, batch: usize, rng: &mut impl Rng) -> Option<CondBatch> {
        self.sample(batch, rng, |d| &d.cdf)
    }

    fn sample(&self, batch: usize, rng: &mut impl Rng, cdf: impl Fn(&Discrete) -> &Vec<f64>) -> Option<CondBatch> {
        if self.discrete.is_empty() {
            return None;
        }
        let mut out = CondBatch {
            cond: vec![0.0; batch * self.cond_width],
            column: Vec::with_capacity(batch),
            category: Vec::with_capacity(batch),
        };
        for r in 0..batch {
            let c = rng.random_range(0..self.discrete.len());
            let d = &self.discrete[c];
            let k = draw(cdf(d), rng);
            out.cond[r * self.cond_width + d.cond_offset + k] = 1.0;
            out.column.push(c);
            out.category.push(k);
        }
        Some(out)
    }

    /// A real row holding category `category` of categorical column `column`
    /// (any row when no row does, which only unseen data could cause).
    pub fn sample_row(&self, column: usize, category: usize, rows: usize, rng: &mut impl Rng) -> usize {
        let candidates = self.discrete[column].rows.get(category).map_or(&[][..], |r| &r[..]);
        if candidates.is_empty() { rng.random_range(0..rows) } else { candidates[rng.random_range(0..candidates.len())] }
    }
}
