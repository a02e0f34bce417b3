//! Batched prompt processing ([`Model::forward_batch`]) against feeding the same tokens one at a
//! time with [`Model::forward`]: the logits must be equal bit for bit, whatever the batch size,
//! start position or model shape, and what `Generator`, `Chat` and `evaluate` produce (which
//! batch their prompts) must equal run.c's loops written out one position at a time.

mod common;

use common::*;
use llama2::convert::{self, FloatTensors};
use llama2::tokenizer::{self, BOS, EOS};
use llama2::{evaluate, Chat, Config, Format, Generator, Logits, Model, Sampler, Tokenizer};

/// A random float model of the given shape, built in memory.
fn random_model(config: Config, seed: u64, format: Format) -> Model {
    let tensors = FloatTensors::random(config, seed);
    let mut bytes = Vec::new();
    match format {
        Format::Int8V2 { group_size } => {
            convert::write_int8(&mut bytes, &tensors, group_size).unwrap();
        }
        _ => convert::write_float(&mut bytes, &tensors, format).unwrap(),
    }
    Model::from_bytes(bytes)
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact)
}

fn config(dim: usize, hidden: usize, layers: usize, heads: usize, kv_heads: usize) -> Config {
    Config {
        dim,
        hidden_dim: hidden,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: kv_heads,
        vocab_size: 97,
        seq_len: 200,
        shared_classifier: false,
    }
}

fn tokens(n: usize, vocab: usize, seed: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 31 + seed * 7 + 3) % vocab) as u32)
        .collect()
}

/// Logits of every position, fed one token at a time.
fn one_at_a_time(model: &Model, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut state = model.new_state().unwrap();
    tokens
        .iter()
        .enumerate()
        .map(|(pos, &t)| model.forward(&mut state, t, pos).unwrap().to_vec())
        .collect()
}

/// Run `prompt` as one batch with every position's logits, and hold each row to the logits of
/// feeding the tokens one at a time.
fn assert_batch_equals_one_at_a_time(model: &Model, prompt: &[u32], what: &str) {
    let reference = one_at_a_time(model, prompt);
    let mut state = model.new_state().unwrap();
    let vocab_size = model.config().vocab_size;
    let all = model
        .forward_batch(&mut state, prompt, 0, Logits::All)
        .unwrap();
    for (pos, row) in all.chunks_exact(vocab_size).enumerate() {
        assert_bit_equal(row, &reference[pos], &format!("{what}, position {pos}"));
    }
    let last = reference.last().unwrap();
    assert_bit_equal(
        state.logits(),
        last,
        &format!("{what}: State::logits after Logits::All"),
    );
    assert_eq!(state.len(), prompt.len());
}

fn assert_bit_equal(batched: &[f32], single: &[f32], what: &str) {
    assert_eq!(batched.len(), single.len(), "{what}: lengths differ");
    for (i, (a, b)) in batched.iter().zip(single).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "{what}: logit {i}: {a} vs {b}");
    }
}

/// Shapes with grouped-query attention, widths that are not multiples of any vector width,
/// one head, and more positions than one internal batch chunk.
#[test]
fn batched_logits_equal_one_at_a_time_bit_for_bit() {
    let shapes = [
        config(64, 172, 2, 8, 4),
        config(48, 100, 1, 3, 3),
        config(40, 72, 2, 1, 1),
        config(96, 256, 1, 6, 2),
    ];
    for (s, &c) in shapes.iter().enumerate() {
        let model = random_model(c, s as u64 + 1, Format::Legacy);
        let prompt = tokens(150, c.vocab_size, s);
        assert_batch_equals_one_at_a_time(&model, &prompt, &format!("shape {s}"));
    }
}

/// A batch can start after positions already in the cache (a second chat turn), and only the
/// last logits may be asked for.
#[test]
fn batches_continue_from_any_position() {
    let c = config(64, 172, 2, 8, 4);
    let model = random_model(c, 9, Format::Legacy);
    let all_tokens = tokens(120, c.vocab_size, 5);
    let reference = one_at_a_time(&model, &all_tokens);
    for split in [1, 7, 64, 100] {
        let mut state = model.new_state().unwrap();
        for (pos, &t) in all_tokens[..split].iter().enumerate() {
            model.forward(&mut state, t, pos).unwrap();
        }
        let last = model
            .forward_batch(&mut state, &all_tokens[split..], split, Logits::Last)
            .unwrap();
        assert_bit_equal(last, &reference[119], &format!("split at {split}"));
        // One more token, one at a time, sees the batch's keys and values.
        let next = model.forward(&mut state, 3, 120).unwrap().to_vec();
        let mut reference_state = model.new_state().unwrap();
        for (pos, &t) in all_tokens.iter().enumerate() {
            model.forward(&mut reference_state, t, pos).unwrap();
        }
        let expected = model.forward(&mut reference_state, 3, 120).unwrap();
        assert_bit_equal(&next, expected, &format!("after split at {split}"));
    }
}

#[test]
fn int8_batches_equal_one_at_a_time() {
    let c = config(64, 128, 2, 8, 4);
    let model = random_model(c, 3, Format::Int8V2 { group_size: 32 });
    let prompt = tokens(70, c.vocab_size, 1);
    assert_batch_equals_one_at_a_time(&model, &prompt, "int8");
}

#[test]
fn bad_batches_are_errors_and_leave_the_state_alone() {
    let c = config(64, 172, 1, 8, 4);
    let model = random_model(c, 4, Format::Legacy);
    let mut state = model.new_state().unwrap();
    model
        .forward_batch(&mut state, &[1, 2, 3], 0, Logits::Last)
        .unwrap();
    assert!(model
        .forward_batch(&mut state, &[], 3, Logits::Last)
        .is_err());
    assert!(model
        .forward_batch(&mut state, &[1, 97], 3, Logits::Last)
        .is_err());
    assert!(model
        .forward_batch(&mut state, &[1], 5, Logits::Last)
        .is_err());
    let too_many = tokens(198, c.vocab_size, 0);
    assert!(model
        .forward_batch(&mut state, &too_many, 3, Logits::Last)
        .is_err());
    assert_eq!(state.len(), 3);
}

#[test]
fn stories260k_batched_logits_equal_one_at_a_time() {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let prompt = tokens(300, 512, 2);
    assert_batch_equals_one_at_a_time(&model, &prompt, "stories260K");
}

/// run.c's `generate` loop written out with one position per forward pass: the token ids after
/// the first, ending at `steps` positions or at BOS.
fn reference_generate(
    model: &Model,
    prompt: &[u32],
    temperature: f32,
    seed: u64,
    steps: usize,
) -> Vec<u32> {
    let mut sampler = Sampler::new(temperature, 0.9, seed).unwrap();
    let mut state = model.new_state().unwrap();
    let mut token = prompt[0];
    let mut out = Vec::new();
    for pos in 0..steps {
        let logits = model.forward(&mut state, token, pos).unwrap();
        let next = if pos + 1 < prompt.len() {
            prompt[pos + 1]
        } else {
            sampler.sample(logits)
        };
        if next == BOS {
            break;
        }
        out.push(next);
        token = next;
    }
    out
}

#[test]
fn generator_with_batched_prompt_equals_one_at_a_time() {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let prompt = b"Once upon a time, there was a little girl named Lily. She loved to play";
    let ids = tokenizer.encode(prompt, true, false).unwrap();
    assert!(ids.len() > 10);
    for &(temperature, seed, steps) in &[
        (0.0, 1, 200),
        (1.0, 42, 300),
        (0.8, 7, 512),
        (1.0, 3, 5),
        (0.0, 1, ids.len()),
    ] {
        let sampler = Sampler::new(temperature, 0.9, seed).unwrap();
        let generated: Vec<u32> = Generator::new(&model, &tokenizer, sampler, prompt, steps)
            .unwrap()
            .map(|t| t.unwrap().id)
            .collect();
        let expected = reference_generate(&model, &ids, temperature, seed, steps);
        assert_eq!(
            generated, expected,
            "t {temperature} seed {seed} steps {steps}"
        );
    }
}

/// run.c's `chat` loop written out with one position per forward pass, for several turns:
/// the bytes it prints.
fn reference_chat(
    model: &Model,
    tokenizer: &Tokenizer,
    turns: &[&[u8]],
    sampler: Sampler,
    steps: usize,
) -> Vec<u8> {
    let mut sampler = sampler;
    let mut state = model.new_state().unwrap();
    let mut printed = Vec::new();
    let (mut pos, mut next) = (0, 0);
    for (turn, user) in turns.iter().enumerate() {
        if pos >= steps {
            break;
        }
        let mut text = Vec::new();
        if turn == 0 {
            text.extend_from_slice(b"[INST] <<SYS>>\nYou are a storyteller.\n<</SYS>>\n\n");
        } else {
            text.extend_from_slice(b"[INST] ");
        }
        text.extend_from_slice(user);
        text.extend_from_slice(b" [/INST]");
        let prompt = tokenizer.encode(&text, true, false).unwrap();
        let mut used = 0;
        while pos < steps {
            let token = if used < prompt.len() {
                used += 1;
                prompt[used - 1]
            } else {
                next
            };
            let logits = model.forward(&mut state, token, pos).unwrap();
            next = sampler.sample(logits);
            pos += 1;
            if used >= prompt.len() && next != EOS {
                printed.extend_from_slice(tokenizer::printable(
                    tokenizer.decode(token, next).unwrap(),
                ));
            }
            if next == EOS {
                printed.push(b'\n');
            }
            if token == EOS {
                break;
            }
        }
    }
    printed
}

#[test]
fn chat_with_batched_prompts_equals_one_at_a_time() {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let turns: [&[u8]; 3] = [
        b"Tell me a story about a dog and a ball in the park, please.",
        b"What happened next?",
        b"And then?",
    ];
    // (temperature, top-p, seed, steps). At temperature 5 without top-p, seed 17 samples EOS
    // after one of the first message's positions, which run.c answers with a newline.
    let cases = [
        (0.0, 0.9, 1, 512),
        (1.0, 0.9, 5, 512),
        (1.5, 0.9, 9, 300),
        (1.0, 0.9, 2, 40),
        (5.0, 1.0, 17, 512),
    ];
    for (temperature, top_p, seed, steps) in cases {
        let sampler = Sampler::new(temperature, top_p, seed).unwrap();
        let mut chat = Chat::new(&model, &tokenizer, sampler.clone(), steps).unwrap();
        let mut printed = Vec::new();
        for user in turns {
            if chat.is_finished() {
                break;
            }
            chat.turn(b"You are a storyteller.", user, |bytes| {
                printed.extend_from_slice(bytes)
            })
            .unwrap();
        }
        let expected = reference_chat(&model, &tokenizer, &turns, sampler, steps);
        assert_eq!(
            String::from_utf8_lossy(&printed),
            String::from_utf8_lossy(&expected),
            "t {temperature} p {top_p} seed {seed} steps {steps}"
        );
    }
}

#[test]
fn batched_evaluation_equals_one_at_a_time() {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let text = "Once upon a time, there was a little girl named Lily. She loved to play outside. "
        .repeat(40);
    let ids = tokenizer.encode(text.as_bytes(), true, false).unwrap();
    assert!(ids.len() > 512, "the text spans two windows");
    let mut state = model.new_state().unwrap();
    let mut total = 0.0f64;
    for (w, window) in ids[..ids.len() - 1].chunks(512).enumerate() {
        state.reset();
        for (pos, &token) in window.iter().enumerate() {
            let logits = model.forward(&mut state, token, pos).unwrap();
            total += cross_entropy(logits, ids[w * 512 + pos + 1]);
        }
    }
    let result = evaluate(&model, &tokenizer, text.as_bytes()).unwrap();
    assert_eq!(result.tokens, ids.len() - 1);
    assert_eq!(result.loss, total / (ids.len() - 1) as f64);
}

/// `-ln softmax(logits)[target]` in f64, as evaluate computes it.
fn cross_entropy(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}
