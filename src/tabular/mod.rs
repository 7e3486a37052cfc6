//! Tables for CTGAN (Xu et al., NeurIPS 2019): `transformer` encodes columns
//! (mode-specific normalization for continuous ones, one-hot for categorical
//! ones) and decodes generator output back; `sampler` draws conditional vectors
//! for training-by-sampling; `gmm` fits the per-column mixtures.

mod gmm;
pub mod quality;
mod sampler;
pub mod sketch;
mod transformer;

pub use gmm::{MAX_MODES, Mixture, WEIGHT_THRESHOLD};
pub use sampler::{CondBatch, ConditionalSampler};
pub use transformer::{Activation, ColumnTransform, OutputSpan, Transformer};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TabularError {
    #[error("the table has no rows")]
    Empty,
    #[error("the table has no columns")]
    NoColumns,
    #[error("column {column:?} has {got} rows, the table {expected}")]
    Ragged { column: String, got: usize, expected: usize },
    #[error("column {column:?} row {row}: {value} is not a finite number")]
    NotFinite { column: String, row: usize, value: f64 },
    #[error("column {column:?} row {row}: {value} is negative, which a log-scaled column cannot hold")]
    NegativeLog { column: String, row: usize, value: f64 },
    #[error("column {column:?} holds a single value ({value}); drop constant columns before training")]
    Constant { column: String, value: String },
    #[error("column {column:?} row {row}: {value:?} was not seen when the transformer was fitted")]
    UnknownCategory { column: String, row: usize, value: String },
    #[error("column {column:?} is continuous in one place and categorical in the other")]
    Kind { column: String },
    #[error("encoded data has width {got}, the transformer expects {expected}")]
    Width { got: usize, expected: usize },
}

/// One column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// A number per row. `log` models `ln(1 + x)` instead (long-tailed positives
    /// such as durations; values must be ≥ 0).
    Continuous { values: Vec<f64>, log: bool },
    /// A label per row.
    Categorical(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
}

impl Column {
    pub fn continuous(name: &str, values: Vec<f64>, log: bool) -> Self {
        Column { name: name.into(), data: ColumnData::Continuous { values, log } }
    }

    pub fn categorical(name: &str, values: Vec<String>) -> Self {
        Column { name: name.into(), data: ColumnData::Categorical(values) }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            ColumnData::Continuous { values, .. } => values.len(),
            ColumnData::Categorical(values) => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Columns of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<Column>,
}

impl Table {
    /// Checks the shape and the values: rows, equal lengths, finite numbers.
    pub fn new(columns: Vec<Column>) -> Result<Self, TabularError> {
        let first = columns.first().ok_or(TabularError::NoColumns)?;
        let rows = first.len();
        if rows == 0 {
            return Err(TabularError::Empty);
        }
        for column in &columns {
            if column.len() != rows {
                return Err(TabularError::Ragged { column: column.name.clone(), got: column.len(), expected: rows });
            }
            if let ColumnData::Continuous { values, log } = &column.data {
                for (row, &value) in values.iter().enumerate() {
                    if !value.is_finite() {
                        return Err(TabularError::NotFinite { column: column.name.clone(), row, value });
                    }
                    if *log && value < 0.0 {
                        return Err(TabularError::NegativeLog { column: column.name.clone(), row, value });
                    }
                }
            }
        }
        Ok(Table { columns })
    }

    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Column::len)
    }
}
