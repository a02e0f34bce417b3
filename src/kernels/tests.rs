//! The fast kernels against the plain ones, on random inputs of awkward sizes.

use super::*;

/// A small deterministic generator of test values in [-1, 1).
pub(crate) struct TestRng(u64);

impl TestRng {
    pub(crate) fn new(seed: u64) -> TestRng {
        TestRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}

/// Relative closeness allowing for a different summation order over `n` terms.
fn assert_close(fast: &[f32], plain: &[f32], n: usize) {
    let tolerance = 1e-6 * (n as f32).sqrt() * 8.0;
    for (i, (a, b)) in fast.iter().zip(plain).enumerate() {
        let scale = 1.0f32.max(b.abs());
        assert!(
            (a - b).abs() <= tolerance * scale,
            "element {i}: fast {a} vs plain {b} (n = {n})"
        );
    }
}

#[test]
fn matmul_matches_plain() {
    let mut rng = TestRng::new(1);
    for &(rows, cols) in &[
        (1, 1),
        (3, 7),
        (16, 16),
        (17, 33),
        (64, 64),
        (100, 172),
        (300, 288),
        (768, 257),
    ] {
        let w = rng.vec(rows * cols);
        let x = rng.vec(cols);
        let mut fast = vec![0.0; rows];
        let mut slow = vec![0.0; rows];
        matmul(&mut fast, &w, &x);
        plain::matmul(&mut slow, &w, &x);
        assert_close(&fast, &slow, cols);
    }
}

#[test]
fn dot_matches_plain_at_every_length() {
    let mut rng = TestRng::new(2);
    for n in 0..200 {
        let a = rng.vec(n);
        let b = rng.vec(n);
        assert_close(&[dot(&a, &b)], &[plain::dot(&a, &b)], n.max(1));
    }
}

#[test]
fn rms_norm_matches_plain() {
    let mut rng = TestRng::new(3);
    for n in [1, 2, 7, 64, 288, 1000] {
        let x = rng.vec(n);
        let w = rng.vec(n);
        let mut fast = vec![0.0; n];
        let mut slow = vec![0.0; n];
        rms_norm(&mut fast, &x, &w);
        plain::rms_norm(&mut slow, &x, &w);
        assert_close(&fast, &slow, n);
        let mut in_place = x.clone();
        rms_norm_in_place(&mut in_place, &w);
        assert_eq!(in_place, fast);
    }
}

#[test]
fn softmax_matches_plain_and_sums_to_one() {
    let mut rng = TestRng::new(4);
    for n in [1, 2, 5, 512, 32000] {
        let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 20.0).collect();
        let mut fast = x.clone();
        let mut slow = x.clone();
        softmax(&mut fast);
        plain::softmax(&mut slow);
        assert_close(&fast, &slow, n);
        let total: f32 = fast.iter().sum();
        assert!((total - 1.0).abs() < 1e-4);
    }
    let mut big = vec![1000.0f32, 1000.0];
    softmax(&mut big);
    assert_eq!(big, vec![0.5, 0.5]);
}

#[test]
fn rope_matches_run_c_formula_exactly() {
    let mut rng = TestRng::new(5);
    for &(dim, head_dim) in &[(8, 8), (64, 8), (288, 48), (768, 64)] {
        for pos in [0, 1, 7, 255, 1023] {
            let v = rng.vec(dim);
            let mut table = vec![(0.0, 0.0); head_dim / 2];
            rope_table(&mut table, pos, head_dim);
            let mut fast = v.clone();
            rope(&mut fast, &table);
            let mut slow = v.clone();
            plain::rope(&mut slow, pos, head_dim);
            assert_eq!(fast, slow, "dim {dim} head_dim {head_dim} pos {pos}");
        }
    }
}

#[test]
fn swiglu_matches_plain() {
    let mut rng = TestRng::new(6);
    let gate: Vec<f32> = rng.vec(300).iter().map(|v| v * 8.0).collect();
    let up = rng.vec(300);
    let mut fast = gate.clone();
    let mut slow = gate.clone();
    swiglu(&mut fast, &up);
    plain::swiglu(&mut slow, &up);
    assert_close(&fast, &slow, 1);
}

#[test]
fn attention_matches_plain_with_grouped_heads() {
    let mut rng = TestRng::new(7);
    // (n_heads, n_kv_heads, head_dim, positions)
    for &(n_heads, n_kv_heads, head_dim, n_pos) in &[
        (1, 1, 2, 1),
        (8, 4, 8, 5),
        (6, 6, 48, 33),
        (12, 12, 64, 300),
        (8, 1, 16, 17),
    ] {
        let kv_dim = n_kv_heads * head_dim;
        let q = rng.vec(n_heads * head_dim);
        let keys = rng.vec(n_pos * kv_dim);
        let values = rng.vec(n_pos * kv_dim);
        let shape = AttentionShape {
            n_heads,
            kv_mul: n_heads / n_kv_heads,
            head_dim,
            kv_dim,
        };
        let mut fast = vec![0.0; n_heads * head_dim];
        let mut scores = vec![0.0; n_heads * n_pos];
        attention(&mut fast, &q, &keys, &values, &mut scores, n_pos, shape);
        let mut slow = vec![0.0; n_heads * head_dim];
        plain::attention(
            &mut slow,
            &q,
            &keys,
            &values,
            n_pos,
            n_heads,
            n_heads / n_kv_heads,
            head_dim,
        );
        assert_close(&fast, &slow, n_pos.max(head_dim));
    }
}
