//! Fast arithmetic: matrix-vector products (float and int8), softmax and attention sums that
//! split every sum over vector lanes, the way `gcc -Ofast` vectorises run.c, and are still
//! deterministic.
//!
//! The exact kernels ([`crate::kernels`], [`crate::quant`]) add every sum in run.c's order, so
//! one dot product is one chain of dependent adds. Here a dot product is split over a fixed
//! number of interleaved partial sums ("lanes"), each a chain of fused multiply-adds, and the
//! lanes are added at the end in a fixed tree. The layout is *canonical*: it is part of the
//! definition of each function, not of the instruction set, so the portable version, AVX2 and
//! AVX-512 give the same bits, and since rows are independent, so does any split of the rows
//! over threads.
//!
//! * **Float rows** ([`matvec_f32`]): 32 lanes. Lane `l` adds `w[c] * x[c]` for the columns
//!   `c ≡ l (mod 32)`, in column order, each with one rounding (`fma`), starting from `+0`;
//!   lanes past the end of a row are left alone. Then [`reduce_halving`]: lane `l` += lane
//!   `l + n/2`, halving `n` until one value is left.
//! * **Int8 rows** ([`matvec_q8`]): 16 lanes. The row's bytes go in runs of four ("quads"); a
//!   quad's four products are added exactly as integers, and quad `q` adds that sum times its
//!   group's scale (`ws[g] * xs[g]`, one rounding) into lane `q mod 16` with `fma`. Then the
//!   same halving tree. (The integer part is exact in any order; only these float sums round.)
//! * **Softmax** ([`softmax`]): the maximum (exact in any order), `e^(x - max)` by [`exp`]
//!   (a polynomial, not the C library's), their sum over 16 lanes and the halving tree, and a
//!   multiplication by `1 / sum`.
//!
//! The rounding error of such a sum is at most about `(lanes' chain length + log2(lanes)) *
//! 2^-24` times the sum of `|w[c] x[c]|` (the usual bound for recursive summation, with
//! shorter chains than run.c's one long one). The tests hold every kernel to an `f64` reference
//! within that bound, and the instruction sets to each other bit for bit.
//!
//! What this module is not: it does not spread rows over threads (callers hand it the rows to
//! do), it does not choose a kernel (see [`tune`]), and it knows nothing of models.

#[allow(unused_imports)]
use crate::prelude::*;

#[cfg(feature = "std")]
pub mod tune;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

/// Lanes (interleaved partial sums) of one float dot product.
pub const F32_LANES: usize = 32;
/// Lanes of one int8 dot product's float sum, one per quad of bytes, modulo 16.
pub const Q8_LANES: usize = 16;
/// Lanes of softmax's sum.
pub const SOFTMAX_LANES: usize = 16;
/// The int8 SIMD kernels need groups of a multiple of this many values (a quarter of a 64-byte
/// chunk); [`matvec_q8`] falls back to the portable code for others. Multiples of 32 take
/// the quickest path.
pub const Q8_SIMD_GROUP: usize = 16;

/// An instruction set the fast kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust: runs everywhere (slowly on x86-64 without FMA, where `mul_add` is a call).
    Portable,
    /// x86-64 AVX2 with FMA: 8 float lanes per register.
    Avx2,
    /// x86-64 AVX-512 F, BW and VNNI: 16 float lanes per register, int8 dot products in one
    /// instruction.
    Avx512,
}

impl Isa {
    /// Every instruction set, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The instruction set called `name` (`portable`, `avx2` or `avx512`, any case).
    pub fn named(name: &str) -> Option<Isa> {
        match name.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(Isa::Portable),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            _ => None,
        }
    }

    /// Its name, as [`Isa::named`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// True if this CPU has the instructions.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::has_avx512(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// Every instruction set this CPU runs, slowest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The instruction set `LLAMA2_ISA` asks for, if it names one this CPU runs.
    pub fn forced() -> Option<Isa> {
        let name = crate::platform::env_var("LLAMA2_ISA")?;
        Isa::named(&name).filter(|i| i.is_supported())
    }

    /// The widest instruction set this CPU runs (not necessarily the fastest: ask [`tune`]).
    pub fn widest() -> Isa {
        *Isa::available().last().unwrap_or(&Isa::Portable)
    }

    /// This instruction set if the CPU supports it, otherwise the portable one, so that no
    /// value of `Isa` can make a kernel run an instruction the CPU lacks.
    fn or_portable(self) -> Isa {
        if self.is_supported() {
            self
        } else {
            Isa::Portable
        }
    }
}

/// One way of running a matrix-vector product: the instruction set, how many rows share each
/// load of `x`, and how far ahead (in bytes) the weights are prefetched. Every kernel computes
/// the same bits; they differ only in speed, which [`tune`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// The instruction set.
    pub isa: Isa,
    /// Rows computed side by side, sharing the loads of `x`: one of [`Kernel::rows_choices`].
    pub rows: usize,
    /// Software prefetch of the weights this many bytes ahead of each row's reads; 0: none.
    pub prefetch: usize,
}

impl Kernel {
    /// A reasonable kernel for `isa` without measuring: four rows at a time on AVX-512, two on
    /// AVX2, prefetching 4 KiB ahead.
    pub fn new(isa: Isa) -> Kernel {
        Kernel {
            isa,
            rows: match isa {
                Isa::Portable => 1,
                Isa::Avx2 => 2,
                Isa::Avx512 => 4,
            },
            prefetch: if isa == Isa::Portable { 0 } else { 4096 },
        }
    }

    /// The row counts an instruction set has a kernel for (the registers limit them).
    pub fn rows_choices(isa: Isa) -> &'static [usize] {
        match isa {
            Isa::Portable => &[1],
            Isa::Avx2 => &[1, 2, 3],
            Isa::Avx512 => &[1, 2, 4, 8],
        }
    }
}

/// Float matrix-vector product: `out[r] = Σ_c w[r * cols + c] * x[c]` for `r` in
/// `0..out.len()`, with `cols = x.len()`, summed in the canonical 32-lane order (module doc).
///
/// # Panics
/// If `w.len() != out.len() * x.len()`.
pub fn matvec_f32(kernel: Kernel, out: &mut [f32], w: &[f32], x: &[f32]) {
    assert_eq!(w.len(), out.len() * x.len(), "matrix shape does not match");
    dots_f32_strided(kernel, out, w, x.len(), x);
}

/// [`matvec_f32`] for a matrix whose rows lie `stride` values apart: row `r` is
/// `w[r * stride..r * stride + x.len()]`. Attention's cached keys are such a matrix.
///
/// # Panics
/// If `stride < x.len()` or a row ends past `w`.
pub fn dots_f32_strided(kernel: Kernel, out: &mut [f32], w: &[f32], stride: usize, x: &[f32]) {
    assert!(stride >= x.len(), "rows overlap");
    if let Some(last) = out.len().checked_sub(1) {
        assert!(last * stride + x.len() <= w.len(), "matrix too short");
    }
    let rows = kernel.rows;
    match kernel.isa.or_portable() {
        // SAFETY: `or_portable` checked the CPU has the instructions, and the asserts above
        // that every row is inside `w`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::matvec_f32_avx2(out, w, stride, x, rows, kernel.prefetch) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::matvec_f32_avx512(out, w, stride, x, rows, kernel.prefetch) },
        _ => {
            for (r, o) in out.iter_mut().enumerate() {
                *o = dot_f32(&w[r * stride..r * stride + x.len()], x);
            }
        }
    }
}

/// One float dot product in the canonical order: the definition the SIMD kernels follow.
pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; F32_LANES];
    for (c, (&a, &b)) in w.iter().zip(x).enumerate() {
        let l = c % F32_LANES;
        lanes[l] = a.mul_add(b, lanes[l]);
    }
    reduce_halving(&mut lanes)
}

/// The fixed tree that adds the lanes: lane `l` += lane `l + n/2` while `n` halves. `lanes`
/// must hold a power of two values; it is overwritten.
pub fn reduce_halving(lanes: &mut [f32]) -> f32 {
    debug_assert!(lanes.len().is_power_of_two());
    let mut n = lanes.len();
    while n > 1 {
        n /= 2;
        for l in 0..n {
            lanes[l] += lanes[l + n];
        }
    }
    lanes[0]
}

/// Int8 (Q8_0) matrix-vector product with row-aligned groups:
/// `out[r] = Σ_g (Σ_{i in g} wq[i] * xq[i]) * ws[g] * xs[g]` over row `r`'s groups, summed in
/// the canonical 16-lane quad order (module doc).
///
/// `cols = xs.len() * group`; `wq` holds `out.len() * cols` values, `ws` one scale per group of
/// `group` of them (`cols / group` per row), `xq` at least `cols` values (padding is ignored)
/// and `xs` one scale per group. `xq` must not hold -128 (activations quantized by
/// [`crate::quant::quantize_activation`] never do): AVX2 needs `|x| <= 127`.
///
/// # Panics
/// If the lengths do not fit together, or `group` is 0 or not a multiple of 4 (a quad must lie
/// in one group).
pub fn matvec_q8(
    kernel: Kernel,
    out: &mut [f32],
    wq: &[i8],
    ws: &[f32],
    xq: &[i8],
    xs: &[f32],
    group: usize,
) {
    assert!(group > 0 && group.is_multiple_of(4), "group size");
    let cols = xs.len() * group;
    assert!(xq.len() >= cols, "activations too short");
    assert_eq!(wq.len(), out.len() * cols, "matrix shape does not match");
    assert_eq!(ws.len(), out.len() * xs.len(), "weight scales do not match");
    let isa = match kernel.isa.or_portable() {
        isa if group.is_multiple_of(Q8_SIMD_GROUP) => isa,
        _ => Isa::Portable,
    };
    let rows = kernel.rows;
    match isa {
        // SAFETY: `or_portable` checked the CPU has the instructions, the asserts above the
        // lengths, and `group` is a multiple of 16.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            x86::matvec_q8_avx2(out, wq, ws, xq, xs, group, rows, kernel.prefetch)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            x86::matvec_q8_avx512(out, wq, ws, xq, xs, group, rows, kernel.prefetch)
        },
        _ => {
            let groups = xs.len();
            for (r, o) in out.iter_mut().enumerate() {
                let row = &wq[r * cols..(r + 1) * cols];
                *o = dot_q8(row, &ws[r * groups..(r + 1) * groups], xq, xs, group);
            }
        }
    }
}

/// One int8 dot product in the canonical order: the definition the SIMD kernels follow.
pub fn dot_q8(wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32], group: usize) -> f32 {
    let mut lanes = [0.0f32; Q8_LANES];
    for (q, (w4, x4)) in wq.chunks_exact(4).zip(xq.chunks_exact(4)).enumerate() {
        let quad: i32 = w4.iter().zip(x4).map(|(&a, &b)| a as i32 * b as i32).sum();
        let g = q * 4 / group;
        let l = q % Q8_LANES;
        lanes[l] = (quad as f32).mul_add(ws[g] * xs[g], lanes[l]);
    }
    reduce_halving(&mut lanes)
}

/// Inputs below this give `e^x = 0` in [`exp`] (the true value is below `2^-125`).
pub const EXP_MIN: f32 = -87.0;
/// Inputs above this are taken as this in [`exp`].
pub const EXP_MAX: f32 = 88.0;
/// A bound on the error of [`exp`] on `[EXP_MIN, EXP_MAX]` relative to the true `e^x`. The
/// largest measured, on every 64th `f32` of the range, was 7.7e-8 (0.91 units in the last
/// place); the tests hold a dense sweep to this bound.
pub const EXP_MAX_RELATIVE_ERROR: f32 = 1.0e-7;

/// `e^x` for every value in place, vectorised: `x = n ln 2 + r` with `n` an integer and
/// `|r| <= ln 2 / 2`, `e^r` by its Taylor polynomial to degree 7 (Horner, with `fma`), times
/// `2^n` built in the exponent bits. Within [`EXP_MAX_RELATIVE_ERROR`] of `e^x` on
/// `[EXP_MIN, EXP_MAX]`; 0 below, `e^EXP_MAX` above; NaN stays NaN. Every instruction set
/// computes the same bits.
pub fn exp(isa: Isa, x: &mut [f32]) {
    match isa.or_portable() {
        // SAFETY: `or_portable` checked the CPU has the instructions.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::exp_avx2(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::exp_avx512(x) },
        _ => x.iter_mut().for_each(|v| *v = exp_one(*v)),
    }
}

/// ln 2 as the nearest `f32`, and what that misses of it.
const LN2_HI: f32 = core::f32::consts::LN_2;
const LN2_LO: f32 = -1.904_654_3e-9;
/// 1 / k! for k = 7 down to 2: the Taylor coefficients of `e^r` after `1 + r`.
const EXP_TAYLOR: [f32; 6] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// [`exp`] of one value: the definition the SIMD versions follow operation for operation.
pub fn exp_one(x: f32) -> f32 {
    // Clamp (a NaN passes through), split off n ln 2, and evaluate the polynomial.
    let t = if EXP_MIN > x { EXP_MIN } else { x };
    let t = if EXP_MAX < t { EXP_MAX } else { t };
    let n = (t * core::f32::consts::LOG2_E).round_ties_even();
    let r = (-n).mul_add(LN2_HI, t);
    let r = (-n).mul_add(LN2_LO, r);
    let mut p = EXP_TAYLOR[0];
    for &c in &EXP_TAYLOR[1..] {
        p = p.mul_add(r, c);
    }
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < EXP_MIN {
        0.0
    } else {
        p * two_n
    }
}

/// Softmax in place: `x[i] = e^(x[i] - max) / Σ e^(x[j] - max)`, with [`exp`] and the sum over
/// 16 lanes (module doc); the result is multiplied by `1 / sum`.
pub fn softmax(isa: Isa, x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for v in x.iter_mut() {
        *v -= max;
    }
    exp(isa, x);
    let mut lanes = [0.0f32; SOFTMAX_LANES];
    let mut chunks = x.chunks_exact(SOFTMAX_LANES);
    for chunk in &mut chunks {
        for (s, &v) in lanes.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    for (s, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *s += v;
    }
    let inverse = 1.0 / reduce_halving(&mut lanes);
    for v in x.iter_mut() {
        *v *= inverse;
    }
}

/// Attention's weighted sum of values: `out[i] = Σ_t a[t] * values[t * stride + i]`, each
/// output lane a chain of `fma` in position order (the same bits on every instruction set,
/// which only decides how many lanes go at once).
///
/// # Panics
/// If `stride < out.len()` or a row ends past `values`.
pub fn weighted_sum(isa: Isa, out: &mut [f32], a: &[f32], values: &[f32], stride: usize) {
    assert!(stride >= out.len(), "rows overlap");
    if let Some(last) = a.len().checked_sub(1) {
        assert!(
            last * stride + out.len() <= values.len(),
            "values too short"
        );
    }
    match isa.or_portable() {
        // SAFETY: `or_portable` checked the CPU has the instructions, the asserts the rows.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::weighted_sum_avx2(out, a, values, stride) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::weighted_sum_avx512(out, a, values, stride) },
        _ => {
            out.fill(0.0);
            for (t, &at) in a.iter().enumerate() {
                let row = &values[t * stride..t * stride + out.len()];
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = at.mul_add(v, *o);
                }
            }
        }
    }
}
