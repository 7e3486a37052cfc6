//! Span attributes the model learns (Gen-T's "configured attributes"): the
//! configuration lists keys; in a window, each key that occurs becomes table
//! columns of R_G and C_G beside the node's timing, status and kind.
//!
//! * Strings, booleans and keys declared `categorical` (status codes: numbers
//!   that name outcomes) are one categorical column. Its categories are the
//!   `vocabulary` most frequent values, typed (`s:GET`, `i:200`, `b:true`) so
//!   regeneration restores the OTLP type, plus [`OTHER`] for the rest and
//!   [`ABSENT`] where the span lacks the key.
//! * Other numbers are two columns: present or not, and the value (continuous;
//!   integers are rounded back to integers).
//!
//! Only scalar values are modelled; an array or map value counts as absent.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::tabular::{Column, ColumnData, Table};
use crate::trace::Span;

/// Category of a span without the key.
pub const ABSENT: &str = "-";
/// Category of the values beyond the vocabulary; regenerated as the string `other`.
pub const OTHER: &str = "other";
const PRESENT: &str = "+";

/// Which attributes to model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributeConfig {
    /// Span attribute keys to model, in order.
    pub keys: Vec<String>,
    /// Keys whose numeric values are categories (codes), not quantities.
    pub categorical: Vec<String>,
    /// Most distinct values kept per categorical key; the rest become `other`.
    pub vocabulary: usize,
}

/// The OpenTelemetry semantic conventions for HTTP, RPC, databases,
/// messaging and errors, current names and the older ones still common.
const DEFAULT_KEYS: [&str; 21] = [
    "http.request.method",
    "http.response.status_code",
    "http.route",
    "http.method",
    "http.status_code",
    "http.request.body.size",
    "http.response.body.size",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
    "db.system",
    "db.operation",
    "db.operation.name",
    "db.name",
    "db.namespace",
    "db.sql.table",
    "messaging.system",
    "messaging.operation",
    "error.type",
    "error",
];

const DEFAULT_CATEGORICAL: [&str; 3] = ["http.response.status_code", "http.status_code", "rpc.grpc.status_code"];

impl Default for AttributeConfig {
    fn default() -> Self {
        AttributeConfig {
            keys: DEFAULT_KEYS.iter().map(|k| k.to_string()).collect(),
            categorical: DEFAULT_CATEGORICAL.iter().map(|k| k.to_string()).collect(),
            vocabulary: 32,
        }
    }
}

impl AttributeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.vocabulary == 0 {
            return Err("attributes.vocabulary must be at least 1".into());
        }
        if let Some(k) = self.keys.iter().find(|k| k.is_empty()) {
            return Err(format!("attributes.keys holds an empty key {k:?}"));
        }
        Ok(())
    }
}

/// How one key is modelled in a window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Typed labels of the kept values.
    Categorical { vocabulary: Vec<String> },
    /// A number; `integer` values are rounded on the way out.
    Number { integer: bool },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyModel {
    pub key: String,
    pub kind: Kind,
}

/// The keys modelled in one window; stored with the model.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttributeSchema {
    pub keys: Vec<KeyModel>,
}

/// One node's modelled attribute values, in schema order.
pub type NodeValues = Vec<Option<Scalar>>;

/// A scalar attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Label(String),
    Number(f64),
}

fn typed_label(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(format!("s:{s}")),
        Value::BoolValue(b) => Some(format!("b:{b}")),
        Value::IntValue(i) => Some(format!("i:{i}")),
        Value::DoubleValue(d) if d.is_finite() => Some(format!("d:{d}")),
        _ => None,
    }
}

fn from_label(label: &str) -> Option<Value> {
    let (tag, text) = label.split_at_checked(2)?;
    match tag {
        "s:" => Some(Value::StringValue(text.to_string())),
        "b:" => text.parse().ok().map(Value::BoolValue),
        "i:" => text.parse().ok().map(Value::IntValue),
        "d:" => text.parse().ok().map(Value::DoubleValue),
        _ if label == OTHER => Some(Value::StringValue(OTHER.to_string())),
        _ => None,
    }
}

fn value_of<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::IntValue(i) => Some(*i as f64),
        Value::DoubleValue(d) if d.is_finite() => Some(*d),
        _ => None,
    }
}

impl AttributeSchema {
    /// The keys of `config` that occur on `spans`, each typed from its values.
    pub fn infer<'a>(spans: impl Iterator<Item = &'a Span> + Clone, config: &AttributeConfig) -> Self {
        let mut keys = Vec::new();
        for key in &config.keys {
            let values: Vec<&Value> = spans.clone().filter_map(|s| value_of(s, key)).collect();
            if values.is_empty() {
                continue;
            }
            let numeric = values.iter().all(|v| number(v).is_some());
            let kind = if numeric && !config.categorical.contains(key) {
                Kind::Number { integer: values.iter().all(|v| matches!(v, Value::IntValue(_))) }
            } else {
                Kind::Categorical { vocabulary: top_labels(&values, config.vocabulary) }
            };
            keys.push(KeyModel { key: key.clone(), kind });
        }
        AttributeSchema { keys }
    }

    /// Table columns per node.
    pub fn width(&self) -> usize {
        self.keys.iter().map(|k| if matches!(k.kind, Kind::Number { .. }) { 2 } else { 1 }).sum()
    }

    /// A span's modelled values.
    pub fn values(&self, span: &Span) -> NodeValues {
        self.keys
            .iter()
            .map(|k| {
                let v = value_of(span, &k.key)?;
                match &k.kind {
                    Kind::Number { .. } => number(v).map(Scalar::Number),
                    Kind::Categorical { vocabulary } => {
                        let label = typed_label(v)?;
                        Some(Scalar::Label(if vocabulary.contains(&label) { label } else { OTHER.to_string() }))
                    }
                }
            })
            .collect()
    }

    /// The columns of position `prefix` for `nodes` (`None`: a padding row).
    pub fn columns(&self, prefix: &str, nodes: &[Option<&NodeValues>]) -> Vec<Column> {
        let mut columns = Vec::with_capacity(self.width());
        for (i, k) in self.keys.iter().enumerate() {
            let name = format!("{prefix}attr.{}", k.key);
            let value = |n: &Option<&NodeValues>| n.and_then(|v| v.get(i).cloned().flatten());
            match k.kind {
                Kind::Categorical { .. } => columns.push(Column::categorical(
                    &name,
                    nodes
                        .iter()
                        .map(|n| match value(n) {
                            Some(Scalar::Label(l)) => l,
                            _ => ABSENT.to_string(),
                        })
                        .collect(),
                )),
                Kind::Number { .. } => {
                    let numbers: Vec<Option<f64>> = nodes
                        .iter()
                        .map(|n| match value(n) {
                            Some(Scalar::Number(x)) => Some(x),
                            _ => None,
                        })
                        .collect();
                    // Where the key is absent the value column holds the
                    // median, so the placeholder does not make a mode of its own.
                    let mut present: Vec<f64> = numbers.iter().flatten().copied().collect();
                    present.sort_by(f64::total_cmp);
                    let fill = present.get(present.len() / 2).copied().unwrap_or(0.0);
                    columns.push(Column::categorical(
                        &name,
                        numbers.iter().map(|x| if x.is_some() { PRESENT } else { ABSENT }.to_string()).collect(),
                    ));
                    columns.push(Column::continuous(
                        &format!("{name}.value"),
                        numbers.iter().map(|x| x.unwrap_or(fill)).collect(),
                        false,
                    ));
                }
            }
        }
        columns
    }

    /// The attributes of row `row`, reading this schema's columns from `first`.
    pub fn read(&self, table: &Table, first: usize, row: usize) -> Vec<KeyValue> {
        let label = |c: usize| match table.columns.get(c).map(|c| &c.data) {
            Some(ColumnData::Categorical(v)) => v.get(row).map(String::as_str),
            _ => None,
        };
        let mut out = Vec::new();
        let mut c = first;
        for k in &self.keys {
            let value = match &k.kind {
                Kind::Categorical { .. } => {
                    c += 1;
                    label(c - 1).and_then(from_label)
                }
                Kind::Number { integer } => {
                    c += 2;
                    let x = match table.columns.get(c - 1).map(|c| &c.data) {
                        Some(ColumnData::Continuous { values, .. }) => values.get(row).copied(),
                        _ => None,
                    };
                    match (label(c - 2), x) {
                        (Some(PRESENT), Some(x)) if *integer => Some(Value::IntValue(x.round() as i64)),
                        (Some(PRESENT), Some(x)) => Some(Value::DoubleValue(x)),
                        _ => None,
                    }
                }
            };
            if let Some(value) = value {
                out.push(KeyValue { key: k.key.clone(), value: Some(AnyValue { value: Some(value) }), ..Default::default() });
            }
        }
        out
    }
}

/// The `cap` most frequent typed labels (ties by label, so the choice is stable).
fn top_labels(values: &[&Value], cap: usize) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for v in values {
        if let Some(label) = typed_label(v) {
            *counts.entry(label).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.into_iter().take(cap).map(|(l, _)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_labels_restore_the_otlp_type() {
        for v in [Value::StringValue("GET".into()), Value::IntValue(404), Value::BoolValue(true), Value::DoubleValue(1.5)] {
            assert_eq!(from_label(&typed_label(&v).unwrap()), Some(v));
        }
        assert_eq!(from_label(OTHER), Some(Value::StringValue("other".into())));
        assert_eq!(from_label(ABSENT), None);
        assert_eq!(typed_label(&Value::DoubleValue(f64::NAN)), None);
    }
}
