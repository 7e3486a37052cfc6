//! Positions for errors in JSON inputs. Readers parse a list of elements as raw
//! slices first, so a problem found after parsing (a bad id, an overflowing
//! timestamp) can still be reported at the line and column where it lies.

use serde_json::value::RawValue;

use super::{ParseError, Position};

/// A serde_json error over the whole of `text`.
pub fn error(text: &[u8], e: &serde_json::Error) -> ParseError {
    let position = if e.line() == 0 {
        Position::Byte(text.len() as u64)
    } else {
        // serde_json counts column 0 for "before the first character".
        Position::Line { line: e.line() as u64, column: e.column().max(1) as u64 }
    };
    ParseError::new(position, reason(e))
}

/// serde_json's message without its " at line L column C" suffix, since the
/// position is reported on its own; hex ids get a hint, as protobuf's own JSON
/// mapping (base64 ids) is the usual way to get them wrong.
fn reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let mut reason = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
    if reason.starts_with("invalid character") || reason.starts_with("odd number of digits") {
        reason.push_str(" (ids must be hex strings as OTLP JSON requires, not base64)");
    }
    reason
}

/// Byte offset of `raw` (a slice borrowed from `text`) within `text`.
fn offset_of(text: &[u8], raw: &RawValue) -> usize {
    (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize)
}

/// An error about the element `raw` of `text`, placed at its start.
pub fn error_at(text: &[u8], raw: &RawValue, reason: impl Into<String>) -> ParseError {
    ParseError::new(Position::of_offset(text, offset_of(text, raw)), reason)
}

/// Parses the element `raw` of `text`, placing any error within the whole file.
pub fn parse_element<'a, T: serde::Deserialize<'a>>(text: &[u8], raw: &'a RawValue) -> Result<T, ParseError> {
    serde_json::from_str(raw.get()).map_err(|e| {
        let inner = raw.get().as_bytes();
        // Walk to the error's line and column inside the element.
        let mut offset = 0;
        for _ in 1..e.line() {
            match inner[offset..].iter().position(|&b| b == b'\n') {
                Some(i) => offset += i + 1,
                None => break,
            }
        }
        let offset = offset + e.column().saturating_sub(1);
        ParseError::new(Position::of_offset(text, offset_of(text, raw) + offset), reason(&e))
    })
}

/// Parses the whole of `text` as `T` (typically a list of raw elements).
pub fn parse_all<'a, T: serde::Deserialize<'a>>(text: &'a [u8]) -> Result<T, ParseError> {
    serde_json::from_slice(text).map_err(|e| error(text, &e))
}

/// Microseconds (Jaeger, Zipkin) to nanoseconds, refusing values past year 2554.
pub fn micros_to_nanos(micros: u64, field: &str) -> Result<u64, String> {
    micros.checked_mul(1_000).ok_or_else(|| format!("{field} {micros} µs overflows 64-bit nanoseconds"))
}
