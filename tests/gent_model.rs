//! The Gen-T window model on real data: train, store as a packet, regenerate;
//! the output has the real topology counts and is made of valid traces.

mod common;

use std::collections::{HashMap, HashSet};

use burn::tensor::Device;
use common::{data, read_set};
use gent::gent::{GenTConfig, Generators, StoredWindowModel, TopologyHistogram, WindowModel};
use gent::nn::CtganConfig;
use gent::nn::weights::Precision;
use gent::trace::{Trace, TraceGraph, TraceSet};

fn tiny() -> GenTConfig {
    GenTConfig {
        chain_length: 3,
        gcn: true,
        ctgan: CtganConfig { epochs: 1, embedding: 8, generator: vec![16], critic: vec![16], seed: 3, ..CtganConfig::default() },
        ..GenTConfig::default()
    }
}

/// Tiny generators that also carry timing, their ranks driving the calibration.
fn tiny_generators() -> GenTConfig {
    GenTConfig { generators: Generators::Always, ..tiny() }
}

/// Gen-T's CTGAN timing alone (no calibration), tiny.
fn tiny_uncalibrated() -> GenTConfig {
    let mut c = tiny();
    c.calibration.enabled = false;
    c
}

fn topology_counts(traces: &[Trace]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for t in traces {
        *counts.entry(TraceGraph::build(t).canonical_string()).or_default() += 1;
    }
    counts
}

/// (parent label, child label) pairs whose children always lie inside their parent.
fn nested(set: &[Trace]) -> HashSet<(String, String)> {
    let mut inside: HashMap<(String, String), bool> = HashMap::new();
    for t in set {
        let by_id: HashMap<_, _> = t.spans.iter().map(|s| (s.span_id, s)).collect();
        for s in &t.spans {
            if let Some(p) = s.parent_span_id.and_then(|p| by_id.get(&p)) {
                let key = (format!("{}/{}", p.service(), p.name), format!("{}/{}", s.service(), s.name));
                *inside.entry(key).or_insert(true) &= s.start >= p.start && s.end <= p.end;
            }
        }
    }
    inside.into_iter().filter(|(_, v)| *v).map(|(k, _)| k).collect()
}

fn check_round_trip(set: &TraceSet, name: &str, config: &GenTConfig) {
    let device = Device::flex();
    let model = WindowModel::train(&set.traces, config, &device, None).unwrap();
    let packet = gent::container::seal(&model.to_stored(Precision::F32).unwrap()).unwrap();
    let loaded = WindowModel::from_stored(gent::container::open::<StoredWindowModel>(&packet).unwrap(), &device).unwrap();
    let (traces, repairs) = loaded.generate(11).unwrap();
    let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
    println!("{name}: {} traces, {spans} spans, packet {} bytes, repairs {repairs:?}", traces.len(), packet.len());

    assert_eq!(traces.len(), set.traces.len());
    assert_eq!(spans, set.span_count());
    assert_eq!(topology_counts(&traces), topology_counts(&set.traces));

    let (window_start, window_end) = (model.window_start, model.window_end);
    let inside = nested(&set.traces);
    let mut trace_ids = HashSet::new();
    for t in &traces {
        assert!(trace_ids.insert(t.trace_id) && t.trace_id != [0; 16]);
        let by_id: HashMap<_, _> = t.spans.iter().map(|s| (s.span_id, s)).collect();
        assert_eq!(by_id.len(), t.spans.len(), "span ids unique within a trace");
        for s in &t.spans {
            assert_eq!(s.trace_id, t.trace_id);
            assert!(s.span_id != [0; 8]);
            assert!(s.start >= window_start && s.end <= window_end && s.start <= s.end, "span outside the window");
            if let Some(p) = s.parent_span_id {
                let p = by_id.get(&p).expect("parent in the trace");
                assert!(s.start >= p.start, "child starts before its parent");
                let key = (format!("{}/{}", p.service(), p.name), format!("{}/{}", s.service(), s.name));
                if inside.contains(&key) {
                    assert!(s.end <= p.end, "child ends after a parent it always ended within");
                }
            }
        }
        // A valid tree: the same root count as its topology and no orphans.
        assert_eq!(TraceGraph::build(t).orphans(), 0);
    }

    // The same packet and seed regenerate the same traces.
    let again = WindowModel::from_stored(gent::container::open::<StoredWindowModel>(&packet).unwrap(), &device).unwrap();
    assert_eq!(again.generate(11).unwrap().0, traces);
    // Another seed, other traces (same topologies).
    let other = again.generate(12).unwrap().0;
    assert_ne!(other, traces);
    assert_eq!(topology_counts(&other), topology_counts(&set.traces));
}

#[test]
fn hipster_round_trip() {
    let set = read_set(&[data("hipster")]);
    check_round_trip(&set, "hipster, calibrated", &tiny());
    check_round_trip(&set, "hipster, calibrated from GCN generators", &tiny_generators());
    check_round_trip(&set, "hipster, one-hot topology generators", &GenTConfig { gcn: false, ..tiny_generators() });
    check_round_trip(&set, "hipster, CTGAN timing alone", &tiny_uncalibrated());
}

#[test]
fn trainticket_hour_12_round_trip() {
    let paths: Vec<_> = (0..60).map(|m| data(&format!("trainticket/12_{m:02}_trace.csv.gz"))).collect();
    check_round_trip(&read_set(&paths), "trainticket hour 12", &tiny());
}

#[test]
fn a_rolling_window_warm_starts_roots_and_chains_but_rebuilds_the_histogram() {
    // Two consecutive TrainTicket windows (minutes 0-4 and 5-9 of hour 12).
    let window = |minutes: std::ops::Range<u32>| {
        read_set(&minutes.map(|m| data(&format!("trainticket/12_{m:02}_trace.csv.gz"))).collect::<Vec<_>>())
    };
    let (first, second) = (window(0..5), window(5..10));
    let device = Device::flex();
    let previous = WindowModel::train(&first.traces, &tiny_generators(), &device, None).unwrap();
    let packet = gent::container::seal(&previous.to_stored(Precision::F16).unwrap()).unwrap();
    let previous = WindowModel::from_stored(gent::container::open::<StoredWindowModel>(&packet).unwrap(), &device).unwrap();

    let cold = WindowModel::train(&second.traces, &tiny_generators(), &device, None).unwrap();
    let warm = WindowModel::train(&second.traces, &tiny_generators(), &device, Some(&previous)).unwrap();
    assert_eq!(cold.warm_started(), (false, false));
    assert_eq!(warm.warm_started(), (true, true), "R_G and C_G start from the previous window");
    // H and T_G are the new window's own.
    let (h, _) = TopologyHistogram::build(&second.traces);
    assert_eq!(warm.histogram, h);
    assert_ne!(warm.histogram, previous.histogram);
    let (traces, _) = warm.generate(5).unwrap();
    assert_eq!(topology_counts(&traces), topology_counts(&second.traces));
    assert!(traces.iter().all(|t| t.start() >= warm.window_start && t.end() <= warm.window_end), "inside the new window");
}

#[test]
fn a_window_of_one_single_span_trace_still_makes_a_model() {
    let set = read_set(&[data("hipster")]);
    let single: Vec<Trace> = set.traces.iter().filter(|t| t.spans.len() == 1).take(1).cloned().collect();
    if single.is_empty() {
        // Build one from the first root span.
        let mut t = set.traces[0].clone();
        t.spans.retain(|s| s.parent_span_id.is_none());
        t.spans.truncate(1);
        return check_single(vec![t]);
    }
    check_single(single);
}

fn check_single(traces: Vec<Trace>) {
    let model = WindowModel::train(&traces, &tiny(), &Device::flex(), None).unwrap();
    let (out, _) = model.generate(1).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].spans.len(), traces[0].spans.len());
    let (h, _) = TopologyHistogram::build(&out);
    assert_eq!(h.counts, vec![1]);
}

#[test]
fn bad_settings_and_empty_windows_are_refused() {
    let e = WindowModel::train(&[], &tiny(), &Device::flex(), None).err().unwrap();
    assert!(e.to_string().contains("no traces"), "{e}");
    let set = read_set(&[data("hipster")]);
    let e = WindowModel::train(&set.traces[..5], &GenTConfig { chain_length: 1, ..tiny() }, &Device::flex(), None).err().unwrap();
    assert!(e.to_string().contains("chain_length"), "{e}");
}

#[test]
fn train_and_generate_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let packet = dir.path().join("hipster.gent");
    let out = common::gent()
        .args(["train", data("hipster").to_str().unwrap(), "--out", packet.to_str().unwrap(), "--epochs", "1", "--f16", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for key in ["traces", "spans", "topologies", "packet_bytes", "raw_otlp_bytes", "gzip_otlp_bytes", "train_seconds"] {
        assert!(report.get(key).is_some(), "train --json lacks {key}: {report}");
    }
    assert_eq!(report["traces"], 2034);
    assert_eq!(report["spans"], 93011);
    assert_eq!(report["packet_bytes"].as_u64().unwrap(), std::fs::metadata(&packet).unwrap().len());
    assert!(report["packet_bytes"].as_u64().unwrap() < report["gzip_otlp_bytes"].as_u64().unwrap());

    for (format, file) in [("otlp-json", "out.jsonl"), ("otlp-proto", "out.pb"), ("jaeger", "out.json")] {
        let path = dir.path().join(file);
        let out = common::gent()
            .args(["generate", packet.to_str().unwrap(), "--out", path.to_str().unwrap(), "--format", format, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
        assert_eq!((report["traces"].as_u64(), report["spans"].as_u64()), (Some(2034), Some(93011)));
        assert!(report.get("generate_seconds").is_some());
        // Every reader takes the output back with the same counts.
        let back = read_set(&[path]);
        assert_eq!((back.traces.len(), back.span_count()), (2034, 93011), "{format}");
    }

    // A damaged packet is refused with a clear message and exit code 2.
    let mut bytes = std::fs::read(&packet).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let bad = dir.path().join("bad.gent");
    std::fs::write(&bad, &bytes).unwrap();
    let out = common::gent().args(["generate", bad.to_str().unwrap(), "--out", "/dev/null"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
}

#[test]
fn configured_attributes_are_learnt_and_regenerated_with_their_types() {
    use gent::gent::AttributeKind;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    // Quarkus car rental, exported by an OpenTelemetry Collector: HTTP, gRPC,
    // database and messaging spans with their semantic-convention attributes.
    let set = read_set(&[data("fixtures/otlp")]);
    let config = GenTConfig {
        ctgan: CtganConfig { epochs: 1500, embedding: 32, generator: vec![64], critic: vec![64], ..tiny().ctgan },
        ..tiny()
    };
    let model = WindowModel::train(&set.traces, &config, &Device::flex(), None).unwrap();
    let kind = |key: &str| model.attributes.keys.iter().find(|k| k.key == key).map(|k| k.kind.clone());
    assert!(matches!(kind("db.system"), Some(AttributeKind::Categorical { .. })));
    assert!(matches!(kind("http.response.status_code"), Some(AttributeKind::Categorical { .. })), "a code, not a quantity");
    assert_eq!(kind("http.request.body.size"), Some(AttributeKind::Number { integer: true }));
    assert_eq!(kind("db.statement"), None, "not configured");

    let packet = gent::container::seal(&model.to_stored(Precision::F32).unwrap()).unwrap();
    let loaded = WindowModel::from_stored(gent::container::open::<StoredWindowModel>(&packet).unwrap(), &Device::flex()).unwrap();
    let (traces, _) = loaded.generate(3).unwrap();

    // Which keys each (service, span name) carries in the data, and every value seen per key.
    let label = |s: &gent::trace::Span| format!("{}/{}", s.service(), s.name);
    let keys_of = |s: &gent::trace::Span| {
        let mut k: Vec<String> = s.attributes.iter().map(|kv| kv.key.clone()).filter(|k| kind(k).is_some()).collect::<Vec<_>>();
        k.sort();
        k
    };
    let mut real_keys: HashMap<String, HashSet<Vec<String>>> = HashMap::new();
    let mut real_values: HashMap<String, HashSet<String>> = HashMap::new();
    for s in set.traces.iter().flat_map(|t| &t.spans) {
        real_keys.entry(label(s)).or_default().insert(keys_of(s));
        for kv in &s.attributes {
            real_values.entry(kv.key.clone()).or_default().insert(format!("{:?}", kv.value));
        }
    }
    let (mut spans, mut matching_keys) = (0, 0);
    for s in traces.iter().flat_map(|t| &t.spans) {
        spans += 1;
        matching_keys += usize::from(real_keys[&label(s)].contains(&keys_of(s)));
        for kv in &s.attributes {
            if kv.key == "gent.synthetic" {
                continue;
            }
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref()).expect("a value");
            match kind(&kv.key).expect("only modelled keys") {
                AttributeKind::Categorical { .. } => assert!(
                    real_values[&kv.key].contains(&format!("{:?}", kv.value)) || *value == Value::StringValue("other".into()),
                    "{} = {value:?} was never seen",
                    kv.key
                ),
                AttributeKind::Number { integer } => assert_eq!(integer, matches!(value, Value::IntValue(_)), "{}", kv.key),
            }
        }
    }
    // Baseline: each span given the keys of a span picked regardless of its label.
    let real_spans: Vec<&gent::trace::Span> = set.traces.iter().flat_map(|t| &t.spans).collect();
    let shuffled = traces
        .iter()
        .flat_map(|t| &t.spans)
        .enumerate()
        .filter(|(i, s)| real_keys[&label(s)].contains(&keys_of(real_spans[(i * 7919) % real_spans.len()])))
        .count();
    let (share, baseline) = (matching_keys as f64 / spans as f64, shuffled as f64 / spans as f64);
    println!("spans whose attribute keys fit their label: {share:.3} of {spans} (keys of a random span: {baseline:.3})");
    assert!(share > 0.8 && share > baseline + 0.3, "model {share}, baseline {baseline}");
}

#[test]
fn a_bad_model_config_file_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("model.yaml");
    std::fs::write(&config, "ctgan:\n  epochs: 0\n").unwrap();
    let out = common::gent()
        .args(["train", data("hipster").to_str().unwrap(), "--out", "/dev/null", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("model.yaml") && stderr.contains("epochs"), "{stderr}");
    // The shipped file is accepted; a flag overrides it (--epochs 0 is refused although the file says 10).
    let out = common::gent()
        .args([
            "train",
            data("hipster").to_str().unwrap(),
            "--out",
            "/dev/null",
            "--config",
            "config/model.yaml",
            "--epochs",
            "0",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("epochs must be at least 1"));
}

#[test]
fn a_window_regenerated_in_parts_has_every_topology_as_often_and_fresh_ids_in_each_part() {
    let set = read_set(&[data("trainticket/12_00_trace.csv.gz"), data("trainticket/12_01_trace.csv.gz")]);
    let device = Device::flex();
    let model = WindowModel::train(&set.traces, &tiny(), &device, None).unwrap();
    let whole = model.generate(9).unwrap().0;
    let mut one = Vec::new();
    model
        .generate_parts(9, 1, |traces, _| {
            one.push(traces);
            true
        })
        .unwrap();
    assert_eq!(one, vec![whole], "one part is the whole window");

    let mut parts = Vec::new();
    model
        .generate_parts(9, 4, |traces, _| {
            parts.push(traces);
            true
        })
        .unwrap();
    assert_eq!(parts.len(), 4);
    let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
    assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "parts of even size: {sizes:?}");
    let all: Vec<Trace> = parts.into_iter().flatten().collect();
    assert_eq!(topology_counts(&all), topology_counts(&set.traces), "every topology as often as counted");
    let ids: HashSet<_> = all.iter().map(|t| t.trace_id).collect();
    assert_eq!(ids.len(), all.len(), "no trace id twice across parts");

    let mut seen = 0;
    model
        .generate_parts(9, 4, |_, _| {
            seen += 1;
            false
        })
        .unwrap();
    assert_eq!(seen, 1, "stops when told");
}
