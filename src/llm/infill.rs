//! The paper's infilling tasks (§5.4).
//!
//! - **An attribute:** a layer of a call graph, in the layer encoding, with
//!   one edge's call type or destination replaced by `[MISSING]`; the answer
//!   is the value.
//! - **An edge:** a layer and one of its child layers, with the edge that
//!   connects them replaced by `[MISSING]`; the answer is that edge's line.
//!   The child layer's `start_node` and `latency` and the parent's subgraph
//!   line for the edge are left out: they state the edge's destination and
//!   finish, and the task would be copying them. An answer is right when its
//!   id, destination and type are the edge's and it finishes no earlier than
//!   it starts (the paper's check).
//!
//! The model is fine-tuned on such questions and answers greedily. The
//! trivial baseline answers what is most frequent for the edge's source in
//! the training graphs.

use std::collections::HashMap;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::graph::{CallGraph, Layer};
use super::text::{self, Document, EdgeLine, Field, LayerText, Layers};

/// What replaces the value in a question.
pub const MISSING: &str = "[MISSING]";

/// The paper's accuracy for each task (Table 2).
pub const PAPER_ATTRIBUTE: f64 = 0.709;
pub const PAPER_EDGE: f64 = 0.662;

/// Field order of an edge answer: one fixed order is easier to learn than
/// the shuffled orders of the prompt's lines.
const ANSWER_FIELDS: [usize; 6] = [0, 1, 2, 3, 4, 5];

/// The line after the question that names what is missing: it is in the
/// text anyway, and a small model finds it more easily at the end.
fn ask(missing: Missing) -> &'static str {
    match missing {
        Missing::Type => "[MISSING] type is",
        Missing::Destination => "[MISSING] destination is",
        Missing::Edge => "[MISSING] edge is",
    }
}

/// What a question leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// One edge's call type.
    Type,
    /// One edge's destination.
    Destination,
    /// The whole edge from a layer to one of its child layers.
    Edge,
}

/// One question and its answer.
#[derive(Debug, Clone)]
pub struct Question {
    pub prompt: String,
    pub answer: String,
    pub missing: Missing,
    /// The edge's caller, for the baseline.
    pub source: String,
    /// The edge's id within its layer, for the baseline of an edge.
    pub edge_id: u64,
}

/// Up to `count` attribute questions from the layers of `graphs`: each a
/// random layer with edges, a random edge of it, and type or destination by
/// a coin toss.
pub fn questions(graphs: &[CallGraph], count: usize, seed: u64) -> Vec<Question> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let layers: Vec<Layer> = graphs.iter().flat_map(CallGraph::layers).filter(|l| !l.edges.is_empty()).collect();
    if layers.is_empty() {
        return Vec::new();
    }
    (0..count)
        .filter_map(|_| {
            let layer = layers.choose(&mut rng)?;
            let missing = if rng.random_bool(0.5) { Missing::Type } else { Missing::Destination };
            question(layer, rng.random_range(0..layer.edges.len()), missing, &mut rng)
        })
        .collect()
}

/// Up to `count` edge questions from `graphs`: each a random pair of a
/// layer and one of its child layers.
pub fn edge_questions(graphs: &[CallGraph], count: usize, seed: u64) -> Vec<Question> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pairs: Vec<(Layer, Layer, u64)> = graphs.iter().flat_map(|g| connected(&g.layers())).collect();
    (0..count)
        .filter_map(|_| {
            let (parent, child, edge) = pairs.choose(&mut rng)?;
            edge_question(parent, child, *edge, &mut rng)
        })
        .collect()
}

/// Every (layer, child layer, id of the edge between them) of one graph's
/// layers. [`CallGraph::layers`] writes them depth first, so a layer's
/// child layers follow it in the order of its subgraphs, each after the
/// whole subtree of the one before: a stack of the layers still owed
/// children pairs them without recursion.
fn connected(layers: &[Layer]) -> Vec<(Layer, Layer, u64)> {
    let mut out = Vec::new();
    let mut owed: Vec<(usize, usize)> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        if let Some((parent, left)) = owed.last_mut() {
            let p = &layers[*parent];
            let (edge, _) = p.subgraphs[p.subgraphs.len() - *left];
            out.push((p.clone(), layer.clone(), edge));
            *left -= 1;
        }
        owed.push((i, layer.subgraphs.len()));
        while owed.last().is_some_and(|&(_, left)| left == 0) {
            owed.pop();
        }
    }
    out
}

/// The caller of `layer`'s edges.
fn source(layer: &Layer) -> String {
    layer.conditions.start_node.clone().unwrap_or_else(|| "USER".into())
}

/// `layer` as text with its conditions and fields shuffled, without the
/// subgraph line of edge `without`.
fn layer_text(layer: &Layer, without: Option<u64>, rng: &mut impl Rng) -> LayerText {
    let conditions = text::shuffled_conditions(&layer.conditions, rng, 0.0);
    let edges = layer.edges.iter().map(|e| EdgeLine::from_edge(e, &text::shuffled_fields(rng), false)).collect();
    let body = (layer.subgraphs.iter())
        .filter(|(edge, _)| Some(*edge) != without)
        .map(|(edge, c)| text::BodyLine::Subgraph { edge: *edge, conditions: text::shuffled_conditions(c, rng, 0.0) })
        .collect();
    LayerText { conditions, edges, body, close_inline: false, line: 0 }
}

fn written(layers: Vec<LayerText>) -> String {
    text::write_layers(&Document { records: vec![Layers(layers)], final_newline: true })
}

/// `layer` with edge `at`'s `missing` attribute missing.
fn question(layer: &Layer, at: usize, missing: Missing, rng: &mut impl Rng) -> Option<Question> {
    let edge = layer.edges.get(at)?;
    let answer = match missing {
        Missing::Type => edge.kind.clone(),
        Missing::Destination => edge.destination.clone(),
        Missing::Edge => return None,
    };
    let mut text = layer_text(layer, None, rng);
    for field in &mut text.edges[at].0 {
        match (missing, field) {
            (Missing::Type, Field::Type(v)) | (Missing::Destination, Field::Destination(v)) => *v = MISSING.into(),
            _ => {}
        }
    }
    let prompt = format!("{}{}", written(vec![text]), ask(missing));
    let edge_id = edge.id.first().copied().unwrap_or_default().into();
    Some(Question { prompt, answer: format!(" {answer}\n"), missing, source: source(layer), edge_id })
}

/// `parent` and `child` with the edge `edge_id` between them missing.
fn edge_question(parent: &Layer, child: &Layer, edge_id: u64, rng: &mut impl Rng) -> Option<Question> {
    let at = parent.edges.iter().position(|e| e.id.len() == 1 && u64::from(e.id[0]) == edge_id)?;
    let parent_text = layer_text(parent, Some(edge_id), rng);
    let mut line = String::new();
    parent_text.edges[at].write(&mut line);
    let mut hidden = child.clone();
    hidden.conditions.start_node = None;
    hidden.conditions.latency = None;
    let child_text = layer_text(&hidden, None, rng);
    // The parent's lines come first, so the first match is the edge's own.
    let prompt = format!("{}{}", written(vec![parent_text, child_text]).replacen(&line, MISSING, 1), ask(Missing::Edge));
    let mut answer = String::new();
    EdgeLine::from_edge(&parent.edges[at], &ANSWER_FIELDS, false).write(&mut answer);
    Some(Question { prompt, answer: format!(" {answer}\n"), missing: Missing::Edge, source: source(parent), edge_id })
}

/// How one answer did: whether it is right, and whether the destination and
/// the type in it are (for an attribute, the one asked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub right: bool,
    pub destination: bool,
    pub kind: bool,
}

/// Marks a generated answer to `q`.
pub fn mark(q: &Question, answer: &str) -> Marks {
    let same = answer.trim() == q.answer.trim();
    match q.missing {
        Missing::Type => Marks { right: same, destination: false, kind: same },
        Missing::Destination => Marks { right: same, destination: same, kind: false },
        Missing::Edge => {
            let (Ok(truth), Ok(got)) = (EdgeLine::read(&q.answer, &q.source), EdgeLine::read(answer, &q.source)) else {
                return Marks::default();
            };
            let (destination, kind) = (got.destination == truth.destination, got.kind == truth.kind);
            Marks { right: got.id == truth.id && destination && kind && got.start <= got.finish, destination, kind }
        }
    }
}

/// Shares of questions answered right: all of them, and the types and the
/// destinations among the questions that ask for them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scores {
    pub accuracy: f64,
    pub type_accuracy: f64,
    pub destination_accuracy: f64,
}

pub fn scores(questions: &[Question], marks: &[Marks]) -> Scores {
    let share = |asks: &dyn Fn(Missing) -> bool, right: &dyn Fn(&Marks) -> bool| {
        let picked: Vec<bool> = questions.iter().zip(marks).filter(|(q, _)| asks(q.missing)).map(|(_, m)| right(m)).collect();
        picked.iter().filter(|&&r| r).count() as f64 / picked.len().max(1) as f64
    };
    Scores {
        accuracy: share(&|_| true, &|m| m.right),
        type_accuracy: share(&|m| m != Missing::Destination, &|m| m.kind),
        destination_accuracy: share(&|m| m != Missing::Type, &|m| m.destination),
    }
}

/// The trivial baseline: the most frequent value of each attribute per
/// source in training, else the most frequent overall. For an edge, the
/// missing id (the gap in the layer's ids) with the most frequent
/// destination and type, taking no time.
pub struct Frequent {
    by_source: HashMap<(Missing, String), String>,
    overall: HashMap<Missing, String>,
}

impl Frequent {
    pub fn of(graphs: &[CallGraph]) -> Self {
        let mut counts: HashMap<(Missing, &str, &str), usize> = HashMap::new();
        let mut totals: HashMap<(Missing, &str), usize> = HashMap::new();
        for e in graphs.iter().flat_map(|g| &g.edges) {
            for (a, v) in [(Missing::Type, e.kind.as_str()), (Missing::Destination, e.destination.as_str())] {
                *counts.entry((a, e.source.as_str(), v)).or_default() += 1;
                *totals.entry((a, v)).or_default() += 1;
            }
        }
        let mut by_source: HashMap<(Missing, String), (usize, String)> = HashMap::new();
        for ((a, source, v), n) in counts {
            keep_best(by_source.entry((a, source.to_string())).or_default(), n, v);
        }
        let mut overall: HashMap<Missing, (usize, String)> = HashMap::new();
        for ((a, v), n) in totals {
            keep_best(overall.entry(a).or_default(), n, v);
        }
        Frequent {
            by_source: by_source.into_iter().map(|(k, (_, v))| (k, v)).collect(),
            overall: overall.into_iter().map(|(k, (_, v))| (k, v)).collect(),
        }
    }

    pub fn answer(&self, q: &Question) -> String {
        let value = |missing: Missing| {
            (self.by_source.get(&(missing, q.source.clone()))).or_else(|| self.overall.get(&missing)).cloned().unwrap_or_default()
        };
        match q.missing {
            Missing::Edge => {
                let edge = super::graph::Edge {
                    id: vec![u32::try_from(q.edge_id).unwrap_or(u32::MAX)],
                    source: q.source.clone(),
                    destination: value(Missing::Destination),
                    kind: value(Missing::Type),
                    start: 0,
                    finish: 0,
                };
                let mut line = String::new();
                EdgeLine::from_edge(&edge, &ANSWER_FIELDS, false).write(&mut line);
                line
            }
            missing => value(missing),
        }
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
    use super::{Frequent, MISSING, Missing, connected, edge_questions, mark, question};
    use crate::llm::graph::{CallGraph, Edge, Layer, LayerConditions};
    use rand::SeedableRng;

    fn edge(id: &[u32], s: &str, d: &str, k: &str, start: u64, finish: u64) -> Edge {
        Edge { id: id.to_vec(), source: s.into(), destination: d.into(), kind: k.into(), start, finish }
    }

    #[test]
    fn a_question_hides_exactly_one_value_of_one_edge() {
        let layer = Layer {
            conditions: LayerConditions { start_node: Some("MS_1".into()), ..Default::default() },
            edges: vec![edge(&[0], "MS_1", "MS_2", "rpc", 0, 1), edge(&[0], "MS_1", "MS_3", "http", 0, 1)],
            subgraphs: vec![],
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let q = question(&layer, 1, Missing::Destination, &mut rng).unwrap();
        assert_eq!(q.answer, " MS_3\n");
        assert_eq!(q.source, "MS_1");
        assert!(q.prompt.contains(&format!("destination is {MISSING}")) && !q.prompt.contains("MS_3"), "{}", q.prompt);
        assert!(q.prompt.contains("MS_2") && q.prompt.ends_with("[MISSING] destination is"));
        let q = question(&layer, 0, Missing::Type, &mut rng).unwrap();
        assert_eq!(q.answer, " rpc\n");
        assert!(q.prompt.contains(&format!("type is {MISSING}")) && q.prompt.contains("type is http"));
    }

    /// USER → MS_1, which calls MS_2 (calling MS_4) and MS_3 (calling MS_5 twice).
    fn graph() -> CallGraph {
        let edges = vec![
            edge(&[0], "USER", "MS_1", "http", 0, 100),
            edge(&[0, 1], "MS_1", "MS_2", "rpc", 10, 40),
            edge(&[0, 1, 1], "MS_2", "MS_4", "db", 12, 30),
            edge(&[0, 2], "MS_1", "MS_3", "mq", 50, 90),
            edge(&[0, 2, 1], "MS_3", "MS_5", "rpc", 55, 60),
            edge(&[0, 2, 2], "MS_3", "MS_5", "rpc", 61, 70),
        ];
        CallGraph { service: "S_1".into(), edges }
    }

    #[test]
    fn layers_pair_with_their_child_layers_in_depth_first_order() {
        let pairs = connected(&graph().layers());
        let named: Vec<(Option<&str>, Option<&str>, u64)> = (pairs.iter())
            .map(|(p, c, e)| (p.conditions.start_node.as_deref(), c.conditions.start_node.as_deref(), *e))
            .collect();
        assert_eq!(named, [(Some("USER"), Some("MS_1"), 0), (Some("MS_1"), Some("MS_2"), 1), (Some("MS_1"), Some("MS_3"), 2)]);
    }

    #[test]
    fn an_edge_question_hides_the_edge_and_what_names_it() {
        let questions = edge_questions(&[graph()], 40, 3);
        let q = questions.iter().find(|q| q.answer.contains("MS_3")).expect("a question about MS_1 → MS_3");
        assert_eq!((q.missing, q.source.as_str(), q.edge_id), (Missing::Edge, "MS_1", 2));
        assert_eq!(
            q.answer,
            " (edge_id is 2,destination is MS_3,type is mq,communication starts at 50 milliseconds,communication finishes at 90 milliseconds)\n"
        );
        // The child layer's calls are there; the destination and the
        // finish of the missing edge, and its subgraph line, are not.
        assert!(q.prompt.contains("MS_5") && q.prompt.contains("MS_2"), "{}", q.prompt);
        assert!(!q.prompt.contains("MS_3") && !q.prompt.contains("90") && !q.prompt.contains("edge_id 2>"), "{}", q.prompt);
        assert_eq!(q.prompt.matches(MISSING).count(), 2, "{}", q.prompt);
        assert!(q.prompt.ends_with("[MISSING] edge is"));
        // Right: id, destination and type, in any field order, with any
        // times that do not run backwards.
        let right = "(type is mq,edge_id is 2,communication starts at 1 milliseconds,destination is MS_3,communication finishes at 1 milliseconds)";
        assert!(mark(q, right).right);
        let backwards = right.replace("finishes at 1 ", "finishes at 0 ");
        assert_eq!((mark(q, &backwards).right, mark(q, &backwards).destination), (false, true));
        assert!(!mark(q, &right.replace("type is mq", "type is rpc")).right);
        assert!(!mark(q, "(edge_id is 2,destination is MS_3").right);
        // The baseline: the gap's id, MS_1's most frequent destination and type.
        let baseline = Frequent::of(&[graph()]).answer(q);
        let m = mark(q, &baseline);
        assert_eq!((m.right, m.destination, m.kind), (false, false, true), "{baseline}");
        assert!(baseline.contains("edge_id is 2,destination is MS_2,type is mq"), "{baseline}");
    }
}
