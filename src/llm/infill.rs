//! The paper's infilling task (§5.4), for one missing attribute: a layer of
//! a call graph, written in the layer encoding, with one edge's call type or
//! destination replaced by `[MISSING]`; the answer is the value. The model is
//! fine-tuned on such questions (LoRA, as the paper) and answers greedily.
//! The trivial baseline answers the value most frequent for the edge's
//! source in the training graphs.

use std::collections::HashMap;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::graph::{CallGraph, Layer};
use super::text::{self, Document, EdgeLine, Field, LayerText, Layers};

/// What replaces the value in a question.
pub const MISSING: &str = "[MISSING]";

/// The line after the layer that asks for the value, naming its field:
/// the field is in the text anyway, and a small model finds it more easily
/// at the end.
fn ask(attribute: Attribute) -> &'static str {
    match attribute {
        Attribute::Type => "[MISSING] type is",
        Attribute::Destination => "[MISSING] destination is",
    }
}

/// Which attribute of an edge is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    Type,
    Destination,
}

/// One question and its answer.
#[derive(Debug, Clone)]
pub struct Question {
    pub prompt: String,
    pub answer: String,
    pub attribute: Attribute,
    /// The edge's caller, for the baseline.
    pub source: String,
}

/// Up to `count` questions from the layers of `graphs`: each a random layer
/// with edges, a random edge of it, and type or destination by a coin toss.
pub fn questions(graphs: &[CallGraph], count: usize, seed: u64) -> Vec<Question> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let layers: Vec<Layer> = graphs.iter().flat_map(CallGraph::layers).filter(|l| !l.edges.is_empty()).collect();
    if layers.is_empty() {
        return Vec::new();
    }
    (0..count)
        .filter_map(|_| {
            let layer = layers.choose(&mut rng)?;
            let attribute = if rng.random_bool(0.5) { Attribute::Type } else { Attribute::Destination };
            question(layer, rng.random_range(0..layer.edges.len()), attribute, &mut rng)
        })
        .collect()
}

/// `layer` with edge `at`'s `attribute` missing.
fn question(layer: &Layer, at: usize, attribute: Attribute, rng: &mut impl Rng) -> Option<Question> {
    let edge = layer.edges.get(at)?;
    let source = layer.conditions.start_node.clone().unwrap_or_else(|| "USER".into());
    let answer = match attribute {
        Attribute::Type => edge.kind.clone(),
        Attribute::Destination => edge.destination.clone(),
    };
    let conditions = text::shuffled_conditions(&layer.conditions, rng, 0.0);
    let mut edges: Vec<EdgeLine> =
        layer.edges.iter().map(|e| EdgeLine::from_edge(e, &text::shuffled_fields(rng), false)).collect();
    for field in &mut edges[at].0 {
        match (attribute, field) {
            (Attribute::Type, Field::Type(v)) | (Attribute::Destination, Field::Destination(v)) => *v = MISSING.into(),
            _ => {}
        }
    }
    let body = layer
        .subgraphs
        .iter()
        .map(|(edge, c)| text::BodyLine::Subgraph { edge: *edge, conditions: text::shuffled_conditions(c, rng, 0.0) })
        .collect();
    let doc = Document {
        records: vec![Layers(vec![LayerText { conditions, edges, body, close_inline: false, line: 0 }])],
        final_newline: true,
    };
    let prompt = format!("{}{}", text::write_layers(&doc), ask(attribute));
    Some(Question { prompt, answer: format!(" {answer}\n"), attribute, source })
}

/// Whether a generated answer is the question's.
pub fn correct(q: &Question, answer: &str) -> bool {
    answer.trim() == q.answer.trim()
}

/// The trivial baseline: the most frequent value of each attribute per
/// source in training, else the most frequent overall.
pub struct Frequent {
    by_source: HashMap<(Attribute, String), String>,
    overall: HashMap<Attribute, String>,
}

impl Frequent {
    pub fn of(graphs: &[CallGraph]) -> Self {
        let mut counts: HashMap<(Attribute, &str, &str), usize> = HashMap::new();
        let mut totals: HashMap<(Attribute, &str), usize> = HashMap::new();
        for e in graphs.iter().flat_map(|g| &g.edges) {
            for (a, v) in [(Attribute::Type, e.kind.as_str()), (Attribute::Destination, e.destination.as_str())] {
                *counts.entry((a, e.source.as_str(), v)).or_default() += 1;
                *totals.entry((a, v)).or_default() += 1;
            }
        }
        let mut by_source: HashMap<(Attribute, String), (usize, String)> = HashMap::new();
        for ((a, source, v), n) in counts {
            keep_best(by_source.entry((a, source.to_string())).or_default(), n, v);
        }
        let mut overall: HashMap<Attribute, (usize, String)> = HashMap::new();
        for ((a, v), n) in totals {
            keep_best(overall.entry(a).or_default(), n, v);
        }
        Frequent {
            by_source: by_source.into_iter().map(|(k, (_, v))| (k, v)).collect(),
            overall: overall.into_iter().map(|(k, (_, v))| (k, v)).collect(),
        }
    }

    pub fn answer(&self, q: &Question) -> String {
        self.by_source
            .get(&(q.attribute, q.source.clone()))
            .or_else(|| self.overall.get(&q.attribute))
            .cloned()
            .unwrap_or_default()
    }
}

/// Keeps the value of the larger count in `best`; ties go to the smaller
/// value, so the baseline does not depend on hash order.
fn keep_best(best: &mut (usize, String), n: usize, v: &str) {
    if n > best.0 || (n == best.0 && v < best.1.as_str()) {
        *best = (n, v.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::{Attribute, MISSING, question};
    use crate::llm::graph::{Edge, Layer, LayerConditions};
    use rand::SeedableRng;

    #[test]
    fn a_question_hides_exactly_one_value_of_one_edge() {
        let edge = |d: &str, k: &str| Edge {
            id: vec![0],
            source: "MS_1".into(),
            destination: d.into(),
            kind: k.into(),
            start: 0,
            finish: 1,
        };
        let layer = Layer {
            conditions: LayerConditions { start_node: Some("MS_1".into()), ..Default::default() },
            edges: vec![edge("MS_2", "rpc"), edge("MS_3", "http")],
            subgraphs: vec![],
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let q = question(&layer, 1, Attribute::Destination, &mut rng).unwrap();
        assert_eq!(q.answer, " MS_3\n");
        assert_eq!(q.source, "MS_1");
        assert!(q.prompt.contains(&format!("destination is {MISSING}")) && !q.prompt.contains("MS_3"), "{}", q.prompt);
        assert!(q.prompt.contains("MS_2") && q.prompt.ends_with("[MISSING] destination is"));
        let q = question(&layer, 0, Attribute::Type, &mut rng).unwrap();
        assert_eq!(q.answer, " rpc\n");
        assert!(q.prompt.contains(&format!("type is {MISSING}")) && q.prompt.contains("type is http"));
    }
}
