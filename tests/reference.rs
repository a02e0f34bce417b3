//! `llama2::reference` on its own: driven by llama2.c's generation loop, its logits print
//! llama2.c's expected texts, so a formula wrong in the reference (the RMSNorm epsilon, the RoPE
//! base, the attention scale) is caught independently of the fast path that is held to it.
//! Its reader takes all three formats and refuses broken files with an error, never a panic.

mod common;

use common::*;
use llama2::reference::{self, forward, KvCache, Weights};
use llama2::tokenizer::printable;
use llama2::{Sampler, Tokenizer};

/// `run.c`'s `generate`: encode the prompt with BOS, force the prompt tokens, sample the rest
/// from the reference logits, stop at BOS or after `steps` positions, print what `safe_printf`
/// prints, then a newline.
fn generate(weights: &Weights, sampler: &mut Sampler, prompt: &[u8], steps: usize) -> Vec<u8> {
    let tokenizer = Tokenizer::open(tok512(), weights.config.vocab_size).unwrap();
    let prompt = tokenizer.encode(prompt, true, false).unwrap();
    let seq_len = weights.config.seq_len;
    let steps = if steps == 0 || steps > seq_len {
        seq_len
    } else {
        steps
    };
    let mut cache = KvCache::new(&weights.config);
    let mut out = Vec::new();
    let mut token = prompt[0];
    for pos in 0..steps {
        let mut logits = forward(weights, &mut cache, token, pos).unwrap().logits;
        let next = match prompt.get(pos + 1) {
            Some(&forced) => forced,
            None => sampler.sample(&mut logits),
        };
        if next == 1 {
            break;
        }
        out.extend_from_slice(printable(tokenizer.decode(token, next).unwrap()));
        token = next;
    }
    out.push(b'\n');
    out
}

fn stories260k_weights() -> Weights {
    reference::parse(&std::fs::read(stories260k()).unwrap()).unwrap()
}

fn expected(file: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(repo(file)).unwrap()).into_owned()
}

/// The reference's text for run.c's flags `-t temperature -p top_p -s seed -n steps -i prompt`
/// on stories260K, against llama2.c's output in tests/expected/.
fn check_story(flags: (f32, f32, u64, usize), prompt: &[u8], file: &str) {
    let (temperature, top_p, seed, steps) = flags;
    let mut sampler = Sampler::new(temperature, top_p, seed).unwrap();
    let text = generate(&stories260k_weights(), &mut sampler, prompt, steps);
    let wanted = expected(&format!("tests/expected/{file}"));
    assert_eq!(String::from_utf8_lossy(&text), wanted, "{file}");
}

#[test]
fn reference_logits_tell_llama2c_stories() {
    check_story((0.0, 0.9, 0, 200), b"", "stories260K_t0.0_n200.txt");
    check_story(
        (1.0, 0.9, 133742, 256),
        b"",
        "stories260K_t1.0_p0.9_s133742.txt",
    );
    check_story(
        (0.0, 0.9, 0, 20),
        b"a\xff\xfe b",
        "stories260K_invalid_utf8_prompt.txt",
    );
}

#[test]
fn reference_int8_logits_tell_runq_stories() {
    // Groups of 4 divide every row: runq.c's arithmetic (tests/fixtures/runq/README.md).
    let bytes = std::fs::read(repo("tests/fixtures/runq/stories260K-q80-gs4.bin")).unwrap();
    let weights = reference::parse(&bytes).unwrap();
    let mut greedy = Sampler::new(0.0, 0.9, 0).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&generate(&weights, &mut greedy, b"", 200)),
        expected("tests/fixtures/runq/expected/stories_t0_n200.txt")
    );
    let mut top_p = Sampler::new(1.0, 0.9, 133742).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&generate(&weights, &mut top_p, b"", 256)),
        expected("tests/fixtures/runq/expected/stories_t1_p0.9_s133742.txt")
    );
}

#[test]
fn all_three_formats_give_the_same_weights() {
    let legacy = stories260k_weights();
    let v1 = reference::parse(&stories260k_v1_bytes()).unwrap();
    assert_eq!(legacy, v1);
    // llama2.c's own int8 export: the same shapes, weights within a quantization step.
    let int8 = reference::parse(&std::fs::read(stories260k_q8()).unwrap()).unwrap();
    assert_eq!(int8.config, legacy.config);
    assert_eq!(int8.final_norm, legacy.final_norm);
    let worst = int8
        .token_embedding
        .iter()
        .zip(&legacy.token_embedding)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(0.0 < worst && worst < 0.01, "{worst}");
}

#[test]
fn attention_weights_are_causal_distributions() {
    let weights = stories260k_weights();
    let c = weights.config;
    let mut cache = KvCache::new(&c);
    for (pos, token) in [1u32, 403, 407, 261].into_iter().enumerate() {
        let out = forward(&weights, &mut cache, token, pos).unwrap();
        assert_eq!(out.attention.len(), c.n_layers);
        for layer in &out.attention {
            assert_eq!(layer.len(), c.n_heads);
            for head in layer {
                assert_eq!(head.len(), pos + 1);
                let sum: f32 = head.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{sum}");
            }
        }
    }
    // The first position can only attend to itself.
    let first = forward(&weights, &mut cache, 1, 0).unwrap();
    assert!(first.attention.iter().flatten().all(|head| head == &[1.0]));
}

#[test]
fn bad_tokens_positions_and_files_are_errors() {
    let weights = stories260k_weights();
    let mut cache = KvCache::new(&weights.config);
    assert!(forward(&weights, &mut cache, 512, 0).is_err());
    assert!(forward(&weights, &mut cache, 1, 512).is_err());
    assert!(
        forward(&weights, &mut cache, 1, 1).is_err(),
        "position 0 was never run"
    );
    forward(&weights, &mut cache, 1, 0).unwrap();
    forward(&weights, &mut cache, 1, 1).unwrap();
    assert_eq!(cache.positions(), 2);

    let files = [
        std::fs::read(stories260k()).unwrap(),
        stories260k_v1_bytes(),
        std::fs::read(stories260k_q8()).unwrap(),
    ];
    for bytes in &files {
        // Every truncation is an error, and so is a byte too many.
        for len in (0..bytes.len()).step_by(997).chain([bytes.len() - 1]) {
            let err = reference::parse(&bytes[..len]).unwrap_err().to_string();
            assert!(err.starts_with("checkpoint <memory>: "), "{err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(reference::parse(&longer).is_err());
    }
    // Headers that describe impossible or absurd models.
    let mut header = std::fs::read(stories260k()).unwrap();
    for (field, value) in [
        (0, 0i32),
        (3, 3),
        (4, 3),
        (2, -1),
        (0, i32::MAX),
        (6, i32::MIN),
    ] {
        let mut bytes = header.clone();
        bytes[4 * field..4 * field + 4].copy_from_slice(&value.to_le_bytes());
        assert!(reference::parse(&bytes).is_err(), "field {field} = {value}");
    }
    header.truncate(3);
    assert!(reference::parse(&header).is_err());
}

#[test]
fn activations_are_quantized_like_runq() {
    use llama2::reference::quantize;
    // Scale max|x| / 127 = 1: halves round away from zero (C's round), not to even.
    let (q, scales) = quantize(&[127.0, 62.5, -127.0, -0.5, 0.0, 0.0], 2);
    assert_eq!(scales, [1.0, 1.0, 0.0]);
    assert_eq!(q, [127, 63, -127, -1, 0, 0]); // an all-zero group stays zero
}

#[test]
fn straddling_groups_pair_each_value_with_its_own_scale() {
    use llama2::reference::{matmul, Matrix, Q8Matrix};
    // A (2, 3) matrix in groups of 2: row 0 is group 0 and the start of group 1, row 1 the end
    // of group 1 and group 2. runq.c would read only the first group of each row, with the
    // scales of groups 0 and 1.
    let w = Matrix::Q8(Q8Matrix {
        values: vec![1, 2, 3, 4, 5, 6],
        scales: vec![1.0, 10.0, 100.0],
        group_size: 2,
    });
    assert_eq!(
        matmul(&w, &[1.0, 1.0, 1.0], 2),
        [1.0 + 2.0 + 30.0, 40.0 + 1100.0]
    );
}

#[test]
fn rope_rotates_each_pair_by_position_times_its_frequency() {
    use llama2::reference::rope;
    let mut v = [1.0, 0.0, 1.0, 0.0];
    rope(&mut v, 0, 4);
    assert_eq!(v, [1.0, 0.0, 1.0, 0.0]);
    // Position 3, head size 4: pair 0 turns by 3 radians, pair 1 by 3 / 10000^(2/4) = 0.03.
    rope(&mut v, 3, 4);
    let expected = [3.0f32.cos(), 3.0f32.sin(), 0.03f32.cos(), 0.03f32.sin()];
    for (a, b) in v.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6, "{v:?}");
    }
}

#[test]
fn rmsnorm_divides_by_the_root_mean_square_plus_epsilon() {
    let out = llama2::reference::rmsnorm(&[3.0, 4.0], &[1.0, 2.0]);
    let rms = (12.5f64 + 1e-5).sqrt();
    assert!((out[0] as f64 - 3.0 / rms).abs() < 1e-6);
    assert!((out[1] as f64 - 8.0 / rms).abs() < 1e-6);
    // An epsilon of 1e-6 instead would move a tiny vector's result far more than that.
    let tiny = llama2::reference::rmsnorm(&[1e-3], &[1.0]);
    assert!((tiny[0] as f64 - 1e-3 / (1e-6f64 + 1e-5).sqrt()).abs() < 1e-6);
}
