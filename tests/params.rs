//! Owned parameters: the flat buffer holds the checkpoint's values in checkpoint order, and
//! writing it back out gives the file we read.

mod common;

use common::*;
use llama2::{Format, Model, Params, TensorKind};

/// Little-endian f32s of a byte slice.
fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn flat_buffer_is_the_legacy_file_body() {
    // A legacy file is the header, the tensors in Params order up to the final norm, then two
    // RoPE tables (the classifier is shared in stories260K).
    let bytes = std::fs::read(stories260k()).unwrap();
    let model = Model::from_bytes(bytes.clone())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let params = Params::from_model(&model).unwrap();
    let body = floats(&bytes[28..28 + params.len() * 4]);
    assert!(model.config().shared_classifier);
    assert_eq!(params.data(), &body[..]);
    assert_eq!(params.tensors().last().unwrap().kind, TensorKind::FinalNorm);
}

#[test]
fn params_round_trip_through_a_model_and_a_file() {
    let model = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let params = Params::from_model(&model).unwrap();
    let again = Params::from_model(&params.to_model().unwrap()).unwrap();
    assert_eq!(params.data(), again.data());

    let dir = std::env::temp_dir().join(format!("llama2-params-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.bin");
    params.save(&path, Format::Legacy).unwrap();
    let saved = Params::from_model(
        &Model::open(&path)
            .unwrap()
            .with_arithmetic(llama2::Arithmetic::Exact),
    )
    .unwrap();
    assert_eq!(params.data(), saved.data());
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn int8_models_are_dequantized() {
    let q8 = Model::open(stories260k_q8())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let float = Params::from_model(
        &Model::open(stories260k())
            .unwrap()
            .with_arithmetic(llama2::Arithmetic::Exact),
    )
    .unwrap();
    let params = Params::from_model(&q8).unwrap();
    assert_eq!(params.len(), float.len());
    // Group size 8: each value within half a quantization step (max|group| / 127 / 2).
    let worst = params
        .data()
        .iter()
        .zip(float.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst > 0.0 && worst < 0.01,
        "worst dequantization error {worst}"
    );
    // The norms are stored as floats and come back exactly.
    assert_eq!(
        params.get(TensorKind::FinalNorm, 0),
        float.get(TensorKind::FinalNorm, 0)
    );
}
