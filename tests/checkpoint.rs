//! Loading checkpoints: round trips through every format, and rejection of bad files.

mod common;

use common::*;
use llama2::checkpoint::Format;
use llama2::convert::{write_float, write_int8, FloatTensors};
use llama2::{Error, Generator, Model, Sampler, Tokenizer};

fn story(model: &Model, steps: usize) -> Vec<u8> {
    let tokenizer = Tokenizer::open(tok512(), 512).unwrap();
    let sampler = Sampler::new(0.0, 0.9, 1).unwrap();
    let mut text = Vec::new();
    for token in Generator::new(model, &tokenizer, sampler, b"", steps).unwrap() {
        text.extend_from_slice(token.unwrap().printable());
    }
    text.push(b'\n');
    text
}

fn expected_story() -> Vec<u8> {
    std::fs::read(repo("tests/expected/stories260K_t0.0_n200.txt")).unwrap()
}

#[test]
fn legacy_file_rewritten_is_byte_identical_outside_the_rope_tables() {
    let original = std::fs::read(stories260k()).unwrap();
    let model = Model::from_bytes(original.clone())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let mut written = Vec::new();
    write_float(
        &mut written,
        &FloatTensors::from_model(&model),
        Format::Legacy,
    )
    .unwrap();
    assert_eq!(written.len(), original.len());
    // The two obsolete RoPE tables (seq_len * head_dim floats) sit right before the end.
    let c = model.config();
    let rope_bytes = c.seq_len * c.head_dim() * 4;
    let rope_start = original.len() - rope_bytes;
    assert_eq!(written[..rope_start], original[..rope_start]);
}

#[test]
fn version1_file_tells_the_same_story() {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let v1 = Model::from_bytes(stories260k_v1_bytes())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    assert_eq!(v1.format(), Format::Float32V1);
    assert_eq!(v1.config(), model.config());
    assert_eq!(story(&v1, 200), expected_story());
}

#[test]
fn unshared_classifier_is_read_from_the_end() {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let mut tensors = FloatTensors::from_model(&model);
    tensors.config.shared_classifier = false; // classifier == embedding, stored separately
    for format in [Format::Legacy, Format::Float32V1] {
        let mut bytes = Vec::new();
        write_float(&mut bytes, &tensors, format).unwrap();
        let unshared = Model::from_bytes(bytes)
            .unwrap()
            .with_arithmetic(llama2::Arithmetic::Exact);
        assert!(!unshared.config().shared_classifier);
        assert_eq!(story(&unshared, 200), expected_story(), "{format:?}");
    }
}

#[test]
fn int8_files_load_in_every_alignment() {
    // Memory given at an odd address is copied into aligned storage and still loads.
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let mut bytes = Vec::new();
    write_int8(&mut bytes, &FloatTensors::from_model(&model), 4).unwrap();
    let aligned = Model::from_bytes(bytes.clone())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&bytes);
    let leaked: &'static [u8] = Box::leak(shifted.into_boxed_slice());
    let odd = Model::from_static(&leaked[1..])
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    assert_eq!(story(&aligned, 40), story(&odd, 40));
}

fn checkpoint_error(bytes: Vec<u8>) -> String {
    match Model::from_bytes(bytes) {
        Ok(_) => panic!("a bad checkpoint loaded"),
        Err(e @ Error::Checkpoint { .. }) => e.to_string(),
        Err(other) => panic!("wrong error kind: {other}"),
    }
}

#[test]
fn truncated_or_extended_files_are_rejected() {
    let original = std::fs::read(stories260k()).unwrap();
    for len in [
        0,
        1,
        27,
        28,
        29,
        1000,
        original.len() / 2,
        original.len() - 4,
        original.len() - 1,
    ] {
        let message = checkpoint_error(original[..len].to_vec());
        assert!(message.starts_with("checkpoint <memory>: "), "{message}");
    }
    let mut longer = original.clone();
    longer.extend_from_slice(&[0; 4]);
    assert!(checkpoint_error(longer).contains("header implies"));
}

/// stories260K's header with field `index` (0..7) replaced by `value`.
fn with_field(index: usize, value: i32) -> Vec<u8> {
    let mut bytes = std::fs::read(stories260k()).unwrap();
    bytes[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
    bytes
}

#[test]
fn inconsistent_headers_are_rejected() {
    let cases: &[(usize, i32, &str)] = &[
        (0, 0, "dim is 0"),
        (0, -64, "dim is -64"),
        (0, 1 << 30, "header implies"),
        (0, i32::MAX, "not divisible by n_heads"),
        (1, 0, "hidden_dim is 0"),
        (2, 0, "n_layers is 0"),
        (2, 1 << 30, "header implies"),
        (3, 0, "n_heads is 0"),
        (3, 7, "not divisible by n_heads"),
        (3, 4, "header implies"), // 4 heads: consistent shape, wrong size
        (4, 0, "n_kv_heads is 0"),
        (4, 3, "not a multiple of n_kv_heads"),
        (4, 16, "not a multiple of n_kv_heads"),
        (5, 0, "vocab_size is 0"),
        (5, i32::MIN, "vocab_size"),
        (6, 0, "seq_len is 0"),
        (6, -1, "seq_len is -1"),
        (6, i32::MAX, "header implies"),
        (3, 64, "is odd"), // head size 64 / 64 = 1 cannot hold RoPE pairs
    ];
    for &(index, value, expected) in cases {
        let message = checkpoint_error(with_field(index, value));
        assert!(
            message.contains(expected),
            "field {index} = {value}: {message}"
        );
    }
}

fn versioned(version: i32, group_size: Option<i32>) -> Vec<u8> {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let tensors = FloatTensors::from_model(&model);
    let mut bytes = Vec::new();
    match group_size {
        None => write_float(&mut bytes, &tensors, Format::Float32V1).unwrap(),
        Some(_) => {
            write_int8(&mut bytes, &tensors, 4).unwrap();
        }
    }
    bytes[4..8].copy_from_slice(&version.to_le_bytes());
    if let Some(gs) = group_size {
        bytes[37..41].copy_from_slice(&gs.to_le_bytes());
    }
    bytes
}

#[test]
fn bad_versioned_headers_are_rejected() {
    assert!(checkpoint_error(versioned(3, None)).contains("unsupported version 3"));
    assert!(checkpoint_error(versioned(0, None)).contains("unsupported version 0"));
    let mut flag = versioned(1, None);
    flag[36] = 2;
    assert!(checkpoint_error(flag).contains("shared-classifier flag is 2"));
    assert!(checkpoint_error(versioned(2, Some(0))).contains("group size is 0"));
    assert!(checkpoint_error(versioned(2, Some(-8))).contains("group size is -8"));
    assert!(checkpoint_error(versioned(2, Some(7))).contains("does not divide"));
    assert!(checkpoint_error(versioned(2, Some(8))).contains("header implies"));
    // A version-1 file cut inside its 256-byte header.
    assert!(checkpoint_error(versioned(1, None)[..100].to_vec()).contains("256-byte"));
}

#[test]
fn command_line_reports_bad_checkpoints_in_one_line() {
    let dir = TempDir::new("bad-checkpoints");
    let truncated = dir.path("truncated.bin");
    let original = std::fs::read(stories260k()).unwrap();
    std::fs::write(&truncated, &original[..original.len() / 3]).unwrap();
    let empty = dir.path("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path("missing.bin");
    let tok = tok512();
    for path in [&truncated, &empty, &missing, &dir.0] {
        let output = llama2_str(&[path.to_str().unwrap(), "-z", tok.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{path:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}
