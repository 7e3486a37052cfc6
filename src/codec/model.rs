//! A window model in and out of a packet: the header operators and the
//! decompressor need (window, counts, settings, seed) plus the stored model.

use burn::tensor::Device;

use crate::container::{self, PacketError};
use crate::gent::{AttributeConfig, GenTConfig, ModelError, StoredWindowModel, WindowModel};
use crate::llm::regeneration::WindowConditions;
use crate::nn::weights::Precision;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the packet asks for {spans} spans in {traces} traces, more than this decoder's limit of {limit} spans per window")]
    TooLarge { traces: u64, spans: u64, limit: u64 },
    #[error(
        "the packet's topology {topology} asks for {spans} spans in one trace, more than this decoder's limit of {limit} spans per trace"
    )]
    TraceTooLarge { topology: usize, spans: usize, limit: u64 },
}

/// Most spans a decoder regenerates from one packet unless told otherwise
/// (the decompressor's `max_window_spans`): a packet is untrusted input, and
/// its counts decide how much generation allocates.
pub const DEFAULT_MAX_SPANS: u64 = 10_000_000;

/// Most spans of one trace a decompressor regenerates unless told otherwise
/// (`link.max_trace_spans`): a trace is generated whole, so one topology of
/// millions of nodes would hold gigabytes however the window is cut into
/// parts. The compressor's `window.max_spans_per_trace` default.
pub const DEFAULT_MAX_TRACE_SPANS: u64 = 100_000;

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

/// Everything a packet holds, as stored: unchecked until [`unpack`] builds a
/// model from it. Tools and tests open and re-seal packets with it
/// ([`open_contents`], [`seal_contents`]), e.g. to craft hostile ones whose
/// checksum is valid.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Contents {
    pub header: Header,
    pub model: StoredWindowModel,
    /// Each trace's call-graph conditions, for a decompressor that regenerates
    /// with a language model (`engine: llm`); absent unless the compressor is
    /// asked for them.
    pub conditions: Option<WindowConditions>,
}

/// A packet's contents after its container checks (magic, version, checksum,
/// inflation limit), before any of the model's own.
pub fn open_contents(bytes: &[u8]) -> Result<Contents, PackError> {
    Ok(container::open(bytes)?)
}

/// `contents` sealed as a packet.
pub fn seal_contents(contents: &Contents) -> Result<Vec<u8>, PackError> {
    Ok(container::seal(contents)?)
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
    Ok(container::seal(&Contents { header, model: model.to_stored(precision)?, conditions })?)
}

fn header(model: &WindowModel, window_id: u64, config: &GenTConfig, precision: Precision, seed: u64) -> Header {
    Header {
        window_id,
        window_start: model.window_start,
        window_end: model.window_end,
        traces: model.histogram.traces(),
        spans: model.histogram.spans(),
        config: GenTConfig {
            attributes: AttributeConfig { keys: Vec::new(), categorical: Vec::new(), ..config.attributes.clone() },
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
    pub latency_bands: usize,
    pub rare_shares: usize,
    pub status: usize,
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
    let size = |bytes: &[u8]| if bytes.is_empty() { 0 } else { container::compressed_len(bytes) };
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
            "latency_bands" => b.latency_bands = n,
            "rare_shares" => b.rare_shares = n,
            "status" => b.status = n,
            "t_g" => b.t_g = n,
            "r_g" => b.r_g = n,
            "c_g" => b.c_g = n,
            _ => b.other += n,
        }
    }
    b.conditions = conditions.map_or(0, |c| size(&postcard::to_stdvec(c).unwrap_or_default()));
    Ok(b)
}

/// A packet's contents, checked, its model ready to generate on `device`,
/// within [`DEFAULT_MAX_SPANS`].
pub fn unpack(bytes: &[u8], device: &Device) -> Result<Unpacked, PackError> {
    unpack_within(bytes, device, DEFAULT_MAX_SPANS)
}

/// [`unpack`] for a window of at most `max_spans` spans. The counts are
/// checked against the limit and against each other before the model is
/// built, so no count in a packet decides an allocation unchecked.
pub fn unpack_within(bytes: &[u8], device: &Device, max_spans: u64) -> Result<Unpacked, PackError> {
    unpack_bounded(bytes, device, (max_spans, max_spans))
}

/// [`unpack_within`] that also refuses a topology of more than
/// `max_trace_spans` nodes, before the model is built.
pub fn unpack_bounded(bytes: &[u8], device: &Device, (max_spans, max_trace_spans): (u64, u64)) -> Result<Unpacked, PackError> {
    let body: Contents = container::open_checked(bytes, |header: &Header| {
        let (traces, spans) = (header.traces, header.spans);
        if spans > max_spans { Err(PackError::TooLarge { traces, spans, limit: max_spans }) } else { Ok(()) }
    })?;
    let (traces, spans) = (body.header.traces, body.header.spans);
    if body.model.histogram.traces() != traces || body.model.histogram.spans() != spans || traces > spans {
        return Err(ModelError::Stored("header counts disagree with the topology histogram".into()).into());
    }
    let topologies = body.model.histogram.topologies.iter().enumerate();
    if let Some((topology, t)) = topologies.max_by_key(|(_, t)| t.len())
        && t.len() as u64 > max_trace_spans
    {
        return Err(PackError::TraceTooLarge { topology, spans: t.len(), limit: max_trace_spans });
    }
    let model = WindowModel::from_stored(body.model, device)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Span, Trace};

    /// Traces of a root and one child, a second apart.
    fn traces(n: u8) -> Vec<Trace> {
        (0..n)
            .map(|t| {
                let span = |id: u8, parent: Option<u8>, start: u64, end: u64| Span {
                    name: format!("op{id}"),
                    ..crate::trace::test_span(t, id, parent, start, end)
                };
                let base = 1_700_000_000_000_000_000 + u64::from(t) * 1_000_000_000;
                Trace {
                    trace_id: [t; 16],
                    spans: vec![span(1, None, base, base + 5_000_000), span(2, Some(1), base + 1_000, base + 4_000_000)],
                }
            })
            .collect()
    }

    /// A packet of a small window, its body changed by `edit` and sealed
    /// again with a valid checksum.
    fn hostile(edit: impl FnOnce(&mut Contents)) -> Vec<u8> {
        let device = Device::flex();
        let config = GenTConfig::default();
        let model = WindowModel::train(&traces(20), &config, &device, None).unwrap();
        let mut body: Contents = container::open(&pack(&model, 1, &config, Precision::F16, 7, None).unwrap()).unwrap();
        edit(&mut body);
        container::seal(&body).unwrap()
    }

    #[test]
    fn hostile_counts_are_refused_before_anything_is_generated() {
        let device = Device::flex();
        // One count of 2^32 − 1 with the header agreeing: generation would
        // have allocated 34 GB (found by an outside probe).
        let huge = hostile(|b| {
            b.model.histogram.counts[0] = u32::MAX;
            (b.header.traces, b.header.spans) = (b.model.histogram.traces(), b.model.histogram.spans());
        });
        let e = unpack(&huge, &device).err().expect("refused").to_string();
        assert!(e.contains("limit of 10000000 spans"), "{e}");
        // Above a raised limit, the start counts no longer agree with it.
        let e = unpack_within(&huge, &device, u64::MAX).err().expect("refused").to_string();
        assert!(!e.contains("limit"), "{e}");
        // Counts that disagree with the header.
        let lying = hostile(|b| b.header.spans += 1);
        assert!(unpack(&lying, &device).err().expect("refused").to_string().contains("disagree"));
        // A chain length that would size C_G's conditioning by a million.
        let chains = hostile(|b| b.model.chain_length = 1_000_000);
        assert!(unpack(&chains, &device).err().expect("refused").to_string().contains("chain length"));
        // A topology of no nodes, and labels no node uses.
        let empty = hostile(|b| {
            b.model.histogram.topologies[0].labels.clear();
            b.model.histogram.topologies[0].parents.clear();
            (b.header.traces, b.header.spans) = (b.model.histogram.traces(), b.model.histogram.spans());
        });
        let e = unpack(&empty, &device).err().expect("refused").to_string();
        assert!(e.contains("empty") || e.contains("disagree"), "{e}");
        let labels = hostile(|b| {
            let label = b.model.histogram.labels[0].clone();
            b.model.histogram.labels.extend(std::iter::repeat_n(label, 1000));
        });
        assert!(unpack(&labels, &device).err().expect("refused").to_string().contains("labels for"));
    }

    #[test]
    fn a_trace_over_the_per_trace_limit_is_refused_naming_its_topology() {
        let device = Device::flex();
        // Topology 0 becomes a chain of 5,000 nodes, the header agreeing.
        let chain = hostile(|b| {
            let h = &mut b.model.histogram;
            let label = h.topologies[0].labels[0];
            h.topologies[0].labels = vec![label; 5000];
            h.topologies[0].parents = (0..5000u32).map(|i| i.checked_sub(1)).collect();
            (b.header.traces, b.header.spans) = (h.traces(), h.spans());
        });
        let e = unpack_bounded(&chain, &device, (1_000_000, 4999)).err().expect("refused").to_string();
        assert!(e.contains("topology 0 asks for 5000 spans in one trace") && e.contains("limit of 4999"), "{e}");
        // Within the limit, the per-trace check lets it through (whatever
        // the deeper checks then say of the edited model).
        let e = unpack_bounded(&chain, &device, (1_000_000, 5000)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!e.contains("per trace"), "{e}");
    }
}
