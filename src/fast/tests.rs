//! The fast kernels against `f64` references (within a stated error bound) and against each
//! other (bit for bit: every instruction set, rows per pass and prefetch distance).

use super::*;

/// A small deterministic generator (xorshift64*), so the tests need no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn float(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.float()).collect()
    }

    /// Int8 values in -128..=127 (weights may be -128) or -127..=127 (activations).
    fn bytes(&mut self, n: usize, allow_min: bool) -> Vec<i8> {
        (0..n)
            .map(|_| {
                let v = (self.next() >> 56) as u8 as i8;
                if !allow_min && v == -128 {
                    127
                } else {
                    v
                }
            })
            .collect()
    }
}

/// Every kernel this CPU runs: each instruction set with each row count and two prefetches.
fn all_kernels() -> Vec<Kernel> {
    let mut kernels = Vec::new();
    for isa in Isa::available() {
        for &rows in Kernel::rows_choices(isa) {
            for prefetch in [0, 4096] {
                kernels.push(Kernel {
                    isa,
                    rows,
                    prefetch,
                });
            }
        }
    }
    kernels
}

/// Unit roundoff of `f32`.
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Column counts with every kind of tail: short rows, one lane short or over, the model shapes.
const COLS: [usize; 16] = [
    1, 3, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 172, 288, 1376,
];

#[test]
fn f32_rows_are_within_the_bound_of_an_f64_dot_product() {
    let mut rng = Rng(1);
    for cols in COLS {
        let rows = 13;
        let (w, x) = (rng.floats(rows * cols), rng.floats(cols));
        let mut out = vec![0.0f32; rows];
        matvec_f32(Kernel::new(Isa::Portable), &mut out, &w, &x);
        // Each lane is a chain of at most ceil(cols / 32) fused roundings, then 5 levels of
        // the tree: the error is at most (chain + 5) u sum|w x| (to first order; 1.01 covers
        // the rest).
        let chain = cols.div_ceil(F32_LANES) as f64;
        for r in 0..rows {
            let row = &w[r * cols..(r + 1) * cols];
            let exact: f64 = row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let magnitude: f64 = row
                .iter()
                .zip(&x)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let bound = 1.01 * (chain + 5.0) * U * magnitude;
            let error = (out[r] as f64 - exact).abs();
            assert!(
                error <= bound,
                "cols {cols} row {r}: error {error:e} > {bound:e}"
            );
        }
    }
}

#[test]
fn f32_kernels_agree_bit_for_bit() {
    let mut rng = Rng(2);
    for cols in COLS {
        // 19 rows: a prime, so every row count leaves a remainder.
        let rows = 19;
        let (w, x) = (rng.floats(rows * cols), rng.floats(cols));
        let mut reference = vec![0.0f32; rows];
        matvec_f32(Kernel::new(Isa::Portable), &mut reference, &w, &x);
        for kernel in all_kernels() {
            let mut out = vec![f32::NAN; rows];
            matvec_f32(kernel, &mut out, &w, &x);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&out), bits(&reference), "{kernel:?} cols {cols}");
        }
    }
}

#[test]
fn f32_rows_do_not_depend_on_how_they_are_split() {
    // Threads hand a kernel any block of rows: the same row must give the same bits.
    let mut rng = Rng(3);
    let (rows, cols) = (70, 288);
    let (w, x) = (rng.floats(rows * cols), rng.floats(cols));
    for kernel in all_kernels() {
        let mut whole = vec![0.0f32; rows];
        matvec_f32(kernel, &mut whole, &w, &x);
        for split in [1, 7, 32, 69] {
            let mut parts = vec![0.0f32; rows];
            let (a, b) = parts.split_at_mut(split);
            matvec_f32(kernel, a, &w[..split * cols], &x);
            matvec_f32(kernel, b, &w[split * cols..], &x);
            assert_eq!(parts, whole, "{kernel:?} split at {split}");
        }
    }
}

#[test]
fn strided_rows_are_the_rows_of_a_matrix() {
    let mut rng = Rng(4);
    let (rows, cols, stride) = (9, 37, 50);
    let (w, x) = (rng.floats((rows - 1) * stride + cols), rng.floats(cols));
    for kernel in all_kernels() {
        let mut out = vec![0.0f32; rows];
        dots_f32_strided(kernel, &mut out, &w, stride, &x);
        for (r, &o) in out.iter().enumerate() {
            assert_eq!(
                o.to_bits(),
                dot_f32(&w[r * stride..r * stride + cols], &x).to_bits()
            );
        }
    }
}

/// A random int8 matrix (weights may be -128) with random scales, and a vector.
struct Q8Case {
    rows: usize,
    group: usize,
    wq: Vec<i8>,
    ws: Vec<f32>,
    xq: Vec<i8>,
    xs: Vec<f32>,
}

impl Q8Case {
    fn new(rng: &mut Rng, rows: usize, cols: usize, group: usize) -> Q8Case {
        let groups = cols / group;
        let scale = |rng: &mut Rng| (rng.float() + 1.5) * 0.01;
        Q8Case {
            rows,
            group,
            wq: rng.bytes(rows * cols, true),
            ws: (0..rows * groups).map(|_| scale(rng)).collect(),
            // Padding past `cols`, as `QuantizedVector` has, which must be ignored.
            xq: rng.bytes(cols + 17, false),
            xs: (0..groups).map(|_| scale(rng)).collect(),
        }
    }

    fn run(&self, kernel: Kernel) -> Vec<f32> {
        let mut out = vec![f32::NAN; self.rows];
        matvec_q8(
            kernel, &mut out, &self.wq, &self.ws, &self.xq, &self.xs, self.group,
        );
        out
    }
}

#[test]
fn q8_rows_are_within_the_bound_of_exact_group_sums() {
    let mut rng = Rng(5);
    for (cols, group) in [
        (288, 32),
        (512, 64),
        (768, 64),
        (1376, 32),
        (2048, 64),
        (384, 128),
        (96, 96),
        (40, 8),
        (288, 48),
    ] {
        let case = Q8Case::new(&mut rng, 11, cols, group);
        let out = case.run(Kernel::new(Isa::Portable));
        let groups = cols / group;
        // Each lane adds ceil(quads / 16) terms, each a product of a rounded scale product and
        // an exact integer (2 roundings), then 4 levels of the tree.
        let chain = (cols / 4).div_ceil(Q8_LANES) as f64;
        for (r, &o) in out.iter().enumerate() {
            let (mut exact, mut magnitude) = (0.0f64, 0.0f64);
            for g in 0..groups {
                let range = r * cols + g * group..r * cols + (g + 1) * group;
                let int: i64 = case.wq[range.clone()]
                    .iter()
                    .zip(&case.xq[g * group..])
                    .map(|(&a, &b)| a as i64 * b as i64)
                    .sum();
                let scale = case.ws[r * groups + g] as f64 * case.xs[g] as f64;
                exact += int as f64 * scale;
                let abs: i64 = case.wq[range]
                    .iter()
                    .zip(&case.xq[g * group..])
                    .map(|(&a, &b)| (a as i64 * b as i64).abs())
                    .sum();
                magnitude += abs as f64 * scale;
            }
            let bound = 1.01 * (chain + 6.0) * U * magnitude;
            let error = (o as f64 - exact).abs();
            assert!(
                error <= bound,
                "cols {cols} group {group} row {r}: {error:e} > {bound:e}"
            );
        }
    }
}

#[test]
fn q8_kernels_agree_bit_for_bit() {
    let mut rng = Rng(6);
    for (cols, group) in [
        (32, 32),
        (96, 32),
        (288, 32),
        (512, 64),
        (192, 64),
        (384, 128),
        (480, 96),
        (1376, 32),
        // Groups of 16 and 48 (stories15M's rows of 288): quarters of a chunk in different
        // groups, and last chunks of one, two and three quarters.
        (288, 48),
        (144, 48),
        (336, 48),
        (16, 16),
        (112, 16),
        (240, 80),
    ] {
        let case = Q8Case::new(&mut rng, 19, cols, group);
        let reference = case.run(Kernel::new(Isa::Portable));
        for kernel in all_kernels() {
            let out = case.run(kernel);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&out),
                bits(&reference),
                "{kernel:?} cols {cols} group {group}"
            );
        }
    }
}

#[test]
fn q8_groups_the_simd_kernels_do_not_take_fall_back_to_the_definition() {
    let mut rng = Rng(7);
    let case = Q8Case::new(&mut rng, 5, 40, 8);
    let reference = case.run(Kernel::new(Isa::Portable));
    for kernel in all_kernels() {
        assert_eq!(case.run(kernel), reference, "{kernel:?}");
    }
}

/// The inputs `exp` is tested on: a dense sweep of its range, and the edges.
fn exp_inputs() -> Vec<f32> {
    let mut xs: Vec<f32> = (0..2_000_001)
        .map(|i| EXP_MIN + (EXP_MAX - EXP_MIN) * i as f32 / 2_000_000.0)
        .collect();
    xs.extend([
        0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 0.5, -0.3466, 0.3466, -86.999, 87.999,
    ]);
    xs.extend([
        -87.5,
        -100.0,
        89.0,
        1e10,
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::MIN,
        f32::MAX,
    ]);
    xs
}

#[test]
fn exp_is_within_its_stated_relative_error() {
    let xs = exp_inputs();
    let mut ys = xs.clone();
    exp(Isa::Portable, &mut ys);
    let mut worst = 0.0f64;
    for (&x, &y) in xs.iter().zip(&ys) {
        if x < EXP_MIN {
            assert_eq!(y, 0.0, "exp({x})");
            continue;
        }
        let truth = (x.min(EXP_MAX) as f64).exp();
        worst = worst.max((y as f64 - truth).abs() / truth);
    }
    assert!(
        worst <= EXP_MAX_RELATIVE_ERROR as f64,
        "worst relative error {worst:e}"
    );
    let mut nan = [f32::NAN];
    exp(Isa::Portable, &mut nan);
    assert!(nan[0].is_nan());
}

#[test]
fn exp_agrees_bit_for_bit_on_every_instruction_set() {
    let xs = exp_inputs();
    let mut reference = xs.clone();
    exp(Isa::Portable, &mut reference);
    for isa in Isa::available() {
        // Offsets 0..16 put every value in every lane and in the scalar tails.
        for offset in [0, 1, 7, 15] {
            let mut ys = xs[offset..].to_vec();
            exp(isa, &mut ys);
            for (i, (&y, &r)) in ys.iter().zip(&reference[offset..]).enumerate() {
                assert_eq!(y.to_bits(), r.to_bits(), "{isa:?} exp({})", xs[offset + i]);
            }
        }
    }
}

#[test]
fn softmax_is_close_to_an_f64_softmax_and_the_same_on_every_instruction_set() {
    let mut rng = Rng(8);
    for n in [1, 2, 15, 16, 17, 100, 257, 32000] {
        let x: Vec<f32> = rng.floats(n).iter().map(|v| v * 20.0).collect();
        // From the rounded differences `x - max`, as every f32 softmax (run.c's too) has them:
        // their rounding is not exp's error.
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let e: Vec<f64> = x.iter().map(|&v| ((v - max) as f64).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut reference = x.clone();
        softmax(Isa::Portable, &mut reference);
        // exp's error, the sum's (a chain of n/16 adds, 4 tree levels) and 2 more roundings.
        let bound = EXP_MAX_RELATIVE_ERROR as f64 + ((n / 16) as f64 + 7.0) * U;
        for (i, &p) in reference.iter().enumerate() {
            let truth = e[i] / sum;
            assert!(
                ((p as f64 - truth) / truth).abs() <= bound,
                "n {n} i {i}: {p} vs {truth}"
            );
        }
        for isa in Isa::available() {
            let mut y = x.clone();
            softmax(isa, &mut y);
            assert_eq!(y, reference, "{isa:?} n {n}");
        }
    }
}

#[test]
fn weighted_sums_are_close_to_f64_and_the_same_on_every_instruction_set() {
    let mut rng = Rng(9);
    for (positions, head, stride) in [(1, 8, 8), (5, 48, 64), (37, 64, 288), (100, 17, 20)] {
        let a = rng.floats(positions);
        let values = rng.floats((positions - 1) * stride + head);
        let mut reference = vec![0.0f32; head];
        weighted_sum(Isa::Portable, &mut reference, &a, &values, stride);
        for (i, &o) in reference.iter().enumerate() {
            let terms = (0..positions).map(|t| a[t] as f64 * values[t * stride + i] as f64);
            let exact: f64 = terms.clone().sum();
            let magnitude: f64 = terms.map(f64::abs).sum();
            let bound = 1.01 * positions as f64 * U * magnitude;
            assert!(
                (o as f64 - exact).abs() <= bound,
                "{positions} {head} lane {i}"
            );
        }
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; head];
            weighted_sum(isa, &mut out, &a, &values, stride);
            assert_eq!(out, reference, "{isa:?}");
        }
    }
}

#[test]
fn the_tuner_returns_one_of_its_candidates() {
    let mut rng = Rng(10);
    let (rows, cols) = (300, 288);
    let w = rng.floats(rows * cols);
    let candidates = tune::candidates(None);
    assert!(!candidates.is_empty());
    let budget = std::time::Duration::from_millis(5);
    let chosen = tune::plan_f32(&candidates, &w, cols, tune::Residency::Memory, budget);
    assert!(candidates.contains(&chosen), "{chosen:?}");
    assert!(chosen.isa.is_supported());

    let case = Q8Case::new(&mut rng, rows, cols, 32);
    let chosen = tune::plan_q8(
        &candidates,
        &case.wq,
        &case.ws,
        cols,
        32,
        tune::Residency::Cache,
        budget,
    );
    assert!(candidates.contains(&chosen), "{chosen:?}");

    // Restricted to one instruction set, it picks a kernel of that set.
    for isa in Isa::available() {
        let only = tune::candidates(Some(isa));
        assert!(only.iter().all(|k| k.isa == isa));
        assert_eq!(
            tune::plan_f32(&only, &w, cols, tune::Residency::Cache, budget).isa,
            isa
        );
    }
}
