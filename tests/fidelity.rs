//! The fidelity suite: known answers on hand-made traces, real data against
//! itself and against damaged copies, head sampling's fidelity falling with
//! the rate, and `gent sample` / `gent eval` on the command line.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{data, read_set};
use gent::fidelity::sampling::Sampler;
use gent::fidelity::{Answer, Reference, SpanDb, suite};
use gent::trace::{Resource, Scope, Span, SpanKind, Status, StatusCode, Trace, TraceSet};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

const MINUTE_NS: u64 = 60_000_000_000;

/// A span starting `start_us` after minute 1000, lasting `duration_us`.
fn span(trace: u8, id: u8, parent: Option<u8>, service: &str, duration_us: u64, start_us: u64, error: bool) -> Span {
    let start = 1000 * MINUTE_NS + start_us * 1000;
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        resource: Resource::new(service, Vec::new()),
        scope: Arc::new(Scope { name: "t".into(), version: String::new() }),
        name: format!("{service} op"),
        kind: SpanKind::Server,
        status: Status { code: if error { StatusCode::Error } else { StatusCode::Unset }, message: String::new() },
        start,
        end: start + duration_us * 1000,
        attributes: vec![KeyValue {
            key: "http.request.method".into(),
            value: Some(AnyValue { value: Some(Value::StringValue(if parent.is_none() { "GET" } else { "POST" }.into())) }),
            ..Default::default()
        }],
        events: Vec::new(),
        links: Vec::new(),
    }
}

/// Two traces from `frontend`: the first calls `cart` (40 µs of 100) and `ad`
/// (20 µs); the second calls `cart` (100 µs of 200), which fails.
fn tiny() -> TraceSet {
    let t1 = Trace {
        trace_id: [1; 16],
        spans: vec![
            span(1, 1, None, "frontend", 100, 0, false),
            span(1, 2, Some(1), "cart", 40, 10, false),
            span(1, 3, Some(1), "ad", 20, 60, false),
        ],
    };
    let t2 = Trace {
        trace_id: [2; 16],
        spans: vec![span(2, 1, None, "frontend", 200, 0, false), span(2, 2, Some(1), "cart", 100, 50, true)],
    };
    TraceSet { traces: vec![t1, t2], defects: Default::default() }
}

fn answers(set: &TraceSet) -> BTreeMap<String, Answer> {
    let db = SpanDb::load(set).unwrap();
    suite(&db).unwrap().into_iter().map(|q| (q.name.clone(), q.answer(&db).unwrap())).collect()
}

fn counts(items: &[(&str, f64)]) -> BTreeMap<String, f64> {
    items.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn every_query_gives_the_hand_computed_answer() {
    let a = answers(&tiny());
    let set: BTreeSet<String> = ["frontend | cart", "frontend | ad"].iter().map(|s| s.to_string()).collect();
    assert_eq!(a["trigger_correlations"], Answer::Set(set));
    assert_eq!(a["call_counts"], Answer::Counts(counts(&[("frontend | cart", 2.0), ("frontend | ad", 1.0)])));
    let Answer::Distribution(b) = &a["bottlenecks"] else { panic!() };
    let mut cart = b["frontend | cart"].clone();
    cart.sort_by(f64::total_cmp);
    assert_eq!(cart, vec![0.4, 0.5]);
    assert_eq!(b["frontend | ad"], vec![0.2]);
    assert_eq!(a["red_requests"], Answer::Counts(counts(&[("frontend | 1000", 2.0), ("cart | 1000", 2.0), ("ad | 1000", 1.0)])));
    assert_eq!(a["red_errors"], Answer::Counts(counts(&[("cart | 1000", 1.0)])));
    let Answer::Distribution(d) = &a["red_duration"] else { panic!() };
    assert_eq!(d["ad | 1000"], vec![20f64.ln_1p()]);
    let Answer::Histogram(h) = &a["subtask_durations[frontend]"] else { panic!() };
    assert_eq!(h["cart"], counts(&[("0.4", 1.0), ("0.5", 1.0)]));
    assert_eq!(h["ad"], counts(&[("0.2", 1.0)]));
    // One error span in minute 1000 of frontend's traces.
    assert_eq!(a["error_alarm[frontend]"], Answer::Counts(counts(&[("1000", 1.0)])));
    // Root durations 100 and 200: the 90th percentile is 200, nothing is slower.
    assert_eq!(a["latency_alarm[frontend]"], Answer::Counts(BTreeMap::new()));
    // Only the second trace failed; its root says GET.
    let Answer::Histogram(f) = &a["failed_trace_attributes[frontend, http.request.method]"] else { panic!() };
    assert_eq!(f[""], counts(&[("GET", 1.0)]));
    let Answer::Histogram(af) = &a["attribute_frequency[http.request.method]"] else { panic!() };
    assert_eq!(af["frontend"], counts(&[("GET", 2.0)]));
    assert_eq!(af["cart"], counts(&[("POST", 2.0)]));
    // Every child lies inside its parent.
    let Answer::Histogram(n) = &a["nesting"] else { panic!() };
    assert_eq!(n["frontend | cart"], counts(&[("inside", 2.0)]));
    assert_eq!(n["frontend | ad"], counts(&[("inside", 1.0)]));
    // Self time: frontend 100 − 40 − 20 = 40 µs and 200 − 100 = 100 µs; leaves their own.
    let Answer::Distribution(st) = &a["self_time"] else { panic!() };
    let mut front = st["frontend"].clone();
    front.sort_by(f64::total_cmp);
    assert_eq!(front, vec![40f64.ln_1p(), 100f64.ln_1p()]);
    assert_eq!(st["ad"], vec![20f64.ln_1p()]);
}

#[test]
fn self_time_counts_overlapping_children_once_and_nesting_sees_a_child_outside() {
    // A parent of 100 µs with two children overlapping in 30..60 and 40..90
    // (covered: 30..90, 60 µs) and a third outside it, 120..130.
    let t = Trace {
        trace_id: [3; 16],
        spans: vec![
            span(3, 1, None, "api", 100, 0, false),
            span(3, 2, Some(1), "db", 30, 30, false),
            span(3, 3, Some(1), "db", 50, 40, false),
            span(3, 4, Some(1), "queue", 10, 120, false),
        ],
    };
    let a = answers(&TraceSet { traces: vec![t], defects: Default::default() });
    let Answer::Distribution(st) = &a["self_time"] else { panic!() };
    assert_eq!(st["api"], vec![40f64.ln_1p()]);
    let Answer::Histogram(n) = &a["nesting"] else { panic!() };
    assert_eq!(n["api | db"], counts(&[("inside", 2.0)]));
    assert_eq!(n["api | queue"], counts(&[("outside", 1.0)]));
}

#[test]
fn scores_follow_the_documented_formulas_on_hand_made_candidates() {
    let real = tiny();
    let reference = Reference::new(&real, Vec::new()).unwrap();
    let score = |set: &TraceSet, scale: f64, name: &str| {
        reference.evaluate(set, scale).unwrap().queries.into_iter().find(|q| q.name == name).unwrap().score
    };
    // Only the first trace, at 1:2: counts doubled.
    let half = TraceSet { traces: vec![real.traces[0].clone()], defects: Default::default() };
    // trigger correlations: the same two pairs.
    assert_eq!(score(&half, 2.0, "trigger_correlations"), 1.0);
    // call counts ×2: frontend→cart 2 (exact), frontend→ad 2 against 1 (0).
    assert_eq!(score(&half, 2.0, "call_counts"), 0.5);
    // No errors: red_errors' one group is missing → 0.
    assert_eq!(score(&half, 2.0, "red_errors"), 0.0);
    // A sampler that kept nothing answers nothing: alarms that never fire agree, the rest scores 0.
    let nothing = reference.evaluate_any(&TraceSet { traces: Vec::new(), defects: Default::default() }, 100.0).unwrap();
    for q in &nothing.queries {
        let expected = if q.name.starts_with("latency_alarm") || q.name.starts_with("error_alarm") { 1.0 } else { 0.0 };
        assert_eq!(q.score, expected, "{}", q.name);
    }
    assert!(reference.evaluate(&TraceSet { traces: Vec::new(), defects: Default::default() }, 1.0).is_err());
}

#[test]
fn real_data_scores_one_against_itself_and_less_without_a_service() {
    let real = read_set(&[data("hipster")]);
    let reference = Reference::new(&real, Vec::new()).unwrap();
    let same = reference.evaluate(&real, 1.0).unwrap();
    for q in &same.queries {
        assert_eq!(q.score, 1.0, "{} against itself", q.name);
    }
    assert_eq!(same.overall, 1.0);
    assert!(same.queries.len() >= 6);

    // Without cartservice: what involves it drops, the rest stays.
    let without = TraceSet {
        traces: real
            .traces
            .iter()
            .map(|t| Trace {
                trace_id: t.trace_id,
                spans: t.spans.iter().filter(|s| s.service() != "cartservice").cloned().collect(),
            })
            .collect(),
        defects: Default::default(),
    };
    let damaged = reference.evaluate(&without, 1.0).unwrap();
    let by_name: BTreeMap<&str, f64> = damaged.queries.iter().map(|q| (q.name.as_str(), q.score)).collect();
    println!("{by_name:?}");
    for involved in
        ["trigger_correlations", "call_counts", "bottlenecks", "red_requests", "red_duration", "subtask_durations[frontend]"]
    {
        assert!(by_name[involved] < 1.0, "{involved} should notice cartservice is gone");
    }
    assert_eq!(by_name["error_alarm[frontend]"], 1.0);
    assert!(damaged.overall < 1.0);
}

#[test]
fn head_sampling_fidelity_falls_as_the_rate_falls() {
    let paths: Vec<_> = (0..60).map(|m| data(&format!("trainticket/12_{m:02}_trace.csv.gz"))).collect();
    let real = read_set(&paths);
    let reference = Reference::new(&real, Vec::new()).unwrap();
    let mut means = Vec::new();
    for n in [5u64, 10, 15, 20, 50, 100] {
        let scores: Vec<f64> = (0..3)
            .map(|seed| {
                let kept = Sampler::Head { n }.sample(&real.traces, seed);
                let sampled = TraceSet { traces: kept, defects: Default::default() };
                reference.evaluate(&sampled, n as f64).unwrap().overall
            })
            .collect();
        means.push((n, scores.iter().sum::<f64>() / scores.len() as f64));
    }
    println!("head sampling fidelity on TrainTicket hour 12: {means:?}");
    for pair in means.windows(2) {
        assert!(pair[1].1 < pair[0].1, "1:{} scored {} but 1:{} {}", pair[1].0, pair[1].1, pair[0].0, pair[0].1);
    }
}

mod cli {
    use super::*;

    #[test]
    fn sample_and_eval_on_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let sampled = dir.path().join("h10.jsonl");
        let out = common::gent()
            .args(["sample", data("hipster").to_str().unwrap(), "--out", sampled.to_str().unwrap(), "--head", "1:10", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
        assert_eq!(report["traces_in"], 2034);
        let kept = report["traces_kept"].as_u64().unwrap();
        assert!((150..260).contains(&kept), "1:10 of 2034 kept {kept}");

        let out = common::gent()
            .args(["eval", "--real", data("hipster").to_str().unwrap(), "--synthetic", sampled.to_str().unwrap()])
            .args(["--scale", "10", "--json", "--report", dir.path().join("eval.html").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let html = std::fs::read_to_string(dir.path().join("eval.html")).unwrap();
        assert!(html.contains("trigger_correlations") && html.contains("<svg") && !html.contains("<script"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let overall = report["overall"].as_f64().unwrap();
        assert!(overall > 0.3 && overall < 1.0, "{overall}");
        assert!(stdout.contains("trigger_correlations") && stdout.contains("overall"));

        // Tail sampling keeps the slow traces.
        let out = common::gent()
            .args(["sample", data("hipster").to_str().unwrap(), "--out", sampled.to_str().unwrap()])
            .args(["--tail", "latency:100ms,probabilistic:1", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn bad_input_exits_2_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, "").unwrap();
        let queries = dir.path().join("q.sql");
        std::fs::write(&queries, "-- name: broken\n-- kind: rate\nSELECT nope FROM spans;\n").unwrap();
        let hipster = data("hipster");
        let h = hipster.to_str().unwrap();
        let e = empty.to_str().unwrap();
        let cases: [(Vec<&str>, &str); 7] = [
            (vec!["eval", "--real", h, "--synthetic", e], "no traces"),
            (vec!["eval", "--real", e, "--synthetic", h], "no traces"),
            (vec!["bench", "cost-fidelity", e], "no traces"),
            (vec!["bench", "cost-fidelity", h, "--price-per-gb=-1"], "prices"),
            (vec!["eval", "--real", h, "--synthetic", h, "--queries", queries.to_str().unwrap()], "query broken"),
            (vec!["sample", h, "--out", "/dev/null", "--head", "1:0"], "1:N"),
            (vec!["sample", h, "--out", "/dev/null", "--tail", "latency:soon"], "latency:soon"),
        ];
        for (args, expected) in cases {
            let out = common::gent().args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(expected), "{args:?}: {stderr}");
        }
    }
}

mod bench {
    use super::*;

    #[test]
    fn the_cost_fidelity_benchmark_ranks_every_method_and_writes_its_report() {
        let dir = tempfile::tempdir().unwrap();
        let (report, plot, config) = (dir.path().join("r.html"), dir.path().join("p.svg"), dir.path().join("m.yaml"));
        std::fs::write(&config, "ctgan:\n  epochs: 1\n").unwrap();
        let out = common::gent()
            .args(["bench", "cost-fidelity", data("hipster").to_str().unwrap(), "--json", "--config", config.to_str().unwrap()])
            .args(["--report", report.to_str().unwrap(), "--plot", plot.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let methods = r["methods"].as_array().unwrap();
        let names: Vec<&str> = methods.iter().map(|m| m["method"].as_str().unwrap()).collect();
        assert_eq!(names.len(), 12, "{names:?}");
        assert!(names[0].starts_with("gent") && names.contains(&"head 1:15 + gzip") && names.contains(&"lossless zstd"));
        // Head sampling at gent's bytes, named and scored.
        let equal = &r["equal_bytes_head"];
        let rate = equal["rate"].as_u64().unwrap();
        assert!(names.contains(&format!("head 1:{rate} + gzip (gent's bytes)").as_str()), "{names:?}");
        let (bytes, gent_bytes) = (equal["bytes"].as_f64().unwrap(), methods[0]["bytes"].as_f64().unwrap());
        assert!(bytes < 2.0 * gent_bytes && bytes > 0.5 * gent_bytes, "1:{rate} ships {bytes} B against gent's {gent_bytes}");
        assert_eq!(equal["gent_fidelity"], methods[0]["fidelity"]);
        // gent is scored over several generation seeds, as head sampling is.
        assert!(methods[0]["fidelity_sd"].as_f64().unwrap() > 0.0, "{}", methods[0]);
        assert!(stdout.contains(&format!("buy head sampling 1:{rate}")), "the comparison is printed");
        assert!(stdout.contains("self_time") && stdout.contains("nesting"), "every query side by side");
        let by = |name: &str| methods.iter().find(|m| m["method"] == name).unwrap();
        assert_eq!(by("lossless gzip")["ratio_to_gzip"], 1.0);
        assert_eq!(by("lossless gzip")["fidelity"], 1.0);
        // Fewer bytes with a lower rate, and a lower fidelity on average.
        let (h5, h100) = (by("head 1:5 + gzip"), by("head 1:100 + gzip"));
        assert!(h100["bytes"].as_f64() < h5["bytes"].as_f64());
        assert!(h100["fidelity"].as_f64() < h5["fidelity"].as_f64());
        assert!(r["gent_matches_head"].is_array() && r["gent_smaller_than_head"].is_array());
        // The reference: one half of the real traces against the other scores
        // well but not perfectly, about as well as 1:5 head sampling here.
        let halves = by("real, half against half (reference)")["fidelity"].as_f64().unwrap();
        assert!(halves > 0.7 && halves < 0.99, "{halves}");
        let html = std::fs::read_to_string(&report).unwrap();
        assert!(html.contains("<svg") && html.contains("head 1:15"), "the table and the plots");
        assert!(!html.contains("<script") && !html.contains("src=\"http"), "self-contained");
        assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    }
}
