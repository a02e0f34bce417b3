//! Generated tokens ([`Token`]) as text: UTF-8 put back together across token boundaries.
//!
//! A token's bytes are not always text on their own. A character missing from the vocabulary is
//! spelled with one byte token per UTF-8 byte, so "😀" can arrive as four tokens, none of them
//! valid UTF-8. [`Utf8Assembler`] holds back an unfinished character until its last byte
//! arrives, and [`Text`] runs it over a [`Generator`](crate::Generator), yielding `String`s.
//!
//! This is for programs that want `&str`. The command-line tool prints bytes exactly as `run.c`
//! does ([`Token::printable`]), which drops the bytes of such characters instead.

use crate::error::Result;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::tokenizer;

/// One generated (or prompt) token and the text it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The token id.
    pub id: u32,
    /// Its decoded bytes (see [`Tokenizer::decode`](crate::Tokenizer::decode)); not necessarily
    /// valid UTF-8 on its own.
    pub bytes: Vec<u8>,
    /// True if the token was forced from the prompt rather than sampled.
    pub from_prompt: bool,
}

impl Token {
    /// The bytes `run.c` would print for this token: lone control bytes dropped.
    pub fn printable(&self) -> &[u8] {
        tokenizer::printable(&self.bytes)
    }
}

/// Turns a stream of byte pieces into valid UTF-8 text, piece by piece.
///
/// Bytes that can never be part of a character come out as U+FFFD (the replacement
/// character), as [`String::from_utf8_lossy`] would write them.
///
/// ```
/// use llama2::Utf8Assembler;
///
/// let mut text = Utf8Assembler::new();
/// let smile = "😀".as_bytes();
/// assert_eq!(text.push(&smile[..2]), "");
/// assert_eq!(text.push(&smile[2..]), "😀");
/// assert_eq!(text.push(b"ok\xff"), "ok\u{FFFD}");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Utf8Assembler {
    /// The first bytes of a character whose last bytes have not arrived yet (at most three).
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// An assembler with nothing pending.
    pub fn new() -> Utf8Assembler {
        Utf8Assembler::default()
    }

    /// Add `bytes` and return the text they complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut rest = &self.pending[..];
        loop {
            match core::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    text.push_str(core::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // Bytes that no continuation can repair.
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // The start of a character: wait for the rest of it.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        text
    }

    /// The text left at the end of the stream: an unfinished character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// An iterator of text chunks over an iterator of tokens, such as a
/// [`Generator`](crate::Generator) (see [`Generator::text`](crate::Generator::text)).
///
/// Each item is a non-empty piece of valid UTF-8: a token's text, several tokens' worth when a
/// character was spelled in byte tokens, or an error from the tokens. Lone ASCII control bytes
/// are dropped, as `run.c` drops them.
#[derive(Debug)]
pub struct Text<I> {
    tokens: I,
    assembler: Utf8Assembler,
    finished: bool,
}

impl<I: Iterator<Item = Result<Token>>> Text<I> {
    /// Text chunks of `tokens`.
    pub fn new(tokens: I) -> Text<I> {
        Text {
            tokens,
            assembler: Utf8Assembler::new(),
            finished: false,
        }
    }

    /// The token iterator underneath, e.g. to ask a generator how many positions it ran.
    pub fn tokens(&self) -> &I {
        &self.tokens
    }
}

impl<I: Iterator<Item = Result<Token>>> Iterator for Text<I> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        while !self.finished {
            let text = match self.tokens.next() {
                Some(Ok(token)) => self.assembler.push(text_bytes(&token)),
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    self.finished = true;
                    self.assembler.finish()
                }
            };
            if !text.is_empty() {
                return Some(Ok(text));
            }
        }
        None
    }
}

/// The bytes of a token that belong in text: lone ASCII control bytes (byte tokens such as
/// `<0x07>`) are dropped like `run.c` drops them, but lone bytes above ASCII are kept, being
/// parts of a character.
fn text_bytes(token: &Token) -> &[u8] {
    match token.bytes.as_slice() {
        [byte] if byte.is_ascii() => tokenizer::printable(&token.bytes),
        bytes => bytes,
    }
}

/// A token's piece as readable, quoted text: printable characters as they are; quotes,
/// backslashes and control characters escaped as in Rust (`\n`, `\t`, `\x01`, `\u{85}`); bytes
/// that are not UTF-8 (such as half a character from a byte token) as `\xNN`.
///
/// ```
/// assert_eq!(llama2::text::escape_piece(b" a\"b\n\xe2\x82"), r#"" a\"b\n\xe2\x82""#);
/// assert_eq!(llama2::text::escape_piece("é".as_bytes()), "\"é\"");
/// ```
pub fn escape_piece(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x80 && c.is_control() => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(bytes: &[u8]) -> Result<Token> {
        Ok(Token {
            id: 0,
            bytes: bytes.to_vec(),
            from_prompt: false,
        })
    }

    fn chunks(pieces: &[&[u8]]) -> Vec<String> {
        Text::new(pieces.iter().map(|p| token(p)))
            .map(|chunk| chunk.unwrap())
            .collect()
    }

    #[test]
    fn characters_split_over_byte_tokens_are_joined() {
        let smile = "😀".as_bytes();
        let pieces: Vec<&[u8]> = vec![b" Hi", &smile[..1], &smile[1..2], &smile[2..3], &smile[3..]];
        assert_eq!(chunks(&pieces), [" Hi", "😀"]);
    }

    #[test]
    fn invalid_and_unfinished_bytes_become_replacement_characters() {
        // 0xFF never starts a character; 0xE2 0x82 is a euro sign without its last byte.
        assert_eq!(
            chunks(&[b"a", &[0xFF], b"b", &[0xE2], &[0x82]]),
            ["a", "\u{FFFD}", "b", "\u{FFFD}"]
        );
        // A new character's start ends an unfinished one.
        assert_eq!(chunks(&[&[0xE2], b"x"]), ["\u{FFFD}x"]);
    }

    #[test]
    fn lone_control_bytes_are_dropped_but_whitespace_is_kept() {
        assert_eq!(
            chunks(&[b"a", b"\x07", b"\n", b"\x00", b"b"]),
            ["a", "\n", "b"]
        );
    }

    #[test]
    fn errors_pass_through() {
        let tokens = vec![token(b"a"), Err(crate::Error::InvalidInput("boom".into()))];
        let items: Vec<_> = Text::new(tokens.into_iter()).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap(), "a");
        assert!(items[1].is_err());
    }
}
