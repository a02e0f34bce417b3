//! The exact kernels against [`crate::reference`], on random inputs of awkward sizes, on every
//! instruction set this CPU has (each called explicitly, not only the one dispatch picks).
//!
//! The reference's building blocks are `run.c`'s loops, and every exact kernel must give their
//! bits: that is what makes our sampled text `run.c`'s, so nothing here allows a tolerance.

use super::exact::{transpose_tokens, TOKEN_BLOCK};
use super::*;
use crate::rng::Rng;

/// The reference model's building blocks in the shapes these tests call them with (slices to
/// fill rather than new vectors; every head of a position at once).
mod plain {
    use crate::reference;

    pub fn matmul(out: &mut [f32], w: &[f32], x: &[f32]) {
        out.copy_from_slice(&reference::matmul_f32(w, x, out.len()));
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        reference::matmul_f32(a, b, 1)[0]
    }

    pub fn rms_norm(out: &mut [f32], x: &[f32], weight: &[f32]) {
        out.copy_from_slice(&reference::rmsnorm(x, weight));
    }

    pub use reference::{rope, softmax, swiglu};

    /// Attention of one position's `n_heads` queries over `n_pos` cached positions; query head
    /// `h` reads key/value head `h / kv_mul`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        out: &mut [f32],
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        n_pos: usize,
        n_heads: usize,
        kv_mul: usize,
        head_dim: usize,
    ) {
        let kv_dim = keys.len() / n_pos;
        for h in 0..n_heads {
            let q_head = &q[h * head_dim..(h + 1) * head_dim];
            let (head_out, _) =
                reference::attention_head(q_head, keys, values, kv_dim, (h / kv_mul) * head_dim);
            out[h * head_dim..(h + 1) * head_dim].copy_from_slice(&head_out);
        }
    }
}

/// `out = W x` for a float matrix, through the detected kernels and threads.
fn matmul(out: &mut [f32], w: &[f32], x: &[f32]) {
    matmul_each([out], [w], x);
}

/// `outs[i] = ws[i] x` in one call, through the detected kernels and threads.
fn matmul_each<const N: usize>(outs: [&mut [f32]; N], ws: [&[f32]; N], x: &[f32]) {
    matmul_batch_each(outs, ws, x, x.len());
}

/// `outs[i] = X ws[i]ᵀ` for the rows of `xs` (`cols` each), in one call.
fn matmul_batch_each<const N: usize>(
    outs: [&mut [f32]; N],
    ws: [&[f32]; N],
    xs: &[f32],
    cols: usize,
) {
    let matrices = ws.map(|data| Matrix::F32 {
        data,
        rows: data.len() / cols,
        cols,
    });
    let m = xs.len() / cols;
    let rows = matrices.iter().map(Matrix::rows).sum();
    let (xs_t, out_t) = MatmulScratch::lengths(m, cols, rows);
    let mut scratch = MatmulScratch {
        xs_t: vec![f32::NAN; xs_t],
        out_t: vec![f32::NAN; out_t],
        quantized: Vec::new(),
    };
    Kernels::detect().matmul_each(outs, matrices.each_ref(), xs, &mut scratch);
}

/// Deterministic test values in [-1, 1).
pub(crate) struct TestRng(Rng);

impl TestRng {
    pub(crate) fn new(seed: u64) -> TestRng {
        TestRng(Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1))
    }

    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.0.symmetric()).collect()
    }
}

/// The two slices hold the same floats, bit for bit.
#[track_caller]
fn assert_same_bits(fast: &[f32], plain: &[f32], context: &str) {
    assert_eq!(fast.len(), plain.len(), "{context}: lengths");
    for (i, (a, b)) in fast.iter().zip(plain).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "{context}: element {i}: fast {a} vs plain {b}"
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
        assert_same_bits(&fast, &slow, &format!("{rows}x{cols}"));
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
        assert_same_bits(&fast, &slow, &format!("n {n}"));
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
        assert_same_bits(&fast, &slow, &format!("n {n}"));
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
    assert_same_bits(&fast, &slow, "swiglu");
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
        Kernels::detect().attention(
            &mut fast,
            &q,
            &keys,
            &values,
            &mut scores,
            &mut [],
            n_pos - 1,
            shape,
        );
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
        assert_same_bits(&fast, &slow, &format!("{n_heads} heads, {n_pos} positions"));
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
fn every_isa_matvec_matches_plain() {
    let mut rng = TestRng::new(12);
    for isa in Isa::available() {
        for rows in [1, 2, 5, 8, 9, 16, 17, 33] {
            for cols in AWKWARD {
                let w = rng.vec(rows * cols);
                let x = rng.vec(cols);
                let mut fast = vec![0.0; rows];
                let mut slow = vec![0.0; rows];
                Kernels::exact(isa).matvec(&mut fast, &w, &x);
                plain::matmul(&mut slow, &w, &x);
                assert_same_bits(&fast, &slow, &format!("{isa:?} {rows}x{cols}"));
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
                let mut xs_t = vec![f32::NAN; cols * m.next_multiple_of(TOKEN_BLOCK)];
                transpose_tokens(&mut xs_t, &xs, m, cols);
                let mut out_t = vec![0.0; rows * m];
                Kernels::exact(isa).matmul_t(&mut out_t, &w, &xs_t, m, cols);
                for (t, x) in xs.chunks_exact(cols).enumerate() {
                    let mut single = vec![0.0; rows];
                    Kernels::exact(isa).matvec(&mut single, &w, x);
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
        matmul_batch_each([&mut out], [&w], &xs, cols);
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
                Kernels::exact(isa).dots_strided(&mut fast, &q, &rows, stride);
                let slow: Vec<f32> = (0..n)
                    .map(|t| plain::dot(&q, &rows[t * stride..t * stride + width]))
                    .collect();
                assert_same_bits(&fast, &slow, &format!("{isa:?} width {width}, {n} rows"));
            }
        }
    }
}

/// Rows 2048 floats apart crowd the cache (see `x86::sixteen_rows_alias`) and take another
/// path on AVX-512; it must give the same bits.
#[test]
fn every_isa_matvec_is_exact_for_rows_that_alias_in_cache() {
    let mut rng = TestRng::new(21);
    for isa in Isa::available() {
        for (rows, cols) in [(40, 2048), (17, 1024), (33, 4096), (16, 512)] {
            let w = rng.vec(rows * cols);
            let x = rng.vec(cols);
            let mut fast = vec![0.0; rows];
            let mut slow = vec![0.0; rows];
            Kernels::exact(isa).matvec(&mut fast, &w, &x);
            plain::matmul(&mut slow, &w, &x);
            assert_same_bits(&fast, &slow, &format!("{isa:?} {rows}x{cols}"));
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
                Kernels::exact(isa).weighted_sum(&mut fast, &weights, &rows, stride);
                // run.c's loop: for each position in order, out[j] += weight * value[j].
                let mut slow = vec![0.0f32; width];
                for (t, &weight) in weights.iter().enumerate() {
                    for (j, o) in slow.iter_mut().enumerate() {
                        *o += weight * rows[t * stride + j];
                    }
                }
                assert_same_bits(&fast, &slow, &format!("{isa:?} width {width}, {n} rows"));
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
            assert_eq!(
                Kernels::exact(isa).max(&x).to_bits(),
                scan(&x).to_bits(),
                "{isa:?} n {n}"
            );
            if n > 2 {
                x[n / 2] = f32::NAN;
                assert_eq!(
                    Kernels::exact(isa).max(&x).to_bits(),
                    scan(&x).to_bits(),
                    "{isa:?} NaN inside"
                );
                x[0] = f32::NAN;
                assert!(
                    Kernels::exact(isa).max(&x).is_nan() && scan(&x).is_nan(),
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

/// The all-heads attention kernels give each head's plain sums, bit for bit, for narrow and wide
/// heads, grouped queries, and position counts around the vector widths.
#[test]
fn every_isa_all_heads_attention_kernels_match_plain() {
    let mut rng = TestRng::new(22);
    for isa in Isa::available() {
        for (head_dim, n_kv_heads, kv_mul) in
            [(8, 4, 2), (2, 3, 1), (4, 1, 8), (12, 2, 3), (20, 2, 1)]
        {
            let n_heads = n_kv_heads * kv_mul;
            let kv_dim = n_kv_heads * head_dim;
            for n_pos in [1, 7, 8, 16, 17, 40] {
                let what = format!(
                    "{isa:?} head_dim {head_dim}, {n_heads}/{n_kv_heads} heads, {n_pos} positions"
                );
                let q = rng.vec(n_heads * head_dim);
                let keys = rng.vec(n_pos * kv_dim);
                let mut scores = vec![f32::NAN; n_heads * n_pos];
                Kernels::exact(isa).scores_all_heads(
                    &mut scores,
                    &q,
                    &keys,
                    n_pos,
                    head_dim,
                    kv_mul,
                );
                let mut expected = Vec::new();
                for h in 0..n_heads {
                    let kv = (h / kv_mul) * head_dim;
                    for t in 0..n_pos {
                        let k = &keys[t * kv_dim + kv..t * kv_dim + kv + head_dim];
                        expected.push(plain::dot(&q[h * head_dim..(h + 1) * head_dim], k));
                    }
                }
                assert_same_bits(&scores, &expected, &format!("scores, {what}"));

                let values = rng.vec(n_pos * kv_dim);
                let att = rng.vec(n_heads * n_pos);
                let mut out = vec![f32::NAN; n_heads * head_dim];
                Kernels::exact(isa)
                    .weighted_sums_all_heads(&mut out, &att, &values, n_pos, head_dim, kv_mul);
                let mut expected = vec![0.0f32; n_heads * head_dim];
                for h in 0..n_heads {
                    let kv = (h / kv_mul) * head_dim;
                    for t in 0..n_pos {
                        for i in 0..head_dim {
                            expected[h * head_dim + i] +=
                                att[h * n_pos + t] * values[t * kv_dim + kv + i];
                        }
                    }
                }
                assert_same_bits(&out, &expected, &format!("weighted sums, {what}"));
            }
        }
    }
}

/// Rows of a softmax together give each row's softmax alone.
#[test]
fn softmax_rows_equals_softmax_of_each_row() {
    let mut rng = TestRng::new(23);
    for (rows, width) in [(1, 1), (3, 5), (8, 64), (13, 100)] {
        let x: Vec<f32> = rng.vec(rows * width).iter().map(|v| v * 10.0).collect();
        let mut together = x.clone();
        Kernels::detect().softmax_rows(&mut together, width);
        let mut alone = x.clone();
        for row in alone.chunks_exact_mut(width) {
            plain::softmax(row);
        }
        assert_same_bits(&together, &alone, &format!("{rows} rows of {width}"));
    }
}

#[test]
fn fast_tables_batch_on_the_widest_instruction_set() {
    // The timing may pick a narrower instruction set for one position's products; a prompt's
    // batched products must not follow it down (they ran at a third of the speed when they did).
    for isa in crate::fast::Isa::available() {
        let table = Kernels::fast(crate::fast::Kernel::new(isa));
        assert_eq!(table.isa(), Isa::detect(), "fast kernel on {isa:?}");
        assert_eq!(table.fast_kernel(), Some(crate::fast::Kernel::new(isa)));
    }
}
