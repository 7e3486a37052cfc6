//! A pretrained Llama checkpoint fine-tuned on call graphs, as TraceLLM
//! starts (§4.1): the checkpoint's network learns the recursive layer
//! encoding through the checkpoint's own tokenizer, and writes graphs freely
//! through it. A model file of its own kind carries the network, the
//! tokenizer and the calls of the training graphs.
//!
//! Constrained decoding masks gent's own tokens (digits, whole ids, format
//! words). A checkpoint's byte-pair tokens merge across those boundaries
//! (` MS_1` may be one token), so a mask over them would need every token's
//! text matched against the grammar; these models decode freely only, and a
//! request for constraints is refused by name.

use std::path::Path;

use burn::tensor::Device;
use rand::SeedableRng;

use super::calls::{CountedCall, CountedShape, KnownCalls};
use super::generate::{self, Decoding, FreeLayer, GenerateError, Outcome, Rejection, Request, Sampling, WritesGraphs};
use super::graph::CallGraph;
use super::model::{self, Encoding, LanguageModelError};
use super::pretrained::Pretrained;
use crate::nn::lm::checkpoint;
use crate::nn::lm::{KvCache, Lm, LmConfig, LmError, Lora, LoraConfig, RopeScaling, TrainConfig, Variant};
use crate::nn::weights::{self, Precision};

#[derive(Debug, thiserror::Error)]
pub enum FinetunedError {
    #[error(transparent)]
    Lm(#[from] LmError),
    #[error(transparent)]
    Model(#[from] LanguageModelError),
    #[error(transparent)]
    Packet(#[from] crate::container::PacketError),
    #[error("weights: {0}")]
    Weights(#[from] weights::WeightsError),
    #[error("the model file's sizes: {0}")]
    Sizes(String),
    #[error("the model file's tokenizer: {0}")]
    Tokenizer(String),
    #[error("not a fine-tuned checkpoint of this version (it is a {0:?} file; gent writes {KIND:?})")]
    Kind(String),
    #[error("the checkpoint names no end-of-sequence token: give eos_token_id in its config.json")]
    NoEnd,
    #[error("every token of the vocabulary occurs in the training text, so none is left to pad batches with")]
    NoPad,
    #[error("no call graphs to train on")]
    Empty,
    #[error("cannot encode the training text: {0}")]
    Encode(String),
    #[error("its base checkpoint {dir}: {source} (give --checkpoint DIR where that checkpoint is now)")]
    Base { dir: String, source: crate::nn::lm::checkpoint::CheckpointError },
    #[error(
        "{dir} is not the checkpoint this model was tuned on (its config or weights differ): give --checkpoint DIR with that one"
    )]
    Changed { dir: String },
}

/// The file's kind.
pub const KIND: &str = "gent-llm-checkpoint/2";
/// Session 62's files, from before rotary scaling and projection biases:
/// their checkpoints had neither, which is what they read back as.
const KIND_WITHOUT_SCALING_OR_BIASES: &str = "gent-llm-checkpoint/1";

/// Whether a model file of `kind` is a fine-tuned checkpoint's.
pub fn is_kind(kind: &str) -> bool {
    kind == KIND || kind == KIND_WITHOUT_SCALING_OR_BIASES
}

/// Token names that end a sequence in common Llama tokenizers, tried when
/// the config gives no `eos_token_id`.
const END_NAMES: [&str; 4] = ["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"];

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored<V = Variant> {
    kind: String,
    config: LmConfig,
    variant: V,
    /// The checkpoint's `tokenizer.json`.
    tokenizer: String,
    end: u32,
    pad: u32,
    destinations: Vec<String>,
    calls: Vec<CountedCall>,
    shapes: Vec<CountedShape>,
    network: Network,
}

/// [`Variant`] as `KIND_WITHOUT_SCALING_OR_BIASES` stored it.
#[derive(serde::Deserialize)]
struct VariantWithoutScalingOrBiases {
    kv_heads: usize,
    rope_theta: f32,
    norm_eps: f64,
}

impl Stored<VariantWithoutScalingOrBiases> {
    fn with_plain_variant(self) -> Stored {
        let VariantWithoutScalingOrBiases { kv_heads, rope_theta, norm_eps } = self.variant;
        Stored {
            kind: self.kind,
            config: self.config,
            variant: Variant { kv_heads, rope_theta, rope_scaling: RopeScaling::None, qkv_bias: false, norm_eps },
            tokenizer: self.tokenizer,
            end: self.end,
            pad: self.pad,
            destinations: self.destinations,
            calls: self.calls,
            shapes: self.shapes,
            network: self.network,
        }
    }
}

/// The fine-tuned network as stored.
#[derive(serde::Serialize, serde::Deserialize)]
enum Network {
    /// Every weight.
    Full(Vec<u8>),
    /// LoRA adapters for the checkpoint read from `dir` then, whose
    /// `config.json` and weights hash to `fingerprint`: a checkpoint of
    /// billions of parameters need not be copied into the file.
    Adapters { dir: String, fingerprint: u64, lora: LoraConfig, adapters: Vec<u8> },
}

/// A LoRA fine-tune's checkpoint and adapters, kept to be written.
#[derive(Debug, Clone)]
struct Base {
    dir: String,
    fingerprint: u64,
    lora: LoraConfig,
    adapters: Vec<u8>,
}

/// A fine-tuned checkpoint ready to write graphs.
pub struct Finetuned {
    pub config: LmConfig,
    pub variant: Variant,
    pub tokenizer: tokenizers::Tokenizer,
    /// The token that ends a sequence.
    end: u32,
    /// A token no training text holds, which pads batches and is not scored.
    pad: u32,
    /// Every microservice the training graphs call, sorted.
    pub destinations: Vec<String>,
    /// The calls of the training graphs (kept so that a later version can
    /// constrain or weigh by them as it does for gent's own models).
    pub calls: KnownCalls,
    /// A LoRA fine-tune's checkpoint and adapters (none: every weight is stored).
    base: Option<Base>,
    lm: Lm,
    device: Device,
}

/// Fine-tuning settings.
#[derive(Debug, Clone, Copy)]
pub struct FineTuning {
    pub train: TrainConfig,
    /// Probability of dropping each first-layer condition but `id` (§4.1).
    pub p_drop: f64,
    /// Share of the graphs held back to score training (0: none).
    pub held_back: f64,
    /// Train LoRA adapters on the frozen checkpoint, merged into it
    /// afterwards, as the paper tunes Llama-2 (Appendix A); none: every weight.
    pub lora: Option<LoraConfig>,
}

/// What fine-tuning reports.
#[derive(Debug, Clone)]
pub struct FineTuned {
    /// Losses, speed and held-back graphs, as pre-training reports them.
    pub run: model::Pretrained,
    /// Parameters that trained: every weight, or the adapters'.
    pub trainable: usize,
}

/// Whether `bytes` is a model file of this kind (and not gent's own model).
pub fn is_file(bytes: &[u8]) -> bool {
    crate::container::open_as::<model::Head>(bytes, model::CONTAINER_VERSION).is_ok_and(|h| is_kind(&h.kind))
}

impl Finetuned {
    /// Fine-tunes every weight of `base` on the layer text of `graphs`
    /// (one sequence per layer, conditions shuffled and dropped as
    /// pre-training does), a `t.held_back` share of them held back to score it.
    pub fn train(
        base: Pretrained,
        graphs: &[CallGraph],
        t: &FineTuning,
        device: &Device,
    ) -> Result<(Self, FineTuned), FinetunedError> {
        let Pretrained { dir, checkpoint, tokenizer, .. } = base;
        let fingerprint = checkpoint.fingerprint;
        let end = end_token(checkpoint.eos, &tokenizer)?;
        let (graphs, held_graphs) = super::eval::hold_out(graphs.to_vec(), t.held_back, t.train.seed);
        if graphs.is_empty() {
            return Err(FinetunedError::Empty);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(t.train.seed);
        let (config, variant) = (checkpoint.config, checkpoint.variant);
        let mut texts = |g: &[CallGraph]| model::training_texts(g, Encoding::Layers, t.p_drop, &mut rng);
        let (train_texts, held_texts) = (texts(&graphs), texts(&held_graphs));
        let sequences = encoded(&tokenizer, &train_texts, end, config.max_len)?;
        let held = encoded(&tokenizer, &held_texts, end, config.max_len)?;
        let pad = unused_token(sequences.iter().chain(&held), config.vocab).ok_or(FinetunedError::NoPad)?;
        let tokens_per_sequence = sequences.iter().map(Vec::len).sum::<usize>() as f64 / sequences.len().max(1) as f64;
        let train_device = device.clone().autodiff();
        train_device.seed(t.train.seed);
        let lm = model::moved_variant(checkpoint.lm, &config, &variant, &train_device)?;
        let (train, held) = (model::scored(&sequences), model::scored(&held));
        let (lm, trained, trainable, base) = match &t.lora {
            Some(c) => {
                let lora = Lora::new(lm, c, &train_device)?;
                let trainable = lora.trainable();
                let (lora, trained) = crate::nn::lm::train_watched(lora, &train, &held, &t.train, pad, &train_device)?;
                let dir = std::path::absolute(&dir).unwrap_or(dir).to_string_lossy().into_owned();
                let base = Base { dir, fingerprint, lora: *c, adapters: lora.adapter_bytes()? };
                (lora.merge(), trained, trainable, Some(base))
            }
            None => {
                let trainable = burn::module::Module::num_params(&lm);
                let (lm, trained) = crate::nn::lm::train_watched(lm, &train, &held, &t.train, pad, &train_device)?;
                (lm, trained, trainable, None)
            }
        };
        let lm = model::moved_variant(lm, &config, &variant, device)?;
        let mut destinations: Vec<String> = graphs.iter().flat_map(|g| g.edges.iter().map(|e| e.destination.clone())).collect();
        destinations.sort_unstable();
        destinations.dedup();
        let model = Finetuned {
            config,
            variant,
            tokenizer,
            end,
            pad,
            destinations,
            calls: KnownCalls::of(&graphs),
            base,
            lm,
            device: device.clone(),
        };
        let run = model::Pretrained { trained, held_back_graphs: held_graphs.len(), tokens_per_sequence };
        Ok((model, FineTuned { run, trainable }))
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FinetunedError> {
        let tokenizer = self.tokenizer.to_string(false).map_err(|e| FinetunedError::Tokenizer(e.to_string()))?;
        Ok(crate::container::seal_as(
            &Stored {
                kind: KIND.into(),
                config: self.config,
                variant: self.variant,
                tokenizer,
                end: self.end,
                pad: self.pad,
                destinations: self.destinations.clone(),
                calls: self.calls.counted(),
                shapes: self.calls.shapes().to_vec(),
                network: match &self.base {
                    Some(b) => Network::Adapters {
                        dir: b.dir.clone(),
                        fingerprint: b.fingerprint,
                        lora: b.lora,
                        adapters: b.adapters.clone(),
                    },
                    None => Network::Full(weights::to_bytes(self.lm.clone(), Precision::F32)?),
                },
            },
            model::CONTAINER_VERSION,
        )?)
    }

    /// Reads a model file, every size checked against the others before a
    /// network is built from them. A LoRA fine-tune reads its checkpoint
    /// from `checkpoint` if given, else from where it was when it was tuned.
    pub fn from_bytes(bytes: &[u8], device: &Device, checkpoint: Option<&Path>) -> Result<Self, FinetunedError> {
        let head: model::Head = crate::container::open_as(bytes, model::CONTAINER_VERSION)?;
        let s: Stored = match head.kind.as_str() {
            KIND => crate::container::open_as(bytes, model::CONTAINER_VERSION)?,
            KIND_WITHOUT_SCALING_OR_BIASES => {
                crate::container::open_as::<Stored<VariantWithoutScalingOrBiases>>(bytes, model::CONTAINER_VERSION)?
                    .with_plain_variant()
            }
            _ => return Err(FinetunedError::Kind(head.kind)),
        };
        s.config.validate()?;
        s.variant.validate(&s.config)?;
        let tokenizer: tokenizers::Tokenizer =
            s.tokenizer.parse().map_err(|e: tokenizers::Error| FinetunedError::Tokenizer(e.to_string()))?;
        check_sizes(&s, tokenizer.get_vocab_size(true))?;
        let (lm, base) = match s.network {
            Network::Full(w) => (weights::from_bytes(Lm::new_variant(&s.config, &s.variant, device)?, &w)?, None),
            Network::Adapters { dir, fingerprint, lora, adapters } => {
                let base =
                    Base { dir: checkpoint.map_or(dir, |d| d.to_string_lossy().into_owned()), fingerprint, lora, adapters };
                (adapted(&base, &s.config, &s.variant, device)?, Some(base))
            }
        };
        Ok(Finetuned {
            config: s.config,
            variant: s.variant,
            tokenizer,
            end: s.end,
            pad: s.pad,
            destinations: s.destinations,
            calls: KnownCalls::from_counted(s.calls, s.shapes),
            base,
            lm,
            device: device.clone(),
        })
    }

    /// A writer of graphs, sampling the `sampling` way from `seed`.
    pub fn writer(&self, sampling: Sampling, seed: u64) -> FreeWriter<'_> {
        let allowed = (0..self.tokenizer.get_vocab_size(true).min(self.config.vocab) as u32).collect();
        FreeWriter { model: self, sampling, rng: rand::rngs::StdRng::seed_from_u64(seed), cache: KvCache::default(), allowed }
    }
}

/// The checkpoint `base` refers to, checked to be the one it was tuned on,
/// with its adapters merged in.
fn adapted(base: &Base, config: &LmConfig, variant: &Variant, device: &Device) -> Result<Lm, FinetunedError> {
    // The adapters' size comes from the file: a rank above the width adds
    // nothing a full matrix would not, and bounds what is allocated.
    if base.lora.rank == 0 || base.lora.rank > config.d_model {
        return Err(FinetunedError::Sizes(format!("LoRA rank {} for width {}", base.lora.rank, config.d_model)));
    }
    let dir = Path::new(&base.dir);
    let c = checkpoint::load(dir, device).map_err(|source| FinetunedError::Base { dir: base.dir.clone(), source })?;
    if c.fingerprint != base.fingerprint || c.config != *config || c.variant != *variant {
        return Err(FinetunedError::Changed { dir: base.dir.clone() });
    }
    Ok(Lora::new(c.lm, &base.lora, device)?.with_adapter_bytes(&base.adapters)?.merge())
}

/// The token that ends a sequence: the config's, else one of the usual names.
fn end_token(eos: Option<u32>, tokenizer: &tokenizers::Tokenizer) -> Result<u32, FinetunedError> {
    eos.or_else(|| END_NAMES.iter().find_map(|name| tokenizer.token_to_id(name))).ok_or(FinetunedError::NoEnd)
}

/// Each text as the tokenizer encodes it (with its special tokens, as
/// Hugging Face does by default), then `end`, cut at `max_len`.
fn encoded(
    tokenizer: &tokenizers::Tokenizer,
    texts: &[String],
    end: u32,
    max_len: usize,
) -> Result<Vec<Vec<u32>>, FinetunedError> {
    texts
        .iter()
        .map(|t| {
            let mut ids =
                tokenizer.encode(t.as_str(), true).map_err(|e| FinetunedError::Encode(e.to_string()))?.get_ids().to_vec();
            if ids.last() != Some(&end) {
                ids.push(end);
            }
            ids.truncate(max_len);
            Ok(ids)
        })
        .collect()
}

/// The lowest token id below `vocab` that no sequence holds: batches are
/// padded with it, and the loss leaves it out, so it must not be a token the
/// model should learn to write.
fn unused_token<'a>(sequences: impl Iterator<Item = &'a Vec<u32>>, vocab: usize) -> Option<u32> {
    let mut used = vec![false; vocab];
    for &id in sequences.flatten() {
        if let Some(u) = used.get_mut(id as usize) {
            *u = true;
        }
    }
    used.iter().position(|u| !u).map(|i| i as u32)
}

/// A stored model's sizes agree: the tokenizer and the special tokens fit
/// the vocabulary, and the weights hold as many parameters as the config
/// asks for (at least 2 bytes each) before anything is allocated.
fn check_sizes(s: &Stored, tokenizer_vocab: usize) -> Result<(), FinetunedError> {
    let vocab = s.config.vocab;
    if tokenizer_vocab > vocab || s.end as usize >= vocab || s.pad as usize >= vocab {
        return Err(FinetunedError::Sizes(format!(
            "a vocabulary of {vocab} cannot hold the tokenizer's {tokenizer_vocab} tokens, end token {} and pad token {}",
            s.end, s.pad
        )));
    }
    match &s.network {
        Network::Full(w) => model::weights_fit(&s.config, w.len()).map_err(FinetunedError::Sizes),
        // The checkpoint's own loader checks its weights.
        Network::Adapters { .. } => Ok(()),
    }
}

/// Writes graphs freely, layer by layer, through the checkpoint's tokenizer.
pub struct FreeWriter<'a> {
    model: &'a Finetuned,
    sampling: Sampling,
    rng: rand::rngs::StdRng,
    cache: KvCache,
    /// The tokenizer's ids: rows of the embedding past them are padding no
    /// text decodes to.
    allowed: Vec<u32>,
}

impl FreeWriter<'_> {
    /// One layer after `prompt`, up to `</layer>`: the prompt and what the
    /// model wrote, or why it stopped. The text is decoded from every token
    /// written so far, not token by token: a byte-level or SentencePiece
    /// token's text can depend on the tokens before it.
    fn layer(&mut self, prompt: &str, max_tokens: usize) -> FreeLayer {
        let m = self.model;
        let encoding = match m.tokenizer.encode(prompt, true) {
            Ok(e) => e,
            Err(e) => return Err((GenerateError::Prompt(e.to_string()).into(), prompt.to_string())),
        };
        let mut context = encoding.get_ids().to_vec();
        let start = context.len();
        let max_len = m.config.max_len;
        let written = |context: &[u32]| format!("{prompt}{}", m.tokenizer.decode(&context[start..], true).unwrap_or_default());
        for _ in 0..max_tokens {
            if context.len() >= max_len - 1 {
                break;
            }
            let logits = m.lm.next_logits_cached(&context, &mut self.cache, max_len, &m.device);
            let pick = generate::sample(&logits, &self.allowed, self.sampling, &mut self.rng);
            if pick == m.end {
                return Err((Rejection::EndedInLayer, written(&context)));
            }
            context.push(pick);
            let text = written(&context);
            if let Some(body) = text.strip_suffix("</layer>").or(text.strip_suffix("</layer>\n")) {
                return Ok(format!("{body}</layer>\n"));
            }
        }
        Err((Rejection::Unclosed { closing: "</layer>", max_tokens }, written(&context)))
    }
}

impl WritesGraphs for FreeWriter<'_> {
    fn run(&mut self, request: &Request, decoding: Decoding, max_tokens: usize) -> Outcome {
        if decoding != Decoding::Free {
            return Outcome::Invalid { reason: GenerateError::FreeOnly(decoding).into(), text: String::new() };
        }
        generate::recursive_free(request, None, |prompt| self.layer(prompt, max_tokens))
    }
}
