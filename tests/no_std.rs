//! The `no_std` core, driven from a test: built with `--no-default-features`, the library has no
//! operating system and no C maths library (its `exp`, `sqrt`, `sin`, `cos` and `powf` are
//! `llama2::math`'s), and must still tell llama2.c's stories from bytes in memory.
//!
//! Run with `cargo test --no-default-features --test no_std` (`make test` does); with `std`
//! this file is empty, since the other tests cover that build.
#![cfg(not(feature = "std"))]

use llama2::{Generator, Model, Sampler, Tokenizer};

#[repr(C, align(4))]
struct Aligned<T: ?Sized>(T);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!("models/stories260K.bin"));
static TOKENIZER: &[u8] = include_bytes!("models/tok512.bin");

/// The text run.c prints for these settings: the tokens' pieces, then a newline.
fn story(temperature: f32, top_p: f32, seed: u64, steps: usize) -> String {
    let model = Model::from_static(&MODEL.0).unwrap();
    let tokenizer = Tokenizer::from_bytes(TOKENIZER, Some(model.config().vocab_size)).unwrap();
    let sampler = Sampler::new(temperature, top_p, seed).unwrap();
    let mut text = Vec::new();
    for token in Generator::new(&model, &tokenizer, sampler, b"", steps).unwrap() {
        text.extend_from_slice(token.unwrap().printable());
    }
    text.push(b'\n');
    String::from_utf8(text).unwrap()
}

#[test]
fn greedy_story_is_llama2c_s() {
    let expected = include_str!("expected/stories260K_t0.0_n200.txt");
    assert_eq!(story(0.0, 0.9, 1, 200), expected);
}

#[test]
fn sampled_story_is_llama2c_s() {
    // Sampling compares cumulative probabilities with a random number, so this also checks that
    // our exp keeps the softmax close enough to the C library's to pick the same tokens.
    let expected = include_str!("expected/stories260K_t1.0_p0.9_s133742.txt");
    assert_eq!(story(1.0, 0.9, 133742, 256), expected);
}

#[test]
fn the_maths_is_our_own() {
    // Without std the library cannot call the C library; its functions agree with it anyway.
    assert_eq!(llama2::math::sqrt(2.0), 2f32.sqrt());
    assert!((llama2::math::exp(1.0) - 1f32.exp()).abs() <= f32::EPSILON * 3.0);
}
