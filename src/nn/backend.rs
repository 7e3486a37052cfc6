//! Which burn device trains and samples. The CPU backend (burn's `flex`,
//! measured faster than `ndarray` here, see BENCHMARKS.md) is always built;
//! GPU backends are cargo features, off by default: `wgpu` (Vulkan, Metal or
//! DX12, builds offline) and `cuda` (NVIDIA; burn's CUDA support downloads LLVM
//! at build time, which is why it stays out of default features and CI).

use burn::tensor::Device;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend {backend} is not compiled into this gent; rebuild with `cargo build --release --features {backend}`")]
    NotCompiled { backend: &'static str },
}

/// A compute backend, as named on the command line and in configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// CPU (burn `flex`); needs nothing but the binary.
    #[default]
    Cpu,
    /// The best GPU wgpu finds (feature `wgpu`).
    Wgpu,
    /// The first CUDA GPU (feature `cuda`).
    Cuda,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// Whether this build can use the backend.
    pub fn compiled(self) -> bool {
        match self {
            Backend::Cpu => true,
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The device to run on, or an error naming the feature to build with.
    pub fn device(self) -> Result<Device, BackendError> {
        match self {
            Backend::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[allow(unreachable_patterns)] // reachable only without the GPU features
            other => Err(BackendError::NotCompiled { backend: other.name() }),
        }
    }
}
