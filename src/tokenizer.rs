//! llama2.c's byte-pair-encoding tokenizer: reading `tokenizer.bin`, encoding text, decoding
//! tokens.
//!
//! The file holds an `i32` max_token_length, then for each token an `f32` merge score, an `i32`
//! byte length and the token's bytes (SentencePiece's `▁` already turned into a space).
//!
//! Encoding follows `run.c`, which on the Llama 2 vocabulary gives the same ids as SentencePiece:
//! a leading space (the "dummy prefix"), each UTF-8 code point looked up whole, code points
//! missing from the vocabulary spelled as byte tokens `<0xXX>` (id = byte + 3), then repeatedly
//! the adjacent pair whose concatenation is in the vocabulary with the highest score is merged
//! (the leftmost on ties). We find that pair with a priority queue instead of rescanning the
//! sequence, so a long prompt costs `n log n`, not `n²`, and gives the same ids.
//!
//! Decoding also follows `run.c`: the leading space of a piece right after BOS is dropped, byte
//! tokens become their raw byte, and [`printable`] drops lone bytes that are control characters.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::{BTreeMap, BinaryHeap};
use core::cmp::Ordering;
#[cfg(feature = "std")]
use std::path::Path;

use crate::error::{Error, Result};

/// Id of the beginning-of-sequence token.
pub const BOS: u32 = 1;
/// Id of the end-of-sequence token.
pub const EOS: u32 = 2;
/// Id of byte token `<0x00>`; byte `b` is token `b + 3`.
const FIRST_BYTE_TOKEN: u32 = 3;
/// llama2.c only merges pairs scoring above this.
const MIN_MERGE_SCORE: f32 = -1e10;
/// A tokenizer file claiming more tokens than this is corrupt.
const MAX_TOKENS: usize = 1 << 24;

/// A vocabulary with merge scores, able to encode text into token ids and decode them back.
pub struct Tokenizer {
    /// Every token's bytes, concatenated.
    bytes: Vec<u8>,
    /// `bytes[ends[i-1]..ends[i]]` is token `i`.
    ends: Vec<usize>,
    scores: Vec<f32>,
    /// Token id of each distinct piece (the lowest id if a piece appears twice).
    lookup: BTreeMap<Vec<u8>, u32>,
    max_token_length: u32,
}

impl Tokenizer {
    /// Read a tokenizer file holding at least `vocab_size` tokens (the model's vocabulary size);
    /// tokens past `vocab_size` are ignored, as in `run.c`.
    #[cfg(feature = "std")]
    pub fn open(path: impl AsRef<Path>, vocab_size: usize) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Tokenizer::parse(&path.display().to_string(), &bytes, Some(vocab_size))
    }

    /// Read every token of a tokenizer file, however many there are (for tools that have no model).
    #[cfg(feature = "std")]
    pub fn open_all(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Tokenizer::parse(&path.display().to_string(), &bytes, None)
    }

    /// Parse a tokenizer from bytes already in memory; `vocab_size` as in [`Tokenizer::open`], or
    /// `None` to read every token.
    pub fn from_bytes(bytes: &[u8], vocab_size: Option<usize>) -> Result<Tokenizer> {
        Tokenizer::parse("<memory>", bytes, vocab_size)
    }

    fn parse(name: &str, data: &[u8], vocab_size: Option<usize>) -> Result<Tokenizer> {
        let bad = |problem: String| Error::tokenizer(name, problem);
        if let Some(n) = vocab_size {
            if n == 0 || n > MAX_TOKENS {
                return Err(bad(format!("cannot hold a vocabulary of {n} tokens")));
            }
        }
        let mut reader = Reader { data, at: 0 };
        let max_token_length = reader.i32().ok_or_else(|| {
            bad(format!(
                "file is {} bytes, too short for a header",
                data.len()
            ))
        })?;
        if max_token_length < 0 {
            return Err(bad(format!("max_token_length is {max_token_length}")));
        }
        let mut tokenizer = Tokenizer {
            bytes: Vec::new(),
            ends: Vec::new(),
            scores: Vec::new(),
            lookup: BTreeMap::new(),
            max_token_length: max_token_length as u32,
        };
        while vocab_size.is_none_or(|n| tokenizer.ends.len() < n) {
            let i = tokenizer.ends.len();
            if vocab_size.is_none() && reader.at == data.len() {
                break;
            }
            if i >= MAX_TOKENS {
                return Err(bad(format!("holds more than {MAX_TOKENS} tokens")));
            }
            let truncated = |what: &str| {
                let expected = vocab_size.map_or(String::new(), |n| format!(" of {n}"));
                bad(format!("truncated in the {what} of token {i}{expected}"))
            };
            let score = reader.f32().ok_or_else(|| {
                if reader.at == data.len() {
                    let n = vocab_size.unwrap_or(i);
                    bad(format!("holds {i} tokens but the model needs {n}"))
                } else {
                    truncated("score")
                }
            })?;
            let len = reader.i32().ok_or_else(|| truncated("length"))?;
            if len < 0 {
                return Err(bad(format!("token {i} has negative length {len}")));
            }
            let piece = reader
                .take(len as usize)
                .ok_or_else(|| truncated("bytes"))?;
            tokenizer.bytes.extend_from_slice(piece);
            tokenizer.ends.push(tokenizer.bytes.len());
            tokenizer.scores.push(score);
            tokenizer.lookup.entry(piece.to_vec()).or_insert(i as u32);
        }
        if tokenizer.ends.is_empty() {
            return Err(bad("holds no tokens".to_string()));
        }
        Ok(tokenizer)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.ends.len()
    }

    /// The longest token in bytes, as recorded in the file's header.
    pub fn max_token_length(&self) -> u32 {
        self.max_token_length
    }

    /// The bytes of token `id` as stored (a space where SentencePiece writes `▁`), or `None` if
    /// `id` is not in the vocabulary.
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.bytes[start..end])
    }

    /// The merge score of token `id`, or `None` if `id` is not in the vocabulary.
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The piece of an id known to be in the vocabulary (encoding only makes such ids); empty
    /// otherwise rather than a panic.
    fn known_piece(&self, id: u32) -> &[u8] {
        self.piece(id).unwrap_or_default()
    }

    /// Id of the token spelled exactly `piece`, if any.
    pub fn lookup(&self, piece: &[u8]) -> Option<u32> {
        self.lookup.get(piece).copied()
    }

    /// Encode `text` (any bytes; invalid UTF-8 goes through byte tokens) as `run.c` does,
    /// optionally starting with BOS and ending with EOS.
    ///
    /// Fails only if a byte must be spelled as a byte token that this vocabulary does not have.
    pub fn encode(&self, text: &[u8], bos: bool, eos: bool) -> Result<Vec<u32>> {
        let mut tokens = Vec::with_capacity(text.len() + 3);
        if bos {
            tokens.push(BOS);
        }
        let mut symbols = Vec::with_capacity(text.len() + 1);
        // SentencePiece's add_dummy_prefix: text starts with a space, unless it is empty.
        if !text.is_empty() {
            if let Some(space) = self.lookup(b" ") {
                symbols.push(space);
            }
        }
        for code_point in split_code_points(text) {
            match self.lookup(code_point) {
                Some(id) => symbols.push(id),
                None => {
                    for &byte in code_point {
                        symbols.push(self.byte_token(byte)?);
                    }
                }
            }
        }
        self.merge_pairs(&mut symbols);
        tokens.extend(symbols);
        if eos {
            tokens.push(EOS);
        }
        Ok(tokens)
    }

    fn byte_token(&self, byte: u8) -> Result<u32> {
        let id = FIRST_BYTE_TOKEN + byte as u32;
        if (id as usize) < self.vocab_size() {
            Ok(id)
        } else {
            Err(Error::input(format!(
                "cannot encode byte 0x{byte:02X}: the vocabulary of {} tokens has no byte token for it",
                self.vocab_size()
            )))
        }
    }

    /// Merge adjacent tokens, best-scoring pair first (leftmost on ties), until no pair merges.
    ///
    /// The symbols form a linked list; a max-heap holds every candidate pair with its score and
    /// the left symbol's index, which orders ties leftmost-first because merging never reorders
    /// symbols. Candidates made stale by an earlier merge are skipped when popped.
    fn merge_pairs(&self, symbols: &mut Vec<u32>) {
        let n = symbols.len();
        if n < 2 {
            return;
        }
        let mut next: Vec<usize> = (1..=n).collect(); // n means "none"
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let mut scratch = Vec::new();
        for i in 0..n - 1 {
            self.push_candidate(&mut heap, &mut scratch, symbols, i, i + 1);
        }
        while let Some(candidate) = heap.pop() {
            let (left, right) = (candidate.left, candidate.right);
            // Stale if either symbol was merged away or changed since this pair was queued.
            if !alive[left]
                || !alive[right]
                || next[left] != right
                || symbols[left] != candidate.left_id
                || symbols[right] != candidate.right_id
            {
                continue;
            }
            symbols[left] = candidate.merged;
            alive[right] = false;
            next[left] = next[right];
            if next[right] < n {
                prev[next[right]] = left;
            }
            if prev[left] < n {
                self.push_candidate(&mut heap, &mut scratch, symbols, prev[left], left);
            }
            if next[left] < n {
                self.push_candidate(&mut heap, &mut scratch, symbols, left, next[left]);
            }
        }
        let mut write = 0;
        for read in 0..n {
            if alive[read] {
                symbols[write] = symbols[read];
                write += 1;
            }
        }
        symbols.truncate(write);
    }

    fn push_candidate(
        &self,
        heap: &mut BinaryHeap<Candidate>,
        scratch: &mut Vec<u8>,
        symbols: &[u32],
        left: usize,
        right: usize,
    ) {
        scratch.clear();
        scratch.extend_from_slice(self.known_piece(symbols[left]));
        scratch.extend_from_slice(self.known_piece(symbols[right]));
        if let Some(merged) = self.lookup(scratch) {
            let score = self.scores[merged as usize];
            // run.c keeps a pair only if its score beats -1e10 (so NaN never merges).
            if score > MIN_MERGE_SCORE {
                heap.push(Candidate {
                    score,
                    left,
                    right,
                    left_id: symbols[left],
                    right_id: symbols[right],
                    merged,
                });
            }
        }
    }

    /// The bytes token `token` stands for when it follows `prev`, as `run.c` decodes them: no
    /// leading space right after BOS, and `<0xXX>` byte tokens turned into the byte itself.
    ///
    /// Errors if `token` is not in the vocabulary (`prev` may be anything).
    pub fn decode(&self, prev: u32, token: u32) -> Result<&[u8]> {
        let mut piece = self.piece(token).ok_or_else(|| {
            Error::input(format!(
                "token {token} is outside the tokenizer's vocabulary of {} tokens",
                self.vocab_size()
            ))
        })?;
        if prev == BOS && piece.first() == Some(&b' ') {
            piece = &piece[1..];
        }
        Ok(match parse_byte_token(piece) {
            Some(byte) => &BYTES[byte as usize..byte as usize + 1],
            None => piece,
        })
    }
}

/// Every byte value, so a decoded byte token can be returned as a slice.
static BYTES: [u8; 256] = {
    let mut all = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        all[i] = i as u8;
        i += 1;
    }
    all
};

/// What `run.c`'s `safe_printf` would print of a decoded piece: nothing for a lone byte that is
/// neither printable ASCII nor whitespace (control codes, and the halves of multi-byte
/// characters that came from byte tokens), the piece itself otherwise.
pub fn printable(piece: &[u8]) -> &[u8] {
    match piece {
        [b] if !(b.is_ascii_graphic() || *b == b' ' || is_c_space(*b)) => &[],
        _ => piece,
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Parse a byte token's spelling: `<0x` followed by one or two hex digits, as `run.c`'s
/// `sscanf(piece, "<0x%02hhX>")` accepts it.
fn parse_byte_token(piece: &[u8]) -> Option<u8> {
    let digits = piece.strip_prefix(b"<0x")?;
    let hex: Vec<u8> = digits
        .iter()
        .take(2)
        .take_while(|b| b.is_ascii_hexdigit())
        .copied()
        .collect();
    if hex.is_empty() {
        return None;
    }
    let text = core::str::from_utf8(&hex).ok()?;
    u8::from_str_radix(text, 16).ok()
}

/// Split bytes the way `run.c` walks them: a code point is a byte that is not a UTF-8
/// continuation byte, followed by the continuation bytes after it, at most four bytes in all.
/// Invalid UTF-8 therefore still splits into short runs that fall back to byte tokens.
fn split_code_points(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let mut start = 0;
    core::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let mut end = start + 1;
        while end < text.len() && is_continuation(text[end]) && end - start < 4 {
            end += 1;
        }
        let code_point = &text[start..end];
        start = end;
        Some(code_point)
    })
}

/// A mergeable adjacent pair in the priority queue.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    left_id: u32,
    right_id: u32,
    merged: u32,
}

impl Ord for Candidate {
    /// Higher score first; on equal scores the leftmost pair first.
    fn cmp(&self, other: &Self) -> Ordering {
        // Scores in the queue are never NaN; partial_cmp keeps -0.0 == 0.0, as C's `>` does.
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

#[cfg(feature = "std")]
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::other("is a directory, not a file"),
        ));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads little-endian numbers and byte runs off a buffer, returning `None` past its end.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.data.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32(&mut self) -> Option<f32> {
        self.take(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_points_split_like_run_c() {
        let parts: Vec<&[u8]> = split_code_points("aé€😀".as_bytes()).collect();
        assert_eq!(
            parts,
            vec![&b"a"[..], "é".as_bytes(), "€".as_bytes(), "😀".as_bytes()]
        );
        // A stray continuation byte starts a run of its own; runs stop at four bytes.
        let parts: Vec<&[u8]> = split_code_points(&[0x80, 0x80, 0x80, 0x80, 0x80, b'x']).collect();
        assert_eq!(
            parts,
            vec![&[0x80, 0x80, 0x80, 0x80][..], &[0x80][..], &b"x"[..]]
        );
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token(b"<0x0A>"), Some(10));
        assert_eq!(parse_byte_token(b"<0xFF>"), Some(255));
        assert_eq!(parse_byte_token(b"<0x"), None);
        assert_eq!(parse_byte_token(b"hello"), None);
    }

    #[test]
    fn printable_drops_lone_control_bytes() {
        assert_eq!(printable(b"\x07"), b"");
        assert_eq!(printable(&[0xE2]), b"");
        assert_eq!(printable(b"\n"), b"\n");
        assert_eq!(printable(b"a"), b"a");
        assert_eq!(printable("é".as_bytes()), "é".as_bytes());
    }
}
