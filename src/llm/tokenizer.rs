//! Tokens for call-graph text.
//!
//! Choice: a word-level vocabulary learned from the training text, with whole
//! identifiers on top and digits and characters underneath. The encodings are
//! a small formal language — tags, condition keys, field phrases, a few
//! hundred template words — plus identifiers and numbers. So:
//! - every run of letters and underscores (with the space before it, if any)
//!   seen at least `min_count` times is one token (`edge_id`, ` milliseconds`,
//!   `<` + `layer` + `>` ...);
//! - every identifier — a word ending in `_` directly followed by digits, as
//!   microservice and service ids are written (` MS_57649`, `S_000034483`) —
//!   seen at least `min_count` times is one token too. A model then learns who
//!   calls whom from one embedding per microservice, instead of first having to
//!   learn which five digits go together. An identifier not in the vocabulary
//!   is spelled as its word and its digits, so unseen ids still encode;
//! - every digit is its own token, so any number is spelled out digit by digit:
//!   times and counts need no vocabulary entry, and constrained decoding can
//!   bound a number digit by digit;
//! - every other printable ASCII character and the newline is a token, and any
//!   other byte is a `<0xNN>` token, so every text encodes and decodes exactly.
//!
//! Encoding is deterministic: an identifier in the vocabulary is always its one
//! token, never its spelling, so constrained decoding offers exactly one way to
//! write each id (see `generate`). A vocabulary without identifiers (model
//! files written before them) encodes as it always did.
//!
//! A BPE vocabulary would merge frequent numbers too, but would make
//! number-level constraints depend on the merges; it can replace this behind
//! the same interface.

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

/// Longest digit run an identifier token may end in; longer runs are spelled.
const MAX_ID_DIGITS: usize = 20;

/// One piece of text from byte `i`: `word` ends the word (or the single byte),
/// `end` the identifier's digits after it (`end == word` when there are none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    word: usize,
    end: usize,
}

/// The next piece of `text` from byte `i`: a word (with one leading space if
/// present) and, when the word ends in `_`, the digits right after it; or a
/// digit or a single byte.
fn piece(text: &[u8], i: usize) -> Piece {
    let start = if text[i] == b' ' && text.get(i + 1).is_some_and(|&b| is_word(b)) { i + 1 } else { i };
    if !is_word(text[start]) {
        return Piece { word: i + 1, end: i + 1 };
    }
    let mut word = start;
    while word < text.len() && is_word(text[word]) {
        word += 1;
    }
    let mut end = word;
    if text[word - 1] == b'_' {
        while end < text.len() && end - word < MAX_ID_DIGITS && text[end].is_ascii_digit() {
            end += 1;
        }
        // A run cut at the limit is no identifier: spell all of it.
        if end < text.len() && text[end].is_ascii_digit() {
            end = word;
        }
    }
    Piece { word, end }
}

/// Whether `token` is one identifier piece (a word ending in `_`, then digits).
fn is_identifier(token: &str) -> bool {
    let bytes = token.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let p = piece(bytes, 0);
    p.end > p.word && p.end == bytes.len()
}

fn byte_token(b: u8) -> String {
    format!("<0x{b:02X}>")
}

impl Tokenizer {
    /// Learns the vocabulary from `texts`: words and identifiers seen at least
    /// `min_count` times, most frequent first, at most `max_words` words and
    /// `max_ids` identifiers (0: none, the digit-only tokenizer).
    pub fn train<'a>(texts: impl IntoIterator<Item = &'a str>, min_count: usize, max_words: usize, max_ids: usize) -> Self {
        let mut words: HashMap<&'a str, usize> = HashMap::new();
        let mut ids: HashMap<&'a str, usize> = HashMap::new();
        for text in texts {
            let bytes = text.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let p = piece(bytes, i);
                if p.word - i > 1 || is_word(bytes[i]) {
                    *words.entry(&text[i..p.word]).or_default() += 1;
                }
                if p.end > p.word {
                    *ids.entry(&text[i..p.end]).or_default() += 1;
                }
                i = p.end;
            }
        }
        let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        tokens.push("\n".into());
        tokens.extend((b' '..=b'~').map(|b| (b as char).to_string()));
        tokens.extend((0u8..=255).filter(|b| !(b' '..=b'~').contains(b) && *b != b'\n').map(byte_token));
        tokens.extend(most_frequent(words, min_count, max_words));
        tokens.extend(most_frequent(ids, min_count, max_ids));
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

    /// How many tokens are whole identifiers (` MS_57649`).
    pub fn identifiers(&self) -> usize {
        self.tokens.iter().filter(|t| is_identifier(t)).count()
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
            let p = piece(bytes, i);
            // An identifier in the vocabulary is one token; otherwise its word,
            // then its digits one by one.
            if let Some(&id) = (p.end > p.word).then(|| self.index.get(&text[i..p.end])).flatten() {
                out.push(id);
            } else {
                self.encode_word(text, i, p.word, &mut out);
                out.extend(bytes[p.word..p.end].iter().map(|&b| self.byte_id(b)));
            }
            i = p.end;
        }
        out
    }

    /// The word `text[i..end]` as one token, or byte by byte.
    fn encode_word(&self, text: &str, i: usize, end: usize, out: &mut Vec<u32>) {
        // Multi-byte pieces are ASCII words, so slicing there is safe; a
        // single byte may sit inside a UTF-8 character and goes by value.
        if end - i > 1
            && let Some(&id) = self.index.get(&text[i..end])
        {
            out.push(id);
            return;
        }
        out.extend(text.as_bytes()[i..end].iter().map(|&b| self.byte_id(b)));
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

/// The pieces seen at least `min_count` times (and longer than one byte),
/// most frequent first, then alphabetical; at most `max` of them.
fn most_frequent(counts: HashMap<&str, usize>, min_count: usize, max: usize) -> Vec<String> {
    let mut kept: Vec<(&str, usize)> = counts.into_iter().filter(|&(w, c)| c >= min_count && w.len() > 1).collect();
    kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    kept.truncate(max);
    kept.into_iter().map(|(w, _)| w.to_string()).collect()
}
