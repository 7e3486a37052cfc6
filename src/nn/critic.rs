//! CTGAN's PacGAN critic (Xu et al. 2019, §4.4; Lin et al. 2018): `pac` rows are
//! judged together, through Linear → LeakyReLU(0.2) → Dropout(0.5) blocks and a
//! final Linear to one score.
//!
//! WGAN-GP needs the gradient of the critic with respect to its input inside
//! the loss, and burn has no second-order autodiff. The critic is piecewise
//! linear, so that gradient is a product of the weights and the activation and
//! dropout masks of the forward pass; [`Critic::input_gradient`] computes it
//! with ordinary tensor operations, which autodiff then differentiates with
//! respect to the weights like any other expression.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::graph::GraphEncoder;

/// Slope of LeakyReLU for negative inputs.
pub const LEAKY_SLOPE: f32 = 0.2;

#[derive(Module, Debug)]
pub struct Critic {
    hidden: Vec<Linear>,
    out: Linear,
    pac: usize,
    /// The critic's own GCN over the rows' graphs (see [`Generator::with_graph`](super::Generator::with_graph)).
    graph: Option<GraphEncoder>,
}

/// What one forward pass fixed: the per-layer multipliers (LeakyReLU slope
/// times dropout scale) that make the critic linear around this input.
pub struct ForwardMasks {
    masks: Vec<Tensor<2>>,
}

/// Per hidden layer and row, the dropout keep-multipliers (0 or 1/(1-p)); `None`
/// disables dropout (evaluation).
pub type DropoutMasks = Option<Vec<Tensor<2>>>;

impl Critic {
    /// `input` is the width of one row; `hidden` the widths of the hidden layers.
    /// Weights are drawn from `seed`, not from the device's shared generator, so
    /// the same seed gives the same critic whatever else runs.
    pub fn new(input: usize, pac: usize, hidden: &[usize], seed: u64, device: &Device) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut layers = Vec::with_capacity(hidden.len());
        let mut width = input * pac;
        for &h in hidden {
            layers.push(seeded_linear(width, h, &mut rng, device));
            width = h;
        }
        Critic { hidden: layers, out: seeded_linear(width, 1, &mut rng, device), pac, graph: None }
    }

    /// Adds a graph encoder; its output is part of the row width given to [`Critic::new`].
    pub fn with_graph(mut self, features: usize, embedding: usize, seed: u64, device: &Device) -> Self {
        self.graph = Some(GraphEncoder::new(features, embedding, seed, device));
        self
    }

    /// Every graph's embedding, `[graphs, embedding]`, when there is an encoder.
    pub fn embed_graphs(&self, features: Tensor<2>) -> Option<Tensor<2>> {
        self.graph.as_ref().map(|g| g.forward(features))
    }

    pub fn pac(&self) -> usize {
        self.pac
    }

    /// The weight matrices, input layer first (for inspecting gradients).
    pub fn weights(&self) -> Vec<Tensor<2>> {
        self.hidden.iter().chain(std::iter::once(&self.out)).map(|l| l.weight.val()).collect()
    }

    /// Widths of the hidden layers, for drawing dropout masks.
    pub fn hidden_widths(&self) -> Vec<usize> {
        self.hidden.iter().map(|l| l.weight.dims()[1]).collect()
    }

    /// Scores `x` (`[rows, input]`, rows a multiple of `pac`): `[rows / pac, 1]`.
    pub fn forward(&self, x: Tensor<2>, dropout: &DropoutMasks) -> (Tensor<2>, ForwardMasks) {
        let [rows, width] = x.dims();
        let mut h = x.reshape([rows / self.pac, width * self.pac]);
        let mut masks = Vec::with_capacity(self.hidden.len());
        for (i, layer) in self.hidden.iter().enumerate() {
            let pre = layer.forward(h);
            // 1 where the input is positive, the slope elsewhere.
            let mut mask = pre.clone().greater_elem(0.0).float().mul_scalar(1.0 - LEAKY_SLOPE).add_scalar(LEAKY_SLOPE);
            if let Some(dropout) = dropout {
                mask = mask.mul(dropout[i].clone());
            }
            h = pre.mul(mask.clone());
            masks.push(mask);
        }
        (self.out.forward(h), ForwardMasks { masks })
    }

    /// d score / d input for every row, `[rows, input]`, as a differentiable
    /// function of the weights (the masks are constants of the forward pass).
    pub fn input_gradient(&self, masks: &ForwardMasks, rows: usize, input: usize) -> Tensor<2> {
        let groups = rows / self.pac;
        let device = self.out.weight.device();
        // Backpropagate a unit score through the layers by hand.
        let mut delta = Tensor::<2>::ones([groups, 1], &device).matmul(self.out.weight.val().transpose());
        for (layer, mask) in self.hidden.iter().zip(&masks.masks).rev() {
            delta = delta.mul(mask.clone()).matmul(layer.weight.val().transpose());
        }
        delta.reshape([rows, input])
    }

    /// WGAN-GP's penalty λ · mean((‖∇D(x̂)‖₂ − 1)²) over the pac groups, at the
    /// interpolates `x_hat` (CTGAN takes the norm over a whole pac group).
    pub fn gradient_penalty(&self, x_hat: Tensor<2>, dropout: &DropoutMasks, lambda: f32) -> Tensor<1> {
        let [rows, input] = x_hat.dims();
        let (_, masks) = self.forward(x_hat, dropout);
        let grad = self.input_gradient(&masks, rows, input).reshape([rows / self.pac, input * self.pac]);
        let norm = grad.powf_scalar(2.0).sum_dim(1).add_scalar(1e-12).sqrt();
        norm.sub_scalar(1.0).powf_scalar(2.0).mean().mul_scalar(lambda)
    }
}

/// A linear layer initialised as PyTorch's default (and CTGAN's): weights and
/// bias uniform in ±1/√fan_in, drawn from `rng`.
pub fn seeded_linear(d_input: usize, d_output: usize, rng: &mut StdRng, device: &Device) -> Linear {
    let bound = 1.0 / (d_input as f32).sqrt();
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
    let weight = Tensor::from_data(TensorData::new(draw(d_input * d_output), [d_input, d_output]), device);
    let bias = Tensor::from_data(TensorData::new(draw(d_output), [d_output]), device);
    Linear { weight: Param::from_tensor(weight), bias: Some(Param::from_tensor(bias)) }
}
