//! The handful of C maths library functions a transformer needs, for targets without `std`.
//!
//! `core` has no `exp`, `ln`, `sqrt`, `sin`, `cos` or `powf` for `f32`: those come from the
//! platform's C library through `std`. A microcontroller build has neither, so these are small
//! implementations of our own. Each one works in `f64` (argument reduction, then a short
//! polynomial) and rounds once to `f32` at the end, which makes it correctly rounded for nearly
//! every input: the tests measure at most one ulp of difference from `std` over the ranges the
//! model uses (RoPE angles, softmax and SiLU exponents, RMSNorm roots, log-probabilities).
//!
//! With `std`, the model keeps calling the C library (so exact mode stays llama2.c's bits); these
//! functions are what a build without it uses. They are not a general `libm`: no `f64`
//! versions, no `errno`, and `sin`/`cos` lose accuracy past `|x| > 1e9`, far beyond any position
//! of a context.

/// ln(2), split in a high part with trailing zero bits (so `k * LN2_HI` is exact for the `k` an
/// `f32` exponent can have) and the remainder.
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// pi/2 in three parts, the first two with trailing zeros, for the same reason.
const PIO2_1: f64 = 1.570_796_326_734_125_6;
const PIO2_2: f64 = 6.077_100_506_303_966e-11;
const PIO2_3: f64 = 2.022_266_248_795_950_6e-21;

/// `2^k` as an `f64`, for `k` in the normal range.
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// e^r for `|r| <= ln(2)/2`: the Taylor series to the 13th power (error below 1e-17).
fn exp_small(r: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=13 {
        term *= r / n as f64;
        sum += term;
    }
    sum
}

/// e^x in `f64` for `|x| < 700`: `x = k ln 2 + r`, so `e^x = 2^k e^r`.
fn exp_f64(x: f64) -> f64 {
    let k = (x / core::f64::consts::LN_2 + if x < 0.0 { -0.5 } else { 0.5 }) as i32;
    let r = (x - k as f64 * LN2_HI) - k as f64 * LN2_LO;
    // Split 2^k in two factors so that neither overflows nor goes subnormal on its own.
    let half = k / 2;
    exp_small(r) * pow2(half) * pow2(k - half)
}

/// e^x, like C's `expf`.
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > 89.0 {
        return f32::INFINITY;
    }
    if x < -104.0 {
        return 0.0;
    }
    exp_f64(x as f64) as f32
}

/// ln(x) in `f64` for finite `x > 0`: `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, and
/// `ln m = 2 atanh(s)` with `s = (m - 1) / (m + 1)`, a series in `s^2 <= 0.03`.
fn ln_f64(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mut m = f64::from_bits((bits & !(0x7ff << 52)) | (1023 << 52));
    if m > core::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for n in 0..20 {
        sum += term / (2 * n + 1) as f64;
        term *= s2;
    }
    2.0 * sum + e as f64 * core::f64::consts::LN_2
}

/// The natural logarithm, like C's `logf` (NaN below zero, -inf at zero).
pub fn ln(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    // Subnormal f32s are normal f64s, so the bit split above sees every input as normal.
    ln_f64(x as f64) as f32
}

/// The square root, like C's `sqrtf`: Newton's iteration in `f64` from a guess made of the
/// exponent bits, then one rounding to `f32`.
pub fn sqrt(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 || x.is_infinite() {
        return x;
    }
    let a = x as f64;
    // Halving the biased exponent gives a guess within a factor of 2; six steps of Newton's
    // method (each doubling the correct bits) take it past f64 precision.
    let mut y = f64::from_bits((a.to_bits() >> 1) + (1023u64 << 51));
    for _ in 0..6 {
        y = 0.5 * (y + a / y);
    }
    y as f32
}

/// Reduce `x` to `r` in `[-pi/4, pi/4]` and the quadrant `q` (mod 4) with `x = q pi/2 + r`.
fn reduce_quadrant(x: f64) -> (f64, i64) {
    let q = (x / core::f64::consts::FRAC_PI_2).round_ties_even_compat();
    let r = ((x - q * PIO2_1) - q * PIO2_2) - q * PIO2_3;
    (r, (q as i64) & 3)
}

/// Round half to even without `std` (`f64::round_ties_even` needs it).
trait RoundCompat {
    fn round_ties_even_compat(self) -> f64;
}

impl RoundCompat for f64 {
    fn round_ties_even_compat(self) -> f64 {
        // Adding and subtracting 2^52 rounds to an integer in the current (nearest-even) mode.
        const SHIFT: f64 = 4_503_599_627_370_496.0;
        if self.abs() >= SHIFT {
            self
        } else if self >= 0.0 {
            (self + SHIFT) - SHIFT
        } else {
            (self - SHIFT) + SHIFT
        }
    }
}

/// sin(r) and cos(r) for `|r| <= pi/4`, by their Taylor series (error below 1e-17).
fn sin_cos_small(r: f64) -> (f64, f64) {
    let r2 = r * r;
    let (mut s_term, mut c_term) = (r, 1.0);
    let (mut s, mut c) = (r, 1.0);
    for n in 1..=10 {
        s_term *= -r2 / ((2 * n) * (2 * n + 1)) as f64;
        c_term *= -r2 / ((2 * n - 1) * (2 * n)) as f64;
        s += s_term;
        c += c_term;
    }
    (s, c)
}

/// sin(x) and cos(x) together (RoPE needs both of the same angle).
pub fn sin_cos(x: f32) -> (f32, f32) {
    if !x.is_finite() {
        return (f32::NAN, f32::NAN);
    }
    let (r, q) = reduce_quadrant(x as f64);
    let (s, c) = sin_cos_small(r);
    let (sin, cos) = match q {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    };
    (sin as f32, cos as f32)
}

/// sin(x), like C's `sinf`.
pub fn sin(x: f32) -> f32 {
    sin_cos(x).0
}

/// cos(x), like C's `cosf`.
pub fn cos(x: f32) -> f32 {
    sin_cos(x).1
}

/// x^y for `x > 0` (all RoPE needs: `10000^(-2i/d)`), like C's `powf` there. Other bases give
/// NaN, except `x^0 = 1`.
pub fn powf(x: f32, y: f32) -> f32 {
    if y == 0.0 {
        return 1.0;
    }
    if x.is_nan() || x <= 0.0 || !x.is_finite() || !y.is_finite() {
        return f32::NAN;
    }
    let t = y as f64 * ln_f64(x as f64);
    if t > 89.0 {
        f32::INFINITY
    } else if t < -104.0 {
        0.0
    } else {
        exp_f64(t) as f32
    }
}

/// e^x in `f64`, for losses and perplexities summed in double precision.
pub fn exp_f64_checked(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x > 709.0 {
        f64::INFINITY
    } else if x < -745.0 {
        0.0
    } else if x < -700.0 {
        // exp_f64 splits 2^k in two normal factors; this far down the result is subnormal.
        exp_f64(x + 64.0 * core::f64::consts::LN_2) * pow2(-64)
    } else {
        exp_f64(x)
    }
}

/// ln(x) in `f64` (NaN below zero, -inf at zero).
pub fn ln_f64_checked(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        f64::NAN
    } else if x == 0.0 {
        f64::NEG_INFINITY
    } else if x.is_infinite() {
        x
    } else if x < f64::MIN_POSITIVE {
        // Subnormal: scale into the normal range first.
        ln_f64(x * pow2(64)) - 64.0 * core::f64::consts::LN_2
    } else {
        ln_f64(x)
    }
}

/// The C library's functions as methods on `f32` and `f64`, for code that must build without
/// `std`. With `std` the floats' own methods (the C library's) take precedence wherever both
/// are in scope, so importing this changes nothing there; without `std` it supplies them from
/// this module. `crate::prelude` imports it only for builds without `std`.
pub trait Float: Sized {
    /// e^self.
    fn exp(self) -> Self;
    /// The natural logarithm.
    fn ln(self) -> Self;
    /// The square root.
    fn sqrt(self) -> Self;
    /// The sine.
    fn sin(self) -> Self;
    /// The cosine.
    fn cos(self) -> Self;
    /// self^y, for a positive base.
    fn powf(self, y: Self) -> Self;
    /// `self * a + b` with one rounding (C's `fmaf`).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The nearest integer, halfway cases away from zero (C's `roundf`).
    fn round(self) -> Self;
    /// The nearest integer, halfway cases to even.
    fn round_ties_even(self) -> Self;
}

/// `a * b + c` rounded once, like C's `fmaf`. The product of two `f32`s is exact in `f64`; the
/// sum is rounded to odd in `f64` (the last bit set when anything was lost), which makes the
/// final rounding to `f32` give the correctly rounded result, as a fused instruction would.
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let p = a as f64 * b as f64;
    let c = c as f64;
    let s = p + c;
    if !s.is_finite() {
        return s as f32;
    }
    // What the f64 sum lost (Knuth's two-sum).
    let v = s - p;
    let lost = (p - (s - v)) + (c - v);
    if lost != 0.0 && s.to_bits() & 1 == 0 {
        // Round to odd: step one ulp toward the lost part.
        let toward_zero = (lost > 0.0) != (s > 0.0);
        let bits = if toward_zero {
            s.to_bits() - 1
        } else {
            s.to_bits() + 1
        };
        return f64::from_bits(bits) as f32;
    }
    s as f32
}

/// Values at least this large (2^23) are integers already.
const F32_INTEGERS: f32 = 8_388_608.0;

/// Drop the fraction of `x` (`|x| < 2^23`).
fn trunc_small(x: f32) -> f32 {
    x as i32 as f32
}

impl Float for f32 {
    fn exp(self) -> f32 {
        exp(self)
    }
    fn ln(self) -> f32 {
        ln(self)
    }
    fn sqrt(self) -> f32 {
        sqrt(self)
    }
    fn sin(self) -> f32 {
        sin(self)
    }
    fn cos(self) -> f32 {
        cos(self)
    }
    fn powf(self, y: f32) -> f32 {
        powf(self, y)
    }
    fn mul_add(self, a: f32, b: f32) -> f32 {
        fma(self, a, b)
    }
    fn round(self) -> f32 {
        if self.is_nan() || self.abs() >= F32_INTEGERS {
            return self;
        }
        let t = trunc_small(self);
        if (self - t).abs() >= 0.5 {
            t + if self < 0.0 { -1.0 } else { 1.0 }
        } else {
            t
        }
    }
    fn round_ties_even(self) -> f32 {
        if self.is_nan() || self.abs() >= F32_INTEGERS {
            return self;
        }
        let t = trunc_small(self);
        let fraction = (self - t).abs();
        let away = t + if self < 0.0 { -1.0 } else { 1.0 };
        if fraction > 0.5 || (fraction == 0.5 && trunc_small(t * 0.5) * 2.0 != t) {
            away
        } else {
            t
        }
    }
}

impl Float for f64 {
    fn exp(self) -> f64 {
        exp_f64_checked(self)
    }
    fn ln(self) -> f64 {
        ln_f64_checked(self)
    }
    fn sqrt(self) -> f64 {
        if self.is_nan() || self < 0.0 {
            return f64::NAN;
        }
        if self == 0.0 || self.is_infinite() {
            return self;
        }
        // Newton's method from the halved exponent; a final step rounds within an ulp.
        let mut y = f64::from_bits((self.to_bits() >> 1) + (1023u64 << 51));
        for _ in 0..8 {
            y = 0.5 * (y + self / y);
        }
        y
    }
    fn sin(self) -> f64 {
        let (r, q) = reduce_quadrant(self);
        let (s, c) = sin_cos_small(r);
        [s, c, -s, -c][q as usize]
    }
    fn cos(self) -> f64 {
        let (r, q) = reduce_quadrant(self);
        let (s, c) = sin_cos_small(r);
        [c, -s, -c, s][q as usize]
    }
    fn powf(self, y: f64) -> f64 {
        if y == 0.0 {
            1.0
        } else {
            exp_f64_checked(y * ln_f64_checked(self))
        }
    }
    fn mul_add(self, a: f64, b: f64) -> f64 {
        // Not needed by the crate in f64; two roundings, documented as such.
        self * a + b
    }
    fn round(self) -> f64 {
        if self.is_nan() || self.abs() >= 4_503_599_627_370_496.0 {
            return self;
        }
        let t = self as i64 as f64;
        if (self - t).abs() >= 0.5 {
            t + if self < 0.0 { -1.0 } else { 1.0 }
        } else {
            t
        }
    }
    fn round_ties_even(self) -> f64 {
        self.round_ties_even_compat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32s of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        let key = |v: f32| {
            let bits = v.to_bits() as i64;
            if bits < 0x8000_0000 {
                bits
            } else {
                0x8000_0000 - bits
            }
        };
        (key(a) - key(b)).unsigned_abs() as u32
    }

    /// The largest ulp error of `ours` against `reference` over `n` evenly spaced points.
    /// Printed, so `cargo test -- --nocapture` reports the error the README quotes.
    fn worst(ours: fn(f32) -> f32, reference: fn(f32) -> f32, lo: f32, hi: f32, n: usize) -> u32 {
        let worst = (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .map(|x| ulps(ours(x), reference(x)))
            .max()
            .unwrap();
        eprintln!("largest error over [{lo:e}, {hi:e}]: {worst} ulp");
        worst
    }

    #[test]
    fn exp_is_within_one_ulp_of_std() {
        // Softmax and SiLU exponents: from underflow to overflow.
        assert!(worst(exp, f32::exp, -87.0, 88.0, 400_000) <= 1);
        assert!(worst(exp, f32::exp, -1.0, 1.0, 100_000) <= 1);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn ln_is_within_one_ulp_of_std() {
        assert!(worst(ln, f32::ln, 1e-30, 10.0, 400_000) <= 1);
        assert!(worst(ln, f32::ln, 0.5, 2.0, 100_000) <= 1);
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
    }

    #[test]
    fn sqrt_is_correctly_rounded() {
        assert_eq!(worst(sqrt, f32::sqrt, 0.0, 1e6, 400_000), 0);
        assert_eq!(worst(sqrt, f32::sqrt, 1e-38, 1e-30, 100_000), 0);
        for bits in (0..0x7f80_0000u32).step_by(9973) {
            let x = f32::from_bits(bits);
            assert_eq!(sqrt(x), x.sqrt(), "sqrt({x:e})");
        }
        assert!(sqrt(-1.0).is_nan());
    }

    #[test]
    fn sin_and_cos_are_within_one_ulp_of_std() {
        // RoPE angles: position times a frequency in (0, 1], positions up to a long context.
        assert!(worst(sin, f32::sin, -10.0, 10.0, 200_000) <= 1);
        assert!(worst(cos, f32::cos, -10.0, 10.0, 200_000) <= 1);
        assert!(worst(sin, f32::sin, 0.0, 65536.0, 400_000) <= 1);
        assert!(worst(cos, f32::cos, 0.0, 65536.0, 400_000) <= 1);
    }

    #[test]
    fn fma_is_rounded_once() {
        let mut rng = crate::rng::Rng::new(42);
        let mut value = || {
            let m = rng.next_f32() * 2.0 - 1.0;
            m * [1e-3f32, 1.0, 1e3, 3e-39, 1e30][(rng.next_u32() % 5) as usize]
        };
        for _ in 0..200_000 {
            let (a, b, c) = (value(), value(), value());
            assert_eq!(
                fma(a, b, c).to_bits(),
                a.mul_add(b, c).to_bits(),
                "{a} {b} {c}"
            );
        }
        // Cancellation: the exact answer is the rounding error of a * b.
        let (a, b) = (1.0f32 + f32::EPSILON, 1.0f32 - f32::EPSILON);
        assert_eq!(fma(a, b, -(a * b)), a.mul_add(b, -(a * b)));
    }

    #[test]
    fn rounding_matches_std() {
        let mut x = -300.0f32;
        while x < 300.0 {
            for v in [x, x + 0.5, x - 0.5, x + 0.49999997, x + 0.50000006] {
                assert_eq!(Float::round(v), v.round(), "round({v})");
                assert_eq!(Float::round_ties_even(v), v.round_ties_even(), "{v}");
            }
            x += 0.25;
        }
        for v in [1e9f32, -1e9, 0.0, -0.0, f32::INFINITY] {
            assert_eq!(Float::round(v), v.round());
        }
    }

    #[test]
    fn f64_versions_match_std() {
        // Down to where e^x is subnormal with a few bits left (relative error is then moot).
        for i in 0..=20_000 {
            let x = -708.0 + 1417.0 * i as f64 / 20_000.0;
            let (ours, theirs) = (exp_f64_checked(x), x.exp());
            assert!((ours - theirs).abs() <= theirs * 1e-14, "exp({x})");
            let y = (i as f64 + 0.5) * 1e-3;
            assert!((ln_f64_checked(y) - y.ln()).abs() <= 1e-14 * y.ln().abs().max(1.0));
        }
        assert_eq!(exp_f64_checked(-800.0), 0.0);
        assert!((exp_f64_checked(-720.0) / (-720f64).exp() - 1.0).abs() < 1e-9);
        assert_eq!(ln_f64_checked(5e-324), (5e-324f64).ln());
    }

    #[test]
    fn powf_matches_std_for_rope_frequencies() {
        let mut worst_ulps = 0;
        for head_dim in [2usize, 8, 16, 32, 48, 64, 128, 256] {
            for i in (0..head_dim).step_by(2) {
                let y = -(i as f32) / head_dim as f32;
                worst_ulps = worst_ulps.max(ulps(powf(10000.0, y), 10000f32.powf(y)));
            }
        }
        assert!(worst_ulps <= 1, "{worst_ulps} ulps");
        assert_eq!(powf(3.0, 0.0), 1.0);
        assert!(powf(-2.0, 0.5).is_nan());
    }
}
