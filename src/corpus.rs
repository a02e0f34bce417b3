//! Training text as a stream of documents, read in batches of bounded size.
//!
//! A document is one line of a `.txt` file, or the `"story"` string of each object of a
//! TinyStories `.json` shard (a JSON array of objects; other fields are skipped). Every
//! document is trimmed of surrounding whitespace, as llama2.c's `tinystories.py` does with
//! `text.strip()`. Lines that are empty after trimming, or are not UTF-8, are skipped and
//! counted, never fatal. A file that is not valid JSON is an error naming the file and offset.
//!
//! Files are read front to back and handed out in batches of a few megabytes, so memory stays
//! bounded however large the corpus is; [`map_in_order`] then spreads one batch over the
//! threads and keeps the results in document order.
//!
//! This module only reads text. What to do with it is the business of
//! [`pretokenize`](crate::pretokenize) and [`bpe`](crate::bpe).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How many bytes of documents a batch holds before it is handed to the caller.
pub const BATCH_BYTES: usize = 4 << 20;

/// How deeply JSON arrays and objects may nest inside a story object (deeper is an error,
/// not a stack overflow).
const MAX_JSON_DEPTH: usize = 64;

/// What reading a corpus found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CorpusStats {
    /// Documents handed out.
    pub documents: u64,
    /// Their bytes, after trimming.
    pub bytes: u64,
    /// Lines or stories skipped because they were empty or all whitespace.
    pub skipped_empty: u64,
    /// Lines or stories skipped because they were not valid UTF-8 (or held a lone surrogate
    /// escape such as `\ud800`).
    pub skipped_invalid: u64,
}

/// The two kinds of input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// One document per line.
    Lines,
    /// A TinyStories shard: `[{"story": "...", ...}, ...]`.
    TinyStoriesJson,
}

impl Format {
    fn of(path: &Path) -> Format {
        let is_json = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        if is_json {
            Format::TinyStoriesJson
        } else {
            Format::Lines
        }
    }
}

/// Read every document of `paths` in order, calling `on_batch` with successive batches of
/// about [`BATCH_BYTES`] bytes. Fails if there is no input file, if a file cannot be read or
/// is broken JSON, or with the first error `on_batch` returns.
pub fn read_documents(
    paths: &[PathBuf],
    mut on_batch: impl FnMut(&[String]) -> Result<()>,
) -> Result<CorpusStats> {
    if paths.is_empty() {
        return Err(Error::input("no input files"));
    }
    let mut stats = CorpusStats::default();
    let mut batch = Batch {
        documents: Vec::new(),
        bytes: 0,
    };
    for path in paths {
        let file = open(path)?;
        let mut sink = |document: Option<String>, stats: &mut CorpusStats| -> Result<()> {
            if let Some(document) = document {
                stats.documents += 1;
                stats.bytes += document.len() as u64;
                batch.bytes += document.len();
                batch.documents.push(document);
                if batch.bytes >= BATCH_BYTES {
                    on_batch(&batch.documents)?;
                    batch.documents.clear();
                    batch.bytes = 0;
                }
            }
            Ok(())
        };
        match Format::of(path) {
            Format::Lines => read_lines(path, file, &mut stats, &mut sink)?,
            Format::TinyStoriesJson => {
                let mut json = JsonReader {
                    input: file,
                    path,
                    offset: 0,
                };
                json.read_stories(&mut stats, &mut sink)?;
            }
        }
    }
    if !batch.documents.is_empty() {
        on_batch(&batch.documents)?;
    }
    Ok(stats)
}

/// Documents waiting to be handed out.
struct Batch {
    documents: Vec<String>,
    bytes: usize,
}

fn open(path: &Path) -> Result<BufReader<File>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::other("is a directory, not a file"),
        ));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(BufReader::with_capacity(1 << 16, file))
}

/// Whitespace as Python's `str.strip()` sees it: Unicode White_Space plus the ASCII
/// separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Turn raw text into a document: trimmed, or `None` (and counted) if empty or not UTF-8.
fn document(raw: Vec<u8>, stats: &mut CorpusStats) -> Option<String> {
    let Ok(text) = String::from_utf8(raw) else {
        stats.skipped_invalid += 1;
        return None;
    };
    let trimmed = text.trim_matches(is_python_space);
    if trimmed.is_empty() {
        stats.skipped_empty += 1;
        return None;
    }
    if trimmed.len() == text.len() {
        Some(text)
    } else {
        Some(trimmed.to_string())
    }
}

type Sink<'a> = dyn FnMut(Option<String>, &mut CorpusStats) -> Result<()> + 'a;

fn read_lines(
    path: &Path,
    mut input: impl BufRead,
    stats: &mut CorpusStats,
    sink: &mut Sink,
) -> Result<()> {
    loop {
        let mut line = Vec::new();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(path, e))?;
        if read == 0 {
            return Ok(());
        }
        let document = document(line, stats);
        sink(document, stats)?;
    }
}

/// A streaming reader of a TinyStories shard, byte by byte off a buffered file.
struct JsonReader<'p, R> {
    input: R,
    path: &'p Path,
    /// Bytes consumed so far, for error messages.
    offset: u64,
}

impl<R: BufRead> JsonReader<'_, R> {
    fn error(&self, problem: &str) -> Error {
        Error::input(format!(
            "{}: not a TinyStories JSON shard: {problem} at byte {}",
            self.path.display(),
            self.offset
        ))
    }

    fn peek(&mut self) -> Result<Option<u8>> {
        let buffer = self.input.fill_buf().map_err(|e| Error::io(self.path, e))?;
        Ok(buffer.first().copied())
    }

    fn next(&mut self) -> Result<Option<u8>> {
        let byte = self.peek()?;
        if byte.is_some() {
            self.input.consume(1);
            self.offset += 1;
        }
        Ok(byte)
    }

    /// The next byte that is not JSON whitespace, without consuming it.
    fn peek_token(&mut self) -> Result<Option<u8>> {
        while let Some(byte) = self.peek()? {
            if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                return Ok(Some(byte));
            }
            self.next()?;
        }
        Ok(None)
    }

    fn expect(&mut self, wanted: u8) -> Result<()> {
        match self.peek_token()? {
            Some(byte) if byte == wanted => {
                self.next()?;
                Ok(())
            }
            Some(byte) => Err(self.error(&format!(
                "expected '{}', found '{}'",
                wanted as char,
                byte.escape_ascii()
            ))),
            None => Err(self.error(&format!(
                "expected '{}', found the end of the file",
                wanted as char
            ))),
        }
    }

    /// `[ {...}, {...} ]`: hand each object's "story" to `sink`.
    fn read_stories(&mut self, stats: &mut CorpusStats, sink: &mut Sink) -> Result<()> {
        self.expect(b'[')?;
        if self.peek_token()? == Some(b']') {
            self.next()?;
        } else {
            loop {
                self.read_story_object(stats, sink)?;
                match self.peek_token()? {
                    Some(b',') => {
                        self.next()?;
                    }
                    _ => {
                        self.expect(b']')?;
                        break;
                    }
                }
            }
        }
        if let Some(byte) = self.peek_token()? {
            return Err(self.error(&format!(
                "unexpected '{}' after the array",
                byte.escape_ascii()
            )));
        }
        Ok(())
    }

    fn read_story_object(&mut self, stats: &mut CorpusStats, sink: &mut Sink) -> Result<()> {
        self.expect(b'{')?;
        if self.peek_token()? == Some(b'}') {
            self.next()?;
            return Ok(());
        }
        loop {
            self.expect(b'"')?;
            let key = self.read_string_body()?;
            self.expect(b':')?;
            if key.as_deref() == Some(&b"story"[..]) && self.peek_token()? == Some(b'"') {
                self.next()?;
                let story = self.read_string_body()?;
                let document = match story {
                    Some(bytes) => document(bytes, stats),
                    None => {
                        stats.skipped_invalid += 1;
                        None
                    }
                };
                sink(document, stats)?;
            } else {
                self.skip_value(0)?;
            }
            match self.peek_token()? {
                Some(b',') => {
                    self.next()?;
                }
                _ => return self.expect(b'}'),
            }
        }
    }

    /// The rest of a string whose opening quote was consumed: its bytes with escapes
    /// resolved, or `None` if it holds a lone surrogate (which has no UTF-8 form).
    fn read_string_body(&mut self) -> Result<Option<Vec<u8>>> {
        let mut bytes = Vec::new();
        let mut valid = true;
        loop {
            let Some(byte) = self.next()? else {
                return Err(self.error("unterminated string"));
            };
            match byte {
                b'"' => return Ok(valid.then_some(bytes)),
                b'\\' => {
                    let Some(escape) = self.next()? else {
                        return Err(self.error("unterminated string"));
                    };
                    let simple = match escape {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            match self.read_unicode_escape()? {
                                Some(c) => {
                                    bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes())
                                }
                                None => valid = false,
                            }
                            continue;
                        }
                        other => {
                            return Err(
                                self.error(&format!("unknown escape '\\{}'", other.escape_ascii()))
                            )
                        }
                    };
                    bytes.push(simple);
                }
                other => bytes.push(other),
            }
        }
    }

    /// After `\u`: four hex digits, and for a high surrogate the `\uXXXX` low surrogate that
    /// must follow it. `None` for a surrogate without its partner.
    fn read_unicode_escape(&mut self) -> Result<Option<char>> {
        let first = self.read_hex4()?;
        if !(0xD800..0xDC00).contains(&first) {
            // A low surrogate on its own is not a character: char::from_u32 refuses it.
            return Ok(char::from_u32(first));
        }
        // A high surrogate: a low one must follow as another \u escape.
        if self.peek()? != Some(b'\\') {
            return Ok(None);
        }
        self.next()?;
        if self.next()? != Some(b'u') {
            return Err(self.error("expected \\u after a high surrogate escape"));
        }
        let second = self.read_hex4()?;
        if !(0xDC00..0xE000).contains(&second) {
            return Ok(None);
        }
        Ok(char::from_u32(
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00),
        ))
    }

    fn read_hex4(&mut self) -> Result<u32> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self
                .next()?
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| self.error("bad \\u escape"))?;
            value = value * 16 + digit;
        }
        Ok(value)
    }

    /// Skip one JSON value of any kind.
    fn skip_value(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_JSON_DEPTH {
            return Err(self.error("values nested too deeply"));
        }
        match self.peek_token()? {
            Some(b'"') => {
                self.next()?;
                self.read_string_body()?;
            }
            Some(open @ (b'[' | b'{')) => {
                let close = if open == b'[' { b']' } else { b'}' };
                self.next()?;
                if self.peek_token()? == Some(close) {
                    self.next()?;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.expect(b'"')?;
                        self.read_string_body()?;
                        self.expect(b':')?;
                    }
                    self.skip_value(depth + 1)?;
                    match self.peek_token()? {
                        Some(b',') => {
                            self.next()?;
                        }
                        _ => return self.expect(close),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                // Numbers and the literals true, false, null: a run of such characters.
                while let Some(byte) = self.peek()? {
                    if !(byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'+' | b'.')) {
                        break;
                    }
                    self.next()?;
                }
            }
            Some(byte) => {
                return Err(self.error(&format!("unexpected '{}'", byte.escape_ascii())));
            }
            None => return Err(self.error("unexpected end of the file")),
        }
        Ok(())
    }
}

/// `f` applied to every item, in order; spread over rayon's threads with the `parallel`
/// feature, one after another without it.
pub fn map_in_order<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync + Send) -> Vec<U> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        items.par_iter().map(f).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        items.iter().map(f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stories(json: &str) -> Result<(Vec<String>, CorpusStats)> {
        let mut out = Vec::new();
        let mut stats = CorpusStats::default();
        let mut sink = |d: Option<String>, _: &mut CorpusStats| -> Result<()> {
            out.extend(d);
            Ok(())
        };
        let mut reader = JsonReader {
            input: json.as_bytes(),
            path: Path::new("test.json"),
            offset: 0,
        };
        reader.read_stories(&mut stats, &mut sink)?;
        Ok((out, stats))
    }

    #[test]
    fn json_stories_with_escapes_and_other_fields() {
        let json = r#" [ {"story": "  Once \"upon\"\na time.\t", "n": [1, {"x": null}], "ok": true},
            {"instruction": {"words": ["a", "b"]}, "story": "caf\u00e9 \ud83d\ude00 \u20ac\/"},
            {"story": ""}, {"story": "\ud800 lone"}, {}, {"summary": "no story"} ] "#;
        let (docs, stats) = stories(json).unwrap();
        assert_eq!(docs, vec!["Once \"upon\"\na time.", "café 😀 €/"]);
        assert_eq!(stats.skipped_empty, 1);
        assert_eq!(stats.skipped_invalid, 1);
    }

    #[test]
    fn broken_json_is_an_error_with_offset() {
        for bad in [
            "",
            "[",
            "{\"story\": \"a\"}",
            "[{\"story\": \"a\"",
            "[{\"story\" \"a\"}]",
            "[{\"story\": \"a\\q\"}]",
            "[{\"story\": \"a\"}] x",
            "[{\"story\": \"\\u12\"}]",
        ] {
            let e = stories(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("test.json: not a TinyStories JSON shard:"),
                "{e}"
            );
            assert!(e.contains("at byte"), "{e}");
        }
        let deep = format!("[{{\"a\": {}}}]", "[".repeat(1000));
        assert!(stories(&deep).unwrap_err().to_string().contains("nested"));
    }

    #[test]
    fn documents_are_trimmed_like_python_strip() {
        let mut stats = CorpusStats::default();
        assert_eq!(
            document(b"\x1c\t hi there \r\n".to_vec(), &mut stats).as_deref(),
            Some("hi there")
        );
        assert_eq!(document(" \u{a0}\n".into(), &mut stats), None);
        assert_eq!(document(vec![b'a', 0xff], &mut stats), None);
        assert_eq!((stats.skipped_empty, stats.skipped_invalid), (1, 1));
    }
}
