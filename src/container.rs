//! The sealed container: a value as bytes, self-contained, versioned and
//! checksummed. Window packets and language-model files are both sealed in it.
//!
//! Layout: `GENT` magic (4 bytes), format version (u16 LE), the compressed
//! postcard encoding of the body, then an xxh3-64 checksum (u64 LE) of every
//! byte before it. Magic and version sit outside the compression so a reader
//! can name a foreign or newer packet before inflating anything, and the
//! checksum covers the compressed bytes so that every bit flip is caught,
//! including flips in header fields a decoder would ignore. Inflating is
//! bounded by [`MAX_BODY_BYTES`], so a hostile packet cannot exhaust memory.
//!
//! Window packets (format 6 on) are compressed with zstd at level 19: 2–4%
//! smaller than gzip at its best on the shared data (5,311 against 5,454 bytes
//! for TrainTicket hour 16), and the gap grows with the packet. Other files in
//! the container (language models) keep gzip, so the files written before stay
//! readable.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// How a container's body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Gzip,
    Zstd,
}

/// zstd's level for window packets: its best short of the memory-hungry `--ultra` levels.
const ZSTD_LEVEL: i32 = 19;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xxhash_rust::xxh3::xxh3_64;

/// First four bytes of every packet.
pub const MAGIC: &[u8; 4] = b"GENT";
/// The packet format this build writes and reads.
pub const FORMAT_VERSION: u16 = 22;
/// Largest body of a container file (a language model) after decompression.
pub const MAX_BODY_BYTES: u64 = 1 << 30;
/// Largest window packet body after decompression. A packet's body decodes
/// into at most about 24 times its bytes (a one-byte empty string becomes a
/// 24-byte `String`), so this keeps a hostile packet's model within about
/// 400 MB; real window packets are kilobytes to a few megabytes.
pub const MAX_WINDOW_BODY_BYTES: u64 = 16 << 20;

const HEADER: usize = MAGIC.len() + 2;
const TRAILER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("not a gent packet: it is {len} bytes, the smallest packet is {min}")]
    TooShort { len: usize, min: usize },
    #[error("not a gent packet: it starts with {found:02x?}, not \"GENT\"")]
    Magic { found: [u8; 4] },
    #[error("packet format version {found}; this gent reads version {expected} only")]
    Version { found: u16, expected: u16 },
    #[error("packet checksum mismatch (stored {stored:016x}, computed {computed:016x}): the packet is damaged or truncated")]
    Checksum { stored: u64, computed: u64 },
    #[error("packet body does not inflate: {0}")]
    Inflate(String),
    #[error("packet body is larger than {limit} bytes once inflated")]
    TooLarge { limit: u64 },
    #[error("packet has {0} bytes after its body")]
    Trailing(usize),
    #[error("packet body does not decode: {0}")]
    Decode(String),
    #[error("cannot encode packet: {0}")]
    Encode(String),
}

/// The bytes `body` takes once compressed as a window packet's body is.
pub fn compressed_len(body: &[u8]) -> usize {
    zstd::bulk::compress(body, ZSTD_LEVEL).map_or(body.len(), |c| c.len())
}

/// `body` as a packet.
pub fn seal<T: Serialize>(body: &T) -> Result<Vec<u8>, PacketError> {
    seal_with(body, FORMAT_VERSION, Codec::Zstd, MAX_WINDOW_BODY_BYTES)
}

/// The body of a packet, after checking magic, version and checksum, in that order.
pub fn open<T: DeserializeOwned>(packet: &[u8]) -> Result<T, PacketError> {
    open_checked(packet, |_: &()| Ok(()))
}

/// As [`open`], but the body is decoded only once `check` has accepted its
/// prefix `P` (a window packet's header): a packet whose counts are out of
/// bounds is refused before the rest of its body takes memory.
pub fn open_checked<P, T, E>(packet: &[u8], check: impl FnOnce(&P) -> Result<(), E>) -> Result<T, E>
where
    P: DeserializeOwned,
    T: DeserializeOwned,
    E: From<PacketError>,
{
    let body = inflate(packet, FORMAT_VERSION, Codec::Zstd, MAX_WINDOW_BODY_BYTES)?;
    let decode = |e: postcard::Error| PacketError::Decode(e.to_string());
    let (prefix, _) = postcard::take_from_bytes::<P>(&body).map_err(decode)?;
    check(&prefix)?;
    let (value, rest) = postcard::take_from_bytes(&body).map_err(decode)?;
    // A window packet's body is one value and nothing after it.
    if rest.is_empty() { Ok(value) } else { Err(PacketError::Trailing(rest.len()).into()) }
}

/// `body` in the packet container under another `version`: files that use
/// the container (language models) version their layout apart from the
/// window packet, so a new packet format does not orphan them.
pub fn seal_as<T: Serialize>(body: &T, version: u16) -> Result<Vec<u8>, PacketError> {
    seal_with(body, version, Codec::Gzip, MAX_BODY_BYTES)
}

/// As [`open`], for a container written by [`seal_as`] with `expected`;
/// `T` may be a prefix of the body (a model file's kind is read alone first).
pub fn open_as<T: DeserializeOwned>(packet: &[u8], expected: u16) -> Result<T, PacketError> {
    open_with(packet, expected, Codec::Gzip, MAX_BODY_BYTES).map(|(value, _)| value)
}

/// The body bytes (postcard) of a container file written by [`seal_as`] with
/// `version`, after the container's checks: for tools and tests that rewrite
/// containers, e.g. to craft hostile ones whose checksum is valid.
pub fn open_body_as(packet: &[u8], version: u16) -> Result<Vec<u8>, PacketError> {
    inflate(packet, version, Codec::Gzip, MAX_BODY_BYTES)
}

/// `body` (postcard bytes) sealed as [`seal_as`] seals an encoded value.
pub fn seal_body_as(body: &[u8], version: u16) -> Result<Vec<u8>, PacketError> {
    seal_encoded(body.to_vec(), version, Codec::Gzip, MAX_BODY_BYTES)
}

fn seal_with<T: Serialize>(body: &T, version: u16, codec: Codec, limit: u64) -> Result<Vec<u8>, PacketError> {
    let encoded = postcard::to_stdvec(body).map_err(|e| PacketError::Encode(e.to_string()))?;
    seal_encoded(encoded, version, codec, limit)
}

fn seal_encoded(encoded: Vec<u8>, version: u16, codec: Codec, limit: u64) -> Result<Vec<u8>, PacketError> {
    // Never write what a reader would refuse.
    if encoded.len() as u64 > limit {
        return Err(PacketError::TooLarge { limit });
    }
    let mut out = Vec::with_capacity(encoded.len() / 2 + HEADER + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    let encode = |e: std::io::Error| PacketError::Encode(e.to_string());
    let mut out = match codec {
        Codec::Gzip => {
            let mut gz = GzEncoder::new(out, Compression::best());
            gz.write_all(&encoded).map_err(encode)?;
            gz.finish().map_err(encode)?
        }
        Codec::Zstd => {
            out.extend_from_slice(&zstd::bulk::compress(&encoded, ZSTD_LEVEL).map_err(encode)?);
            out
        }
    };
    let checksum = xxh3_64(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// The value at the start of the packet's body and how many body bytes follow it.
fn open_with<T: DeserializeOwned>(packet: &[u8], expected: u16, codec: Codec, limit: u64) -> Result<(T, usize), PacketError> {
    let body = inflate(packet, expected, codec, limit)?;
    let (value, rest) = postcard::take_from_bytes(&body).map_err(|e| PacketError::Decode(e.to_string()))?;
    Ok((value, rest.len()))
}

/// The packet's body after magic, version and checksum checks, inflated within `limit`.
fn inflate(packet: &[u8], expected: u16, codec: Codec, limit: u64) -> Result<Vec<u8>, PacketError> {
    // The smallest gzip stream is 20 bytes (18 is its floor), the smallest zstd frame 9.
    let min = HEADER + TRAILER + if codec == Codec::Gzip { 18 } else { 9 };
    if packet.len() < min {
        if packet.len() >= MAGIC.len() && &packet[..4] != MAGIC {
            return Err(PacketError::Magic { found: packet[..4].try_into().unwrap_or_default() });
        }
        return Err(PacketError::TooShort { len: packet.len(), min });
    }
    let found: [u8; 4] = packet[..4].try_into().unwrap_or_default();
    if &found != MAGIC {
        return Err(PacketError::Magic { found });
    }
    let version = u16::from_le_bytes([packet[4], packet[5]]);
    if version != expected {
        return Err(PacketError::Version { found: version, expected });
    }
    let (content, trailer) = packet.split_at(packet.len() - TRAILER);
    let stored = u64::from_le_bytes(trailer.try_into().unwrap_or_default());
    let computed = xxh3_64(content);
    if stored != computed {
        return Err(PacketError::Checksum { stored, computed });
    }
    let mut body = Vec::new();
    let compressed = &content[HEADER..];
    let inflate = |e: std::io::Error| PacketError::Inflate(e.to_string());
    let left = match codec {
        Codec::Gzip => {
            // One gzip member and nothing after it.
            let mut gz = GzDecoder::new(compressed);
            (&mut gz).take(limit + 1).read_to_end(&mut body).map_err(inflate)?;
            gz.into_inner().len()
        }
        Codec::Zstd => {
            // One zstd frame and nothing after it.
            let frame = zstd::zstd_safe::find_frame_compressed_size(compressed)
                .map_err(|c| PacketError::Inflate(zstd::zstd_safe::get_error_name(c).to_string()))?;
            let decoder = zstd::stream::read::Decoder::new(&compressed[..frame]).map_err(inflate)?;
            decoder.take(limit + 1).read_to_end(&mut body).map_err(inflate)?;
            compressed.len() - frame
        }
    };
    if body.len() as u64 > limit {
        return Err(PacketError::TooLarge { limit });
    }
    if left > 0 {
        return Err(PacketError::Trailing(left));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Body {
        window: u64,
        names: Vec<String>,
        weights: Vec<u8>,
    }

    fn body() -> Body {
        Body { window: 42, names: vec!["a".into(), "b".into()], weights: (0..600u32).map(|i| (i * 7 % 251) as u8).collect() }
    }

    #[test]
    fn round_trip() {
        let packet = seal(&body()).unwrap();
        assert_eq!(&packet[..4], b"GENT");
        assert_eq!(open::<Body>(&packet).unwrap(), body());
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let packet = seal(&body()).unwrap();
        for len in 0..packet.len() {
            assert!(open::<Body>(&packet[..len]).is_err(), "truncated to {len} bytes was accepted");
        }
        for byte in 0..packet.len() {
            for bit in 0..8 {
                let mut bad = packet.clone();
                bad[byte] ^= 1 << bit;
                let e = open::<Body>(&bad).err().unwrap_or_else(|| panic!("flip at byte {byte} bit {bit} accepted"));
                let expected = match byte {
                    0..4 => "not a gent packet",
                    4..6 => "format version",
                    _ => "checksum mismatch",
                };
                assert!(e.to_string().contains(expected), "byte {byte}: {e}");
            }
        }
    }

    /// `body` sealed as a packet by hand: `extra` after the zstd frame,
    /// `tail` after the encoded body.
    fn sealed(extra: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut encoded = postcard::to_stdvec(&body()).unwrap();
        encoded.extend_from_slice(tail);
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&zstd::bulk::compress(&encoded, ZSTD_LEVEL).unwrap());
        out.extend_from_slice(extra);
        let checksum = xxh3_64(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    #[test]
    fn bytes_after_the_frame_or_the_body_are_refused() {
        assert_eq!(open::<Body>(&sealed(&[], &[])).unwrap(), body());
        let e = open::<Body>(&sealed(b"trailing", &[])).unwrap_err().to_string();
        assert!(e.contains("8 bytes after"), "{e}");
        let e = open::<Body>(&sealed(&[], &[1, 2, 3])).unwrap_err().to_string();
        assert!(e.contains("3 bytes after"), "{e}");
    }

    #[test]
    fn a_window_packet_inflating_past_its_cap_is_refused() {
        let big = Body { window: 1, names: Vec::new(), weights: vec![0; (MAX_WINDOW_BODY_BYTES + 10) as usize] };
        // Written by another producer (seal refuses to write it).
        assert!(seal(&big).is_err());
        let packet = seal_with(&big, FORMAT_VERSION, Codec::Zstd, u64::MAX).unwrap();
        let e = open::<Body>(&packet).unwrap_err().to_string();
        assert!(e.contains(&format!("larger than {MAX_WINDOW_BODY_BYTES} bytes")), "{e}");
    }

    #[test]
    fn another_version_is_named() {
        let mut packet = seal(&body()).unwrap();
        packet[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let e = open::<Body>(&packet).unwrap_err().to_string();
        assert!(
            e.contains(&format!("version {}", FORMAT_VERSION + 1)) && e.contains(&format!("version {FORMAT_VERSION}")),
            "{e}"
        );
    }
}
