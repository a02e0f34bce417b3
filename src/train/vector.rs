//! Loops over `f32` slices written so that the compiler vectorizes them: dot products and sums
//! with eight partial sums (in a fixed order, so results do not depend on anything but the
//! inputs), `y += a x`, and an `exp` without branches or library calls.

/// `x[i] = e^(x[i] - shift)`.
#[inline(always)]
pub fn exp_shifted(x: &mut [f32], shift: f32) {
    x.iter_mut().for_each(|x| *x = exp(*x - shift));
}

/// `e^x` within 2 ulp for `x` in `[-87, 88]` (clamped to it), without branches or calls so
/// that loops over it vectorize: `e^x = 2^n e^r` with `n = round(x / ln 2)` and a degree-6
/// polynomial for `e^r`, `|r| <= ln 2 / 2` (Cephes' expf).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let rounded = x * LOG2E + ROUND;
    let n = rounded - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // `rounded`'s low mantissa bits hold n (offset by ROUND's own bits, 0x4B40_0000): integer
    // arithmetic on them builds 2^n, where `n as i32` would not vectorize (Rust's saturating
    // float-to-int conversion becomes scalar code).
    let biased = rounded
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    e_r * f32::from_bits(biased << 23)
}

/// Values per block of the `exp` sums: the exponentials of a block are computed in one loop
/// (which vectorizes), then added into the eight partial sums (a loop doing both did not).
const EXP_BLOCK: usize = 64;

/// `x[i] = e^(x[i] - shift)`, returning their sum (eight partial sums: value `i` goes to sum
/// `i mod 8`, in order).
#[inline(always)]
pub fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut blocks = x.chunks_exact_mut(EXP_BLOCK);
    for block in &mut blocks {
        exp_shifted(block, shift);
        add_into_lanes(&mut acc, block);
    }
    let rest = blocks.into_remainder();
    exp_shifted(rest, shift);
    finish_sum(acc, rest)
}

/// `sum_i e^(x[i] - shift)`, added as [`exp_shifted_sum`] adds them.
#[inline(always)]
pub fn sum_exp(x: &[f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut buf = [0.0f32; EXP_BLOCK];
    let mut blocks = x.chunks_exact(EXP_BLOCK);
    for block in &mut blocks {
        for (e, &v) in buf.iter_mut().zip(block) {
            *e = exp(v - shift);
        }
        add_into_lanes(&mut acc, &buf);
    }
    let rest = blocks.remainder();
    let buf = &mut buf[..rest.len()];
    for (e, &v) in buf.iter_mut().zip(rest) {
        *e = exp(v - shift);
    }
    finish_sum(acc, buf)
}

/// `acc[i % 8] += x[i]` in order, for `x` of a multiple of 8 values.
#[inline(always)]
fn add_into_lanes(acc: &mut [f32; 8], x: &[f32]) {
    for c in x.chunks_exact(8) {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
}

/// The eight partial sums with the values of `rest` (fewer than [`EXP_BLOCK`]) added: whole
/// groups of eight into the sums, then the sums by a fixed tree, plus the last few in order.
#[inline(always)]
fn finish_sum(mut acc: [f32; 8], rest: &[f32]) -> f32 {
    let whole = rest.len() / 8 * 8;
    add_into_lanes(&mut acc, &rest[..whole]);
    let tail: f32 = rest[whole..].iter().sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// The largest value (negative infinity for none), over eight lanes.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// Dot product with eight partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += alpha * x`.
#[inline(always)]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let ulp = (want as f32).abs() * f32::EPSILON;
            let err = (super::exp(x) as f64 - want).abs() / ulp as f64;
            worst = worst.max(err);
        }
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(super::exp(0.0), 1.0);
        assert!(super::exp(-1000.0) < 1e-37 && super::exp(-1000.0) >= 0.0);
    }

    #[test]
    fn sums_maxima_and_dots_of_any_length() {
        let x: Vec<f32> = (1..=21).map(|i| i as f32).collect();
        let mut shifted = x.clone();
        assert_eq!(
            super::exp_shifted_sum(&mut shifted, 0.0),
            super::sum_exp(&x, 0.0)
        );
        assert_eq!(shifted[20], super::exp(21.0));
        assert_eq!(super::dot(&x, &x), 3311.0);
        assert_eq!(super::max(&x), 21.0);
        let e = super::sum_exp(&x, 21.0) as f64;
        let want: f64 = (1..=21).map(|i| ((i - 21) as f64).exp()).sum();
        assert!((e - want).abs() < 1e-6);
    }

    /// The blocked sums add exactly as eight lanes in order would, at every length.
    #[test]
    fn exp_sums_follow_the_eight_lane_order() {
        for len in 0..300 {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 101) as f32 * 0.05 - 2.0)
                .collect();
            let mut acc = [0.0f32; 8];
            let whole = len / 8 * 8;
            for (i, &v) in x[..whole].iter().enumerate() {
                acc[i % 8] += super::exp(v - 0.5);
            }
            let tail: f32 = x[whole..].iter().map(|&v| super::exp(v - 0.5)).sum();
            let want = ((acc[0] + acc[4]) + (acc[1] + acc[5]))
                + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
                + tail;
            assert_eq!(super::sum_exp(&x, 0.5).to_bits(), want.to_bits(), "{len}");
            let mut y = x.clone();
            let sum = super::exp_shifted_sum(&mut y, 0.5);
            assert_eq!(sum.to_bits(), want.to_bits(), "{len}");
            assert!(y.iter().zip(&x).all(|(&e, &v)| e == super::exp(v - 0.5)));
        }
    }
}
