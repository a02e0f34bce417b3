//! Every path against the plain loops of [`super::plain`], bit for bit: they add the same
//! products in the same order with the same roundings (one `fma` per step of `k`), so any
//! difference at all is a bug (a wrong index, a lost tail row or column, a block summed twice).
//! The plain loops themselves are checked against a sum in `f64`, with the textbook error
//! bound of a sum in order.

use super::*;
use crate::rng::Rng;

/// `n` values uniform in [-1, 1), from the crate's generator (seeded: failures reproduce).
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.symmetric()).collect()
}

/// `(m, k, n)`: single values, sizes just off the tiles (14 x 32, 6 x 16, 4 x 16), `k` odd and
/// past one block (`KC = 256`), `n` past one block of columns (`NC = 512`), long thin ones, and
/// a `b` packed in two panels of `k` ([`SHARED_B_MAX`]) and one too wide to share at all,
/// packed block by block by each task.
const SHAPES: [(usize, usize, usize); 18] = [
    (1, 1, 1),
    (1, 7, 1),
    (3, 5, 2),
    (2, 1, 17),
    (13, 17, 31),
    (14, 32, 32),
    (15, 33, 33),
    (6, 16, 16),
    (7, 64, 15),
    (29, 300, 70),
    (64, 257, 100),
    (45, 513, 530),
    (2, 1000, 3),
    (200, 64, 40),
    (1, 300, 600),
    (300, 3, 1),
    (16, 4100, 260),
    (3, 301, 14000),
];

const LAYOUTS: [Layout; 3] = [Layout::Nt, Layout::Nn, Layout::Tn];

fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} != {w}");
    }
}

#[test]
fn every_isa_gives_the_bits_of_the_plain_loops() {
    let mut rng = Rng::new(0x9e3779b97f4a7c15);
    for isa in Isa::available() {
        for layout in LAYOUTS {
            for (m, k, n) in SHAPES {
                let (a, b) = (values(&mut rng, m * k), values(&mut rng, k * n));
                let start = values(&mut rng, m * n);
                for accumulate in [false, true] {
                    let mut want = start.clone();
                    plain::matmul(layout, &mut want, &a, &b, m, k, n, accumulate);
                    let mut got = start.clone();
                    matmul(isa, layout, &mut got, &a, &b, (m, k, n), accumulate);
                    let what = format!("{isa:?} {layout:?} {m}x{k}x{n} accumulate={accumulate}");
                    assert_same_bits(&got, &want, &what);
                }
            }
        }
    }
}

#[test]
fn every_isa_gives_the_bits_of_the_plain_bf16_loops() {
    let mut rng = Rng::new(0x2545f4914f6cdd1d);
    for isa in Isa::available() {
        for layout in LAYOUTS {
            for (m, k, n) in SHAPES {
                let (a, b) = (
                    bf16_values(&values(&mut rng, m * k)),
                    bf16_values(&values(&mut rng, k * n)),
                );
                let start = values(&mut rng, m * n);
                for accumulate in [false, true] {
                    let mut want = start.clone();
                    plain::matmul_bf16(layout, &mut want, &a, &b, m, k, n, accumulate);
                    let mut got = start.clone();
                    matmul_bf16(isa, layout, &mut got, &a, &b, (m, k, n), accumulate);
                    let what =
                        format!("bf16 {isa:?} {layout:?} {m}x{k}x{n} accumulate={accumulate}");
                    assert_same_bits(&got, &want, &what);
                }
            }
        }
    }
}

fn bf16_values(x: &[f32]) -> Vec<u16> {
    let mut out = vec![0; x.len()];
    to_bf16(&mut out, x);
    out
}

/// The plain loops compute the product: within `k * eps * sum |a b|` (each of the `k` roundings
/// of a sum in order is at most half an ulp of a partial sum bounded by `sum |a b|`) of the same
/// sum in `f64`; for bf16, of the products of the rounded inputs.
#[test]
fn plain_loops_compute_the_product() {
    let mut rng = Rng::new(7);
    let (m, k, n) = (9, 301, 11);
    let (a, b) = (values(&mut rng, m * k), values(&mut rng, k * n));
    let (a16, b16) = (bf16_values(&a), bf16_values(&b));
    for layout in LAYOUTS {
        let value = |x: &[f32], i: usize, p: usize, j: usize| -> (f64, f64) {
            let (x, y) = match layout {
                Layout::Nt => (x[i * k + p], b[j * k + p]),
                Layout::Nn => (x[i * k + p], b[p * n + j]),
                Layout::Tn => (x[p * m + i], b[p * n + j]),
            };
            (x as f64, y as f64)
        };
        let mut out = vec![0.0; m * n];
        plain::matmul(layout, &mut out, &a, &b, m, k, n, false);
        let mut out16 = vec![0.0; m * n];
        plain::matmul_bf16(layout, &mut out16, &a16, &b16, m, k, n, false);
        let round = |v: f64| bf16_to_f32(bf16_from_f32(v as f32)) as f64;
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut exact16, mut size) = (0.0f64, 0.0f64, 0.0f64);
                for p in 0..k {
                    let (x, y) = value(&a, i, p, j);
                    exact += x * y;
                    exact16 += round(x) * round(y);
                    size += (x * y).abs();
                }
                let bound = k as f64 * f32::EPSILON as f64 * size;
                assert!(
                    (out[i * n + j] as f64 - exact).abs() <= bound,
                    "{layout:?} ({i}, {j})"
                );
                assert!(
                    (out16[i * n + j] as f64 - exact16).abs() <= bound,
                    "bf16 {layout:?} ({i}, {j})"
                );
                assert!(
                    (exact16 - exact).abs() > 0.0 || size == 0.0,
                    "bf16 inputs were not rounded"
                );
            }
        }
    }
}

/// The three layouts are one product: transposing an operand by hand gives the same bits.
#[test]
fn layouts_agree_with_transposed_operands() {
    let mut rng = Rng::new(11);
    let (m, k, n) = (37, 290, 45);
    let (a, b) = (values(&mut rng, m * k), values(&mut rng, n * k));
    let transpose = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        let mut t = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    };
    let mut nt = vec![0.0; m * n];
    matmul_nt(&mut nt, &a, &b, m, k, n, false);
    let mut nn = vec![0.0; m * n];
    matmul_nn(&mut nn, &a, &transpose(&b, n, k), m, k, n, false);
    let mut tn = vec![0.0; m * n];
    matmul_tn(
        &mut tn,
        &transpose(&a, m, k),
        &transpose(&b, n, k),
        m,
        k,
        n,
        false,
    );
    assert_same_bits(&nn, &nt, "nn");
    assert_same_bits(&tn, &nt, "tn");
}

#[test]
fn empty_sums_give_zero_or_leave_out_alone() {
    let mut out = vec![5.0; 6];
    matmul_nt(&mut out, &[], &[], 2, 0, 3, true);
    assert_eq!(out, vec![5.0; 6]);
    matmul_nn_bf16(&mut out, &[], &[], 2, 0, 3, false);
    assert_eq!(out, vec![0.0; 6]);
}

/// A broken contract in a release build: nothing is read or written out of bounds, and `out`
/// is left as it was. (Debug builds stop at the `debug_assert!`.)
#[cfg(not(debug_assertions))]
#[test]
fn short_slices_do_nothing_in_release_builds() {
    let mut out = vec![1.0; 4];
    matmul_nt(&mut out, &[1.0; 3], &[1.0; 4], 2, 2, 2, false);
    matmul_tn(&mut out, &[1.0; 4], &[1.0; 4], 2, 2, 3, false);
    matmul_nn_bf16(&mut out, &[0; 4], &[0; 4], usize::MAX, 2, 2, false);
    assert_eq!(out, vec![1.0; 4]);
}

#[cfg(feature = "parallel")]
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(3);
    let (m, k, n) = (300, 200, 290);
    let (a, b) = (values(&mut rng, m * k), values(&mut rng, k * n));
    let (a16, b16) = (bf16_values(&a), bf16_values(&b));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut out = vec![0.0; m * n];
            matmul_tn(&mut out, &a, &b, m, k, n, false);
            matmul_nt_bf16(&mut out, &a16, &b16, m, k, n, true);
            out
        })
    };
    let one = run(1);
    for threads in [2, 3, 7] {
        assert_same_bits(&run(threads), &one, &format!("{threads} threads"));
    }
}

/// Products called from a parallel loop (as a training step may call them, one per layer or
/// head): a thread waiting for one product's tasks may be given another product to run.
#[cfg(feature = "parallel")]
#[test]
fn products_can_be_called_from_parallel_loops() {
    use rayon::prelude::*;
    let mut rng = Rng::new(13);
    let (m, k, n) = (100, 300, 200);
    let (a, b) = (values(&mut rng, m * k), values(&mut rng, n * k));
    let mut want = vec![0.0; m * n];
    plain::matmul(Layout::Nt, &mut want, &a, &b, m, k, n, false);
    let outs: Vec<Vec<f32>> = (0..16)
        .into_par_iter()
        .map(|_| {
            let mut out = vec![0.0; m * n];
            matmul_nt(&mut out, &a, &b, m, k, n, false);
            out
        })
        .collect();
    for out in &outs {
        assert_same_bits(out, &want, "nested");
    }
}

#[test]
fn bf16_rounds_to_nearest_even() {
    let cases: [(u32, u16); 10] = [
        (0x3f80_0000, 0x3f80), // 1.0, exact
        (0x3f80_7fff, 0x3f80), // just under half an ulp: down
        (0x3f80_8000, 0x3f80), // a tie, kept part even: down
        (0x3f81_8000, 0x3f82), // a tie, kept part odd: up to even
        (0x3f80_8001, 0x3f81), // just over half: up
        (0xbf81_8000, 0xbf82), // negative ties alike
        (0x7f7f_ffff, 0x7f80), // the largest f32 rounds past the largest bf16: infinity
        (0xff80_0000, 0xff80), // -infinity stays
        (0x0000_8000, 0x0000), // a subnormal tie rounds to even zero
        (0x8000_0000, 0x8000), // -0 stays -0
    ];
    for (bits, want) in cases {
        assert_eq!(bf16_from_f32(f32::from_bits(bits)), want, "{bits:#010x}");
    }
    // NaNs stay NaNs, even those whose payload is all in the dropped half.
    for bits in [0x7f80_0001u32, 0xff80_ffff, 0x7fc0_0000] {
        assert!(
            bf16_to_f32(bf16_from_f32(f32::from_bits(bits))).is_nan(),
            "{bits:#010x}"
        );
    }
    // Against the definition: the nearer of the two neighbours, the even one on a tie.
    let mut rng = Rng::new(5);
    for _ in 0..100_000 {
        let x = f32::from_bits(rng.next_u32());
        if !x.is_finite() || x.abs() >= 3.0e38 {
            continue;
        }
        let down = (x.to_bits() >> 16) as u16;
        let (lo, hi) = (bf16_to_f32(down) as f64, bf16_to_f32(down + 1) as f64);
        let (dl, dh) = ((x as f64 - lo).abs(), (hi - x as f64).abs());
        let want = if dl < dh || (dl == dh && down.is_multiple_of(2)) {
            down
        } else {
            down + 1
        };
        assert_eq!(bf16_from_f32(x), want, "{:#010x}", x.to_bits());
    }
}

#[test]
fn the_shapes_reach_every_way_of_packing_b() {
    use plain::PlainF32;
    let panel = |k, n| panel_steps::<PlainF32>(k, n);
    assert_eq!(panel(300, 70), Some(300), "whole");
    assert!(
        panel(4100, 260).is_some_and(|p| p < 4100 && p % KC == 0),
        "panels"
    );
    assert_eq!(panel(301, 14000), None, "per task");
}

/// The rounding for the products gives [`to_bf16`]'s bits (checked above against the rules)
/// for every `f32` that is not subnormal, at every length (the tail of fewer than 16 values
/// included); subnormals give those bits or, on AVX-512 BF16, zeros of their sign.
#[test]
fn rounding_for_the_products_is_to_bf16() {
    let mut rng = Rng::new(0x05ee_db16);
    let mut src: Vec<f32> = (0..4099).map(|_| f32::from_bits(rng.next_u32())).collect();
    // Ties, the largest finite values, infinities, NaNs, zeros and values near the subnormals.
    src.extend([
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        f32::MAX,
        -f32::MAX,
    ]);
    src.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        0.0,
        -0.0,
    ]);
    src.extend([f32::MIN_POSITIVE, f32::MIN_POSITIVE * 0.999, -1e-40, 1e-45]);
    for len in [0, 1, 15, 16, 17, 100, src.len()] {
        let src = &src[src.len() - len..];
        let (mut want, mut got) = (vec![0u16; len], vec![0u16; len]);
        to_bf16(&mut want, src);
        to_bf16_for_products(&mut got, src);
        for ((&x, &w), &g) in src.iter().zip(&want).zip(&got) {
            let flushed = ((x.to_bits() >> 16) & 0x8000) as u16;
            let subnormal = x != 0.0 && x.abs() < f32::MIN_POSITIVE;
            assert!(
                g == w || (subnormal && g == flushed),
                "{x:e} ({:#010x}): {g:#06x}, want {w:#06x}",
                x.to_bits()
            );
        }
    }
}
