//! Tokens for call-graph text.
//!
//! Choice: a word-level vocabulary learned from the training text, with digits
//! and characters underneath. The encodings are a small formal language —
//! tags, condition keys, field phrases, a few hundred template words — plus
//! identifiers and numbers. So:
//! - every run of letters and underscores (with the space before it, if any)
//!   seen at least `min_count` times is one token (`edge_id`, ` milliseconds`,
//!   `<` + `layer` + `>` ...);
//! - every digit is its own token, so any number is spelled out digit by digit:
//!   times, counts and the numeric part of `MS_57649` need no vocabulary entry,
//!   and constrained decoding can bound a number digit by digit;
//! - every other printable ASCII character and the newline is a token, and any
//!   other byte is a `<0xNN>` token, so every text encodes and decodes exactly.
//!
//! A BPE vocabulary would merge frequent numbers and ids into single tokens and
//! so shorten sequences, but would make number-level constraints depend on the
//! merges; it can replace this behind the same interface.

use std::collections::HashMap;

/// Padding, start and end of a sequence.
pub const PAD: u32 = 0;
pub const BOS: u32 = crate::nn::lm::START;
pub const EOS: u32 = 2;
const SPECIALS: [&str; 3] = ["<pad>", "<bos>", "<eos>"];

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tokenizer {
    tokens: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

/// The next piece of `text` from byte `i`: a word (with one leading space if
/// present), a digit, or a single byte; returns its end.
fn piece_end(text: &[u8], i: usize) -> usize {
    let start = if text[i] == b' ' && text.get(i + 1).is_some_and(|&b| is_word(b)) { i + 1 } else { i };
    if is_word(text[start]) {
        let mut j = start;
        while j < text.len() && is_word(text[j]) {
            j += 1;
        }
        return j;
    }
    i + 1
}

fn byte_token(b: u8) -> String {
    format!("<0x{b:02X}>")
}

impl Tokenizer {
    /// Learns the word vocabulary from `texts`: words seen at least
    /// `min_count` times, most frequent first, at most `max_words` of them.
    pub fn train<'a>(texts: impl IntoIterator<Item = &'a str>, min_count: usize, max_words: usize) -> Self {
        let mut counts: HashMap<&'a str, usize> = HashMap::new();
        for text in texts {
            let bytes = text.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let end = piece_end(bytes, i);
                if end - i > 1 || is_word(bytes[i]) {
                    *counts.entry(&text[i..end]).or_default() += 1;
                }
                i = end;
            }
        }
        let mut words: Vec<(&str, usize)> = counts.into_iter().filter(|&(w, c)| c >= min_count && w.len() > 1).collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        words.truncate(max_words);
        let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        tokens.push("\n".into());
        tokens.extend((b' '..=b'~').map(|b| (b as char).to_string()));
        tokens.extend((0u8..=255).filter(|b| !(b' '..=b'~').contains(b) && *b != b'\n').map(byte_token));
        tokens.extend(words.into_iter().map(|(w, _)| w.to_string()));
        Self::from_tokens(tokens)
    }

    /// A tokenizer with exactly these tokens (as stored in a checkpoint).
    pub fn from_tokens(tokens: Vec<String>) -> Self {
        let index = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        Tokenizer { tokens, index }
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// `text` as token ids (no BOS/EOS).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len() / 3);
        let mut i = 0;
        while i < bytes.len() {
            let end = piece_end(bytes, i);
            // Multi-byte pieces are ASCII words, so slicing there is safe; a
            // single byte may sit inside a UTF-8 character and goes by value.
            if end - i == 1 {
                out.push(self.byte_id(bytes[i]));
            } else if let Some(&id) = self.index.get(&text[i..end]) {
                out.push(id);
            } else {
                for &b in &bytes[i..end] {
                    out.push(self.byte_id(b));
                }
            }
            i = end;
        }
        out
    }

    fn byte_id(&self, b: u8) -> u32 {
        let key = if (b' '..=b'~').contains(&b) || b == b'\n' { (b as char).to_string() } else { byte_token(b) };
        self.index.get(&key).copied().unwrap_or(PAD)
    }

    /// The text of `ids`; special tokens write nothing, byte tokens their byte.
    /// Bytes that do not form UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 3);
        for &id in ids {
            if id < SPECIALS.len() as u32 {
                continue;
            }
            let Some(t) = self.token(id) else { continue };
            match t.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) if t.len() == 6 => bytes.push(b),
                _ => bytes.extend_from_slice(t.as_bytes()),
            }
        }
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}
