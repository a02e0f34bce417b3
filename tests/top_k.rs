//! `--top-k`: the candidates printed are the model's most likely next tokens with their
//! probabilities after temperature (checked against the model's logits and a softmax computed
//! here), and asking for them changes neither the text nor the tokens sampled.

mod common;

use common::*;
use llama2::text::escape_piece;
use llama2::top_k::TopK;
use llama2::{Generator, Model, Sampler, Tokenizer};

/// `softmax(logits / t)` in f64, every token, most likely first (lower id first on ties).
fn ranked_probabilities(logits: &[f32], t: f64) -> Vec<(u32, f64)> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
    let exps: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    let mut ranked: Vec<(u32, f64)> = exps
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u32, e / sum))
        .collect();
    ranked.sort_by(|a, b| {
        logits[b.0 as usize]
            .total_cmp(&logits[a.0 as usize])
            .then(a.0.cmp(&b.0))
    });
    ranked
}

/// A printed line split into the chosen piece and (piece, probability) candidates. Pieces
/// stay in their escaped, quoted form.
struct Line {
    position: usize,
    chosen: String,
    candidates: Vec<(String, f64)>,
}

/// The quoted piece at the start of `s` (escapes left as they are) and the rest after it.
fn quoted(s: &str) -> (String, &str) {
    assert!(s.starts_with('"'), "expected a quoted piece at {s:?}");
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => return (s[..=i].to_string(), &s[i + 1..]),
            _ => escaped = false,
        }
    }
    panic!("unterminated piece in {s:?}");
}

fn parse_line(line: &str) -> Line {
    let rest = line.strip_prefix('#').expect("a line starts with #");
    let (position, rest) = rest.split_once(' ').unwrap();
    let (chosen, rest) = quoted(rest);
    let mut rest = rest.strip_prefix(" <- ").expect("then the candidates");
    let mut candidates = Vec::new();
    loop {
        let (piece, after) = quoted(rest);
        let after = after.strip_prefix(' ').unwrap();
        let (number, after) = after.split_once(" | ").unwrap_or((after, ""));
        candidates.push((piece, number.parse().unwrap()));
        if after.is_empty() {
            break;
        }
        rest = after;
    }
    Line {
        position: position.parse().unwrap(),
        chosen,
        candidates,
    }
}

fn run(args: &[&str]) -> (Vec<u8>, String) {
    let model = stories260k();
    let tok = tok512();
    let mut all = vec![
        model.to_str().unwrap(),
        "-z",
        tok.to_str().unwrap(),
        "--exact",
    ];
    all.extend(args);
    let out = llama2_str(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.stdout, String::from_utf8(out.stderr).unwrap())
}

/// The printed candidates of every generated position match the model's logits: same
/// tokens in the same order, probabilities `softmax(logits / T)` (T = 1 at -t 0) to the 6
/// decimals printed; they are sorted and sum to at most 1; and stdout is what it is without
/// --top-k.
fn check_against_naive(temperature: &str, t: f64) {
    let prompt = "Once upon a time";
    let base = ["-n", "40", "-s", "7", "-t", temperature, "-i", prompt];
    let (plain_stdout, _) = run(&base);
    let mut with_top_k = base.to_vec();
    with_top_k.extend(["--top-k", "5"]);
    let (stdout, stderr) = run(&with_top_k);
    assert_eq!(stdout, plain_stdout, "--top-k changed stdout");

    // The token ids, from the library with the same settings.
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let sampler = Sampler::new(t as f32, 0.9, 7).unwrap();
    let generator = Generator::new(&model, &tokenizer, sampler, prompt.as_bytes(), 40).unwrap();
    let mut ids = generator.prompt_tokens()[..1].to_vec();
    let mut from_prompt = vec![true];
    for token in generator {
        let token = token.unwrap();
        ids.push(token.id);
        from_prompt.push(token.from_prompt);
    }
    let lines: Vec<Line> = stderr
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(parse_line)
        .collect();
    let generated: Vec<usize> = (1..ids.len()).filter(|&p| !from_prompt[p]).collect();
    assert_eq!(
        lines.iter().map(|l| l.position).collect::<Vec<_>>(),
        generated
    );

    let mut state = model.new_state().unwrap();
    let mut lines = lines.iter();
    let temperature_for_probabilities = if t == 0.0 { 1.0 } else { t };
    for pos in 0..ids.len() - 1 {
        let logits = model.forward(&mut state, ids[pos], pos).unwrap().to_vec();
        if from_prompt[pos + 1] {
            continue;
        }
        let line = lines.next().unwrap();
        let piece = |id: u32| escape_piece(tokenizer.decode(ids[pos], id).unwrap());
        assert_eq!(line.chosen, piece(ids[pos + 1]));
        let expected = ranked_probabilities(&logits, temperature_for_probabilities);
        assert_eq!(line.candidates.len(), 5);
        for ((printed, p), &(id, want)) in line.candidates.iter().zip(&expected) {
            assert_eq!(*printed, piece(id), "position {pos}");
            assert!(
                (p - want).abs() <= 6e-7,
                "position {pos}: printed {p}, computed {want}"
            );
        }
        let probabilities: Vec<f64> = line.candidates.iter().map(|c| c.1).collect();
        assert!(
            probabilities.windows(2).all(|w| w[0] >= w[1]),
            "{probabilities:?}"
        );
        assert!(probabilities.iter().sum::<f64>() <= 1.0 + 5.0 * 5e-7);
        if t == 0.0 {
            // Greedy: the token chosen is the most likely one.
            assert_eq!(line.candidates[0].0, line.chosen);
        }
    }
}

#[test]
fn greedy_candidates_match_the_logits() {
    check_against_naive("0", 0.0);
}

#[test]
fn sampled_candidates_match_the_logits() {
    check_against_naive("0.8", 0.8);
}

#[test]
fn watching_does_not_change_the_tokens_sampled() {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    for (t, p) in [(0.0, 0.9), (1.0, 0.9), (0.7, 1.0), (1.3, 0.5)] {
        let ids = |k: usize| -> Vec<u32> {
            let sampler = Sampler::new(t, p, 99).unwrap().with_top_k(k);
            let generator = Generator::new(&model, &tokenizer, sampler, b"The cat", 100).unwrap();
            generator.map(|token| token.unwrap().id).collect()
        };
        assert_eq!(ids(0), ids(3), "t {t} p {p}");
        assert_eq!(ids(0), ids(512), "t {t} p {p}");
    }
}

#[test]
fn top_k_of_made_up_logits() {
    let logits = [1.0, 3.0, 3.0, -2.0, 0.5];
    let mut top = TopK::new(3);
    top.record(&logits, 2.0);
    let ids: Vec<u32> = top.candidates().iter().map(|c| c.id).collect();
    assert_eq!(ids, [1, 2, 0]); // ties: lower id first
    let expected = ranked_probabilities(&logits, 2.0);
    for (c, (_, p)) in top.candidates().iter().zip(expected) {
        assert!((c.probability as f64 - p).abs() < 1e-7);
    }
    // k larger than the vocabulary: everything, summing to 1.
    let mut all = TopK::new(10);
    all.record(&logits, 0.0);
    assert_eq!(all.candidates().len(), 5);
    let sum: f32 = all.candidates().iter().map(|c| c.probability).sum();
    assert!((sum - 1.0).abs() < 1e-6);
    let mut none = TopK::new(0);
    none.record(&logits, 1.0);
    assert!(none.candidates().is_empty());
}

#[test]
fn bad_top_k_flags_fail_cleanly() {
    let model = stories260k();
    let tok = tok512();
    let (model, tok) = (model.to_str().unwrap(), tok.to_str().unwrap());
    for value in ["abc", "-1", "1.5", ""] {
        assert_clean_failure(
            &llama2_str(&[model, "-z", tok, "--top-k", value]),
            "--top-k",
        );
    }
    assert_clean_failure(&llama2_str(&[model, "-z", tok, "--top-k"]), "--top-k");
    assert_clean_failure(
        &llama2_str(&[model, "-z", tok, "-m", "chat", "--top-k", "3"]),
        "--top-k",
    );
}
