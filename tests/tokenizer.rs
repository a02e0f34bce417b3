//! The tokenizer against SentencePiece and llama2.c's test.c.

mod common;

use common::*;
use llama2::tokenizer::{Tokenizer, BOS};

fn llama() -> Tokenizer {
    Tokenizer::open(llama_tokenizer(), 32000).expect("tokenizer.bin loads")
}

fn ids(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect()
}

/// llama2.c's test.c cases (ids from Meta's SentencePiece, BOS first).
const TEST_C: &[(&str, &str)] = &[
    ("", "1"),
    ("I believe the meaning of life is", "1 306 4658 278 6593 310 2834 338"),
    (
        "Simply put, the theory of relativity states that ",
        "1 3439 17632 1925 29892 278 6368 310 14215 537 5922 393 29871",
    ),
    (
        "A brief message congratulating the team on the launch:\n\n        Hi everyone,\n\n        I just ",
        "1 319 11473 2643 378 629 271 18099 278 3815 373 278 6826 29901 13 13 4706 6324 14332 29892 13 13 4706 306 925 29871",
    ),
    (
        "Translate English to French:\n\n        sea otter => loutre de mer\n        peppermint => menthe poivrée\n        plush girafe => girafe peluche\n        cheese =>",
        "1 4103 9632 4223 304 5176 29901 13 13 4706 7205 4932 357 1149 301 449 276 316 2778 13 4706 1236 407 837 524 1149 6042 354 772 440 29878 1318 13 4706 715 1878 330 3055 1725 1149 330 3055 1725 4639 28754 13 4706 923 968 1149",
    ),
];

#[test]
fn encodes_llama2c_test_c_prompts() {
    let tokenizer = llama();
    for (text, expected) in TEST_C {
        let got = tokenizer.encode(text.as_bytes(), true, false).unwrap();
        assert_eq!(got, ids(expected), "text {text:?}");
    }
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn encodes_like_sentencepiece_on_the_fixture_corpus() {
    let tokenizer = llama();
    let fixture = std::fs::read_to_string(repo("tests/fixtures/sentencepiece_ids.txt")).unwrap();
    let mut cases = 0;
    let mut failures = Vec::new();
    for line in fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (hex, expected) = line.split_once('\t').expect("HEX<TAB>IDS");
        let text = decode_hex(hex);
        let mut expected = ids(expected);
        expected.insert(0, BOS);
        let got = tokenizer.encode(&text, true, false).unwrap();
        if got != expected {
            failures.push(format!(
                "{:?}\n  sentencepiece {expected:?}\n  ours          {got:?}",
                String::from_utf8_lossy(&text)
            ));
        }
        cases += 1;
    }
    assert!(cases >= 100, "only {cases} cases in the fixture");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decoding_reverses_encoding_for_printable_text() {
    let tokenizer = llama();
    let text = "Once upon a time, a fox named Émile met a crow. \"Hello!\" said the fox.\nThe end.";
    let tokens = tokenizer.encode(text.as_bytes(), true, false).unwrap();
    let mut decoded = Vec::new();
    for pair in tokens.windows(2) {
        decoded.extend_from_slice(tokenizer.decode(pair[0], pair[1]).unwrap());
    }
    assert_eq!(String::from_utf8(decoded).unwrap(), text);
}

#[test]
fn unknown_code_points_fall_back_to_byte_tokens() {
    let tokenizer = llama();
    // U+10348 (Gothic hwair) is not in the vocabulary: its four UTF-8 bytes become byte tokens.
    let tokens = tokenizer.encode("𐍈".as_bytes(), false, false).unwrap();
    let bytes: Vec<u32> = "𐍈".bytes().map(|b| b as u32 + 3).collect();
    assert_eq!(tokens[tokens.len() - 4..], bytes[..]);
    // Invalid UTF-8 is encoded byte by byte too, never rejected.
    let tokens = tokenizer
        .encode(&[b'a', 0xff, 0xfe, b'b'], true, false)
        .unwrap();
    assert!(tokens.contains(&(0xff + 3)) && tokens.contains(&(0xfe + 3)));
}

/// run.c's merge loop, written naively: rescan every adjacent pair, merge the best-scoring one
/// (leftmost on ties, only above -1e10), repeat. Quadratic, and obviously what run.c does.
fn naive_encode(tokenizer: &Tokenizer, text: &[u8]) -> Vec<u32> {
    let mut tokens = Vec::new();
    if !text.is_empty() {
        tokens.push(tokenizer.lookup(b" ").unwrap());
    }
    let mut i = 0;
    while i < text.len() {
        let mut end = i + 1;
        while end < text.len() && text[end] & 0xC0 == 0x80 && end - i < 4 {
            end += 1;
        }
        match tokenizer.lookup(&text[i..end]) {
            Some(id) => tokens.push(id),
            None => tokens.extend(text[i..end].iter().map(|&b| b as u32 + 3)),
        }
        i = end;
    }
    loop {
        let mut best: Option<(f32, usize, u32)> = None;
        for i in 0..tokens.len().saturating_sub(1) {
            let mut pair = tokenizer.piece(tokens[i]).unwrap().to_vec();
            pair.extend_from_slice(tokenizer.piece(tokens[i + 1]).unwrap());
            if let Some(id) = tokenizer.lookup(&pair) {
                let score = tokenizer.score(id).unwrap();
                if score > best.map_or(-1e10, |b| b.0) {
                    best = Some((score, i, id));
                }
            }
        }
        let Some((_, i, id)) = best else { break };
        tokens[i] = id;
        tokens.remove(i + 1);
    }
    tokens
}

#[test]
fn priority_queue_merging_equals_the_naive_loop() {
    let llama = llama();
    let small = Tokenizer::open(tok512(), 512).unwrap();
    let fixture = std::fs::read_to_string(repo("tests/fixtures/sentencepiece_ids.txt")).unwrap();
    let mut texts: Vec<Vec<u8>> = fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| decode_hex(l.split_once('\t').unwrap().0))
        .collect();
    // Random byte strings (deterministic), including invalid UTF-8 and runs of spaces.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let alphabet: &[u8] = b"  aeiou tnsrh.,!\n\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xff";
    for len in 0..300 {
        let text = (0..len % 97)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                alphabet[(state % alphabet.len() as u64) as usize]
            })
            .collect();
        texts.push(text);
    }
    for tokenizer in [&llama, &small] {
        for text in &texts {
            let fast = tokenizer.encode(text, false, false).unwrap();
            assert_eq!(
                fast,
                naive_encode(tokenizer, text),
                "text {:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}

#[test]
fn long_prompts_encode_like_their_pieces() {
    // 180 KB of text: the merge loop must handle it (n log n) and give the same tokens as the
    // sentence on its own, repeated.
    let tokenizer = llama();
    let sentence = "The quick brown fox jumps over the lazy dog.\n";
    let long = tokenizer
        .encode(sentence.repeat(4000).as_bytes(), false, false)
        .unwrap();
    let one = tokenizer.encode(sentence.as_bytes(), false, false).unwrap();
    // Only the first repetition carries the dummy-prefix space.
    let rest = tokenizer
        .encode(sentence.repeat(2).as_bytes(), false, false)
        .unwrap();
    let repeated = &rest[one.len()..];
    assert_eq!(long[..one.len()], one[..]);
    for chunk in long[one.len()..].chunks(repeated.len()) {
        assert_eq!(chunk, repeated);
    }
}

#[test]
fn tokenize_command_prints_ids() {
    let tok = llama_tokenizer();
    for (text, expected) in TEST_C {
        let output = llama2_str(&["tokenize", "-z", tok.to_str().unwrap(), "-i", text]);
        assert!(output.status.success());
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            format!("{expected}\n")
        );
    }
}
