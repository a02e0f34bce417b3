//! The fast kernels against the plain ones, on random inputs of awkward sizes, on every
//! instruction set this CPU has (each called explicitly, not only the one dispatch picks).

use super::simd::Isa;
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

/// Lengths around every vector width and its multiples.
const AWKWARD: [usize; 14] = [0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 172];

#[test]
fn detected_isa_is_available() {
    assert!(Isa::available().contains(&Isa::detect()));
    assert!(Isa::available().contains(&Isa::Portable));
}

#[test]
fn every_isa_dot_matches_plain() {
    let mut rng = TestRng::new(11);
    for isa in Isa::available() {
        for n in (0..70).chain([100, 172, 288, 1001]) {
            let a = rng.vec(n);
            let b = rng.vec(n);
            let fast = isa.dot(&a, &b);
            assert_close(&[fast], &[plain::dot(&a, &b)], n.max(1));
        }
    }
}

/// Every instruction set sums dot products in the one documented order, so each gives exactly
/// the bits of `plain::dot_in_lanes`.
#[test]
fn every_isa_dot_has_the_documented_bits() {
    let mut rng = TestRng::new(19);
    for isa in Isa::available() {
        for n in (0..70).chain([100, 172, 288, 768, 1001]) {
            let a = rng.vec(n);
            let b = rng.vec(n);
            let expected = plain::dot_in_lanes(&a, &b);
            assert_eq!(
                isa.dot(&a, &b).to_bits(),
                expected.to_bits(),
                "{isa:?} n {n}"
            );
            let mut out = [0.0];
            isa.matvec(&mut out, &a, &b);
            assert_eq!(out[0].to_bits(), expected.to_bits(), "{isa:?} matvec n {n}");
        }
    }
}

#[test]
fn every_isa_matvec_matches_plain() {
    let mut rng = TestRng::new(12);
    for isa in Isa::available() {
        for rows in [1, 2, 5, 17] {
            for cols in AWKWARD {
                let w = rng.vec(rows * cols);
                let x = rng.vec(cols);
                let mut fast = vec![0.0; rows];
                let mut slow = vec![0.0; rows];
                isa.matvec(&mut fast, &w, &x);
                plain::matmul(&mut slow, &w, &x);
                assert_close(&fast, &slow, cols.max(1));
            }
        }
    }
}

/// The batched product must give exactly the matrix-vector product's bits for every element,
/// whatever the tiling leaves over at the edges (rows and batch sizes not multiples of a tile).
#[test]
fn every_isa_matmul_t_equals_matvec_bit_for_bit() {
    let mut rng = TestRng::new(13);
    for isa in Isa::available() {
        for &(rows, m) in &[(1, 1), (3, 2), (4, 6), (5, 7), (9, 13), (33, 20)] {
            for cols in AWKWARD.into_iter().filter(|&c| c > 0) {
                let w = rng.vec(rows * cols);
                let xs = rng.vec(m * cols);
                let mut out_t = vec![0.0; rows * m];
                isa.matmul_t(&mut out_t, &w, &xs, cols);
                for (t, x) in xs.chunks_exact(cols).enumerate() {
                    let mut single = vec![0.0; rows];
                    isa.matvec(&mut single, &w, x);
                    for (i, s) in single.iter().enumerate() {
                        let batched = out_t[i * m + t];
                        assert_eq!(
                            batched.to_bits(),
                            s.to_bits(),
                            "{isa:?}: row {i}, token {t}, {rows}x{cols}, batch {m}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_batch_equals_matmul_bit_for_bit() {
    let mut rng = TestRng::new(14);
    for &(rows, cols, m) in &[(7, 5, 3), (300, 64, 9), (768, 288, 70), (64, 172, 1)] {
        let w = rng.vec(rows * cols);
        let xs = rng.vec(m * cols);
        let mut out = vec![0.0; m * rows];
        let mut scratch = vec![0.0; m * rows];
        matmul_batch(&mut out, &w, &xs, cols, &mut scratch);
        for (x, batched) in xs.chunks_exact(cols).zip(out.chunks_exact(rows)) {
            let mut single = vec![0.0; rows];
            matmul(&mut single, &w, x);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(batched), bits(&single), "{rows}x{cols}, batch {m}");
        }
    }
}

#[test]
fn every_isa_strided_dots_match_plain() {
    let mut rng = TestRng::new(15);
    for isa in Isa::available() {
        for width in [1, 2, 8, 15, 16, 17, 48, 64] {
            for n in [1, 3, 4, 5, 9, 16, 17, 35, 100] {
                let stride = width + 5;
                let rows = rng.vec(n * stride);
                let q = rng.vec(width);
                let mut fast = vec![0.0; n];
                isa.dots_strided(&mut fast, &q, &rows, stride);
                let slow: Vec<f32> = (0..n)
                    .map(|t| plain::dot(&q, &rows[t * stride..t * stride + width]))
                    .collect();
                assert_close(&fast, &slow, width);
                // Same bits as a dot product of each row alone.
                for (t, f) in fast.iter().enumerate() {
                    let single = isa.dot(&q, &rows[t * stride..t * stride + width]);
                    assert_eq!(f.to_bits(), single.to_bits(), "{isa:?} row {t}");
                }
            }
        }
    }
}

#[test]
fn every_isa_weighted_sum_matches_plain() {
    let mut rng = TestRng::new(16);
    for isa in Isa::available() {
        for width in [1, 2, 8, 15, 16, 17, 48, 64] {
            for n in [1, 2, 7, 40] {
                let stride = width + 3;
                let rows = rng.vec(n * stride);
                let weights = rng.vec(n);
                let mut fast = vec![f32::NAN; width];
                isa.weighted_sum_strided(&mut fast, &weights, &rows, stride);
                let slow: Vec<f32> = (0..width)
                    .map(|j| (0..n).map(|t| weights[t] * rows[t * stride + j]).sum())
                    .collect();
                assert_close(&fast, &slow, n);
            }
        }
    }
}

/// The vector maximum finds what the in-order scan finds, NaNs included.
#[test]
fn every_isa_max_equals_the_in_order_scan() {
    let scan = |x: &[f32]| {
        x.iter()
            .skip(1)
            .fold(x.first().copied().unwrap_or(f32::NEG_INFINITY), |m, &v| {
                if v > m {
                    v
                } else {
                    m
                }
            })
    };
    let mut rng = TestRng::new(20);
    for isa in Isa::available() {
        for n in [0, 1, 2, 15, 16, 17, 33, 512, 1000] {
            let mut x: Vec<f32> = rng.vec(n).iter().map(|v| v * 50.0).collect();
            assert_eq!(isa.max(&x).to_bits(), scan(&x).to_bits(), "{isa:?} n {n}");
            if n > 2 {
                x[n / 2] = f32::NAN;
                assert_eq!(
                    isa.max(&x).to_bits(),
                    scan(&x).to_bits(),
                    "{isa:?} NaN inside"
                );
                x[0] = f32::NAN;
                assert!(
                    isa.max(&x).is_nan() && scan(&x).is_nan(),
                    "{isa:?} NaN first"
                );
            }
        }
    }
}

#[test]
fn matmul_each_equals_separate_matmuls() {
    let mut rng = TestRng::new(18);
    for &(rows_a, rows_b, cols) in &[(3, 5, 7), (768, 256, 288), (2048, 2048, 64)] {
        let (wa, wb) = (rng.vec(rows_a * cols), rng.vec(rows_b * cols));
        let x = rng.vec(cols);
        let (mut a, mut b) = (vec![0.0; rows_a], vec![0.0; rows_b]);
        matmul_each([&mut a, &mut b], [&wa, &wb], &x);
        let (mut a1, mut b1) = (vec![0.0; rows_a], vec![0.0; rows_b]);
        matmul(&mut a1, &wa, &x);
        matmul(&mut b1, &wb, &x);
        assert_eq!((a, b), (a1, b1), "{rows_a} + {rows_b} rows of {cols}");
    }
}

#[test]
fn isa_names_parse() {
    assert_eq!(Isa::named("AVX512"), Some(Isa::Avx512));
    assert_eq!(Isa::named(" avx2 "), Some(Isa::Avx2));
    assert_eq!(Isa::named("portable"), Some(Isa::Portable));
    assert_eq!(Isa::named("neon"), None);
}
