//! The topology histogram H of Gen-T (§3.1, step 1): every distinct topology
//! of a window with the exact number of traces that had it.
//!
//! A topology is stored as its nodes in canonical pre-order (roots in canonical
//! order, each followed by its subtrees, children in the canonical order of
//! [`TraceGraph`]), each node a label index and the index of its parent. Labels
//! (service, span name) are interned once for the whole histogram. Because the
//! order is canonical, the node `k` of two traces with one topology plays the
//! same part in both, which is what lets per-node features line up for training.

use std::collections::HashMap;

use crate::trace::{SpanView, Trace, TraceGraph};

/// A node label: the service and the span name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Label {
    pub service: String,
    pub name: String,
}

/// One topology: nodes in canonical pre-order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Topology {
    /// Index into [`TopologyHistogram::labels`] per node.
    pub labels: Vec<u32>,
    /// Parent node per node, `None` for roots; a parent always precedes its children.
    pub parents: Vec<Option<u32>>,
}

impl Topology {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        self.parents.iter().enumerate().filter(|(_, p)| p.is_none()).map(|(i, _)| i)
    }

    /// Children of every node, in canonical order.
    pub fn children(&self) -> Vec<Vec<usize>> {
        let mut children = vec![Vec::new(); self.len()];
        for (i, p) in self.parents.iter().enumerate() {
            if let Some(p) = p {
                children[*p as usize].push(i);
            }
        }
        children
    }

    /// Per node, the label of the span through which its trace entered the
    /// node's service (its nearest ancestor whose parent runs in another
    /// service, or the root), `u32::MAX` for a node that is such an entry
    /// itself. What a query or a lock costs depends on the endpoint that
    /// runs it, not only on the method around it.
    pub fn entries(&self, labels: &[Label]) -> Vec<u32> {
        let service = |k: usize| labels.get(self.labels[k] as usize).map(|l| l.service.as_str());
        let mut out = vec![u32::MAX; self.len()];
        // Parents precede their children, so one pass sees every parent's entry first.
        for k in 0..self.len() {
            if let Some(p) = self.parents[k].map(|p| p as usize)
                && service(p) == service(k)
            {
                out[k] = if out[p] == u32::MAX { self.labels[p] } else { out[p] };
            }
        }
        out
    }

    /// Edges (parent, child) in pre-order of the child.
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.parents.iter().enumerate().filter_map(|(i, p)| p.map(|p| (p as usize, i)))
    }

    /// Chains of at most `chain_length` nodes covering every edge exactly once,
    /// each headed by a root or a node of an earlier chain (the same
    /// decomposition as [`TraceGraph::chains`], on canonical node indices).
    pub fn chains(&self, chain_length: usize) -> Vec<Vec<usize>> {
        let roots: Vec<usize> = self.roots().collect();
        crate::trace::chains(&roots, &self.children(), chain_length)
    }
}

/// Where one trace landed in the histogram: its topology and, per canonical
/// node, the index of the span in `trace.spans`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub topology: usize,
    pub spans: Vec<usize>,
}

/// The histogram: distinct topologies (in order of first appearance) and their counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "Compact", try_from = "Compact")]
pub struct TopologyHistogram {
    pub labels: Vec<Label>,
    pub topologies: Vec<Topology>,
    pub counts: Vec<u32>,
}

impl TopologyHistogram {
    /// Counts the topologies of `traces`; also returns where each trace landed.
    pub fn build(traces: &[Trace]) -> (Self, Vec<Placement>) {
        let mut builder = HistogramBuilder::default();
        let placements = traces.iter().map(|t| builder.add(t)).collect();
        (builder.finish(), placements)
    }

    /// Number of traces counted.
    pub fn traces(&self) -> u64 {
        self.counts.iter().fold(0u64, |sum, &c| sum.saturating_add(u64::from(c)))
    }

    /// Number of spans in the counted traces.
    pub fn spans(&self) -> u64 {
        // Saturating: a decoded histogram is checked against limits with these.
        self.topologies
            .iter()
            .zip(&self.counts)
            .fold(0u64, |sum, (t, &c)| sum.saturating_add((t.len() as u64).saturating_mul(u64::from(c))))
    }

    /// The topology index of every trace to regenerate: each topology exactly
    /// as many times as it was counted, in histogram order.
    pub fn expand(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.traces() as usize);
        for (i, &c) in self.counts.iter().enumerate() {
            out.extend(std::iter::repeat_n(i, c as usize));
        }
        out
    }
}

/// A histogram counted one trace at a time, as a window's traces complete:
/// the trace can be dropped once added.
#[derive(Debug, Default)]
pub struct HistogramBuilder {
    histogram: TopologyHistogram,
    /// Every label seen, by service, then span name: looked up by the span's
    /// own strings, so a label is copied and escaped once, when new. Both
    /// maps are probed for every trace a window folds: foldhash, not SipHash
    /// (nothing is iterated, so their order never shows).
    seen: foldhash::HashMap<String, foldhash::HashMap<String, u32>>,
    /// Per label seen: its escaped form, hashed into the topology, and its
    /// index in the histogram (`u32::MAX` until a counted topology names
    /// it: labels are numbered in canonical order, as they always were).
    escaped: Vec<String>,
    indices: Vec<u32>,
    /// The trace being added: each span's label seen (reused).
    span_labels: Vec<u32>,
    shapes: foldhash::HashMap<Topology, usize>,
}

impl HistogramBuilder {
    /// Counts `trace`'s topology; returns where it landed.
    pub fn add(&mut self, trace: &Trace) -> Placement {
        self.add_spans(&trace.spans)
    }

    /// [`Self::add`] for a trace's spans in either form.
    pub fn add_spans<S: SpanView>(&mut self, spans: &[S]) -> Placement {
        let mut span_labels = std::mem::take(&mut self.span_labels);
        span_labels.clear();
        span_labels.extend(spans.iter().map(|s| self.seen(s)));
        let escaped = &self.escaped;
        let graph = TraceGraph::build_labelled(spans, |i, hasher| {
            hasher.update(escaped[span_labels[i] as usize].as_bytes());
        });
        let order = canonical_preorder(&graph);
        let mut position = vec![u32::MAX; graph.len()];
        for (k, &i) in order.iter().enumerate() {
            position[i] = k as u32;
        }
        let labels = order.iter().map(|&i| self.label(span_labels[i], &spans[i])).collect();
        self.span_labels = span_labels;
        let parents = order.iter().map(|&i| graph.parent(i).map(|p| position[p])).collect();
        let topology = Topology { labels, parents };
        let h = &mut self.histogram;
        let index = match self.shapes.get(&topology) {
            Some(&index) => index,
            None => {
                h.topologies.push(topology.clone());
                h.counts.push(0);
                self.shapes.insert(topology, h.topologies.len() - 1);
                h.topologies.len() - 1
            }
        };
        h.counts[index] = h.counts[index].saturating_add(1);
        Placement { topology: index, spans: order }
    }

    /// The label seen of `span`, escaped and remembered when new.
    fn seen(&mut self, span: &impl SpanView) -> u32 {
        let (service, name) = (span.service_name(), span.span_name());
        if let Some(&l) = self.seen.get(service).and_then(|names| names.get(name)) {
            return l;
        }
        let next = self.escaped.len() as u32;
        self.escaped.push(crate::trace::escaped_label(service, name));
        self.indices.push(u32::MAX);
        self.seen.entry(service.to_string()).or_default().insert(name.to_string(), next);
        next
    }

    /// The histogram's index of the label seen `seen`, numbered when first counted.
    fn label(&mut self, seen: u32, span: &impl SpanView) -> u32 {
        let index = &mut self.indices[seen as usize];
        if *index == u32::MAX {
            *index = self.histogram.labels.len() as u32;
            self.histogram.labels.push(Label { service: span.service_name().to_string(), name: span.span_name().to_string() });
        }
        *index
    }

    /// The histogram so far.
    pub fn histogram(&self) -> &TopologyHistogram {
        &self.histogram
    }

    pub fn finish(self) -> TopologyHistogram {
        self.histogram
    }
}

/// [`TopologyHistogram`] as a packet holds it: service names once, the
/// labels column by column (services' indices, names' lengths, the names
/// end to end), and the topologies column by
/// column (node counts, then every node's label, then every node's distance
/// to its parent, 0 for a root), which compresses far better than nested
/// lists of optional parents.
#[derive(serde::Serialize, serde::Deserialize)]
struct Compact {
    services: Vec<String>,
    /// Per label its service's index, then its name's length in bytes;
    /// the names follow end to end.
    label_services: Vec<u32>,
    name_lengths: Vec<u32>,
    names: String,
    lengths: Vec<u32>,
    nodes: Vec<u32>,
    parents: Vec<u32>,
    counts: Vec<u32>,
}

impl From<TopologyHistogram> for Compact {
    fn from(h: TopologyHistogram) -> Self {
        let mut services: Vec<String> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let (mut label_services, mut name_lengths, mut names) = (Vec::new(), Vec::new(), String::new());
        for l in h.labels {
            let next = services.len() as u32;
            label_services.push(*index.entry(l.service.clone()).or_insert_with(|| {
                services.push(l.service);
                next
            }));
            name_lengths.push(l.name.len() as u32);
            names.push_str(&l.name);
        }
        let lengths = h.topologies.iter().map(|t| t.len() as u32).collect();
        let nodes = h.topologies.iter().flat_map(|t| t.labels.iter().copied()).collect();
        let parents =
            h.topologies.iter().flat_map(|t| t.parents.iter().enumerate().map(|(k, p)| p.map_or(0, |p| k as u32 - p))).collect();
        Compact { services, label_services, name_lengths, names, lengths, nodes, parents, counts: h.counts }
    }
}

impl TryFrom<Compact> for TopologyHistogram {
    type Error = String;

    fn try_from(c: Compact) -> Result<Self, String> {
        let total: u64 = c.lengths.iter().map(|&n| u64::from(n)).sum();
        if total != c.nodes.len() as u64 || total != c.parents.len() as u64 || c.lengths.len() != c.counts.len() {
            return Err("the histogram's node, parent and count lists disagree in length".into());
        }
        if c.label_services.len() != c.name_lengths.len() {
            return Err("the histogram's label services and name lengths disagree in length".into());
        }
        let mut labels = Vec::with_capacity(c.label_services.len());
        let mut at = 0usize;
        for (&s, &length) in c.label_services.iter().zip(&c.name_lengths) {
            let service = c.services.get(s as usize).ok_or("a label names a missing service")?.clone();
            let end = at.checked_add(length as usize).ok_or("a label's name runs past the names")?;
            let name = c.names.get(at..end).ok_or("a label's name runs past the names or splits a character")?;
            labels.push(Label { service, name: name.to_string() });
            at = end;
        }
        if at != c.names.len() {
            return Err("the histogram's names hold more than its labels name".into());
        }
        let (mut nodes, mut parents) = (c.nodes.into_iter(), c.parents.into_iter());
        let mut topologies = Vec::with_capacity(c.lengths.len());
        for &n in &c.lengths {
            let mut t = Topology { labels: Vec::with_capacity(n as usize), parents: Vec::with_capacity(n as usize) };
            for k in 0..n {
                let (label, distance) = (nodes.next().unwrap_or(u32::MAX), parents.next().unwrap_or(u32::MAX));
                if label as usize >= labels.len() || distance > k {
                    return Err("a topology names a missing label or a parent outside it".into());
                }
                t.labels.push(label);
                t.parents.push((distance > 0).then(|| k - distance));
            }
            topologies.push(t);
        }
        Ok(TopologyHistogram { labels, topologies, counts: c.counts })
    }
}

/// Nodes of `graph` in canonical pre-order, iteratively (traces can be deep).
fn canonical_preorder<S: SpanView>(graph: &TraceGraph<S>) -> Vec<usize> {
    let mut order = Vec::with_capacity(graph.len());
    let mut stack: Vec<usize> = graph.roots().iter().rev().copied().collect();
    while let Some(node) = stack.pop() {
        order.push(node);
        stack.extend(graph.children(node).iter().rev());
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Resource, test_span};

    /// Trace `n`: a root and three children (service, name) whose labels
    /// need escaping, so the cached escaped labels decide their order.
    fn trace(n: u8, children: [(&str, &str); 3]) -> Trace {
        let mut spans = vec![test_span(n, 1, None, 0, 100)];
        for (k, (service, name)) in children.iter().enumerate() {
            let mut child = test_span(n, k as u8 + 2, Some(1), 10 + k as u64, 20);
            child.name = (*name).into();
            child.resource = Resource::new(*service, vec![]);
            spans.push(child);
        }
        Trace { trace_id: spans[0].trace_id, spans }
    }

    #[test]
    fn a_histogram_comes_back_from_its_columns_and_hostile_names_are_refused() {
        let (a, b, c) = (("front", "GET /a(b)"), ("cart/v2", "prüfen ✓"), ("front", ""));
        let traces = [trace(1, [a, b, c]), trace(2, [c, a, b]), trace(3, [("front", "z"), c, b])];
        let (h, _) = TopologyHistogram::build(&traces);
        let bytes = postcard::to_stdvec(&h).unwrap();
        assert_eq!(postcard::from_bytes::<TopologyHistogram>(&bytes).unwrap(), h);

        let compact = || Compact::from(h.clone());
        let refused = |c: Compact| TopologyHistogram::try_from(c).unwrap_err();
        let mut split = compact();
        let k = h.labels.iter().position(|l| l.name.starts_with("prüfen")).unwrap();
        // Its last byte off: the name ends inside "✓".
        split.name_lengths[k] -= 1;
        assert!(refused(split).contains("splits a character"));
        let mut long = compact();
        long.name_lengths[0] += 1000;
        assert!(refused(long).contains("runs past"));
        let mut extra = compact();
        extra.names.push('x');
        assert!(refused(extra).contains("more than its labels"));
        let mut lost = compact();
        lost.label_services.pop();
        assert!(refused(lost).contains("disagree"));
    }

    #[test]
    fn a_node_s_entry_is_the_span_its_trace_entered_its_service_through() {
        let label = |service: &str, name: &str| Label { service: service.into(), name: name.into() };
        // 0 front GET → 1 front handler → 2 db query → 3 db plan → 4 db read; 1 → 5 front render.
        let labels = vec![
            label("front", "GET"),
            label("front", "handler"),
            label("db", "query"),
            label("db", "plan"),
            label("db", "read"),
            label("front", "render"),
        ];
        let topology = Topology { labels: (0..6).collect(), parents: vec![None, Some(0), Some(1), Some(2), Some(3), Some(1)] };
        let entered = u32::MAX;
        assert_eq!(topology.entries(&labels), vec![entered, 0, entered, 2, 2, 0]);
    }

    #[test]
    fn cached_labels_place_nodes_as_the_graph_orders_them_and_number_labels_in_canonical_order() {
        let (a, b, c) = (("front", "GET /a(b)"), ("cart/v2", "x,y"), ("front", "a|b"));
        let traces = [trace(1, [a, b, c]), trace(2, [c, a, b]), trace(3, [("front", "z"), c, b])];
        let mut builder = HistogramBuilder::default();
        let mut expected_labels: Vec<Label> = Vec::new();
        for t in &traces {
            let placement = builder.add(t);
            let graph = TraceGraph::build(t);
            assert_eq!(placement.spans, canonical_preorder(&graph), "canonical order of trace {:?}", t.trace_id);
            for &i in &placement.spans {
                let label = Label { service: t.spans[i].service().to_string(), name: t.spans[i].name.clone() };
                if !expected_labels.contains(&label) {
                    expected_labels.push(label);
                }
            }
            let h = builder.histogram();
            let topology = &h.topologies[placement.topology];
            let names: Vec<&str> = topology.labels.iter().map(|&l| h.labels[l as usize].name.as_str()).collect();
            let expected: Vec<&str> = placement.spans.iter().map(|&i| t.spans[i].name.as_str()).collect();
            assert_eq!(names, expected);
        }
        assert_eq!(builder.histogram().labels, expected_labels);
        assert_eq!(builder.histogram().counts, vec![2, 1], "the first two traces share a topology, the third does not");
    }
}
