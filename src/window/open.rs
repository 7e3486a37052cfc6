//! Open traces in compact form (issue 20). A trace stays open for at least
//! `window.trace_idle` after its last span, so at a high rate most resident
//! spans are open ones: each is held as a fixed-size [`OpenSpan`] (ids and
//! times inline, resource and scope shared, the name interned) instead of a
//! [`Span`] with its own name string. What most spans of a trace lack, a
//! status message, attributes, events and links, is kept as received behind
//! one pointer, only for the spans that have them. A completed trace becomes
//! spans again on the fold thread, off the receivers' runtime.

use std::collections::HashSet;
use std::sync::Arc;

use crate::trace::{Attributes, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

/// Most distinct span names interned at once; past it a new name gets a
/// copy of its own per span (hostile input cannot grow the table).
const MAX_NAMES: usize = 65_536;

/// A span of an open trace, without its trace id (the trace's key).
#[derive(Debug, Clone)]
pub struct OpenSpan {
    span_id: SpanId,
    /// All zeroes: none (an all-zero span id is invalid in OTLP).
    parent_span_id: SpanId,
    start: u64,
    end: u64,
    resource: Arc<Resource>,
    scope: Arc<Scope>,
    name: Arc<str>,
    rest: Option<Box<Rest>>,
    kind: SpanKind,
    status: StatusCode,
}

/// What most spans lack.
#[derive(Debug, Clone)]
struct Rest {
    status_message: String,
    attributes: Attributes,
    events: Vec<Event>,
    links: Vec<Link>,
}

impl OpenSpan {
    pub fn new(span: Span, names: &mut Names) -> Self {
        let Span { span_id, parent_span_id, resource, scope, name, kind, status, start, end, attributes, events, links, .. } =
            span;
        let bare = status.message.is_empty() && attributes.is_empty() && events.is_empty() && links.is_empty();
        let rest = (!bare).then(|| Box::new(Rest { status_message: status.message, attributes, events, links }));
        OpenSpan {
            span_id,
            // A zero parent id is no parent in OTLP too: nothing is lost.
            parent_span_id: parent_span_id.unwrap_or_default(),
            start,
            end,
            resource,
            scope,
            name: names.intern(&name),
            rest,
            kind,
            status: status.code,
        }
    }

    pub fn into_span(self, trace_id: TraceId) -> Span {
        let (message, attributes, events, links) = match self.rest {
            Some(rest) => {
                let Rest { status_message, attributes, events, links } = *rest;
                (status_message, attributes, events, links)
            }
            None => Default::default(),
        };
        Span {
            trace_id,
            span_id: self.span_id,
            parent_span_id: (self.parent_span_id != SpanId::default()).then_some(self.parent_span_id),
            resource: self.resource,
            scope: self.scope,
            name: self.name.to_string(),
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

/// Span names in use, each held once.
#[derive(Debug, Default)]
pub struct Names {
    table: HashSet<Arc<str>>,
}

impl Names {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.table.get(name) {
            return known.clone();
        }
        let name: Arc<str> = Arc::from(name);
        if self.table.len() < MAX_NAMES {
            self.table.insert(name.clone());
        }
        name
    }

    /// Forgets the names no open span uses any more.
    pub fn prune(&mut self) {
        self.table.retain(|name| Arc::strong_count(name) > 1);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }
}

/// A completed trace's spans, back in full.
pub fn into_spans(trace_id: TraceId, spans: Vec<OpenSpan>) -> Vec<Span> {
    spans.into_iter().map(|s| s.into_span(trace_id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValue;

    #[test]
    fn an_open_span_is_small_and_gives_back_the_span_it_was() {
        assert!(std::mem::size_of::<OpenSpan>() <= 88, "{} bytes", std::mem::size_of::<OpenSpan>());
        let mut names = Names::default();
        let mut bare = crate::trace::test_span(1, 2, Some(1), 10, 20);
        bare.name = "GET /cart".into();
        let mut full = crate::trace::test_span(1, 3, None, 11, 30);
        full.name = "GET /cart".into();
        full.status = Status { code: StatusCode::Error, message: "boom".into() };
        full.attributes = vec![KeyValue { key: "http.method".into(), ..Default::default() }];
        full.events = vec![Event { name: "retry".into(), ..Default::default() }];
        let open: Vec<OpenSpan> = [bare.clone(), full.clone()].into_iter().map(|s| OpenSpan::new(s, &mut names)).collect();
        assert!(open[0].rest.is_none(), "nothing behind the pointer for a bare span");
        assert!(Arc::ptr_eq(&open[0].name, &open[1].name), "one copy of a name");
        assert_eq!(names.len(), 1);
        assert_eq!(into_spans(bare.trace_id, open), vec![bare, full]);
        names.prune();
        assert_eq!(names.len(), 0, "no open span uses the name any more");
    }

    #[test]
    fn names_past_the_table_s_bound_are_not_interned() {
        let mut names = Names::default();
        let held: Vec<Arc<str>> = (0..MAX_NAMES + 10).map(|i| names.intern(&format!("name {i}"))).collect();
        assert_eq!(names.len(), MAX_NAMES);
        assert_eq!(&*held[MAX_NAMES + 5], "name 65541");
    }
}
