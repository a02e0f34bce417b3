//! The SIMD int8 kernels of every table against the plain ones (bit for bit), the threaded
//! products built on them, and the two roundings of [`crate::quant`].

use super::{Isa, Kernels, MatmulScratch, Matrix};
use crate::quant::*;

/// `out = W xs` for the rows of `xs` (an int8 matrix), through the kernels `k` and threads.
fn q8_matmul(k: &Kernels, out: &mut [f32], w: &Q8Matrix, xs: &[f32]) {
    let m = xs.len() / w.cols;
    let (xs_t, out_t) = MatmulScratch::lengths(m, w.cols, w.rows);
    let mut scratch = MatmulScratch {
        xs_t: vec![f32::NAN; xs_t],
        out_t: vec![f32::NAN; out_t],
        quantized: Vec::new(),
    };
    k.matmul_each([out], [&Matrix::Q8(*w)], xs, &mut scratch);
}

/// Deterministic test data.
struct Rng(crate::rng::Rng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(crate::rng::Rng::new(seed))
    }

    /// Any `i8`, -128 included.
    fn i8(&mut self) -> i8 {
        (self.0.next_u32() >> 24) as u8 as i8
    }

    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        self.0.symmetric()
    }
}

/// A random int8 matrix with positive scales, owning its data.
struct OwnedQ8 {
    values: Vec<i8>,
    scales: Vec<f32>,
    group_size: usize,
    rows: usize,
    cols: usize,
}

impl OwnedQ8 {
    fn random(rng: &mut Rng, rows: usize, cols: usize, group_size: usize) -> OwnedQ8 {
        let values = (0..rows * cols).map(|_| rng.i8()).collect();
        let scales = (0..rows * cols / group_size)
            .map(|_| (rng.f32().abs() + 0.01) / 100.0)
            .collect();
        OwnedQ8 {
            values,
            scales,
            group_size,
            rows,
            cols,
        }
    }

    fn view(&self) -> Q8Matrix<'_> {
        Q8Matrix {
            values: &self.values,
            scales: &self.scales,
            group_size: self.group_size,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// Activations of varied magnitude per group, with an all-zero group now and then.
fn random_activations(rng: &mut Rng, n: usize, group_size: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    for g in 0..n / group_size {
        let magnitude = if g % 7 == 3 {
            0.0
        } else {
            10f32.powi(g as i32 % 5 - 2)
        };
        x.extend((0..group_size).map(|_| rng.f32() * magnitude));
    }
    x
}

fn plain_result(w: &Q8Matrix, x: &QuantizedVector) -> Vec<f32> {
    let mut out = vec![0.0; w.rows];
    plain::rows_aligned(&mut out, w, 0, core::slice::from_ref(x));
    out
}

fn assert_same_bits(fast: &[f32], plain: &[f32], what: &str) {
    for (i, (a, b)) in fast.iter().zip(plain).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "{what}: row {i}: {a} vs {b}");
    }
}

/// (cols, group sizes) with awkward lengths: chunks with tails, groups smaller than, equal to,
/// larger than and not dividing the SIMD chunk.
const SHAPES: &[(usize, &[usize])] = &[
    (4, &[4]),
    (8, &[4, 8]),
    (60, &[4, 12, 20, 60]),
    (64, &[4, 8, 16, 32, 64]),
    (68, &[4, 68]),
    (96, &[32, 48, 96]),
    (172, &[4, 172]),
    (200, &[8, 40, 100]),
    (288, &[32, 96, 144]),
    (768, &[64, 128, 256]),
];

#[test]
fn every_kernel_matches_plain_bit_for_bit() {
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    for &(cols, group_sizes) in SHAPES {
        for &gs in group_sizes {
            for rows in [1, 7, 8, 9, 15, 16, 17, 40, 100] {
                let w = OwnedQ8::random(&mut rng, rows, cols, gs);
                let mut x = QuantizedVector::default();
                x.quantize(&random_activations(&mut rng, cols, gs), gs);
                let expected = plain_result(&w.view(), &x);
                assert!(w.view().suits_simd_kernels());
                for isa in Isa::available() {
                    let mut out = vec![f32::NAN; rows];
                    let kernels = Kernels::exact(isa);
                    kernels.q8_rows(&mut out, &w.view(), 0, core::slice::from_ref(&x));
                    let what = format!("{isa:?} rows {rows} cols {cols} group {gs}");
                    assert_same_bits(&out, &expected, &what);
                }
            }
        }
    }
}

#[test]
fn extreme_bytes_cannot_overflow_or_saturate() {
    // -128 weights against +-127 activations: the largest products, in every sign pattern.
    let (rows, cols, gs) = (24, 256, 64);
    let x_patterns: [fn(usize) -> f32; 3] =
        [|_| 1.0, |_| -1.0, |j| if j % 2 == 0 { 1.0 } else { -1.0 }];
    for weight in [-128i8, -127, 127] {
        for x_of in x_patterns {
            let w = OwnedQ8 {
                values: vec![weight; rows * cols],
                scales: vec![1.0; rows * cols / gs],
                group_size: gs,
                rows,
                cols,
            };
            let floats: Vec<f32> = (0..cols).map(x_of).collect();
            let mut x = QuantizedVector::default();
            x.quantize(&floats, gs);
            assert!(x.values[..cols].iter().all(|v| v.abs() == 127));
            let expected = plain_result(&w.view(), &x);
            let exact: f32 = (0..cols)
                .map(|j| weight as f32 * x.values[j] as f32 / 127.0)
                .sum();
            assert!(
                (expected[0] - exact).abs() < 1e-3,
                "{} vs {exact}",
                expected[0]
            );
            for isa in Isa::available() {
                let mut out = vec![0.0; rows];
                let kernels = Kernels::exact(isa);
                kernels.q8_rows(&mut out, &w.view(), 0, core::slice::from_ref(&x));
                assert_same_bits(&out, &expected, &format!("{isa:?} weight {weight}"));
            }
        }
    }
}

#[test]
fn matmul_over_threads_matches_plain_rows() {
    let mut rng = Rng::new(99);
    for &(rows, cols, gs) in &[(1000, 768, 64), (515, 172, 4), (333, 288, 32), (64, 64, 2)] {
        let w = OwnedQ8::random(&mut rng, rows, cols, gs);
        let floats = random_activations(&mut rng, cols, gs);
        let mut x = QuantizedVector::default();
        x.quantize(&floats, gs);
        let expected = plain_result(&w.view(), &x);
        for isa in Isa::available() {
            let mut out = vec![0.0; rows];
            q8_matmul(&Kernels::exact(isa), &mut out, &w.view(), &floats);
            assert_same_bits(&out, &expected, &format!("{isa:?}"));
        }
    }
}

#[test]
fn batches_give_each_vector_what_it_gets_alone() {
    let mut rng = Rng::new(0xba7c4);
    for &(rows, cols, gs) in &[(40, 768, 64), (17, 96, 48), (300, 64, 8), (9, 172, 4)] {
        let w = OwnedQ8::random(&mut rng, rows, cols, gs);
        for m in [1, 2, 3, 17] {
            let floats: Vec<f32> = (0..m)
                .flat_map(|_| random_activations(&mut rng, cols, gs))
                .collect();
            let xs: Vec<QuantizedVector> = floats
                .chunks_exact(cols)
                .map(|x| {
                    let mut q = QuantizedVector::default();
                    q.quantize(x, gs);
                    q
                })
                .collect();
            let alone: Vec<Vec<f32>> = xs.iter().map(|x| plain_result(&w.view(), x)).collect();
            for isa in Isa::available() {
                let what = format!("{isa:?} rows {rows} cols {cols} group {gs} batch {m}");
                let mut out_t = vec![f32::NAN; rows * m];
                Kernels::exact(isa).q8_rows(&mut out_t, &w.view(), 0, &xs);
                for (t, expected) in alone.iter().enumerate() {
                    let column: Vec<f32> = (0..rows).map(|i| out_t[i * m + t]).collect();
                    assert_same_bits(&column, expected, &what);
                }
            }
            // The whole path: quantizing the batch, and putting the result in place.
            let mut out = vec![f32::NAN; m * rows];
            q8_matmul(&Kernels::detect(), &mut out, &w.view(), &floats);
            for (row, expected) in out.chunks_exact(rows).zip(&alone) {
                assert_same_bits(row, expected, &format!("matmul_batch batch {m}"));
            }
        }
    }
}

#[test]
fn groups_of_other_sizes_fall_back_to_plain() {
    let mut rng = Rng::new(5);
    let w = OwnedQ8::random(&mut rng, 20, 66, 6);
    assert!(w.view().rows_aligned_to_groups() && !w.view().suits_simd_kernels());
    let mut x = QuantizedVector::default();
    x.quantize(&random_activations(&mut rng, 66, 6), 6);
    let expected = plain_result(&w.view(), &x);
    for isa in Isa::available() {
        let mut out = vec![f32::NAN; 20];
        Kernels::exact(isa).q8_rows(&mut out, &w.view(), 0, core::slice::from_ref(&x));
        assert_same_bits(&out, &expected, &format!("{isa:?}"));
    }
}

/// Row `row` of `w` dequantized, times `x`, in f64.
fn dequantized_dot(w: &Q8Matrix, row: usize, x: &[f32]) -> f64 {
    let mut dense = vec![0.0f32; w.cols];
    w.dequantize_row(row, &mut dense);
    dense
        .iter()
        .zip(x)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

#[test]
fn straddling_groups_give_float_maths_on_dequantized_weights() {
    let mut rng = Rng::new(77);
    // hidden_dim 172 with groups of 8 (stories260K-q8.bin's w2): rows start mid-group.
    for &(rows, cols, gs) in &[(64, 172, 8), (10, 30, 12), (5, 7, 3), (3, 5, 16)] {
        let w = OwnedQ8::random(&mut rng, rows, cols, gs.min(rows * cols));
        let w = OwnedQ8 {
            scales: (0..(rows * cols).div_ceil(w.group_size))
                .map(|_| rng.f32().abs() + 0.01)
                .collect(),
            ..w
        };
        assert!(!w.view().rows_aligned_to_groups() || rows * cols < gs);
        let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
        let mut out = vec![0.0; rows];
        q8_matmul(&Kernels::detect(), &mut out, &w.view(), &x);
        for (row, &o) in out.iter().enumerate() {
            let reference = dequantized_dot(&w.view(), row, &x);
            assert!(
                (o as f64 - reference).abs() < 1e-4 * (1.0 + reference.abs()),
                "row {row}: {o} vs {reference}"
            );
        }
    }
}

#[test]
fn activations_round_half_away_from_zero_like_c() {
    // With 127 in the group the scale is exactly 1, so x / scale is x itself.
    let mut x = QuantizedVector::default();
    x.quantize(&[127.0, 2.5, -2.5, 3.5, -0.5, 0.49, 126.5, -126.5], 8);
    assert_eq!(x.scales, vec![1.0]);
    assert_eq!(&x.values[..8], &[127, 3, -3, 4, -1, 0, 127, -127]);
    assert_eq!(x.values.len(), CHUNK);
    assert!(x.values[8..].iter().all(|&v| v == 0));
    x.quantize(&[0.0; 4], 4);
    assert_eq!((&x.values[..4], x.scales[0]), (&[0i8; 4][..], 0.0));
    // A subnormal maximum loses precision in the scale, but values stay within +-127.
    let tiny = f32::from_bits(3);
    x.quantize(&[tiny, -tiny, f32::NAN, 0.0], 4);
    assert!(x.values[..4].iter().all(|&v| v != i8::MIN));
    assert_eq!(x.values[2], 0);
}

#[test]
fn weights_round_half_to_even_like_torch() {
    let q = quantize_tensor(&[127.0, 2.5, -2.5, 3.5, -0.5, 1.5, 126.5, -126.5], 8);
    assert_eq!(q.values, vec![127, 2, -2, 4, 0, 2, 126, -126]);
    assert_eq!(q.scales, vec![1.0]);
    assert_eq!(q.max_error, 0.5);
    let zeros = quantize_tensor(&[0.0; 8], 4);
    assert_eq!((zeros.values, zeros.scales), (vec![0; 8], vec![0.0, 0.0]));
}

#[test]
fn quantized_tensors_dequantize_within_half_a_step() {
    let mut rng = Rng::new(3);
    let w: Vec<f32> = (0..64 * 48).map(|_| rng.f32() * 3.0).collect();
    let q = quantize_tensor(&w, 16);
    let mut worst = 0.0f32;
    for (e, (&v, &qv)) in w.iter().zip(&q.values).enumerate() {
        let scale = q.scales[e / 16];
        let error = (qv as f32 * scale - v).abs();
        assert!(
            error <= scale * 0.5 * (1.0 + 1e-5),
            "element {e}: error {error}"
        );
        worst = worst.max(error);
    }
    assert_eq!(q.max_error, worst);
}

#[test]
fn activation_rounding_equals_f32_round_everywhere_in_range() {
    // Every f32 in [-127.5, 127.5] with scale 1 (a stride through the bit patterns, plus the
    // neighbours of every half).
    let mut checked = 0;
    let mut check = |q: f32| {
        let expected = q.round().clamp(-127.0, 127.0) as i8;
        assert_eq!(quantize_activation(q, 1.0), expected, "{q}");
        checked += 1;
    };
    for bits in (0..0x42ff_0000u32).step_by(97) {
        check(f32::from_bits(bits));
        check(-f32::from_bits(bits));
    }
    for half in -255..=255 {
        let h = half as f32 * 0.5;
        for q in [h, h.next_up(), h.next_down()] {
            check(q);
        }
    }
    assert!(checked > 20_000_000);
}
