//! The paper's prediction task (§5.4): from the first edges of a call graph,
//! will the rest of it contain an uncommon call? A classification head is
//! trained on the frozen language model's features, as the paper trains only
//! the last layer.
//!
//! The paper's prompt is a trace's first 10 edges. On the shared Alibaba
//! graphs only 33 of 911 have more than 10 edges, so a graph of `n ≥ 2`
//! edges gives a sample for each prompt of its first `k = 1..=min(10, n - 1)`
//! edges, in layer order: the question is always about at least one edge
//! still to come.
//!
//! "Uncommon" is counted on the training graphs only, in one of two ways
//! ([`Rarity`]). The default is the paper's words: a call occurring in under
//! 10 % of the training graphs. The instruction-tuning definition (under
//! 10 % of the graphs where its source calls anything) marks so few calls
//! that on the shared graphs only 9 of 2,405 training prompts have one to
//! come: no head can learn from 9 examples, and the majority class is then
//! right 99.6 % of the time whatever the model knows.

use rand::SeedableRng;

use super::graph::CallGraph;
use super::instruct::Facts;
use super::text::{self, Document};
use super::tokenizer::Tokenizer;

/// Edges in a prompt at most (the paper's 10).
pub const PROMPT_EDGES: usize = 10;

/// Which calls count as uncommon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rarity {
    /// In under 10 % of the training graphs ([`Facts::rare`]; the paper's words).
    #[default]
    Graphs,
    /// In under 10 % of the graphs where its source calls anything
    /// ([`Facts::uncommon`]; the instruction-tuning definition).
    Source,
}

impl Rarity {
    fn uncommon(self, facts: &Facts, e: &super::graph::Edge) -> bool {
        match self {
            Rarity::Graphs => facts.rare(e),
            Rarity::Source => facts.uncommon(e),
        }
    }
}

/// One question: a prompt and whether an uncommon call follows it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The first edges in the layer encoding (the model's own text).
    pub prompt: String,
    pub uncommon_follows: bool,
}

/// The samples of every graph of `graphs`; `facts` come from the training graphs.
pub fn samples(graphs: &[CallGraph], facts: &Facts, rarity: Rarity) -> Vec<Sample> {
    graphs.iter().flat_map(|g| graph_samples(g, facts, rarity)).collect()
}

/// A graph of `n` edges gives a sample for each prompt of its first
/// `k = 1..=min(10, n - 1)` edges.
fn graph_samples(g: &CallGraph, facts: &Facts, rarity: Rarity) -> Vec<Sample> {
    let layers = g.layers();
    let edges: Vec<bool> = layers.iter().flat_map(|l| &l.edges).map(|e| rarity.uncommon(facts, e)).collect();
    // Fields in a fixed order per graph (the model saw every order in training).
    let mut rng = rand::rngs::StdRng::seed_from_u64(edges.len() as u64);
    let doc = Document { records: vec![text::encode_layers(g, &mut rng, 0.0)], final_newline: true };
    let text = text::write_layers(&doc);
    (1..edges.len().min(PROMPT_EDGES + 1))
        .map(|k| Sample { prompt: first_edges(&text, k), uncommon_follows: edges[k..].iter().any(|&u| u) })
        .collect()
}

/// `text` up to and including its `k`-th edge line (a line starting `(`).
fn first_edges(text: &str, k: usize) -> String {
    let mut seen = 0;
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        end += line.len();
        if line.starts_with('(') {
            seen += 1;
            if seen == k {
                break;
            }
        }
    }
    text[..end].to_string()
}

/// A logistic-regression head over standardised features, fitted by
/// full-batch gradient descent with an L2 penalty. Classes are weighted to
/// balance, so a rare positive class is not simply predicted away.
#[derive(Debug, Clone)]
pub struct Head {
    mean: Vec<f32>,
    scale: Vec<f32>,
    weights: Vec<f32>,
    bias: f32,
}

/// Head fitting settings.
#[derive(Debug, Clone, Copy)]
pub struct HeadConfig {
    pub steps: usize,
    pub learning_rate: f32,
    pub l2: f32,
    /// Weight the classes to balance (for balanced accuracy); otherwise
    /// every sample counts once (for plain accuracy).
    pub balanced: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig { steps: 500, learning_rate: 0.1, l2: 1e-2, balanced: false }
    }
}

impl Head {
    /// Fits `features` (one row per sample, all of one width) to `labels`.
    pub fn fit(features: &[Vec<f32>], labels: &[bool], c: &HeadConfig) -> Self {
        let width = features.first().map_or(0, Vec::len);
        let n = features.len().max(1) as f32;
        let mut mean = vec![0f32; width];
        for f in features {
            mean.iter_mut().zip(f).for_each(|(m, x)| *m += x / n);
        }
        let mut scale = vec![0f32; width];
        for f in features {
            scale.iter_mut().zip(f.iter().zip(&mean)).for_each(|(s, (x, m))| *s += (x - m) * (x - m) / n);
        }
        scale.iter_mut().for_each(|s| *s = 1.0 / s.sqrt().max(1e-6));
        let mut head = Head { mean, scale, weights: vec![0.0; width], bias: 0.0 };
        let x: Vec<Vec<f32>> = features.iter().map(|f| head.standardised(f)).collect();
        let positives = labels.iter().filter(|&&l| l).count().max(1) as f32;
        let negatives = (labels.len() as f32 - positives).max(1.0);
        let weight = |l: bool| {
            if !c.balanced {
                1.0
            } else if l {
                n / (2.0 * positives)
            } else {
                n / (2.0 * negatives)
            }
        };
        for _ in 0..c.steps {
            let mut grad = vec![0f32; width];
            let mut grad_bias = 0f32;
            for (row, &label) in x.iter().zip(labels) {
                let err = (sigmoid(head.logit_standardised(row)) - if label { 1.0 } else { 0.0 }) * weight(label) / n;
                grad.iter_mut().zip(row).for_each(|(g, v)| *g += err * v);
                grad_bias += err;
            }
            for (w, g) in head.weights.iter_mut().zip(&grad) {
                *w -= c.learning_rate * (g + c.l2 * *w);
            }
            head.bias -= c.learning_rate * grad_bias;
        }
        head
    }

    fn standardised(&self, f: &[f32]) -> Vec<f32> {
        f.iter().zip(&self.mean).zip(&self.scale).map(|((x, m), s)| (x - m) * s).collect()
    }

    fn logit_standardised(&self, x: &[f32]) -> f32 {
        self.bias + x.iter().zip(&self.weights).map(|(a, b)| a * b).sum::<f32>()
    }

    pub fn predict(&self, features: &[f32]) -> bool {
        self.logit_standardised(&self.standardised(features)) > 0.0
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A baseline's features: the text's token counts over the vocabulary,
/// divided by its length (what a head can learn without a language model).
pub fn token_counts(tokenizer: &Tokenizer, text: &str) -> Vec<f32> {
    let ids = tokenizer.encode(text);
    let mut counts = vec![0f32; tokenizer.len()];
    for &id in &ids {
        if let Some(c) = counts.get_mut(id as usize) {
            *c += 1.0 / ids.len() as f32;
        }
    }
    counts
}

/// Share of `predicted` equal to `labels`.
pub fn accuracy(predicted: &[bool], labels: &[bool]) -> f64 {
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    right as f64 / labels.len().max(1) as f64
}

/// Mean of the recall of each class present in `labels`: 0.5 for any constant
/// guess, whatever the class balance.
pub fn balanced_accuracy(predicted: &[bool], labels: &[bool]) -> f64 {
    let recall = |class: bool| {
        let of: Vec<bool> = predicted.iter().zip(labels).filter(|(_, l)| **l == class).map(|(p, _)| *p == class).collect();
        (!of.is_empty()).then(|| of.iter().filter(|&&r| r).count() as f64 / of.len() as f64)
    };
    let recalls: Vec<f64> = [false, true].into_iter().filter_map(recall).collect();
    recalls.iter().sum::<f64>() / recalls.len().max(1) as f64
}

/// The trivial baseline's accuracy on `test`: always the majority class of `train`.
pub fn majority_accuracy(train: &[bool], test: &[bool]) -> f64 {
    let majority = train.iter().filter(|&&l| l).count() * 2 > train.len();
    accuracy(&vec![majority; test.len()], test)
}

#[cfg(test)]
mod tests {
    use super::{Head, HeadConfig, first_edges};

    #[test]
    fn a_prompt_stops_after_its_kth_edge_line() {
        let text = "[GENERATE GRAPH]a\n<layer>\n<edges>\n(e0)\n</edges>\n</layer>\nb\n<layer>\n<edges>\n(e1)\n(e2)\n</edges>\n";
        assert_eq!(
            first_edges(text, 2),
            "[GENERATE GRAPH]a\n<layer>\n<edges>\n(e0)\n</edges>\n</layer>\nb\n<layer>\n<edges>\n(e1)\n"
        );
    }

    #[test]
    fn the_head_separates_a_rare_class_by_one_feature() {
        // Positive when the second feature is high; one in five positive.
        let features: Vec<Vec<f32>> = (0..200).map(|i| vec![(i % 7) as f32, if i % 5 == 0 { 3.0 } else { 1.0 }]).collect();
        let labels: Vec<bool> = (0..200).map(|i| i % 5 == 0).collect();
        let head = Head::fit(&features, &labels, &HeadConfig::default());
        let predicted: Vec<bool> = features.iter().map(|f| head.predict(f)).collect();
        assert_eq!(super::accuracy(&predicted, &labels), 1.0);
        assert_eq!(super::majority_accuracy(&labels, &labels), 0.8);
        assert_eq!(super::balanced_accuracy(&predicted, &labels), 1.0);
        assert_eq!(super::balanced_accuracy(&[false; 200], &labels), 0.5);
    }
}
