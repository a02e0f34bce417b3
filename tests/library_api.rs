//! The library as a program embedding it sees it: loading from paths or memory, generating
//! tokens or text, and every public entry point answering bad arguments with an error, not a
//! panic.

mod common;

use std::borrow::Cow;

use common::*;
use llama2::checkpoint::Format;
use llama2::convert::{write_float, write_int8, FloatTensors};
use llama2::{evaluate, Chat, Config, Error, Generator, Model, Sampler, Tokenizer};

fn model() -> Model {
    Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact)
}

fn tokenizer() -> Tokenizer {
    Tokenizer::open(tok512(), 512).unwrap()
}

fn greedy() -> Sampler {
    Sampler::new(0.0, 0.9, 1).unwrap()
}

/// What stories260K prints at temperature 0 for 200 steps (llama2.c's own expected text).
fn expected_story() -> String {
    std::fs::read_to_string(repo("tests/expected/stories260K_t0.0_n200.txt")).unwrap()
}

fn story_text(model: &Model, tokenizer: &Tokenizer, steps: usize) -> String {
    Generator::new(model, tokenizer, greedy(), b"", steps)
        .unwrap()
        .text()
        .collect::<llama2::Result<String>>()
        .unwrap()
}

#[test]
fn models_and_tokenizers_load_from_paths_or_memory_alike() {
    let from_path = (model(), tokenizer());
    let model_bytes = std::fs::read(stories260k()).unwrap();
    let tok_bytes = std::fs::read(tok512()).unwrap();
    let from_vec = (
        Model::from_bytes(model_bytes.clone())
            .unwrap()
            .with_arithmetic(llama2::Arithmetic::Exact),
        Tokenizer::from_bytes(&tok_bytes, Some(512)).unwrap(),
    );
    let leaked: &'static [u8] = Box::leak(model_bytes.into_boxed_slice());
    let from_static = (
        Model::from_static(leaked)
            .unwrap()
            .with_arithmetic(llama2::Arithmetic::Exact),
        Tokenizer::from_bytes(&tok_bytes, None).unwrap(),
    );
    // The text iterator gives llama2.c's story (which has no byte-token characters).
    let expected = expected_story();
    for (model, tokenizer) in [&from_path, &from_vec, &from_static] {
        let text = story_text(model, tokenizer, 200);
        assert_eq!(format!("{text}\n"), expected);
    }
}

#[test]
fn text_puts_characters_spelled_in_byte_tokens_back_together() {
    // tok512 has no "😀": it is encoded as four byte tokens, one per UTF-8 byte. The prompt comes
    // back whole from the text iterator, while the run.c-style printable bytes drop the emoji.
    let (model, tokenizer) = (model(), tokenizer());
    let prompt = "Zoé saw a 😀 dog";
    let ids = tokenizer.encode(prompt.as_bytes(), true, false).unwrap();
    assert!(
        ids.contains(&(0xF0 + 3)),
        "the emoji is spelled in byte tokens: {ids:?}"
    );
    let steps = ids.len() + 5;
    let text: String = Generator::new(&model, &tokenizer, greedy(), prompt.as_bytes(), steps)
        .unwrap()
        .text()
        .collect::<llama2::Result<String>>()
        .unwrap();
    assert!(text.starts_with(prompt), "{text:?}");
    let printable: Vec<u8> = Generator::new(&model, &tokenizer, greedy(), prompt.as_bytes(), steps)
        .unwrap()
        .flat_map(|t| t.unwrap().printable().to_vec())
        .collect();
    assert!(String::from_utf8_lossy(&printable).starts_with("Zoé saw a  dog"));
}

#[test]
fn steps_zero_means_the_whole_context_and_too_many_are_capped() {
    let (model, tokenizer) = (model(), tokenizer());
    for (steps, expected) in [(0, 512), (1, 1), (512, 512), (513, 512), (usize::MAX, 512)] {
        let generator = Generator::new(&model, &tokenizer, greedy(), b"", steps).unwrap();
        assert_eq!(generator.steps(), expected, "steps {steps}");
    }
}

#[test]
fn steps_shorter_than_the_prompt_yield_only_prompt_tokens() {
    let (model, tokenizer) = (model(), tokenizer());
    let prompt = b"Once upon a time there was a girl";
    let generator = Generator::new(&model, &tokenizer, greedy(), prompt, 4).unwrap();
    let ids = generator.prompt_tokens().to_vec();
    let tokens: Vec<_> = generator.map(|t| t.unwrap()).collect();
    assert_eq!(tokens.len(), 4);
    assert!(tokens.iter().all(|t| t.from_prompt));
    assert_eq!(tokens.iter().map(|t| t.id).collect::<Vec<_>>(), ids[1..5]);
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error() {
    let (model, tokenizer) = (model(), tokenizer());
    let prompt = "word ".repeat(200); // 601 tokens after BOS
    match Generator::new(&model, &tokenizer, greedy(), prompt.as_bytes(), 0) {
        Err(Error::InvalidInput(message)) => assert!(message.contains("512-position"), "{message}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a prompt longer than the context was accepted"),
    }
    // A prompt of exactly the context is fine: 170 words and a space are 511 tokens, 512 with BOS.
    let fits = "word ".repeat(170);
    let ids = tokenizer.encode(fits.as_bytes(), true, false).unwrap();
    assert_eq!(ids.len(), 512);
    let tokens: Vec<_> = Generator::new(&model, &tokenizer, greedy(), fits.as_bytes(), 0)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    // 511 prompt tokens, then the one the last position predicts.
    assert_eq!(tokens.len(), 512);
    assert!(tokens[510].from_prompt && !tokens[511].from_prompt);
}

#[test]
fn chat_refuses_a_message_longer_than_the_context_and_goes_on() {
    let (model, tokenizer) = (model(), tokenizer());
    let mut chat = Chat::new(&model, &tokenizer, greedy(), 64).unwrap();
    let mut said = Vec::new();
    let long = "word ".repeat(200); // 601 tokens, more than the model's 512 positions
    let refused = chat.turn(b"", long.as_bytes(), |bytes| said.extend_from_slice(bytes));
    assert!(matches!(refused, Err(Error::InvalidInput(_))));
    assert!(said.is_empty() && chat.is_first_turn(), "nothing ran");
    chat.turn(b"", b"Hi", |bytes| said.extend_from_slice(bytes))
        .unwrap();
    assert!(!chat.is_first_turn());
    // A message longer than what is left of the conversation runs until it is full, as in run.c.
    let mut short = Chat::new(&model, &tokenizer, greedy(), 8).unwrap();
    let mut said = Vec::new();
    let message = "word ".repeat(30);
    short
        .turn(b"", message.as_bytes(), |bytes| {
            said.extend_from_slice(bytes)
        })
        .unwrap();
    assert!(short.is_finished() && said.is_empty());
}

#[test]
fn tokenizer_lookups_by_id_are_total() {
    let tokenizer = tokenizer();
    assert_eq!(tokenizer.piece(0), Some(&b"<unk>"[..]));
    assert_eq!(tokenizer.piece(511).map(<[u8]>::len), Some(3));
    assert_eq!(tokenizer.piece(512), None);
    assert_eq!(tokenizer.piece(u32::MAX), None);
    assert_eq!(tokenizer.score(512), None);
    assert_eq!(tokenizer.score(u32::MAX), None);
    assert!(tokenizer.decode(1, 512).is_err());
    assert!(tokenizer.decode(u32::MAX, 5).is_ok()); // any previous token will do
    assert_eq!(tokenizer.decode(1, 0x41 + 3).unwrap(), b"A"); // byte token <0x41>
}

#[test]
fn forward_refuses_bad_tokens_positions_and_foreign_states() {
    let model = model();
    let mut state = model.new_state_with_capacity(4).unwrap();
    assert_eq!(state.capacity(), 4);
    assert!(model.forward(&mut state, 512, 0).is_err());
    assert!(model.forward(&mut state, u32::MAX, 0).is_err());
    assert!(
        model.forward(&mut state, 1, 1).is_err(),
        "skipping position 0"
    );
    for pos in 0..4 {
        model.forward(&mut state, 1, pos).unwrap();
    }
    assert!(model.forward(&mut state, 1, 4).is_err(), "beyond capacity");
    assert!(model.forward(&mut state, 1, usize::MAX).is_err());
    // Rewinding to an earlier position is allowed.
    model.forward(&mut state, 1, 2).unwrap();
    assert_eq!(state.len(), 3);

    // A state made by a model of another shape is refused; one of the same shape is fine.
    let mut config = *model.config();
    config.n_layers = 2;
    let other = random_model(config);
    let mut foreign = other.new_state().unwrap();
    assert!(matches!(
        model.forward(&mut foreign, 1, 0),
        Err(Error::InvalidInput(_))
    ));
    let q8 = Model::open(stories260k_q8())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let mut same_shape = q8.new_state().unwrap();
    assert_eq!(model.forward(&mut same_shape, 1, 0).unwrap().len(), 512);
}

fn random_model(config: Config) -> Model {
    let mut bytes = Vec::new();
    write_float(
        &mut bytes,
        &FloatTensors::random(config, 7),
        Format::Float32V1,
    )
    .unwrap();
    Model::from_bytes(bytes)
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact)
}

#[test]
fn weights_are_visible_layer_by_layer() {
    let model = model();
    let layers: Vec<_> = model.layers().collect();
    assert_eq!(layers.len(), 5);
    assert_eq!(layers[4].w1.rows(), 172);
    assert_eq!(layers[4].w1.cols(), 64);
    assert_eq!(model.token_embedding().rows(), 512);
}

#[test]
fn sampling_any_logits_gives_an_index() {
    for (temperature, top_p) in [(0.0, 0.9), (1.0, 0.9), (1.0, 1.0), (0.5, 0.0)] {
        let mut sampler = Sampler::new(temperature, top_p, 3).unwrap();
        assert_eq!(sampler.sample(&mut []), 0);
        assert_eq!(sampler.sample(&mut [1.0]), 0);
        for logits in [
            vec![f32::NAN; 5],
            vec![f32::INFINITY, 0.0, f32::NEG_INFINITY],
            vec![f32::NEG_INFINITY; 4],
            vec![f32::MAX, f32::MAX, -f32::MAX],
        ] {
            let n = logits.len();
            let id = sampler.sample(&mut logits.clone()) as usize;
            assert!(id < n, "t={temperature} p={top_p} {logits:?} gave {id}");
        }
    }
}

#[test]
fn vocabularies_must_match_and_have_bos_and_eos() {
    let (model, tokenizer) = (model(), tokenizer());
    let llama = Tokenizer::open(llama_tokenizer(), 32000).unwrap();
    assert!(Generator::new(&model, &llama, greedy(), b"", 8).is_err());
    assert!(Chat::new(&model, &llama, greedy(), 8).is_err());
    assert!(evaluate(&model, &llama, b"hello").is_err());
    // A two-token vocabulary has no EOS: nothing can run on it.
    let mut config = *model.config();
    config.vocab_size = 2;
    let tiny = random_model(config);
    let tiny_tok = Tokenizer::from_bytes(&std::fs::read(tok512()).unwrap(), Some(2)).unwrap();
    match Generator::new(&tiny, &tiny_tok, greedy(), b"", 8) {
        Err(e @ Error::Checkpoint { .. }) => assert!(e.to_string().contains("BOS and EOS")),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a model without EOS was run"),
    }
    assert!(
        evaluate(&model, &tokenizer, b"").is_err(),
        "nothing to score"
    );
}

#[test]
fn errors_are_one_line_and_name_their_source() {
    let errors = [
        Model::from_bytes(vec![0; 10]).err().unwrap(),
        Model::open("/nonexistent/model.bin").err().unwrap(),
        Tokenizer::from_bytes(b"\x07\0\0\0", Some(512))
            .err()
            .unwrap(),
        Tokenizer::open("/nonexistent/tok.bin", 512).err().unwrap(),
        Sampler::new(-1.0, 0.9, 1).err().unwrap(),
    ];
    let names = [
        "<memory>",
        "/nonexistent/model.bin",
        "<memory>",
        "/nonexistent/tok.bin",
        "temperature",
    ];
    for (error, name) in errors.iter().zip(names) {
        let message = error.to_string();
        assert!(
            !message.contains('\n') && message.contains(name),
            "{message}"
        );
    }
}

#[test]
fn writers_refuse_what_is_not_a_checkpoint() {
    let model = model();
    let tensors = FloatTensors::from_model(&model);
    let mut sink = Vec::new();
    fn kind<T>(result: std::io::Result<T>) -> Option<std::io::ErrorKind> {
        result.err().map(|e| e.kind())
    }
    let invalid = Some(std::io::ErrorKind::InvalidInput);
    assert_eq!(
        kind(write_float(
            &mut sink,
            &tensors,
            Format::Int8V2 { group_size: 8 }
        )),
        invalid
    );
    assert_eq!(kind(write_int8(&mut sink, &tensors, 0)), invalid);
    assert_eq!(kind(write_int8(&mut sink, &tensors, 7)), invalid);
    let mut short = tensors.clone();
    short.layers[3].w2 = Cow::Owned(vec![0.0; 10]);
    assert_eq!(
        kind(write_float(&mut sink, &short, Format::Legacy)),
        invalid
    );
    let mut fewer = tensors.clone();
    fewer.layers.pop();
    assert_eq!(kind(write_int8(&mut sink, &fewer, 8)), invalid);
    assert!(sink.is_empty(), "nothing was written");
    // A config with no heads has no head width, rather than a division by zero.
    let mut config = *model.config();
    config.n_heads = 0;
    config.n_kv_heads = 0;
    assert_eq!((config.head_dim(), config.kv_mul()), (0, 0));
}
