//! The DAG of one trace, its canonical topology and its chains.
//!
//! Topology = the span tree with each node labelled `service/span name`. Children
//! are ordered by a Merkle hash of their labelled subtree, which is canonical (it
//! depends only on the shape and labels) and costs O(n), unlike sorting by subtree
//! strings, which is quadratic on deep traces. The canonical string is a pre-order
//! serialisation in that order and its xxh3-64 is the topology hash: a fixed
//! algorithm, so the id is stable across runs, machines and releases.

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::span::{Span, SpanId, SpanView, Trace};

/// A trace as a forest over its spans: node `i` is `spans[i]`, edges run
/// parent → child. Spans whose parent is missing from the trace are fragment
/// roots. The spans are full ([`Span`]) or compact (a window's open form).
#[derive(Debug, Clone)]
pub struct TraceGraph<'a, S = Span> {
    spans: &'a [S],
    /// Children of each node in canonical order.
    children: Vec<Vec<usize>>,
    parent: Vec<Option<usize>>,
    /// Roots in canonical order.
    roots: Vec<usize>,
    /// Roots whose span names a parent that is not in the trace.
    orphans: usize,
    /// 1-based depth of each node (roots are at depth 1).
    depth: Vec<u32>,
    /// Merkle hash of each node's labelled subtree.
    subtree_hash: Vec<u64>,
}

impl<'a> TraceGraph<'a> {
    /// Builds the forest. Expects the parent links to be acyclic, as
    /// [`crate::trace::assemble`] guarantees; spans on a cycle that survived
    /// anyway are unreachable from every root and left out of the topology.
    pub fn build(trace: &'a Trace) -> Self {
        Self::of(&trace.spans)
    }
}

impl<'a, S: SpanView> TraceGraph<'a, S> {
    /// [`TraceGraph::build`] over a trace's spans in either form.
    pub fn of(spans: &'a [S]) -> Self {
        // One buffer for every label hashed, not a string per span.
        let mut label = String::new();
        Self::build_labelled(spans, |i, hasher| {
            label.clear();
            let span = &spans[i];
            label_into(span.service_name(), span.span_name(), &mut label);
            hasher.update(label.as_bytes());
        })
    }

    /// [`Self::of`] with each span's escaped label (see [`escaped_label`])
    /// fed to the hasher by the caller, e.g. from a cache of the labels seen:
    /// a window folds millions of traces over a few hundred labels.
    pub fn build_labelled(spans: &'a [S], hash_label: impl FnMut(usize, &mut Xxh3)) -> Self {
        let n = spans.len();
        // Built for every trace a window folds: foldhash, not SipHash.
        let index: foldhash::HashMap<SpanId, usize> = spans.iter().enumerate().map(|(i, s)| (s.id(), i)).collect();
        let mut children = vec![Vec::new(); n];
        let mut parent = vec![None; n];
        let mut orphans = 0;
        for (i, span) in spans.iter().enumerate() {
            match span.parent_id().map(|p| index.get(&p)) {
                Some(Some(&p)) => {
                    parent[i] = Some(p);
                    children[p].push(i);
                }
                Some(None) => orphans += 1,
                None => {}
            }
        }
        let mut this =
            TraceGraph { spans, children, parent, roots: Vec::new(), orphans, depth: vec![0; n], subtree_hash: vec![0; n] };
        this.order_canonically(hash_label);
        this
    }

    /// Appends node `i`'s label, `service/name` escaped (see [`label_into`]).
    fn label_into(&self, i: usize, out: &mut String) {
        let span = &self.spans[i];
        label_into(span.service_name(), span.span_name(), out);
    }

    fn order_canonically(&mut self, mut hash_label: impl FnMut(usize, &mut Xxh3)) {
        let spans = self.spans;
        let n = self.parent.len();
        let mut roots: Vec<usize> = (0..n).filter(|&i| self.parent[i].is_none()).collect();
        // Breadth-first from the roots gives depths and an order whose reverse
        // visits children before parents, without recursion on deep traces.
        let mut order = Vec::with_capacity(n);
        order.extend_from_slice(&roots);
        for &root in &roots {
            self.depth[root] = 1;
        }
        let mut next = 0;
        while let Some(&i) = order.get(next) {
            next += 1;
            for &c in &self.children[i] {
                self.depth[c] = self.depth[i] + 1;
                order.push(c);
            }
        }
        if order.len() < n {
            // Spans on a cycle: unreachable, and left out of every shape.
            for i in (0..n).filter(|&i| self.depth[i] == 0) {
                self.children[i].clear();
            }
        }
        let tie = |i: usize| (spans[i].start_ns(), spans[i].id());
        let mut hasher = Xxh3::new();
        for &i in order.iter().rev() {
            let mut kids = std::mem::take(&mut self.children[i]);
            kids.sort_by_key(|&c| (self.subtree_hash[c], tie(c)));
            hasher.reset();
            hash_label(i, &mut hasher);
            for &c in &kids {
                hasher.update(&self.subtree_hash[c].to_le_bytes());
            }
            self.subtree_hash[i] = hasher.digest();
            self.children[i] = kids;
        }
        roots.sort_by_key(|&r| (self.subtree_hash[r], tie(r)));
        self.roots = roots;
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    pub fn roots(&self) -> &[usize] {
        &self.roots
    }

    pub fn children(&self, node: usize) -> &[usize] {
        &self.children[node]
    }

    pub fn parent(&self, node: usize) -> Option<usize> {
        self.parent[node]
    }

    /// Spans whose parent id names a span absent from the trace.
    pub fn orphans(&self) -> usize {
        self.orphans
    }

    /// Number of levels of the deepest root-to-leaf path.
    pub fn depth(&self) -> u32 {
        self.depth.iter().copied().max().unwrap_or(0)
    }

    pub fn node_depth(&self, node: usize) -> u32 {
        self.depth[node]
    }

    pub fn max_fan_out(&self) -> usize {
        self.children.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Canonical pre-order serialisation: `label(child,child)`, roots joined by `|`.
    pub fn canonical_string(&self) -> String {
        enum Step {
            Open(usize),
            Text(&'static str),
        }
        let mut out = String::new();
        let mut stack: Vec<Step> = Vec::new();
        for (k, &root) in self.roots.iter().enumerate().rev() {
            stack.push(Step::Open(root));
            if k > 0 {
                stack.push(Step::Text("|"));
            }
        }
        while let Some(step) = stack.pop() {
            match step {
                Step::Text(t) => out.push_str(t),
                Step::Open(i) => {
                    self.label_into(i, &mut out);
                    let kids = &self.children[i];
                    if kids.is_empty() {
                        continue;
                    }
                    out.push('(');
                    stack.push(Step::Text(")"));
                    for (k, &c) in kids.iter().enumerate().rev() {
                        stack.push(Step::Open(c));
                        if k > 0 {
                            stack.push(Step::Text(","));
                        }
                    }
                }
            }
        }
        out
    }

    /// Stable 64-bit id of the topology: xxh3-64 of [`Self::canonical_string`].
    pub fn topology_hash(&self) -> u64 {
        topology_hash(&self.canonical_string())
    }

    /// Decomposes the forest into chains of at most `chain_length` nodes (Gen-T §3,
    /// "Recursive chain metadata generation") so that every edge lies on exactly one
    /// chain and each chain's head is a root or a node of an earlier chain. A chain
    /// follows first children from its head; every other child edge starts a new
    /// chain at its parent. Chains come in generation order (breadth-first from
    /// the roots), so a head is always filled before its chain is generated.
    pub fn chains(&self, chain_length: usize) -> Vec<Vec<usize>> {
        chains(&self.roots, &self.children, chain_length)
    }
}

/// The chain decomposition of a forest given its roots and each node's
/// children in order (see [`TraceGraph::chains`]).
pub fn chains(roots: &[usize], children: &[Vec<usize>], chain_length: usize) -> Vec<Vec<usize>> {
    let chain_length = chain_length.max(2);
    let mut chains = Vec::new();
    // (head, index of the child that starts the chain)
    let mut pending: std::collections::VecDeque<(usize, usize)> =
        roots.iter().flat_map(|&r| (0..children[r].len()).map(move |k| (r, k))).collect();
    while let Some((head, k)) = pending.pop_front() {
        let mut chain = vec![head];
        let mut node = children[head][k];
        loop {
            chain.push(node);
            let kids = &children[node];
            let continues = chain.len() < chain_length && !kids.is_empty();
            pending.extend((usize::from(continues)..kids.len()).map(|j| (node, j)));
            if !continues {
                break;
            }
            node = kids[0];
        }
        chains.push(chain);
    }
    chains
}

/// xxh3-64 of a canonical topology string.
pub fn topology_hash(canonical: &str) -> u64 {
    xxh3_64(canonical.as_bytes())
}

/// `service/name` escaped as the canonical string spells it.
pub fn escaped_label(service: &str, name: &str) -> String {
    let mut out = String::with_capacity(service.len() + name.len() + 1);
    label_into(service, name, &mut out);
    out
}

/// Appends `service/name`, with the characters the canonical string uses as
/// syntax escaped so different topologies can never serialise alike.
fn label_into(service: &str, name: &str, out: &mut String) {
    escape_into(service, out);
    out.push('/');
    escape_into(name, out);
}

fn escape_into(text: &str, out: &mut String) {
    // One pass over the bytes, copying the runs between syntax characters
    // whole: every one is ASCII, so each sits on a character boundary.
    let mut run = 0;
    for (i, b) in text.bytes().enumerate() {
        if matches!(b, b'\\' | b'/' | b'(' | b')' | b',' | b'|') {
            out.push_str(&text[run..i]);
            out.push('\\');
            run = i;
        }
    }
    out.push_str(&text[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::span::{Resource, Scope, Span, SpanKind, Status};
    use std::collections::HashSet;
    use std::sync::Arc;

    fn span(id: u8, parent: Option<u8>, service: &str, name: &str, start: u64) -> Span {
        Span {
            trace_id: [7; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            resource: Resource::new(service, vec![]),
            scope: Arc::new(Scope::default()),
            name: name.into(),
            kind: SpanKind::Server,
            status: Status::default(),
            start,
            end: start + 1,
            attributes: vec![],
            events: vec![],
            links: vec![],
        }
    }

    fn trace(spans: Vec<Span>) -> Trace {
        Trace { trace_id: [7; 16], spans }
    }

    #[test]
    fn topology_ignores_child_order_and_times() {
        let a = trace(vec![
            span(1, None, "front", "GET /", 0),
            span(2, Some(1), "cart", "get", 1),
            span(3, Some(1), "db", "query", 2),
            span(4, Some(3), "disk", "read", 3),
        ]);
        let b = trace(vec![
            span(1, None, "front", "GET /", 100),
            span(3, Some(1), "db", "query", 101),
            span(4, Some(3), "disk", "read", 102),
            span(2, Some(1), "cart", "get", 150),
        ]);
        let (ga, gb) = (TraceGraph::build(&a), TraceGraph::build(&b));
        assert_eq!(ga.canonical_string(), gb.canonical_string());
        assert_eq!(ga.topology_hash(), gb.topology_hash());
        assert_eq!(ga.depth(), 3);
        assert_eq!(ga.max_fan_out(), 2);
        let c = trace(vec![span(1, None, "front", "GET /", 0), span(2, Some(1), "cart", "put", 1)]);
        assert_ne!(ga.topology_hash(), TraceGraph::build(&c).topology_hash());
    }

    #[test]
    fn labels_cannot_collide_through_syntax() {
        let a = trace(vec![span(1, None, "a", "b(c)", 0)]);
        let b = trace(vec![span(1, None, "a", "b", 0), span(2, Some(1), "c", "", 1)]);
        assert_ne!(TraceGraph::build(&a).canonical_string(), TraceGraph::build(&b).canonical_string());
    }

    #[test]
    fn escaping_copies_runs_and_escapes_each_syntax_character() {
        let by_char = |text: &str| {
            let mut out = String::new();
            for c in text.chars() {
                if matches!(c, '\\' | '/' | '(' | ')' | ',' | '|') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        };
        for text in ["", "GET /cart", "é/ü(x,y)|z\\", "//", "名前/サービス", "(", "plain"] {
            let mut out = String::from("prefix");
            escape_into(text, &mut out);
            assert_eq!(out, format!("prefix{}", by_char(text)), "{text:?}");
        }
    }

    #[test]
    fn hash_is_stable_across_releases() {
        let t = trace(vec![span(1, None, "front", "GET /", 0), span(2, Some(1), "cart", "get", 1)]);
        let g = TraceGraph::build(&t);
        assert_eq!(g.canonical_string(), "front/GET \\/(cart/get)");
        // Pinned: a change here would orphan every stored topology histogram.
        assert_eq!(g.topology_hash(), xxh3_64(b"front/GET \\/(cart/get)"));
    }

    #[test]
    fn fragments_and_orphans() {
        let t = trace(vec![span(1, None, "a", "x", 0), span(2, Some(9), "b", "y", 1)]);
        let g = TraceGraph::build(&t);
        assert_eq!(g.roots().len(), 2);
        assert_eq!(g.orphans(), 1);
        assert!(g.canonical_string().contains('|'));
    }

    #[test]
    fn chains_cover_every_edge_once_and_heads_come_first() {
        // 1 -> 2 -> 3 -> 4 -> 5, 1 -> 6, 3 -> 7
        let t = trace(vec![
            span(1, None, "s", "a", 0),
            span(2, Some(1), "s", "b", 1),
            span(3, Some(2), "s", "c", 2),
            span(4, Some(3), "s", "d", 3),
            span(5, Some(4), "s", "e", 4),
            span(6, Some(1), "s", "f", 5),
            span(7, Some(3), "s", "g", 6),
        ]);
        let g = TraceGraph::build(&t);
        for len in 2..=5 {
            let chains = g.chains(len);
            let mut edges = HashSet::new();
            let mut filled: HashSet<usize> = g.roots().iter().copied().collect();
            for chain in &chains {
                assert!(chain.len() >= 2 && chain.len() <= len, "{chain:?}");
                assert!(filled.contains(&chain[0]), "head filled before its chain");
                for w in chain.windows(2) {
                    assert_eq!(g.parent(w[1]), Some(w[0]));
                    assert!(edges.insert((w[0], w[1])), "edge on two chains");
                }
                filled.extend(chain.iter().copied());
            }
            assert_eq!(edges.len(), 6, "every edge covered with chain_length {len}");
        }
    }
}
