//! The forward pass computes exactly what `run.c` computes: the same bits in every logit, at
//! every position, for one token at a time and for batched prompts, on every instruction set the
//! kernels dispatch to. The reference is `run.c`'s forward pass written out plainly from the
//! reference kernels (`tests/common/naive.rs`).
//!
//! Bit-identical logits are what make the sampled text `run.c`'s for every seed and temperature:
//! a token drawn near the boundary between two candidates depends on the last bit.

mod common;

use common::naive::NaiveTransformer;
use common::*;
use llama2::checkpoint::{Config, Format};
use llama2::convert::{write_float, FloatTensors};
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

fn random_model(config: Config, seed: u64) -> Model {
    let mut bytes = Vec::new();
    write_float(
        &mut bytes,
        &FloatTensors::random(config, seed),
        Format::Float32V1,
    )
    .unwrap();
    Model::from_bytes(bytes).unwrap()
}

/// Every position's logits, one token at a time and as one batch, against the naive pass.
fn check_model(model: &Model, tokens: &[u32], what: &str) {
    let mut naive = NaiveTransformer::new(model);
    let mut state = model.new_state().unwrap();
    let mut reference = Vec::new();
    for (pos, &token) in tokens.iter().enumerate() {
        let expected = naive.logits(token, pos);
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
    let model = Model::open(stories260k()).unwrap();
    let tokens: Vec<u32> = (0..70).map(|i| 1 + (i * 37 % 511) as u32).collect();
    check_model(&model, &tokens, "stories260K");
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
        let model = random_model(config, dim as u64);
        let tokens: Vec<u32> = (0..40).map(|i| (i * 7919 % 300) as u32).collect();
        check_model(
            &model,
            &tokens,
            &format!("dim {dim}, hidden {hidden}, {heads}/{kv_heads} heads"),
        );
    }
}
