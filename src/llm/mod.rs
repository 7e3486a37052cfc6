//! TraceLLM (the TraceLLM paper): call graphs as text, for a
//! language model that writes them layer by layer.
//!
//! `graph` holds a call graph as edges with dot-decimal ids and cuts it into
//! layers with their conditions (§4.2); `text` writes and reads the paper's
//! three encodings (tabular, recursive layers, instructions with intermediate
//! reasoning) as exact inverses; `instruct` makes instruction-tuning samples
//! (template constraints, user instructions, reasoning lines) from layers;
//! `calls` holds the calls training graphs made, which constrained decoding
//! keeps to; `tokenizer` turns that text into model
//! tokens and back; `validate` checks a layer and a whole graph
//! against the constraints of the paper's Appendix B, naming the one that failed;
//! `regeneration` turns a window's traces into generation requests for a packet and
//! regenerates traces from them (the decompressor's `engine: llm`);
//! `baseline` (Erms' probabilistic generator) and `retrieval` (copying a
//! training graph) are what `gent llm eval` sets the model beside;
//! `predict` and `infill` the paper's downstream tasks (§5.4); `pretrained` a
//! Hugging Face Llama checkpoint with its own tokenizer, and `finetuned` one
//! fine-tuned on call graphs, writing them through that tokenizer; `batch` runs many
//! requests' generators against one batched, cached model step.

pub mod baseline;
pub mod batch;
pub mod calls;
mod config;
pub mod eval;
pub mod finetuned;
pub mod generate;
pub mod graph;
pub mod infill;
pub mod instruct;
pub mod model;
pub mod predict;
pub mod pretrained;
pub mod regeneration;
pub mod retrieval;
pub mod text;
pub mod tokenizer;
pub mod validate;

pub use config::LlmEngineConfig;
pub use graph::{CallGraph, Edge, EdgeId, Layer, LayerConditions};
pub use text::{Conditions, TextError};
pub use tokenizer::Tokenizer;
pub use validate::Violation;
