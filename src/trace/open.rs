//! Open traces in compact form (issue 20). A trace stays open for at least
//! `window.trace_idle` after its last span, so at a high rate most resident
//! spans are open ones: each is held as a fixed-size [`OpenSpan`] (ids and
//! times inline, resource and scope shared, the name interned) instead of a
//! [`Span`] with its own name string. Attributes are kept protobuf-encoded
//! and interned as a set: the spans of one pod or one endpoint mostly carry
//! the same set, so a span holds one pointer to it instead of a vector of
//! strings (about 200 bytes a span with a single attribute). What most spans
//! lack, a status message, events and links, is kept as received behind one
//! pointer, only for the spans that have them. A completed trace becomes
//! spans again on the fold thread, off the receivers' runtime.

use foldhash::HashSet;
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::span::{Attributes, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, Trace, TraceId};
use opentelemetry_proto::tonic::common::v1::KeyValueList;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use prost::Message;

/// Most distinct span names, and most distinct attribute sets, interned at
/// once; past it a new one gets a copy of its own per span (hostile input
/// cannot grow the tables).
const MAX_INTERNED: usize = 65_536;
/// Attribute sets larger than this (encoded) are not interned: they are
/// rarely shared, and the bound keeps the table's bytes at most
/// `MAX_INTERNED` × this.
const MAX_INTERNED_SET_BYTES: usize = 1024;

/// A span of an open trace, without its trace id (the trace's key).
/// Compared as the span it stands for (names and attribute sets by value).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSpan {
    span_id: SpanId,
    /// As received (it fits in the padding: no bytes to save by a sentinel).
    parent_span_id: Option<SpanId>,
    start: u64,
    end: u64,
    resource: Arc<Resource>,
    scope: Arc<Scope>,
    name: Name,
    attributes: Option<Blob>,
    rest: Option<Box<Rest>>,
    kind: SpanKind,
    status: StatusCode,
}

/// What most spans lack.
#[derive(Debug, Clone, PartialEq)]
struct Rest {
    status_message: String,
    events: Vec<Event>,
    links: Vec<Link>,
}

impl OpenSpan {
    pub fn new(span: Span, names: &mut Names) -> Self {
        let Span { span_id, parent_span_id, resource, scope, name, kind, status, start, end, attributes, events, links, .. } =
            span;
        let bare = status.message.is_empty() && events.is_empty() && links.is_empty();
        let rest = (!bare).then(|| Box::new(Rest { status_message: status.message, events, links }));
        OpenSpan {
            span_id,
            parent_span_id,
            start,
            end,
            resource,
            scope,
            name: names.intern(&name),
            attributes: (!attributes.is_empty()).then(|| names.intern_attributes(attributes)),
            rest,
            kind,
            status: status.code,
        }
    }

    pub fn into_span(self, trace_id: TraceId) -> Span {
        let (message, events, links) = match self.rest {
            Some(rest) => {
                let Rest { status_message, events, links } = *rest;
                (status_message, events, links)
            }
            None => Default::default(),
        };
        let attributes = self.attributes.map(|set| set.decode()).unwrap_or_default();
        Span {
            trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            resource: self.resource,
            scope: self.scope,
            name: self.name.0.to_string(),
            kind: self.kind,
            status: Status { code: self.status, message },
            start: self.start,
            end: self.end,
            attributes,
            events,
            links,
        }
    }
}

super::span::impl_span_view!(OpenSpan, |s| s.status);

impl super::assemble::Repairable for OpenSpan {
    fn set_end(&mut self, end: u64) {
        self.end = end;
    }
    fn clear_parent(&mut self) {
        self.parent_span_id = None;
    }
}

/// An interned value behind one thin pointer (an `Arc<str>` or `Arc<[u8]>`
/// is two words), compared and hashed as the value itself so that lookups
/// by a borrowed `&str` or `&[u8]` find it.
#[derive(Debug)]
struct Shared<T: ?Sized>(Arc<Box<T>>);

impl<T: ?Sized> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: ?Sized> Borrow<T> for Shared<T> {
    fn borrow(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        **self.0 == **other.0
    }
}

impl<T: ?Sized + Eq> Eq for Shared<T> {}

impl<T: ?Sized + Hash> Hash for Shared<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self.0).hash(state)
    }
}

/// An interned span name: thin, 8 of a span's bytes (80 instead of 88 on
/// every resident span).
type Name = Shared<str>;

/// A span's attributes, encoded as a protobuf `KeyValueList` and shared by
/// every open span with the same set (one pointer in the span).
type Blob = Shared<[u8]>;

impl Blob {
    fn decode(&self) -> Attributes {
        // The bytes are our own encoding of a list the receiver decoded
        // within prost's limits, so decoding them again cannot fail.
        KeyValueList::decode(&self.0[..]).map(|list| list.values).unwrap_or_default()
    }
}

/// Span names and attribute sets in use, each held once.
#[derive(Debug, Default)]
pub struct Names {
    table: HashSet<Name>,
    attributes: HashSet<Blob>,
    /// Reused for encoding each span's attributes.
    scratch: Vec<u8>,
}

impl Names {
    fn intern(&mut self, name: &str) -> Name {
        if let Some(known) = self.table.get(name) {
            return known.clone();
        }
        let name = Shared(Arc::new(name.into()));
        if self.table.len() < MAX_INTERNED {
            self.table.insert(name.clone());
        }
        name
    }

    fn intern_attributes(&mut self, values: Attributes) -> Blob {
        self.scratch.clear();
        // A `Vec` grows as needed: encoding into it cannot run out of room.
        let _ = KeyValueList { values }.encode(&mut self.scratch);
        if let Some(known) = self.attributes.get(&self.scratch[..]) {
            return known.clone();
        }
        let set = Shared(Arc::new(self.scratch.as_slice().into()));
        if self.attributes.len() < MAX_INTERNED && self.scratch.len() <= MAX_INTERNED_SET_BYTES {
            self.attributes.insert(set.clone());
        }
        set
    }

    /// Forgets the names and attribute sets no open span uses any more.
    pub fn prune(&mut self) {
        self.table.retain(|name| Arc::strong_count(&name.0) > 1);
        self.attributes.retain(|set| Arc::strong_count(&set.0) > 1);
        self.scratch = Vec::new();
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }
}

/// A completed trace's spans, back in full.
pub fn into_spans(trace_id: TraceId, spans: Vec<OpenSpan>) -> Vec<Span> {
    spans.into_iter().map(|s| s.into_span(trace_id)).collect()
}

/// A whole trace in compact form, as a window's samples hold it until the
/// window closes (about a third of the bytes of its [`Trace`]).
#[derive(Debug)]
pub struct PackedTrace {
    pub trace_id: TraceId,
    spans: Vec<OpenSpan>,
}

impl PackedTrace {
    /// Packs `trace`, taken by value: its strings and attribute sets move
    /// into the packed spans or the table, nothing is copied twice.
    pub fn pack(trace: Trace, names: &mut Names) -> Self {
        // Not `collect()`: std collects a mapped `vec::IntoIter` in place,
        // and the packed spans would keep the full spans' buffer (200 bytes
        // and the buffer's spare room a span instead of 80).
        let mut spans = Vec::with_capacity(trace.spans.len());
        spans.extend(trace.spans.into_iter().map(|s| OpenSpan::new(s, names)));
        PackedTrace { trace_id: trace.trace_id, spans }
    }

    /// A repaired trace's spans, as they are (see [`super::assemble_open`]).
    pub(super) fn new(trace_id: TraceId, spans: Vec<OpenSpan>) -> Self {
        PackedTrace { trace_id, spans }
    }

    pub fn span_count(&self) -> usize {
        self.spans.len()
    }

    pub fn spans(&self) -> &[OpenSpan] {
        &self.spans
    }

    /// Earliest span start, as [`Trace::start`].
    pub fn start(&self) -> u64 {
        super::start_of(&self.spans)
    }

    /// Latest span end, as [`Trace::end`].
    pub fn end(&self) -> u64 {
        super::end_of(&self.spans)
    }

    /// Its stratum and length, as [`super::stratified`] keys a full trace.
    pub fn stratum(&self) -> (super::Stratum<'_>, u64) {
        let (service, name) = self.spans.first().map_or(("", ""), |s| (s.resource.service.as_str(), &**s.name.0));
        let start = self.start();
        (super::stratum(service, name, self.spans.len(), start), self.end().saturating_sub(start))
    }

    /// The trace in full again.
    pub fn unpack(&self) -> Trace {
        let spans = self.spans.iter().map(|s| s.clone().into_span(self.trace_id)).collect();
        Trace { trace_id: self.trace_id, spans }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

    #[test]
    fn an_open_span_is_small_and_gives_back_the_span_it_was() {
        assert!(std::mem::size_of::<OpenSpan>() <= 80, "{} bytes", std::mem::size_of::<OpenSpan>());
        let mut names = Names::default();
        let mut bare = super::super::span::test_span(1, 2, Some(1), 10, 20);
        bare.name = "GET /cart".into();
        let mut full = super::super::span::test_span(1, 3, None, 11, 30);
        full.name = "GET /cart".into();
        full.status = Status { code: StatusCode::Error, message: "boom".into() };
        full.attributes = vec![KeyValue { key: "http.method".into(), ..Default::default() }];
        full.events = vec![Event { name: "retry".into(), ..Default::default() }];
        let open: Vec<OpenSpan> = [bare.clone(), full.clone()].into_iter().map(|s| OpenSpan::new(s, &mut names)).collect();
        assert!(open[0].rest.is_none(), "nothing behind the pointer for a bare span");
        assert!(Arc::ptr_eq(&open[0].name.0, &open[1].name.0), "one copy of a name");
        assert_eq!(names.len(), 1);
        assert_eq!(into_spans(bare.trace_id, open), vec![bare, full]);
        names.prune();
        assert_eq!(names.len(), 0, "no open span uses the name any more");
    }

    #[test]
    fn spans_with_the_same_attributes_share_one_encoded_set() {
        let mut names = Names::default();
        let attribute = |value: &str| KeyValue {
            key: "k8s.pod.name".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        };
        let spans: Vec<Span> = ["pod-a", "pod-a", "pod-b"]
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let mut span = super::super::span::test_span(1, i as u8 + 2, Some(1), 10, 20);
                span.attributes = vec![attribute(pod)];
                span
            })
            .collect();
        let open: Vec<OpenSpan> = spans.iter().cloned().map(|s| OpenSpan::new(s, &mut names)).collect();
        let set = |i: usize| &open[i].attributes.as_ref().expect("attributes").0;
        assert!(Arc::ptr_eq(set(0), set(1)), "one copy of a shared set");
        assert!(!Arc::ptr_eq(set(0), set(2)));
        assert!(open.iter().all(|s| s.rest.is_none()), "attributes alone need no box");
        assert_eq!(names.attributes.len(), 2);
        assert_eq!(into_spans(spans[0].trace_id, open), spans);
        names.prune();
        assert_eq!(names.attributes.len(), 0, "no open span uses the sets any more");

        let mut large = super::super::span::test_span(1, 9, None, 10, 20);
        large.attributes = vec![attribute(&"x".repeat(MAX_INTERNED_SET_BYTES))];
        let kept = OpenSpan::new(large.clone(), &mut names);
        assert_eq!(names.attributes.len(), 0, "a set past the size bound is not interned");
        assert_eq!(kept.into_span(large.trace_id), large);
    }

    #[test]
    fn a_packed_trace_unpacks_to_the_trace_it_was() {
        let mut names = Names::default();
        let mut root = super::super::span::test_span(4, 1, None, 10, 40);
        root.attributes = vec![KeyValue { key: "http.route".into(), ..Default::default() }];
        // A buffer with room to spare, as a trace's spans grow by pushing.
        let mut spans = Vec::with_capacity(64);
        spans.extend([root, super::super::span::test_span(4, 2, Some(1), 12, 30)]);
        let trace = Trace { trace_id: spans[0].trace_id, spans: spans.clone() };
        let packed = PackedTrace::pack(Trace { trace_id: trace.trace_id, spans }, &mut names);
        assert_eq!(packed.span_count(), 2);
        assert_eq!(packed.spans.capacity(), 2, "a packed trace keeps no buffer of the full spans' size");
        assert_eq!(packed.unpack(), trace);
        let first = &trace.spans[0];
        let key = (super::super::stratum(first.service(), &first.name, 2, trace.start()), trace.end() - trace.start());
        assert_eq!(packed.stratum(), key, "keyed as a full trace is for stratified samples");
    }

    #[test]
    fn names_past_the_table_s_bound_are_not_interned() {
        let mut names = Names::default();
        let held: Vec<Name> = (0..MAX_INTERNED + 10).map(|i| names.intern(&format!("name {i}"))).collect();
        assert_eq!(names.len(), MAX_INTERNED);
        assert_eq!(&**held[MAX_INTERNED + 5].0, "name 65541");
    }
}
