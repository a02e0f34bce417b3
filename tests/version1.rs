//! Version 1 files checked against one made independently: `tests/fixtures/v1/stories260K-v1.bin`
//! was written by `make_v1.py` (Python, following llama2.c's `export.py`) from the legacy
//! stories260K.bin, so a reader and writer that agree with each other but not with llama2.c
//! fail here.

mod common;

use common::*;
use llama2::{Format, Model};

fn independent_v1() -> Vec<u8> {
    std::fs::read(repo("tests/fixtures/v1/stories260K-v1.bin")).unwrap()
}

#[test]
fn version_1_file_gives_the_legacy_logits() {
    let legacy = Model::open(stories260k())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    let v1 = Model::from_bytes(independent_v1())
        .unwrap()
        .with_arithmetic(llama2::Arithmetic::Exact);
    assert_eq!(v1.format(), Format::Float32V1);
    assert_eq!(v1.config(), legacy.config());
    let (mut a, mut b) = (legacy.new_state().unwrap(), v1.new_state().unwrap());
    for (pos, token) in (0..64).map(|i| 1 + (i * 131 % 511) as u32).enumerate() {
        let expected = legacy.forward(&mut a, token, pos).unwrap().to_vec();
        let logits = v1.forward(&mut b, token, pos).unwrap();
        let same = expected
            .iter()
            .zip(logits)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "position {pos}");
    }
}

#[test]
fn the_reference_reads_the_same_weights_from_both_layouts() {
    let legacy = llama2::reference::parse(&std::fs::read(stories260k()).unwrap()).unwrap();
    let v1 = llama2::reference::parse(&independent_v1()).unwrap();
    assert_eq!(v1, legacy);
}

#[test]
fn our_version_1_writer_writes_the_same_bytes() {
    assert!(stories260k_v1_bytes() == independent_v1());
}
