//! SentencePiece's rules for turning a line into words and for which pieces may exist, with
//! the options llama2.c's `train_vocab` uses (identity normalization, extra spaces removed, a
//! dummy-prefix space, `split_digits`, `allow_whitespace_only_pieces`, pieces of at most 16
//! characters, one Unicode script per piece).
//!
//! This module knows nothing of frequencies or merges; [`super`] does the training.

use super::unicode_scripts::{self, COMMON, INHERITED};

/// SentencePiece's visible space, `▁` (U+2581); written as a plain space in `tokenizer.bin`.
pub const SPACE: char = '\u{2581}';

/// SentencePiece's placeholder for characters that may never be part of a merged piece
/// (U+2585). Lines that contain it are skipped, as SentencePiece skips them.
pub const UNMERGEABLE: char = '\u{2585}';

/// The longest piece, in characters (SentencePiece's `max_sentencepiece_length`).
pub const MAX_PIECE_CHARS: usize = 16;

/// Script id meaning "no script yet": whitespace, and combining marks with nothing before them.
const ANY_SCRIPT: u8 = u8::MAX;

/// Pieces SentencePiece reserves (`<unk>`, `<s>`, `</s>`, `<0x00>`..`<0xFF>`): where they occur
/// in training text they become a boundary that no piece crosses.
fn reserved_piece_len(text: &str) -> Option<usize> {
    for special in ["<unk>", "<s>", "</s>"] {
        if text.starts_with(special) {
            return Some(special.len());
        }
    }
    let b = text.as_bytes();
    let upper_hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
    (b.len() >= 6 && b.starts_with(b"<0x") && upper_hex(b[3]) && upper_hex(b[4]) && b[5] == b'>')
        .then_some(6)
}

/// Normalize one line of training text as SentencePiece does with llama2.c's options, into
/// `out` (cleared first): spaces at the ends dropped and runs of spaces made one, a space put
/// in front, every space written `▁`, and reserved pieces and NULs (which SentencePiece keeps
/// out of the vocabulary) written [`UNMERGEABLE`]. Tabs are ordinary characters.
///
/// Returns false for a line SentencePiece skips: all spaces, or holding [`UNMERGEABLE`].
pub fn normalize_line(line: &str, out: &mut String) -> bool {
    out.clear();
    let line = line.trim_matches(' ');
    if line.is_empty() || line.contains(UNMERGEABLE) {
        return false;
    }
    out.push(SPACE);
    let mut rest = line;
    let mut after_space = false;
    while let Some(c) = rest.chars().next() {
        if let Some(len) = reserved_piece_len(rest) {
            out.push(UNMERGEABLE);
            rest = &rest[len..];
            after_space = false;
            continue;
        }
        rest = &rest[c.len_utf8()..];
        match c {
            ' ' if after_space => {}
            ' ' => {
                out.push(SPACE);
                after_space = true;
            }
            '\0' => {
                out.push(UNMERGEABLE);
                after_space = false;
            }
            _ => {
                out.push(c);
                after_space = false;
            }
        }
    }
    true
}

/// Split a normalized line into words: a word starts at the line's start and at every `▁` that
/// does not follow another `▁` (a run of `▁` stays together, as whitespace-only pieces are
/// allowed).
pub fn split_words(normalized: &str) -> impl Iterator<Item = &str> {
    let mut starts = Vec::new();
    let mut prev = None;
    for (i, c) in normalized.char_indices() {
        if i == 0 || (c == SPACE && prev != Some(SPACE)) {
            starts.push(i);
        }
        prev = Some(c);
    }
    starts.push(normalized.len());
    let bounds: Vec<(usize, usize)> = starts.windows(2).map(|w| (w[0], w[1])).collect();
    bounds.into_iter().map(move |(a, b)| &normalized[a..b])
}

/// The digits `split_digits` keeps apart: ASCII and full-width 0-9.
fn is_decimal_digit(c: char) -> bool {
    c.is_ascii_digit() || ('\u{ff10}'..='\u{ff19}').contains(&c)
}

/// The Unicode script id of `c` (kana count as Han), 0 (Common) when unlisted.
pub fn script(c: char) -> u8 {
    let code = c as u32;
    let ranges = &unicode_scripts::RANGES;
    match ranges.binary_search_by(|&(first, last, _)| {
        if last < code {
            std::cmp::Ordering::Less
        } else if first > code {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }) {
        Ok(i) => ranges[i].2,
        Err(_) => COMMON,
    }
}

/// What the validity rules need to know of a piece, so that whether two pieces may merge is
/// decided without looking at their characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Length in characters.
    pub chars: u8,
    /// May take part in a merge at all ([`UNMERGEABLE`] may not).
    mergeable: bool,
    /// Holds a digit (then it must stay a single character).
    digit: bool,
    /// Every character is `▁`.
    all_space: bool,
    /// Some character is `▁`.
    has_space: bool,
    /// Some character after the first is `▁`.
    inner_space: bool,
    /// The piece's one script, or [`ANY_SCRIPT`] if it has none yet.
    script: u8,
}

impl Shape {
    /// The shape of a one-character piece.
    pub fn of_char(c: char) -> Shape {
        let space = c == SPACE;
        let script = match script(c) {
            _ if space => ANY_SCRIPT,
            INHERITED => ANY_SCRIPT,
            s => s,
        };
        Shape {
            chars: 1,
            mergeable: c != UNMERGEABLE && c != '\0',
            digit: is_decimal_digit(c),
            all_space: space,
            has_space: space,
            inner_space: false,
            script,
        }
    }

    /// The shape of `self` followed by `right`, or `None` if SentencePiece would not allow that
    /// piece: too long, a digit in a longer piece, `▁` past the start of a piece that is not all
    /// `▁`, or two scripts.
    pub fn join(self, right: Shape) -> Option<Shape> {
        let chars = self.chars as usize + right.chars as usize;
        let spaces_ok =
            (self.all_space && right.all_space) || (!self.inner_space && !right.has_space);
        let scripts_ok =
            self.script == ANY_SCRIPT || right.script == ANY_SCRIPT || self.script == right.script;
        let ok = self.mergeable
            && right.mergeable
            && chars <= MAX_PIECE_CHARS
            && !self.digit
            && !right.digit
            && spaces_ok
            && scripts_ok;
        ok.then_some(Shape {
            chars: chars as u8,
            mergeable: true,
            digit: false,
            all_space: self.all_space && right.all_space,
            has_space: self.has_space || right.has_space,
            inner_space: self.inner_space || right.has_space,
            script: if self.script == ANY_SCRIPT {
                right.script
            } else {
                self.script
            },
        })
    }
}

/// Whether SentencePiece's trainer accepts `piece` (of two or more characters), checked
/// character by character as its rules are written; [`Shape::join`] must agree with this.
pub fn is_valid_piece(piece: &[char]) -> bool {
    if piece.is_empty() || piece.len() > MAX_PIECE_CHARS {
        return false;
    }
    let all_space = piece.iter().all(|&c| c == SPACE);
    let mut prev = ANY_SCRIPT;
    for (pos, &c) in piece.iter().enumerate() {
        if matches!(c, UNMERGEABLE | '\0' | ' ') {
            return false;
        }
        if c == SPACE {
            if !all_space && pos > 0 {
                return false;
            }
            continue;
        }
        let mut s = script(c);
        if s == INHERITED {
            s = prev;
        }
        if is_decimal_digit(c) && piece.len() > 1 {
            return false;
        }
        if s != ANY_SCRIPT && prev != ANY_SCRIPT && s != prev {
            return false;
        }
        prev = s;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(line: &str) -> Option<String> {
        let mut out = String::new();
        normalize_line(line, &mut out).then_some(out)
    }

    #[test]
    fn lines_normalize_like_sentencepiece() {
        assert_eq!(normalized("  Hello   world  ").unwrap(), "▁Hello▁world");
        assert_eq!(
            normalized("a\tb<s>c <0x0A> <0x0a>\0").unwrap(),
            "▁a\tb▅c▁▅▁<0x0a>▅"
        );
        assert_eq!(normalized("\u{a0}x").unwrap(), "▁\u{a0}x");
        assert_eq!(normalized("   "), None);
        assert_eq!(normalized("has ▅ inside"), None);
    }

    #[test]
    fn words_start_at_spaces() {
        let words: Vec<&str> = split_words("▁Hello▁world▁▁▁x▁").collect();
        assert_eq!(words, vec!["▁Hello", "▁world", "▁▁▁x", "▁"]);
        let words: Vec<&str> = split_words("abc").collect();
        assert_eq!(words, vec!["abc"]);
    }

    #[test]
    fn script_table_is_sorted_and_knows_common_scripts() {
        let ranges = &unicode_scripts::RANGES;
        assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0));
        assert!(ranges.iter().all(|r| r.0 <= r.1));
        let latin = script('a');
        assert_eq!(script('Z'), latin);
        assert_eq!(script('é'), latin);
        assert_eq!(script('.'), COMMON);
        assert_eq!(script('7'), COMMON);
        assert_eq!(script('\u{301}'), INHERITED);
        assert_ne!(script('α'), latin);
        assert_ne!(script('Ж'), script('α'));
        assert_eq!(script('あ'), script('中'));
        assert_eq!(script('カ'), script('中'));
        assert_eq!(script('ー'), script('中'));
    }

    /// Shape::join must decide exactly as the character-by-character rules, for every way of
    /// cutting every string made of a mix of awkward characters.
    #[test]
    fn shapes_agree_with_the_rules() {
        let alphabet = [
            'a',
            'b',
            'é',
            '.',
            '!',
            '7',
            '０',
            SPACE,
            '\u{301}',
            'α',
            'Ж',
            'あ',
            '中',
            UNMERGEABLE,
        ];
        let shape = |s: &[char]| -> Option<Shape> {
            let mut it = s.iter().map(|&c| Shape::of_char(c));
            let first = it.next()?;
            it.try_fold(first, |acc, next| acc.join(next))
        };
        let mut rng = crate::rng::Rng::new(12345);
        let mut random = move |n: usize| rng.next_u32() as usize % n;
        let mut checked = 0;
        for _ in 0..20000 {
            let len = 2 + random(17);
            let piece: Vec<char> = (0..len)
                .map(|_| {
                    // Mostly Latin letters and spaces, so that long valid pieces occur too.
                    if random(3) > 0 {
                        [SPACE, 'a', 'b'][random(3)]
                    } else {
                        alphabet[random(alphabet.len())]
                    }
                })
                .collect();
            // Built one character at a time, the shape is valid exactly when the rules say so.
            let whole = shape(&piece);
            assert_eq!(whole.is_some(), is_valid_piece(&piece), "{piece:?}");
            // Built from any two halves that are pieces themselves, it is the same shape.
            let cut = 1 + random(len - 1);
            let (left, right) = piece.split_at(cut);
            let is_piece = |s: &[char]| s.len() == 1 || is_valid_piece(s);
            if is_piece(left) && is_piece(right) {
                let (l, r) = (shape(left).unwrap(), shape(right).unwrap());
                assert_eq!(l.join(r), whole, "{left:?} + {right:?}");
                checked += 1;
            }
        }
        assert!(checked > 1000, "only {checked} cases checked");
        assert!(is_valid_piece(&['▁', 'a', 'b']));
        assert!(is_valid_piece(&['▁', '▁', '▁']));
        assert!(!is_valid_piece(&['a', '▁']));
        assert!(!is_valid_piece(&['1', '2']));
        assert!(!is_valid_piece(&['a', '.']));
        assert!(is_valid_piece(&['e', '\u{301}']));
        assert!(!is_valid_piece(&['a'; 17]));
    }
}
