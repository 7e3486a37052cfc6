//! A pretrained Llama checkpoint with its own tokenizer: the paper starts
//! TraceLLM from a pretrained model, and a user with a GPU can too. The
//! network comes from [`crate::nn::lm::checkpoint`], the tokenizer from the
//! checkpoint's `tokenizer.json` through the `tokenizers` crate, so text is
//! split exactly as the model was trained to read it.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::nn::lm::KvCache;
use crate::nn::lm::checkpoint::{self, Checkpoint, CheckpointError};

#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: not a tokenizer this version reads: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: the tokenizer has {tokenizer} tokens, more than the model's vocabulary of {model}")]
    Vocabulary { path: PathBuf, tokenizer: usize, model: usize },
    #[error("cannot encode the prompt: {0}")]
    Encode(String),
    #[error("the prompt encodes to no tokens")]
    Empty,
    #[error("the prompt is {tokens} tokens, more than the model's context of {context}")]
    TooLong { tokens: usize, context: usize },
}

/// A checkpoint ready to score text.
pub struct Pretrained {
    /// The directory it was read from.
    pub dir: PathBuf,
    pub checkpoint: Checkpoint,
    pub tokenizer: tokenizers::Tokenizer,
    device: Device,
}

/// A likely next token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub id: u32,
    pub token: String,
    pub probability: f32,
}

impl Pretrained {
    /// The checkpoint in `dir` (see [`checkpoint::load`]) and `dir/tokenizer.json`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, PretrainedError> {
        let checkpoint = checkpoint::load(dir, device)?;
        let path = dir.join("tokenizer.json");
        let mut tokenizer = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| PretrainedError::Tokenizer { path: path.clone(), message: e.to_string() })?;
        // A tokenizer.json may carry the padding and truncation its trainer
        // used; Hugging Face's tokenizer classes turn both off unless asked,
        // and so does this: a padded or cut layer would train on pad tokens
        // or lose its end.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| PretrainedError::Tokenizer { path: path.clone(), message: e.to_string() })?;
        let (tokens, model) = (tokenizer.get_vocab_size(true), checkpoint.config.vocab);
        if tokens > model {
            return Err(PretrainedError::Vocabulary { path, tokenizer: tokens, model });
        }
        Ok(Pretrained { dir: dir.to_path_buf(), checkpoint, tokenizer, device: device.clone() })
    }

    /// `text`'s token ids, with the special tokens the tokenizer adds (a
    /// Llama tokenizer's BOS), as Hugging Face encodes by default.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PretrainedError> {
        let ids = self.tokenizer.encode(text, true).map_err(|e| PretrainedError::Encode(e.to_string()))?.get_ids().to_vec();
        let context = self.checkpoint.config.max_len;
        match ids.len() {
            0 => Err(PretrainedError::Empty),
            n if n > context => Err(PretrainedError::TooLong { tokens: n, context }),
            _ => Ok(ids),
        }
    }

    /// Next-token logits after every position of `ids`, `ids.len() × vocab`
    /// row-major. `ids` come from [`Pretrained::encode`] (non-empty, within
    /// the context and the vocabulary).
    pub fn logits(&self, ids: &[u32]) -> Vec<f32> {
        let ids: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        let n = ids.len();
        let x = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &self.device);
        self.checkpoint.lm.forward(x).into_data().try_to_vec::<f32>().unwrap_or_default()
    }

    /// The `top` likeliest tokens after `ids`, likeliest first.
    pub fn next(&self, ids: &[u32], top: usize) -> Vec<Candidate> {
        // The last position only: every position's logits of a long prompt
        // over a 128k vocabulary would be gigabytes.
        let logits = self.checkpoint.lm.next_logits(ids, self.checkpoint.config.max_len, &self.device);
        candidates(&self.tokenizer, &logits, top)
    }

    /// `n` tokens after `ids`, each the likeliest (greedy), through the
    /// key/value cache; stops early at the context's end.
    pub fn greedy(&self, ids: &[u32], n: usize) -> Vec<u32> {
        let (mut context, mut cache) = (ids.to_vec(), KvCache::default());
        let max_len = self.checkpoint.config.max_len;
        let mut out = Vec::with_capacity(n);
        while out.len() < n && context.len() < max_len - 1 {
            let logits = self.checkpoint.lm.next_logits_cached(&context, &mut cache, max_len, &self.device);
            let Some(best) = crate::nn::lm::likeliest(&logits) else { break };
            out.push(best);
            context.push(best);
        }
        out
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }
}

/// The `top` likeliest tokens under `logits` (softmax), likeliest first.
fn candidates(tokenizer: &tokenizers::Tokenizer, logits: &[f32], top: usize) -> Vec<Candidate> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(top)
        .map(|i| Candidate {
            id: i as u32,
            token: tokenizer.id_to_token(i as u32).unwrap_or_default(),
            probability: (logits[i] - max).exp() / total,
        })
        .collect()
}
