//! A decoder-only transformer in the Llama style (RMSNorm before each block,
//! rotary positions, SwiGLU feed-forward, no biases but a checkpoint's on the
//! attention's input projections), the language model of
//! TraceLLM. Sizes run from `tiny` (tests, CPU) to `base` (tens of millions of
//! parameters, for a GPU backend).

use burn::module::{Module, Param};
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig, RotaryEncoding,
    RotaryEncodingConfig, SwiGlu, SwiGluConfig,
};
use burn::optim::{AdamWConfig, GradientsParams, grad_clipping::GradientClippingConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

pub mod batch;
pub mod checkpoint;

pub use batch::BatchCache;

/// The token every sequence starts with, which an empty context stands
/// for (the tokenizer's BOS is this id).
pub const START: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LmError {
    #[error("language model settings: {0}")]
    Config(String),
    #[error("nothing to train on: every sequence is empty")]
    Empty,
    #[error("LoRA settings: {0}")]
    Lora(String),
}

/// Model dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LmConfig {
    pub vocab: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    /// SwiGLU hidden width.
    pub hidden: usize,
    /// Longest context, tokens.
    pub max_len: usize,
}

impl LmConfig {
    /// Tests and CPU smoke runs: about 0.1 M parameters with a 400-token vocabulary.
    pub fn tiny(vocab: usize) -> Self {
        LmConfig { vocab, d_model: 64, layers: 2, heads: 4, hidden: 172, max_len: 512 }
    }
    /// About 5 M parameters: trains on 2 CPU cores in hours.
    pub fn small(vocab: usize) -> Self {
        LmConfig { vocab, d_model: 256, layers: 6, heads: 8, hidden: 688, max_len: 1024 }
    }
    /// About 30 M parameters: a GPU backend.
    pub fn base(vocab: usize) -> Self {
        LmConfig { vocab, d_model: 512, layers: 8, heads: 8, hidden: 1376, max_len: 2048 }
    }

    pub fn validate(&self) -> Result<(), LmError> {
        if self.vocab == 0 || self.d_model == 0 || self.layers == 0 || self.heads == 0 || self.hidden == 0 || self.max_len < 2 {
            return Err(LmError::Config("every size must be positive (max_len at least 2)".into()));
        }
        if self.d_model % self.heads != 0 || (self.d_model / self.heads) % 2 != 0 {
            return Err(LmError::Config(format!("d_model {} must split into {} heads of even width", self.d_model, self.heads)));
        }
        // The rotary table is max_len × d_model floats and is not stored in a
        // model file, so its size is bounded here.
        if self.max_len > MAX_CONTEXT {
            return Err(LmError::Config(format!("max_len {} is over the limit of {MAX_CONTEXT} tokens", self.max_len)));
        }
        if self.min_parameters().is_none() {
            return Err(LmError::Config("sizes overflow".into()));
        }
        Ok(())
    }

    /// At least how many parameters the network has (embedding, output head,
    /// attention and feed-forward matrices; norms left out), `None` on overflow.
    /// A model file must hold weights for this many.
    pub fn min_parameters(&self) -> Option<usize> {
        let d = self.d_model;
        let per_block = d.checked_mul(d)?.checked_mul(4)?.checked_add(d.checked_mul(self.hidden)?.checked_mul(3)?)?;
        self.vocab.checked_mul(d)?.checked_mul(2)?.checked_add(per_block.checked_mul(self.layers)?)
    }
}

/// Longest context a language model may have.
pub const MAX_CONTEXT: usize = 1 << 16;

/// What a Llama checkpoint may set beyond [`LmConfig`]. gent's own models
/// use [`Variant::of`]; these values are not stored in their model files (a
/// fine-tuned checkpoint's file stores them).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    /// Key/value heads (grouped-query attention): each serves
    /// `heads / kv_heads` query heads.
    pub kv_heads: usize,
    /// Base of the rotary frequencies.
    pub rope_theta: f32,
    /// How the rotary frequencies are stretched to a longer context.
    pub rope_scaling: RopeScaling,
    /// Biases on the query, key and value projections (Qwen2's).
    pub qkv_bias: bool,
    /// RMSNorm's epsilon.
    pub norm_eps: f64,
}

/// How a checkpoint stretches its rotary frequencies beyond the context it
/// was pre-trained on (`rope_type` in its config), as Hugging Face
/// transformers computes them.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum RopeScaling {
    /// The frequencies as they are (`default`).
    #[default]
    None,
    /// Every frequency divided by `factor` (`linear`: position interpolation).
    Linear { factor: f32 },
    /// Llama 3.1's (`llama3`): wavelengths longer than
    /// `original_context / low_freq_factor` slow down by `factor`, those
    /// shorter than `original_context / high_freq_factor` stay, and those
    /// between blend the two smoothly.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_context: f32 },
}

impl RopeScaling {
    fn validate(&self) -> Result<(), LmError> {
        let ok = |x: f32| x.is_finite() && x > 0.0;
        let valid = match *self {
            RopeScaling::None => true,
            RopeScaling::Linear { factor } => ok(factor) && factor >= 1.0,
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                ok(factor)
                    && factor >= 1.0
                    && ok(low_freq_factor)
                    && ok(high_freq_factor)
                    && low_freq_factor < high_freq_factor
                    && ok(original_context)
            }
        };
        if valid {
            Ok(())
        } else {
            Err(LmError::Config(format!(
                "rotary scaling {self:?}: factors must be finite, the factor at least 1 and low_freq_factor under high_freq_factor"
            )))
        }
    }

    /// `freq` (radians per position) after scaling, as transformers'
    /// `_compute_llama3_parameters` and `_compute_linear_scaling_rope_parameters`.
    pub fn scaled(&self, freq: f32) -> f32 {
        match *self {
            RopeScaling::None => freq,
            RopeScaling::Linear { factor } => freq / factor,
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                let wavelen = 2.0 * std::f32::consts::PI / freq;
                if wavelen < original_context / high_freq_factor {
                    freq
                } else if wavelen > original_context / low_freq_factor {
                    freq / factor
                } else {
                    let smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * freq / factor + smooth * freq
                }
            }
        }
    }

    /// Every frequency of `freqs` scaled (the rotary encoding's few
    /// frequencies, on the host: they are computed once per network).
    fn apply(&self, freqs: Tensor<1>) -> Tensor<1> {
        if *self == RopeScaling::None {
            return freqs;
        }
        let device = freqs.device();
        let scaled: Vec<f32> = freqs.into_data().iter::<f32>().map(|f| self.scaled(f)).collect();
        let n = scaled.len();
        Tensor::from_data(TensorData::new(scaled, [n]), &device)
    }
}

impl Variant {
    /// Multi-head attention (a key/value head per query head), rotary base
    /// 10,000 and epsilon 1e-5: gent's own models.
    pub fn of(c: &LmConfig) -> Self {
        Variant { kv_heads: c.heads, rope_theta: 10_000.0, rope_scaling: RopeScaling::None, qkv_bias: false, norm_eps: 1e-5 }
    }

    pub fn validate(&self, c: &LmConfig) -> Result<(), LmError> {
        if self.kv_heads == 0 || !c.heads.is_multiple_of(self.kv_heads) {
            return Err(LmError::Config(format!(
                "{} heads do not split into groups over {} key/value heads",
                c.heads, self.kv_heads
            )));
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite() && self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(LmError::Config(format!(
                "the rotary base ({}) and the norm epsilon ({}) must be positive",
                self.rope_theta, self.norm_eps
            )));
        }
        self.rope_scaling.validate()
    }
}

#[derive(Module, Debug)]
struct Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: RmsNorm,
    gate_up: SwiGlu,
    down: Linear,
}

impl Block {
    /// The feed-forward half of the block, its residual added.
    fn feed_forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.ffn_norm.forward(x.clone());
        x + self.down.forward(self.gate_up.forward(h))
    }
}

/// Keeps block `i`'s keys and values in a cache's `layers` (pushed the
/// first time the cache runs, replaced after).
fn keep_layer<T>(layers: &mut Vec<T>, i: usize, kv: T) {
    if i < layers.len() {
        layers[i] = kv;
    } else {
        layers.push(kv);
    }
}

#[derive(Module, Debug)]
pub struct Lm {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    head: Linear,
    rope: RotaryEncoding,
    heads: usize,
    kv_heads: usize,
}

fn linear(i: usize, o: usize, device: &Device) -> Linear {
    biased_linear(i, o, false, device)
}

fn biased_linear(i: usize, o: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(i, o).with_bias(bias).init(device)
}

impl Lm {
    pub fn new(c: &LmConfig, device: &Device) -> Result<Self, LmError> {
        Self::new_variant(c, &Variant::of(c), device)
    }

    /// As [`Lm::new`], with grouped-query attention, a rotary base and
    /// scaling, projection biases or a norm epsilon of a checkpoint's.
    pub fn new_variant(c: &LmConfig, v: &Variant, device: &Device) -> Result<Self, LmError> {
        c.validate()?;
        v.validate(c)?;
        let d = c.d_model;
        let kv = d / c.heads * v.kv_heads;
        let norm = || RmsNormConfig::new(d).with_epsilon(v.norm_eps).init(device);
        let blocks = (0..c.layers)
            .map(|_| Block {
                attn_norm: norm(),
                q: biased_linear(d, d, v.qkv_bias, device),
                k: biased_linear(d, kv, v.qkv_bias, device),
                v: biased_linear(d, kv, v.qkv_bias, device),
                o: linear(d, d, device),
                ffn_norm: norm(),
                gate_up: SwiGluConfig::new(d, c.hidden).with_bias(false).init(device),
                down: linear(c.hidden, d, device),
            })
            .collect();
        Ok(Lm {
            embed: EmbeddingConfig::new(c.vocab, d).init(device),
            blocks,
            norm: norm(),
            head: linear(d, c.vocab, device),
            rope: RotaryEncodingConfig::new(c.max_len, d / c.heads)
                .with_theta(v.rope_theta)
                .init_with_frequency_scaling(|f| v.rope_scaling.apply(f), device),
            heads: c.heads,
            kv_heads: v.kv_heads,
        })
    }

    /// `[b, kv_heads, t, dh]` keys or values repeated for every query head of
    /// their group (`[b, heads, t, dh]`), as Hugging Face's `repeat_kv`:
    /// query head `i` reads key/value head `i / (heads / kv_heads)`.
    fn grouped(&self, x: Tensor<4>) -> Tensor<4> {
        let group = self.heads / self.kv_heads.max(1);
        if group <= 1 {
            return x;
        }
        let [b, kv, t, dh] = x.dims();
        x.unsqueeze_dim::<5>(2).expand([b, kv, group, t, dh]).reshape([b, kv * group, t, dh])
    }

    /// Next-token logits at every position: `[batch, len]` → `[batch, len, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.forward_adapted(tokens, None)
    }

    /// As [`Lm::forward`], each block's attention with its adapters when given.
    fn forward_adapted(&self, tokens: Tensor<2, Int>, lora: Option<&Lora>) -> Tensor<3> {
        self.head.forward(self.hidden_adapted(tokens, lora))
    }

    /// The final hidden states, normalised, before the output head:
    /// `[batch, len]` → `[batch, len, d_model]`. A classifier on the frozen
    /// model reads these.
    pub fn hidden(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.hidden_adapted(tokens, None)
    }

    fn hidden_adapted(&self, tokens: Tensor<2, Int>, lora: Option<&Lora>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let mut x = self.embed.forward(tokens);
        let mask = generate_autoregressive_mask(b, t, &device).unsqueeze_dim::<4>(1);
        for (i, blk) in self.blocks.iter().enumerate() {
            let h = blk.attn_norm.forward(x.clone());
            let adapter = lora.and_then(|l| l.adapters.get(i).map(|a| (a, l)));
            x = blk.feed_forward(x + self.attention(blk, h, mask.clone(), adapter));
        }
        self.norm.forward(x)
    }

    fn attention(
        &self,
        blk: &Block,
        x: Tensor<3>,
        mask: Tensor<4, burn::tensor::Bool>,
        adapter: Option<(&Adapter, &Lora)>,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let (h, dh) = (self.heads, d / self.heads);
        let split = |y: Tensor<3>| {
            let heads = y.dims()[2] / dh;
            y.reshape([b, t, heads, dh]).swap_dims(1, 2)
        };
        let (mut q, mut k) = (blk.q.forward(x.clone()), blk.k.forward(x.clone()));
        if let Some((a, l)) = adapter {
            // x·A·B·(alpha/rank) beside the frozen projection, dropout on its input.
            let low = |ab: &(Param<Tensor<2>>, Param<Tensor<2>>)| {
                l.dropout
                    .forward(x.clone())
                    .matmul(ab.0.val().unsqueeze::<3>())
                    .matmul(ab.1.val().unsqueeze::<3>())
                    .mul_scalar(l.scale)
            };
            q = q + low(&a.q);
            k = k + low(&a.k);
        }
        let q = self.rope.forward(split(q));
        let k = self.grouped(self.rope.forward(split(k)));
        let v = self.grouped(split(blk.v.forward(x)));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f32).sqrt());
        // -inf, not a large negative number: both give a weight of exactly
        // 0, but exp of the latter underflows through libm's slow path, and
        // half of every causal score matrix is masked. No row is all masked.
        let scores = scores.mask_fill(mask.expand([b, h, t, t]), f32::NEG_INFINITY);
        let out = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        blk.o.forward(out)
    }

    /// Mean next-token cross-entropy of `batch` (padded with `pad`, which is not scored).
    pub fn loss(&self, batch: &[Vec<u32>], pad: u32, device: &Device) -> Tensor<1> {
        let scored: Vec<(&[u32], usize)> = batch.iter().map(|s| (s.as_slice(), 0)).collect();
        self.loss_from(&scored, pad, device)
    }

    /// As [`Lm::loss`], each sequence scored only from its given position on:
    /// the tokens before it are a prompt the model reads but does not learn
    /// to write (instruction tuning).
    pub fn loss_from(&self, batch: &[(&[u32], usize)], pad: u32, device: &Device) -> Tensor<1> {
        self.loss_adapted(batch, pad, device, None)
    }

    fn loss_adapted(&self, batch: &[(&[u32], usize)], pad: u32, device: &Device, lora: Option<&Lora>) -> Tensor<1> {
        let len = batch.iter().map(|(s, _)| s.len()).max().unwrap_or(2).max(2);
        let mut inputs = Vec::with_capacity(batch.len() * (len - 1));
        let mut targets = Vec::with_capacity(batch.len() * (len - 1));
        for &(s, from) in batch {
            for i in 0..len - 1 {
                inputs.push(s.get(i).copied().unwrap_or(pad) as i64);
                let target = if i + 1 < from { pad } else { s.get(i + 1).copied().unwrap_or(pad) };
                targets.push(target as i64);
            }
        }
        let n = batch.len();
        let inputs = Tensor::<2, Int>::from_data(TensorData::new(inputs, [n, len - 1]), device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n * (len - 1)]), device);
        let logits = self.forward_adapted(inputs, lora);
        let vocab = logits.dims()[2];
        CrossEntropyLossConfig::new()
            .with_pad_tokens(Some(vec![pad as usize]))
            .init(device)
            .forward(logits.reshape([n * (len - 1), vocab]), targets)
    }

    /// As [`Lm::next_logits`], reusing the keys and values `cache` holds for
    /// the longest prefix of `context` it has seen, so each call runs the
    /// network over the new tokens only. Generation extends one context token
    /// by token (forced format tokens several at a time), which this turns
    /// from quadratic into linear work. Contexts past `max_len - 1` tokens
    /// take the uncached path (positions would shift).
    pub fn next_logits_cached(&self, context: &[u32], cache: &mut KvCache, max_len: usize, device: &Device) -> Vec<f32> {
        if context.is_empty() || context.len() > max_len - 1 {
            cache.clear();
            return self.next_logits(context, max_len, device);
        }
        let shared = cache.tokens.iter().zip(context).take_while(|(a, b)| a == b).count();
        if shared == context.len() && shared == cache.tokens.len() && !cache.last.is_empty() {
            return cache.last.clone();
        }
        // Keep the shared prefix, minus one token when the whole context is
        // shared (its logits must be computed again).
        let keep = shared.min(context.len() - 1);
        cache.truncate(keep);
        let new: Vec<i64> = context[keep..].iter().map(|&t| t as i64).collect();
        let n = new.len();
        let mut x = self.embed.forward(Tensor::<2, Int>::from_data(TensorData::new(new, [1, n]), device));
        let first = cache.layers.is_empty();
        for (i, blk) in self.blocks.iter().enumerate() {
            let h = blk.attn_norm.forward(x.clone());
            let [_, _, d] = h.dims();
            let (heads, dh) = (self.heads, d / self.heads);
            let split = |y: Tensor<3>| {
                let h = y.dims()[2] / dh;
                y.reshape([1, n, h, dh]).swap_dims(1, 2)
            };
            let q = self.rope.apply(split(blk.q.forward(h.clone())), keep);
            let k = self.rope.apply(split(blk.k.forward(h.clone())), keep);
            let v = split(blk.v.forward(h));
            let (k, v) = match (first, cache.layers.get(i)) {
                (false, Some((ck, cv))) => (Tensor::cat(vec![ck.clone(), k], 2), Tensor::cat(vec![cv.clone(), v], 2)),
                _ => (k, v),
            };
            let total = keep + n;
            let (gk, gv) = (self.grouped(k.clone()), self.grouped(v.clone()));
            let mut scores = q.matmul(gk.swap_dims(2, 3)).div_scalar((dh as f32).sqrt());
            if n > 1 {
                // New token j (position keep + j) sees positions up to keep + j.
                let mask: Vec<bool> = (0..n).flat_map(|j| (0..total).map(move |p| p > keep + j)).collect();
                let mask = Tensor::<2, burn::tensor::Bool>::from_data(TensorData::new(mask, [n, total]), device);
                scores = scores.mask_fill(mask.unsqueeze::<4>().expand([1, heads, n, total]), f32::NEG_INFINITY);
            }
            let out = softmax(scores, 3).matmul(gv).swap_dims(1, 2).reshape([1, n, d]);
            keep_layer(&mut cache.layers, i, (k, v));
            x = blk.feed_forward(x + blk.o.forward(out));
        }
        let logits = self.head.forward(self.norm.forward(x.slice([0..1, n - 1..n])));
        cache.tokens = context.to_vec();
        cache.last = logits.into_data().try_to_vec::<f32>().unwrap_or_default();
        cache.last.clone()
    }

    /// Logits for the token after `context` (its last `max_len - 1` tokens).
    pub fn next_logits(&self, context: &[u32], max_len: usize, device: &Device) -> Vec<f32> {
        let from = context.len().saturating_sub(max_len - 1);
        let ctx: Vec<i64> = context[from..].iter().map(|&t| t as i64).collect();
        let ctx = if ctx.is_empty() { vec![START as i64] } else { ctx };
        let t = ctx.len();
        // The output head on the last position only: the others' logits
        // would be thrown away (and over a large vocabulary they are big).
        let hidden = self.hidden(Tensor::<2, Int>::from_data(TensorData::new(ctx, [1, t]), device));
        let d = hidden.dims()[2];
        self.head.forward(hidden.slice([0..1, t - 1..t, 0..d])).into_data().try_to_vec::<f32>().unwrap_or_default()
    }
}

/// The token of the largest logit (greedy decoding), the first on a tie.
pub fn likeliest(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// Training settings (the paper's Table 3: AdamW, lr 3e-4, gradient clipping 1.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

/// Trains `model` by next-token prediction on `sequences` (token ids, BOS/EOS
/// included, each at most `max_len`); returns the model and the loss of every step.
pub fn train(model: Lm, sequences: &[Vec<u32>], c: &TrainConfig, pad: u32, device: &Device) -> Result<(Lm, Vec<f32>), LmError> {
    let scored: Vec<(&[u32], usize)> = sequences.iter().map(|s| (s.as_slice(), 0)).collect();
    train_from(model, &scored, c, pad, device)
}

/// What training optimises: a model scoring a batch by next-token cross-entropy.
pub trait Scored: Module {
    fn loss_from(&self, batch: &[(&[u32], usize)], pad: u32, device: &Device) -> Tensor<1>;
}

impl Scored for Lm {
    fn loss_from(&self, batch: &[(&[u32], usize)], pad: u32, device: &Device) -> Tensor<1> {
        Lm::loss_from(self, batch, pad, device)
    }
}

impl Scored for Lora {
    fn loss_from(&self, batch: &[(&[u32], usize)], pad: u32, device: &Device) -> Tensor<1> {
        self.base.loss_adapted(batch, pad, device, Some(self))
    }
}

/// As [`train`], each sequence scored from its given position on (see
/// [`Lm::loss_from`]); `model` is the whole network or its LoRA adapters.
pub fn train_from<M: Scored>(
    model: M,
    sequences: &[(&[u32], usize)],
    c: &TrainConfig,
    pad: u32,
    device: &Device,
) -> Result<(M, Vec<f32>), LmError> {
    train_watched(model, sequences, &[], c, pad, device).map(|(m, t)| (m, t.losses))
}

/// What a training run measured.
#[derive(Debug, Clone, Default)]
pub struct Trained {
    /// Loss of every step (nats per scored token).
    pub losses: Vec<f32>,
    /// (step, loss on the held-back sequences) about ten times per run and
    /// after the last step; empty without held-back sequences.
    pub held_losses: Vec<(usize, f32)>,
    /// Scored tokens per second of training.
    pub tokens_per_second: f64,
}

/// Sequences scored for one held-back loss, at most: the figure is an
/// estimate, and its cost stays a small share of training.
const MAX_HELD_SEQUENCES: usize = 256;

/// A batch pads its sequences to its longest, and attention costs the square
/// of that length: a batch holds at most `batch` × this many padded tokens, so
/// a batch of long sequences holds fewer of them.
const PADDED_TOKENS_PER_SEQUENCE: usize = 256;

/// As [`train_from`], also scoring `held` (sequences the steps never train
/// on) about ten times per run, and showing progress (step, loss, tokens/s).
///
/// Batches: each step anchors on a random sequence and draws the rest from
/// sequences near it in length order (see [`length_batch`]), so little of a
/// batch is padding; at most `c.batch` sequences and `c.batch × 256` padded
/// tokens. Drawing batches at random instead padded every sequence to the
/// longest of 16 random ones: the `small` model (context 1,024) then needed
/// 12 GB in 8 steps.
///
/// Schedule: linear warm-up over the first 5 % of steps (at most 200), then
/// cosine decay to 1 % of the learning rate; AdamW with the gradient norm
/// clipped at 1.0 (the paper's Table 3). Warm-up keeps Adam's first, noisy
/// moment estimates from throwing a freshly initialised network off course.
pub fn train_watched<M: Scored>(
    mut model: M,
    sequences: &[(&[u32], usize)],
    held: &[(&[u32], usize)],
    c: &TrainConfig,
    pad: u32,
    device: &Device,
) -> Result<(M, Trained), LmError> {
    use rand::{Rng, SeedableRng};
    let usable: Vec<(&[u32], usize)> = scorable(sequences).collect();
    if usable.is_empty() {
        return Err(LmError::Empty);
    }
    let mut held: Vec<(&[u32], usize)> = scorable(held).take(MAX_HELD_SEQUENCES).collect();
    held.sort_by_key(|(s, _)| s.len());
    let budget = c.batch.max(1) * PADDED_TOKENS_PER_SEQUENCE;
    let mut by_length: Vec<usize> = (0..usable.len()).collect();
    by_length.sort_by_key(|&i| usable[i].0.len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(c.seed);
    let mut opt = AdamWConfig::new().with_grad_clipping(Some(GradientClippingConfig::Norm(1.0))).init();
    let mut trained = Trained { losses: Vec::with_capacity(c.steps), ..Trained::default() };
    let progress = super::progress::Progress::new("language model", "steps", c.steps);
    let (started, mut tokens) = (std::time::Instant::now(), 0usize);
    for step in 0..c.steps {
        let anchor = rng.random_range(0..usable.len());
        let batch = length_batch(&usable, &by_length, anchor, (c.batch, budget), &mut rng);
        tokens += scored_tokens(&batch);
        let loss = model.loss_from(&batch, pad, device);
        let value = super::ctgan::scalar(&loss);
        trained.losses.push(value);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(learning_rate(c, step), model, grads);
        let done = step + 1;
        if !held.is_empty() && (done.is_multiple_of((c.steps / 10).max(1)) || done == c.steps) {
            trained.held_losses.push((done, held_loss(&model, &held, c.batch, budget, pad, device)));
        }
        trained.tokens_per_second = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
        progress.step(done, || {
            let held = trained.held_losses.last().map(|(_, l)| format!(", held back {l:.3}")).unwrap_or_default();
            format!("loss {value:.3}{held}, {:.0} tokens/s", trained.tokens_per_second)
        });
    }
    progress.finish();
    Ok((model, trained))
}

/// The sequences with a token to score after their prompt.
fn scorable<'a, 's>(sequences: &'a [(&'s [u32], usize)]) -> impl Iterator<Item = (&'s [u32], usize)> + 'a {
    sequences.iter().copied().filter(|(s, from)| s.len() >= 2 && *from < s.len())
}

/// Tokens a batch scores: each sequence's from its prompt's end (never the first).
fn scored_tokens(batch: &[(&[u32], usize)]) -> usize {
    batch.iter().map(|(s, from)| s.len() - from.max(&1)).sum()
}

/// The learning rate at `step`: linear warm-up, then cosine to 1 %.
fn learning_rate(c: &TrainConfig, step: usize) -> f64 {
    let warmup = (c.steps / 20).min(200);
    if step < warmup {
        return c.learning_rate * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (c.steps - warmup).max(1) as f64;
    let cosine = c.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    cosine.max(c.learning_rate * 0.01)
}

/// Positions in length order, per sequence of a batch, that a batch is drawn
/// from around its anchor.
const LENGTH_WINDOW: usize = 16;

/// The batch anchored at `by_length[anchor]`: the anchor and `batch - 1`
/// sequences drawn at random from the `LENGTH_WINDOW × batch` nearest it in
/// length order, the longest dropped until the padded batch fits `budget`
/// tokens. Always at least the anchor. Contiguous neighbours made each batch
/// one kind of layer and the tiny model's KL of popular calls worse (2.14
/// against 1.59); a window keeps batches mixed and their padding small.
fn length_batch<'s>(
    sequences: &[(&'s [u32], usize)],
    by_length: &[usize],
    anchor: usize,
    (batch, budget): (usize, usize),
    rng: &mut impl rand::Rng,
) -> Vec<(&'s [u32], usize)> {
    let half = batch * LENGTH_WINDOW / 2;
    let (lo, hi) = (anchor.saturating_sub(half), (anchor + half + 1).min(by_length.len()));
    let mut picked: Vec<usize> = (1..batch).map(|_| rng.random_range(lo..hi)).collect();
    // Positions in length order: the last is the longest.
    picked.sort_unstable();
    let len = |i: usize| sequences[by_length[i]].0.len();
    while let Some(&last) = picked.last() {
        if (picked.len() + 1) * len(last).max(len(anchor)) <= budget {
            break;
        }
        picked.pop();
    }
    std::iter::once(anchor).chain(picked).map(|i| sequences[by_length[i]]).collect()
}

/// Mean loss over `held` (sorted by length), at most `batch` sequences and
/// `budget` padded tokens at a time, weighted by the tokens each batch scores.
fn held_loss<M: Scored>(model: &M, held: &[(&[u32], usize)], batch: usize, budget: usize, pad: u32, device: &Device) -> f32 {
    let (mut sum, mut weight) = (0.0f64, 0usize);
    let mut start = 0;
    while start < held.len() {
        // Sorted, so the sequence added last is the longest.
        let mut end = start + 1;
        while end < held.len() && end - start < batch && (end - start + 1) * held[end].0.len() <= budget {
            end += 1;
        }
        let chunk = &held[start..end];
        start = end;
        let scored = scored_tokens(chunk);
        sum += f64::from(super::ctgan::scalar(&model.loss_from(chunk, pad, device))) * scored as f64;
        weight += scored;
    }
    (sum / weight.max(1) as f64) as f32
}

/// LoRA settings (Hu et al. 2022). The paper adapts the query and key
/// projections with rank 8, alpha 16 and dropout 0.1 (Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    pub dropout: f64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 16.0, dropout: 0.1 }
    }
}

/// The low-rank matrices of one block: `(A, B)` for the query and the key
/// projection, `A` `[d_model, rank]`, `B` `[rank, d_model]`.
#[derive(Module, Debug)]
struct Adapter {
    q: (Param<Tensor<2>>, Param<Tensor<2>>),
    k: (Param<Tensor<2>>, Param<Tensor<2>>),
}

/// A frozen language model with LoRA adapters on its attention: only the
/// adapters train. `B` starts at zero, so tuning starts from the base model's
/// outputs; [`Lora::merge`] folds the adapters into the weights, so the tuned
/// model is an ordinary [`Lm`] that costs nothing extra to run.
#[derive(Module, Debug)]
pub struct Lora {
    base: Lm,
    adapters: Vec<Adapter>,
    dropout: Dropout,
    scale: f32,
}

impl Lora {
    /// Adapters for every block of `base`, which is frozen; `device` must be
    /// an autodiff device for the adapters to train.
    pub fn new(base: Lm, c: &LoraConfig, device: &Device) -> Result<Self, LmError> {
        if c.rank == 0 || !(c.alpha > 0.0 && c.alpha.is_finite()) || !(0.0..1.0).contains(&c.dropout) {
            return Err(LmError::Lora(format!(
                "rank must be positive, alpha positive, dropout in [0, 1) (got rank {}, alpha {}, dropout {})",
                c.rank, c.alpha, c.dropout
            )));
        }
        let d = base.embed.weight.val().dims()[1];
        let pair = |out: usize| {
            // A as a Kaiming-like normal, B zero: the adapted model starts as the base.
            let a = Tensor::<2>::random([d, c.rank], Distribution::Normal(0.0, 1.0 / (d as f64).sqrt()), device);
            (Param::from_tensor(a), Param::from_tensor(Tensor::<2>::zeros([c.rank, out], device)))
        };
        let adapters = base
            .blocks
            .iter()
            .map(|b| Adapter { q: pair(b.q.weight.val().dims()[1]), k: pair(b.k.weight.val().dims()[1]) })
            .collect();
        Ok(Lora { base: base.no_grad(), adapters, dropout: DropoutConfig::new(c.dropout).init(), scale: c.alpha / c.rank as f32 })
    }

    /// The frozen model under the adapters.
    pub fn base(&self) -> &Lm {
        &self.base
    }

    /// Parameters that train: the adapters'.
    pub fn trainable(&self) -> usize {
        self.adapters
            .iter()
            .map(|a| {
                [&a.q, &a.k].iter().map(|(x, y)| x.val().shape().num_elements() + y.val().shape().num_elements()).sum::<usize>()
            })
            .sum()
    }

    /// The adapters' weights alone: what a fine-tune of a large checkpoint
    /// stores beside a reference to the checkpoint.
    pub fn adapter_bytes(&self) -> Result<Vec<u8>, super::weights::WeightsError> {
        super::weights::to_bytes(self.adapters.clone(), super::weights::Precision::F32)
    }

    /// These adapters with the weights of `bytes` ([`Lora::adapter_bytes`]
    /// of adapters of the same rank on a network of the same shape).
    pub fn with_adapter_bytes(mut self, bytes: &[u8]) -> Result<Self, super::weights::WeightsError> {
        self.adapters = super::weights::from_bytes(self.adapters, bytes)?;
        Ok(self)
    }

    /// Logits with the adapters, for checking a merge.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.base.forward_adapted(tokens, Some(self))
    }

    /// The base model with every adapter folded into its projection:
    /// `W + A·B·(alpha/rank)` (a burn `Linear` computes `x·W`).
    pub fn merge(self) -> Lm {
        let scale = self.scale;
        let mut base = self.base;
        for (blk, a) in base.blocks.iter_mut().zip(self.adapters) {
            let fold = |w: &Param<Tensor<2>>, (x, y): (Param<Tensor<2>>, Param<Tensor<2>>)| {
                // Detached: the merged weight is a new leaf, not a node of the adapters' graph.
                Param::from_tensor((w.val() + x.val().matmul(y.val()).mul_scalar(scale)).detach())
            };
            blk.q.weight = fold(&blk.q.weight, a.q);
            blk.k.weight = fold(&blk.k.weight, a.k);
        }
        base
    }
}

/// Keys and values of the context seen so far, per block (`[1, kv_heads, len,
/// head width]`, rotary positions applied), for [`Lm::next_logits_cached`].
#[derive(Debug, Default)]
pub struct KvCache {
    tokens: Vec<u32>,
    layers: Vec<(Tensor<4>, Tensor<4>)>,
    /// Logits after the whole of `tokens`.
    last: Vec<f32>,
}

impl KvCache {
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.layers.clear();
        self.last.clear();
    }

    /// Forgets every position from `len` on.
    fn truncate(&mut self, len: usize) {
        self.last.clear();
        if len == 0 {
            self.tokens.clear();
            self.layers.clear();
            return;
        }
        if len < self.tokens.len() {
            self.tokens.truncate(len);
            for (k, v) in &mut self.layers {
                let [b, h, _, dh] = k.dims();
                *k = k.clone().slice([0..b, 0..h, 0..len, 0..dh]);
                *v = v.clone().slice([0..b, 0..h, 0..len, 0..dh]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{TrainConfig, learning_rate, length_batch};

    #[test]
    fn a_batch_is_its_anchor_and_sequences_of_like_length_within_the_budget() {
        use rand::SeedableRng;
        let lengths: Vec<usize> = (0..200).map(|i| 2 + (i * 37) % 300).collect();
        let data: Vec<Vec<u32>> = lengths.iter().map(|&n| vec![1; n]).collect();
        let sequences: Vec<(&[u32], usize)> = data.iter().map(|s| (s.as_slice(), 0)).collect();
        let mut by_length: Vec<usize> = (0..data.len()).collect();
        by_length.sort_by_key(|&i| lengths[i]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut sizes = Vec::new();
        for anchor in 0..data.len() {
            let batch = length_batch(&sequences, &by_length, anchor, (4, 4 * 100), &mut rng);
            let lens: Vec<usize> = batch.iter().map(|(s, _)| s.len()).collect();
            let longest = *lens.iter().max().unwrap();
            assert_eq!(lens[0], lengths[by_length[anchor]], "the anchor comes first");
            assert!(lens.len() <= 4 && (lens.len() == 1 || lens.len() * longest <= 400), "{anchor}: {lens:?}");
            // Drawn from the 64 nearest in length order: 300 lengths over 200 sequences.
            assert!(lens.iter().all(|&l| l.abs_diff(lens[0]) <= 110), "{anchor}: {lens:?}");
            sizes.push(lens.len());
        }
        // Short ones come four at a time, the longest alone or in pairs.
        assert_eq!(sizes[0], 4);
        assert!(sizes[199] <= 2);
    }

    #[test]
    fn the_learning_rate_warms_up_then_decays_along_a_cosine() {
        let c = TrainConfig { steps: 1000, batch: 1, learning_rate: 1.0, seed: 0 };
        let lr: Vec<f64> = (0..c.steps).map(|s| learning_rate(&c, s)).collect();
        // 50 warm-up steps (5 %), rising to the peak.
        assert!((lr[0] - 0.02).abs() < 1e-12 && (lr[49] - 1.0).abs() < 1e-12);
        assert!(lr[..50].windows(2).all(|w| w[0] < w[1]));
        assert!(lr[50..].windows(2).all(|w| w[0] >= w[1]));
        assert!((lr[525] - 0.5).abs() < 0.01, "half way through the decay: {}", lr[525]);
        assert_eq!(lr[999], 0.01, "never below 1 %");
        // Warm-up is at most 200 steps; one step trains at the full rate.
        let long = TrainConfig { steps: 100_000, ..c };
        assert!((learning_rate(&long, 199) - 1.0).abs() < 1e-12 && learning_rate(&long, 198) < 1.0);
        assert_eq!(learning_rate(&TrainConfig { steps: 1, ..c }, 0), 1.0);
    }
}
