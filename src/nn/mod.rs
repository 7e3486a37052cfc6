//! burn modules for the generative models. `critic` is CTGAN's PacGAN critic
//! with the explicit input gradient that WGAN-GP needs on a backend without
//! second-order autodiff; `generator` its residual generator, output
//! activations and conditional loss; `ctgan` training and sampling; `weights`
//! network weights as bytes.

mod critic;
mod ctgan;
mod generator;
pub mod weights;

pub use critic::{Critic, DropoutMasks, ForwardMasks, LEAKY_SLOPE, seeded_linear};
pub use ctgan::{Context, Ctgan, CtganConfig, CtganError};
pub use generator::{DiscreteSpan, GUMBEL_TAU, Generator, activate, conditional_loss};

/// The CPU device used by default.
pub fn cpu_device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
