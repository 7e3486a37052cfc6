//! burn modules for the generative models. `critic` is CTGAN's PacGAN critic
//! with the explicit input gradient that WGAN-GP needs on a backend without
//! second-order autodiff; `generator` its residual generator, output
//! activations and conditional loss; `graph` the GCN embedding of a row's graph; `ctgan` training and sampling; `weights`
//! network weights as bytes; `backend` the device they run on; `progress` what
//! a long training run shows.

mod backend;
mod critic;
mod ctgan;
mod generator;
mod graph;
pub mod lm;
mod progress;
pub mod weights;

pub use backend::{Backend, BackendError};
pub use critic::{Critic, DropoutMasks, ForwardMasks, LEAKY_SLOPE, seeded_linear};
pub use ctgan::{Context, Ctgan, CtganConfig, CtganError};
pub use generator::{DiscreteSpan, GUMBEL_TAU, Generator, activate, conditional_loss, sample_rows};
pub use graph::{GraphEncoder, GraphInput, pooled_features};

/// The CPU device used by default.
pub fn cpu_device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

#[cfg(test)]
mod tests {
    use super::Backend;

    #[test]
    fn the_cpu_backend_is_always_there_and_missing_gpus_name_their_feature() {
        assert!(Backend::Cpu.device().is_ok());
        for gpu in [Backend::Wgpu, Backend::Cuda] {
            if !gpu.compiled() {
                let e = gpu.device().err().expect("not compiled").to_string();
                assert!(e.contains(&format!("--features {}", gpu.name())), "{e}");
            }
        }
    }
}
