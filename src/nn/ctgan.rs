//! CTGAN training and sampling (Xu et al. 2019, Algorithm 1): training-by-
//! sampling for the conditional vector, a residual generator against a PacGAN
//! critic with the WGAN-GP loss, Adam for both. Every random draw (noise,
//! conditions, rows, dropout, Gumbel noise, interpolation weights) comes from
//! one seeded generator on the host, so a seed reproduces a run on a backend.
//!
//! An optional context (one vector per row) is fed to both networks beside the
//! conditional vector; Gen-T passes the start time or head node metadata that
//! way. Rows may also belong to graphs ([`GraphInput`]): each network then
//! owns a GCN layer whose embedding of the row's graph it reads, trained with
//! it (Gen-T's topology conditioning); only the generator's is stored.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, decay::WeightDecayConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::critic::{Critic, DropoutMasks};
use super::generator::{DiscreteSpan, GUMBEL_TAU, Generator, activate, category_loss, conditional_loss, sample_rows};
use super::graph::GraphInput;
use super::weights::{self, Precision, WeightsError};
use crate::tabular::{ColumnTransform, ConditionalSampler, OutputSpan, Table, TabularError, Transformer};

#[derive(Debug, thiserror::Error)]
pub enum CtganError {
    #[error("invalid CTGAN configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Table(#[from] TabularError),
    #[error("context has {got} values, expected {rows} rows × {width}")]
    Context { got: usize, rows: usize, width: usize },
    #[error("graph conditioning: {0}")]
    Graph(String),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("stored CTGAN model: {0}")]
    Stored(String),
}

/// Why a previous model cannot warm-start training on a table: logged, and
/// training starts from scratch.
#[derive(Debug, thiserror::Error)]
pub enum WarmStartMismatch {
    #[error("graph feature width {now}, previous model {previous}")]
    GraphWidth { now: usize, previous: usize },
    #[error("network dimensions differ from the previous model's")]
    Shape,
    #[error("context width {now}, previous model {previous}")]
    ContextWidth { now: usize, previous: usize },
    #[error("the table's columns differ from the previous model's")]
    Columns,
    #[error("the previous model's columns do not encode the table: {0}")]
    Table(#[from] TabularError),
}

/// Version of the stored model layout ([`Ctgan::to_bytes`]); bumped on any change.
pub const MODEL_FORMAT: u32 = 4;

/// What sampling needs, as stored: everything but the training data.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    format: u32,
    config: CtganConfig,
    transformer: Transformer,
    counts: Vec<Vec<u64>>,
    context_width: usize,
    /// Pooled graph feature width, 0 without graph conditioning.
    graph_width: usize,
    generator: Vec<u8>,
}

/// Dimensions and schedule; the defaults are CTGAN's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CtganConfig {
    pub embedding: usize,
    pub generator: Vec<usize>,
    pub critic: Vec<usize>,
    pub pac: usize,
    pub batch: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    pub weight_decay: f32,
    pub gradient_penalty: f32,
    pub seed: u64,
    /// Width of the GCN embedding of a row's graph (Gen-T: 32); used only
    /// when rows come with a [`GraphInput`].
    pub graph_embedding: usize,
    /// Most optimiser steps in all (None: `epochs` full passes). Rows are drawn
    /// at random for every batch (training-by-sampling), so capping steps per
    /// epoch trains on a sample of a large table and bounds training time
    /// whatever the table's size.
    pub max_steps: Option<usize>,
    /// Weight of the categorical likelihood term (0: CTGAN's generator loss
    /// alone). Beyond CTGAN: the generator is also trained, by cross-entropy,
    /// to give every categorical column of a row the category of the real row
    /// drawn for it. The drawn row follows the condition (and the context), so
    /// this fits each column's distribution given them by maximum likelihood.
    /// CTGAN alone learns which categories go together only through the
    /// critic: on TrainTicket spans, 0.93 of the generated (service, name)
    /// pairs existed after 400 epochs; with this term, 0.997 after 60.
    pub category_loss: f32,
    /// Most bytes of the generator's weights at f16 (what a packet ships):
    /// its noise, residual and GCN widths halve, down to [`NARROWEST`], until
    /// it fits. `None`: as configured. A packet budget sets it (see
    /// `gent::model`), since a generator 128 wide is 40–60 KB at f16, more
    /// than 1:100 head sampling of most windows.
    #[serde(default)]
    pub max_generator_bytes: Option<usize>,
}

/// The narrowest a generator's layers are made to fit
/// [`CtganConfig::max_generator_bytes`].
pub const NARROWEST: usize = 8;

impl Default for CtganConfig {
    fn default() -> Self {
        CtganConfig {
            embedding: 128,
            generator: vec![256, 256],
            critic: vec![256, 256],
            pac: 10,
            batch: 500,
            epochs: 300,
            learning_rate: 2e-4,
            weight_decay: 1e-6,
            gradient_penalty: 10.0,
            seed: 0,
            graph_embedding: 32,
            max_steps: None,
            category_loss: 1.0,
            max_generator_bytes: None,
        }
    }
}

impl CtganConfig {
    pub fn validate(&self) -> Result<(), CtganError> {
        let fail = |m: &str| Err(CtganError::Config(m.into()));
        if self.epochs == 0 {
            return fail("epochs must be at least 1");
        }
        if !(self.category_loss.is_finite() && self.category_loss >= 0.0) {
            return fail("category_loss must be a finite number, 0 or more");
        }
        if self.max_steps == Some(0) {
            return fail("max_steps must be at least 1 (or absent)");
        }
        if self.pac == 0 || self.batch == 0 || self.batch % self.pac != 0 {
            return Err(CtganError::Config(format!("batch {} must be a positive multiple of pac {}", self.batch, self.pac)));
        }
        if self.embedding == 0 || self.graph_embedding == 0 || self.generator.contains(&0) || self.critic.contains(&0) {
            return fail("layer widths must be positive");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return fail("learning_rate must be a positive number");
        }
        Ok(())
    }
}

/// Per-row conditioning: context vectors (`values` is `rows × width`,
/// row-major; width may be 0) and, optionally, the graph of each row.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub values: &'a [f32],
    pub width: usize,
    pub graph: Option<GraphInput<'a>>,
}

impl<'a> Context<'a> {
    /// Context vectors only.
    pub fn vectors(values: &'a [f32], width: usize) -> Self {
        Context { values, width, graph: None }
    }

    /// Whether this can condition `rows` rows.
    fn check(&self, rows: usize) -> Result<(), CtganError> {
        if self.values.len() != rows * self.width {
            return Err(CtganError::Context { got: self.values.len(), rows, width: self.width });
        }
        if let Some(g) = &self.graph {
            g.check(rows).map_err(CtganError::Graph)?;
        }
        Ok(())
    }
}

/// A trained model: the transformer, the generator and what sampling needs.
pub struct Ctgan {
    pub config: CtganConfig,
    pub transformer: Transformer,
    generator: Generator,
    /// The critic at the end of training, kept in memory for warm starts (not stored).
    critic: Option<Critic>,
    sampler: ConditionalSampler,
    context_width: usize,
    /// Pooled graph feature width, 0 without graph conditioning.
    graph_width: usize,
    device: Device,
    warm_started: bool,
}

fn noise_normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    // Ziggurat (rand_distr): about one uniform per value, no transcendental
    // functions; a third of generation time went to Box-Muller before.
    (0..n).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect()
}

fn noise_gumbel(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| -(-(rng.random::<f32>().max(1e-12)).ln()).max(1e-12).ln()).collect()
}

fn tensor(values: Vec<f32>, rows: usize, width: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, width]), device)
}

/// Concatenates non-empty blocks along columns.
fn cat(parts: Vec<Tensor<2>>) -> Tensor<2> {
    let parts: Vec<Tensor<2>> = parts.into_iter().filter(|t| t.dims()[1] > 0).collect();
    Tensor::cat(parts, 1)
}

fn discrete_spans(transformer: &Transformer, sampler: &ConditionalSampler) -> Vec<DiscreteSpan> {
    transformer
        .columns
        .iter()
        .filter_map(|c| match c {
            ColumnTransform::Categorical { categories, .. } => Some(categories.len()),
            _ => None,
        })
        .enumerate()
        .map(|(i, width)| DiscreteSpan { data_offset: sampler.data_offset(i), cond_offset: sampler.cond_offset(i), width })
        .collect()
}

/// One batch's draws of conditions, rows and context.
struct Draw {
    cond: Tensor<2>,
    context: Tensor<2>,
    rows: Vec<i64>,
    /// The graph of every drawn row, when rows have graphs.
    graphs: Option<Tensor<1, Int>>,
}

/// The rows of `table` (one embedding per graph) that `graphs` names, or an
/// empty block when there is no graph conditioning.
fn graph_rows(table: Option<Tensor<2>>, graphs: &Option<Tensor<1, Int>>, batch: usize, device: &Device) -> Tensor<2> {
    match (table, graphs) {
        (Some(table), Some(ids)) => table.select(0, ids.clone()),
        _ => tensor(Vec::new(), batch, 0, device),
    }
}

/// The widths a CTGAN's networks are built for.
struct Inputs {
    /// The encoded row.
    width: usize,
    /// The conditional vector, the row context, and the graph features and
    /// their embedding (0 without graphs).
    cond: usize,
    context: usize,
    graph: usize,
    graph_embedding: usize,
}

/// A fresh generator and critic (PacGAN), each with its own GCN layer when
/// rows have graphs; seeded from the config so a seed reproduces them.
fn networks(config: &CtganConfig, w: &Inputs, graphs: bool, device: &Device) -> (Generator, Critic) {
    let conditions = w.cond + w.context + w.graph_embedding;
    let generator = generator_of(config, w, graphs, device);
    let mut critic = Critic::new(w.width + conditions, config.pac, &config.critic, config.seed ^ 0xc817, device);
    if graphs {
        critic = critic.with_graph(w.graph, w.graph_embedding, config.seed ^ 0x9c42, device);
    }
    (generator, critic)
}

/// A fresh generator, with its GCN layer when rows have graphs.
fn generator_of(config: &CtganConfig, w: &Inputs, graphs: bool, device: &Device) -> Generator {
    let conditions = w.cond + w.context + w.graph_embedding;
    let generator = Generator::new(config.embedding + conditions, &config.generator, w.width, config.seed ^ 0x6745, device);
    if graphs { generator.with_graph(w.graph, w.graph_embedding, config.seed ^ 0x9c41, device) } else { generator }
}

/// Halves `config`'s noise, generator and graph embedding widths (not
/// below [`NARROWEST`]) until the generator's weights take at most `max`
/// bytes at f16.
fn narrowed(config: &mut CtganConfig, inputs: &mut Inputs, graphs: bool, max: usize, device: &Device) {
    loop {
        let params = generator_of(config, inputs, graphs, device).num_params();
        let narrowest = config.embedding <= NARROWEST
            && config.generator.iter().all(|&w| w <= NARROWEST)
            && (!graphs || config.graph_embedding <= NARROWEST);
        if 2 * params <= max || narrowest {
            return;
        }
        config.embedding = (config.embedding / 2).max(NARROWEST);
        for w in &mut config.generator {
            *w = (*w / 2).max(NARROWEST);
        }
        if graphs {
            config.graph_embedding = (config.graph_embedding / 2).max(NARROWEST);
            inputs.graph_embedding = config.graph_embedding;
        }
    }
}

/// Adam as CTGAN trains both networks with it (β = 0.5, 0.9).
fn adam(config: &CtganConfig) -> ModuleOptimizer {
    AdamConfig::new()
        .with_beta_1(0.5)
        .with_beta_2(0.9)
        .with_epsilon(1e-8)
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay)))
        .init()
}

struct Trainer<'a> {
    config: &'a CtganConfig,
    sampler: &'a ConditionalSampler,
    context: Option<Context<'a>>,
    rows: usize,
    device: Device,
    rng: StdRng,
    /// The encoded table's output spans (how each is activated) and its
    /// discrete columns (the conditional and category losses).
    spans: &'a [OutputSpan],
    discrete: &'a [DiscreteSpan],
    /// Every encoded row, on the training device.
    real_all: Tensor<2>,
    /// The graphs' node features when rows belong to graphs.
    features: Option<Tensor<2>>,
    /// The critic's hidden widths (its dropout masks).
    widths: Vec<usize>,
}

impl Trainer<'_> {
    /// One critic step (WGAN-GP): generated rows scored against real rows of
    /// the same conditions, with the gradient penalty on points between them.
    /// Returns the critic and its loss.
    fn critic_step(&mut self, generator: &Generator, critic: Critic, opt: &mut ModuleOptimizer) -> (Critic, f32) {
        let (c, batch) = (self.config, self.config.batch);
        let (d, fake_raw) = self.generated(generator);
        let noise = self.gumbel(self.real_all.dims()[1]);
        let fake = activate(fake_raw, self.spans, noise, GUMBEL_TAU).detach();
        let real = self.real_rows(&d.rows);
        let d_graph = graph_rows(self.features.clone().and_then(|f| critic.embed_graphs(f)), &d.graphs, batch, &self.device);
        let fake_in = cat(vec![fake, d.cond.clone(), d.context.clone(), d_graph.clone()]);
        let real_in = cat(vec![real, d.cond, d.context, d_graph]);
        let (y_fake, _) = critic.forward(fake_in.clone(), &self.critic_dropout());
        let (y_real, _) = critic.forward(real_in.clone(), &self.critic_dropout());
        let alpha = self.alpha();
        let x_hat = real_in.mul(alpha.clone()).add(fake_in.mul(alpha.neg().add_scalar(1.0)));
        let penalty = critic.gradient_penalty(x_hat, &self.critic_dropout(), c.gradient_penalty);
        let loss = y_fake.mean().sub(y_real.mean()).add(penalty);
        let last = scalar(&loss);
        let grads = GradientsParams::from_grads(loss.backward(), &critic);
        (opt.step(c.learning_rate, critic, grads), last)
    }

    /// One generator step: fool the critic, produce the conditioned
    /// categories (and, when configured, the real rows' categories). Returns
    /// the generator and its loss.
    fn generator_step(&mut self, generator: Generator, critic: &Critic, opt: &mut ModuleOptimizer) -> (Generator, f32) {
        let (c, batch) = (self.config, self.config.batch);
        let (d, fake_raw) = self.generated(&generator);
        let noise = self.gumbel(self.real_all.dims()[1]);
        let fake = activate(fake_raw.clone(), self.spans, noise, GUMBEL_TAU);
        // The critic's graph embedding is an input here, not trained.
        let d_graph =
            graph_rows(self.features.clone().and_then(|f| critic.embed_graphs(f)), &d.graphs, batch, &self.device).detach();
        let (y_fake, _) = critic.forward(cat(vec![fake, d.cond.clone(), d.context, d_graph]), &self.critic_dropout());
        let mut loss = y_fake.mean().neg().add(conditional_loss(fake_raw.clone(), d.cond, self.discrete));
        if c.category_loss > 0.0 && !self.discrete.is_empty() {
            let real = self.real_rows(&d.rows);
            loss = loss.add(category_loss(fake_raw, real, self.discrete).mul_scalar(c.category_loss));
        }
        let last = scalar(&loss);
        let grads = GradientsParams::from_grads(loss.backward(), &generator);
        (opt.step(c.learning_rate, generator, grads), last)
    }

    /// A batch drawn (rows, conditions, contexts) and the generator's raw
    /// output for it.
    fn generated(&mut self, generator: &Generator) -> (Draw, Tensor<2>) {
        let d = self.draw();
        let z = self.noise(self.config.embedding);
        let features = self.features.clone().and_then(|f| generator.embed_graphs(f));
        let g_graph = graph_rows(features, &d.graphs, self.config.batch, &self.device);
        let fake_raw = generator.forward(cat(vec![z, d.cond.clone(), d.context.clone(), g_graph]));
        (d, fake_raw)
    }

    /// The encoded rows drawn for a batch.
    fn real_rows(&self, rows: &[i64]) -> Tensor<2> {
        let idx = Tensor::<1, Int>::from_data(TensorData::new(rows.to_vec(), [rows.len()]), &self.device);
        self.real_all.clone().select(0, idx)
    }

    fn critic_dropout(&mut self) -> DropoutMasks {
        let widths = std::mem::take(&mut self.widths);
        let masks = self.dropout(&widths);
        self.widths = widths;
        masks
    }

    fn draw(&mut self) -> Draw {
        let batch = self.config.batch;
        let cond_width = self.sampler.cond_width();
        let conditioned = self.context.is_some();
        let (cond, rows) = match self.sampler.sample_train(batch, &mut self.rng) {
            Some(mut c) => {
                let mut rows = Vec::with_capacity(batch);
                for r in 0..batch {
                    // With a context, half the rows go unconditioned: an
                    // all-zero conditional vector and a uniformly drawn row.
                    // Sampling with a context conditions that way (see
                    // `sample_chunk`).
                    if conditioned && self.rng.random::<bool>() {
                        c.cond[r * cond_width..(r + 1) * cond_width].fill(0.0);
                        rows.push(self.rng.random_range(0..self.rows) as i64);
                    } else {
                        rows.push(self.sampler.sample_row(c.column[r], c.category[r], self.rows, &mut self.rng) as i64);
                    }
                }
                (c.cond, rows)
            }
            None => (Vec::new(), (0..batch).map(|_| self.rng.random_range(0..self.rows) as i64).collect()),
        };
        let cond = tensor(cond, batch, self.sampler.cond_width(), &self.device);
        let context = match self.context {
            Some(ctx) => {
                let mut values = Vec::with_capacity(batch * ctx.width);
                for &r in &rows {
                    values.extend_from_slice(&ctx.values[r as usize * ctx.width..(r as usize + 1) * ctx.width]);
                }
                tensor(values, batch, ctx.width, &self.device)
            }
            None => tensor(Vec::new(), batch, 0, &self.device),
        };
        let graphs = self.context.and_then(|c| c.graph).map(|g| {
            let ids: Vec<i64> = rows.iter().map(|&r| i64::from(g.rows[r as usize])).collect();
            Tensor::<1, Int>::from_data(TensorData::new(ids, [batch]), &self.device)
        });
        Draw { cond, context, rows, graphs }
    }

    fn noise(&mut self, width: usize) -> Tensor<2> {
        let batch = self.config.batch;
        tensor(noise_normal(&mut self.rng, batch * width), batch, width, &self.device)
    }

    fn gumbel(&mut self, width: usize) -> Tensor<2> {
        let batch = self.config.batch;
        tensor(noise_gumbel(&mut self.rng, batch * width), batch, width, &self.device)
    }

    /// Dropout(0.5) keep-multipliers for one critic pass.
    fn dropout(&mut self, widths: &[usize]) -> DropoutMasks {
        let groups = self.config.batch / self.config.pac;
        Some(
            widths
                .iter()
                .map(|&h| {
                    let keep = (0..groups * h).map(|_| if self.rng.random::<bool>() { 2.0 } else { 0.0 }).collect();
                    tensor(keep, groups, h, &self.device)
                })
                .collect(),
        )
    }

    /// Interpolation weights, one per pac group, repeated over its rows.
    fn alpha(&mut self) -> Tensor<2> {
        let (batch, pac) = (self.config.batch, self.config.pac);
        let mut values = Vec::with_capacity(batch);
        for _ in 0..batch / pac {
            let a: f32 = self.rng.random();
            values.extend(std::iter::repeat_n(a, pac));
        }
        tensor(values, batch, 1, &self.device)
    }
}

impl Ctgan {
    /// Fits the transformer and trains the networks on `table`.
    pub fn fit(table: &Table, context: Option<Context<'_>>, config: CtganConfig, device: &Device) -> Result<Self, CtganError> {
        Self::fit_warm(table, context, config, device, None)
    }

    /// Like [`Ctgan::fit`], but starts from `previous`'s transformer and
    /// weights when they fit this table (same columns, every category known,
    /// same dimensions and context width): rolling windows of one system then
    /// need far fewer epochs. When they do not fit, training starts fresh and
    /// says why in the log; [`Ctgan::warm_started`] tells which happened.
    pub fn fit_warm(
        table: &Table,
        context: Option<Context<'_>>,
        config: CtganConfig,
        device: &Device,
        previous: Option<&Ctgan>,
    ) -> Result<Self, CtganError> {
        config.validate()?;
        let mut config = config;
        // Warm-starting needs the previous model's widths. Windows differ a
        // little in size, and so in their limits: the previous widths are
        // kept when its generator fits this limit, and otherwise the widths
        // are narrowed for the previous model's table, as they would be for
        // a table like it.
        if let (Some(max), Some(p)) = (config.max_generator_bytes, previous) {
            if 2 * p.generator.num_params() <= max {
                config.embedding = p.config.embedding;
                config.generator.clone_from(&p.config.generator);
                config.graph_embedding = p.config.graph_embedding;
            } else {
                let graphs = p.graph_width > 0;
                let mut inputs = Inputs {
                    width: p.transformer.width(),
                    cond: p.sampler.cond_width(),
                    context: p.context_width,
                    graph: p.graph_width,
                    graph_embedding: if graphs { config.graph_embedding } else { 0 },
                };
                narrowed(&mut config, &mut inputs, graphs, max, device);
            }
        }
        let rows = table.rows();
        if let Some(ctx) = context {
            ctx.check(rows)?;
        }
        let context_width = context.map_or(0, |c| c.width);
        let graph = context.and_then(|c| c.graph);
        let graph_width = graph.map_or(0, |g| g.width);
        let graph_embedding = if graph.is_some() { config.graph_embedding } else { 0 };
        let warm = previous.and_then(|p| match p.warm_start_fits(table, &config, context_width, graph_width) {
            Ok(encoded) => Some((p, encoded)),
            Err(reason) => {
                tracing::info!(%reason, "ctgan warm start not possible, training from scratch");
                None
            }
        });
        let (transformer, encoded) = match &warm {
            Some((p, encoded)) => (p.transformer.clone(), encoded.clone()),
            None => {
                let transformer = Transformer::fit(table, config.seed)?;
                let encoded = transformer.transform(table, config.seed)?;
                (transformer, encoded)
            }
        };
        let width = transformer.width();
        let sampler = ConditionalSampler::new(&transformer, &encoded);
        let spans: Vec<OutputSpan> = transformer.output_spans();
        let discrete = discrete_spans(&transformer, &sampler);
        let train_device = device.clone().autodiff();
        let real_all = tensor(encoded, rows, width, &train_device);

        let mut inputs =
            Inputs { width, cond: sampler.cond_width(), context: context_width, graph: graph_width, graph_embedding };
        if let (Some(max), None) = (config.max_generator_bytes, &warm) {
            narrowed(&mut config, &mut inputs, graph.is_some(), max, device);
        }
        let (mut generator, mut critic) = networks(&config, &inputs, graph.is_some(), &train_device);
        let features = graph.map(|g| g.tensor(&train_device));
        if let Some((p, _)) = &warm {
            generator = weights::from_bytes(generator, &weights::to_bytes(p.generator.clone(), Precision::F32)?)?;
            if let Some(previous_critic) = &p.critic {
                critic = weights::from_bytes(critic, &weights::to_bytes(previous_critic.clone(), Precision::F32)?)?;
            }
        }
        let (mut opt_g, mut opt_d) = (adam(&config), adam(&config));
        let mut t = Trainer {
            config: &config,
            sampler: &sampler,
            context,
            rows,
            device: train_device.clone(),
            rng: StdRng::seed_from_u64(config.seed),
            spans: &spans,
            discrete: &discrete,
            real_all,
            features,
            widths: critic.hidden_widths(),
        };
        let mut steps = (rows / config.batch).max(1);
        if let Some(max) = config.max_steps {
            steps = steps.min(max.div_ceil(config.epochs).max(1));
        }
        let progress = super::progress::Progress::new("CTGAN", "epochs", config.epochs);
        for epoch in 0..config.epochs {
            let (mut last_g, mut last_d) = (0.0, 0.0);
            for _ in 0..steps {
                (critic, last_d) = t.critic_step(&generator, critic, &mut opt_d);
                (generator, last_g) = t.generator_step(generator, &critic, &mut opt_g);
            }
            progress.step(epoch + 1, || format!("(G {last_g:.3}, D {last_d:.3})"));
        }
        progress.finish();
        Ok(Ctgan {
            config,
            transformer,
            generator: generator.valid(),
            critic: Some(critic.valid()),
            sampler,
            context_width,
            graph_width,
            device: device.clone(),
            warm_started: warm.is_some(),
        })
    }

    /// Whether training started from a previous model's weights.
    pub fn warm_started(&self) -> bool {
        self.warm_started
    }

    /// The encoded table when this model can warm-start training on it, or why not.
    fn warm_start_fits(
        &self,
        table: &Table,
        config: &CtganConfig,
        context_width: usize,
        graph_width: usize,
    ) -> Result<Vec<f32>, WarmStartMismatch> {
        if graph_width != self.graph_width {
            return Err(WarmStartMismatch::GraphWidth { now: graph_width, previous: self.graph_width });
        }
        let same_shape = config.embedding == self.config.embedding
            && (graph_width == 0 || config.graph_embedding == self.config.graph_embedding)
            && config.generator == self.config.generator
            && config.critic == self.config.critic
            && config.pac == self.config.pac;
        if !same_shape {
            return Err(WarmStartMismatch::Shape);
        }
        if context_width != self.context_width {
            return Err(WarmStartMismatch::ContextWidth { now: context_width, previous: self.context_width });
        }
        let names = table.columns.iter().map(|c| c.name.as_str());
        if !names.eq(self.transformer.columns.iter().map(ColumnTransform::name)) {
            return Err(WarmStartMismatch::Columns);
        }
        Ok(self.transformer.transform(table, config.seed)?)
    }

    /// The model as bytes (format [`MODEL_FORMAT`]): configuration, column
    /// transformer, category counts and generator weights at `precision`;
    /// everything [`Ctgan::sample`] needs, nothing of the training data.
    pub fn to_bytes(&self, precision: Precision) -> Result<Vec<u8>, CtganError> {
        let stored = Stored {
            format: MODEL_FORMAT,
            config: self.config.clone(),
            transformer: self.transformer.clone(),
            counts: self.sampler.counts(),
            context_width: self.context_width,
            graph_width: self.graph_width,
            generator: self.generator_bytes(precision)?,
        };
        postcard::to_stdvec(&stored).map_err(|e| CtganError::Stored(format!("cannot encode: {e}")))
    }

    /// A model stored by [`Ctgan::to_bytes`], ready to sample on `device`.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self, CtganError> {
        let stored: Stored = postcard::from_bytes(bytes).map_err(|e| CtganError::Stored(format!("does not decode: {e}")))?;
        if stored.format != MODEL_FORMAT {
            return Err(CtganError::Stored(format!("format {} is not the supported format {MODEL_FORMAT}", stored.format)));
        }
        stored.config.validate()?;
        let sampler = ConditionalSampler::from_counts(&stored.transformer, stored.counts)
            .ok_or_else(|| CtganError::Stored("category counts do not fit the column transformer".into()))?;
        let template = generator_template(
            &stored.config,
            sampler.cond_width(),
            stored.context_width,
            stored.graph_width,
            stored.transformer.width(),
            device,
        );
        let generator = weights::from_bytes(template, &stored.generator)?;
        Ok(Ctgan {
            config: stored.config,
            transformer: stored.transformer,
            generator,
            critic: None,
            sampler,
            context_width: stored.context_width,
            graph_width: stored.graph_width,
            device: device.clone(),
            warm_started: false,
        })
    }

    /// Generates `rows` rows; conditions follow the real category frequencies.
    pub fn sample(&self, rows: usize, context: Option<Context<'_>>, seed: u64) -> Result<Table, CtganError> {
        let width = self.transformer.width();
        let expected = Context { values: &[], width: self.context_width, graph: None };
        let context = context.unwrap_or(expected);
        if context.width != self.context_width {
            return Err(CtganError::Context { got: context.values.len(), rows, width: self.context_width });
        }
        context.check(rows)?;
        // The generator's graph embeddings are fixed now: embed every graph
        // once and append its row to each row's context vector.
        let with_graphs;
        let context = match (context.graph, self.graph_width) {
            (None, 0) => context,
            (Some(g), w) if g.width == w => {
                with_graphs = self.append_graph_embeddings(&context, g)?;
                Context::vectors(&with_graphs.0, with_graphs.1)
            }
            (g, w) => {
                return Err(CtganError::Graph(format!(
                    "the model was trained with graph features of width {w}, given {}",
                    g.map_or(0, |g| g.width)
                )));
            }
        };
        let context = Some(context).filter(|c| c.width > 0);
        // Rows go in fixed chunks, each with its own generator seeded from
        // (seed, chunk), spread over the cores: the output depends on the seed
        // only, never on how many threads ran.
        let chunks: Vec<usize> = (0..rows.div_ceil(SAMPLE_CHUNK)).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(chunks.len()).max(1);
        let mut parts: Vec<Option<Result<Vec<f32>, CtganError>>> = (0..chunks.len()).map(|_| None).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let mine: Vec<usize> = chunks.iter().copied().filter(|c| c % threads == t).collect();
                    s.spawn(move || mine.into_iter().map(|c| (c, self.sample_chunk(c, rows, context, seed))).collect::<Vec<_>>())
                })
                .collect();
            for handle in handles {
                for (c, part) in handle.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
                    parts[c] = Some(part);
                }
            }
        });
        let mut out = Vec::with_capacity(rows * width);
        for part in parts.into_iter().flatten() {
            out.extend(part?);
        }
        Ok(self.transformer.inverse(&out)?)
    }
}

/// A generator of the stored shape with fresh parameters, to load weights into.
fn generator_template(
    config: &CtganConfig,
    cond_width: usize,
    context_width: usize,
    graph_width: usize,
    output: usize,
    device: &Device,
) -> Generator {
    let graph_embedding = if graph_width > 0 { config.graph_embedding } else { 0 };
    let input = config.embedding + cond_width + context_width + graph_embedding;
    let mut template = Generator::new(input, &config.generator, output, 0, device);
    if graph_width > 0 {
        template = template.with_graph(graph_width, graph_embedding, 0, device);
    }
    template.valid()
}

impl Ctgan {
    /// The generator's weights at `precision`. For f16 the cast is made on a
    /// copy loaded into a fresh network: burn's module clones share parameter
    /// storage, and casting a clone retyped this model's own weights (its next
    /// forward pass failed with a dtype mismatch).
    fn generator_bytes(&self, precision: Precision) -> Result<Vec<u8>, CtganError> {
        let exact = weights::to_bytes(self.generator.clone(), Precision::F32)?;
        if precision == Precision::F32 {
            return Ok(exact);
        }
        let template = generator_template(
            &self.config,
            self.sampler.cond_width(),
            self.context_width,
            self.graph_width,
            self.transformer.width(),
            &self.device,
        );
        Ok(weights::to_bytes(weights::from_bytes(template, &exact)?, precision)?)
    }
}

/// Rows generated per forward pass (and per seeded stream) when sampling.
const SAMPLE_CHUNK: usize = 8192;

impl Ctgan {
    /// Context vectors with each row's graph embedding appended, and their width.
    fn append_graph_embeddings(&self, context: &Context<'_>, graph: GraphInput<'_>) -> Result<(Vec<f32>, usize), CtganError> {
        let table = self
            .generator
            .embed_graphs(graph.tensor(&self.device))
            .ok_or_else(|| CtganError::Graph("the generator has no graph encoder".into()))?;
        let embedding = table.dims()[1];
        let table = table.into_data().try_to_vec::<f32>().map_err(|e| CtganError::Graph(format!("{e:?}")))?;
        let width = context.width + embedding;
        let mut values = Vec::with_capacity(graph.rows.len() * width);
        for (r, &g) in graph.rows.iter().enumerate() {
            values.extend_from_slice(&context.values[r * context.width..(r + 1) * context.width]);
            values.extend_from_slice(&table[g as usize * embedding..(g as usize + 1) * embedding]);
        }
        Ok((values, width))
    }

    /// Activated generator output for chunk `chunk` of a `rows`-row sample.
    fn sample_chunk(&self, chunk: usize, rows: usize, context: Option<Context<'_>>, seed: u64) -> Result<Vec<f32>, CtganError> {
        let width = self.transformer.width();
        let done = chunk * SAMPLE_CHUNK;
        let n = SAMPLE_CHUNK.min(rows - done);
        let mut rng = StdRng::seed_from_u64(seed ^ (chunk as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Without a context, CTGAN's way: categories drawn by their real
        // frequency, which reproduces the marginals. With one, a category
        // drawn that way would ignore the context (a CLIENT kind for a node
        // that is always a SERVER): the generator was also trained
        // unconditioned for this, and draws categories from the context.
        let cond_width = self.sampler.cond_width();
        let cond = match context {
            Some(_) => None,
            None => self.sampler.sample_original(n, &mut rng).map(|c| c.cond),
        };
        // The input rows (noise, condition, context) built in one buffer.
        let (embedding, ctx_width) = (self.config.embedding, context.map_or(0, |c| c.width));
        let input_width = embedding + cond_width + ctx_width;
        let mut input = Vec::with_capacity(n * input_width);
        for r in 0..n {
            input.extend((0..embedding).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)));
            match &cond {
                Some(c) => input.extend_from_slice(&c[r * cond_width..(r + 1) * cond_width]),
                None => input.resize(input.len() + cond_width, 0.0),
            }
            if let Some(c) = context {
                input.extend_from_slice(&c.values[(done + r) * c.width..(done + r + 1) * c.width]);
            }
        }
        let raw = self.generator.forward(tensor(input, n, input_width, &self.device));
        let mut out = raw.into_data().try_into_vec::<f32>().map_err(|e| CtganError::Config(format!("{e:?}")))?;
        debug_assert_eq!(out.len(), n * width);
        sample_rows(&mut out, &self.transformer.output_spans(), &mut rng);
        Ok(out)
    }
}

/// The first value of a one-element tensor (a loss), NaN when it cannot be read.
pub(super) fn scalar(t: &Tensor<1>) -> f32 {
    t.clone().into_data().try_to_vec::<f32>().ok().and_then(|v| v.first().copied()).unwrap_or(f32::NAN)
}
