//! A window's call graphs as requests for the language model: what the
//! compressor carries in a packet when `pipeline.call_graph_conditions` is on,
//! and what a decompressor with `engine: llm` regenerates from.
//!
//! Each trace becomes the paper's user conditions — service id, num_edges
//! (spans), depth (levels) and latency (ms from the trace's start to its end) —
//! plus when it started, ms after the window's start. Service ids are stored
//! once per window and referred to by index, so a request costs a few bytes
//! before the packet's gzip.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use xxhash_rust::xxh3::xxh3_128_with_seed;

use super::generate::{CallPrior, Decoding, Generator, Outcome, Request, Sampling, microservice_digits};
use super::model::{Encoding, LanguageModel};
use crate::io::alibaba::{self, SERVICE_ID_ATTRIBUTE};
use crate::trace::{SpanView, Trace, TraceGraph};

const NANOS_PER_MILLI: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("trace {index} of the packet's call-graph conditions: {reason}")]
    Request { index: usize, reason: String },
    #[error("the language model cannot regenerate call graphs: {0}")]
    Model(String),
    #[error("the language model cannot regenerate call graphs: {0}")]
    Generator(#[from] super::generate::GenerateError),
    #[error("trace {index} of the packet's call-graph conditions: constrained decoding made an invalid graph (a bug): {reason}")]
    Rejected { index: usize, reason: super::generate::Rejection },
}

/// One trace as the language model is asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceRequest {
    /// Index into [`WindowConditions::services`].
    pub service: u32,
    pub num_edges: u32,
    pub depth: u32,
    pub latency_ms: u64,
    /// The trace's start, ms after the window's start.
    pub start_ms: u64,
}

/// Every trace of a window as a request, in trace order, and the
/// microservices the window's calls reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowConditions {
    pub services: Vec<String>,
    pub traces: Vec<TraceRequest>,
    /// Every span's service (the destination of its call), sorted: constrained
    /// decoding calls only these, so the regenerated window calls the
    /// microservices the real one did rather than any seen in training.
    pub destinations: Vec<String>,
}

/// The service id a trace belongs to: Alibaba's `alibaba.service_id` on the
/// root span's resource when present, else the root span's service name.
fn service_id<S: SpanView>(spans: &[S], graph: &TraceGraph<S>) -> String {
    let root = graph.roots().first().map_or(&spans[0], |&r| &spans[r]);
    let id = root.resource().attributes.iter().find(|kv| kv.key == SERVICE_ID_ATTRIBUTE).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    });
    id.unwrap_or_else(|| root.service_name().to_string())
}

fn millis_up(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_MILLI)
}

impl WindowConditions {
    /// The requests of `traces`, a window starting at `window_start` (Unix ns).
    pub fn of(traces: &[Trace], window_start: u64) -> Self {
        let mut builder = ConditionsBuilder::default();
        traces.iter().for_each(|t| builder.add(t));
        builder.finish(window_start)
    }

    /// Request `index` for the generator, checked: a packet is untrusted input.
    fn request(&self, index: usize, max_edges: u64) -> Result<(Request, bool), WindowError> {
        let t = &self.traces[index];
        let bad = |reason: String| WindowError::Request { index, reason };
        let service = self
            .services
            .get(t.service as usize)
            .ok_or_else(|| bad(format!("service index {} is past the {} services listed", t.service, self.services.len())))?;
        if t.depth == 0 || u64::from(t.num_edges) < u64::from(t.depth) {
            return Err(bad(format!("{} edges cannot make a graph {} deep", t.num_edges, t.depth)));
        }
        // Past the bound the graph is generated at the bound, its depth kept.
        let clamped = u64::from(t.num_edges) > max_edges;
        let depth = u64::from(t.depth).min(max_edges);
        let request =
            Request { service: service.clone(), num_edges: u64::from(t.num_edges).min(max_edges), depth, latency: t.latency_ms };
        Ok((request, clamped))
    }
}

/// A window's conditions, built one trace at a time as traces complete (the
/// compressor folds a window without holding it).
#[derive(Debug, Default)]
pub struct ConditionsBuilder {
    index: std::collections::HashMap<String, u32>,
    out: WindowConditions,
    /// Each request's start (Unix ns): the window's start is known at the end.
    starts: Vec<u64>,
    destinations: std::collections::BTreeSet<String>,
}

impl ConditionsBuilder {
    pub fn add(&mut self, trace: &Trace) {
        self.add_spans(&trace.spans);
    }

    /// [`Self::add`] for a trace's spans in either form.
    pub fn add_spans<S: SpanView>(&mut self, spans: &[S]) {
        if spans.is_empty() {
            return;
        }
        let graph = TraceGraph::of(spans);
        for span in spans {
            if !self.destinations.contains(span.service_name()) {
                self.destinations.insert(span.service_name().to_string());
            }
        }
        let service = service_id(spans, &graph);
        let next = self.out.services.len() as u32;
        let service = *self.index.entry(service).or_insert_with_key(|s| {
            self.out.services.push(s.clone());
            next
        });
        let (start, end) = (crate::trace::start_of(spans), crate::trace::end_of(spans));
        self.starts.push(start);
        self.out.traces.push(TraceRequest {
            service,
            num_edges: spans.len() as u32,
            depth: graph.depth().max(1),
            latency_ms: millis_up(end.saturating_sub(start)),
            start_ms: 0,
        });
    }

    /// The conditions of a window starting at `window_start` (Unix ns).
    pub fn finish(mut self, window_start: u64) -> WindowConditions {
        for (request, start) in self.out.traces.iter_mut().zip(self.starts) {
            request.start_ms = start.saturating_sub(window_start) / NANOS_PER_MILLI;
        }
        self.out.destinations = self.destinations.into_iter().collect();
        self.out
    }
}

/// How `engine: llm` regenerates.
#[derive(Debug, Clone, Copy)]
pub struct Regeneration {
    pub sampling: Sampling,
    /// Largest graph generated for one trace; larger requests are generated at this size.
    pub max_edges: u64,
    pub seed: u64,
}

/// What regeneration made of a window.
#[derive(Debug, Default)]
pub struct Regenerated {
    pub traces: Vec<Trace>,
    /// Traces generated smaller than requested (over `max_edges`).
    pub clamped: usize,
}

/// The id regeneration gives the trace of request `index`.
pub fn trace_id(seed: u64, index: usize) -> crate::trace::TraceId {
    xxh3_128_with_seed(&(index as u64).to_le_bytes(), seed).to_be_bytes()
}

/// Writes each requested call graph with constrained decoding (every graph
/// valid and of the requested size and depth; calls of training, chosen by
/// their counts near the request's size, [`CallPrior::COUNTS`]) and makes it a trace starting
/// where the real one did. Trace ids derive from `r.seed` and the trace's
/// position, so one packet always regenerates to the same ids.
pub fn regenerate(
    lm: &LanguageModel,
    conditions: &WindowConditions,
    window_start: u64,
    r: &Regeneration,
) -> Result<Regenerated, WindowError> {
    if lm.encoding != Encoding::Layers {
        return Err(WindowError::Model("it writes whole graphs (tabular); engine llm needs the layer encoding".into()));
    }
    // The window's own microservices when the format can name them, else
    // every one the model saw in training.
    let window_names = conditions.destinations.iter().any(|n| microservice_digits(n).is_some());
    let destinations = if window_names { &conditions.destinations } else { &lm.destinations };
    let (mut scorer, tok) = lm.scorer();
    // As `gent llm generate` decodes by default: the calls of training, and
    // their counts near each trace's size where they hold the choice.
    let mut g = Generator::new(&mut scorer, tok, r.sampling, r.seed)?
        .known_destinations(destinations)
        .known_calls(&lm.calls)
        .call_prior(CallPrior::COUNTS);
    let mut out = Regenerated { traces: Vec::with_capacity(conditions.traces.len()), clamped: 0 };
    for (index, t) in conditions.traces.iter().enumerate() {
        let (request, clamped) = conditions.request(index, r.max_edges.max(1))?;
        out.clamped += usize::from(clamped);
        let graph = match g.run(&request, Decoding::Constrained, lm.config.max_len) {
            Outcome::Valid(x) => x.graph,
            // Constrained decoding makes only valid graphs; this is a bug, named.
            Outcome::Invalid { reason, .. } => return Err(WindowError::Rejected { index, reason }),
        };
        let trace_id = trace_id(r.seed, index);
        let start = window_start.saturating_add(t.start_ms.saturating_mul(NANOS_PER_MILLI));
        out.traces.push(alibaba::call_graph_trace(&graph, trace_id, start));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(t: TraceRequest) -> WindowConditions {
        WindowConditions { services: vec!["S_1".into()], traces: vec![t], destinations: vec![] }
    }

    const OK: TraceRequest = TraceRequest { service: 0, num_edges: 5, depth: 2, latency_ms: 9, start_ms: 3 };

    #[test]
    fn a_request_from_a_packet_is_checked_and_bounded() {
        let (r, clamped) = conditions(OK).request(0, 500).unwrap();
        assert_eq!((r.service.as_str(), r.num_edges, r.depth, r.latency, clamped), ("S_1", 5, 2, 9, false));
        let (r, clamped) = conditions(OK).request(0, 3).unwrap();
        assert_eq!((r.num_edges, r.depth, clamped), (3, 2, true), "clamped to the bound, depth kept");
        let (r, _) = conditions(TraceRequest { num_edges: 900, depth: 800, ..OK }).request(0, 500).unwrap();
        assert!(r.depth <= r.num_edges, "a clamped request stays feasible");
        for (bad, says) in [
            (TraceRequest { service: 1, ..OK }, "service index 1"),
            (TraceRequest { depth: 0, ..OK }, "0 deep"),
            (TraceRequest { num_edges: 1, depth: 2, ..OK }, "1 edges cannot make a graph 2 deep"),
        ] {
            let e = conditions(bad).request(0, 500).unwrap_err().to_string();
            assert!(e.contains("trace 0") && e.contains(says), "{e}");
        }
    }
}
