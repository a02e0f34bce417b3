//! Fast arithmetic (the default) against exact arithmetic (`--exact`, llama2.c's bits):
//! logits within a small relative tolerance on every model of the test suite, the same greedy
//! text as llama2.c on the bundled stories260K cases, and the same bits on every instruction set
//! and for any number of threads.

mod common;

use common::*;
use llama2::fast::{self, Kernel};
use llama2::kernels::Kernels;
use llama2::{Arithmetic, Model};

/// How far fast logits may be from exact ones: `max |fast - exact| <= tolerance * max |exact|`
/// over each position's logits.
///
/// Float: each fast dot product of `n` terms rounds differently from run.c's, by at most about
/// `(n / 32 + 5) * 2^-24` of `Σ |w x|` against run.c's `n * 2^-24` (see `src/fast`), so about
/// `1e-6` of a logit for these widths, carried through the layers; measured here: at most
/// `1e-6`. The bound leaves a margin of 10.
///
/// Int8: the activations are quantized to int8 before every product, so a last-bit difference
/// that moves a value across a rounding boundary changes it by a whole quantization step (1/127
/// of its group's largest value): rare, but then the logits move by up to about a percent of a
/// step's share. Measured here: at most `7e-3` (stories260K-q8, groups of 8) after 48
/// positions; the bound leaves a margin of 3, and is still small beside the gap between the best and second-best tokens that a greedy
/// text depends on (the greedy test below holds them to the same text).
const FLOAT_TOLERANCE: f32 = 1e-5;
const INT8_TOLERANCE: f32 = 2e-2;

/// Every model of the suite, with its tolerance.
fn models() -> Vec<(String, Vec<u8>, f32)> {
    let file = |path: std::path::PathBuf| std::fs::read(path).unwrap();
    let runq = |name: &str| file(repo(&format!("tests/fixtures/runq/{name}")));
    vec![
        ("stories260K".into(), file(stories260k()), FLOAT_TOLERANCE),
        (
            "stories260K v1".into(),
            stories260k_v1_bytes(),
            FLOAT_TOLERANCE,
        ),
        (
            "stories260K-q8".into(),
            file(stories260k_q8()),
            INT8_TOLERANCE,
        ),
        (
            "runq gs4".into(),
            runq("stories260K-q80-gs4.bin"),
            INT8_TOLERANCE,
        ),
        (
            "runq gs48".into(),
            runq("random96-q80-gs48.bin"),
            INT8_TOLERANCE,
        ),
    ]
}

/// The largest `|a - b|` relative to the largest `|b|`.
fn relative_difference(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// Feed the exact model's greedy continuation of BOS to both models, one position at a time, and
/// return each position's logits (fast, exact).
fn logits_side_by_side(fast: &Model, exact: &Model, steps: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let (mut fs, mut es) = (fast.new_state().unwrap(), exact.new_state().unwrap());
    let mut token = 1;
    let steps = steps.min(exact.config().seq_len);
    (0..steps)
        .map(|pos| {
            let f = fast.forward(&mut fs, token, pos).unwrap().to_vec();
            let e = exact.forward(&mut es, token, pos).unwrap().to_vec();
            token = argmax(&e);
            (f, e)
        })
        .collect()
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn fast_logits_are_within_tolerance_of_exact_ones_on_every_model() {
    for (name, bytes, tolerance) in models() {
        let fast = Model::from_bytes(bytes.clone()).unwrap();
        assert_eq!(fast.arithmetic(), Arithmetic::Fast, "{name}: the default");
        let exact = Model::from_bytes(bytes)
            .unwrap()
            .with_arithmetic(Arithmetic::Exact);
        let mut worst = (0.0f32, 0);
        let mut differs = false;
        for (pos, (f, e)) in logits_side_by_side(&fast, &exact, 48).iter().enumerate() {
            let d = relative_difference(f, e);
            if d > worst.0 {
                worst = (d, pos);
            }
            differs |= f != e;
        }
        eprintln!(
            "{name}: largest relative difference {:e} (position {})",
            worst.0, worst.1
        );
        assert!(worst.0 <= tolerance, "{name}: {worst:?} > {tolerance}");
        // Fast mode must really be another arithmetic, or this test proves nothing.
        assert!(differs, "{name}: fast logits equal exact ones bit for bit");
    }
}

#[test]
fn every_instruction_set_computes_the_same_fast_bits() {
    for (name, bytes, _) in models() {
        let runs: Vec<_> = fast::Isa::available()
            .into_iter()
            .map(|isa| {
                let kernels = Kernels::fast(Kernel::new(isa));
                let model = Model::from_bytes(bytes.clone())
                    .unwrap()
                    .with_kernels(kernels);
                let exact = Model::from_bytes(bytes.clone()).unwrap();
                let exact = exact.with_arithmetic(Arithmetic::Exact);
                (isa, logits_side_by_side(&model, &exact, 24))
            })
            .collect();
        for (isa, run) in &runs[1..] {
            for (pos, ((f, _), (f0, _))) in run.iter().zip(&runs[0].1).enumerate() {
                assert!(
                    f == f0,
                    "{name} on {isa:?} at {pos}: not {:?}'s bits",
                    runs[0].0
                );
            }
        }
    }
}

#[test]
fn every_fast_kernel_shape_computes_the_same_bits() {
    // The tuner may pick any row count and prefetch distance: all must agree.
    let bytes = std::fs::read(stories260k()).unwrap();
    let reference = Model::from_bytes(bytes.clone()).unwrap();
    let exact = Model::from_bytes(bytes.clone()).unwrap();
    let exact = exact.with_arithmetic(Arithmetic::Exact);
    let expected = logits_side_by_side(&reference, &exact, 16);
    for kernel in fast::tune::candidates(None) {
        let model = Model::from_bytes(bytes.clone())
            .unwrap()
            .with_kernels(Kernels::fast(kernel));
        let got = logits_side_by_side(&model, &exact, 16);
        for (pos, ((f, _), (f0, _))) in got.iter().zip(&expected).enumerate() {
            assert!(f == f0, "{kernel:?} at {pos}");
        }
    }
}
