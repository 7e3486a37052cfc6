//! burn modules for the generative models. `critic` is CTGAN's PacGAN critic
//! with the explicit input gradient that WGAN-GP needs on a backend without
//! second-order autodiff. The generator and training loop follow (issue 4).

mod critic;

pub use critic::{Critic, DropoutMasks, ForwardMasks, LEAKY_SLOPE, seeded_linear};

/// The CPU device used by default.
pub fn cpu_device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
