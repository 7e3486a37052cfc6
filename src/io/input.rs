//! Finding input files, undoing gzip, sniffing the format and dispatching to the
//! format's reader.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Format, IoError, ParseError, Position};
use super::{alibaba, jaeger, otlp, span_csv, zipkin};
use crate::trace::Span;

/// Default bound on the decompressed bytes of all files one command reads.
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 128 << 20;
/// Default bound on the spans one command reads.
pub const DEFAULT_MAX_INPUT_SPANS: usize = 500_000;

/// What one reading of input files may hold, so that a gzip bomb or a file
/// of millions of tiny spans is refused before it takes the machine's
/// memory: the decompressed bytes of all files together (each file is
/// inflated into memory whole, at most up to what is left), and the spans
/// (every reader checks before it adds one). Reading costs about 600 bytes
/// of memory per span on top of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    pub bytes: u64,
    pub spans: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits { bytes: DEFAULT_MAX_INPUT_BYTES, spans: DEFAULT_MAX_INPUT_SPANS }
    }
}

/// What a set of input paths yielded.
#[derive(Debug, Default)]
pub struct Input {
    pub spans: Vec<Span>,
    /// Files read, with the format each was read as.
    pub files: Vec<(PathBuf, Format)>,
    /// Files inside folders that are not trace files (READMEs, labels, ...).
    pub skipped: Vec<PathBuf>,
}

/// Reads every file named, and every file below every folder named.
///
/// A file named explicitly must be a trace file; inside a folder, files whose
/// content matches no format are skipped with a warning, since datasets keep
/// labels and notes beside their traces. A trace file that fails to decode is
/// always an error.
pub fn read_inputs(paths: &[PathBuf], format: Option<Format>) -> Result<Input, IoError> {
    read_inputs_within(paths, format, ReadLimits::default())
}

/// [`read_inputs`] within `limits`.
pub fn read_inputs_within(paths: &[PathBuf], format: Option<Format>, limits: ReadLimits) -> Result<Input, IoError> {
    let mut input = Input::default();
    let mut left = Left { limits, bytes: limits.bytes };
    for path in paths {
        if path.is_dir() {
            for file in files_below(path)? {
                match read_within(&file, format, &mut input.spans, &mut left) {
                    Ok(found) => input.files.push((file, found)),
                    Err(IoError::Unrecognised { path, .. }) => {
                        tracing::warn!(path = %path.display(), "skipped: not a trace file");
                        input.skipped.push(path);
                    }
                    Err(e) => return Err(e),
                }
            }
        } else if path.exists() {
            let found = read_within(path, format, &mut input.spans, &mut left)?;
            input.files.push((path.clone(), found));
        } else {
            return Err(IoError::Missing { path: path.clone() });
        }
    }
    Ok(input)
}

/// Regular files below `dir`, recursively, in name order, hidden ones left out.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>, IoError> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|source| IoError::Read { path: folder.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| IoError::Read { path: folder.clone(), source })?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// What is left of a reading's [`ReadLimits`].
struct Left {
    limits: ReadLimits,
    bytes: u64,
}

/// Reads one file (gzip or not) into `out`, returning the format it was read
/// as, within the default [`ReadLimits`].
pub fn read_file(path: &Path, format: Option<Format>, out: &mut Vec<Span>) -> Result<Format, IoError> {
    let limits = ReadLimits::default();
    read_within(path, format, out, &mut Left { limits, bytes: limits.bytes })
}

fn read_within(path: &Path, format: Option<Format>, out: &mut Vec<Span>, left: &mut Left) -> Result<Format, IoError> {
    let too_large = || IoError::TooLarge { path: path.into(), limit: left.limits.bytes };
    let file = std::fs::File::open(path).map_err(|source| IoError::Read { path: path.into(), source })?;
    // A file longer than what is left is refused unread (a pipe's length reads as 0).
    let length = file.metadata().map_or(0, |m| m.len());
    if length > left.bytes {
        return Err(too_large());
    }
    let mut raw = Vec::with_capacity(length as usize);
    file.take(left.bytes + 1).read_to_end(&mut raw).map_err(|source| IoError::Read { path: path.into(), source })?;
    if raw.len() as u64 > left.bytes {
        return Err(too_large());
    }
    let bytes = gunzip(raw, left.bytes).map_err(|e| match e {
        GunzipError::TooLarge => too_large(),
        GunzipError::Corrupt(e) => IoError::Gzip { path: path.into(), position: e.position, reason: e.reason },
    })?;
    left.bytes -= bytes.len() as u64;
    read_bytes(path, &bytes, format, out, left.limits.spans)
}

/// Decodes one file's decompressed `bytes` into `out`, which may hold at most `max` spans.
fn read_bytes(path: &Path, bytes: &[u8], format: Option<Format>, out: &mut Vec<Span>, max: usize) -> Result<Format, IoError> {
    let format = match format.or_else(|| sniff(bytes)) {
        Some(f) => f,
        None if bytes.iter().all(u8::is_ascii_whitespace) => return Ok(Format::OtlpJson),
        None => return Err(unrecognised(path, bytes)),
    };
    let before = out.len();
    decode_within(bytes, format, out, max).map_err(|e| {
        out.truncate(before);
        let mut reason = e.reason;
        if reason.ends_with(&super::too_many_spans(max)) {
            reason.push_str(" (raise --max-input-spans)");
        }
        IoError::Parse { path: path.into(), format, position: e.position, reason }
    })?;
    Ok(format)
}

/// Where a file's content starts and what is there, for a file no reader takes.
fn unrecognised(path: &Path, bytes: &[u8]) -> IoError {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
    let head = &bytes[start..bytes.len().min(start + 24)];
    let found = match std::str::from_utf8(head) {
        Ok(text) if !text.chars().any(char::is_control) => format!("with {text:?}"),
        _ => format!("with bytes {}", head.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")),
    };
    IoError::Unrecognised { path: path.into(), position: Position::of_offset(bytes, start), found }
}

enum GunzipError {
    TooLarge,
    Corrupt(ParseError),
}

/// Decompresses gzip (recognised by its magic bytes, whatever the file is called)
/// to at most `limit` bytes; other content passes through untouched.
fn gunzip(raw: Vec<u8>, limit: u64) -> Result<Vec<u8>, GunzipError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut compressed: &[u8] = &raw;
    let mut text = Vec::with_capacity((raw.len() * 6).min(limit as usize));
    let decoder = flate2::read::MultiGzDecoder::new(&mut compressed);
    let result = decoder.take(limit + 1).read_to_end(&mut text);
    match result {
        Ok(n) if n as u64 > limit => Err(GunzipError::TooLarge),
        Ok(_) => Ok(text),
        Err(e) => {
            // The decoder reads ahead through a buffer, so this is where the
            // damage was noticed, at most one buffer past where it lies.
            let offset = (raw.len() - compressed.len()) as u64;
            Err(GunzipError::Corrupt(ParseError::new(
                Position::Byte(offset),
                format!("{e} after {} decompressed bytes", text.len()),
            )))
        }
    }
}

/// Decodes an in-memory (decompressed) file of a known format into `out`.
pub fn decode(bytes: &[u8], format: Format, out: &mut Vec<Span>) -> Result<(), ParseError> {
    decode_within(bytes, format, out, usize::MAX)
}

/// [`decode`], failing before `out` holds more than `max` spans.
pub fn decode_within(bytes: &[u8], format: Format, out: &mut Vec<Span>, max: usize) -> Result<(), ParseError> {
    match format {
        Format::OtlpProto => otlp::read_proto(bytes, out, max),
        Format::OtlpJson => otlp::read_json(bytes, out, max),
        Format::Jaeger => jaeger::read(bytes, out, max),
        Format::Zipkin => zipkin::read(bytes, out, max),
        Format::SpanCsv => span_csv::read(bytes, out, max),
        Format::Alibaba => alibaba::read(bytes, out, max),
    }
}

/// Recognises a format from the first bytes of (decompressed) content.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    // Field 1 (resource_spans), wire type 2: every non-empty request starts so.
    // That byte is also a newline, so text formats are tried first.
    sniff_text(bytes).or_else(|| (bytes.first() == Some(&0x0a)).then_some(Format::OtlpProto))
}

fn sniff_text(bytes: &[u8]) -> Option<Format> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let text = &bytes[start..];
    let head = &text[..text.len().min(64 * 1024)];
    let has = |needle: &str| memchr::memmem::find(head, needle.as_bytes()).is_some();
    match text[0] {
        b'{' | b'[' if has("\"resourceSpans\"") || has("\"resource_spans\"") => Some(Format::OtlpJson),
        b'{' if has("\"data\"") && (has("\"traceID\"") || has("\"spanID\"")) => Some(Format::Jaeger),
        b'[' if has("\"traceId\"") => Some(Format::Zipkin),
        b'[' if text.starts_with(b"[GENERATE GRAPH]") => Some(Format::Alibaba),
        b'T' if span_csv::is_header(head) => Some(Format::SpanCsv),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_each_format_by_content() {
        assert_eq!(sniff(b" {\"resourceSpans\":[]}"), Some(Format::OtlpJson));
        assert_eq!(sniff(b"{\"data\":[{\"traceID\":\"1\"}]}"), Some(Format::Jaeger));
        assert_eq!(sniff(b"[{\"traceId\":\"1\"}]"), Some(Format::Zipkin));
        assert_eq!(sniff(b"[GENERATE GRAPH]id:S_1\n<edges>"), Some(Format::Alibaba));
        assert_eq!(
            sniff(b"TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n"),
            Some(Format::SpanCsv)
        );
        assert_eq!(sniff(&[0x0a, 0x03, 1, 2, 3]), Some(Format::OtlpProto));
        assert_eq!(sniff(b"{\"inject_time\": 1}"), None);
        assert_eq!(sniff(b"# README"), None);
    }

    #[test]
    fn an_unrecognised_file_is_reported_with_where_its_content_starts() {
        let e = unrecognised(Path::new("f"), b"\n\n  # README").to_string();
        assert!(e.starts_with("f: line 3, column 3: format not recognised: the content starts with \"# README\""), "{e}");
        let e = unrecognised(Path::new("f"), &[0xff, 0x00, 0x7f]).to_string();
        assert!(e.contains("line 1, column 1") && e.contains("with bytes ff 00 7f"), "{e}");
    }

    #[test]
    fn gzip_is_detected_by_magic_and_truncation_reported() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&b"hello world ".repeat(1000)).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(gz.clone(), 1 << 20).ok().unwrap().len(), 12_000);
        assert!(matches!(gunzip(gz.clone(), 11_999), Err(GunzipError::TooLarge)));
        let cut = gz[..gz.len() / 2].to_vec();
        match gunzip(cut, 1 << 20) {
            Err(GunzipError::Corrupt(e)) => assert!(matches!(e.position, Position::Byte(_))),
            _ => panic!("a truncated gzip stream must fail"),
        }
        assert_eq!(gunzip(b"plain".to_vec(), 1 << 20).ok().unwrap(), b"plain");
    }
}
