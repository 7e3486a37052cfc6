//! `pipeline.fidelity:` of the compressor configuration: how the compressor
//! checks each packet against its window before shipping it, and what it
//! ships instead when the check fails.

use serde::{Deserialize, Serialize};

/// The compressor's self-check of every packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FidelityConfig {
    /// Regenerate each window from its own packet and score it against the window.
    pub self_evaluate: bool,
    /// A window scoring below this (0..1) ships head-sampled real traces instead of its model.
    pub floor: f64,
    /// N of the 1:N head sampling used for such a window.
    pub fallback_head: u64,
    /// Seed of that sampling (which trace ids are kept).
    pub seed: u64,
    /// A window of more spans is self-evaluated, and its gzip size measured,
    /// on a 1:k sample of its traces of about this many spans, so the work per
    /// window stays bounded whatever its size; 0 uses every span.
    pub sample_spans: usize,
}

impl Default for FidelityConfig {
    fn default() -> Self {
        FidelityConfig { self_evaluate: true, floor: 0.3, fallback_head: 10, seed: 0, sample_spans: 50_000 }
    }
}

impl FidelityConfig {
    /// The first field out of range, with why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.floor) {
            return Err(("pipeline.fidelity.floor", format!("{} is not between 0 and 1", self.floor)));
        }
        if self.fallback_head == 0 {
            return Err(("pipeline.fidelity.fallback_head", "must be at least 1 (1 keeps every trace)".into()));
        }
        Ok(())
    }
}
