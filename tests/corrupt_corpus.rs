//! A corpus of randomly corrupted checkpoints and tokenizers, made afresh (from a fixed seed) by
//! mutating the bundled stories260K files: truncations, header fields set to odd values, flipped
//! bits, scribbled weights, bad token lengths and scores.
//!
//! Each file must either load and run a few steps, or be refused with a one-line error; never
//! panic, hang or crash. Every mutant goes through the library (fast, in process, panics caught
//! and reported), and a sample of them through the command-line tool, whose verdict must agree.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use common::*;
use llama2::{Generator, Model, Sampler, Tokenizer};

/// Number of mutants of each checkpoint layout and of the tokenizer.
const CHECKPOINT_MUTANTS: usize = 60;
const TOKENIZER_MUTANTS: usize = 100;
/// One mutant in this many also runs through the command-line tool.
const CLI_EVERY: usize = 4;
const STEPS: usize = 8;
const PROMPT: &str = "Once upon a time";

/// xorshift64*: a small deterministic generator for the mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A corrupted file and how it was made.
struct Mutant {
    what: String,
    bytes: Vec<u8>,
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn write_i32(bytes: &mut [u8], at: usize, value: i32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// A value likely to break a size or count that was `original`.
fn odd_value(rng: &mut Rng, original: i32) -> i32 {
    match rng.below(6) {
        0 => rng.pick(&[0, 1, 2, 3, -1, -2, i32::MIN, i32::MAX, i32::MAX - 1]),
        1 => rng.pick(&[1 << 8, 1 << 16, 1 << 20, 1 << 24, 1 << 30]),
        2 => original.wrapping_add(rng.pick(&[-2, -1, 1, 2, 8])),
        3 => rng.pick(&[original.wrapping_mul(2), original / 2, -original]),
        4 => rng.below(2048) as i32,
        _ => rng.next() as i32,
    }
}

/// One checkpoint layout to mutate: its bytes, where its seven header fields start, and its
/// header's other integers (version, group size).
struct Layout {
    name: &'static str,
    bytes: Vec<u8>,
    fields_at: usize,
    header_len: usize,
    extra_ints: &'static [usize],
}

fn layouts() -> Vec<Layout> {
    vec![
        Layout {
            name: "legacy",
            bytes: std::fs::read(stories260k()).unwrap(),
            fields_at: 0,
            header_len: 28,
            extra_ints: &[],
        },
        Layout {
            name: "v1",
            bytes: stories260k_v1_bytes(),
            fields_at: 8,
            header_len: 256,
            extra_ints: &[0, 4],
        },
        Layout {
            name: "v2",
            bytes: std::fs::read(stories260k_q8()).unwrap(),
            fields_at: 8,
            header_len: 256,
            extra_ints: &[0, 4, 37],
        },
    ]
}

fn mutate_checkpoint(rng: &mut Rng, layout: &Layout) -> Mutant {
    let mut bytes = layout.bytes.clone();
    let len = bytes.len();
    let what = match rng.below(6) {
        0 => {
            // Cut anywhere, but often inside or just after the header.
            let at = if rng.below(2) == 0 {
                rng.below(layout.header_len + 64)
            } else {
                rng.below(len)
            };
            bytes.truncate(at);
            format!("truncated to {at} bytes")
        }
        1 | 2 => {
            let mut changed = Vec::new();
            for _ in 0..1 + rng.below(2) {
                let mut offsets: Vec<usize> = (0..7).map(|i| layout.fields_at + 4 * i).collect();
                offsets.extend_from_slice(layout.extra_ints);
                let at = rng.pick(&offsets);
                let value = odd_value(rng, read_i32(&bytes, at));
                write_i32(&mut bytes, at, value);
                changed.push(format!("int at {at} = {value}"));
            }
            changed.join(", ")
        }
        3 => {
            let flips: Vec<usize> = (0..1 + rng.below(3))
                .map(|_| rng.below(layout.header_len.min(48) * 8))
                .collect();
            for &bit in &flips {
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            format!("header bits {flips:?} flipped")
        }
        4 => {
            // Scribble over weights: the file stays well-formed, the numbers become anything
            // (NaN and infinity included).
            let n = 1 + rng.below(32);
            for _ in 0..n {
                let at = layout.header_len + rng.below(len - layout.header_len);
                bytes[at] = rng.next() as u8;
            }
            format!("{n} body bytes scribbled")
        }
        _ => {
            let extra = 1 + rng.below(64);
            bytes.extend((0..extra).map(|_| rng.next() as u8));
            format!("{extra} bytes appended")
        }
    };
    Mutant {
        what: format!("{} checkpoint, {what}", layout.name),
        bytes,
    }
}

/// Byte offsets of each tokenizer entry's score and length.
fn tokenizer_entries(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut entries = Vec::new();
    let mut at = 4;
    while at < bytes.len() {
        entries.push((at, at + 4));
        at += 8 + read_i32(bytes, at + 4) as usize;
    }
    entries
}

fn mutate_tokenizer(rng: &mut Rng, original: &[u8], entries: &[(usize, usize)]) -> Mutant {
    let mut bytes = original.to_vec();
    let what = match rng.below(6) {
        0 => {
            let at = rng.below(bytes.len());
            bytes.truncate(at);
            format!("truncated to {at} bytes")
        }
        1 | 2 => {
            let (_, length_at) = entries[rng.below(entries.len())];
            let value = odd_value(rng, read_i32(&bytes, length_at));
            write_i32(&mut bytes, length_at, value);
            format!("length at {length_at} = {value}")
        }
        3 => {
            let flips: Vec<usize> = (0..1 + rng.below(4))
                .map(|_| rng.below(bytes.len() * 8))
                .collect();
            for &bit in &flips {
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            format!("bits {flips:?} flipped")
        }
        4 => {
            let n = 1 + rng.below(16);
            for _ in 0..n {
                let (score_at, _) = entries[rng.below(entries.len())];
                let score = rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30]);
                bytes[score_at..score_at + 4].copy_from_slice(&score.to_le_bytes());
            }
            let value = odd_value(rng, read_i32(&bytes, 0));
            write_i32(&mut bytes, 0, value);
            format!("{n} scores made non-finite, max_token_length = {value}")
        }
        _ => {
            // Rewrite pieces: random bytes, invalid UTF-8, stray byte-token spellings.
            let n = 1 + rng.below(16);
            for _ in 0..n {
                let (_, length_at) = entries[rng.below(entries.len())];
                let len = read_i32(&bytes, length_at) as usize;
                for b in &mut bytes[length_at + 4..length_at + 4 + len] {
                    let random = rng.next() as u8;
                    *b = rng.pick(&[b'<', b'0', b'x', b'F', b' ', 0xFF, 0xC3, 0x80, random]);
                }
            }
            format!("{n} pieces rewritten")
        }
    };
    Mutant {
        what: format!("tokenizer, {what}"),
        bytes,
    }
}

/// Load a model and tokenizer from bytes and run a few steps of sampling from a prompt.
/// `Ok` with the number of tokens made, or the error's message.
fn run_library(model: Vec<u8>, tokenizer: &[u8]) -> Result<usize, String> {
    let model = Model::from_bytes(model).map_err(|e| e.to_string())?;
    let vocab_size = model.config().vocab_size;
    let tokenizer =
        Tokenizer::from_bytes(tokenizer, Some(vocab_size)).map_err(|e| e.to_string())?;
    let sampler = Sampler::new(1.0, 0.9, 7).map_err(|e| e.to_string())?;
    let generator = Generator::new(&model, &tokenizer, sampler, PROMPT.as_bytes(), STEPS)
        .map_err(|e| e.to_string())?;
    let mut made = 0;
    for token in generator {
        token.map_err(|e| e.to_string())?;
        made += 1;
    }
    Ok(made)
}

/// What happened to one mutant in the library, or why that is not acceptable.
fn check_library(model: Vec<u8>, tokenizer: &[u8]) -> Result<bool, String> {
    match catch_unwind(AssertUnwindSafe(|| run_library(model, tokenizer))) {
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {message}"))
        }
        Ok(Ok(made)) if made <= STEPS => Ok(true),
        Ok(Ok(made)) => Err(format!("made {made} tokens in {STEPS} steps")),
        Ok(Err(message)) if message.is_empty() || message.contains('\n') => {
            Err(format!("error is not one line: {message:?}"))
        }
        Ok(Err(_)) => Ok(false),
    }
}

/// Run the command-line tool on files; its verdict must be `ran` and, when it refused, the
/// refusal must be clean and name one of the two files (a checkpoint whose header claims a
/// larger vocabulary can be refused for the tokenizer it does not fit).
fn check_cli(model: &Path, tokenizer: &Path, ran: bool) -> Result<(), String> {
    let args = [
        model.as_os_str(),
        "-z".as_ref(),
        tokenizer.as_os_str(),
        "-n".as_ref(),
        "8".as_ref(),
        "-s".as_ref(),
        "7".as_ref(),
        "-i".as_ref(),
        PROMPT.as_ref(),
    ];
    let output = llama2(&args, b"");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let names_a_file = [model, tokenizer]
        .iter()
        .any(|path| stderr.contains(path.to_str().unwrap()));
    match output.status.code() {
        Some(0) if ran => Ok(()),
        Some(1) if !ran && names_a_file => catch_unwind(|| assert_clean_failure(&output, ""))
            .map_err(|_| format!("unclean refusal: {stderr:?}")),
        code => Err(format!(
            "exit {code:?} (library ran: {ran}), stderr {stderr:?}"
        )),
    }
}

#[test]
fn corrupted_files_load_and_run_or_are_refused_cleanly() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let tokenizer = std::fs::read(tok512()).unwrap();
    let entries = tokenizer_entries(&tokenizer);
    let stories = std::fs::read(stories260k()).unwrap();

    let mut mutants = Vec::new(); // (mutant, is it the checkpoint)
    for layout in layouts() {
        for _ in 0..CHECKPOINT_MUTANTS {
            mutants.push((mutate_checkpoint(&mut rng, &layout), true));
        }
    }
    for _ in 0..TOKENIZER_MUTANTS {
        mutants.push((mutate_tokenizer(&mut rng, &tokenizer, &entries), false));
    }
    assert!(mutants.len() >= 200);

    let dir = TempDir::new("corrupt-corpus");
    let (good_model, good_tokenizer) = (stories260k(), tok512());
    let mut failures = Vec::new();
    let (mut ran, mut refused, mut through_cli) = (0, 0, 0);
    for (i, (mutant, is_checkpoint)) in mutants.iter().enumerate() {
        let verdict = if *is_checkpoint {
            check_library(mutant.bytes.clone(), &tokenizer)
        } else {
            check_library(stories.clone(), &mutant.bytes)
        };
        let Ok(did_run) = verdict else {
            failures.push(format!("#{i} {}: {}", mutant.what, verdict.unwrap_err()));
            continue;
        };
        if did_run {
            ran += 1;
        } else {
            refused += 1;
        }
        if i % CLI_EVERY == 0 {
            through_cli += 1;
            let path = dir.path(&format!("mutant-{i}.bin"));
            std::fs::write(&path, &mutant.bytes).unwrap();
            let result = if *is_checkpoint {
                check_cli(&path, &good_tokenizer, did_run)
            } else {
                check_cli(&good_model, &path, did_run)
            };
            if let Err(problem) = result {
                failures.push(format!("#{i} {} (command line): {problem}", mutant.what));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Both outcomes must be common, or the corpus is not testing what it claims.
    assert!(ran >= 40 && refused >= 100, "ran {ran}, refused {refused}");
    assert!(through_cli >= 50, "{through_cli} through the command line");
}
