//! `gent llm`: TraceLLM, call graphs written layer by layer by a language
//! model. `split` and `train` prepare it, `generate` asks it for graphs,
//! `eval` sets it beside the tabular, probabilistic and retrieval baselines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use serde::Serialize;

use gent::io::{self, OutputFormat};
use gent::llm::eval::{self as lm_eval, Cell, Following, SizeBand};
use gent::llm::finetuned::{self, FineTuning, Finetuned};
use gent::llm::generate::{self, Decoding, Generator, Outcome, WritesGraphs};
use gent::llm::instruct::{Facts, UserInstruction};
use gent::llm::model::{self, Encoding, LanguageModel};
use gent::llm::pretrained::{Candidate, Pretrained};
use gent::llm::{CallGraph, batch, infill, text};
use gent::nn::Backend;
use gent::nn::lm::{LmConfig, LmError, LoraConfig, RopeScaling, TrainConfig};

use super::args::{JsonArg, read_file, read_text};
use super::{Failure, device, report, write};

#[derive(Subcommand)]
pub enum LlmCommand {
    /// Pre-train a language model on call graphs (tabular Alibaba text) in the
    /// recursive layer encoding, and write it.
    Train(TrainArgs),
    /// Split call graphs (tabular text) into a training file and a held-back
    /// file for evaluation, by a seeded shuffle.
    Split(SplitArgs),
    /// Accuracy over a grid of requests and similarity to real call graphs,
    /// for each method given, side by side.
    Eval(EvalArgs),
    /// Generate call graphs layer by layer from conditions.
    Generate(GenerateArgs),
    /// Load a pretrained Llama, Mistral or Qwen2 checkpoint (Hugging Face
    /// layout: config.json, model.safetensors or its shards, tokenizer.json)
    /// and show what it predicts after a prompt.
    Checkpoint(CheckpointArgs),
    /// The paper's prediction task (§5.4): from a call graph's first edges,
    /// will an uncommon call follow? A classification head is trained on the
    /// frozen model's features of the training graphs and scored on the
    /// held-back ones, beside the majority class and a head on token counts.
    Predict(PredictArgs),
    /// The paper's infilling tasks (§5.4): a layer with one edge's call type
    /// or destination `[MISSING]` (`--task attribute`), or a layer and one of
    /// its child layers with the edge between them `[MISSING]` (`--task
    /// edge`). The model is fine-tuned on questions from the training graphs
    /// and answers those of the held-back graphs, beside the most frequent
    /// values for the edge's source.
    Infill(InfillArgs),
    /// Rewrite a model file with the calls of its training graphs counted as
    /// this gent counts them (by graph size and by node shape), keeping its
    /// network: a file from an older gent then gets the priors of this one
    /// without training again.
    Recount(RecountArgs),
}

#[derive(clap::Args)]
pub struct RecountArgs {
    /// Model file from `gent llm train`.
    model: PathBuf,
    /// The graphs the model trained on (tabular text, one or more files).
    #[arg(long, required = true, num_args = 1..)]
    train: Vec<PathBuf>,
    /// Where to write the model file (may be the input).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct InfillArgs {
    /// Layer-encoding model file from `gent llm train`.
    model: PathBuf,
    /// The graphs the model trained on (tabular text): tuning questions and
    /// the baseline's counts come from them.
    #[arg(long, required = true, num_args = 1..)]
    train: Vec<PathBuf>,
    /// Held-back graphs (tabular text) the questions are asked about.
    #[arg(long, required = true, num_args = 1..)]
    real: Vec<PathBuf>,
    /// What is missing: one attribute of an edge (type or destination), or
    /// the edge between a layer and one of its child layers.
    #[arg(long, value_enum, default_value = "attribute")]
    task: InfillTask,
    /// Tuning questions (the paper: 1,200 for attributes, 1,000 for edges).
    #[arg(long, default_value_t = 1200)]
    questions: usize,
    /// Held-back questions asked.
    #[arg(long, default_value_t = 500)]
    test_questions: usize,
    /// Tuning steps.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    /// LoRA rank on the query and key projections (the paper: 8). 0, the
    /// default, tunes every weight: adapters on the attention of a CPU-sized
    /// model cannot learn the task (BENCHMARKS.md "Downstream tasks").
    #[arg(long, default_value_t = 0)]
    lora_rank: usize,
    /// Write the tuned model here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    /// Layer-encoding model file from `gent llm train`.
    model: PathBuf,
    /// The graphs the model trained on (tabular text): the head trains on
    /// them, and they decide which calls are uncommon.
    #[arg(long, required = true, num_args = 1..)]
    train: Vec<PathBuf>,
    /// Held-back graphs (tabular text) the head is scored on.
    #[arg(long, required = true, num_args = 1..)]
    real: Vec<PathBuf>,
    /// Gradient steps of the head.
    #[arg(long, default_value_t = 500)]
    head_steps: usize,
    /// Which calls are uncommon: `graphs`, in under 10 % of the training
    /// graphs (the paper's words); `source`, in under 10 % of the graphs where
    /// their source calls anything (the instruction-tuning definition).
    #[arg(long, value_enum, default_value_t)]
    uncommon: gent::llm::predict::Rarity,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
pub struct CheckpointArgs {
    /// The checkpoint's directory.
    dir: PathBuf,
    /// Text to continue.
    #[arg(long)]
    prompt: String,
    /// How many likely next tokens to list.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Tokens to generate after the prompt, each the likeliest.
    #[arg(long, default_value_t = 0)]
    generate: usize,
    /// Also print the logits after every prompt position (for comparing with
    /// another implementation).
    #[arg(long)]
    logits: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Call-graph files in the tabular encoding (e.g. ../shared/data/alibaba/callgraphs_train.txt).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Model file to write.
    #[arg(long)]
    out: PathBuf,
    /// Model size: tiny (~0.1 M parameters), small (~5 M), base (~30 M, for a GPU).
    #[arg(long, value_enum, default_value = "tiny")]
    size: LmSize,
    /// layers: TraceLLM's recursive layer encoding; tabular: whole graphs in
    /// one sequence (the paper's non-recursive baseline).
    #[arg(long, value_enum, default_value = "layers")]
    encoding: LmEncoding,
    /// Optimiser steps.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Sequences (layers) per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Peak learning rate (warm-up, then cosine decay): 3e-3 for a new
    /// model, 3e-4 with --from (the paper's, for a pretrained model).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Start from this pretrained Llama, Mistral or Qwen2 checkpoint (Hugging Face layout:
    /// config.json, model.safetensors or its shards, tokenizer.json, as `gent
    /// llm checkpoint` reads) and fine-tune it on the graphs' layer text
    /// through its own tokenizer: every weight, or LoRA adapters with
    /// --lora-rank. The model decodes freely only: constrained decoding
    /// needs gent's tokenizer.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["size", "id_tokens", "tune_steps"])]
    from: Option<PathBuf>,
    /// Probability of dropping each first-layer condition but the service id.
    #[arg(long, default_value_t = 0.5)]
    p_drop: f64,
    /// At most this many whole-id tokens: microservice and service ids seen at
    /// least twice become one token each; 0 spells every id digit by digit.
    #[arg(long, default_value_t = model::DEFAULT_MAX_IDS)]
    id_tokens: usize,
    /// Share of the graphs held back from training; their loss is reported
    /// as training goes (0: none, every graph trains).
    #[arg(long, default_value_t = 0.05)]
    held_back: f64,
    /// Instruction-tuning steps after pre-training (0: none); the model then
    /// answers questions in the instruction encoding (layer encoding only).
    #[arg(long, default_value_t = 0)]
    tune_steps: usize,
    /// Share of the graphs made into instruction samples (the paper: 0.05).
    #[arg(long, default_value_t = 0.05)]
    tune_fraction: f64,
    /// Tune LoRA adapters of this rank on the attention query and key
    /// projections, the rest frozen, merged into the weights afterwards
    /// (the paper: 8); 0 tunes every weight. Applies to instruction tuning,
    /// and with --from to fine-tuning the checkpoint.
    #[arg(long, default_value_t = 0)]
    lora_rank: usize,
    /// LoRA scaling numerator: adapters add x·A·B·alpha/rank (the paper: 16).
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f32,
    /// Dropout on the adapters' input while tuning (the paper: 0.1).
    #[arg(long, default_value_t = 0.1)]
    lora_dropout: f64,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
pub struct SplitArgs {
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where the training graphs go.
    #[arg(long)]
    train: PathBuf,
    /// Where the held-back graphs go.
    #[arg(long)]
    held_back: PathBuf,
    /// Share of the graphs held back.
    #[arg(long, default_value_t = 0.1)]
    fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Recursive (layer encoding) model file from `gent llm train`.
    model: Option<PathBuf>,
    /// A model trained with `--encoding tabular` (the non-recursive baseline).
    #[arg(long)]
    tabular: Option<PathBuf>,
    /// An instruction-tuned model (`--tune-steps`): accuracy and similarity
    /// in the instruction encoding, and instruction following (needs --train).
    #[arg(long, requires = "train")]
    instructed: Option<PathBuf>,
    /// Directory of the probabilistic baseline's parameters (e.g. ../shared/data/probabilistic).
    #[arg(long, requires = "train")]
    probabilistic: Option<PathBuf>,
    /// The training graphs (tabular text): the retrieval baseline copies them
    /// (a row of its own, which the other rows are judged against), and the
    /// probabilistic baseline names its nodes after their microservices.
    #[arg(long, num_args = 1..)]
    train: Vec<PathBuf>,
    #[command(flatten)]
    checkpoint: CheckpointDir,
    /// Real call graphs (tabular text) to compare with, held back from training (`gent llm split`).
    #[arg(long, required = true, num_args = 1..)]
    real: Vec<PathBuf>,
    /// Decode the recursive model with constraints (otherwise freely, as the paper).
    #[arg(long)]
    constrained: bool,
    /// Constrained decoding: any microservice seen in training may be called
    /// from any node. By default a node calls only destinations it called in
    /// training (in the requested service's graphs when it did there), with
    /// a type that pair used; a node never seen calling may call any.
    #[arg(long, requires = "constrained")]
    any_call: bool,
    #[command(flatten)]
    prior: PriorArgs,
    /// Graphs per grid cell.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Grid: num_edges 1..=max_edges × depth 1..=max_depth.
    #[arg(long, default_value_t = 30)]
    max_edges: u64,
    #[arg(long, default_value_t = 6)]
    max_depth: u64,
    /// Real graphs whose conditions are requested for the similarity figures.
    #[arg(long, default_value_t = 200)]
    similarity_graphs: usize,
    /// Graphs each method makes per real graph's request for the similarity
    /// figures (the paper generates 50 K graphs from held-back prompts). One
    /// graph per request leaves the figures as noisy as one draw; more rounds
    /// measure each method's distribution, at that many times the time.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[command(flatten)]
    run: RunArgs,
}

/// How much the counts of the training calls decide destinations and types
/// (constrained decoding with the calls of training).
#[derive(clap::Args, Clone, Copy)]
struct PriorArgs {
    /// Weight of the counts of the training graphs nearest the requested
    /// size (their calls, types and fan-out) against the model, combined as
    /// prior^W × model^(1−W): 0 the model alone, 1 the counts alone where
    /// they hold the choice, the model elsewhere (a model file written before
    /// gent-llm/4 has no counts: the model alone). The default is 1: any
    /// share the model takes made the calls less like held-back ones
    /// (BENCHMARKS.md).
    #[arg(long, default_value_t = generate::CallPrior::COUNTS.weight, value_parser = unit_interval, conflicts_with = "any_call")]
    call_prior: f64,
    /// How fast a training graph's counts fade as its size (edges, depth)
    /// moves away from the request's: weight e^(−sharpness × log-ratio).
    /// 0 counts every graph of the service alike.
    #[arg(long, default_value_t = generate::CallPrior::COUNTS.sharpness, value_parser = non_negative, conflicts_with = "any_call")]
    prior_sharpness: f64,
}

impl PriorArgs {
    fn prior(self) -> generate::CallPrior {
        generate::CallPrior { weight: self.call_prior, sharpness: self.prior_sharpness }
    }
}

fn unit_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{s}: must be from 0 to 1")) }
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if v >= 0.0 && v.is_finite() { Ok(v) } else { Err(format!("{s}: must be a finite number ≥ 0")) }
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Model file from `gent llm train`.
    model: PathBuf,
    /// `num_edges:N/depth:D/id:S_…[/latency:MS]` (latency defaults to 1000 ms).
    #[arg(long)]
    conditions: String,
    /// Graphs to generate.
    #[arg(long, default_value_t = 1)]
    count: usize,
    #[command(flatten)]
    checkpoint: CheckpointDir,
    /// Mask every token that would break the format or a constraint: every graph is valid.
    #[arg(long)]
    constrained: bool,
    /// Constrained decoding: any microservice seen in training may be called
    /// from any node (by default only the calls seen in training, see `gent
    /// llm eval --any-call`).
    #[arg(long, requires = "constrained")]
    any_call: bool,
    #[command(flatten)]
    prior: PriorArgs,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Keep the k best tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Run the whole context at every step instead of caching keys and
    /// values, one request at a time (same output, slower; for measuring
    /// the cache and the batching).
    #[arg(long)]
    no_kv_cache: bool,
    /// Requests generated together, each model step batched over them (for
    /// a GPU backend: on a CPU one at a time is faster, BENCHMARKS.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    batch: u16,
    /// User instruction (instruction-tuned models): "Build a call graph with high latency".
    #[arg(long, conflicts_with = "include_edge")]
    high_latency: bool,
    /// User instruction (instruction-tuned models): "Include an edge from
    /// SOURCE to DESTINATION with TYPE type", given as SOURCE,DESTINATION,TYPE.
    #[arg(long, value_name = "SOURCE,DESTINATION,TYPE")]
    include_edge: Option<String>,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "otlp-json")]
    format: LlmFormat,
    #[command(flatten)]
    run: RunArgs,
}

/// Where a LoRA fine-tune's checkpoint is now (`generate`, `eval`).
#[derive(clap::Args)]
pub struct CheckpointDir {
    /// A LoRA fine-tune of a checkpoint (`gent llm train --from DIR
    /// --lora-rank R`) stores its adapters and reads the checkpoint from where
    /// it was; this gives where it is now.
    #[arg(long = "checkpoint", value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl CheckpointDir {
    /// The fine-tuned checkpoint in `bytes` (read from `file`).
    fn load(&self, file: &Path, bytes: &[u8], device: &burn::tensor::Device) -> Result<Finetuned, Failure> {
        Finetuned::from_bytes(bytes, device, self.dir.as_deref())
            .map_err(|e| Failure::BadInput(format!("{}: {e}", file.display())))
    }
}

/// What every model-running `llm` command takes.
#[derive(clap::Args)]
pub struct RunArgs {
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: Backend,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum InfillTask {
    Attribute,
    Edge,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LmEncoding {
    Layers,
    Tabular,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LmSize {
    Tiny,
    Small,
    Base,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LlmFormat {
    /// OTLP JSON lines: each graph a trace, each call a span of its destination.
    OtlpJson,
    /// The tabular Alibaba call-graph text (`[GENERATE GRAPH]…`).
    Alibaba,
}

pub fn run(command: LlmCommand) -> Result<(), Failure> {
    match command {
        LlmCommand::Split(a) => split(a),
        LlmCommand::Eval(a) => eval(a),
        LlmCommand::Train(a) => train(a),
        LlmCommand::Generate(a) => generate(a),
        LlmCommand::Checkpoint(a) => checkpoint(a),
        LlmCommand::Predict(a) => predict(a),
        LlmCommand::Infill(a) => infill(a),
        LlmCommand::Recount(a) => recount(a),
    }
}

fn recount(a: RecountArgs) -> Result<(), Failure> {
    let device = device(Backend::Cpu)?;
    let mut lm = LanguageModel::from_bytes(&read_file(&a.model)?, &device)
        .map_err(|e| Failure::BadInput(format!("{}: {e}", a.model.display())))?;
    let graphs = read_call_graphs(&a.train)?;
    lm.calls = gent::llm::calls::KnownCalls::of(&graphs);
    write(&a.out, &lm.to_bytes().map_err(Failure::other)?)?;
    tracing::info!(graphs = graphs.len(), calls = lm.calls.calls().len(), shapes = lm.calls.shapes().len(), file = %a.out.display(), "model file recounted");
    Ok(())
}

#[derive(Serialize)]
struct InfillReport {
    task: InfillTask,
    train_questions: usize,
    held_back_questions: usize,
    /// Questions left out because they and their answer do not fit the context.
    too_long: usize,
    model: infill::Scores,
    baseline: infill::Scores,
    paper_accuracy: f64,
    tune_seconds: f64,
    answer_seconds: f64,
}

/// How a task makes its questions from graphs.
type Asker = fn(&[CallGraph], usize, u64) -> Vec<infill::Question>;

/// `questions` that fit `lm`'s context, and how many did not.
fn fitting(lm: &LanguageModel, questions: Vec<infill::Question>) -> (Vec<infill::Question>, usize) {
    let all = questions.len();
    let kept: Vec<infill::Question> = questions.into_iter().filter(|q| lm.fits(&q.prompt, &q.answer)).collect();
    let dropped = all - kept.len();
    (kept, dropped)
}

fn infill(a: InfillArgs) -> Result<(), Failure> {
    let device = device(a.run.backend)?;
    let mut lm = load_model(&a.model, Decoding::Free, Encoding::Layers, &device)?;
    let (train, real) = (read_call_graphs(&a.train)?, read_call_graphs(&a.real)?);
    let (ask, paper_accuracy): (Asker, f64) = match a.task {
        InfillTask::Attribute => (infill::questions, infill::PAPER_ATTRIBUTE),
        InfillTask::Edge => (infill::edge_questions, infill::PAPER_EDGE),
    };
    let (tuning, long_tuning) = fitting(&lm, ask(&train, a.questions, a.run.seed));
    let (test, long_test) = fitting(&lm, ask(&real, a.test_questions, a.run.seed.wrapping_add(1)));
    if tuning.is_empty() || test.is_empty() {
        return Err(Failure::BadInput(format!(
            "no question of this task fits the model's context in --train or --real (a layer with edges for an attribute, a layer with a child layer for an edge; {long_tuning} and {long_test} too long)"
        )));
    }
    let started = Instant::now();
    let pairs: Vec<(String, String)> = tuning.iter().map(|q| (q.prompt.clone(), q.answer.clone())).collect();
    let train_config = TrainConfig { steps: a.steps, batch: a.batch, learning_rate: a.learning_rate, seed: a.run.seed };
    let lora = (a.lora_rank > 0).then(|| LoraConfig { rank: a.lora_rank, ..LoraConfig::default() });
    lm.tune_answers(&pairs, &train_config, lora.as_ref()).map_err(Failure::bad)?;
    let tune_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let marks: Vec<infill::Marks> = test
        .iter()
        .map(|q| {
            // The answer's own length and a little more: a wrong answer
            // need not run on to the context's end.
            let answer = lm.answer(&q.prompt, lm.token_count(&q.answer) + 8);
            tracing::debug!(truth = q.answer.trim(), answer, "infill");
            infill::mark(q, &answer)
        })
        .collect();
    let answer_seconds = started.elapsed().as_secs_f64();
    let frequent = infill::Frequent::of(&train);
    let baseline: Vec<infill::Marks> = test.iter().map(|q| infill::mark(q, &frequent.answer(q))).collect();
    if let Some(out) = &a.out {
        write(out, &lm.to_bytes().map_err(Failure::other)?)?;
    }
    let out = InfillReport {
        task: a.task,
        train_questions: tuning.len(),
        held_back_questions: test.len(),
        too_long: long_tuning + long_test,
        model: infill::scores(&test, &marks),
        baseline: infill::scores(&test, &baseline),
        paper_accuracy,
        tune_seconds,
        answer_seconds,
    };
    if a.run.json.json {
        return report(true, &out);
    }
    let what = match a.task {
        InfillTask::Attribute => "an attribute",
        InfillTask::Edge => "an edge",
    };
    let (m, b) = (out.model, out.baseline);
    println!(
        "infilling {what}, {} held-back questions: model {:.3} (type {:.3}, destination {:.3}), most frequent for the source {:.3} (type {:.3}, destination {:.3}); paper {:.3}",
        out.held_back_questions,
        m.accuracy,
        m.type_accuracy,
        m.destination_accuracy,
        b.accuracy,
        b.type_accuracy,
        b.destination_accuracy,
        out.paper_accuracy
    );
    Ok(())
}

#[derive(Serialize)]
struct PredictReport {
    /// Which calls counted as uncommon.
    uncommon: gent::llm::predict::Rarity,
    train_samples: usize,
    held_back_samples: usize,
    /// Share of held-back samples where an uncommon call follows.
    held_back_positive: f64,
    /// Plain accuracy (the paper's figure) of a head fitted for it.
    accuracy: f64,
    majority_accuracy: f64,
    token_count_accuracy: f64,
    paper_accuracy: f64,
    /// Mean recall of the two classes, of heads fitted with balanced class
    /// weights: 0.5 for any constant guess, so it shows whether the features
    /// carry signal when one class is rare.
    balanced_accuracy: f64,
    token_count_balanced_accuracy: f64,
    seconds: f64,
}

fn predict(a: PredictArgs) -> Result<(), Failure> {
    use gent::llm::predict::{self, Head, HeadConfig};
    let started = Instant::now();
    let device = device(a.run.backend)?;
    let lm = load_model(&a.model, Decoding::Free, Encoding::Layers, &device)?;
    let (train, real) = (read_call_graphs(&a.train)?, read_call_graphs(&a.real)?);
    let facts = Facts::of(&train);
    let (train, test) = (predict::samples(&train, &facts, a.uncommon), predict::samples(&real, &facts, a.uncommon));
    if train.is_empty() || test.is_empty() {
        return Err(Failure::BadInput("no graph of two or more edges to predict from in --train or --real".into()));
    }
    let labels = |s: &[predict::Sample]| s.iter().map(|s| s.uncommon_follows).collect::<Vec<bool>>();
    let prompts = |s: &[predict::Sample]| s.iter().map(|s| s.prompt.clone()).collect::<Vec<String>>();
    let (train_labels, test_labels) = (labels(&train), labels(&test));
    // Each head fitted twice: for plain accuracy, and with balanced class
    // weights for balanced accuracy.
    let scored = |train_x: &[Vec<f32>], test_x: &[Vec<f32>]| {
        let [plain, balanced] = [false, true].map(|balanced| {
            let head = Head::fit(train_x, &train_labels, &HeadConfig { steps: a.head_steps, balanced, ..HeadConfig::default() });
            let predicted: Vec<bool> = test_x.iter().map(|f| head.predict(f)).collect();
            if balanced {
                predict::balanced_accuracy(&predicted, &test_labels)
            } else {
                predict::accuracy(&predicted, &test_labels)
            }
        });
        (plain, balanced)
    };
    let (accuracy, balanced_accuracy) = scored(&lm.features(&prompts(&train)), &lm.features(&prompts(&test)));
    let counts = |s: &[predict::Sample]| s.iter().map(|s| predict::token_counts(&lm.tokenizer, &s.prompt)).collect::<Vec<_>>();
    let (token_count_accuracy, token_count_balanced_accuracy) = scored(&counts(&train), &counts(&test));
    let out = PredictReport {
        uncommon: a.uncommon,
        train_samples: train.len(),
        held_back_samples: test.len(),
        held_back_positive: test_labels.iter().filter(|&&l| l).count() as f64 / test.len() as f64,
        accuracy,
        majority_accuracy: predict::majority_accuracy(&train_labels, &test_labels),
        token_count_accuracy,
        paper_accuracy: 0.768,
        balanced_accuracy,
        token_count_balanced_accuracy,
        seconds: started.elapsed().as_secs_f64(),
    };
    if a.run.json.json {
        return report(true, &out);
    }
    println!(
        "prediction, {} held-back samples ({:.1} % positive): accuracy of the model's head {:.3}, majority class {:.3}, token-count head {:.3} (paper: {:.3}); balanced accuracy {:.3}, token-count head {:.3}",
        out.held_back_samples,
        100.0 * out.held_back_positive,
        out.accuracy,
        out.majority_accuracy,
        out.token_count_accuracy,
        out.paper_accuracy,
        out.balanced_accuracy,
        out.token_count_balanced_accuracy
    );
    Ok(())
}

#[derive(Serialize)]
struct CheckpointReport {
    architecture: Architecture,
    load_seconds: f64,
    prompt_ids: Vec<u32>,
    next: Vec<Candidate>,
    continuation_ids: Vec<u32>,
    continuation: String,
    tokens_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<Vec<f32>>,
}

#[derive(Serialize)]
struct Architecture {
    #[serde(flatten)]
    config: LmConfig,
    kv_heads: usize,
    rope_theta: f32,
    rope_scaling: RopeScaling,
    qkv_bias: bool,
    norm_eps: f64,
    tied_embeddings: bool,
}

fn checkpoint(a: CheckpointArgs) -> Result<(), Failure> {
    let device = device(a.run.backend)?;
    let started = Instant::now();
    let model = Pretrained::load(&a.dir, &device).map_err(Failure::bad)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let ids = model.encode(&a.prompt).map_err(Failure::bad)?;
    let next = model.next(&ids, a.top);
    let started = Instant::now();
    let continuation_ids = model.greedy(&ids, a.generate);
    let tokens_per_second = continuation_ids.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let c = &model.checkpoint;
    let out = CheckpointReport {
        architecture: Architecture {
            config: c.config,
            kv_heads: c.variant.kv_heads,
            rope_theta: c.variant.rope_theta,
            rope_scaling: c.variant.rope_scaling,
            qkv_bias: c.variant.qkv_bias,
            norm_eps: c.variant.norm_eps,
            tied_embeddings: c.tied,
        },
        load_seconds,
        continuation: model.decode(&continuation_ids),
        logits: a.logits.then(|| model.logits(&ids)),
        prompt_ids: ids,
        next,
        continuation_ids,
        tokens_per_second,
    };
    if a.run.json.json {
        return report(true, &out);
    }
    let arch = &out.architecture;
    println!(
        "{} layers, width {}, {} heads ({} key/value), vocabulary {}, context {}",
        arch.config.layers, arch.config.d_model, arch.config.heads, arch.kv_heads, arch.config.vocab, arch.config.max_len
    );
    println!("prompt: {} tokens; next:", out.prompt_ids.len());
    for c in &out.next {
        println!("  {:>8.4}  {:?} ({})", c.probability, c.token, c.id);
    }
    if !out.continuation_ids.is_empty() {
        println!("continuation ({:.1} tokens/s): {}", out.tokens_per_second, out.continuation);
    }
    Ok(())
}

/// A call-graph file's parse error, named by its path.
fn in_file(path: &Path) -> impl Fn(text::TextError) -> Failure + '_ {
    move |e| Failure::BadInput(format!("{}: {e}", path.display()))
}

fn read_records(paths: &[PathBuf]) -> Result<Vec<text::Tabular>, Failure> {
    let mut records = Vec::new();
    for path in paths {
        records.extend(text::parse_tabular(&read_text(path)?).map_err(in_file(path))?.records);
    }
    Ok(records)
}

fn read_call_graphs(paths: &[PathBuf]) -> Result<Vec<CallGraph>, Failure> {
    let mut graphs = Vec::new();
    for path in paths {
        let doc = text::parse_tabular(&read_text(path)?).map_err(in_file(path))?;
        for r in &doc.records {
            graphs.push(r.graph().map_err(in_file(path))?);
        }
    }
    if graphs.is_empty() {
        return Err(Failure::BadInput("the input holds no call graphs".into()));
    }
    Ok(graphs)
}

fn split(a: SplitArgs) -> Result<(), Failure> {
    if !(0.0..1.0).contains(&a.fraction) || a.fraction == 0.0 {
        return Err(Failure::BadInput("--fraction must be above 0 and below 1".into()));
    }
    let (kept, back) = lm_eval::hold_out(read_records(&a.inputs)?, a.fraction, a.seed);
    for (path, records) in [(&a.train, kept), (&a.held_back, back)] {
        let n = records.len();
        write(path, text::write_tabular(&text::Document { records, final_newline: true }))?;
        tracing::info!(graphs = n, file = %path.display(), "call graphs written");
    }
    Ok(())
}

/// One method's figures for `gent llm eval`: grid accuracy (language models
/// only) and similarity of its graphs to the real ones.
#[derive(Serialize)]
struct MethodReport {
    method: String,
    decoding: String,
    accuracy_mean: Option<f64>,
    accuracy_min_cell: Option<f64>,
    cells: Option<Vec<Cell>>,
    /// Grid graphs rejected, by the rule that rejected them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    rejected: BTreeMap<&'static str, usize>,
    similarity_generated: usize,
    /// Language models: the share of held-back requests (each real graph's
    /// own service, size, depth and latency, every round) given a valid graph
    /// of exactly that size: the grid's accuracy on sizes real traffic has.
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy_held_back: Option<f64>,
    /// The same by band of requested edge count.
    #[serde(skip_serializing_if = "Option::is_none")]
    held_back_by_size: Option<Vec<SizeBand>>,
    kl_popular_calls: f64,
    heavy_hitter_top10: Option<f64>,
    heavy_hitter_top50: Option<f64>,
    heavy_hitter_top100: Option<f64>,
    heavy_hitter_top500: Option<f64>,
    seconds: f64,
    /// This row's KL minus the retrieval baseline's (with --train): above 0,
    /// the method is further from real traffic than copying training graphs.
    #[serde(skip_serializing_if = "Option::is_none")]
    kl_over_retrieval: Option<f64>,
    /// Instruction-tuned models: following "high latency".
    #[serde(skip_serializing_if = "Option::is_none")]
    high_latency: Option<Following>,
    /// Instruction-tuned models: following "include an uncommon edge".
    #[serde(skip_serializing_if = "Option::is_none")]
    uncommon_communication: Option<Following>,
}

#[derive(Serialize)]
struct EvalReport {
    similarity_requests: usize,
    /// Graphs each method made per request.
    rounds: usize,
    methods: Vec<MethodReport>,
}

impl MethodReport {
    fn new(method: &str, decoding: &str, cells: Option<Vec<Cell>>, real: &[CallGraph], generated: &[CallGraph]) -> Self {
        let s = lm_eval::similarity(real, generated);
        let hh = |k: usize| s.heavy_hitters.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
        let (mean, worst) = match &cells {
            Some(cells) => {
                let tried: usize = cells.iter().map(|c| c.tried).sum();
                let valid: usize = cells.iter().map(|c| c.valid).sum();
                let worst = cells.iter().map(|c| c.valid as f64 / c.tried.max(1) as f64).fold(1.0, f64::min);
                (Some(valid as f64 / tried.max(1) as f64), Some(worst))
            }
            None => (None, None),
        };
        MethodReport {
            method: method.into(),
            decoding: decoding.into(),
            accuracy_mean: mean,
            accuracy_min_cell: worst,
            cells,
            rejected: BTreeMap::new(),
            similarity_generated: generated.len(),
            accuracy_held_back: None,
            held_back_by_size: None,
            kl_popular_calls: s.kl_popular_calls,
            heavy_hitter_top10: hh(10),
            heavy_hitter_top50: hh(50),
            heavy_hitter_top100: hh(100),
            heavy_hitter_top500: hh(500),
            seconds: 0.0,
            kl_over_retrieval: None,
            high_latency: None,
            uncommon_communication: None,
        }
    }

    fn print(&self) {
        let mut accuracy = self
            .accuracy_mean
            .map_or("n/a".to_string(), |a| format!("{a:.3} (worst cell {:.3})", self.accuracy_min_cell.unwrap_or(0.0)));
        if let Some(h) = self.accuracy_held_back {
            accuracy.push_str(&format!(", held-back requests {h:.3}"));
        }
        println!(
            "{:<14} {:<40} accuracy {} | KL of popular calls {:.3}{} | heavy hitters top-10 {:.2}, top-100 {:.2} | {:.1} s",
            self.decoding,
            self.method,
            accuracy,
            self.kl_popular_calls,
            self.kl_over_retrieval.map_or(String::new(), |d| format!(" ({d:+.3} against retrieval)")),
            self.heavy_hitter_top10.unwrap_or(f64::NAN),
            self.heavy_hitter_top100.unwrap_or(f64::NAN),
            self.seconds,
        );
        if !self.rejected.is_empty() {
            let mut rules: Vec<(&&str, &usize)> = self.rejected.iter().collect();
            rules.sort_by(|a, b| b.1.cmp(a.1));
            let top: Vec<String> = rules.iter().take(4).map(|(r, n)| format!("{r} {n}")).collect();
            println!("{:<14} grid graphs rejected by: {}", "", top.join(", "));
        }
        if let Some(bands) = self.held_back_by_size.as_ref().filter(|b| b.iter().any(|b| b.met < b.asked)) {
            let shares: Vec<String> = bands.iter().map(|b| format!("{} edges {}/{}", b.edges, b.met, b.asked)).collect();
            println!("{:<14} held-back requests met: {}", "", shares.join(", "));
        }
    }
}

/// The name `--json` gives a decoding (its serde name).
fn decoding_name(decoding: Decoding) -> String {
    serde_json::to_value(decoding).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// A model file, checked to be of the encoding (and tuning) the method needs.
fn load_model(
    file: &Path,
    decoding: Decoding,
    encoding: Encoding,
    device: &burn::tensor::Device,
) -> Result<LanguageModel, Failure> {
    model_of(file, &read_file(file)?, decoding, encoding, device)
}

/// As [`load_model`], from the file's bytes.
fn model_of(
    file: &Path,
    bytes: &[u8],
    decoding: Decoding,
    encoding: Encoding,
    device: &burn::tensor::Device,
) -> Result<LanguageModel, Failure> {
    let lm = LanguageModel::from_bytes(bytes, device).map_err(|e| Failure::BadInput(format!("{}: {e}", file.display())))?;
    if lm.encoding != encoding {
        return Err(Failure::BadInput(format!(
            "{}: a model of the {:?} encoding, where one of the {encoding:?} encoding is expected",
            file.display(),
            lm.encoding
        )));
    }
    if decoding == Decoding::Instructed && !lm.instructed {
        return Err(Failure::BadInput(format!("{}: not instruction-tuned (train it with --tune-steps)", file.display())));
    }
    Ok(lm)
}

/// Evaluates one language model: grid accuracy, similarity to `compared`,
/// and for a tuned model instruction following.
fn eval_model(
    a: &EvalArgs,
    file: &Path,
    decoding: Decoding,
    lm: &LanguageModel,
    compared: &[CallGraph],
    training: &[CallGraph],
) -> Result<MethodReport, Failure> {
    let (mut scorer, tok) = lm.scorer();
    let sampling = generate::Sampling { temperature: a.temperature, ..generate::Sampling::default() };
    let mut g =
        Generator::new(&mut scorer, tok, sampling, a.run.seed).map_err(Failure::other)?.known_destinations(&lm.destinations);
    if !a.any_call {
        g = g.known_calls(&lm.calls).call_prior(a.prior.prior());
    }
    let started = Instant::now();
    let max_len = lm.config.max_len;
    let mut name = decoding_name(decoding);
    if a.any_call && decoding == Decoding::Constrained {
        name.push_str(", any call");
    } else if decoding == Decoding::Constrained && a.prior.call_prior > 0.0 && lm.calls.has_counts() {
        name.push_str(&format!(", call prior {}", a.prior.call_prior));
    }
    let mut r = scored_row(a, file, &name, &mut g, decoding, max_len, compared);
    if decoding == Decoding::Instructed {
        let facts = Facts::of(training);
        let high = lm_eval::high_latency(&mut g, compared, &facts, max_len);
        let uncommon = lm_eval::uncommon_calls(&mut g, compared, &facts, max_len);
        println!(
            "instruction following: high latency {:.3} (without the instruction {:.3}, {} requests); uncommon communication {:.3} (without {:.3}, {} layers)",
            high.with_instruction,
            high.without_instruction,
            high.tried,
            uncommon.with_instruction,
            uncommon.without_instruction,
            uncommon.tried
        );
        r.high_latency = Some(high);
        r.uncommon_communication = Some(uncommon);
    }
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

/// A language model's row: grid accuracy, and the graphs it writes for the
/// requests of `compared` set beside them.
fn scored_row(
    a: &EvalArgs,
    file: &Path,
    name: &str,
    g: &mut impl WritesGraphs,
    decoding: Decoding,
    max_tokens: usize,
    compared: &[CallGraph],
) -> MethodReport {
    let grid = lm_eval::accuracy(g, 1..=a.max_edges, 1..=a.max_depth, a.count, decoding, max_tokens);
    let lm_eval::Requested { graphs: generated, by_size } =
        lm_eval::requested(g, rounds(compared, a.rounds), decoding, max_tokens);
    let mut r = MethodReport::new(&file.display().to_string(), name, Some(grid.cells), compared, &generated);
    r.rejected = grid.rejected;
    r.accuracy_held_back = Some(generated.len() as f64 / (compared.len() * a.rounds).max(1) as f64);
    r.held_back_by_size = Some(by_size);
    r
}

/// Evaluates a fine-tuned checkpoint (`gent llm train --from`), which
/// decodes freely only, as the recursive model.
fn eval_finetuned(
    a: &EvalArgs,
    file: &Path,
    bytes: &[u8],
    decoding: Decoding,
    compared: &[CallGraph],
    device: &burn::tensor::Device,
) -> Result<MethodReport, Failure> {
    if decoding != Decoding::Free {
        return Err(Failure::BadInput(format!(
            "{}: a checkpoint fine-tuned with --from decodes freely only: give it as the model, without --constrained",
            file.display()
        )));
    }
    let lm = a.checkpoint.load(file, bytes, device)?;
    let sampling = generate::Sampling { temperature: a.temperature, ..generate::Sampling::default() };
    let started = Instant::now();
    let mut r = scored_row(
        a,
        file,
        "free, checkpoint's tokenizer",
        &mut lm.writer(sampling, a.run.seed),
        decoding,
        lm.config.max_len,
        compared,
    );
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

/// The graphs of `compared` (whose conditions are requested), all of them
/// `rounds` times over.
fn rounds(compared: &[CallGraph], rounds: usize) -> impl Iterator<Item = &CallGraph> {
    (0..rounds).flat_map(move |_| compared.iter())
}

fn eval(a: EvalArgs) -> Result<(), Failure> {
    if a.count == 0 || a.max_edges == 0 || a.max_depth == 0 || a.similarity_graphs == 0 || a.rounds == 0 {
        return Err(Failure::BadInput(
            "--count, --max-edges, --max-depth, --similarity-graphs and --rounds must be at least 1".into(),
        ));
    }
    if a.model.is_none() && a.tabular.is_none() && a.instructed.is_none() && a.probabilistic.is_none() && a.train.is_empty() {
        return Err(Failure::BadInput(
            "give a model, --tabular MODEL, --instructed MODEL, --probabilistic DIR or --train FILES (the retrieval baseline) to evaluate".into(),
        ));
    }
    let training = if a.train.is_empty() { Vec::new() } else { read_call_graphs(&a.train)? };
    let real = read_call_graphs(&a.real)?;
    let compared = &real[..a.similarity_graphs.min(real.len())];
    let device = device(a.run.backend)?;
    let recursive = if a.constrained { Decoding::Constrained } else { Decoding::Free };
    let lms = [
        (&a.model, recursive, Encoding::Layers),
        (&a.tabular, Decoding::Tabular, Encoding::Tabular),
        (&a.instructed, Decoding::Instructed, Encoding::Layers),
    ];
    let mut methods = Vec::new();
    for (file, decoding, encoding) in lms {
        let Some(file) = file else { continue };
        let bytes = read_file(file)?;
        if finetuned::is_file(&bytes) {
            methods.push(eval_finetuned(&a, file, &bytes, decoding, compared, &device)?);
            continue;
        }
        let lm = model_of(file, &bytes, decoding, encoding, &device)?;
        methods.push(eval_model(&a, file, decoding, &lm, compared, &training)?);
    }
    if let Some(dir) = &a.probabilistic {
        let started = Instant::now();
        let baseline = gent::llm::baseline::Probabilistic::load(dir, &training).map_err(Failure::bad)?;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(a.run.seed);
        let generated: Vec<_> = rounds(compared, a.rounds).map(|r| baseline.graph(&r.service, &mut rng)).collect();
        let mut r = MethodReport::new("probabilistic", "probabilistic", None, compared, &generated);
        r.seconds = started.elapsed().as_secs_f64();
        methods.push(r);
    }
    if let Some(retrieval) = gent::llm::retrieval::Retrieval::new(&training) {
        let started = Instant::now();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(a.run.seed);
        let generated: Vec<_> =
            rounds(compared, a.rounds).map(|r| retrieval.graph(&r.service, r.edges.len() as u64, r.depth(), &mut rng)).collect();
        let mut r = MethodReport::new("retrieval (copy a training graph)", "retrieval", None, compared, &generated);
        r.seconds = started.elapsed().as_secs_f64();
        let floor = r.kl_popular_calls;
        for m in &mut methods {
            m.kl_over_retrieval = Some(m.kl_popular_calls - floor);
        }
        methods.push(r);
    }
    methods.iter().for_each(MethodReport::print);
    report(a.run.json.json, &EvalReport { similarity_requests: compared.len(), rounds: a.rounds, methods })
}

#[derive(Serialize)]
struct TrainReport {
    graphs: usize,
    vocabulary: usize,
    /// Of the vocabulary, whole microservice and service ids.
    identifier_tokens: usize,
    /// Mean tokens per training sequence.
    tokens_per_sequence: f64,
    steps: usize,
    first_loss: Option<f32>,
    last_loss: Option<f32>,
    /// Graphs held back from pre-training, and their loss (step, nats per
    /// token) as it went.
    held_back_graphs: usize,
    held_back_losses: Vec<(usize, f32)>,
    /// Pre-training speed, scored tokens per second.
    tokens_per_second: f64,
    train_seconds: f64,
    tune_steps: usize,
    tune_lora_rank: Option<usize>,
    tune_trainable_parameters: Option<usize>,
    tune_first_loss: Option<f32>,
    tune_last_loss: Option<f32>,
    tune_seconds: f64,
    model_bytes: usize,
    /// `--from`: the checkpoint fine-tuned.
    #[serde(skip_serializing_if = "Option::is_none")]
    from_checkpoint: Option<FromCheckpoint>,
}

#[derive(Serialize)]
struct FromCheckpoint {
    dir: String,
    /// LoRA adapters' rank (none: every weight trained).
    lora_rank: Option<usize>,
    trainable_parameters: usize,
}

impl TrainArgs {
    fn check(&self) -> Result<(), Failure> {
        if self.steps == 0
            || self.batch == 0
            || !(self.learning_rate() > 0.0)
            || !(0.0..1.0).contains(&self.p_drop)
            || !(0.0..1.0).contains(&self.held_back)
        {
            return Err(Failure::BadInput(
                "--steps and --batch must be at least 1, --learning-rate positive, --p-drop and --held-back in [0, 1)".into(),
            ));
        }
        if !(self.tune_fraction > 0.0 && self.tune_fraction <= 1.0) {
            return Err(Failure::BadInput("--tune-fraction must be above 0 and at most 1".into()));
        }
        if self.from.is_some() && matches!(self.encoding, LmEncoding::Tabular) {
            return Err(Failure::BadInput("--from fine-tunes a checkpoint on the layer encoding only".into()));
        }
        if self.tune_steps > 0 && matches!(self.encoding, LmEncoding::Tabular) {
            return Err(Failure::BadInput("--tune-steps needs the layer encoding (instruction samples are layers)".into()));
        }
        Ok(())
    }

    fn pretraining(&self) -> model::Pretraining {
        let size = match self.size {
            LmSize::Tiny => LmConfig::tiny,
            LmSize::Small => LmConfig::small,
            LmSize::Base => LmConfig::base,
        };
        let encoding = match self.encoding {
            LmEncoding::Layers => Encoding::Layers,
            LmEncoding::Tabular => Encoding::Tabular,
        };
        model::Pretraining {
            encoding,
            size,
            train: self.train_config(),
            p_drop: self.p_drop,
            max_ids: self.id_tokens,
            held_back: self.held_back,
        }
    }

    fn learning_rate(&self) -> f64 {
        self.learning_rate.unwrap_or(if self.from.is_some() { 3e-4 } else { 3e-3 })
    }

    fn train_config(&self) -> TrainConfig {
        TrainConfig { steps: self.steps, batch: self.batch, learning_rate: self.learning_rate(), seed: self.run.seed }
    }

    fn lora(&self) -> Option<LoraConfig> {
        (self.lora_rank > 0).then_some(LoraConfig { rank: self.lora_rank, alpha: self.lora_alpha, dropout: self.lora_dropout })
    }

    fn tuning(&self) -> model::Tuning {
        model::Tuning {
            train: TrainConfig { steps: self.tune_steps, ..self.train_config() },
            fraction: self.tune_fraction,
            sampling: gent::llm::instruct::Sampling { p_drop: self.p_drop, ..Default::default() },
            lora: self.lora(),
        }
    }
}

fn train(a: TrainArgs) -> Result<(), Failure> {
    a.check()?;
    let graphs = read_call_graphs(&a.inputs)?;
    if let Some(dir) = &a.from {
        return fine_tune(&a, dir, &graphs);
    }
    let started = Instant::now();
    let (mut lm, pretrained) =
        LanguageModel::pretrain(&graphs, &a.pretraining(), &device(a.run.backend)?).map_err(Failure::other)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let tuned = match a.tune_steps {
        0 => None,
        _ => Some(lm.tune(&graphs, &a.tuning()).map_err(|e| match e {
            model::LanguageModelError::Lm(LmError::Lora(_)) => Failure::BadInput(format!("--lora-*: {e}")),
            e => Failure::other(e),
        })?),
    };
    let tune_seconds = started.elapsed().as_secs_f64();
    let bytes = lm.to_bytes().map_err(Failure::other)?;
    write(&a.out, &bytes)?;
    let tune_losses = tuned.as_ref().map(|t| t.losses.as_slice()).unwrap_or_default();
    let r = TrainReport {
        graphs: graphs.len(),
        vocabulary: lm.tokenizer.len(),
        identifier_tokens: lm.tokenizer.identifiers(),
        tokens_per_sequence: pretrained.tokens_per_sequence,
        steps: a.steps,
        first_loss: pretrained.trained.losses.first().copied(),
        last_loss: pretrained.trained.losses.last().copied(),
        held_back_graphs: pretrained.held_back_graphs,
        held_back_losses: pretrained.trained.held_losses.clone(),
        tokens_per_second: pretrained.trained.tokens_per_second,
        train_seconds,
        tune_steps: a.tune_steps,
        tune_lora_rank: a.lora().map(|c| c.rank),
        tune_trainable_parameters: tuned.as_ref().map(|t| t.trainable),
        tune_first_loss: tune_losses.first().copied(),
        tune_last_loss: tune_losses.last().copied(),
        tune_seconds,
        model_bytes: bytes.len(),
        from_checkpoint: None,
    };
    tracing::info!(graphs = graphs.len(), steps = a.steps, train_seconds = format!("{train_seconds:.1}"), loss = ?pretrained.trained.losses.last(), out = %a.out.display(), "language model written");
    report(a.run.json.json, &r)
}

/// `gent llm train --from DIR`: the checkpoint in `dir` fine-tuned on `graphs`.
fn fine_tune(a: &TrainArgs, dir: &Path, graphs: &[CallGraph]) -> Result<(), Failure> {
    let device = device(a.run.backend)?;
    let base = Pretrained::load(dir, &device).map_err(Failure::bad)?;
    let t = FineTuning { train: a.train_config(), p_drop: a.p_drop, held_back: a.held_back, lora: a.lora() };
    let started = Instant::now();
    let (lm, tuned) = Finetuned::train(base, graphs, &t, &device).map_err(Failure::bad)?;
    let pretrained = tuned.run;
    let train_seconds = started.elapsed().as_secs_f64();
    let bytes = lm.to_bytes().map_err(Failure::other)?;
    write(&a.out, &bytes)?;
    let trained = &pretrained.trained;
    let r = TrainReport {
        graphs: graphs.len(),
        vocabulary: lm.tokenizer.get_vocab_size(true),
        identifier_tokens: 0,
        tokens_per_sequence: pretrained.tokens_per_sequence,
        steps: a.steps,
        first_loss: trained.losses.first().copied(),
        last_loss: trained.losses.last().copied(),
        held_back_graphs: pretrained.held_back_graphs,
        held_back_losses: trained.held_losses.clone(),
        tokens_per_second: trained.tokens_per_second,
        train_seconds,
        tune_steps: 0,
        tune_lora_rank: None,
        tune_trainable_parameters: None,
        from_checkpoint: Some(FromCheckpoint {
            dir: dir.display().to_string(),
            lora_rank: a.lora().map(|c| c.rank),
            trainable_parameters: tuned.trainable,
        }),
        tune_first_loss: None,
        tune_last_loss: None,
        tune_seconds: 0.0,
        model_bytes: bytes.len(),
    };
    tracing::info!(checkpoint = %dir.display(), graphs = graphs.len(), steps = a.steps, train_seconds = format!("{train_seconds:.1}"), loss = ?trained.losses.last(), out = %a.out.display(), "fine-tuned checkpoint written");
    report(a.run.json.json, &r)
}

#[derive(Serialize)]
struct GenerateReport {
    requested: usize,
    valid: usize,
    invalid: usize,
    accuracy: f64,
    seconds: f64,
    out: String,
}

/// The user instruction `gent llm generate` was given, if any.
fn user_instruction(high_latency: bool, include_edge: Option<&str>) -> Result<Option<UserInstruction>, Failure> {
    if high_latency {
        return Ok(Some(UserInstruction::HighLatency));
    }
    let Some(edge) = include_edge else { return Ok(None) };
    match edge.split(',').map(str::trim).collect::<Vec<_>>()[..] {
        [source, destination, kind] if !source.is_empty() && !destination.is_empty() && !kind.is_empty() => {
            Ok(Some(UserInstruction::IncludeEdge { source: source.into(), destination: destination.into(), kind: kind.into() }))
        }
        _ => Err(Failure::BadInput(format!(
            "--include-edge {edge:?}: expected SOURCE,DESTINATION,TYPE, e.g. MS_57649,MS_03426,rpc"
        ))),
    }
}

/// The request `--conditions` spells.
fn request(conditions: &str) -> Result<generate::Request, Failure> {
    let c = text::Conditions::parse(conditions, 1, 1).map_err(|e| Failure::BadInput(format!("--conditions: {e}")))?;
    let number = |key: &str, default: Option<u64>| -> Result<u64, Failure> {
        match c.get(key) {
            Some(v) => v.parse().map_err(|_| Failure::BadInput(format!("--conditions: {key}:{v} is not a whole number"))),
            None => default.ok_or_else(|| Failure::BadInput(format!("--conditions must give {key}"))),
        }
    };
    let request = generate::Request {
        service: c.get("id").unwrap_or("S_000000000").to_string(),
        num_edges: number("num_edges", None)?,
        depth: number("depth", None)?,
        latency: number("latency", Some(1000))?,
    };
    if request.depth == 0 || request.num_edges < request.depth {
        return Err(Failure::BadInput(format!(
            "--conditions: {} edges cannot make a graph {} deep",
            request.num_edges, request.depth
        )));
    }
    Ok(request)
}

/// How this model decodes, given `--constrained` and any user instruction.
fn decoding_for(a: &GenerateArgs, lm: &LanguageModel, instructed: bool) -> Result<Decoding, Failure> {
    let decoding = match (lm.encoding, a.constrained) {
        (Encoding::Layers, true) => Decoding::Constrained,
        (Encoding::Layers, false) if lm.instructed => Decoding::Instructed,
        (Encoding::Layers, false) => Decoding::Free,
        (Encoding::Tabular, false) => Decoding::Tabular,
        (Encoding::Tabular, true) => {
            return Err(Failure::BadInput(format!(
                "{}: constrained decoding needs a model of the layer encoding; this one writes whole graphs (tabular)",
                a.model.display()
            )));
        }
    };
    if instructed && decoding != Decoding::Instructed {
        return Err(Failure::BadInput(format!(
            "{}: --high-latency and --include-edge are instructions for an instruction-tuned model \
             (gent llm train --tune-steps N) decoding freely; this model {}",
            a.model.display(),
            if a.constrained { "was asked for --constrained decoding" } else { "is not instruction-tuned" }
        )));
    }
    Ok(decoding)
}

/// What `gent llm generate` asked of a model: how, what came of each
/// request, and in how long.
struct Asked {
    decoding: Decoding,
    outcomes: Vec<Result<Outcome, generate::GenerateError>>,
    seconds: f64,
}

fn generate(a: GenerateArgs) -> Result<(), Failure> {
    let user = user_instruction(a.high_latency, a.include_edge.as_deref())?;
    let request = request(&a.conditions)?;
    let bytes = read_file(&a.model)?;
    let device = device(a.run.backend)?;
    let sampling = generate::Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p };
    let Asked { decoding, outcomes, seconds } = if finetuned::is_file(&bytes) {
        ask_finetuned(&a, &bytes, &request, user.is_some(), sampling, &device)?
    } else {
        ask_own(&a, &bytes, &request, user, sampling, &device)?
    };
    let (mut graphs, mut invalid) = (Vec::new(), Vec::new());
    for outcome in outcomes {
        match outcome.map_err(Failure::other)? {
            Outcome::Valid(x) => graphs.push(x.graph),
            Outcome::Invalid { reason, .. } if decoding == Decoding::Constrained => return Err(Failure::other(reason)),
            Outcome::Invalid { reason, text } => {
                tracing::debug!(%reason, %text, "invalid graph");
                invalid.push(reason)
            }
        }
    }
    write_graphs(&graphs, a.format, &a.out)?;
    for reason in invalid.iter().take(3) {
        tracing::warn!(%reason, "invalid graph discarded");
    }
    let r = GenerateReport {
        requested: a.count,
        valid: graphs.len(),
        invalid: invalid.len(),
        accuracy: graphs.len() as f64 / a.count.max(1) as f64,
        seconds,
        out: a.out.display().to_string(),
    };
    tracing::info!(valid = r.valid, invalid = r.invalid, seconds = format!("{seconds:.2}"), out = %a.out.display(), "call graphs generated");
    report(a.run.json.json, &r)
}

/// `gent llm generate` with one of gent's own models.
fn ask_own(
    a: &GenerateArgs,
    bytes: &[u8],
    request: &generate::Request,
    user: Option<UserInstruction>,
    sampling: generate::Sampling,
    device: &burn::tensor::Device,
) -> Result<Asked, Failure> {
    let lm = LanguageModel::from_bytes(bytes, device).map_err(|e| Failure::BadInput(format!("{}: {e}", a.model.display())))?;
    let decoding = decoding_for(a, &lm, user.is_some())?;
    let (names, max_len) = (&lm.destinations, lm.config.max_len);
    let one = |mut model: &mut dyn generate::NextToken, tok: &gent::llm::Tokenizer, i: usize| {
        let seed = batch::request_seed(a.run.seed, i);
        let mut g = Generator::new(&mut model, tok, sampling, seed)?.known_destinations(names);
        if !a.any_call {
            g = g.known_calls(&lm.calls).call_prior(a.prior.prior());
        }
        Ok::<_, generate::GenerateError>(match &user {
            Some(u) => g.graph_instructed(request, u, max_len),
            None => g.run(request, decoding, max_len),
        })
    };
    let started = Instant::now();
    let outcomes = if a.no_kv_cache || a.batch == 1 {
        let (mut scorer, tok) = if a.no_kv_cache { lm.uncached_scorer() } else { lm.scorer() };
        (0..a.count).map(|i| one(&mut scorer, tok, i)).collect()
    } else {
        let tok = &lm.tokenizer;
        batch::run(&lm, usize::from(a.batch), a.count, |i, model| one(model, tok, i))
    };
    Ok(Asked { decoding, outcomes, seconds: started.elapsed().as_secs_f64() })
}

/// `gent llm generate` with a fine-tuned checkpoint (`gent llm train
/// --from`): free decoding through its own tokenizer, one request at a time.
fn ask_finetuned(
    a: &GenerateArgs,
    bytes: &[u8],
    request: &generate::Request,
    instructed: bool,
    sampling: generate::Sampling,
    device: &burn::tensor::Device,
) -> Result<Asked, Failure> {
    let refused = |what: &str| {
        Failure::BadInput(format!(
            "{}: a checkpoint fine-tuned with --from reads its checkpoint's tokens and decodes freely only: drop {what}",
            a.model.display()
        ))
    };
    if a.constrained {
        return Err(refused("--constrained (constrained decoding needs gent's own tokenizer)"));
    }
    if instructed {
        return Err(refused("--high-latency and --include-edge (it is not instruction-tuned)"));
    }
    let lm = a.checkpoint.load(&a.model, bytes, device)?;
    if a.batch > 1 || a.no_kv_cache {
        tracing::warn!(
            "a fine-tuned checkpoint generates one request at a time through the key/value cache: --batch and --no-kv-cache do not apply"
        );
    }
    let started = Instant::now();
    let outcomes = (0..a.count)
        .map(|i| Ok(lm.writer(sampling, batch::request_seed(a.run.seed, i)).run(request, Decoding::Free, lm.config.max_len)))
        .collect();
    Ok(Asked { decoding: Decoding::Free, outcomes, seconds: started.elapsed().as_secs_f64() })
}

/// Writes generated graphs as tabular text or, as the Alibaba reader would
/// read that text, as OTLP JSON traces marked synthetic.
fn write_graphs(graphs: &[CallGraph], format: LlmFormat, out: &Path) -> Result<(), Failure> {
    match format {
        LlmFormat::Alibaba => {
            let records = graphs
                .iter()
                .map(|g| text::Tabular {
                    conditions: text::Conditions(vec![
                        ("id".into(), g.service.clone()),
                        ("num_edges".into(), g.edges.len().to_string()),
                        ("depth".into(), g.depth().to_string()),
                        ("latency".into(), g.latency().to_string()),
                    ]),
                    edges: g.edges.iter().map(|e| text::EdgeLine::from_edge(e, &[0, 1, 2, 3, 4, 5], true)).collect(),
                    lines: Vec::new(),
                })
                .collect();
            write(out, text::write_tabular(&text::Document { records, final_newline: true }))
        }
        LlmFormat::OtlpJson => {
            use gent::io::alibaba::{call_graph_trace, graph_trace_id};
            let traces: Vec<_> =
                graphs.iter().enumerate().map(|(i, g)| call_graph_trace(g, graph_trace_id(i as u64, &g.service), 0)).collect();
            io::write_file(&traces, OutputFormat::OtlpJson, out)?;
            Ok(())
        }
    }
}
