//! Llama checkpoints in Hugging Face's layout, loaded into an [`Lm`]: a
//! directory with `config.json` and either `model.safetensors` or the shards
//! that `model.safetensors.index.json` lists. Mistral and Qwen2 checkpoints
//! load too: Qwen2 is Llama with biases on the query, key and value
//! projections, and both have their context cut to their attention window
//! where they have one (within it, the window changes nothing).
//!
//! Every tensor's name, dtype and shape is checked against the config before
//! any network is built, so a checkpoint that does not fit is an error naming
//! the tensor, never a partial load. What is allocated is bounded by the files
//! themselves (the config's sizes must fit in them), and the files are read a
//! tensor at a time: loading takes the network's memory and one tensor's.
//!
//! Two layouts differ from burn's. A Hugging Face `Linear` stores `[out, in]`
//! where burn's stores `[in, out]`. Hugging Face rotates the two halves of
//! each head (`rotate_half`), burn rotates adjacent pairs, so the rows of the
//! query and key projections are interleaved head by head: row `i` of a
//! head's first half goes to `2i`, row `i` of its second half to `2i + 1`.
//! Queries and keys move alike, so attention scores are unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};
use serde::Deserialize;

use super::{Lm, LmConfig, LmError, MAX_CONTEXT, RopeScaling, Variant};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: unsupported architecture: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: not a safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("tensor {name}: missing from the checkpoint")]
    Missing { name: String },
    #[error("tensor {name}: shape {found:?}, the config asks for {expected:?}")]
    Shape { name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("tensor {name}: dtype {dtype}, only F32, F16 and BF16 load")]
    Dtype { name: String, dtype: String },
    #[error("the checkpoint's sizes: {0}")]
    Sizes(#[from] LmError),
}

/// The fields of a Llama `config.json` that decide the network. Transformers
/// 5 writes the rotary base and scaling under `rope_parameters`, earlier
/// versions as `rope_theta` beside `rope_scaling`; both are read.
#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<RopeParameters>,
    rope_parameters: Option<RopeParameters>,
    /// Outside the rotary parameters in some configs, where it wins.
    original_max_position_embeddings: Option<f64>,
    partial_rotary_factor: Option<f64>,
    max_position_embeddings: Option<usize>,
    /// Mistral's attention window (none: the whole context), and Qwen2's
    /// when `use_sliding_window` is set.
    sliding_window: Option<usize>,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    /// One id, or a list of them (Llama 3 instruct models end on several).
    eos_token_id: Option<serde_json::Value>,
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
}

/// `rope_parameters`, or the older `rope_scaling` (which names its type
/// `type` in configs older still).
#[derive(Debug, Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    #[serde(alias = "type")]
    rope_type: Option<String>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
    partial_rotary_factor: Option<f64>,
}

impl RopeParameters {
    /// gent's form of the scaling, or what it is that gent cannot apply.
    /// `original_context` is the pre-training context when the config gives
    /// it outside these parameters, else the context the model now has.
    fn scaling(&self, original_context: (Option<f64>, f64)) -> Result<RopeScaling, String> {
        let rope_type = self.rope_type.as_deref().unwrap_or("default");
        let field = |name: &str, v: Option<f64>| {
            v.map(|x| x as f32).ok_or_else(|| format!("rotary scaling {rope_type:?} without {name}"))
        };
        let (outside, context) = original_context;
        let original_context = outside.or(self.original_max_position_embeddings).unwrap_or(context) as f32;
        match rope_type {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear { factor: field("factor", self.factor)? }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: field("factor", self.factor)?,
                low_freq_factor: field("low_freq_factor", self.low_freq_factor)?,
                high_freq_factor: field("high_freq_factor", self.high_freq_factor)?,
                original_context,
            }),
            other => Err(format!("rotary scaling {other:?} (only default, linear and llama3)")),
        }
    }
}

fn default_eps() -> f64 {
    1e-6
}

/// Longest context a checkpoint is given when its config names none.
const DEFAULT_CONTEXT: usize = 2048;

/// A loaded checkpoint: the network and the sizes it was built with.
pub struct Checkpoint {
    pub config: LmConfig,
    pub variant: Variant,
    /// The output head is the embedding's transpose (`tie_word_embeddings`).
    /// Loaded as a copy: fine-tuning unties them.
    pub tied: bool,
    /// The token that ends a sequence (`eos_token_id`, the first of a list).
    pub eos: Option<u32>,
    /// xxh3-64 of `config.json` and every weight file: a model file that
    /// stores adapters for this checkpoint refers to it by this.
    pub fingerprint: u64,
    pub lm: Lm,
}

/// Reads the Llama checkpoint in `dir` onto `device`.
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
    let config_path = dir.join("config.json");
    let config_bytes = read(&config_path)?;
    let hf: HfConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| CheckpointError::Config { path: config_path.clone(), message: e.to_string() })?;
    let (config, variant) = sizes(&hf, &config_path)?;
    let files = Files::read(dir)?;
    // The config's sizes come from a file: before a tensor name is listed or
    // a network built for them, the weights must be able to hold them (two
    // bytes a parameter at the least), so a config asking for a billion
    // layers is an error, not an allocation.
    let stored = files.stored();
    match parameters(&config, &variant, hf.tie_word_embeddings) {
        Some(n) if n as u64 <= stored / 2 => {}
        n => {
            let asked = n.map_or_else(|| "more than can be counted".to_string(), |n| n.to_string());
            return Err(CheckpointError::Config {
                path: config_path,
                message: format!("its sizes need {asked} parameters, more than the {stored} bytes of weights hold"),
            });
        }
    }
    let fingerprint = files.fingerprint(&config_bytes)?;
    let expected = expected_shapes(&config, &variant, hf.tie_word_embeddings);
    // Every tensor checked before anything is built.
    for (name, shape) in &expected {
        files.check(name, shape)?;
    }
    let mut lm = Lm::new_variant(&config, &variant, device)?;
    fill(&mut lm, &files, &config, &variant, hf.tie_word_embeddings, device)?;
    let eos = hf.eos_token_id.as_ref().and_then(first_id).filter(|&id| (id as usize) < config.vocab);
    Ok(Checkpoint { config, variant, tied: hf.tie_word_embeddings, eos, fingerprint, lm })
}

/// A token id given as a number or as the first of a list of numbers.
fn first_id(v: &serde_json::Value) -> Option<u32> {
    let v = v.as_array().and_then(|a| a.first()).unwrap_or(v);
    v.as_u64().and_then(|id| u32::try_from(id).ok())
}

fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|source| CheckpointError::Read { path: path.to_path_buf(), source })
}

/// gent's sizes for `hf`, or why it is not a Llama gent can run.
fn sizes(hf: &HfConfig, path: &Path) -> Result<(LmConfig, Variant), CheckpointError> {
    let unsupported = |what: String| Err(CheckpointError::Unsupported { path: path.to_path_buf(), what });
    let named =
        |arch: &str, model_type: &str| hf.architectures.iter().any(|a| a == arch) || hf.model_type.as_deref() == Some(model_type);
    let (mistral, qwen2) = (named("MistralForCausalLM", "mistral"), named("Qwen2ForCausalLM", "qwen2"));
    if !named("LlamaForCausalLM", "llama") && !mistral && !qwen2 {
        return unsupported(format!(
            "model_type {:?}, architectures {:?}: only LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM load",
            hf.model_type, hf.architectures
        ));
    }
    if let Some(act) = hf.hidden_act.as_deref().filter(|a| *a != "silu") {
        return unsupported(format!("hidden_act {act:?} (only silu)"));
    }
    if hf.attention_bias || hf.mlp_bias {
        return unsupported("attention_bias or mlp_bias (biases only on Qwen2's query, key and value projections)".into());
    }
    // Transformers 5 reads an older config's `rope_scaling` as its
    // `rope_parameters`, and prefers it when a config has both.
    let rope = hf.rope_scaling.as_ref().or(hf.rope_parameters.as_ref());
    let mut context = hf.max_position_embeddings.unwrap_or(DEFAULT_CONTEXT);
    // Mistral (and Qwen2 with `use_sliding_window`) attends over the last
    // `sliding_window` positions only: within a context no longer than the
    // window, that is attention over the whole context.
    if let Some(window) = hf.sliding_window.filter(|_| mistral || (qwen2 && hf.use_sliding_window)) {
        if window == 0 {
            return unsupported("sliding_window 0".into());
        }
        context = context.min(window);
    }
    let rope_scaling = match rope.map(|r| r.scaling((hf.original_max_position_embeddings, context as f64))).transpose() {
        Ok(scaling) => scaling.unwrap_or_default(),
        Err(what) => return unsupported(what),
    };
    if let Some(p) = rope.and_then(|r| r.partial_rotary_factor).or(hf.partial_rotary_factor).filter(|&p| p != 1.0) {
        return unsupported(format!("partial_rotary_factor {p} (rotary encoding over the whole head only)"));
    }
    let heads = hf.num_attention_heads;
    if heads == 0 || hf.head_dim.is_some_and(|h| h.checked_mul(heads) != Some(hf.hidden_size)) {
        return unsupported(format!(
            "head_dim {:?} × {heads} heads is not hidden_size {} (heads must split the model width)",
            hf.head_dim, hf.hidden_size
        ));
    }
    let theta = rope.and_then(|r| r.rope_theta).or(hf.rope_theta).unwrap_or(10_000.0);
    let config = LmConfig {
        vocab: hf.vocab_size,
        d_model: hf.hidden_size,
        layers: hf.num_hidden_layers,
        heads,
        hidden: hf.intermediate_size,
        max_len: context.min(MAX_CONTEXT),
    };
    let variant = Variant {
        kv_heads: hf.num_key_value_heads.unwrap_or(heads),
        rope_theta: theta as f32,
        rope_scaling,
        qkv_bias: qwen2,
        norm_eps: hf.rms_norm_eps,
    };
    config.validate()?;
    variant.validate(&config)?;
    Ok((config, variant))
}

/// How many parameters [`expected_shapes`] lists, counted without listing
/// them; `None` on overflow.
fn parameters(c: &LmConfig, v: &Variant, tied: bool) -> Option<usize> {
    let (d, kv) = (c.d_model, c.d_model / c.heads * v.kv_heads);
    let biases = if v.qkv_bias { d.checked_add(kv.checked_mul(2)?)? } else { 0 };
    let attention = d.checked_mul(d)?.checked_mul(2)?.checked_add(kv.checked_mul(d)?.checked_mul(2)?)?;
    let per_layer = attention.checked_add(c.hidden.checked_mul(d)?.checked_mul(3)?)?.checked_add(2 * d)?.checked_add(biases)?;
    let embeddings = c.vocab.checked_mul(d)?.checked_mul(if tied { 1 } else { 2 })?;
    embeddings.checked_add(d)?.checked_add(per_layer.checked_mul(c.layers)?)
}

/// Every tensor the network needs, in Hugging Face's names and shapes.
fn expected_shapes(c: &LmConfig, v: &Variant, tied: bool) -> Vec<(String, Vec<usize>)> {
    let (d, kv) = (c.d_model, c.d_model / c.heads * v.kv_heads);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![c.vocab, d]), ("model.norm.weight".to_string(), vec![d])];
    if !tied {
        out.push(("lm_head.weight".into(), vec![c.vocab, d]));
    }
    for i in 0..c.layers {
        let p = format!("model.layers.{i}");
        if v.qkv_bias {
            out.extend([
                (format!("{p}.self_attn.q_proj.bias"), vec![d]),
                (format!("{p}.self_attn.k_proj.bias"), vec![kv]),
                (format!("{p}.self_attn.v_proj.bias"), vec![kv]),
            ]);
        }
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![d]),
            (format!("{p}.self_attn.q_proj.weight"), vec![d, d]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, d]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, d]),
            (format!("{p}.self_attn.o_proj.weight"), vec![d, d]),
            (format!("{p}.post_attention_layernorm.weight"), vec![d]),
            (format!("{p}.mlp.gate_proj.weight"), vec![c.hidden, d]),
            (format!("{p}.mlp.up_proj.weight"), vec![c.hidden, d]),
            (format!("{p}.mlp.down_proj.weight"), vec![d, c.hidden]),
        ]);
    }
    out
}

/// Puts every tensor of `files` into `lm`.
fn fill(lm: &mut Lm, files: &Files, c: &LmConfig, v: &Variant, tied: bool, device: &Device) -> Result<(), CheckpointError> {
    let dh = c.d_model / c.heads;
    let get = |name: &str| files.floats(name);
    let vector_of = |x: Vec<f32>| {
        let n = x.len();
        Param::from_tensor(Tensor::<1>::from_data(TensorData::new(x, [n]), device))
    };
    let vector = |name: &str| get(name).map(vector_of);
    let embed = get("model.embed_tokens.weight")?;
    lm.embed.weight = Param::from_tensor(Tensor::from_data(TensorData::new(embed.clone(), [c.vocab, c.d_model]), device));
    lm.norm.gamma = vector("model.norm.weight")?;
    lm.head = if tied { linear(embed, c.vocab, c.d_model, device) } else { load_linear(files, "lm_head.weight", device)? };
    for (i, blk) in lm.blocks.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        blk.attn_norm.gamma = vector(&format!("{p}.input_layernorm.weight"))?;
        let (q_rows, kv_rows) = (c.d_model, dh * v.kv_heads);
        blk.q = linear(interleaved(get(&format!("{p}.self_attn.q_proj.weight"))?, c.d_model, dh), q_rows, c.d_model, device);
        blk.k = linear(interleaved(get(&format!("{p}.self_attn.k_proj.weight"))?, c.d_model, dh), kv_rows, c.d_model, device);
        blk.v = load_linear(files, &format!("{p}.self_attn.v_proj.weight"), device)?;
        if v.qkv_bias {
            // A bias is a column of the rows it adds to: interleaved as they are.
            blk.q.bias = Some(vector_of(interleaved(get(&format!("{p}.self_attn.q_proj.bias"))?, 1, dh)));
            blk.k.bias = Some(vector_of(interleaved(get(&format!("{p}.self_attn.k_proj.bias"))?, 1, dh)));
            blk.v.bias = Some(vector(&format!("{p}.self_attn.v_proj.bias"))?);
        }
        blk.o = load_linear(files, &format!("{p}.self_attn.o_proj.weight"), device)?;
        blk.ffn_norm.gamma = vector(&format!("{p}.post_attention_layernorm.weight"))?;
        // burn's SwiGLU is silu(inner(x)) · outer(x): the gate is inner.
        blk.gate_up.linear_inner = load_linear(files, &format!("{p}.mlp.gate_proj.weight"), device)?;
        blk.gate_up.linear_outer = load_linear(files, &format!("{p}.mlp.up_proj.weight"), device)?;
        blk.down = load_linear(files, &format!("{p}.mlp.down_proj.weight"), device)?;
    }
    Ok(())
}

/// A burn `Linear` from a Hugging Face `[out, in]` weight.
fn linear(weight: Vec<f32>, out: usize, inp: usize, device: &Device) -> Linear {
    let w = Tensor::<2>::from_data(TensorData::new(weight, [out, inp]), device).transpose();
    Linear { weight: Param::from_tensor(w), bias: None }
}

fn load_linear(files: &Files, name: &str, device: &Device) -> Result<Linear, CheckpointError> {
    let shape = files.shape(name)?;
    Ok(linear(files.floats(name)?, shape[0], shape[1], device))
}

/// `[out, in]` query or key rows from Hugging Face's half-split rotary layout
/// to burn's interleaved one, head by head (`dh` rows each).
fn interleaved(w: Vec<f32>, inp: usize, dh: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    let half = dh / 2;
    for (row, src) in w.chunks_exact(inp).enumerate() {
        let (head, j) = (row / dh, row % dh);
        let to = head * dh + if j < half { 2 * j } else { 2 * (j - half) + 1 };
        out[to * inp..(to + 1) * inp].copy_from_slice(src);
    }
    out
}

/// The checkpoint's safetensors files: each one's header, read and checked
/// against the file's length up front, and which file holds each tensor.
/// A tensor's bytes are read when it is loaded, so a checkpoint loads in
/// the memory of its network and one tensor, whatever its files weigh.
struct Files {
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    index: BTreeMap<String, usize>,
}

struct Shard {
    path: PathBuf,
    /// Where the tensors' data starts: after the length and the header.
    data_start: u64,
    /// The file's length.
    len: u64,
    header: Metadata,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// The length of a safetensors header, in its first 8 bytes.
const HEADER_LEN_BYTES: u64 = 8;
/// The longest header the `safetensors` crate reads.
const MAX_HEADER: u64 = 100_000_000;

impl Files {
    fn read(dir: &Path) -> Result<Self, CheckpointError> {
        let index_path = dir.join("model.safetensors.index.json");
        let shards: Vec<PathBuf> = if index_path.exists() {
            let map: ShardIndex = serde_json::from_slice(&read(&index_path)?)
                .map_err(|e| CheckpointError::Config { path: index_path.clone(), message: e.to_string() })?;
            let mut names: Vec<&String> = map.weight_map.values().collect();
            names.sort();
            names.dedup();
            // Shard names come from the file: only plain names in this directory.
            if let Some(bad) = names.iter().find(|n| n.contains(['/', '\\']) || n.starts_with('.')) {
                return Err(CheckpointError::Config { path: index_path, message: format!("shard {bad:?} is not a file name") });
            }
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut files = Files { shards: Vec::new(), index: BTreeMap::new() };
        for path in shards {
            let shard = Shard::open(path)?;
            let at = files.shards.len();
            files.index.extend(shard.header.tensors().into_keys().map(|n| (n, at)));
            files.shards.push(shard);
        }
        Ok(files)
    }

    /// Bytes of the weight files, all told.
    fn stored(&self) -> u64 {
        self.shards.iter().map(|s| s.len).sum()
    }

    /// xxh3-64 of `config` and every file's length and bytes, in shard
    /// order, the files streamed through it.
    fn fingerprint(&self, config: &[u8]) -> Result<u64, CheckpointError> {
        use std::io::Read;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(config);
        let mut buf = vec![0u8; 1 << 20];
        for shard in &self.shards {
            let io = |source| CheckpointError::Read { path: shard.path.clone(), source };
            h.update(&shard.len.to_le_bytes());
            let mut file = std::fs::File::open(&shard.path).map_err(io)?.take(shard.len);
            loop {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        Ok(h.digest())
    }

    fn info(&self, name: &str) -> Result<(&Shard, &TensorInfo), CheckpointError> {
        let missing = || CheckpointError::Missing { name: name.to_string() };
        let shard = self.index.get(name).and_then(|&i| self.shards.get(i)).ok_or_else(missing)?;
        Ok((shard, shard.header.info(name).ok_or_else(missing)?))
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, CheckpointError> {
        Ok(self.info(name)?.1.shape.clone())
    }

    /// The tensor exists with `expected` shape and a dtype that loads.
    fn check(&self, name: &str, expected: &[usize]) -> Result<(), CheckpointError> {
        let (_, info) = self.info(name)?;
        if info.shape != expected {
            return Err(CheckpointError::Shape { name: name.into(), found: info.shape.clone(), expected: expected.to_vec() });
        }
        match info.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
            other => Err(CheckpointError::Dtype { name: name.into(), dtype: format!("{other:?}") }),
        }
    }

    /// The tensor's values as f32, row-major, read from its file.
    fn floats(&self, name: &str) -> Result<Vec<f32>, CheckpointError> {
        let (shard, info) = self.info(name)?;
        let data = shard.bytes(info)?;
        let pairs = data.chunks_exact(2).map(|b| [b[0], b[1]]);
        Ok(match info.dtype {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => pairs.map(|b| half::f16::from_le_bytes(b).to_f32()).collect(),
            Dtype::BF16 => pairs.map(|b| half::bf16::from_le_bytes(b).to_f32()).collect(),
            other => return Err(CheckpointError::Dtype { name: name.into(), dtype: format!("{other:?}") }),
        })
    }
}

impl Shard {
    /// Reads the header of the safetensors file at `path`, checked as the
    /// `safetensors` crate checks a whole file: a bounded length, tensors
    /// that tile the data, and data that ends where the file does.
    fn open(path: PathBuf) -> Result<Self, CheckpointError> {
        use std::io::Read;
        let bad = |message: String| CheckpointError::Safetensors { path: path.clone(), message };
        let io = |source| CheckpointError::Read { path: path.clone(), source };
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut n = [0u8; HEADER_LEN_BYTES as usize];
        file.read_exact(&mut n).map_err(|_| bad(format!("{len} bytes, shorter than a header")))?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER || HEADER_LEN_BYTES + n > len {
            return Err(bad(format!("a header of {n} bytes in a file of {len}")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(io)?;
        let header: Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
        let data_start = HEADER_LEN_BYTES + n;
        if header.data_len() as u64 != len - data_start {
            return Err(bad(format!(
                "the header describes {} bytes of data, the file holds {}",
                header.data_len(),
                len - data_start
            )));
        }
        Ok(Shard { path, data_start, len, header })
    }

    /// The bytes of one tensor (its offsets were checked against the file's
    /// length when the header was read).
    fn bytes(&self, info: &TensorInfo) -> Result<Vec<u8>, CheckpointError> {
        use std::io::{Read, Seek, SeekFrom};
        let io = |source| CheckpointError::Read { path: self.path.clone(), source };
        let (start, end) = info.data_offsets;
        let mut file = std::fs::File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(self.data_start + start as u64)).map_err(io)?;
        let mut data = vec![0u8; end - start];
        file.read_exact(&mut data).map_err(io)?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::{Files, LmConfig, Variant, expected_shapes, interleaved, parameters};

    #[test]
    fn the_streamed_fingerprint_is_the_hash_of_the_whole_files() {
        // As model files of LoRA fine-tunes (session 62 on) recorded it:
        // config, then each file's length and bytes, read whole.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama-tiny");
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        let mut whole = xxhash_rust::xxh3::Xxh3::new();
        whole.update(b"{}");
        whole.update(&(weights.len() as u64).to_le_bytes());
        whole.update(&weights);
        assert_eq!(Files::read(&dir).unwrap().fingerprint(b"{}").unwrap(), whole.digest());
    }

    #[test]
    fn parameters_are_counted_as_the_shapes_list_them() {
        let c = LmConfig { vocab: 320, d_model: 32, layers: 3, heads: 4, hidden: 64, max_len: 256 };
        for (kv_heads, qkv_bias, tied) in [(4, false, false), (2, true, false), (1, false, true), (2, true, true)] {
            let v = Variant { kv_heads, qkv_bias, ..Variant::of(&c) };
            let listed: usize = expected_shapes(&c, &v, tied).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            assert_eq!(parameters(&c, &v, tied), Some(listed), "{kv_heads} {qkv_bias} {tied}");
        }
        let huge = LmConfig { layers: usize::MAX / 2, ..c };
        assert_eq!(parameters(&huge, &Variant::of(&huge), false), None);
    }

    #[test]
    fn query_rows_interleave_the_two_halves_of_each_head() {
        // Two heads of width 4, one input column: rows numbered as values.
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(interleaved(w, 1, 4), vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }
}
