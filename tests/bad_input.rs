//! Bad input never panics. Every reader is fed truncated, mutated and random
//! versions of real files; the command line turns each failure into exit code 2
//! with the file, the position and the reason.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use gent::io::{self, Format, Position};
use proptest::prelude::*;

const ALL_FORMATS: [Format; 6] =
    [Format::OtlpProto, Format::OtlpJson, Format::Jaeger, Format::Zipkin, Format::SpanCsv, Format::Alibaba];

/// The first `limit` bytes of a real (decompressed) file of each format, the
/// OTLP protobuf one converted from the OTLP JSON fixture.
fn samples(limit: usize) -> Vec<(Format, Vec<u8>)> {
    let mut samples: Vec<(Format, Vec<u8>)> = [
        ("fixtures/otlp/quarkus-car-rental.jsonl", Format::OtlpJson),
        ("fixtures/jaeger/compose-post_R500_trace_03_longest.json", Format::Jaeger),
        ("fixtures/zipkin/messaging-kafka.json", Format::Zipkin),
        ("trainticket/12_00_trace.csv.gz", Format::SpanCsv),
        ("alibaba/callgraphs_train.txt", Format::Alibaba),
    ]
    .into_iter()
    .map(|(rel, format)| (format, decompressed(&data(rel))))
    .collect();
    let set = read_set(&[data("fixtures/otlp/quarkus-car-rental.jsonl")]);
    let mut proto = Vec::new();
    io::write_traces(&set.traces, io::OutputFormat::OtlpProto, &mut proto).unwrap();
    samples.push((Format::OtlpProto, proto));
    for (_, bytes) in &mut samples {
        bytes.truncate(limit);
    }
    samples
}

fn decompressed(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut text).unwrap();
        text
    } else {
        raw
    }
}

/// Decodes and, on failure, checks the error points inside the input.
fn decode_checked(bytes: &[u8], format: Format) -> Result<usize, io::ParseError> {
    let mut spans = Vec::new();
    match io::decode(bytes, format, &mut spans) {
        Ok(()) => Ok(spans.len()),
        Err(e) => {
            match e.position {
                Position::Byte(offset) => {
                    assert!(offset <= bytes.len() as u64, "{format:?}: {e:?}")
                }
                Position::Line { line, column } => {
                    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
                    assert!(line >= 1 && line <= lines && column >= 1, "{format:?}: {e:?} of {lines} lines");
                }
            }
            assert!(!e.reason.is_empty(), "{format:?}: an error must say why");
            Err(e)
        }
    }
}

#[test]
fn every_reader_survives_every_truncation_of_a_real_file() {
    for (format, bytes) in samples(64 * 1024) {
        // Every prefix near the start (headers, first records), then 200 cuts
        // spread over the rest.
        let step = (bytes.len() / 200).max(1);
        let cuts = (0..bytes.len().min(300)).chain((300..bytes.len()).step_by(step));
        let mut failures = 0;
        for cut in cuts {
            let prefix = &bytes[..cut];
            let result = decode_checked(prefix, format);
            // A JSON document cut before its last byte can never be complete.
            let incomplete_json =
                matches!(format, Format::Jaeger | Format::Zipkin) && prefix.iter().any(|b| !b.is_ascii_whitespace());
            if incomplete_json {
                assert!(result.is_err(), "{format:?} cut at {cut} must fail");
            }
            failures += result.is_err() as usize;
        }
        assert!(failures > 0, "{format:?}: no truncation was rejected");
    }
}

#[test]
fn every_reader_survives_being_fed_another_format() {
    for (format, _) in samples(0) {
        for (other, bytes) in samples(16 * 1024) {
            if other != format {
                let _ = decode_checked(&bytes, format);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("GENT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_reader_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for format in ALL_FORMATS {
            let _ = decode_checked(&bytes, format);
        }
    }

    /// Random bytes behind a valid start drive each reader past its first checks.
    #[test]
    fn every_reader_survives_random_bytes_after_a_valid_start(
        tail in proptest::collection::vec(any::<u8>(), 0..256),
        keep in 0usize..4096,
    ) {
        for (format, mut bytes) in samples(4096) {
            bytes.truncate(keep);
            bytes.extend_from_slice(&tail);
            let _ = decode_checked(&bytes, format);
        }
    }

    /// A handful of flipped bytes inside a real file.
    #[test]
    fn every_reader_survives_mutated_files(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        for (format, mut bytes) in samples(8192) {
            for (at, value) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            let _ = decode_checked(&bytes, format);
        }
    }
}

const CSV_HEADER: &str = "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n";

fn csv(row: &str) -> Vec<u8> {
    format!("{CSV_HEADER}{row}\n").into_bytes()
}

fn jaeger(span: &str) -> Vec<u8> {
    format!(
        r#"{{"data":[{{"traceID":"0123456789abcdef","spans":[{span}],
        "processes":{{"p1":{{"serviceName":"svc","tags":[]}}}}}}]}}"#
    )
    .into_bytes()
}

fn jaeger_span(trace: &str, span: &str, start: &str, duration: &str) -> String {
    format!(
        r#"{{"traceID":"{trace}","spanID":"{span}","operationName":"op","references":[],
        "startTime":{start},"duration":{duration},"tags":[],"logs":[],"processID":"p1"}}"#
    )
}

fn otlp_json(trace: &str, span: &str, start: &str) -> Vec<u8> {
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[]}},"scopeSpans":[{{"scope":{{}},"spans":[
        {{"traceId":"{trace}","spanId":"{span}","name":"op","startTimeUnixNano":{start},"endTimeUnixNano":"5"}}]}}]}}]}}"#
    )
    .into_bytes()
}

/// Each case must be rejected with a reason that mentions `hint`.
#[test]
fn invalid_ids_and_huge_numbers_are_rejected_by_name() {
    let ok_trace = "0123456789abcdef0123456789abcdef";
    let cases: Vec<(Format, Vec<u8>, &str)> = vec![
        (Format::SpanCsv, csv(&format!("zz{},0123456789abcdef,root,svc-a-b,op,1,2,1", &ok_trace[2..])), "TraceID"),
        (Format::SpanCsv, csv(&format!("{ok_trace},0123456789abcdef0,root,svc-a-b,op,1,2,1")), "SpanID"),
        (Format::SpanCsv, csv(&format!("{ok_trace},0123456789abcdef,xyz,svc-a-b,op,1,2,1")), "ParentID"),
        (
            Format::SpanCsv,
            csv(&format!("{ok_trace},0123456789abcdef,root,svc-a-b,op,99999999999999999999,2,1")),
            "StartTimeUnixNano",
        ),
        (Format::SpanCsv, csv(&format!("{ok_trace},0123456789abcdef,root,svc-a-b,op,-1,2,1")), "StartTimeUnixNano"),
        (Format::SpanCsv, csv(&format!("{ok_trace},00000000,root,svc-a-b,op,1,2,1")), "zero"),
        (Format::Jaeger, jaeger(&jaeger_span("0123", "g0", "1", "1")), "spanID"),
        (Format::Jaeger, jaeger(&jaeger_span("0123", "01", "99999999999999999999", "1")), ""),
        (Format::Jaeger, jaeger(&jaeger_span("0123", "01", "18446744073709551", "1")), "startTime"),
        (Format::Jaeger, jaeger(&jaeger_span("0123", "01", "1", "-5")), ""),
        (Format::OtlpJson, otlp_json(ok_trace, "0123456789abcdef", "\"99999999999999999999\""), ""),
        (Format::OtlpJson, otlp_json(ok_trace, "0123456789abcdefff", "\"1\""), ""),
        (Format::OtlpJson, otlp_json("not-hex", "0123456789abcdef", "\"1\""), ""),
    ];
    for (format, bytes, hint) in cases {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let error = decode_checked(&bytes, format).expect_err(&text);
        assert!(error.reason.contains(hint), "{format:?}: {:?} should mention {hint:?}\n{text}", error.reason);
    }
}

#[test]
fn snake_case_otlp_json_is_refused_not_read_as_empty() {
    let camel = otlp_json("0123456789abcdef0123456789abcdef", "0123456789abcdef", "1");
    for (from, to) in [("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans")] {
        let snake = String::from_utf8(camel.clone()).unwrap().replace(from, to);
        let error = decode_checked(snake.as_bytes(), Format::OtlpJson).expect_err(&snake);
        assert!(error.reason.contains("snake_case"), "{}", error.reason);
    }
    assert_eq!(decode_checked(br#"{"resourceSpans":[]}"#, Format::OtlpJson).unwrap(), 0);
}

#[test]
fn valid_tolerant_otlp_json_is_accepted() {
    // 64-bit integers as numbers rather than strings, as some producers write.
    let bytes = otlp_json("0123456789abcdef0123456789abcdef", "0123456789abcdef", "1");
    assert_eq!(decode_checked(&bytes, Format::OtlpJson).unwrap(), 1);
}

// ---- the command line -----------------------------------------------------

struct Run {
    code: Option<i32>,
    stderr: String,
}

fn run(args: &[&std::ffi::OsStr]) -> Run {
    let out = gent().args(args).output().unwrap();
    Run { code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

fn stats_of(path: &Path) -> Run {
    run(&["stats".as_ref(), path.as_os_str()])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn assert_bad_input(r: &Run, path: &Path, position: &str, reason: &str) {
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let last = r.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{}", r.stderr);
    assert!(last.contains(&path.display().to_string()), "{last} should name the file");
    assert!(last.contains(position), "{last} should name the position {position:?}");
    assert!(last.contains(reason), "{last} should say {reason:?}");
}

#[test]
fn the_command_names_file_position_and_reason_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // A gzip file cut in half: the position is a byte offset of the compressed file.
    let gz = std::fs::read(data("trainticket/12_00_trace.csv.gz")).unwrap();
    let path = write(d, "cut.csv.gz", &gz[..gz.len() / 2]);
    assert_bad_input(&stats_of(&path), &path, "byte ", "corrupt gzip stream");

    // A bad row deep in a real CSV file: the line of that row.
    let mut text = decompressed(&data("trainticket/12_00_trace.csv.gz"));
    let line_start = nth_line_start(&text, 99);
    text[line_start] = b'x';
    let path = write(d, "bad-row.csv", &text);
    assert_bad_input(&stats_of(&path), &path, "line 100", "TraceID");

    // Truncated JSON: the line and column where it stops.
    let json = std::fs::read(data("fixtures/jaeger/compose-post_R500_trace_03_longest.json")).unwrap();
    let path = write(d, "cut.json", &json[..json.len() / 2]);
    assert_bad_input(&stats_of(&path), &path, "line ", "invalid Jaeger JSON");

    // Random bytes named explicitly are not a trace file.
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x80).collect();
    let path = write(d, "noise.bin", &noise);
    assert_bad_input(&stats_of(&path), &path, "", "format not recognised");

    // A forced format that does not match.
    let csv = data("trainticket/12_00_trace.csv.gz");
    let r = run(&["stats".as_ref(), "--format".as_ref(), "jaeger".as_ref(), csv.as_os_str()]);
    assert_bad_input(&r, &csv, "line 1", "invalid Jaeger JSON");

    // Protobuf cut short: a byte offset.
    let set = read_set(&[data("fixtures/otlp/quarkus-car-rental.jsonl")]);
    let mut proto = Vec::new();
    io::write_traces(&set.traces, io::OutputFormat::OtlpProto, &mut proto).unwrap();
    let path = write(d, "cut.pb", &proto[..proto.len() - 7]);
    assert_bad_input(&stats_of(&path), &path, "byte ", "invalid OTLP protobuf");

    // A missing file.
    let path = d.join("missing.json");
    assert_bad_input(&stats_of(&path), &path, "", "no such file");
}

#[test]
fn a_bad_file_inside_a_folder_is_named_too() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "README.md", b"# notes beside the traces\n");
    write(dir.path(), "good.csv", &csv("0123456789abcdef0123456789abcdef,0123456789abcdef,root,svc-a-b,op,1,2,1"));
    let bad = write(dir.path(), "zbad.csv", &csv("0123456789abcdef0123456789abcdef,0123456789abcdef,root,svc-a-b,op,1"));
    assert_bad_input(&stats_of(dir.path()), &bad, "line 2", "");
}

fn nth_line_start(text: &[u8], n: usize) -> usize {
    text.iter().enumerate().filter(|&(_, &b)| b == b'\n').nth(n - 1).map(|(i, _)| i + 1).unwrap()
}

/// Gzip that inflates to at least `size` bytes of `line` repeated.
fn bomb(line: &[u8], size: usize) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut written = 0;
    let block: Vec<u8> = line.iter().copied().cycle().take(1 << 16).collect();
    while written < size {
        gz.write_all(&block).unwrap();
        written += block.len();
    }
    gz.finish().unwrap()
}

#[test]
fn bombs_are_refused_within_bounded_memory() {
    // Found by an outside probe: a 4.4 MB gzip file took `gent stats` to
    // 6.7–9.2 GB before the 4 GiB cap refused it, and a gzip CSV of tiny rows
    // to 3.0 GB.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 1 GiB of zeros: over the default 128 MiB of decompressed input.
    let zeros = write(d, "zeros.gz", &bomb(&[0], 1 << 30));
    let r = stats_of(&zeros);
    assert_bad_input(&r, &zeros, "", "--max-input-bytes");
    // 520k tiny valid spans in 67 MB of CSV: over the default 500,000 spans.
    let mut csv = b"TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n".to_vec();
    for i in 1..=520_000u64 {
        csv.extend_from_slice(
            format!("{:032x},{i:016x},root,p-1-2,x,{},{},1\n", i, 1_700_000_000_000_000_000 + i, 1_700_000_000_000_001_000 + i)
                .as_bytes(),
        );
    }
    let rows = write(d, "rows.csv", &csv);
    assert_bad_input(&stats_of(&rows), &rows, "line 500002", "more than 500000 spans (raise --max-input-spans)");
    let peak = children_peak_mib();
    println!("peak RSS of any `gent stats` here: {peak:.0} MiB");
    assert!(peak < 512.0, "{peak:.0} MiB");
    // Raised limits read it.
    let r = run(&["--max-input-spans".as_ref(), "1000000".as_ref(), "stats".as_ref(), rows.as_os_str()]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn every_reader_stops_at_its_span_limit() {
    let mut files = fixtures();
    files.push((data("trainticket/12_00_trace.csv.gz"), Format::SpanCsv));
    files.push((data("alibaba/callgraphs_train.txt"), Format::Alibaba));
    for (path, format) in files {
        let bytes = decompressed(&path);
        let mut all = Vec::new();
        io::decode(&bytes, format, &mut all).unwrap();
        let n = all.len();
        if n < 2 {
            continue;
        }
        let mut spans = Vec::new();
        io::decode_within(&bytes, format, &mut spans, n).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let e = io::decode_within(&bytes, format, &mut Vec::new(), n - 1).unwrap_err();
        assert!(e.reason.contains(&format!("more than {} spans", n - 1)), "{}: {}", path.display(), e.reason);
    }
}

#[test]
fn call_graph_files_are_read_within_the_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read(data("alibaba/callgraphs_train.txt")).unwrap();
    let graphs = write(dir.path(), "graphs.txt", &text[..text.len().min(64 * 1024)]);
    let split = |limit: &str| {
        gent()
            .args(["llm", "split", "--max-input-bytes", limit, "--train"])
            .arg(dir.path().join("train.txt"))
            .arg("--held-back")
            .arg(dir.path().join("back.txt"))
            .arg(&graphs)
            .output()
            .unwrap()
    };
    let refused = split("1000");
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--max-input-bytes"));
    let binary = write(dir.path(), "binary.txt", b"[GENERATE GRAPH]\xff\xfe");
    let out = gent().args(["llm", "split", "--train", "t", "--held-back", "b"]).arg(&binary).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("byte 16: not UTF-8"), "{}", String::from_utf8_lossy(&out.stderr));
}
