//! A window model in and out of a packet: the header operators and the
//! decompressor need (window, counts, settings, seed) plus the stored model.

use burn::tensor::Device;

use super::model::{GenTConfig, ModelError, StoredWindowModel, WindowModel};
use crate::llm::window::WindowConditions;
use crate::nn::weights::Precision;
use crate::packet::{self, PacketError};

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// What a packet says about its window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub window_id: u64,
    /// Time range of the window, Unix nanoseconds.
    pub window_start: u64,
    pub window_end: u64,
    pub traces: u64,
    pub spans: u64,
    /// The settings the model was trained with (the attribute keys it
    /// modelled are in the model itself).
    pub config: GenTConfig,
    pub precision: Precision,
    /// Seed regeneration uses unless told otherwise.
    pub seed: u64,
    /// The gent version that wrote the packet.
    pub producer: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    header: Header,
    model: StoredWindowModel,
    /// Each trace's call-graph conditions, for a decompressor that regenerates
    /// with a language model (`engine: llm`); absent unless the compressor is
    /// asked for them.
    conditions: Option<WindowConditions>,
}

/// A packet opened: its header, its model ready to generate, and the
/// call-graph conditions when it carries them.
pub struct Unpacked {
    pub header: Header,
    pub model: WindowModel,
    pub conditions: Option<WindowConditions>,
}

/// `model` as a packet, with `conditions` when given.
pub fn pack(
    model: &WindowModel,
    window_id: u64,
    config: &GenTConfig,
    precision: Precision,
    seed: u64,
    conditions: Option<WindowConditions>,
) -> Result<Vec<u8>, PackError> {
    let header = header(model, window_id, config, precision, seed);
    Ok(packet::seal(&Body { header, model: model.to_stored(precision)?, conditions })?)
}

fn header(model: &WindowModel, window_id: u64, config: &GenTConfig, precision: Precision, seed: u64) -> Header {
    Header {
        window_id,
        window_start: model.window_start,
        window_end: model.window_end,
        traces: model.histogram.traces(),
        spans: model.histogram.spans(),
        config: GenTConfig {
            attributes: super::AttributeConfig { keys: Vec::new(), categorical: Vec::new(), ..config.attributes.clone() },
            ..config.clone()
        },
        precision,
        seed,
        producer: format!("gent {}", env!("CARGO_PKG_VERSION")),
    }
}

/// Where a packet's bytes go: each part compressed on its own as the packet
/// body is (so the parts add up to about the whole body), and the packet.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Breakdown {
    pub total: usize,
    pub header: usize,
    pub histogram: usize,
    pub starts: usize,
    pub sketches: usize,
    pub node_effects: usize,
    pub time_effects: usize,
    pub t_g: usize,
    pub r_g: usize,
    pub c_g: usize,
    pub conditions: usize,
    pub other: usize,
}

/// The byte breakdown of `packet`, which [`pack`] made of `model` with the
/// same arguments.
pub fn breakdown(
    model: &WindowModel,
    packet: &[u8],
    config: &GenTConfig,
    precision: Precision,
    conditions: Option<&WindowConditions>,
) -> Result<Breakdown, PackError> {
    let stored = model.to_stored(precision)?;
    let size = |bytes: &[u8]| if bytes.is_empty() { 0 } else { packet::compressed_len(bytes) };
    let header = postcard::to_stdvec(&header(model, 0, config, precision, 0)).unwrap_or_default();
    let mut b = Breakdown { total: packet.len(), header: size(&header), ..Breakdown::default() };
    for (name, bytes) in stored.parts() {
        let n = size(&bytes);
        match name {
            "histogram" => b.histogram = n,
            "starts" => b.starts = n,
            "sketches" => b.sketches = n,
            "node_effects" => b.node_effects = n,
            "time_effects" => b.time_effects = n,
            "t_g" => b.t_g = n,
            "r_g" => b.r_g = n,
            "c_g" => b.c_g = n,
            _ => b.other += n,
        }
    }
    b.conditions = conditions.map_or(0, |c| size(&postcard::to_stdvec(c).unwrap_or_default()));
    Ok(b)
}

/// A packet's contents, checked, its model ready to generate on `device`.
pub fn unpack(bytes: &[u8], device: &Device) -> Result<Unpacked, PackError> {
    let body: Body = packet::open(bytes)?;
    let model = WindowModel::from_stored(body.model, device)?;
    if model.histogram.traces() != body.header.traces || model.histogram.spans() != body.header.spans {
        return Err(ModelError::Stored("header counts disagree with the topology histogram".into()).into());
    }
    // One request per trace of the window: a packet cannot ask for more
    // generation than its window held.
    if let Some(c) = &body.conditions
        && c.traces.len() as u64 != body.header.traces
    {
        return Err(ModelError::Stored(format!(
            "the call-graph conditions list {} traces, the header {}",
            c.traces.len(),
            body.header.traces
        ))
        .into());
    }
    Ok(Unpacked { header: body.header, model, conditions: body.conditions })
}
