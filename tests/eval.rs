//! `evaluate` and `-m eval` against a teacher-forced run of `llama2::reference`, on stories260K
//! and on small random models whose short context forces the text into several windows.
//!
//! The logits are bit-identical (tests/exact.rs), so the losses differ only by the rounding of
//! the f64 cross-entropy sums: the tolerance is 1e-9 nats.

mod common;

use common::*;
use llama2::checkpoint::{Config, Format};
use llama2::convert::{write_float, write_int8, FloatTensors};
use llama2::{evaluate, Model, Tokenizer};

/// Losses computed from bit-identical logits differ by f64 rounding only.
const LOSS_TOLERANCE: f64 = 1e-9;

/// Mean `-ln p(next token)` over the text (BOS first) by the reference forward pass on the
/// checkpoint `bytes`, restarting the context every `seq_len` predictions.
fn reference_loss(bytes: &[u8], tokenizer: &Tokenizer, text: &[u8]) -> (usize, f64) {
    let tokens = tokenizer.encode(text, true, false).unwrap();
    let mut oracle = Reference::new(bytes);
    let seq_len = oracle.weights.config.seq_len;
    let mut total = 0.0f64;
    for i in 0..tokens.len() - 1 {
        let logits = oracle.logits(tokens[i], i % seq_len);
        let log_sum: f64 = logits.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        total += log_sum - logits[tokens[i + 1] as usize] as f64;
    }
    (tokens.len() - 1, total / (tokens.len() - 1) as f64)
}

fn story_text() -> Vec<u8> {
    std::fs::read(repo("tests/expected/stories260K_t1.0_p0.9_s133742.txt")).unwrap()
}

fn tok() -> Tokenizer {
    Tokenizer::open(tok512(), 512).unwrap()
}

#[test]
fn stories260k_loss_equals_the_reference_forward_pass() {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let text = story_text();
    let result = evaluate(&model, &tok(), &text).unwrap();
    let bytes = std::fs::read(stories260k()).unwrap();
    let (tokens, loss) = reference_loss(&bytes, &tok(), &text);
    assert_eq!(result.tokens, tokens);
    assert!(tokens > 100);
    assert!(
        (result.loss - loss).abs() < LOSS_TOLERANCE,
        "{} vs {loss}",
        result.loss
    );
    assert!((result.perplexity() - loss.exp()).abs() < LOSS_TOLERANCE * loss.exp());
}

/// A small random model with a context of 16, so a story is scored in many windows.
fn short_context_model(format: Format) -> Vec<u8> {
    let config = Config {
        dim: 32,
        hidden_dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 512,
        seq_len: 16,
        shared_classifier: false,
    };
    let tensors = FloatTensors::random(config, 11);
    let mut bytes = Vec::new();
    match format {
        Format::Int8V2 { group_size } => {
            write_int8(&mut bytes, &tensors, group_size).unwrap();
        }
        float => write_float(&mut bytes, &tensors, float).unwrap(),
    }
    bytes
}

#[test]
fn texts_longer_than_the_context_are_scored_in_windows() {
    let text = story_text();
    // Int8 with groups of 32 takes runq.c's quantized arithmetic, and the reference does too.
    for format in [
        Format::Legacy,
        Format::Float32V1,
        Format::Int8V2 { group_size: 32 },
    ] {
        let bytes = short_context_model(format);
        let model = Model::from_bytes(bytes.clone())
            .unwrap()
            .with_arithmetic(llama2::Arithmetic::Exact);
        let result = evaluate(&model, &tok(), &text).unwrap();
        let (tokens, loss) = reference_loss(&bytes, &tok(), &text);
        assert!(tokens > 8 * model.config().seq_len);
        assert_eq!(result.tokens, tokens);
        assert!(
            (result.loss - loss).abs() < LOSS_TOLERANCE,
            "{format:?}: {} vs {loss}",
            result.loss
        );
    }
}

#[test]
fn eval_mode_reads_the_text_from_the_flag_or_stdin() {
    let text = story_text();
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let expected = evaluate(&model, &tok(), &text).unwrap();
    let line = format!(
        "tokens {}, loss {:.4} nats, perplexity {:.4}\n",
        expected.tokens,
        expected.loss,
        expected.loss.exp()
    );
    let (model, tok) = (stories260k(), tok512());
    let base = [
        model.as_os_str(),
        "-z".as_ref(),
        tok.as_os_str(),
        "-m".as_ref(),
        "eval".as_ref(),
        "--exact".as_ref(),
    ];
    let from_stdin = llama2(&base, &text);
    assert!(from_stdin.status.success());
    assert_eq!(String::from_utf8_lossy(&from_stdin.stdout), line);
    let mut with_flag = base.to_vec();
    let text_arg = std::ffi::OsString::from(String::from_utf8(text).unwrap());
    with_flag.extend(["-i".as_ref(), text_arg.as_os_str()]);
    let from_flag = llama2(&with_flag, b"");
    assert_eq!(String::from_utf8_lossy(&from_flag.stdout), line);

    assert_clean_failure(&llama2(&base, b""), "nothing to evaluate");
}
