//! Finding input files, undoing gzip, sniffing the format and dispatching to the
//! format's reader.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Format, IoError, ParseError, Position};
use super::{alibaba, jaeger, otlp, span_csv, zipkin};
use crate::trace::Span;

/// Largest decompressed file accepted, so a gzip bomb cannot exhaust memory.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

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
    let mut input = Input::default();
    for path in paths {
        if path.is_dir() {
            for file in files_below(path)? {
                match read_file(&file, format, &mut input.spans) {
                    Ok(found) => input.files.push((file, found)),
                    Err(IoError::Unrecognised { path }) => {
                        tracing::warn!(path = %path.display(), "skipped: not a trace file");
                        input.skipped.push(path);
                    }
                    Err(e) => return Err(e),
                }
            }
        } else if path.exists() {
            let found = read_file(path, format, &mut input.spans)?;
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

/// Reads one file (gzip or not) into `out`, returning the format it was read as.
pub fn read_file(path: &Path, format: Option<Format>, out: &mut Vec<Span>) -> Result<Format, IoError> {
    let raw = std::fs::read(path).map_err(|source| IoError::Read { path: path.into(), source })?;
    let bytes = gunzip(raw).map_err(|e| match e {
        GunzipError::TooLarge => IoError::TooLarge { path: path.into(), limit: MAX_FILE_BYTES },
        GunzipError::Corrupt(e) => IoError::Gzip { path: path.into(), position: e.position, reason: e.reason },
    })?;
    let format = match format.or_else(|| sniff(&bytes)) {
        Some(f) => f,
        None if bytes.iter().all(u8::is_ascii_whitespace) => return Ok(Format::OtlpJson),
        None => return Err(IoError::Unrecognised { path: path.into() }),
    };
    let before = out.len();
    decode(&bytes, format, out).map_err(|e| {
        out.truncate(before);
        IoError::Parse { path: path.into(), format, position: e.position, reason: e.reason }
    })?;
    Ok(format)
}

enum GunzipError {
    TooLarge,
    Corrupt(ParseError),
}

/// Decompresses gzip (recognised by its magic bytes, whatever the file is called);
/// other content passes through untouched.
fn gunzip(raw: Vec<u8>) -> Result<Vec<u8>, GunzipError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut compressed: &[u8] = &raw;
    let mut text = Vec::with_capacity(raw.len() * 6);
    let decoder = flate2::read::MultiGzDecoder::new(&mut compressed);
    let result = decoder.take(MAX_FILE_BYTES + 1).read_to_end(&mut text);
    match result {
        Ok(n) if n as u64 > MAX_FILE_BYTES => Err(GunzipError::TooLarge),
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
    match format {
        Format::OtlpProto => otlp::read_proto(bytes, out),
        Format::OtlpJson => otlp::read_json(bytes, out),
        Format::Jaeger => jaeger::read(bytes, out),
        Format::Zipkin => zipkin::read(bytes, out),
        Format::SpanCsv => span_csv::read(bytes, out),
        Format::Alibaba => alibaba::read(bytes, out),
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
    fn gzip_is_detected_by_magic_and_truncation_reported() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&b"hello world ".repeat(1000)).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(gz.clone()).ok().unwrap().len(), 12_000);
        let cut = gz[..gz.len() / 2].to_vec();
        match gunzip(cut) {
            Err(GunzipError::Corrupt(e)) => assert!(matches!(e.position, Position::Byte(_))),
            _ => panic!("a truncated gzip stream must fail"),
        }
        assert_eq!(gunzip(b"plain".to_vec()).ok().unwrap(), b"plain");
    }
}
