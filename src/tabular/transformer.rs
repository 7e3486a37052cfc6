//! CTGAN's data transformer (§4.2). A continuous column becomes a scalar in
//! [-1, 1] (its offset from a mode's mean in units of 4 standard deviations)
//! followed by the one-hot of that mode, sampled from the mode posterior; a
//! categorical column becomes a one-hot. The inverse takes the most likely mode
//! and scales back. Encoded rows are `f32`, row-major.

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::gmm::Mixture;
use super::{Column, ColumnData, Table, TabularError};

/// How the generator must activate an output span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Tanh,
    Softmax,
}

/// A run of encoded columns with one activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputSpan {
    pub width: usize,
    pub activation: Activation,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ColumnTransform {
    Continuous { name: String, mixture: Mixture, log: bool },
    Categorical { name: String, categories: Vec<String> },
}

impl ColumnTransform {
    pub fn name(&self) -> &str {
        match self {
            ColumnTransform::Continuous { name, .. } | ColumnTransform::Categorical { name, .. } => name,
        }
    }

    pub fn width(&self) -> usize {
        match self {
            ColumnTransform::Continuous { mixture, .. } => 1 + mixture.len(),
            ColumnTransform::Categorical { categories, .. } => categories.len(),
        }
    }
}

/// A fitted transformer for one table layout.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transformer {
    pub columns: Vec<ColumnTransform>,
}

/// Past this scaled offset the sampled mode is not used: the most likely one is,
/// so every value stays representable (CTGAN clips at 0.99 instead, losing it).
const SCALE_LIMIT: f64 = 0.99;

impl Transformer {
    /// Fits every column. Deterministic given `seed`.
    pub fn fit(table: &Table, seed: u64) -> Result<Self, TabularError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let columns = table.columns.iter().map(|c| fit_column(c, &mut rng)).collect::<Result<_, _>>()?;
        Ok(Transformer { columns })
    }

    /// Encoded width of one row.
    pub fn width(&self) -> usize {
        self.columns.iter().map(ColumnTransform::width).sum()
    }

    /// The activation layout of an encoded row, for the generator's output.
    pub fn output_spans(&self) -> Vec<OutputSpan> {
        let mut spans = Vec::new();
        for column in &self.columns {
            match column {
                ColumnTransform::Continuous { mixture, .. } => {
                    spans.push(OutputSpan { width: 1, activation: Activation::Tanh });
                    spans.push(OutputSpan { width: mixture.len(), activation: Activation::Softmax });
                }
                ColumnTransform::Categorical { categories, .. } => {
                    spans.push(OutputSpan { width: categories.len(), activation: Activation::Softmax });
                }
            }
        }
        spans
    }

    /// Encodes `table` (same columns as fitted) to `rows × width` values.
    /// Modes are sampled from their posterior with a generator seeded by `seed`.
    pub fn transform(&self, table: &Table, seed: u64) -> Result<Vec<f32>, TabularError> {
        let rows = table.rows();
        let width = self.width();
        let mut out = vec![0f32; rows * width];
        let mut rng = StdRng::seed_from_u64(seed);
        let mut offset = 0;
        for (transform, column) in self.columns.iter().zip(&table.columns) {
            encode_column(transform, column, &mut out, width, offset, &mut rng)?;
            offset += transform.width();
        }
        Ok(out)
    }

    /// Decodes `rows × width` values (generator output or encoded data).
    pub fn inverse(&self, data: &[f32]) -> Result<Table, TabularError> {
        let width = self.width();
        if width == 0 || data.len() % width != 0 {
            return Err(TabularError::Width { got: data.len(), expected: width });
        }
        let rows = data.len() / width;
        let mut offset = 0;
        let mut columns = Vec::with_capacity(self.columns.len());
        for transform in &self.columns {
            let cell = |r: usize, j: usize| data[r * width + offset + j];
            let column = match transform {
                ColumnTransform::Continuous { name, mixture, log } => {
                    let values = (0..rows)
                        .map(|r| {
                            let mode = argmax((0..mixture.len()).map(|j| cell(r, 1 + j)));
                            // Generator output is in (-1, 1); encoded outliers may lie beyond.
                            let x = cell(r, 0) as f64 * 4.0 * mixture.stds[mode] + mixture.means[mode];
                            if *log { x.exp_m1().max(0.0) } else { x }
                        })
                        .collect();
                    Column::continuous(name, values, *log)
                }
                ColumnTransform::Categorical { name, categories } => {
                    let values =
                        (0..rows).map(|r| categories[argmax((0..categories.len()).map(|j| cell(r, j)))].clone()).collect();
                    Column::categorical(name, values)
                }
            };
            offset += transform.width();
            columns.push(column);
        }
        Ok(Table { columns })
    }
}

fn argmax(values: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

fn fit_column(column: &Column, rng: &mut StdRng) -> Result<ColumnTransform, TabularError> {
    match &column.data {
        ColumnData::Continuous { values, log } => {
            let xs: Vec<f64> = values.iter().map(|&v| if *log { v.ln_1p() } else { v }).collect();
            let first = xs[0];
            if xs.iter().all(|&x| x == first) {
                return Err(TabularError::Constant { column: column.name.clone(), value: values[0].to_string() });
            }
            Ok(ColumnTransform::Continuous { name: column.name.clone(), mixture: Mixture::fit(&xs, rng), log: *log })
        }
        ColumnData::Categorical(values) => {
            let mut categories = values.clone();
            categories.sort_unstable();
            categories.dedup();
            if categories.len() < 2 {
                return Err(TabularError::Constant { column: column.name.clone(), value: values[0].clone() });
            }
            Ok(ColumnTransform::Categorical { name: column.name.clone(), categories })
        }
    }
}

fn encode_column(
    transform: &ColumnTransform,
    column: &Column,
    out: &mut [f32],
    width: usize,
    offset: usize,
    rng: &mut StdRng,
) -> Result<(), TabularError> {
    match (transform, &column.data) {
        (ColumnTransform::Continuous { mixture, log, .. }, ColumnData::Continuous { values, .. }) => {
            let mut posterior = vec![0.0; mixture.len()];
            for (r, &value) in values.iter().enumerate() {
                let x = if *log { value.ln_1p() } else { value };
                mixture.log_posterior(x, &mut posterior);
                let scaled = |j: usize| (x - mixture.means[j]) / (4.0 * mixture.stds[j]);
                let mut mode = sample_index(&posterior, rng);
                if scaled(mode).abs() > SCALE_LIMIT {
                    mode = argmax(posterior.iter().map(|&p| p as f32));
                }
                let row = &mut out[r * width + offset..r * width + offset + 1 + mixture.len()];
                row[0] = scaled(mode) as f32;
                row[1 + mode] = 1.0;
            }
            Ok(())
        }
        (ColumnTransform::Categorical { categories, name }, ColumnData::Categorical(values)) => {
            for (r, value) in values.iter().enumerate() {
                let j = categories.binary_search(value).map_err(|_| TabularError::UnknownCategory {
                    column: name.clone(),
                    row: r,
                    value: value.clone(),
                })?;
                out[r * width + offset + j] = 1.0;
            }
            Ok(())
        }
        _ => Err(TabularError::Kind { column: column.name.clone() }),
    }
}

/// An index drawn with the given probabilities (summing to 1).
fn sample_index(probabilities: &[f64], rng: &mut impl Rng) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, p) in probabilities.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    probabilities.len() - 1
}
