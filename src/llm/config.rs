//! `llm:` of the decompressor configuration: the language model that
//! regenerates windows under `engine: llm`, and how it samples.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `llm:` of the decompressor configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmEngineConfig {
    /// Model file written by `gent llm train` (layer encoding); required for `engine: llm`.
    pub model: Option<PathBuf>,
    /// Sampling temperature (0: the most likely allowed token).
    pub temperature: f32,
    /// Keep the k best allowed tokens (0: all).
    pub top_k: usize,
    /// Nucleus sampling threshold (1: all).
    pub top_p: f32,
    /// Largest graph written for one trace; larger traces are written at this
    /// size (bounds regeneration time per window).
    pub max_edges: u64,
}

impl Default for LlmEngineConfig {
    fn default() -> Self {
        LlmEngineConfig { model: None, temperature: 1.0, top_k: 0, top_p: 1.0, max_edges: 500 }
    }
}

impl LlmEngineConfig {
    /// The first field out of range, with why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(("llm.temperature", format!("{} is not a temperature (0 or more)", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(("llm.top_p", format!("{} is not in (0, 1]", self.top_p)));
        }
        if self.max_edges == 0 {
            return Err(("llm.max_edges", "must be greater than 0".into()));
        }
        Ok(())
    }
}
