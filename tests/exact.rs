//! The forward pass computes exactly what `run.c` computes: the same bits in every logit, at
//! every position, for one token at a time and for batched prompts, on every instruction set the
//! kernels dispatch to. The oracle is `llama2::reference`, which reads the file with its own
//! parser and sums in `run.c`'s order; it shares no code with the fast path.
//!
//! The tolerance is zero, because the bits allow it: every sum in the fast kernels runs in the
//! reference's order (no reassociation, no fused multiply-add), the int8 group sums are exact
//! integers, and both call the same C library for `exp`, `pow`, `sin` and `cos`.
//! Bit-identical logits are what make the sampled text `run.c`'s for every seed and temperature:
//! a token drawn near the boundary between two candidates depends on the last bit.

mod common;

use common::*;
use llama2::checkpoint::{Config, Format};
use llama2::convert::{write_float, write_int8, FloatTensors};
use llama2::model::Logits;
use llama2::Model;

#[track_caller]
fn assert_same_bits(fast: &[f32], reference: &[f32], what: &str) {
    assert_eq!(fast.len(), reference.len());
    let differing = fast
        .iter()
        .zip(reference)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing, 0,
        "{what}: {differing} logits differ in their bits"
    );
}

/// The bytes of a random model in `format`.
fn random_model(config: Config, seed: u64, format: Format) -> Vec<u8> {
    let tensors = FloatTensors::random(config, seed);
    let mut bytes = Vec::new();
    match format {
        Format::Int8V2 { group_size } => {
            write_int8(&mut bytes, &tensors, group_size).unwrap();
        }
        float => write_float(&mut bytes, &tensors, float).unwrap(),
    }
    bytes
}

/// Every position's logits, one token at a time and as one batch, against the reference.
fn check_model(bytes: Vec<u8>, tokens: &[u32], what: &str) {
    let mut oracle = Reference::new(&bytes);
    let model = Model::from_bytes(bytes)
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let model = &model;
    let mut state = model.new_state().unwrap();
    let mut reference = Vec::new();
    for (pos, &token) in tokens.iter().enumerate() {
        let expected = oracle.logits(token, pos);
        let logits = model.forward(&mut state, token, pos).unwrap();
        assert_same_bits(logits, &expected, &format!("{what}, position {pos}"));
        reference.push(expected);
    }
    let mut batch_state = model.new_state().unwrap();
    let all = model
        .forward_batch(&mut batch_state, tokens, 0, Logits::All)
        .unwrap();
    let vocab = model.config().vocab_size;
    for (pos, expected) in reference.iter().enumerate() {
        let batched = &all[pos * vocab..(pos + 1) * vocab];
        assert_same_bits(
            batched,
            expected,
            &format!("{what}, batched position {pos}"),
        );
    }
}

#[test]
fn stories260k_logits_are_run_c_bits() {
    let tokens: Vec<u32> = (0..70).map(|i| 1 + (i * 37 % 511) as u32).collect();
    check_model(
        std::fs::read(stories260k()).unwrap(),
        &tokens,
        "stories260K",
    );
}

#[test]
fn int8_logits_are_the_reference_bits() {
    let tokens: Vec<u32> = (0..40).map(|i| 1 + (i * 37 % 511) as u32).collect();
    // Groups aligned with rows: runq.c's arithmetic (gs 4), and groups that cross the 64-byte
    // SIMD chunks (gs 48).
    let runq = |file: &str| std::fs::read(repo(&format!("tests/fixtures/runq/{file}"))).unwrap();
    check_model(runq("stories260K-q80-gs4.bin"), &tokens, "stories260K gs 4");
    check_model(runq("random96-q80-gs48.bin"), &tokens, "random96 gs 48");
    // Groups of 8 straddling the rows of w2 (hidden_dim 172): llama2.c's own export.
    check_model(
        std::fs::read(stories260k_q8()).unwrap(),
        &tokens,
        "stories260K gs 8",
    );
}

#[test]
fn logits_are_run_c_bits_for_wide_heads_and_grouped_queries() {
    // Heads of 48 and 64 values (as in the 15M and 110M models), rows of 2048 values (which
    // take the cache-friendly path on AVX-512), grouped and multi-query attention.
    for (dim, hidden, heads, kv_heads) in [(96, 256, 2, 1), (128, 2048, 2, 2), (192, 160, 4, 2)] {
        let config = Config {
            dim,
            hidden_dim: hidden,
            n_layers: 2,
            n_heads: heads,
            n_kv_heads: kv_heads,
            vocab_size: 300,
            seq_len: 48,
            shared_classifier: false,
        };
        let bytes = random_model(config, dim as u64, Format::Float32V1);
        let tokens: Vec<u32> = (0..40).map(|i| (i * 7919 % 300) as u32).collect();
        check_model(
            bytes,
            &tokens,
            &format!("dim {dim}, hidden {hidden}, {heads}/{kv_heads} heads"),
        );
    }
}

#[test]
fn logits_are_run_c_bits_when_rows_are_split_over_threads() {
    // dim 288 (the stories15M shape): every matrix has more than MIN_PARALLEL_WORK (65536)
    // multiply-adds, so with the `parallel` feature its rows run on several threads.
    let config = Config {
        dim: 288,
        hidden_dim: 768,
        n_layers: 2,
        n_heads: 6,
        n_kv_heads: 3,
        vocab_size: 320,
        seq_len: 32,
        shared_classifier: true,
    };
    let tokens: Vec<u32> = (0..24).map(|i| (i * 7919 % 320) as u32).collect();
    let float = random_model(config, 288, Format::Legacy);
    check_model(float, &tokens, "dim 288 float");
    let int8 = random_model(config, 288, Format::Int8V2 { group_size: 32 });
    check_model(int8, &tokens, "dim 288 int8");
}
