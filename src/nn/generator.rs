//! CTGAN's generator (Xu et al. 2019, §4.4): residual blocks of Linear →
//! BatchNorm → ReLU whose output is concatenated to their input, then a Linear
//! to the encoded row width. [`activate`] turns the raw output into a row: tanh
//! for mode-normalised scalars, Gumbel-softmax (τ = 0.2) for one-hots.
//! [`conditional_loss`] is the cross-entropy that makes the generator honour
//! the conditional vector.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear};
use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::critic::seeded_linear;
use super::graph::GraphEncoder;
use crate::tabular::{Activation, OutputSpan};

/// Gumbel-softmax temperature (CTGAN's `tau`).
pub const GUMBEL_TAU: f32 = 0.2;

#[derive(Module, Debug)]
struct Residual {
    fc: Linear,
    bn: BatchNorm,
}

impl Residual {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let out = relu(self.bn.forward(self.fc.forward(x.clone())));
        Tensor::cat(vec![out, x], 1)
    }
}

#[derive(Module, Debug)]
pub struct Generator {
    blocks: Vec<Residual>,
    out: Linear,
    /// The GCN that embeds the graph each row belongs to, when rows have one.
    graph: Option<GraphEncoder>,
}

impl Generator {
    /// `input` = noise + conditional vector + context widths; `hidden` the
    /// residual block widths (CTGAN: 256, 256); `output` the encoded row width.
    pub fn new(input: usize, hidden: &[usize], output: usize, seed: u64, device: &Device) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut blocks = Vec::with_capacity(hidden.len());
        let mut width = input;
        for &h in hidden {
            blocks.push(Residual { fc: seeded_linear(width, h, &mut rng, device), bn: BatchNormConfig::new(h).init(device) });
            width += h;
        }
        Generator { blocks, out: seeded_linear(width, output, &mut rng, device), graph: None }
    }

    /// Adds a graph encoder from `features` pooled features to `embedding`
    /// values, whose output the caller appends to the input (`input` passed
    /// to [`Generator::new`] must count them).
    pub fn with_graph(mut self, features: usize, embedding: usize, seed: u64, device: &Device) -> Self {
        self.graph = Some(GraphEncoder::new(features, embedding, seed, device));
        self
    }

    /// Every graph's embedding, `[graphs, embedding]`, when there is an encoder.
    pub fn embed_graphs(&self, features: Tensor<2>) -> Option<Tensor<2>> {
        self.graph.as_ref().map(|g| g.forward(features))
    }

    /// (features, embedding) widths of the graph encoder.
    pub fn graph_widths(&self) -> Option<(usize, usize)> {
        self.graph.as_ref().map(|g| (g.input(), g.output()))
    }

    /// Raw output, `[rows, output]`: scalars before tanh, logits before softmax.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut h = x;
        for block in &self.blocks {
            h = block.forward(h);
        }
        self.out.forward(h)
    }
}

/// Applies each span's activation. `gumbel` holds Gumbel(0, 1) noise of the
/// same shape as `raw` (used on softmax spans only), drawn by the caller so
/// that runs are reproducible.
pub fn activate(raw: Tensor<2>, spans: &[OutputSpan], gumbel: Tensor<2>, tau: f32) -> Tensor<2> {
    per_span(raw, spans, gumbel, |part, noise| softmax(part.add(noise).div_scalar(tau), 1))
}

/// Sampling's activation, on the host, in place on `rows` (row-major, each
/// row laid out as `spans`): tanh on scalars; each one-hot becomes the one-hot
/// of a category drawn from the softmax of its logits. That is the
/// distribution of the argmax of Gumbel-softmax at any temperature (what
/// training's [`activate`] produces), drawn with one uniform per one-hot
/// instead of two logarithms per category, and without tensor slicing.
pub fn sample_rows(rows: &mut [f32], spans: &[OutputSpan], rng: &mut impl rand::Rng) {
    let width: usize = spans.iter().map(|s| s.width).sum();
    if width == 0 {
        return;
    }
    for row in rows.chunks_exact_mut(width) {
        let mut start = 0;
        for span in spans {
            let part = &mut row[start..start + span.width];
            start += span.width;
            match span.activation {
                Activation::Tanh => part.iter_mut().for_each(|v| *v = v.tanh()),
                Activation::Softmax => {
                    let max = part.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut total = 0.0f32;
                    for v in part.iter_mut() {
                        // Non-finite logits (a diverged model) weigh nothing.
                        *v = if v.is_finite() { (*v - max).exp() } else { 0.0 };
                        total += *v;
                    }
                    let mut target = rng.random::<f32>() * total;
                    let mut pick = part.len() - 1;
                    for (k, &w) in part.iter().enumerate() {
                        if target < w {
                            pick = k;
                            break;
                        }
                        target -= w;
                    }
                    part.fill(0.0);
                    part[pick] = 1.0;
                }
            }
        }
    }
}

/// tanh on scalar spans, `one_hot(logits, noise)` on one-hot spans.
fn per_span(
    raw: Tensor<2>,
    spans: &[OutputSpan],
    gumbel: Tensor<2>,
    one_hot: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
) -> Tensor<2> {
    let rows = raw.dims()[0];
    let mut parts = Vec::with_capacity(spans.len());
    let mut start = 0;
    for span in spans {
        let end = start + span.width;
        let part = raw.clone().slice([0..rows, start..end]);
        parts.push(match span.activation {
            Activation::Tanh => part.tanh(),
            Activation::Softmax => one_hot(part, gumbel.clone().slice([0..rows, start..end])),
        });
        start = end;
    }
    Tensor::cat(parts, 1)
}

/// Where a categorical column sits: its offset in the encoded row, its offset
/// in the conditional vector, and its number of categories.
#[derive(Debug, Clone, Copy)]
pub struct DiscreteSpan {
    pub data_offset: usize,
    pub cond_offset: usize,
    pub width: usize,
}

/// Mean over rows of the cross-entropy between every categorical column's
/// logits and the drawn real row's category (`real`: encoded rows).
pub fn category_loss(raw: Tensor<2>, real: Tensor<2>, discrete: &[DiscreteSpan]) -> Tensor<1> {
    columns_cross_entropy(raw, &real, discrete, |d| d.data_offset)
}

/// Mean over rows of the cross-entropy between each row's chosen categorical
/// column (raw logits) and the chosen category; `cond` (`[rows, cond width]`)
/// is one-hot on exactly that category, so it also masks the other columns.
pub fn conditional_loss(raw: Tensor<2>, cond: Tensor<2>, discrete: &[DiscreteSpan]) -> Tensor<1> {
    columns_cross_entropy(raw, &cond, discrete, |d| d.cond_offset)
}

/// Σ over categorical columns of -Σ target · log_softmax(logits), per row:
/// each column's logits from `raw` at its data offset, its targets from
/// `targets` at `offset(column)`.
fn columns_cross_entropy(
    raw: Tensor<2>,
    targets: &Tensor<2>,
    discrete: &[DiscreteSpan],
    offset: impl Fn(&DiscreteSpan) -> usize,
) -> Tensor<1> {
    let rows = raw.dims()[0];
    let mut total: Option<Tensor<1>> = None;
    for d in discrete {
        let logits = raw.clone().slice([0..rows, d.data_offset..d.data_offset + d.width]);
        let target = targets.clone().slice([0..rows, offset(d)..offset(d) + d.width]);
        let loss = log_softmax(logits, 1).mul(target).sum().neg();
        total = Some(match total {
            Some(t) => t.add(loss),
            None => loss,
        });
    }
    match total {
        Some(t) => t.div_scalar(rows as f32),
        None => Tensor::zeros([1], &raw.device()),
    }
}
