//! Training data: llama2.c's pretokenized token files, cut into windows of `T + 1` tokens.
//!
//! A token file is raw little-endian `u16` ids with no header (what `llama2 pretokenize` and
//! llama2.c's `tinystories.py pretokenize` write). As llama2.c's `PretokDataset` reads it, window
//! `i` of a file of `n` tokens is tokens `[i*T, i*T + T]`, `T + 1` of them: the model reads the first
//! `T` and predicts the last `T`; a file has `n/T - 1` windows (the last partial one is dropped).
//!
//! * [`Corpus`] opens a file or a folder of `.bin` shards (memory-mapped, in sorted name order)
//!   and checks every id against the vocabulary before anything trains.
//! * [`WindowSet`] is a set of windows of a corpus; [`WindowSet::split_tail`] holds out the last
//!   ones for validation.
//! * [`Stream`] is the endless sequence of windows training reads, in `random` order (each pass
//!   shuffles the shards, then each shard's windows, as `train.py`'s loader does) or `sequential`
//!   order; window `n` of the stream is a pure function of `n` and the seed, so a resumed run reads
//!   exactly what an uninterrupted one would have.
//!
//! This module knows nothing of models or batches' meaning: it hands out token ids.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checksum::Checksum;
use crate::error::{Error, Result};
use crate::sampler::Rng;
use crate::storage::Storage;

/// One memory-mapped token file.
struct TokenFile {
    path: PathBuf,
    storage: Storage,
}

impl TokenFile {
    fn tokens(&self) -> usize {
        self.storage.bytes().len() / 2
    }

    /// `PretokDataset`'s count: `n/T - 1` windows of `T + 1` tokens, none for a short file.
    fn windows(&self, seq_len: usize) -> usize {
        (self.tokens() / seq_len).saturating_sub(1)
    }

    /// Tokens `[start, start + out.len())` as ids.
    fn read(&self, start: usize, out: &mut [u16]) {
        let bytes = &self.storage.bytes()[2 * start..2 * (start + out.len())];
        for (id, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *id = u16::from_le_bytes([pair[0], pair[1]]);
        }
    }
}

/// Every token file of a `--data` or `--val` argument, checked and fingerprinted.
pub struct Corpus {
    files: Vec<TokenFile>,
    seq_len: usize,
    fingerprint: u64,
}

impl Corpus {
    /// Open `path` (a token file, or a folder whose `.bin` files are the shards), for windows of
    /// `seq_len + 1` tokens of a model with `vocab_size` tokens. `flag` names the argument in
    /// errors. Errors for a missing or empty path, a file that is not whole `u16`s, or an id at or
    /// beyond `vocab_size` (naming the file and the position).
    pub fn open(flag: &str, path: &Path, seq_len: usize, vocab_size: usize) -> Result<Corpus> {
        let fail = |what: String| Error::input(format!("{flag} {}: {what}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        let paths = if meta.is_dir() {
            let mut shards = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|e| fail(e.to_string()))? {
                let entry = entry.map_err(|e| fail(e.to_string()))?;
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "bin") && p.is_file() {
                    shards.push(p);
                }
            }
            if shards.is_empty() {
                return Err(fail("no .bin token files in this folder".into()));
            }
            shards.sort();
            shards
        } else {
            vec![path.to_path_buf()]
        };
        let mut files = Vec::with_capacity(paths.len());
        let mut fingerprint = Checksum::new();
        for p in paths {
            let storage = Storage::map(&p)
                .map_err(|e| Error::input(format!("{flag} {}: {e}", path.display())))?;
            let file = TokenFile { path: p, storage };
            check_tokens(flag, &file, vocab_size)?;
            fingerprint.update(&(file.storage.bytes().len() as u64).to_le_bytes());
            fingerprint.update(file.storage.bytes());
            files.push(file);
        }
        Ok(Corpus {
            files,
            seq_len,
            fingerprint: fingerprint.finish(),
        })
    }

    /// A checksum of every file's tokens, in order: equal for the same data wherever it lives.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Number of tokens in all files.
    pub fn tokens(&self) -> usize {
        self.files.iter().map(TokenFile::tokens).sum()
    }

    /// Number of files.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// All windows of every file, files in sorted name order.
    pub fn windows(self) -> WindowSet {
        let parts = (0..self.files.len())
            .map(|file| Part {
                file,
                first: 0,
                count: self.files[file].windows(self.seq_len),
            })
            .filter(|p| p.count > 0)
            .collect();
        WindowSet {
            corpus: Arc::new(self),
            parts,
        }
    }
}

/// Refuse an empty file, a file of an odd number of bytes, or an id the model cannot embed.
fn check_tokens(flag: &str, file: &TokenFile, vocab_size: usize) -> Result<()> {
    let bytes = file.storage.bytes();
    let name = file.path.display();
    if bytes.is_empty() {
        return Err(Error::input(format!("{flag} {name}: the file is empty")));
    }
    if !bytes.len().is_multiple_of(2) {
        return Err(Error::input(format!(
            "{flag} {name}: {} bytes is not a whole number of u16 token ids",
            bytes.len()
        )));
    }
    let largest = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .max()
        .unwrap_or(0);
    if usize::from(largest) >= vocab_size {
        let position = bytes
            .chunks_exact(2)
            .position(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) >= vocab_size)
            .unwrap_or(0);
        return Err(Error::input(format!(
            "{flag} {name}: token id {largest} at token {position} is beyond the model's \
             vocabulary of {vocab_size} (wrong tokenizer?)"
        )));
    }
    Ok(())
}

/// A run of consecutive windows of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Part {
    file: usize,
    first: usize,
    count: usize,
}

/// Some windows of a corpus: whole files, or what is left of them after a split.
#[derive(Clone)]
pub struct WindowSet {
    corpus: Arc<Corpus>,
    parts: Vec<Part>,
}

impl WindowSet {
    /// Number of windows.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.count).sum()
    }

    /// True when there are no windows at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tokens of the corpus these windows come from (for the run's summary).
    pub fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    /// Split off the last `count` windows (in file order): `(the rest, the last count)`.
    pub fn split_tail(self, count: usize) -> (WindowSet, WindowSet) {
        let mut keep = self.len().saturating_sub(count);
        let (mut head, mut tail) = (Vec::new(), Vec::new());
        for part in self.parts {
            let kept = part.count.min(keep);
            keep -= kept;
            if kept > 0 {
                head.push(Part {
                    count: kept,
                    ..part
                });
            }
            if kept < part.count {
                tail.push(Part {
                    first: part.first + kept,
                    count: part.count - kept,
                    ..part
                });
            }
        }
        let set = |parts| WindowSet {
            corpus: Arc::clone(&self.corpus),
            parts,
        };
        (set(head), set(tail))
    }

    /// Write window `window` of file `file`: inputs its first `T` ids, targets its last `T`.
    fn read(&self, (file, window): (usize, usize), inputs: &mut [u16], targets: &mut [u16]) {
        let t = self.corpus.seq_len;
        let file = &self.corpus.files[file];
        file.read(window * t, inputs);
        file.read(window * t + 1, targets);
    }

    /// Window `index` of the set in file order, as `(file, window of that file)`.
    fn locate(&self, mut index: usize) -> (usize, usize) {
        for part in &self.parts {
            if index < part.count {
                return (part.file, part.first + index);
            }
            index -= part.count;
        }
        unreachable!("window index {index} beyond the set")
    }
}

/// The order in which training reads windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Each pass over the data shuffles the shards, then the windows of each shard (seeded).
    Random,
    /// Windows in file order, files in sorted name order, wrapping around.
    Sequential,
}

impl Order {
    /// The flag value naming this order.
    pub fn name(self) -> &'static str {
        match self {
            Order::Random => "random",
            Order::Sequential => "sequential",
        }
    }
}

/// An endless sequence of the windows of a set: window `n` is the same for the same `n`, order
/// and seed, whatever was read before.
pub struct Stream {
    set: WindowSet,
    order: Order,
    seed: u64,
    /// The pass whose shuffled order is cached, and that order as `(file, window)` pairs.
    pass: Option<(u64, Vec<(usize, usize)>)>,
}

impl Stream {
    /// The windows of `set` in `order`, shuffled from `seed` for [`Order::Random`].
    pub fn new(set: WindowSet, order: Order, seed: u64) -> Stream {
        Stream {
            set,
            order,
            seed,
            pass: None,
        }
    }

    /// Number of distinct windows (the length of one pass).
    pub fn windows(&self) -> usize {
        self.set.len()
    }

    /// Window `n` of the stream as `(file, window of that file)`.
    fn window(&mut self, n: u64) -> (usize, usize) {
        let len = self.set.len() as u64;
        let (pass, index) = (n / len, (n % len) as usize);
        match self.order {
            Order::Sequential => self.set.locate(index),
            Order::Random => {
                if self.pass.as_ref().is_none_or(|(p, _)| *p != pass) {
                    self.pass = Some((pass, self.shuffled_pass(pass)));
                }
                self.pass.as_ref().expect("just cached").1[index]
            }
        }
    }

    /// Pass `pass` of the random order: the shards shuffled, then each shard's windows, as
    /// llama2.c's `PretokDataset` does, from a generator seeded by the run's seed and the pass.
    fn shuffled_pass(&self, pass: u64) -> Vec<(usize, usize)> {
        // Distinct (seed, pass) pairs give distinct nonzero xorshift states (odd multipliers are
        // one-to-one), so every pass of every seed has its own order.
        let state = (self.seed ^ pass.wrapping_mul(0xA076_1D64_78BD_642F))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = Rng::new(state.max(1));
        let mut parts = self.set.parts.clone();
        shuffle(&mut rng, &mut parts);
        let mut order = Vec::with_capacity(self.set.len());
        for part in parts {
            let start = order.len();
            order.extend((part.first..part.first + part.count).map(|w| (part.file, w)));
            shuffle(&mut rng, &mut order[start..]);
        }
        order
    }

    /// Fill a batch: row `r` of `inputs` and `targets` (each `rows * T` ids) from window
    /// `first + r` of the stream.
    pub fn batch(&mut self, first: u64, inputs: &mut [u16], targets: &mut [u16]) {
        let t = self.set.corpus.seq_len;
        for (r, (x, y)) in inputs
            .chunks_exact_mut(t)
            .zip(targets.chunks_exact_mut(t))
            .enumerate()
        {
            let window = self.window(first + r as u64);
            self.set.read(window, x, y);
        }
    }
}

/// A number in `0..n` (`0 < n <= 2^32`) from 32 random bits, by multiplying into the high bits.
fn below(rng: &mut Rng, n: usize) -> usize {
    ((u64::from(rng.next_u32()) * n as u64) >> 32) as usize
}

/// Fisher-Yates: every order equally likely.
fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of token files, removed when dropped.
    struct Folder(PathBuf);

    impl Folder {
        fn new(name: &str, files: &[(&str, Vec<u16>)]) -> Folder {
            let dir =
                std::env::temp_dir().join(format!("llama2-data-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (file, ids) in files {
                let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
                std::fs::write(dir.join(file), bytes).unwrap();
            }
            Folder(dir)
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn all_windows(stream: &mut Stream, n: usize, t: usize) -> Vec<(Vec<u16>, Vec<u16>)> {
        (0..n as u64)
            .map(|i| {
                let (mut x, mut y) = (vec![0; t], vec![0; t]);
                stream.batch(i, &mut x, &mut y);
                (x, y)
            })
            .collect()
    }

    #[test]
    fn windows_are_pretok_datasets() {
        // Files of 11 and 8 tokens with T = 3: 11/3 - 1 = 2 and 8/3 - 1 = 1 windows.
        let a: Vec<u16> = (100..111).collect();
        let b: Vec<u16> = (200..208).collect();
        // "notes.txt" is not a shard; "a" sorts before "b" whatever order they were written in.
        let folder = Folder::new(
            "pretok",
            &[("b.bin", b), ("a.bin", a), ("notes.txt", vec![1, 2])],
        );
        let corpus = Corpus::open("--data", &folder.0, 3, 300).unwrap();
        assert_eq!((corpus.files(), corpus.tokens()), (2, 19));
        let set = corpus.windows();
        assert_eq!(set.len(), 3);
        let mut stream = Stream::new(set, Order::Sequential, 7);
        let expected = [
            (vec![100, 101, 102], vec![101, 102, 103]),
            (vec![103, 104, 105], vec![104, 105, 106]),
            (vec![200, 201, 202], vec![201, 202, 203]),
        ];
        // Sequential order wraps around after the last window.
        let got = all_windows(&mut stream, 5, 3);
        assert_eq!(got[..3], expected);
        assert_eq!(got[3..], expected[..2]);
    }

    #[test]
    fn batches_fill_rows_from_consecutive_windows() {
        let folder = Folder::new("rows", &[("x.bin", (0..40).collect())]);
        let mut stream = Stream::new(
            Corpus::open("--data", &folder.0, 4, 50).unwrap().windows(),
            Order::Sequential,
            1,
        );
        // 40/4 - 1 = 9 windows; rows 0 and 1 of the batch starting at window 8 are windows 8, 0.
        let (mut x, mut y) = (vec![0; 8], vec![0; 8]);
        stream.batch(8, &mut x, &mut y);
        assert_eq!(x, [32, 33, 34, 35, 0, 1, 2, 3]);
        assert_eq!(y, [33, 34, 35, 36, 1, 2, 3, 4]);
    }

    #[test]
    fn held_out_tail_is_never_in_the_training_stream() {
        let folder = Folder::new(
            "split",
            &[
                ("0.bin", (0..41).collect()),
                ("1.bin", (1000..1041).collect()),
            ],
        );
        // T = 4: 9 windows per file, 18 in all; hold out the last 5 (windows 4..9 of file 1).
        let set = Corpus::open("--data", &folder.0, 4, 2000)
            .unwrap()
            .windows();
        let (train, val) = set.split_tail(5);
        assert_eq!((train.len(), val.len()), (13, 5));
        let mut val = Stream::new(val, Order::Sequential, 0);
        let held = all_windows(&mut val, 5, 4);
        let firsts: Vec<u16> = held.iter().map(|(x, _)| x[0]).collect();
        assert_eq!(firsts, [1016, 1020, 1024, 1028, 1032]);
        let mut train = Stream::new(train, Order::Random, 3);
        let seen = all_windows(&mut train, 13 * 4, 4);
        for (x, _) in &seen {
            assert!(!firsts.contains(&x[0]));
        }
    }

    #[test]
    fn random_order_is_a_seeded_permutation_of_each_pass_by_shard() {
        let files: Vec<(String, Vec<u16>)> = (0..4u16)
            .map(|f| (format!("{f}.bin"), (f * 100..f * 100 + 33).collect()))
            .collect();
        let files: Vec<(&str, Vec<u16>)> =
            files.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        let folder = Folder::new("random", &files);
        let set = Corpus::open("--data", &folder.0, 4, 400).unwrap().windows();
        assert_eq!(set.len(), 4 * 7);
        let firsts = |seed: u64, start: u64| -> Vec<u16> {
            let mut stream = Stream::new(set.clone(), Order::Random, seed);
            (start..start + 28)
                .map(|n| {
                    let (mut x, mut y) = ([0; 4], [0; 4]);
                    stream.batch(n, &mut x, &mut y);
                    x[0]
                })
                .collect()
        };
        let pass0 = firsts(5, 0);
        // A permutation of all windows, each shard's 7 windows together (shards shuffled too).
        let mut sorted = pass0.clone();
        sorted.sort();
        let expected: Vec<u16> = (0..4)
            .flat_map(|f| (0..7).map(move |w| f * 100 + w * 4))
            .collect();
        assert_eq!(sorted, expected);
        for shard in pass0.chunks(7) {
            assert!(shard.iter().all(|id| id / 100 == shard[0] / 100));
        }
        assert_ne!(pass0, expected, "shuffled");
        // Reproducible from the seed alone, a new order each pass, another for another seed.
        assert_eq!(firsts(5, 0), pass0);
        assert_ne!(firsts(5, 28), pass0);
        assert_ne!(firsts(6, 0), pass0);
    }

    #[test]
    fn bad_files_are_refused_with_their_name() {
        let folder = Folder::new(
            "bad",
            &[("ok.bin", vec![1, 2, 3]), ("big.bin", vec![1, 2, 512, 3])],
        );
        let e = Corpus::open("--data", &folder.0, 2, 512)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("big.bin") && e.contains("512") && e.contains("at token 2"),
            "{e}"
        );
        std::fs::write(folder.0.join("odd.bin"), [1u8, 0, 2]).unwrap();
        let e = Corpus::open("--val", &folder.0.join("odd.bin"), 2, 512)
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("--val ") && e.to_string().contains("odd.bin"),
            "{e}"
        );
        std::fs::write(folder.0.join("empty.bin"), []).unwrap();
        let e = Corpus::open("--data", &folder.0.join("empty.bin"), 2, 512)
            .err()
            .unwrap();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = Corpus::open("--data", &folder.0.join("missing.bin"), 2, 512)
            .err()
            .unwrap();
        assert!(e.to_string().contains("missing.bin"), "{e}");
        let empty = Folder::new("none", &[]);
        let e = Corpus::open("--data", &empty.0, 2, 512).err().unwrap();
        assert!(e.to_string().contains("no .bin"), "{e}");
    }
}
