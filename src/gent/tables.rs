//! One of Gen-T's tabular generators (T_G, R_G or C_G): a CTGAN over the
//! columns that vary, with the columns that hold one value kept aside as
//! constants. A window where every span has status UNSET, or where no trace
//! has a chain, is normal; CTGAN cannot learn a constant, and storing one
//! value is cheaper than any network anyway.

use burn::tensor::Device;

use crate::nn::weights::Precision;
use crate::nn::{Context, Ctgan, CtganConfig, CtganError};
use crate::tabular::{Column, ColumnData, Table};

/// A constant column's value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Fixed {
    Number { value: f64, log: bool },
    Label(String),
}

/// A table generator: per column, either modelled or fixed.
pub struct TableModel {
    names: Vec<String>,
    /// `Some` for a constant column, in column order.
    fixed: Vec<Option<Fixed>>,
    /// The CTGAN over the other columns, `None` when none varies or there were no rows.
    ctgan: Option<Ctgan>,
}

/// [`TableModel`] as bytes go into a packet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredTableModel {
    names: Vec<String>,
    fixed: Vec<Option<Fixed>>,
    ctgan: Option<Vec<u8>>,
}

fn constant(column: &Column) -> Option<Fixed> {
    match &column.data {
        ColumnData::Continuous { values, log } => {
            let first = *values.first()?;
            values.iter().all(|&v| v == first).then_some(Fixed::Number { value: first, log: *log })
        }
        ColumnData::Categorical(values) => {
            let first = values.first()?;
            values.iter().all(|v| v == first).then(|| Fixed::Label(first.clone()))
        }
    }
}

impl TableModel {
    /// Whether [`Self::fit`] trains a CTGAN on `columns` (some column varies),
    /// and so reads a context.
    pub fn learns(columns: &[Column]) -> bool {
        columns.first().is_some_and(|c| c.len() > 0) && columns.iter().any(|c| constant(c).is_none())
    }

    /// Whether a CTGAN was trained (else every column is a constant).
    pub fn learned(&self) -> bool {
        self.ctgan.is_some()
    }

    /// Learns `columns` (all of one length, possibly zero) given the per-row
    /// `context`; `previous` warm-starts the CTGAN when it fits.
    pub fn fit(
        columns: Vec<Column>,
        context: Option<Context<'_>>,
        config: CtganConfig,
        device: &Device,
        previous: Option<&TableModel>,
    ) -> Result<Self, CtganError> {
        let names = columns.iter().map(|c| c.name.clone()).collect();
        let rows = columns.first().map_or(0, Column::len);
        let fixed: Vec<Option<Fixed>> = columns.iter().map(|c| if rows == 0 { None } else { constant(c) }).collect();
        let varying: Vec<Column> = columns.into_iter().zip(&fixed).filter(|(_, f)| f.is_none()).map(|(c, _)| c).collect();
        let ctgan = if rows == 0 || varying.is_empty() {
            None
        } else {
            let table = Table::new(varying)?;
            Some(Ctgan::fit_warm(&table, context, config, device, previous.and_then(|p| p.ctgan.as_ref()))?)
        };
        Ok(TableModel { names, fixed, ctgan })
    }

    /// Whether the CTGAN started from the previous model's weights.
    pub fn warm_started(&self) -> bool {
        self.ctgan.as_ref().is_some_and(Ctgan::warm_started)
    }

    /// `rows` generated rows, every column in the fitted order.
    pub fn sample(&self, rows: usize, context: Option<Context<'_>>, seed: u64) -> Result<Table, CtganError> {
        let mut generated = match (&self.ctgan, rows) {
            (Some(ctgan), 1..) => ctgan.sample(rows, context, seed)?.columns.into_iter(),
            _ => Vec::new().into_iter(),
        };
        let mut columns = Vec::with_capacity(self.names.len());
        for (name, fixed) in self.names.iter().zip(&self.fixed) {
            let column = match fixed {
                Some(Fixed::Number { value, log }) => Column::continuous(name, vec![*value; rows], *log),
                Some(Fixed::Label(label)) => Column::categorical(name, vec![label.clone(); rows]),
                None => match generated.next() {
                    Some(c) if c.len() == rows => c,
                    // Nothing was learnt (no rows at training), yet rows are
                    // asked for (a packet's topologies may say so): zeros, so
                    // that every column has a value for every row.
                    _ => Column::continuous(name, vec![0.0; rows], false),
                },
            };
            columns.push(column);
        }
        Ok(Table { columns })
    }

    /// Columns in every table this model samples.
    pub fn width(&self) -> usize {
        self.names.len()
    }

    pub fn to_stored(&self, precision: Precision) -> Result<StoredTableModel, CtganError> {
        Ok(StoredTableModel {
            names: self.names.clone(),
            fixed: self.fixed.clone(),
            ctgan: self.ctgan.as_ref().map(|c| c.to_bytes(precision)).transpose()?,
        })
    }

    pub fn from_stored(stored: StoredTableModel, device: &Device) -> Result<Self, CtganError> {
        if stored.names.len() != stored.fixed.len() {
            return Err(CtganError::Stored("column names and constants disagree in number".into()));
        }
        let ctgan = stored.ctgan.map(|b| Ctgan::from_bytes(&b, device)).transpose()?;
        let modelled = stored.fixed.iter().filter(|f| f.is_none()).count();
        if let Some(c) = &ctgan {
            if c.transformer.columns.len() != modelled {
                return Err(CtganError::Stored(format!(
                    "the CTGAN models {} columns, the table {modelled}",
                    c.transformer.columns.len()
                )));
            }
        }
        Ok(TableModel { names: stored.names, fixed: stored.fixed, ctgan })
    }
}
