//! Recursive generation of call graphs (§4.2) with constrained decoding.
//!
//! The driver starts from the user's request, generates the first layer, queues
//! the subgraph conditions that layer wrote, and generates each subgraph's layer
//! in turn, depth-first, until none remain; the layers assemble into the graph.
//!
//! Constrained decoding masks, at every step, the tokens that would break the
//! layer's format or an Appendix B constraint. Where the format leaves exactly
//! one token possible (tags, field names, copied values such as the caller) the
//! token is written without asking the model; where it leaves a choice (the
//! destination's digits, the type, every number) the model's scores are
//! restricted to the tokens that keep the layer satisfiable — a number is
//! bounded digit by digit, so it can only end inside its allowed range. Edge
//! counts, edge ids, times within latency, subgraph edge budgets and depths are
//! all bounded this way, so every generated graph is valid and has exactly the
//! requested number of edges and depth, whatever the model's weights. Given
//! the microservices seen in training, destinations are masked to them too;
//! given the calls seen in training ([`KnownCalls`]), to those the layer's
//! start node made, and types to those the pair was called with.

use rand::{Rng, SeedableRng};

use super::calls::{KnownCalls, Size};
use super::graph::{CallGraph, Edge, EdgeId, Layer, LayerConditions};
use super::instruct::{self, UserInstruction};
use super::text::{self, Conditions};
use super::tokenizer::Tokenizer;

/// Scores for the next token (the language model; anything at all in tests).
pub trait NextToken {
    /// One score per vocabulary entry for the token after `context`.
    fn logits(&mut self, context: &[u32]) -> Vec<f32>;
}

/// A model borrowed for a while, or a model behind a trait object.
impl<T: NextToken + ?Sized> NextToken for &mut T {
    fn logits(&mut self, context: &[u32]) -> Vec<f32> {
        (**self).logits(context)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 picks the best allowed token.
    pub temperature: f32,
    /// Keep the k best allowed tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of best tokens whose probability reaches p (1: all).
    pub top_p: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 }
    }
}

/// How much the counts of training decide a call's destination and type and
/// a layer's and subgraph's size against the model. The two distributions
/// are combined as a product of experts, `prior^weight × model^(1 − weight)`
/// renormalised: the model orders what the training graphs near the request
/// hold, and what they never hold stays out. (A linear mix, as kNN-LM uses,
/// lets the model put its share on values no near graph has; at every digit
/// and destination of a graph those errors add up: KL 0.37 against 0.26 at
/// weight 0.75, BENCHMARKS.md.) The prior is the training graphs of the
/// service nearest the request in size ([`KnownCalls::destination_prior`]),
/// `sharpness` how fast a graph's counts fade as its size moves away from
/// the request's. Measured with ten graphs per held-back request, every
/// share the `tiny` and `small` models take makes the calls less like the
/// held-back ones (BENCHMARKS.md, session 47), so the command line's default
/// weight is 1: the counts choose the calls and sizes they hold, the model
/// what they do not (how many subgraphs, which edge starts each, how deep,
/// when calls start and finish, and calls of nodes never seen calling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallPrior {
    /// 0: the model alone; 1: the prior alone (where it has counts).
    pub weight: f64,
    pub sharpness: f64,
}

impl CallPrior {
    /// The model alone.
    pub const NONE: CallPrior = CallPrior { weight: 0.0, sharpness: 0.0 };
    /// The counts where they hold the choice, near the request's size: the
    /// default of `gent llm generate` and `eval`, and the decompressor's.
    pub const COUNTS: CallPrior = CallPrior { weight: 1.0, sharpness: 16.0 };
}

/// The counts one layer is generated under.
#[derive(Clone, Copy)]
struct Shape {
    /// Edges in the layer and everything below it.
    n: u64,
    /// Layers left below this one.
    rd: u64,
    latency: u64,
    start_at: u64,
    start_id: u64,
}

/// What the user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub service: String,
    pub num_edges: u64,
    pub depth: u64,
    /// Every call finishes by this, ms.
    pub latency: u64,
}

/// How a language model is asked for a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoding {
    /// Layer by layer, every token masked to the format and the constraints.
    Constrained,
    /// Layer by layer, the model writes every token; the result is checked.
    Free,
    /// A model of the tabular encoding writes the whole graph; checked.
    Tabular,
    /// Layer by layer as answers to instruction questions (an
    /// instruction-tuned model), the model writing every token; checked.
    Instructed,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot generate {num_edges} edges {depth} deep: a graph needs at least one edge per level")]
    Infeasible { num_edges: u64, depth: u64 },
    #[error("the tokenizer lacks the token {0:?} the format needs")]
    MissingToken(String),
    #[error("generated text does not parse: {0}")]
    Text(#[from] text::TextError),
    #[error("{0:?} decoding needs gent's own tokenizer: this model reads a checkpoint's tokens and decodes freely only")]
    FreeOnly(Decoding),
    #[error("the tokenizer cannot encode the prompt: {0}")]
    Prompt(String),
}

/// Why a generated layer or graph was rejected: the accuracy figures count
/// these, and `gent llm generate` names them.
#[derive(Debug, Clone, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Rejection {
    #[error("the model ended the sequence inside a layer")]
    EndedInLayer,
    #[error("no {closing} within {max_tokens} tokens")]
    Unclosed { closing: &'static str, max_tokens: usize },
    #[error("more layers than requested edges")]
    TooManyLayers,
    #[error("unparsable layer: {0}")]
    Layer(text::TextError),
    #[error("unparsable graph: {0}")]
    Graph(text::TextError),
    #[error(transparent)]
    Violation(#[from] super::validate::Violation),
    #[error(transparent)]
    Constrained(#[from] GenerateError),
}

impl Rejection {
    /// The rule that rejected: the Appendix B constraint for a violation,
    /// else the kind of failure (`unclosed`, `layer`, ...).
    pub fn rule(&self) -> &'static str {
        match self {
            Rejection::Violation(v) => v.into(),
            other => other.into(),
        }
    }
}

/// The one layer a document of generated layer text holds.
fn only_layer(records: &[text::LayerText]) -> Result<Layer, text::TextError> {
    match records.first() {
        Some(r) => r.layer(),
        None => Err(text::TextError { line: 1, column: 1, reason: "no layer".into() }),
    }
}

/// Communication types the constrained decoder allows (those in the dataset).
pub const TYPES: [&str; 5] = ["http", "rpc", "mc", "db", "mq"];

/// Numbers allowed at a choice: a union of inclusive ranges.
#[derive(Debug, Clone)]
struct Allowed(Vec<(u64, u64)>);

impl Allowed {
    fn range(lo: u64, hi: u64) -> Self {
        Allowed(if lo <= hi { vec![(lo, hi)] } else { Vec::new() })
    }
    fn contains(&self, v: u64) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= v && v <= hi)
    }
    /// Whether some allowed number's decimal form starts with `prefix`.
    fn extends(&self, prefix: &str) -> bool {
        // No leading zeros: "0" is only ever the number zero.
        if prefix.starts_with('0') {
            return prefix == "0" && self.contains(0);
        }
        let Ok(p) = prefix.parse::<u64>() else { return false };
        self.0.iter().any(|&(lo, hi)| {
            let (mut min, mut max) = (p, p);
            for _ in prefix.len()..=20 {
                if min > hi {
                    return false;
                }
                if max >= lo {
                    return true;
                }
                min = min.saturating_mul(10);
                max = max.saturating_mul(10).saturating_add(9);
            }
            false
        })
    }
}

/// The five digits of a microservice name the format can write (`MS_57649`).
pub fn microservice_digits(name: &str) -> Option<[u8; 5]> {
    let digits = name.strip_prefix("MS_")?.as_bytes();
    (digits.len() == 5 && digits.iter().all(u8::is_ascii_digit)).then(|| std::array::from_fn(|i| digits[i] - b'0'))
}

/// The microservices a destination may name, in the two ways the tokenizer
/// writes them: one token for an id in its vocabulary, `MS_` and five digit
/// tokens for the others.
#[derive(Debug, Clone, Default)]
struct Destinations {
    /// Ids written as one token: (token, digits).
    whole: Vec<(u32, [u8; 5])>,
    /// Ids spelled digit by digit, sorted.
    spelled: Vec<[u8; 5]>,
    /// No list was given: any five digits may be spelled.
    open: bool,
}

impl Destinations {
    /// Every microservice id the vocabulary holds as a token, and any other
    /// spelled out.
    fn open(tok: &Tokenizer) -> Self {
        let whole = tok
            .tokens()
            .iter()
            .enumerate()
            .filter_map(|(i, t)| microservice_digits(t.strip_prefix(' ')?).map(|d| (i as u32, d)))
            .collect();
        Destinations { whole, spelled: Vec::new(), open: true }
    }

    /// Exactly `names` (those of the `MS_` and five digits form).
    fn known(tok: &Tokenizer, names: &[String]) -> Self {
        let mut d = Destinations::default();
        let mut digits: Vec<[u8; 5]> = names.iter().filter_map(|n| microservice_digits(n)).collect();
        digits.sort_unstable();
        digits.dedup();
        for ms in digits {
            match tok.id(&format!(" {}", microservice_name(&ms))) {
                Some(id) => d.whole.push((id, ms)),
                None => d.spelled.push(ms),
            }
        }
        d
    }

    /// Whether some id must be spelled out.
    fn spells(&self) -> bool {
        self.open || !self.spelled.is_empty()
    }

    /// Whether `name` may be named.
    fn allows(&self, name: &str) -> bool {
        microservice_digits(name)
            .is_some_and(|d| self.open || self.whole.iter().any(|w| w.1 == d) || self.spelled.binary_search(&d).is_ok())
    }
}

/// The smallest run of `weights` (best first) whose share reaches `p`.
fn top_p(mut weights: Vec<f64>, p: f32) -> Vec<f64> {
    if p < 1.0 {
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        if let Some(keep) = weights.iter().position(|w| {
            acc += w / total;
            acc >= f64::from(p)
        }) {
            weights.truncate(keep + 1);
        }
    }
    weights
}

/// One of `allowed` (token ids) under `logits` the `sampling` way: the best
/// at temperature 0, else drawn from the top-k and top-p at its temperature.
pub(crate) fn sample(logits: &[f32], allowed: &[u32], sampling: Sampling, rng: &mut rand::rngs::StdRng) -> u32 {
    if sampling.temperature <= 0.0 {
        return allowed[ranked(logits, allowed, 1.0, None)[0].0];
    }
    let weighted = ranked(logits, allowed, sampling.temperature, Some(sampling));
    allowed[draw(&weighted, rng)]
}

/// The indices of `allowed` (non-empty), best first under `logits` (ties in
/// their order), with weights at `temperature`; with a `cut`, only its top-k
/// and top-p of them.
fn ranked(logits: &[f32], allowed: &[u32], temperature: f32, cut: Option<Sampling>) -> Vec<(usize, f64)> {
    let score = |id: u32| logits.get(id as usize).copied().filter(|v| v.is_finite()).unwrap_or(-1e9);
    let mut order: Vec<(usize, f32)> = allowed.iter().enumerate().map(|(i, &id)| (i, score(id))).collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    if let Some(s) = cut.filter(|s| s.top_k > 0) {
        order.truncate(s.top_k.max(1));
    }
    let top = order[0].1;
    let weights: Vec<f64> = order.iter().map(|&(_, v)| (((v - top) / temperature) as f64).exp()).collect();
    let weights = match cut {
        Some(s) => top_p(weights, s.top_p),
        None => weights,
    };
    order.iter().zip(weights).map(|(&(i, _), w)| (i, w)).collect()
}

/// One index of `weighted` (any scale), drawn with the seeded generator
/// walking them in order.
fn draw(weighted: &[(usize, f64)], rng: &mut rand::rngs::StdRng) -> usize {
    let total: f64 = weighted.iter().map(|x| x.1).sum();
    let mut x = rng.random::<f64>() * total;
    for &(i, w) in weighted {
        if x < w {
            return i;
        }
        x -= w;
    }
    // Rounding left `x` past the end: the last with any weight.
    weighted.iter().rev().find(|x| x.1 > 0.0).or(weighted.last()).map_or(0, |x| x.0)
}

/// `MS_` and the five digits.
fn microservice_name(digits: &[u8; 5]) -> String {
    let mut name = String::from("MS_");
    name.extend(digits.iter().map(|&d| char::from(b'0' + d)));
    name
}

pub struct Generator<'a, M: NextToken> {
    model: &'a mut M,
    tok: &'a Tokenizer,
    sampling: Sampling,
    rng: rand::rngs::StdRng,
    context: Vec<u32>,
    digits: [u32; 10],
    /// The tokens that start a spelled destination (` MS_`).
    spelled_head: Vec<u32>,
    destinations: Destinations,
    /// The calls training made, which destinations and types keep to (none:
    /// any allowed destination, any type).
    calls: Option<&'a KnownCalls>,
    /// How much their counts weigh against the model.
    prior: CallPrior,
    /// The size of the graph being generated, which the prior is near.
    size: Size,
}

impl<'a, M: NextToken> Generator<'a, M> {
    pub fn new(model: &'a mut M, tok: &'a Tokenizer, sampling: Sampling, seed: u64) -> Result<Self, GenerateError> {
        let mut digits = [0; 10];
        for (d, slot) in digits.iter_mut().enumerate() {
            *slot = tok.id(&d.to_string()).ok_or_else(|| GenerateError::MissingToken(d.to_string()))?;
        }
        Ok(Generator {
            model,
            tok,
            sampling,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            context: Vec::new(),
            digits,
            spelled_head: tok.encode(" MS_"),
            destinations: Destinations::open(tok),
            calls: None,
            prior: CallPrior::NONE,
            size: Size { edges: 0, depth: 0 },
        })
    }

    /// Constrained decoding names only these microservices as destinations
    /// (those seen in training; names not of the `MS_` and five digits form
    /// are left out). A tiny model spells ids close to at random; the mask
    /// keeps every call on a real microservice, the model choosing which.
    pub fn known_destinations(mut self, names: &[String]) -> Self {
        self.destinations = Destinations::known(self.tok, names);
        self
    }

    /// Constrained decoding names only calls `calls` holds
    /// ([`KnownCalls`]): a destination the layer's start node called in the
    /// requested service's training graphs (else in any), with a type the
    /// pair was called with. A start node never seen calling, or whose
    /// destinations are all outside [`Generator::known_destinations`], may
    /// call any allowed destination.
    pub fn known_calls(mut self, calls: &'a KnownCalls) -> Self {
        self.calls = (!calls.is_empty()).then_some(calls);
        self
    }

    /// Mixes the known calls' counts into the model's choice of each
    /// destination and type ([`CallPrior`]); nothing without
    /// [`Generator::known_calls`] or where they hold no counts.
    pub fn call_prior(mut self, prior: CallPrior) -> Self {
        self.prior = prior;
        self
    }

    /// The known calls when their counts are mixed in.
    fn prior_calls(&self) -> Option<&'a KnownCalls> {
        self.calls.filter(|_| self.prior.weight > 0.0)
    }

    /// The destinations a call from `source` in a graph of `service` may
    /// name, when the known calls narrow them. With `calling` (the layer's
    /// edges left are as many as the subgraphs it has yet to start), only
    /// those seen calling on, when any was.
    fn narrowed(&self, service: &str, source: &str, calling: bool) -> Option<Destinations> {
        let calls = self.calls?;
        let mut names: Vec<String> =
            calls.destinations(service, source).iter().filter(|n| self.destinations.allows(n)).cloned().collect();
        if calling && names.iter().any(|n| !calls.destinations(service, n).is_empty()) {
            names.retain(|n| !calls.destinations(service, n).is_empty());
        }
        (!names.is_empty()).then(|| Destinations::known(self.tok, &names))
    }

    /// The edges from `lo` to `hi` that may start a subgraph: those whose
    /// destination the known calls show calling, when any does. Any edge in
    /// the range keeps the layer satisfiable, so narrowing it cannot fail.
    fn subgraph_edges(&self, service: &str, edges: &[(u64, String, u64, u64)], lo: u64, hi: u64) -> Allowed {
        let callers: Vec<(u64, u64)> = self.calls.map_or_else(Vec::new, |calls| {
            edges
                .iter()
                .filter(|e| (lo..=hi).contains(&e.0) && !calls.destinations(service, &e.1).is_empty())
                .map(|e| (e.0, e.0))
                .collect()
        });
        if callers.is_empty() { Allowed::range(lo, hi) } else { Allowed(callers) }
    }

    /// A destination for a call from `source` in a graph of `service`; with
    /// `calling`, one that starts a subgraph.
    fn call_destination(&mut self, service: &str, source: &str, calling: bool) -> String {
        let prior: Vec<([u8; 5], f64)> = self.prior_calls().map_or_else(Vec::new, |c| {
            let prior = c.destination_prior(service, source, self.size, self.prior.sharpness);
            prior.into_iter().filter_map(|(name, w)| microservice_digits(name).map(|d| (d, w))).collect()
        });
        let ms = match self.narrowed(service, source, calling) {
            Some(narrowed) => {
                let all = std::mem::replace(&mut self.destinations, narrowed);
                let ms = self.destination(&prior);
                self.destinations = all;
                ms
            }
            None => self.destination(&prior),
        };
        microservice_name(&ms)
    }

    /// The call's type: one `source` called `destination` with, when known.
    fn call_kind(&mut self, service: &str, source: &str, destination: &str) -> String {
        let known = self.calls.map_or(&[][..], |c| c.kinds(source, destination));
        let kinds: Vec<&str> = TYPES.iter().copied().filter(|t| known.iter().any(|k| k == t)).collect();
        let prior = self
            .prior_calls()
            .map_or_else(Vec::new, |c| c.kind_prior((service, source), destination, self.size, self.prior.sharpness));
        self.word_mixed(if kinds.is_empty() { &TYPES[..] } else { &kinds[..] }, &prior)
    }

    /// Writes a destination, ` MS_` and five digits, as one id token or
    /// spelled out: the model chooses among every allowed id token and, when
    /// some allowed id has none, the spelled form's first token. `prior`
    /// (any order, possibly naming ids not allowed) is mixed in.
    fn destination(&mut self, prior: &[([u8; 5], f64)]) -> [u8; 5] {
        let of = |ms: &[u8; 5]| prior.iter().filter(|(d, _)| d == ms).map(|(_, w)| w).sum::<f64>();
        let mut options: Vec<u32> = self.destinations.whole.iter().map(|&(id, _)| id).collect();
        let mut weights: Vec<f64> = self.destinations.whole.iter().map(|(_, ms)| of(ms)).collect();
        let head = self.spelled_head.first().copied();
        let spell = self.destinations.spells() || options.is_empty();
        if spell && let Some(h) = head {
            options.push(h);
            weights.push(self.destinations.spelled.iter().map(of).sum());
        }
        let pick = if options.is_empty() { None } else { Some(self.choose_mixed(&options, &weights)) };
        if let Some(&(id, ms)) = self.destinations.whole.iter().find(|(id, _)| Some(*id) == pick) {
            self.context.push(id);
            return ms;
        }
        self.context.extend_from_slice(&self.spelled_head);
        let mut ms = [0u8; 5];
        for i in 0..5 {
            let options = self.destination_digits(&ms[..i]);
            // The prior of a digit: that of the spelled ids it leads to.
            let weights: Vec<f64> = options
                .iter()
                .map(|&t| {
                    let d = self.digits.iter().position(|&id| id == t).unwrap_or(0) as u8;
                    prior.iter().filter(|(p, _)| p[..i] == ms[..i] && p[i] == d).map(|(_, w)| w).sum()
                })
                .collect();
            let pick = self.choose_mixed(&options, &weights);
            self.context.push(pick);
            ms[i] = self.digits.iter().position(|&d| d == pick).unwrap_or(0) as u8;
        }
        ms
    }

    /// The digit tokens that continue `prefix` towards a spelled destination.
    fn destination_digits(&self, prefix: &[u8]) -> Vec<u32> {
        let spelled = &self.destinations.spelled;
        if self.destinations.open || spelled.is_empty() {
            return self.digits.to_vec();
        }
        let mut seen = [false; 10];
        // Sorted: the names sharing the prefix are one run.
        let start = spelled.partition_point(|d| d[..prefix.len()] < *prefix);
        for d in spelled[start..].iter().take_while(|d| d[..prefix.len()] == *prefix) {
            seen[d[prefix.len()] as usize] = true;
        }
        (0..10).filter(|&i| seen[i]).map(|i| self.digits[i]).collect()
    }

    fn force(&mut self, text: &str) {
        let ids = self.tok.encode(text);
        self.context.extend(ids);
    }

    /// Picks one of `allowed` (token ids) with the model's scores.
    fn choose(&mut self, allowed: &[u32]) -> u32 {
        if allowed.len() == 1 {
            return allowed[0];
        }
        let logits = self.model.logits(&self.context);
        sample(&logits, allowed, self.sampling, &mut self.rng)
    }

    /// Picks one of `allowed` with the model's scores mixed with `prior`
    /// (aligned with `allowed`, any scale) at [`CallPrior::weight`]; the
    /// model alone when `prior` is empty or all zero.
    fn choose_mixed(&mut self, allowed: &[u32], prior: &[f64]) -> u32 {
        if allowed.len() == 1 {
            return allowed[0];
        }
        let w = self.prior.weight.clamp(0.0, 1.0);
        let prior_total: f64 = prior.iter().sum();
        if !(w > 0.0 && prior.len() == allowed.len() && prior_total > 0.0 && prior_total.is_finite()) {
            return self.choose(allowed);
        }
        // The prior alone needs no model step.
        let model = (w < 1.0).then(|| self.model_probabilities(allowed));
        let mut p: Vec<(usize, f64)> = prior
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let q = q / prior_total;
                (i, model.as_ref().map_or(q, |m| q.powf(w) * m[i].powf(1.0 - w)))
            })
            .collect();
        if !(p.iter().map(|x| x.1).sum::<f64>() > 0.0) {
            // The model ruled out all the prior holds (top-k, top-p): the prior.
            p = prior.iter().enumerate().map(|(i, q)| (i, q / prior_total)).collect();
        }
        if self.sampling.temperature <= 0.0 {
            let best = p.iter().max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0))).map_or(0, |x| x.0);
            return allowed[best];
        }
        allowed[self.draw(&p)]
    }

    /// The indices of `allowed`, best first (ties in their order), with the
    /// model's weights at `temperature`; with `cut`, only the sampling's top-k
    /// and top-p of them.
    fn ranked(&mut self, allowed: &[u32], temperature: f32, cut: bool) -> Vec<(usize, f64)> {
        let logits = self.model.logits(&self.context);
        ranked(&logits, allowed, temperature, cut.then_some(self.sampling))
    }

    fn draw(&mut self, weighted: &[(usize, f64)]) -> usize {
        draw(weighted, &mut self.rng)
    }

    /// The model's probability of each of `allowed` (aligned), after
    /// temperature, top-k and top-p; greedy decoding takes the plain
    /// softmax, so a prior can still outweigh the model's best.
    fn model_probabilities(&mut self, allowed: &[u32]) -> Vec<f64> {
        let t = self.sampling.temperature;
        let ranked = if t > 0.0 { self.ranked(allowed, t, true) } else { self.ranked(allowed, 1.0, false) };
        let total: f64 = ranked.iter().map(|x| x.1).sum();
        let mut p = vec![0.0; allowed.len()];
        for (i, w) in ranked {
            p[i] = w / total;
        }
        p
    }

    /// A number from `allowed`, digit by digit; the number ends when the model
    /// picks `end` (the format's next token, written here) or no digit fits.
    fn number(&mut self, allowed: &Allowed, end: &str) -> u64 {
        self.number_mixed(allowed, end, &[])
    }

    /// [`Generator::number`] with `prior` (by value, any order) mixed into
    /// each digit: a digit's prior is that of the allowed values it leads to,
    /// the end's that of the number written so far.
    fn number_mixed(&mut self, allowed: &Allowed, end: &str, prior: &[(u64, f64)]) -> u64 {
        let end_ids = self.tok.encode(end);
        let prior: Vec<(String, f64)> =
            prior.iter().filter(|(v, _)| allowed.contains(*v)).map(|(v, w)| (v.to_string(), *w)).collect();
        let mut prefix = String::new();
        loop {
            let digits: Vec<usize> = (0..10).filter(|d| allowed.extends(&format!("{prefix}{d}"))).collect();
            let mut options: Vec<u32> = digits.iter().map(|&d| self.digits[d]).collect();
            let mut weights: Vec<f64> = digits
                .iter()
                .map(|d| {
                    let next = format!("{prefix}{d}");
                    prior.iter().filter(|(v, _)| v.starts_with(&next)).map(|(_, w)| w).sum()
                })
                .collect();
            let value = prefix.parse::<u64>().ok();
            let can_end = value.is_some_and(|v| allowed.contains(v));
            if can_end && !end_ids.is_empty() {
                options.push(end_ids[0]);
                weights.push(prior.iter().filter(|(v, _)| *v == prefix).map(|(_, w)| w).sum());
            }
            if options.is_empty() {
                // Unreachable for a non-empty range: every prefix offered extends.
                break;
            }
            let pick = self.choose_mixed(&options, &weights);
            if can_end && pick == end_ids[0] {
                break;
            }
            let d = self.digits.iter().position(|&id| id == pick).unwrap_or(0);
            prefix.push(char::from(b'0' + d as u8));
            self.context.push(pick);
        }
        self.context.extend(end_ids);
        prefix.parse().unwrap_or(0)
    }

    /// One of `words` (each written with a leading space, e.g. " http"), the
    /// model's choice mixed with `prior` (by word, any order; words it lacks
    /// have none).
    fn word_mixed(&mut self, words: &[&str], prior: &[(&str, f64)]) -> String {
        let ids: Vec<(u32, &str)> = words.iter().filter_map(|w| self.tok.id(&format!(" {w}")).map(|id| (id, *w))).collect();
        if ids.is_empty() {
            // The vocabulary lacks them as words: take the first, spelled out.
            self.force(&format!(" {}", words[0]));
            return words[0].to_string();
        }
        let options: Vec<u32> = ids.iter().map(|(id, _)| *id).collect();
        let weights: Vec<f64> = ids.iter().map(|(_, w)| prior.iter().filter(|(p, _)| p == w).map(|(_, q)| q).sum()).collect();
        let pick = self.choose_mixed(&options, &weights);
        self.context.push(pick);
        ids.iter().find(|(id, _)| *id == pick).map_or(words[0], |(_, w)| w).to_string()
    }

    /// Generates one layer under `c` (every field set) and returns its text:
    /// the conditions line, the layer's own edges, then the subgraphs that
    /// share out the edges left.
    fn layer(&mut self, c: &LayerConditions, first: bool, request: &Request) -> String {
        self.context.clear();
        self.size = Size { edges: request.num_edges, depth: request.depth };
        let shape = Shape {
            n: c.num_edges.unwrap_or(1),
            rd: c.remaining_depth.unwrap_or(0),
            latency: c.latency.unwrap_or(request.latency),
            start_at: c.start_communication_at.unwrap_or(0),
            start_id: c.start_edge_id.unwrap_or(if first { 0 } else { 1 }),
        };
        let mut out = String::new();
        let (k, ns) = self.layer_conditions(c, first, request, &shape, &mut out);
        let source = c.start_node.as_deref().unwrap_or("USER");
        let edges = self.layer_edges((k, ns), &shape, (&request.service, source), &mut out);
        self.layer_subgraphs(c, request, &shape, (k, ns), &edges, &mut out);
        self.force("</layer>\n");
        out.push_str("</layer>\n");
        out
    }

    /// The layer's conditions line; its own edge and subgraph counts.
    fn layer_conditions(
        &mut self,
        c: &LayerConditions,
        first: bool,
        request: &Request,
        shape: &Shape,
        out: &mut String,
    ) -> (u64, u64) {
        let Shape { n, rd, latency, start_at, .. } = *shape;
        // The conditions line: given in full for a subgraph; for the first
        // layer the request, then the model picks the layer's own counts.
        if first {
            let head = format!(
                "[GENERATE GRAPH]id:{}/num_edges:{n}/remaining_depth:{rd}/start_node:USER/start_edge_id:0/start_communication_at:{start_at}/latency:{latency}/num_current_edges:",
                request.service
            );
            self.force(&head);
            let k = if rd == 0 {
                self.number(&Allowed::range(n, n), "/")
            } else {
                let prior = self
                    .prior_calls()
                    .map_or_else(Vec::new, |c| c.own_prior((&request.service, "USER"), n, self.size, self.prior.sharpness));
                self.number_mixed(&Allowed::range(1, n - rd), "/", &prior)
            };
            self.force("num_subgraphs:");
            let ns = if rd == 0 {
                self.number(&Allowed::range(0, 0), "\n")
            } else {
                self.number(&Allowed::range(1, k.min(n - k - rd + 1)), "\n")
            };
            out.push_str(&head);
            out.push_str(&format!("{k}/num_subgraphs:{ns}\n"));
            (k, ns)
        } else {
            let mut line = String::new();
            Conditions::from_layer(c, &CANONICAL).write(&mut line);
            line.push('\n');
            self.force(&line);
            out.push_str(&line);
            (c.num_current_edges.unwrap_or(n), c.num_subgraphs.unwrap_or(0))
        }
    }

    /// The layer's `k` edges, each to a microservice the model may name.
    fn layer_edges(
        &mut self,
        (k, ns): (u64, u64),
        shape: &Shape,
        (service, source): (&str, &str),
        out: &mut String,
    ) -> Vec<(u64, String, u64, u64)> {
        let Shape { latency, start_at, start_id, .. } = *shape;
        self.force("<layer>\n<edges>\n");
        out.push_str("<layer>\n<edges>\n");
        let mut edges = Vec::with_capacity(k as usize);
        // Subgraphs start at destinations that call on: once the edges left
        // are as many as the subgraphs still without one, each must.
        let mut calling = 0;
        for i in 0..k {
            let id = start_id + i;
            self.force(&format!("(edge_id is {id},destination is"));
            let ms = self.call_destination(service, source, k - i <= ns.saturating_sub(calling));
            if self.calls.is_some_and(|c| !c.destinations(service, &ms).is_empty()) {
                calling += 1;
            }
            let mut line = format!("(edge_id is {id},destination is {ms}");
            self.force(",type is");
            let kind = self.call_kind(service, source, &ms);
            self.force(",communication starts at ");
            // The first call starts at start_communication_at; the others within the latency.
            let start = if i == 0 {
                self.number(&Allowed::range(start_at, start_at), " milliseconds")
            } else {
                self.number(&Allowed::range(start_at, latency), " milliseconds")
            };
            self.force(",communication finishes at ");
            let finish = self.number(&Allowed::range(start, latency), " milliseconds");
            self.force(")\n");
            line.push_str(&format!(
                ",type is {kind},communication starts at {start} milliseconds,communication finishes at {finish} milliseconds)\n"
            ));
            out.push_str(&line);
            edges.push((id, ms, start, finish));
        }
        self.force("</edges>\n");
        out.push_str("</edges>\n");
        edges
    }

    /// The subgraphs of the layer's edges: their budgets add up to the edges
    /// left, and one of them reaches the remaining depth.
    fn layer_subgraphs(
        &mut self,
        c: &LayerConditions,
        request: &Request,
        shape: &Shape,
        (k, ns): (u64, u64),
        edges: &[(u64, String, u64, u64)],
        out: &mut String,
    ) {
        let Shape { n, rd, latency, start_id, .. } = *shape;
        // Subgraphs share out the remaining edges; one of them reaches the
        // remaining depth.
        let mut left = n - k;
        let mut deep_done = rd == 0;
        let mut last_edge: Option<u64> = None;
        for j in 0..ns {
            let after = ns - j - 1;
            let hi_edge = start_id + k - 1 - after;
            let lo_edge = last_edge.map_or(start_id, |e| e + 1);
            self.force("<subgraph of edge_id ");
            let edge = self.number(&self.subgraph_edges(&request.service, edges, lo_edge, hi_edge), ">");
            last_edge = Some(edge);
            let parent = edges.iter().find(|e| e.0 == edge).cloned().unwrap_or((edge, String::new(), 0, latency));
            // Budgets add up to the remaining edges exactly: the last takes
            // what is left. Until one subgraph reaches the remaining depth
            // (rd - 1 below, so at least rd edges), the budgets keep room for it.
            let budget = if after == 0 {
                Allowed::range(left, left)
            } else if deep_done {
                Allowed::range(1, left - after)
            } else {
                let mut a = Allowed::range(1, (left + 1).saturating_sub(rd + after));
                a.0.extend(Allowed::range(rd, left - after).0);
                a
            };
            let head = format!(
                "id:{}/start_node:{}/caller:{}/start_edge_id:1/num_edges:",
                request.service,
                parent.1,
                c.start_node.clone().unwrap_or_else(|| "USER".into())
            );
            self.force(&head);
            let prior = self
                .prior_calls()
                .map_or_else(Vec::new, |c| c.subtree_prior(&request.service, &parent.1, self.size, self.prior.sharpness));
            let b = self.number_mixed(&budget, "/", &prior);
            self.force("remaining_depth:");
            let must_be_deep = !deep_done && (after == 0 || left - b + 1 < rd + after);
            let r = if must_be_deep {
                self.number(&Allowed::range(rd - 1, rd - 1), "/")
            } else {
                self.number(&Allowed::range(0, (rd - 1).min(b - 1)), "/")
            };
            deep_done |= r + 1 == rd;
            self.force("num_current_edges:");
            let cur = if r == 0 {
                self.number(&Allowed::range(b, b), "/")
            } else {
                let prior = self
                    .prior_calls()
                    .map_or_else(Vec::new, |c| c.own_prior((&request.service, &parent.1), b, self.size, self.prior.sharpness));
                self.number_mixed(&Allowed::range(1, b - r), "/", &prior)
            };
            self.force("num_subgraphs:");
            let sub_ns = if r == 0 {
                self.number(&Allowed::range(0, 0), "/")
            } else {
                self.number(&Allowed::range(1, cur.min(b - cur - r + 1)), "/")
            };
            self.force("latency:");
            let lat = self.number(&Allowed::range(parent.2, parent.3), "/");
            self.force("start_communication_at:");
            let sc = self.number(&Allowed::range(parent.2, lat), "</subgraph>\n");
            out.push_str(&format!(
                "<subgraph of edge_id {edge}>{head}{b}/remaining_depth:{r}/num_current_edges:{cur}/num_subgraphs:{sub_ns}/latency:{lat}/start_communication_at:{sc}</subgraph>\n"
            ));
            left -= b;
        }
    }

    /// Samples one layer freely after `prompt` until `</layer>`; `Err` when
    /// none comes within `max_tokens` or the model ends the sequence.
    fn free_layer(&mut self, prompt: &str, max_tokens: usize) -> FreeLayer {
        self.context.clear();
        self.context.push(super::tokenizer::BOS);
        self.force(prompt);
        let all: Vec<u32> = (0..self.tok.len() as u32).collect();
        let mut out = String::from(prompt);
        for _ in 0..max_tokens {
            let pick = self.choose(&all);
            if pick == super::tokenizer::EOS {
                return Err((Rejection::EndedInLayer, out));
            }
            self.context.push(pick);
            out.push_str(&self.tok.decode(&[pick]));
            if out.ends_with("</layer>\n") || out.ends_with("</layer>") {
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                return Ok(out);
            }
        }
        Err((Rejection::Unclosed { closing: "</layer>", max_tokens }, out))
    }

    /// Generates a graph without constraints: the model writes every token,
    /// and the result is checked (the paper's setting, for accuracy figures).
    pub fn graph_free(&mut self, request: &Request, max_tokens_per_layer: usize) -> Outcome {
        self.recursive_free(request, None, max_tokens_per_layer)
    }

    /// As [`Generator::graph_free`] for an instruction-tuned model: every
    /// layer is asked as a question in the instruction encoding (its
    /// conditions, the template constraints, and `user` where it applies —
    /// a latency instruction on the first layer, an edge instruction on the
    /// layers its source starts), and the model answers with the layer and
    /// its reasoning.
    pub fn graph_instructed(&mut self, request: &Request, user: &UserInstruction, max_tokens_per_layer: usize) -> Outcome {
        self.recursive_free(request, Some(user), max_tokens_per_layer)
    }

    /// The recursive driver without constraints, in the layer encoding
    /// (`user` none) or the instruction encoding.
    fn recursive_free(&mut self, request: &Request, user: Option<&UserInstruction>, max_tokens_per_layer: usize) -> Outcome {
        recursive_free(request, user, |prompt| self.free_layer(prompt, max_tokens_per_layer))
    }

    /// One layer under conditions `c`, asked as a question with `user` (or
    /// none) to an instruction-tuned model: the layer, or why it failed.
    pub fn layer_instructed(
        &mut self,
        c: &LayerConditions,
        user: Option<&UserInstruction>,
        max_tokens: usize,
    ) -> Result<Layer, Rejection> {
        let first = c.start_node.as_deref() == Some("USER");
        let t = self.free_layer(&question_text(c, first, user), max_tokens).map_err(|(reason, _)| reason)?;
        let layer = parse_answer(&t).map_err(Rejection::Layer)?;
        match super::validate::layer(&layer).into_iter().next() {
            Some(v) => Err(v.into()),
            None => Ok(layer),
        }
    }

    /// One graph for `request` the `decoding` way (`max_tokens`: per layer,
    /// or per graph for the tabular encoding).
    pub fn run(&mut self, request: &Request, decoding: Decoding, max_tokens: usize) -> Outcome {
        match decoding {
            Decoding::Constrained => match self.graph(request) {
                Ok(g) => Outcome::Valid(g),
                Err(e) => Outcome::Invalid { reason: e.into(), text: String::new() },
            },
            Decoding::Free => self.graph_free(request, max_tokens),
            Decoding::Instructed => self.graph_instructed(request, &UserInstruction::Distributions, max_tokens),
            Decoding::Tabular => self.tabular_free(request, max_tokens),
        }
    }

    /// Generates a graph in one go in the tabular encoding (the non-recursive
    /// baseline, §5.1): after the record head with the request's conditions,
    /// the model writes every edge until `</edges>`; the result is checked.
    pub fn tabular_free(&mut self, request: &Request, max_tokens: usize) -> Outcome {
        let head = format!(
            "[GENERATE GRAPH]id:{}/num_edges:{}/depth:{}/latency:{}\n<edges>\n",
            request.service, request.num_edges, request.depth, request.latency
        );
        self.context.clear();
        self.context.push(super::tokenizer::BOS);
        self.force(&head);
        let all: Vec<u32> = (0..self.tok.len() as u32).collect();
        let mut out = head;
        let invalid = |reason: Rejection, text: &str| Outcome::Invalid { reason, text: text.to_string() };
        let mut closed = false;
        for _ in 0..max_tokens {
            let pick = self.choose(&all);
            if pick == super::tokenizer::EOS {
                break;
            }
            self.context.push(pick);
            out.push_str(&self.tok.decode(&[pick]));
            if out.ends_with("</edges>") {
                out.push('\n');
                closed = true;
                break;
            }
        }
        if !closed {
            return invalid(Rejection::Unclosed { closing: "</edges>", max_tokens }, &out);
        }
        let graph = match text::parse_tabular(&out).and_then(|d| match d.records.first() {
            Some(r) => r.graph(),
            None => Err(text::TextError { line: 1, column: 1, reason: "no record".into() }),
        }) {
            Ok(g) => g,
            Err(e) => return invalid(Rejection::Graph(e), &out),
        };
        let asked = super::validate::Requested {
            num_edges: Some(request.num_edges),
            depth: Some(request.depth),
            latency: Some(request.latency),
        };
        let violations = super::validate::graph(&graph, &asked);
        let layer_violation = graph.layers().iter().find_map(|l| super::validate::layer(l).into_iter().next());
        match violations.into_iter().next().or(layer_violation) {
            Some(v) => invalid(v.into(), &out),
            None => Outcome::Valid(Generated { graph, layers: Vec::new(), text: out }),
        }
    }

    /// Generates a whole graph for `request`.
    pub fn graph(&mut self, request: &Request) -> Result<Generated, GenerateError> {
        if request.depth == 0 || request.num_edges < request.depth {
            return Err(GenerateError::Infeasible { num_edges: request.num_edges, depth: request.depth });
        }
        let first = LayerConditions {
            id: Some(request.service.clone()),
            start_node: Some("USER".into()),
            caller: None,
            num_edges: Some(request.num_edges),
            num_current_edges: None,
            num_subgraphs: None,
            remaining_depth: Some(request.depth - 1),
            start_edge_id: Some(0),
            start_communication_at: Some(0),
            latency: Some(request.latency),
        };
        let mut all_text = String::new();
        let mut layers = Vec::new();
        let mut edges: Vec<Edge> = Vec::new();
        // Depth-first: (conditions, the full id of the edge this layer extends).
        let mut stack: Vec<(LayerConditions, EdgeId, bool)> = vec![(first, Vec::new(), true)];
        while let Some((c, prefix, is_first)) = stack.pop() {
            let t = self.layer(&c, is_first, request);
            let record = if is_first { t.clone() } else { format!("[GENERATE GRAPH]{t}") };
            let layer: Layer = text::parse_layers(&record)?.records[0].0[0].layer()?;
            all_text.push_str(&t);
            layers.push(layer.clone());
            for (id, sub) in attach(&prefix, &layer, &mut edges) {
                stack.push((sub, id, false));
            }
        }
        edges.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Generated { graph: CallGraph { service: request.service.clone(), edges }, layers, text: all_text })
    }
}

/// A layer written freely: its text (the prompt first), or why the model
/// stopped and what it had written by then, which the rejected graph's text
/// ends with (`gent llm generate` logs it at debug level).
pub(crate) type FreeLayer = Result<String, (Rejection, String)>;

/// The recursive driver without constraints, in the layer encoding (`user`
/// none) or the instruction encoding: `write` is the model writing one layer
/// freely after a prompt (the layer's conditions, or its question), and
/// every layer and the whole graph are checked.
pub(crate) fn recursive_free(
    request: &Request,
    user: Option<&UserInstruction>,
    mut write: impl FnMut(&str) -> FreeLayer,
) -> Outcome {
    let mut all_text = String::new();
    let invalid = |reason: Rejection, text: &str| Outcome::Invalid { reason, text: text.to_string() };
    let first = LayerConditions {
        id: Some(request.service.clone()),
        num_edges: Some(request.num_edges),
        remaining_depth: Some(request.depth.saturating_sub(1)),
        start_node: Some("USER".into()),
        start_edge_id: Some(0),
        start_communication_at: Some(0),
        latency: Some(request.latency),
        ..LayerConditions::default()
    };
    let mut stack: Vec<(LayerConditions, EdgeId, bool)> = vec![(first, Vec::new(), true)];
    let (mut layers, mut edges) = (Vec::new(), Vec::new());
    while let Some((c, prefix, is_first)) = stack.pop() {
        if layers.len() as u64 >= request.num_edges.max(1) {
            return invalid(Rejection::TooManyLayers, &all_text);
        }
        let prompt = match user {
            None => {
                let mut line = String::from(if is_first { text::GENERATE } else { "" });
                Conditions::from_layer(&c, if is_first { &FIRST } else { &CANONICAL }).write(&mut line);
                line.push('\n');
                line
            }
            Some(u) => {
                let applies = match u {
                    UserInstruction::IncludeEdge { source, .. } => c.start_node.as_deref() == Some(source.as_str()),
                    _ => is_first,
                };
                question_text(&c, is_first, applies.then_some(u))
            }
        };
        let t = match write(&prompt) {
            Ok(t) => t,
            Err((reason, partial)) => return invalid(reason, &(all_text + &partial)),
        };
        all_text.push_str(&t);
        let parsed = match user {
            None => text::parse_layers(&if is_first { t.clone() } else { format!("{}{t}", text::GENERATE) })
                .and_then(|d| only_layer(d.records.first().map_or(&[], |r| r.0.as_slice()))),
            Some(_) => parse_answer(&t),
        };
        let layer = match parsed {
            Ok(l) => l,
            Err(e) => return invalid(Rejection::Layer(e), &all_text),
        };
        if let Some(v) = super::validate::layer(&layer).into_iter().next() {
            return invalid(v.into(), &all_text);
        }
        for (id, sub) in attach(&prefix, &layer, &mut edges) {
            stack.push((sub, id, false));
        }
        layers.push(layer);
    }
    edges.sort_by(|a, b| a.id.cmp(&b.id));
    let graph = CallGraph { service: request.service.clone(), edges };
    let asked = super::validate::Requested {
        num_edges: Some(request.num_edges),
        depth: Some(request.depth),
        latency: Some(request.latency),
    };
    if let Some(v) = super::validate::graph(&graph, &asked).into_iter().next() {
        return invalid(v.into(), &all_text);
    }
    Outcome::Valid(Generated { graph, layers, text: all_text })
}

/// Adds `layer`'s edges under `prefix` (the full id of the edge it extends) to
/// `edges`, and returns its subgraphs with the full ids of their edges, last
/// first, ready to push on the depth-first stack.
fn attach(prefix: &[u32], layer: &Layer, edges: &mut Vec<Edge>) -> Vec<(EdgeId, LayerConditions)> {
    let full = |local: u32| -> EdgeId { prefix.iter().copied().chain([local]).collect() };
    edges.extend(layer.edges.iter().map(|e| Edge { id: full(e.id[0]), ..e.clone() }));
    layer.subgraphs.iter().rev().map(|(edge, sub)| (full(*edge as u32), sub.clone())).collect()
}

/// What asks a language model for whole graphs: a [`Generator`] over gent's
/// tokenizer, or a checkpoint fine-tuned with its own
/// ([`super::finetuned::FreeWriter`]). `gent llm eval` scores either.
pub trait WritesGraphs {
    /// One graph for `request` the `decoding` way (`max_tokens`: per layer,
    /// or per graph for the tabular encoding).
    fn run(&mut self, request: &Request, decoding: Decoding, max_tokens: usize) -> Outcome;
}

impl<M: NextToken> WritesGraphs for Generator<'_, M> {
    fn run(&mut self, request: &Request, decoding: Decoding, max_tokens: usize) -> Outcome {
        Generator::run(self, request, decoding, max_tokens)
    }
}

/// How an unconstrained generation ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Valid(Generated),
    /// The model wrote something unparsable or a layer or graph that breaks a
    /// constraint or the request.
    Invalid {
        reason: Rejection,
        text: String,
    },
}

/// A generated graph, its layers as generated (conditions included), and
/// their text in the recursive layer encoding.
#[derive(Debug, Clone)]
pub struct Generated {
    pub graph: CallGraph,
    pub layers: Vec<Layer>,
    pub text: String,
}

/// The instruction question for a layer under `c`.
fn question_text(c: &LayerConditions, first: bool, user: Option<&UserInstruction>) -> String {
    let mut q = String::new();
    instruct::question(c, if first { &FIRST } else { &CANONICAL }, user).write_question(&mut q);
    q
}

/// Order of the first layer's conditions in a free prompt (the request).
const FIRST: [&str; 7] =
    ["id", "num_edges", "remaining_depth", "start_node", "start_edge_id", "start_communication_at", "latency"];

/// Order of a subgraph's conditions as the constrained decoder writes them.
const CANONICAL: [&str; 10] = [
    "id",
    "start_node",
    "caller",
    "start_edge_id",
    "num_edges",
    "remaining_depth",
    "num_current_edges",
    "num_subgraphs",
    "latency",
    "start_communication_at",
];

/// The layer an instruction-tuned model's answer holds.
fn parse_answer(t: &str) -> Result<Layer, text::TextError> {
    match text::parse_instructions(t)?.records.first() {
        Some(r) => r.answer.layer(),
        None => Err(text::TextError { line: 1, column: 1, reason: "no answer".into() }),
    }
}
