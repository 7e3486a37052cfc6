//! Every reader on the real data: counts, sniffing, and what each format maps to.

mod common;
use common::*;

use gent::io::{self, Format};
use gent::trace::{SpanKind, Stats, StatusCode, TraceGraph};

#[test]
fn every_fixture_reads_and_sniffs_as_its_format() {
    for (path, format) in fixtures() {
        let mut spans = Vec::new();
        let found = io::read_file(&path, None, &mut spans).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found, format, "{}", path.display());
        assert!(!spans.is_empty(), "{} gave no spans", path.display());
    }
}

/// The command of the issue's acceptance check, through the binary.
fn stats_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = gent().arg("stats").args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap()
}

#[test]
fn trainticket_counts() {
    let report = stats_json(&[data("trainticket").as_os_str()]);
    assert_eq!(report["traces"], 4894);
    assert_eq!(report["spans"], 235_271);
    assert_eq!(report["duplicate_spans"], 2018);
    assert_eq!(report["services"], 28);
    assert_eq!(report["orphan_spans"], 0);
    assert_eq!(report["defects"]["conflicting_duplicates"], 0);
    let topologies = report["topologies"].as_u64().unwrap();
    assert!(topologies > 10 && topologies < 4894);
}

#[test]
fn convert_then_stats_gives_the_same_counts() {
    let dir = tempfile::tempdir().unwrap();
    let input = data("hipster/03_57_trace.csv.gz");
    let before = stats_json(&[input.as_os_str()]);
    for to in ["otlp-json", "otlp-proto", "jaeger"] {
        let out = dir.path().join(format!("out.{to}"));
        let status = gent()
            .args(["convert".as_ref(), input.as_os_str(), "--to".as_ref(), to.as_ref(), "--out".as_ref(), out.as_os_str()])
            .status()
            .unwrap();
        assert!(status.success(), "convert --to {to}");
        let after = stats_json(&[out.as_os_str()]);
        for key in ["traces", "spans", "services", "span_names", "topologies", "max_depth"] {
            assert_eq!(after[key], before[key], "{key} after convert --to {to}");
        }
        // Duplicates were dropped on the way in.
        assert_eq!(after["duplicate_spans"], 0);
    }
}

#[test]
fn hipster_counts() {
    let stats = Stats::of(&read_set(&[data("hipster")]));
    assert_eq!(stats.traces, 2034);
    assert_eq!(stats.spans, 93_011);
    assert_eq!(stats.services, 10);
    assert_eq!(stats.duplicate_spans, 965);
}

#[test]
fn span_csv_maps_pods_to_services_and_keeps_the_pod() {
    let set = read_set(&[data("trainticket/12_00_trace.csv.gz")]);
    let span = &set.traces[0].spans[0];
    let pod = span.resource.attributes.iter().find(|kv| kv.key == "k8s.pod.name").expect("pod attribute");
    let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(pod)) =
        pod.value.as_ref().and_then(|v| v.value.clone())
    else {
        panic!("pod name is a string")
    };
    assert!(pod.starts_with(span.service()) && pod.len() > span.service().len() + 2);
    assert!(set.traces.iter().all(|t| { t.spans.iter().filter(|s| s.parent_span_id.is_none()).count() == 1 }));
}

#[test]
fn otlp_fixture_keeps_services_kinds_status_and_attributes() {
    let set = read_set(&[data("fixtures/otlp/quarkus-car-rental.jsonl")]);
    let stats = Stats::of(&set);
    // The exporter wrote 15 of the 83 spans twice, byte for byte.
    assert_eq!((stats.traces, stats.spans, stats.services), (3, 68, 10));
    assert_eq!(stats.duplicate_spans, 15);
    let spans: Vec<_> = set.traces.iter().flat_map(|t| &t.spans).collect();
    assert!(spans.iter().any(|s| s.kind == SpanKind::Client));
    assert!(spans.iter().any(|s| s.kind == SpanKind::Server));
    assert!(spans.iter().any(|s| s.attributes.iter().any(|kv| kv.key == "db.statement")));
    assert!(spans.iter().all(|s| s.end >= s.start && s.start > 1_700_000_000_000_000_000));
    assert!(spans.iter().any(|s| s.resource.attributes.iter().any(|kv| kv.key == "host.name")));
}

#[test]
fn jaeger_fixture_resolves_processes_and_references() {
    let set = read_set(&[data("fixtures/jaeger/compose-post_R500_trace_02_median.json")]);
    assert_eq!(set.traces.len(), 1);
    let trace = &set.traces[0];
    let graph = TraceGraph::build(trace);
    let stats = Stats::of(&set);
    assert!(stats.services >= 10, "{} services", stats.services);
    assert!(trace.spans.len() >= 25);
    assert_eq!(graph.roots().len(), 1);
    assert_eq!(graph.orphans(), 0);
    // Jaeger clients reuse the 64-bit trace id as the root span id.
    let timeline = Stats::of(&read_set(&[data("fixtures/jaeger/read-home-timeline_R600_trace_01_shortest.json")]));
    assert_eq!((timeline.spans, timeline.orphan_spans, timeline.max_depth), (7, 0, 6));
    assert!(graph.depth() >= 3);
    assert!(trace.spans.iter().all(|s| s.resource.attributes.iter().any(|kv| kv.key == "hostname")));
    let status = trace.spans.iter().flat_map(|s| &s.attributes).find(|kv| kv.key == "http.status_code");
    assert_eq!(
        status.and_then(|kv| kv.value.clone()).and_then(|v| v.value),
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(200)),
        "int64 tags stay integers"
    );
}

#[test]
fn zipkin_shared_spans_get_their_own_ids() {
    let set = read_set(&[data("fixtures/zipkin/skew.json")]);
    let spans = &set.traces[0].spans;
    assert_eq!(spans.len(), 4, "client and shared server halves both kept");
    assert_eq!(set.defects.conflicting_duplicates, 0);
    let graph = TraceGraph::build(&set.traces[0]);
    assert_eq!(graph.roots().len(), 1);
    assert_eq!(graph.depth(), 4, "get -> post(client) -> post(server) -> async");

    let big = Stats::of(&read_set(&[data("fixtures/zipkin/smartthings-mobile-web-install.json")]));
    assert_eq!(big.traces, 1);
    // 1041 records: 84 undated parts merge into their dated part, and five
    // `pusher` instances sharing one id each keep their own span.
    assert_eq!(big.spans, 1041 - 84);
    assert_eq!(big.services, 16);
    assert_eq!(big.defects.conflicting_duplicates, 0);
}

#[test]
fn zipkin_error_tags_become_error_status() {
    let set = read_set(&[data("fixtures/zipkin")]);
    let errors = set.traces.iter().flat_map(|t| &t.spans).filter(|s| s.status.code == StatusCode::Error).count();
    let tagged = std::fs::read_dir(data("fixtures/zipkin"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .map(|t| t.matches("\"error\":").count())
        .sum::<usize>();
    assert_eq!(errors, tagged);
}

#[test]
fn alibaba_graphs_become_traces() {
    let set = read_set(&[data("alibaba/callgraphs_train.txt")]);
    let stats = Stats::of(&set);
    assert_eq!(stats.traces, 911);
    assert_eq!(stats.spans, 3885);
    assert_eq!(stats.duplicate_spans + stats.defects.conflicting_duplicates, 0);
    // Graph headers state the depth; the DAG must agree where they do.
    let text = std::fs::read_to_string(data("alibaba/callgraphs_train.txt")).unwrap();
    let max_depth = text
        .lines()
        .filter_map(|l| l.split('/').find_map(|kv| kv.strip_prefix("depth:")))
        .filter_map(|d| d.parse::<u32>().ok())
        .max()
        .unwrap();
    assert_eq!(stats.max_depth, max_depth);
}

#[test]
fn forced_format_overrides_sniffing() {
    let mut spans = Vec::new();
    let err = io::read_file(&data("fixtures/zipkin/skew.json"), Some(Format::Jaeger), &mut spans).unwrap_err();
    assert!(err.to_string().contains("Jaeger"), "{err}");
    assert!(spans.is_empty());
}

#[test]
fn otlp_json_tolerates_what_producers_differ_on() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    // Times as numbers and as strings, intValue as number and as string,
    // upper-case hex ids, a doubleValue written as an integer.
    let text = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},
      "scopeSpans":[{"scope":{"name":"s"},"spans":[
        {"traceId":"0123456789ABCDEF0123456789ABCDEF","spanId":"0123456789ABCDEF","name":"a","kind":2,
         "startTimeUnixNano":1700000000000000000,"endTimeUnixNano":"1700000000000001000",
         "attributes":[{"key":"n","value":{"intValue":7}},{"key":"s","value":{"intValue":"-8"}},
                       {"key":"d","value":{"doubleValue":3}}]}]}]}]}"#;
    let mut spans = Vec::new();
    io::decode(text, Format::OtlpJson, &mut spans).unwrap();
    let span = &spans[0];
    assert_eq!(span.service(), "cart");
    assert_eq!(span.span_id, [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    assert_eq!(span.kind, SpanKind::Server);
    assert_eq!(span.end - span.start, 1000);
    let values: Vec<_> = span.attributes.iter().map(|kv| kv.value.clone().unwrap().value.unwrap()).collect();
    assert_eq!(values, [Value::IntValue(7), Value::IntValue(-8), Value::DoubleValue(3.0)]);
}

#[test]
fn assembling_grouped_spans_equals_assembling_loose_ones() {
    // Duplicates in this set straddle minute files, so read it whole.
    let spans = io::read_inputs(&[data("trainticket")], None).unwrap().spans;
    let mut groups: std::collections::HashMap<_, Vec<_>> = Default::default();
    for span in spans.iter().cloned() {
        groups.entry(span.trace_id).or_default().push(span);
    }
    let grouped = gent::trace::assemble_grouped(groups.into_values());
    let loose = gent::trace::assemble(spans);
    assert!(loose.defects.duplicate_spans > 0, "the file has duplicates to drop");
    assert_eq!(grouped.defects, loose.defects);
    assert_eq!(grouped.traces, loose.traces);
}
