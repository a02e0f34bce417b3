//! Training a byte-pair-encoding vocabulary from raw text, as SentencePiece's BPE trainer does
//! with llama2.c's `train_vocab` options, written in llama2.c's `tokenizer.bin` format.
//!
//! 1. [`count_words`]: every line of every document is normalized and split into words
//!    ([`rules`]), and the distinct words are counted, in parallel a batch of documents at a
//!    time. Memory grows with the distinct words, not with the corpus.
//! 2. [`train`]: every word starts as a sequence of characters. The adjacent pair of pieces
//!    that occurs most often (counting each word as often as it occurs) is merged into a new
//!    piece, everywhere, again and again until the vocabulary is full. Ties go to the shorter
//!    piece, then to the smaller string, as in SentencePiece. A pair whose piece would break a
//!    rule (16 characters at most, digits alone, `▁` only in front, one script) is never
//!    counted; a pair spelling a piece that already exists (`aa`+`a` after `a`+`aa`) is dropped
//!    without merging.
//!    Pair counts are kept up to date by each merge, which touches only the words holding the
//!    pair; a max-heap of pairs with possibly stale (too high) counts gives the best pair.
//! 3. [`Vocabulary`]: ids 0, 1, 2 are `<unk>`, `<s>`, `</s>`; 3..=258 the byte tokens
//!    `<0x00>`..`<0xFF>` (all scored 0); then the merged pieces in merge order, scored
//!    `-(merge index)`; then every character of the corpus, most frequent first, continuing
//!    the scores.
//!
//! Differences from SentencePiece: lines that are not UTF-8 are skipped (SentencePiece reads
//! bad bytes as U+FFFD), long lines are kept (SentencePiece drops lines over 4192 bytes), and
//! the best pair is always the true best (SentencePiece looks for it only among the pairs that
//! were most frequent at its last update, made every 100 merges, and so sometimes takes a
//! piece a little later). When every pair is merged away before the
//! vocabulary is full, SentencePiece goes on with pairs that no longer occur, and so do we; a
//! corpus without even those is an error, as in SentencePiece.

pub mod rules;
mod unicode_scripts;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::corpus::{self, CorpusStats};
use crate::error::{Error, Result};
use crate::pretokenize::MAX_VOCAB;
use rules::{normalize_line, split_words, Shape, SPACE, UNMERGEABLE};

/// Special pieces before the byte tokens: `<unk>`, `<s>`, `</s>`.
const SPECIAL_PIECES: [&str; 3] = ["<unk>", "<s>", "</s>"];
/// Special pieces plus the 256 byte tokens: the least a vocabulary holds besides characters.
pub const RESERVED_TOKENS: usize = SPECIAL_PIECES.len() + 256;

/// The distinct words of a corpus with how often each occurs.
pub struct WordCounts {
    /// Word (normalized, with `▁`) to count.
    words: FastMap<String, u64>,
    /// What reading the corpus found.
    pub corpus: CorpusStats,
    /// Lines SentencePiece would skip (all spaces, or holding U+2585).
    pub skipped_lines: u64,
}

impl WordCounts {
    /// Number of distinct words.
    pub fn distinct(&self) -> usize {
        self.words.len()
    }

    /// Every distinct character with its count (U+2585, which stands for characters that are
    /// never merged, left out), most frequent first, ties in code point order.
    pub fn characters(&self) -> Vec<(char, u64)> {
        let mut counts: FastMap<char, u64> = FastMap::default();
        for (word, &count) in &self.words {
            for c in word.chars().filter(|&c| c != UNMERGEABLE) {
                *counts.entry(c).or_default() += count;
            }
        }
        let mut chars: Vec<(char, u64)> = counts.into_iter().collect();
        chars.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        chars
    }
}

/// Count the words of every line of every document of `inputs` (see [`crate::corpus`] for
/// the input formats); `on_batch` hears the statistics so far after each batch.
pub fn count_words(
    inputs: &[PathBuf],
    mut on_batch: impl FnMut(&CorpusStats, usize),
) -> Result<WordCounts> {
    let mut words: FastMap<String, u64> = FastMap::default();
    let mut skipped_lines = 0;
    let mut so_far = CorpusStats::default();
    let corpus = corpus::read_documents(inputs, |documents| {
        // About one piece of work per 64 documents, each with a map of its own.
        let chunks: Vec<&[String]> = documents.chunks(64).collect();
        let counted = corpus::map_in_order(&chunks, |chunk| count_chunk(chunk));
        for (chunk_words, skipped) in counted {
            skipped_lines += skipped;
            for (word, count) in chunk_words {
                *words.entry(word).or_default() += count;
            }
        }
        so_far.documents += documents.len() as u64;
        so_far.bytes += documents.iter().map(|d| d.len() as u64).sum::<u64>();
        on_batch(&so_far, words.len());
        Ok(())
    })?;
    Ok(WordCounts {
        words,
        corpus,
        skipped_lines,
    })
}

/// The word counts of some documents, and how many of their lines were skipped.
fn count_chunk(documents: &[String]) -> (FastMap<String, u64>, u64) {
    let mut words: FastMap<String, u64> = FastMap::default();
    let mut skipped = 0;
    let mut normalized = String::new();
    for line in documents.iter().flat_map(|d| d.split('\n')) {
        if !normalize_line(line, &mut normalized) {
            skipped += 1;
            continue;
        }
        for word in split_words(&normalized) {
            match words.get_mut(word) {
                Some(count) => *count += 1,
                None => {
                    words.insert(word.to_string(), 1);
                }
            }
        }
    }
    (words, skipped)
}

/// A trained vocabulary: every piece in id order, spelled as SentencePiece spells it (`▁` for a
/// space, `<s>` and `</s>` plain), with its score.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocabulary {
    /// `(piece, score)` for ids 0, 1, 2, ...
    pub pieces: Vec<(String, f32)>,
}

impl Vocabulary {
    /// The vocabulary in llama2.c's `tokenizer.bin` format: an `i32` max token length, then for
    /// each token its `f32` score, `i32` byte length and bytes, with `▁` written as a space and
    /// `<s>`/`</s>` as `\n<s>\n`/`\n</s>\n` (as llama2.c's `tokenizer.py` exports them).
    pub fn to_llama2c_bytes(&self) -> Vec<u8> {
        let tokens: Vec<Vec<u8>> = self
            .pieces
            .iter()
            .enumerate()
            .map(|(id, (piece, _))| match id {
                1 => b"\n<s>\n".to_vec(),
                2 => b"\n</s>\n".to_vec(),
                _ => piece.replace(SPACE, " ").into_bytes(),
            })
            .collect();
        let max_token_length = tokens.iter().map(Vec::len).max().unwrap_or(0);
        let mut out = Vec::new();
        out.extend_from_slice(&(max_token_length as i32).to_le_bytes());
        for (token, (_, score)) in tokens.iter().zip(&self.pieces) {
            out.extend_from_slice(&score.to_le_bytes());
            out.extend_from_slice(&(token.len() as i32).to_le_bytes());
            out.extend_from_slice(token);
        }
        out
    }

    /// Write [`Vocabulary::to_llama2c_bytes`] to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_llama2c_bytes()).map_err(|e| Error::io(path, e))
    }
}

/// Progress of a training run, for reports.
#[derive(Clone, Copy, Debug)]
pub struct MergeProgress {
    /// Merges made so far.
    pub merges: usize,
    /// Merges to make in all.
    pub target: usize,
    /// How often the last merged pair occurred.
    pub count: u64,
}

/// Train a vocabulary of exactly `vocab_size` pieces on `words`; `on_progress` hears about
/// every 1% of the merges.
///
/// Fails if `vocab_size` exceeds [`MAX_VOCAB`], is less than [`RESERVED_TOKENS`] plus the
/// corpus's distinct characters, or needs more merges than the corpus offers.
pub fn train(
    words: &WordCounts,
    vocab_size: usize,
    mut on_progress: impl FnMut(&MergeProgress),
) -> Result<Vocabulary> {
    let chars = words.characters();
    if words.words.is_empty() {
        return Err(Error::input("the input holds no text to train on"));
    }
    check_not_too_large(vocab_size)?;
    let least = RESERVED_TOKENS + chars.len();
    if vocab_size < least {
        return Err(Error::input(format!(
            "a vocabulary of {vocab_size} tokens is too small for this corpus: it needs at least \
             {least} ({RESERVED_TOKENS} special and byte tokens and {} distinct characters)",
            chars.len()
        )));
    }
    let target = vocab_size - least;
    let mut merger = Merger::new(words, &chars);
    let step = (target / 100).max(1);
    while merger.merged.len() < target {
        let Some(count) = merger.merge_best() else {
            return Err(Error::input(format!(
                "the corpus is too small for a vocabulary of {vocab_size} tokens: it allows {} merges, \
                 so at most {} tokens",
                merger.merged.len(),
                least + merger.merged.len()
            )));
        };
        if merger.merged.len().is_multiple_of(step) || merger.merged.len() == target {
            on_progress(&MergeProgress {
                merges: merger.merged.len(),
                target,
                count,
            });
        }
    }
    let mut pieces: Vec<(String, f32)> = SPECIAL_PIECES
        .iter()
        .map(|p| (p.to_string(), 0.0))
        .chain((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0)))
        .collect();
    let learned = merger
        .merged
        .iter()
        .map(|&id| merger.text[id as usize].to_string())
        .chain(chars.iter().map(|(c, _)| c.to_string()));
    for (i, piece) in learned.enumerate() {
        pieces.push((piece, -(i as f32)));
    }
    Ok(Vocabulary { pieces })
}

fn check_not_too_large(vocab_size: usize) -> Result<()> {
    if vocab_size > MAX_VOCAB {
        return Err(Error::input(format!(
            "a vocabulary of {vocab_size} tokens is too large: at most {MAX_VOCAB} fit the u16 ids of pretokenized files"
        )));
    }
    Ok(())
}

/// [`count_words`] then [`train`], with progress reported as text lines.
pub fn train_from_files(
    inputs: &[PathBuf],
    vocab_size: usize,
    mut report: impl FnMut(&str),
) -> Result<Vocabulary> {
    check_not_too_large(vocab_size)?;
    let words = count_words(inputs, |stats, distinct| {
        report(&format!(
            "read {} documents, {:.1} MB, {distinct} distinct words",
            stats.documents,
            stats.bytes as f64 / 1e6
        ))
    })?;
    let c = &words.corpus;
    report(&format!(
        "{} documents ({} empty and {} non-UTF-8 skipped), {} distinct words, {} distinct characters",
        c.documents,
        c.skipped_empty,
        c.skipped_invalid,
        words.distinct(),
        words.characters().len()
    ));
    train(&words, vocab_size, |p| {
        if p.merges.is_multiple_of((p.target / 10).max(1)) || p.merges == p.target {
            report(&format!(
                "merged {}/{} pieces (last pair seen {} times)",
                p.merges, p.target, p.count
            ));
        }
    })
}

/// A pair of adjacent pieces, by id.
type Pair = (u32, u32);

/// What is known of a pair that may still be merged.
struct PairStats {
    /// Occurrences in the corpus (word counts summed).
    count: u64,
    /// Words that hold or held the pair (may repeat, may be stale).
    words: Vec<u32>,
}

/// A pair in the heap with its count when pushed (the true count may since have dropped).
///
/// Ordered field by field: the most frequent first, then the shorter piece, then the smaller
/// string (as SentencePiece breaks ties); two ways to spell one string go by piece ids, so the
/// order never depends on hashing.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    count: u64,
    chars: Reverse<u8>,
    text: Reverse<Rc<str>>,
    pair: Reverse<Pair>,
}

/// The state of the merging: words as piece sequences, pair counts, and the pieces made.
struct Merger {
    /// Each distinct word as piece ids, with its count.
    words: Vec<(Vec<u32>, u64)>,
    /// Every piece's text (characters first, then merged pieces in merge order)...
    text: Vec<Rc<str>>,
    /// ...and its shape, which says which pairs may merge.
    shapes: Vec<Shape>,
    /// Pairs that may merge and have not been.
    pairs: FastMap<Pair, PairStats>,
    heap: BinaryHeap<Candidate>,
    /// Ids of the merged pieces, in merge order.
    merged: Vec<u32>,
    /// Texts of the merged pieces, to drop a second way of spelling one.
    merged_text: HashSet<Rc<str>>,
    /// Which merge last visited each word, so a word listed twice is merged once.
    visited: Vec<usize>,
}

impl Merger {
    fn new(counts: &WordCounts, chars: &[(char, u64)]) -> Merger {
        let mut text: Vec<Rc<str>> = Vec::new();
        let mut shapes = Vec::new();
        let mut char_id: FastMap<char, u32> = FastMap::default();
        for &(c, _) in chars.iter().chain([&(UNMERGEABLE, 0)]) {
            char_id.insert(c, text.len() as u32);
            text.push(c.to_string().into());
            shapes.push(Shape::of_char(c));
        }
        // Sorted so that the word order, and with it everything after, is reproducible.
        let mut sorted: Vec<(&String, &u64)> = counts.words.iter().collect();
        sorted.sort_unstable();
        let words: Vec<(Vec<u32>, u64)> = sorted
            .into_iter()
            .map(|(w, &n)| (w.chars().map(|c| char_id[&c]).collect(), n))
            .collect();
        let mut merger = Merger {
            visited: vec![usize::MAX; words.len()],
            words,
            text,
            shapes,
            pairs: FastMap::default(),
            heap: BinaryHeap::new(),
            merged: Vec::new(),
            merged_text: HashSet::new(),
        };
        let mut counts: FastMap<Pair, i64> = FastMap::default();
        for (w, (symbols, n)) in merger.words.iter().enumerate() {
            for pair in symbols.windows(2) {
                let pair = (pair[0], pair[1]);
                if merger.shapes[pair.0 as usize]
                    .join(merger.shapes[pair.1 as usize])
                    .is_some()
                {
                    *counts.entry(pair).or_default() += *n as i64;
                    let stats = merger.pairs.entry(pair).or_insert(PairStats {
                        count: 0,
                        words: Vec::new(),
                    });
                    if stats.words.last() != Some(&(w as u32)) {
                        stats.words.push(w as u32);
                    }
                }
            }
        }
        merger.apply(counts);
        merger
    }

    /// Add count changes to the pair table, and queue every pair whose count rose.
    fn apply(&mut self, deltas: FastMap<Pair, i64>) {
        for (pair, delta) in deltas {
            let Some(stats) = self.pairs.get_mut(&pair) else {
                continue;
            };
            stats.count = (stats.count as i64 + delta) as u64;
            if delta > 0 {
                let (left, right) = (pair.0 as usize, pair.1 as usize);
                let joined = self.shapes[left].join(self.shapes[right]);
                self.heap.push(Candidate {
                    count: stats.count,
                    chars: Reverse(joined.map_or(0, |s| s.chars)),
                    text: Reverse(format!("{}{}", self.text[left], self.text[right]).into()),
                    pair: Reverse(pair),
                });
            }
        }
    }

    /// Find the most frequent pair and merge it everywhere; its count, or `None` if no pair is
    /// left. Pairs whose count fell to 0 stay candidates, as in SentencePiece, which goes on
    /// making such pieces (shortest first) when a small corpus runs out of pairs.
    fn merge_best(&mut self) -> Option<u64> {
        loop {
            let best = self.heap.pop()?;
            let pair = best.pair.0;
            let Some(stats) = self.pairs.get(&pair) else {
                continue; // merged or dropped already
            };
            if stats.count < best.count {
                // Stale: queue it again with its true count.
                self.heap.push(Candidate {
                    count: stats.count,
                    ..best
                });
                continue;
            }
            let stats = self.pairs.remove(&pair)?;
            let text = best.text.0;
            if self.merged_text.contains(&text) {
                continue; // the same piece, reached another way: SentencePiece drops it
            }
            self.merge(pair, text, stats.words);
            return Some(stats.count);
        }
    }

    /// Make the piece `left right` and put it in place of the pair in every word holding it.
    fn merge(&mut self, pair: Pair, text: Rc<str>, words: Vec<u32>) {
        let (left, right) = pair;
        let new = self.text.len() as u32;
        let shape = self.shapes[left as usize]
            .join(self.shapes[right as usize])
            .expect("only pairs that may merge are counted");
        self.text.push(text.clone());
        self.shapes.push(shape);
        self.merged.push(new);
        self.merged_text.insert(text);
        let step = self.merged.len();
        let mut deltas: FastMap<Pair, i64> = FastMap::default();
        let mut new_pairs: Vec<(Pair, u32)> = Vec::new();
        for w in words {
            if std::mem::replace(&mut self.visited[w as usize], step) == step {
                continue;
            }
            let (symbols, n) = &mut self.words[w as usize];
            let n = *n as i64;
            let mut change = |pair: Pair, by: i64| *deltas.entry(pair).or_default() += by * n;
            let mut out = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
                    // [prev] left right [next] becomes [prev] new [next].
                    if let Some(&prev) = out.last() {
                        change((prev, left), -1);
                        change((prev, new), 1);
                        new_pairs.push(((prev, new), w));
                    }
                    change(pair, -1);
                    if let Some(&next) = symbols.get(i + 2) {
                        change((right, next), -1);
                        change((new, next), 1);
                        new_pairs.push(((new, next), w));
                    }
                    out.push(new);
                    i += 2;
                } else {
                    out.push(symbols[i]);
                    i += 1;
                }
            }
            *symbols = out;
        }
        for (pair, w) in new_pairs {
            let may_merge = self.shapes[pair.0 as usize]
                .join(self.shapes[pair.1 as usize])
                .is_some();
            if may_merge {
                let stats = self.pairs.entry(pair).or_insert(PairStats {
                    count: 0,
                    words: Vec::new(),
                });
                if stats.words.last() != Some(&w) {
                    stats.words.push(w);
                }
            }
        }
        deltas.remove(&pair);
        self.apply(deltas);
    }
}

/// A fast hash for short keys (words, characters, pairs of ids): the multiply-rotate scheme
/// of Firefox's FxHash. Not resistant to crafted collisions, which a tokenizer trainer
/// reading its user's own text does not need.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            self.add(word);
        }
        for &b in chunks.remainder() {
            self.add(b as u64);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
