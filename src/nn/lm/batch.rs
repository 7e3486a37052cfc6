//! Next-token logits for several contexts at once, each with its keys and
//! values cached: generation batched over requests.
//!
//! A tiny model's step costs a few dozen tensor operations whatever their
//! size, so one request at a time spends its time on per-operation overhead.
//! Here every operation of a step covers all the rows.
//!
//! Rows advance by different numbers of tokens (a forced run of format
//! tokens, a new prompt), so the cache is a grid of *slots*
//! (`[rows, slots, kv width]`). Each step appends as many slots as the
//! longest row's new tokens, and each row remembers which slots hold its
//! context, in order. A row attends only to its own slots, each at the
//! rotary position it was written at. Slots a row no longer uses (padding,
//! a context that changed) are dropped by compacting the grid once it has
//! grown to twice what the rows hold.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::{Lm, keep_layer};

/// One row's context as cached.
#[derive(Debug, Default, Clone)]
struct Row {
    tokens: Vec<u32>,
    /// The slot of each token of `tokens`.
    slots: Vec<usize>,
    /// Logits after the whole of `tokens`.
    last: Vec<f32>,
}

/// The cache of [`Lm::next_logits_batch`]: keys and values per block as
/// `[rows, slots, kv_heads × head width]`, rotary positions applied.
#[derive(Debug, Default)]
pub struct BatchCache {
    rows: Vec<Row>,
    layers: Vec<(Tensor<3>, Tensor<3>)>,
    slots: usize,
}

impl BatchCache {
    /// A cache for `rows` contexts.
    pub fn new(rows: usize) -> Self {
        BatchCache { rows: vec![Row::default(); rows], layers: Vec::new(), slots: 0 }
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Keeps the rows `keep` marks, in order (a request that finished leaves
    /// the batch).
    pub fn keep_rows(&mut self, keep: &[bool]) {
        let kept: Vec<usize> = (0..self.rows.len()).filter(|&r| keep.get(r).copied().unwrap_or(false)).collect();
        self.compact(&kept);
    }

    /// Rebuilds the grid with rows `kept` only, each row's slots moved to
    /// the front in order.
    fn compact(&mut self, kept: &[usize]) {
        // Taken, not cloned: each row carries its last logits (a vocabulary of floats).
        let rows: Vec<Row> = kept.iter().map(|&r| std::mem::take(&mut self.rows[r])).collect();
        let width = rows.iter().map(|r| r.slots.len()).max().unwrap_or(0);
        if rows.is_empty() || width == 0 || self.layers.is_empty() {
            self.rows = vec![Row::default(); rows.len()];
            self.layers.clear();
            self.slots = 0;
            return;
        }
        // Padding reads slot 0 of the row: no row lists it, so it is never seen.
        let index: Vec<i64> = kept
            .iter()
            .zip(&rows)
            .flat_map(|(&r, row)| {
                let base = (r * self.slots) as i64;
                (0..width).map(move |j| base + row.slots.get(j).map_or(0, |&s| s as i64))
            })
            .collect();
        let device = self.layers[0].0.device();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [kept.len() * width]), &device);
        let old_slots = self.slots;
        let gather = |t: &Tensor<3>| {
            let [rows, _, w] = t.dims();
            t.clone().reshape([rows * old_slots, w]).select(0, index.clone()).reshape([kept.len(), width, w])
        };
        self.layers = self.layers.iter().map(|(k, v)| (gather(k), gather(v))).collect();
        self.rows = rows
            .into_iter()
            .map(|mut r| {
                r.slots = (0..r.slots.len()).collect();
                r
            })
            .collect();
        self.slots = width;
    }
}

/// Unused slots the grid may carry before it is compacted.
const COMPACT_SLACK: usize = 8;

/// What one row computes this step.
struct Step {
    /// Tokens already cached that stay (the rotary position of the first new one).
    keep: usize,
    /// Tokens to run.
    new: Vec<u32>,
}

impl Lm {
    /// As [`Lm::next_logits_cached`] for every row of `cache` at once:
    /// `contexts[i]` is row `i`'s context (`contexts.len()` must be
    /// `cache.rows()`). Each row reuses what it cached of its own context's
    /// longest shared prefix. A context past `max_len - 1` tokens takes the
    /// uncached path alone.
    pub fn next_logits_batch(
        &self,
        contexts: &[&[u32]],
        cache: &mut BatchCache,
        max_len: usize,
        device: &Device,
    ) -> Vec<Vec<f32>> {
        assert_eq!(contexts.len(), cache.rows(), "one context per cached row");
        let mut out: Vec<Option<Vec<f32>>> = vec![None; contexts.len()];
        let mut steps: Vec<Option<Step>> = Vec::with_capacity(contexts.len());
        for (i, (&context, row)) in contexts.iter().zip(&mut cache.rows).enumerate() {
            steps.push(None);
            if context.is_empty() || context.len() > max_len - 1 {
                *row = Row::default();
                out[i] = Some(self.next_logits(context, max_len, device));
                continue;
            }
            let shared = row.tokens.iter().zip(context).take_while(|(a, b)| a == b).count();
            if shared == context.len() && shared == row.tokens.len() && !row.last.is_empty() {
                out[i] = Some(row.last.clone());
                continue;
            }
            // The whole context shared: its last token runs again for its logits.
            let keep = shared.min(context.len() - 1);
            row.tokens.truncate(keep);
            row.slots.truncate(keep);
            steps[i] = Some(Step { keep, new: context[keep..].to_vec() });
        }
        let n = steps.iter().flatten().map(|s| s.new.len()).max().unwrap_or(0);
        if n > 0 {
            let logits = self.run_rows(&steps, n, cache, device);
            for (i, (step, l)) in steps.iter().zip(logits).enumerate() {
                if step.is_some() {
                    let row = &mut cache.rows[i];
                    row.tokens = contexts[i].to_vec();
                    row.last = l.clone();
                    out[i] = Some(l);
                }
            }
            let held = cache.rows.iter().map(|r| r.slots.len()).max().unwrap_or(0);
            if cache.slots > held + COMPACT_SLACK {
                let all: Vec<usize> = (0..cache.rows.len()).collect();
                cache.compact(&all);
            }
        }
        out.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// Runs `n` new slots for every row (rows without a step, or with fewer
    /// tokens, run padding that nothing reads); the logits after each row's
    /// last new token.
    fn run_rows(&self, steps: &[Option<Step>], n: usize, cache: &mut BatchCache, device: &Device) -> Vec<Vec<f32>> {
        let b = steps.len();
        let first_slot = cache.slots;
        let total = first_slot + n;
        let mut tokens = Vec::with_capacity(b * n);
        let mut positions = Vec::with_capacity(b * n);
        for (step, row) in steps.iter().zip(&mut cache.rows) {
            let (keep, new) = step.as_ref().map_or((row.slots.len(), &[][..]), |s| (s.keep, &s.new[..]));
            for j in 0..n {
                tokens.push(new.get(j).copied().unwrap_or(0) as i64);
                positions.push((keep + j.min(new.len().saturating_sub(1))) as i64);
            }
            row.slots.extend((0..new.len()).map(|j| first_slot + j));
        }
        let mask = self.slot_mask(steps, cache, n, total, device);
        let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [b * n]), device);
        let mut x = self.embed.forward(Tensor::<2, Int>::from_data(TensorData::new(tokens, [b, n]), device));
        let first = cache.layers.is_empty();
        for (i, blk) in self.blocks.iter().enumerate() {
            let h = blk.attn_norm.forward(x.clone());
            let d = h.dims()[2];
            let dh = d / self.heads;
            let q = self.rope_at(blk.q.forward(h.clone()), &positions, dh);
            let k = self.rope_at(blk.k.forward(h.clone()), &positions, dh);
            let v = blk.v.forward(h);
            let (k, v) = match (first, cache.layers.get(i)) {
                (false, Some((ck, cv))) => (Tensor::cat(vec![ck.clone(), k], 1), Tensor::cat(vec![cv.clone(), v], 1)),
                _ => (k, v),
            };
            let heads_of = |t: Tensor<3>| {
                let w = t.dims()[2];
                t.reshape([b, total, w / dh, dh]).swap_dims(1, 2)
            };
            let (gk, gv) = (self.grouped(heads_of(k.clone())), self.grouped(heads_of(v.clone())));
            let q = q.reshape([b, n, self.heads, dh]).swap_dims(1, 2);
            let scores = q.matmul(gk.swap_dims(2, 3)).div_scalar((dh as f32).sqrt());
            // -inf, as in the whole pass: most of a padded grid is masked.
            let scores = scores.mask_fill(mask.clone().expand([b, self.heads, n, total]), f32::NEG_INFINITY);
            let attended = softmax(scores, 3).matmul(gv).swap_dims(1, 2).reshape([b, n, d]);
            keep_layer(&mut cache.layers, i, (k, v));
            x = blk.feed_forward(x + blk.o.forward(attended));
        }
        cache.slots = total;
        let d = x.dims()[2];
        let last: Vec<i64> =
            steps.iter().enumerate().map(|(r, s)| (r * n + s.as_ref().map_or(1, |s| s.new.len()).max(1) - 1) as i64).collect();
        let last = Tensor::<1, Int>::from_data(TensorData::new(last, [b]), device);
        let hidden = x.reshape([b * n, d]).select(0, last);
        let logits =
            self.head.forward(self.norm.forward(hidden.unsqueeze::<3>())).into_data().try_to_vec::<f32>().unwrap_or_default();
        let vocab = logits.len() / b.max(1);
        logits.chunks(vocab.max(1)).map(<[f32]>::to_vec).collect()
    }

    /// `[rows, 1, n, slots]`, true where new token `j` of a row must not see
    /// a slot: slots of other rows, padding, and its own later tokens.
    fn slot_mask(&self, steps: &[Option<Step>], cache: &BatchCache, n: usize, total: usize, device: &Device) -> Tensor<4, Bool> {
        let b = steps.len();
        let mut hidden = vec![true; b * n * total];
        for (r, (step, row)) in steps.iter().zip(&cache.rows).enumerate() {
            let keep = step.as_ref().map_or(row.slots.len(), |s| s.keep);
            let new = step.as_ref().map_or(0, |s| s.new.len());
            for j in 0..n {
                // Padding after the row's tokens sees what its last token
                // sees (a row with nothing new, its first slot): never an
                // empty row, which softmax would turn into NaN.
                let upto = if new == 0 { 1 } else { keep + j.min(new - 1) + 1 };
                let at = (r * n + j) * total;
                for &s in row.slots.iter().take(upto) {
                    hidden[at + s] = false;
                }
            }
        }
        Tensor::<3, Bool>::from_data(TensorData::new(hidden, [b, n, total]), device).unsqueeze_dim::<4>(1)
    }

    /// `x` (`[rows, n, heads × dh]`) with each row's token `j` rotated to
    /// position `positions[row × n + j]`, as [`burn::nn::RotaryEncoding`]
    /// rotates a run of positions from one start.
    fn rope_at(&self, x: Tensor<3>, positions: &Tensor<1, Int>, dh: usize) -> Tensor<3> {
        let [b, n, w] = x.dims();
        let heads = w / dh;
        let device = x.device();
        let sign = Tensor::<2>::from_floats([[1.0, 0.0, 0.0, 1.0], [0.0, -1.0, 1.0, 0.0]], &device);
        // [b·n, dh, 2]: cos and sin of each token's position.
        let freqs = self.rope.freq_complex.clone().select(0, positions.clone()).reshape([b, n, 1, dh, 2]);
        let rotated = x.reshape([b * n * heads, 1, dh / 2, 2]).matmul(sign.unsqueeze::<4>()).reshape([b, n, heads, dh, 2]);
        (rotated * freqs).sum_dim(4).reshape([b, n, w])
    }
}

#[cfg(test)]
mod tests {
    use super::BatchCache;
    use crate::nn::lm::{KvCache, Lm, LmConfig, Variant};

    fn close(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Every row's logits equal the uncached ones while rows grow by one
    /// token or several, start over, repeat themselves, leave the batch,
    /// and run past the compaction point; with grouped-query attention too.
    #[test]
    fn batched_rows_give_each_context_its_own_logits() {
        let device = crate::nn::cpu_device();
        for kv_heads in [4, 2] {
            let config = LmConfig { vocab: 40, d_model: 32, layers: 2, heads: 4, hidden: 48, max_len: 64 };
            let variant = Variant { kv_heads, ..Variant::of(&config) };
            let lm = Lm::new_variant(&config, &variant, &device).unwrap();
            let mut contexts: Vec<Vec<u32>> = vec![vec![1, 5], vec![1], vec![1, 7, 8, 9], vec![1, 3]];
            let mut cache = BatchCache::new(contexts.len());
            let mut single = KvCache::default();
            for step in 0..40usize {
                let views: Vec<&[u32]> = contexts.iter().map(Vec::as_slice).collect();
                let got = lm.next_logits_batch(&views, &mut cache, config.max_len, &device);
                for (c, g) in contexts.iter().zip(&got) {
                    let want = lm.next_logits(c, config.max_len, &device);
                    assert!(close(g, &want) < 1e-4, "step {step}, context {c:?}: {}", close(g, &want));
                    single.clear();
                    assert!(close(g, &lm.next_logits_cached(c, &mut single, config.max_len, &device)) < 1e-4);
                }
                for (r, c) in contexts.iter_mut().enumerate() {
                    match (step + r) % 7 {
                        // The same context again (its logits come from the cache).
                        0 => {}
                        // A run of forced tokens.
                        3 => c.extend([2, 4, 6]),
                        // A new prompt sharing only the start token.
                        5 => *c = vec![1, (step % 30) as u32 + 3],
                        _ => c.push(((step * 7 + r * 3) % 37) as u32 + 2),
                    }
                    c.truncate(60);
                }
                if step == 25 {
                    cache.keep_rows(&[true, false, true, true]);
                    contexts.remove(1);
                }
            }
            assert!(cache.slots < 200, "compacted: {} slots", cache.slots);
        }
    }
}
