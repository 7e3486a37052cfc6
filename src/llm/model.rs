//! The trained language model as a file: dimensions, tokenizer and weights in
//! gent's checksummed container (`container::seal`), and the pre-training run
//! that makes it from call graphs.

use burn::tensor::Device;

use super::calls::{Call, CountedCall, CountedShape, KnownCalls};
use super::generate::NextToken;
use super::graph::CallGraph;
use super::instruct;
use super::text;
use super::tokenizer::{BOS, EOS, PAD, Tokenizer};
use crate::nn::lm::{KvCache, Lm, LmConfig, LmError, Lora, LoraConfig, TrainConfig, Variant};
use crate::nn::weights::{self, Precision};

#[derive(Debug, thiserror::Error)]
pub enum LanguageModelError {
    #[error(transparent)]
    Lm(#[from] LmError),
    #[error(transparent)]
    Packet(#[from] crate::container::PacketError),
    #[error("weights: {0}")]
    Weights(#[from] crate::nn::weights::WeightsError),
    #[error("weights: {0}")]
    Sizes(String),
    #[error("not a gent language model of this version (it is a {0:?} file; gent writes {KIND:?}: retrain it)")]
    Kind(String),
    #[error(
        "a checkpoint fine-tuned with `gent llm train --from`: it reads its checkpoint's tokens, and only `gent llm generate` and `gent llm eval` (free decoding) take it"
    )]
    Finetuned,
    #[error("no call graphs to train on")]
    Empty,
    #[error("instruction tuning needs a model of the layer encoding")]
    NotLayers,
}

/// Graphs whose instruction samples join the tokenizer's training text.
const INSTRUCTION_VOCABULARY_GRAPHS: usize = 100;

/// The file's kind; `/2` added the training destinations, `/3` the training
/// calls, `/4` their counts by graph size, `/5` the node shapes by graph
/// size. Older files still load: `/4` without shapes (no prior over how many
/// calls a node makes), `/3` without counts (no prior at all), `/2` without
/// calls (constrained decoding keeps to the destinations alone). A file of
/// another version is refused by name before its body is decoded.
const KIND: &str = "gent-llm/5";
const KIND_WITHOUT_SHAPES: &str = "gent-llm/4";
const KIND_WITHOUT_COUNTS: &str = "gent-llm/3";
const KIND_WITHOUT_CALLS: &str = "gent-llm/2";

/// The container version of model files: the packet container's layout as it
/// was when they were introduced, kept apart from the window packet's
/// version (`container::FORMAT_VERSION`) so that a new packet format does not make
/// trained language models unreadable; `KIND` versions their body.
pub(super) const CONTAINER_VERSION: u16 = 4;

/// The first field of every stored model, read alone to check the kind.
#[derive(serde::Deserialize)]
pub(super) struct Head {
    pub kind: String,
}

/// How the model writes call graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    /// Layer by layer (TraceLLM's recursive generation).
    Layers,
    /// A whole graph in one sequence (the paper's non-recursive baseline).
    Tabular,
}

/// A model file's body as `gent-llm/2` wrote it; `/3` appends the calls
/// ([`StoredWithoutCounts`]), `/4` the calls with counts
/// ([`StoredWithoutShapes`]), `/5` the node shapes ([`Stored`]).
/// postcard writes a nested struct's fields inline, so a `/2` body is a
/// `/3` body without its last field.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredModel {
    kind: String,
    encoding: Encoding,
    config: LmConfig,
    tokens: Vec<String>,
    destinations: Vec<String>,
    instructed: bool,
    weights: Vec<u8>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    model: StoredModel,
    calls: Vec<CountedCall>,
    shapes: Vec<CountedShape>,
}

#[derive(serde::Deserialize)]
struct StoredWithoutShapes {
    model: StoredModel,
    calls: Vec<CountedCall>,
}

#[derive(serde::Deserialize)]
struct StoredWithoutCounts {
    model: StoredModel,
    calls: Vec<Call>,
}

/// A language model ready to generate: network, tokenizer, and where it runs.
pub struct LanguageModel {
    pub encoding: Encoding,
    pub config: LmConfig,
    pub tokenizer: Tokenizer,
    /// Every microservice the training graphs call, sorted: constrained
    /// decoding names only these.
    pub destinations: Vec<String>,
    /// The calls of the training graphs: constrained decoding keeps to them.
    pub calls: KnownCalls,
    /// Instruction-tuned: it answers questions in the instruction encoding.
    pub instructed: bool,
    pub lm: Lm,
    device: Device,
}

/// Instruction-tuning settings (§4.3).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub train: TrainConfig,
    /// Share of the training graphs made into instruction samples (the paper: 5 %).
    pub fraction: f64,
    pub sampling: instruct::Sampling,
    /// Train LoRA adapters on a frozen model (merged into it afterwards)
    /// instead of every weight.
    pub lora: Option<LoraConfig>,
}

/// What instruction tuning did.
#[derive(Debug, Clone)]
pub struct Tuned {
    /// Loss of every step.
    pub losses: Vec<f32>,
    /// Parameters that trained (all of them, or the adapters').
    pub trainable: usize,
}

/// `lm`'s weights on `device` (between the autodiff device training uses
/// and the plain one generation uses), through their bytes.
fn moved(lm: Lm, config: &LmConfig, device: &Device) -> Result<Lm, LanguageModelError> {
    moved_variant(lm, config, &Variant::of(config), device)
}

/// As [`moved`], for a network of any [`Variant`] (a checkpoint's).
pub(super) fn moved_variant(lm: Lm, config: &LmConfig, variant: &Variant, device: &Device) -> Result<Lm, LanguageModelError> {
    let bytes = weights::to_bytes(lm, Precision::F32)?;
    Ok(weights::from_bytes(Lm::new_variant(config, variant, device)?, &bytes)?)
}

/// What pre-training reports.
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// Losses and speed (nats per token).
    pub trained: crate::nn::lm::Trained,
    /// Graphs held back from training, whose loss `trained` reports.
    pub held_back_graphs: usize,
    /// Mean tokens per training sequence (BOS and EOS included): how much a
    /// tokenizer shortens the text, and what turns a per-token loss into a
    /// per-sequence one.
    pub tokens_per_sequence: f64,
}

/// Pre-training settings: which size, how long, and the condition drop rate.
#[derive(Debug, Clone, Copy)]
pub struct Pretraining {
    pub encoding: Encoding,
    pub size: fn(usize) -> LmConfig,
    pub train: TrainConfig,
    /// Probability of dropping each first-layer condition but `id` (§4.1; the
    /// paper uses 0.9 with far more data).
    pub p_drop: f64,
    /// At most this many identifier tokens (whole microservice and service
    /// ids, see `tokenizer`); 0 spells every id digit by digit.
    pub max_ids: usize,
    /// Share of the graphs held back from training to score it (0: none).
    pub held_back: f64,
}

/// Identifier tokens a model gets by default: every id seen twice, up to this many.
pub const DEFAULT_MAX_IDS: usize = 4096;

impl LanguageModel {
    /// Pre-trains on `graphs`, a `p.held_back` share of them held back to
    /// score the model as it trains. Recursive layer encoding: one sequence
    /// per layer (BOS, conditions, layer, EOS); tabular: one per graph (BOS,
    /// record, EOS; longer graphs are cut at the model's context). Fields and
    /// conditions shuffled.
    pub fn pretrain(graphs: &[CallGraph], p: &Pretraining, device: &Device) -> Result<(Self, Pretrained), LanguageModelError> {
        use rand::SeedableRng;
        let (graphs, held_graphs) = super::eval::hold_out(graphs.to_vec(), p.held_back, p.train.seed);
        if graphs.is_empty() {
            return Err(LanguageModelError::Empty);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(p.train.seed);
        let texts = training_texts(&graphs, p.encoding, p.p_drop, &mut rng);
        let tokenizer = vocabulary(&graphs, &texts, p, &mut rng);
        let config = (p.size)(tokenizer.len());
        let sequences = encoded(&tokenizer, &texts, config.max_len);
        let held = encoded(&tokenizer, &training_texts(&held_graphs, p.encoding, p.p_drop, &mut rng), config.max_len);
        let tokens_per_sequence = sequences.iter().map(Vec::len).sum::<usize>() as f64 / sequences.len().max(1) as f64;
        let train_device = device.clone().autodiff();
        // Initial weights come from the backend's generator: seed it, or the
        // same --seed gives different models.
        train_device.seed(p.train.seed);
        let lm = Lm::new(&config, &train_device)?;
        let (lm, trained) = crate::nn::lm::train_watched(lm, &scored(&sequences), &scored(&held), &p.train, PAD, &train_device)?;
        let lm = moved(lm, &config, device)?;
        let mut destinations: Vec<String> = graphs.iter().flat_map(|g| g.edges.iter().map(|e| e.destination.clone())).collect();
        destinations.sort_unstable();
        destinations.dedup();
        Ok((
            LanguageModel {
                encoding: p.encoding,
                config,
                tokenizer,
                destinations,
                calls: KnownCalls::of(&graphs),
                instructed: false,
                lm,
                device: device.clone(),
            },
            Pretrained { trained, tokens_per_sequence, held_back_graphs: held_graphs.len() },
        ))
    }

    /// Instruction tuning (§4.3): a `t.fraction` of `graphs` (at least one)
    /// becomes instruction samples, one per layer, each with the user
    /// instruction its graph warrants (`instruct::Facts`), and training goes on
    /// from the current weights, scoring only the answers: the question is a
    /// fixed prompt. With `t.lora` only low-rank adapters train, then merge
    /// into the weights.
    pub fn tune(&mut self, graphs: &[CallGraph], t: &Tuning) -> Result<Tuned, LanguageModelError> {
        use rand::SeedableRng;
        if self.encoding != Encoding::Layers {
            return Err(LanguageModelError::NotLayers);
        }
        let facts = instruct::Facts::of(graphs);
        let mut rng = rand::rngs::StdRng::seed_from_u64(t.train.seed);
        let (_, chosen) = super::eval::hold_out(graphs.to_vec(), t.fraction, t.train.seed);
        let chosen = if chosen.is_empty() { graphs.iter().take(1).cloned().collect() } else { chosen };
        if chosen.is_empty() {
            return Err(LanguageModelError::Empty);
        }
        let mut pairs = Vec::new();
        for g in &chosen {
            for sample in instruct::samples(g, &facts, t.sampling, &mut rng) {
                let (mut question, mut answer) = (String::new(), String::new());
                sample.write_question(&mut question);
                sample.write_answer(&mut answer);
                pairs.push((question, answer));
            }
        }
        let tuned = self.tune_answers(&pairs, &t.train, t.lora.as_ref())?;
        self.instructed = true;
        Ok(tuned)
    }

    /// Fine-tuning on questions and answers (`(prompt, answer)` text pairs),
    /// scoring only the answers, with LoRA adapters when `lora` is given.
    pub fn tune_answers(
        &mut self,
        pairs: &[(String, String)],
        train: &TrainConfig,
        lora: Option<&LoraConfig>,
    ) -> Result<Tuned, LanguageModelError> {
        if pairs.is_empty() {
            return Err(LanguageModelError::Empty);
        }
        let sequences: Vec<(Vec<u32>, usize)> = pairs
            .iter()
            .map(|(question, answer)| {
                let mut tokens = vec![BOS];
                tokens.extend(self.tokenizer.encode(question));
                let from = tokens.len();
                tokens.extend(self.tokenizer.encode(answer));
                tokens.push(EOS);
                tokens.truncate(self.config.max_len);
                (tokens, from)
            })
            .collect();
        let scored: Vec<(&[u32], usize)> = sequences.iter().map(|(s, f)| (s.as_slice(), *f)).collect();
        let train_device = self.device.clone().autodiff();
        train_device.seed(train.seed);
        let lm = moved(self.lm.clone(), &self.config, &train_device)?;
        let (lm, tuned) = match lora {
            Some(c) => {
                let lora = Lora::new(lm, c, &train_device)?;
                let trainable = lora.trainable();
                let (lora, losses) = crate::nn::lm::train_from(lora, &scored, train, PAD, &train_device)?;
                (lora.merge(), Tuned { losses, trainable })
            }
            None => {
                let trainable = burn::module::Module::num_params(&lm);
                let (lm, losses) = crate::nn::lm::train_from(lm, &scored, train, PAD, &train_device)?;
                (lm, Tuned { losses, trainable })
            }
        };
        self.lm = moved(lm, &self.config, &self.device)?;
        Ok(tuned)
    }

    /// Tokens of `text` (without the start and end tokens).
    pub fn token_count(&self, text: &str) -> usize {
        self.tokenizer.encode(text).len()
    }

    /// Whether a question and its answer fit the context whole (tuning
    /// cuts a longer one, answer first).
    pub fn fits(&self, question: &str, answer: &str) -> bool {
        self.token_count(question) + self.token_count(answer) + 2 <= self.config.max_len
    }

    /// The model's greedy answer after `prompt`: tokens up to a newline or
    /// the end token, at most `max_tokens`.
    pub fn answer(&self, prompt: &str, max_tokens: usize) -> String {
        let mut context = vec![BOS];
        context.extend(self.tokenizer.encode(prompt));
        let (mut scorer, tokenizer) = self.scorer();
        let start = context.len();
        for _ in 0..max_tokens {
            let logits = scorer.logits(&context);
            let Some(best) = crate::nn::lm::likeliest(&logits) else { break };
            if best == EOS || tokenizer.token(best).is_none_or(|t| t.contains('\n')) {
                break;
            }
            context.push(best);
        }
        tokenizer.decode(&context[start..])
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, LanguageModelError> {
        let weights = weights::to_bytes(self.lm.clone(), Precision::F32)?;
        Ok(crate::container::seal_as(
            &Stored {
                model: StoredModel {
                    kind: KIND.into(),
                    encoding: self.encoding,
                    config: self.config,
                    tokens: self.tokenizer.tokens().to_vec(),
                    destinations: self.destinations.clone(),
                    instructed: self.instructed,
                    weights,
                },
                calls: self.calls.counted(),
                shapes: self.calls.shapes().to_vec(),
            },
            CONTAINER_VERSION,
        )?)
    }

    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self, LanguageModelError> {
        let head: Head = crate::container::open_as(bytes, CONTAINER_VERSION)?;
        let (s, calls) = match head.kind.as_str() {
            KIND => {
                let Stored { model, calls, shapes } = crate::container::open_as(bytes, CONTAINER_VERSION)?;
                (model, KnownCalls::from_counted(calls, shapes))
            }
            KIND_WITHOUT_SHAPES => {
                let StoredWithoutShapes { model, calls } = crate::container::open_as(bytes, CONTAINER_VERSION)?;
                (model, KnownCalls::from_counted(calls, Vec::new()))
            }
            KIND_WITHOUT_COUNTS => {
                let StoredWithoutCounts { model, calls } = crate::container::open_as(bytes, CONTAINER_VERSION)?;
                (model, KnownCalls::from_calls(calls))
            }
            KIND_WITHOUT_CALLS => (crate::container::open_as(bytes, CONTAINER_VERSION)?, KnownCalls::default()),
            kind if super::finetuned::is_kind(kind) => return Err(LanguageModelError::Finetuned),
            _ => return Err(LanguageModelError::Kind(head.kind)),
        };
        check_sizes(&s)?;
        let lm = weights::from_bytes(Lm::new(&s.config, device)?, &s.weights)?;
        Ok(LanguageModel {
            encoding: s.encoding,
            config: s.config,
            tokenizer: Tokenizer::from_tokens(s.tokens),
            destinations: s.destinations,
            calls,
            instructed: s.instructed,
            lm,
            device: device.clone(),
        })
    }
}

/// One training text per sequence: each layer of each graph (layer
/// encoding) or each whole graph (tabular), fields and conditions shuffled.
pub(super) fn training_texts(graphs: &[CallGraph], encoding: Encoding, p_drop: f64, rng: &mut rand::rngs::StdRng) -> Vec<String> {
    let mut texts = Vec::new();
    for g in graphs {
        match encoding {
            Encoding::Layers => {
                for l in text::encode_layers(g, rng, p_drop).0 {
                    let doc = text::Document { records: vec![text::Layers(vec![l])], final_newline: true };
                    texts.push(text::write_layers(&doc));
                }
            }
            Encoding::Tabular => {
                let doc = text::Document { records: vec![text::encode_tabular(g, rng, p_drop)], final_newline: true };
                texts.push(text::write_tabular(&doc));
            }
        }
    }
    texts
}

/// The tokenizer of the training texts. It also covers the instruction
/// encoding's words, so a model tuned later reads its questions as words,
/// not characters.
fn vocabulary(graphs: &[CallGraph], texts: &[String], p: &Pretraining, rng: &mut rand::rngs::StdRng) -> Tokenizer {
    let mut instructions = Vec::new();
    if p.encoding == Encoding::Layers {
        let facts = instruct::Facts::of(graphs);
        for g in graphs.iter().take(INSTRUCTION_VOCABULARY_GRAPHS) {
            for sample in instruct::samples(g, &facts, instruct::Sampling::default(), rng) {
                instructions.push(text::write_instructions(&text::Document { records: vec![sample], final_newline: true }));
            }
        }
    }
    Tokenizer::train(texts.iter().chain(&instructions).map(String::as_str), 2, 4096, p.max_ids)
}

/// Sequences scored from their first token on.
pub(super) fn scored(sequences: &[Vec<u32>]) -> Vec<(&[u32], usize)> {
    sequences.iter().map(|s| (s.as_slice(), 0)).collect()
}

/// Each text as BOS, its tokens, EOS, cut at `max_len`.
fn encoded(tokenizer: &Tokenizer, texts: &[String], max_len: usize) -> Vec<Vec<u32>> {
    texts
        .iter()
        .map(|t| {
            let mut s = vec![BOS];
            s.extend(tokenizer.encode(t));
            s.push(EOS);
            s.truncate(max_len);
            s
        })
        .collect()
}

/// A model file's sizes agree with each other before any network is built from
/// them: its config decides what `Lm::new` allocates, so a config larger than
/// the weights the file carries (at least 2 bytes each) is refused.
fn check_sizes(s: &StoredModel) -> Result<(), LanguageModelError> {
    s.config.validate()?;
    if s.config.vocab != s.tokens.len() || s.tokens.len() <= EOS as usize {
        return Err(LanguageModelError::Sizes(format!(
            "the config's vocabulary of {} does not match the file's {} tokens",
            s.config.vocab,
            s.tokens.len()
        )));
    }
    weights_fit(&s.config, s.weights.len()).map_err(LanguageModelError::Sizes)
}

/// `bytes` of weights hold the parameters `config` asks for, at least 2
/// bytes each: what `Lm::new` allocates is bounded by the file itself.
pub(super) fn weights_fit(config: &LmConfig, bytes: usize) -> Result<(), String> {
    let parameters = config.min_parameters().unwrap_or(usize::MAX);
    if parameters.saturating_mul(2) > bytes {
        return Err(format!("the config asks for at least {parameters} parameters, the file holds {bytes} bytes of weights"));
    }
    Ok(())
}

/// The model scores the next token; the generator needs the tokenizer apart,
/// so generation borrows this view.
pub struct Scorer<'a> {
    lm: &'a Lm,
    max_len: usize,
    device: &'a Device,
    /// `None` runs the whole context every step (for measuring the cache).
    cache: Option<KvCache>,
}

impl LanguageModel {
    /// The model as a next-token scorer with a key/value cache.
    pub fn scorer(&self) -> (Scorer<'_>, &Tokenizer) {
        let cache = Some(KvCache::default());
        (Scorer { lm: &self.lm, max_len: self.config.max_len, device: &self.device, cache }, &self.tokenizer)
    }

    /// As [`LanguageModel::scorer`] without the cache: every step runs the
    /// whole context.
    pub fn uncached_scorer(&self) -> (Scorer<'_>, &Tokenizer) {
        (Scorer { lm: &self.lm, max_len: self.config.max_len, device: &self.device, cache: None }, &self.tokenizer)
    }
}

impl LanguageModel {
    /// Next-token scores after every context of a batch, each row of
    /// `cache` continuing its own context ([`super::batch`]).
    pub fn batch_logits(&self, contexts: &[&[u32]], cache: &mut crate::nn::lm::BatchCache) -> Vec<Vec<f32>> {
        self.lm.next_logits_batch(contexts, cache, self.config.max_len, &self.device)
    }
}

impl NextToken for Scorer<'_> {
    fn logits(&mut self, context: &[u32]) -> Vec<f32> {
        match &mut self.cache {
            Some(cache) => self.lm.next_logits_cached(context, cache, self.max_len, self.device),
            None => self.lm.next_logits(context, self.max_len, self.device),
        }
    }
}

/// Texts read together when their features are taken.
const FEATURE_BATCH: usize = 16;

impl LanguageModel {
    /// What the frozen model makes of each text: its final hidden states
    /// averaged over the text, beside the state after the last token
    /// (`2 × d_model` values). Texts over the context keep their end.
    pub fn features(&self, texts: &[String]) -> Vec<Vec<f32>> {
        let sequences: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                let mut s = vec![BOS];
                s.extend(self.tokenizer.encode(t));
                let from = s.len().saturating_sub(self.config.max_len);
                s.split_off(from)
            })
            .collect();
        // Batches of like length waste little on padding; the mask is causal,
        // so padding after a text does not change its states.
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| sequences[i].len());
        let mut out = vec![Vec::new(); sequences.len()];
        for chunk in order.chunks(FEATURE_BATCH) {
            let len = chunk.iter().map(|&i| sequences[i].len()).max().unwrap_or(1);
            let sequences = &sequences;
            let ids: Vec<i64> =
                chunk.iter().flat_map(|&i| (0..len).map(move |p| sequences[i].get(p).copied().unwrap_or(PAD) as i64)).collect();
            let tokens = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(ids, [chunk.len(), len]),
                &self.device,
            );
            let hidden = self.lm.hidden(tokens).into_data().try_to_vec::<f32>().unwrap_or_default();
            let d = self.config.d_model;
            for (row, &i) in chunk.iter().enumerate() {
                let n = sequences[i].len();
                let states = &hidden[row * len * d..(row * len + n) * d];
                let mut f = vec![0f32; 2 * d];
                for s in states.chunks_exact(d) {
                    f[..d].iter_mut().zip(s).for_each(|(m, x)| *m += x / n as f32);
                }
                f[d..].copy_from_slice(&states[(n - 1) * d..]);
                out[i] = f;
            }
        }
        out
    }
}
