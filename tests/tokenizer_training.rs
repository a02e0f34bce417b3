//! `llama2 train-tokenizer` against SentencePiece: the vocabularies SentencePiece's BPE trainer
//! made with llama2.c's options on the same corpus (fixtures by
//! `tests/fixtures/tokenizer/make_fixtures.py`), their compression of held-out text, the
//! `tokenizer.bin` bytes llama2.c's exporter wrote, byte-fallback round trips, bad input.

mod common;

use std::path::PathBuf;

use common::{assert_clean_failure, llama2_str, repo, TempDir};
use llama2::bpe::{self, Vocabulary};
use llama2::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    repo(&format!("tests/fixtures/tokenizer/{name}"))
}

/// Bytes written as hex digits.
fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// SentencePiece's pieces with scores, and its token count on the held-out text.
fn sentencepiece_vocab(name: &str) -> (Vec<(String, f32)>, usize) {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture exists");
    let mut heldout = None;
    let mut pieces = Vec::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("# heldout_tokens ") {
            heldout = Some(n.parse().expect("a count"));
        } else if !line.starts_with('#') {
            let (hex, score) = line.split_once('\t').expect("hex<TAB>score");
            let piece = String::from_utf8(unhex(hex)).expect("UTF-8 piece");
            pieces.push((piece, score.parse().expect("a score")));
        }
    }
    (pieces, heldout.expect("a heldout_tokens line"))
}

fn train(vocab_size: usize) -> Vocabulary {
    train_on("corpus.txt", vocab_size)
}

fn train_on(corpus: &str, vocab_size: usize) -> Vocabulary {
    bpe::train_from_files(&[fixture(corpus)], vocab_size, |_| {}).expect("training works")
}

fn tokenizer_of(vocabulary: &Vocabulary) -> Tokenizer {
    Tokenizer::from_bytes(&vocabulary.to_llama2c_bytes(), None).expect("the written file loads")
}

/// Tokens our encoder makes of a held-out file, each stripped non-empty line on its own, no BOS
/// (as the fixture counts SentencePiece's). SentencePiece's encoder first makes every run of
/// spaces one space (these models keep its `remove_extra_whitespaces`); run.c's does not, so
/// the lines are given to ours that way.
fn heldout_tokens(tokenizer: &Tokenizer, heldout: &str) -> usize {
    let text = std::fs::read_to_string(fixture(heldout)).expect("held-out text");
    text.lines()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
            words.join(" ").trim().to_string()
        })
        .filter(|line| !line.is_empty())
        .map(|line| {
            tokenizer
                .encode(line.as_bytes(), false, false)
                .expect("encodes")
                .len()
        })
        .sum()
}

/// Train on `corpus` and compare with SentencePiece's vocabulary in `expected`: the share of
/// pieces equal in id and score (asserted at least `bar`), and the token count of `heldout`
/// (asserted within 1%).
fn compare_with_sentencepiece(
    corpus: &str,
    vocab_size: usize,
    expected: &str,
    heldout: &str,
    bar: f64,
) {
    let (expected, expected_tokens) = sentencepiece_vocab(expected);
    let ours = train_on(corpus, vocab_size);
    assert_eq!(ours.pieces.len(), vocab_size);
    assert_eq!(expected.len(), vocab_size);
    let same = ours
        .pieces
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a == b)
        .count();
    let share = same as f64 / vocab_size as f64;
    // The same pieces, wherever they are (ids 1 and 2 are spelled alike in both lists).
    let ours_set: std::collections::HashSet<&str> =
        ours.pieces.iter().map(|p| p.0.as_str()).collect();
    let shared = expected
        .iter()
        .filter(|p| ours_set.contains(p.0.as_str()))
        .count();
    let tokens = heldout_tokens(&tokenizer_of(&ours), heldout);
    let ratio = tokens as f64 / expected_tokens as f64;
    eprintln!(
        "{corpus}, vocab {vocab_size}: {same}/{vocab_size} pieces ({:.2}%) identical to \
         SentencePiece's in id and score, {shared} in both vocabularies; {heldout}: {tokens} \
         tokens, SentencePiece {expected_tokens} ({:+.3}%)",
        100.0 * share,
        100.0 * (ratio - 1.0)
    );
    assert!(
        share >= bar,
        "only {:.2}% of pieces identical",
        100.0 * share
    );
    assert!(
        (ratio - 1.0).abs() <= 0.01,
        "token count {tokens} vs {expected_tokens}"
    );
}

// Measured on the stories corpus: every piece the same, in the same place, and the same token
// count.
#[test]
fn vocabulary_of_512_matches_sentencepiece() {
    compare_with_sentencepiece(
        "corpus.txt",
        512,
        "sentencepiece_vocab512.txt",
        "heldout.txt",
        1.0,
    );
}

#[test]
fn vocabulary_of_4096_matches_sentencepiece() {
    // This corpus has fewer than 3837 mergeable pairs: both trainers go on with pairs that no
    // longer occur, shortest first.
    compare_with_sentencepiece(
        "corpus.txt",
        4096,
        "sentencepiece_vocab4096.txt",
        "heldout.txt",
        1.0,
    );
}

/// Many scripts, combining marks, digits, tabs, runs of spaces, reserved pieces: the same
/// pieces, and nearly all in the same place (measured 93%: SentencePiece looks for the best pair
/// among the most frequent pairs of its last update only, and so takes a few pieces later).
#[test]
fn vocabulary_of_mixed_scripts_matches_sentencepiece() {
    compare_with_sentencepiece(
        "mixed.txt",
        1500,
        "sentencepiece_mixed1500.txt",
        "mixed.txt",
        0.9,
    );
    let (expected, _) = sentencepiece_vocab("sentencepiece_mixed1500.txt");
    let ours = train_on("mixed.txt", 1500);
    let mut a: Vec<&String> = ours.pieces.iter().map(|p| &p.0).collect();
    let mut b: Vec<&String> = expected.iter().map(|p| &p.0).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same pieces");
}

/// The file we write is byte for byte what llama2.c's `tokenizer.py` exports from the model
/// SentencePiece trained.
#[test]
fn written_file_is_what_llama2c_exports() {
    let dir = TempDir::new("train-tokenizer-file");
    let out = dir.path("tok512.bin");
    let output = llama2_str(&[
        "train-tokenizer",
        "--vocab-size",
        "512",
        "-o",
        out.to_str().unwrap(),
        fixture("corpus.txt").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("512 tokens"), "{stdout}");
    let ours = std::fs::read(&out).unwrap();
    let expected = std::fs::read(fixture("sentencepiece_vocab512.bin")).unwrap();
    assert!(
        ours == expected,
        "tokenizer.bin differs from llama2.c's export"
    );

    // And the crate uses it at once: `tokenize` with -z.
    let output = llama2_str(&[
        "tokenize",
        "-z",
        out.to_str().unwrap(),
        "-i",
        "Once upon a time",
    ]);
    assert!(output.status.success(), "{output:?}");
    let ids: Vec<u32> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(ids[0], 1);
    let tokenizer = Tokenizer::open_all(&out).unwrap();
    let mut text = Vec::new();
    for pair in ids.windows(2) {
        text.extend_from_slice(tokenizer.decode(pair[0], pair[1]).unwrap());
    }
    assert_eq!(text, b"Once upon a time");
}

/// Any UTF-8, including characters the corpus never had, encodes (through the byte tokens)
/// and decodes back exactly.
#[test]
fn any_text_round_trips_through_byte_fallback() {
    let tokenizer = tokenizer_of(&train(512));
    let mut rng = llama2::rng::Rng::new(7);
    let mut random = move |n: u32| rng.next_u32() % n;
    let fixed = [
        "Once upon a time 😀 there was 𐍈 ünïcödé, 中文, עברית\t\r\n end",
        "  a  b  ",
    ];
    let mut texts: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    for _ in 0..300 {
        let len = 1 + random(40);
        let text: String = (0..len)
            .map(|_| match random(4) {
                0 => char::from_u32(random(0x80)).unwrap(),
                1 => char::from_u32(0x80 + random(0x800 - 0x80)).unwrap(),
                2 => ['a', 'e', ' ', 't', 'h', '.'][random(6) as usize],
                _ => char::from_u32(0x1_0000 + random(0x10_0000)).unwrap_or('x'),
            })
            .collect();
        texts.push(text);
    }
    let mut byte_tokens = 0;
    for text in texts.iter().filter(|t| !t.is_empty()) {
        let ids = tokenizer.encode(text.as_bytes(), false, false).unwrap();
        byte_tokens += ids.iter().filter(|&&id| (3..259).contains(&id)).count();
        let mut decoded = Vec::new();
        for &id in &ids {
            // Decoded after a non-BOS token: the dummy-prefix space stays, then comes off.
            decoded.extend_from_slice(tokenizer.decode(0, id).unwrap());
        }
        assert_eq!(decoded.first(), Some(&b' '), "{text:?}");
        assert_eq!(&decoded[1..], text.as_bytes(), "{text:?}");
    }
    assert!(
        byte_tokens > 100,
        "byte fallback exercised {byte_tokens} times"
    );
}

/// A TinyStories shard trains too, and reading it skips empty stories.
#[test]
fn json_shards_train() {
    let vocab = bpe::train_from_files(&[fixture("stories.json")], 400, |_| {}).unwrap();
    assert_eq!(vocab.pieces.len(), 400);
    assert_eq!(vocab.pieces[1].0, "<s>");
    assert_eq!(vocab.pieces[3].0, "<0x00>");
    assert!(vocab.pieces.iter().any(|(p, _)| p == "▁and"));
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let dir = TempDir::new("train-tokenizer-bad");
    let out = dir.path("out.bin");
    let out = out.to_str().unwrap();
    let corpus = fixture("corpus.txt");
    let corpus = corpus.to_str().unwrap();
    let run = |args: &[&str]| llama2_str(&[&["train-tokenizer"], args].concat());

    assert_clean_failure(&run(&["--vocab-size", "512", "-o", out]), "no input");
    assert_clean_failure(
        &run(&["--vocab-size", "300", "-o", out, corpus]),
        "--vocab-size",
    );
    assert_clean_failure(
        &run(&["--vocab-size", "70000", "-o", out, corpus]),
        "--vocab-size",
    );
    assert_clean_failure(
        &run(&["--vocab-size", "x", "-o", out, corpus]),
        "--vocab-size",
    );
    assert_clean_failure(&run(&["-o", out, corpus]), "--vocab-size");
    assert_clean_failure(&run(&["--vocab-size", "512", corpus]), "-o");
    assert_clean_failure(
        &run(&["--vocab-size", "512", "--bogus", "-o", out, corpus]),
        "--bogus",
    );
    assert_clean_failure(
        &run(&["--vocab-size", "512", "-o", out, "/nonexistent/x.txt"]),
        "/nonexistent/x.txt",
    );
    let broken = dir.path("broken.json");
    std::fs::write(&broken, "[{\"story\": \"abc\"").unwrap();
    let broken = broken.to_str().unwrap();
    assert_clean_failure(&run(&["--vocab-size", "512", "-o", out, broken]), broken);
    // Only empty lines: nothing to train on.
    let empty = dir.path("empty.txt");
    std::fs::write(&empty, "\n  \n\t\n").unwrap();
    assert_clean_failure(
        &run(&["--vocab-size", "512", "-o", out, empty.to_str().unwrap()]),
        "no text",
    );
    assert!(!dir.path("out.bin").exists());
}

/// Lines that are empty or not UTF-8 are skipped and counted, not fatal, and the rest trains.
#[test]
fn empty_and_invalid_lines_are_skipped_and_counted() {
    let dir = TempDir::new("train-tokenizer-skip");
    let input = dir.path("mixed.txt");
    let mut text = std::fs::read(fixture("heldout.txt")).unwrap();
    text.extend_from_slice(b"\n\n   \nbad \xff byte\n\xc3\n");
    std::fs::write(&input, &text).unwrap();
    let words = bpe::count_words(std::slice::from_ref(&input), |_, _| {}).unwrap();
    assert_eq!(words.corpus.skipped_invalid, 2);
    assert!(words.corpus.skipped_empty >= 3);
    let output = llama2_str(&[
        "train-tokenizer",
        "--vocab-size",
        "400",
        "-o",
        dir.path("t.bin").to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    Tokenizer::open_all(dir.path("t.bin")).unwrap();
}

/// On text with single spaces, our encoder with the trained vocabulary gives SentencePiece's
/// ids with its own model.
#[test]
fn encoding_gives_sentencepiece_ids() {
    let tokenizer = tokenizer_of(&train(512));
    let cases = std::fs::read_to_string(fixture("sentencepiece_heldout512_ids.txt")).unwrap();
    let mut checked = 0;
    for case in cases.lines() {
        let (hex, ids) = case.split_once('\t').expect("hex<TAB>ids");
        let text = unhex(hex);
        let expected: Vec<u32> = ids.split(' ').map(|id| id.parse().unwrap()).collect();
        assert_eq!(tokenizer.encode(&text, false, false).unwrap(), expected);
        checked += 1;
    }
    assert_eq!(checked, 80);
}
