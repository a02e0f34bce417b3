//! x86-64 vectors of 16 lanes for the generic kernels of [`super::simd`]: one AVX-512F register,
//! or two AVX2 registers.
//!
//! This module only says how to load, multiply, add and sum one vector, and builds each generic
//! kernel once per instruction set inside a `#[target_feature]` function, so the compiler may use
//! those instructions there (and only there). Which one runs is decided in [`super::simd::Isa`].

use std::arch::x86_64::*;

use super::simd::{
    dot_generic, dots_strided_generic, matmul_t_generic, matvec_generic, max_generic,
    weighted_sum_generic, Vector,
};

/// Sixteen lanes in two AVX2 registers: lanes 0-7 and 8-15. Sixteen, not eight, so that sums
/// come out exactly as on the other instruction sets (see [`super::simd`]).
#[derive(Clone, Copy)]
pub(crate) struct Avx2(__m256, __m256);

impl Avx2 {
    /// `f` applied to each half.
    ///
    /// # Safety
    ///
    /// The CPU supports whatever `f` uses.
    #[inline(always)]
    unsafe fn halves(self, b: Self, f: impl Fn(__m256, __m256) -> __m256) -> Self {
        Avx2(f(self.0, b.0), f(self.1, b.1))
    }
}

impl Vector for Avx2 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller has checked for AVX2 (see `Vector`).
        unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable floats at `p` and AVX2; unaligned is fine.
        unsafe { Avx2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self {
        // SAFETY: the masks enable only the first `n` lanes, which the caller guarantees are
        // readable; masked-off lanes are not accessed and read as zero.
        unsafe {
            if n >= 8 {
                Avx2(
                    _mm256_loadu_ps(p),
                    _mm256_maskload_ps(p.add(8), avx2_mask(n - 8)),
                )
            } else {
                Avx2(_mm256_maskload_ps(p, avx2_mask(n)), _mm256_setzero_ps())
            }
        }
    }

    #[inline(always)]
    unsafe fn gather(p: *const f32, stride: usize) -> Self {
        // SAFETY: the caller guarantees the 16 floats at `p + j * stride` are readable and that
        // the offsets fit in `i32`, and has checked for AVX2.
        unsafe {
            let s = stride as i32;
            let low = _mm256_mullo_epi32(
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                _mm256_set1_epi32(s),
            );
            let high = _mm256_add_epi32(low, _mm256_set1_epi32(8 * s));
            Avx2(
                _mm256_i32gather_ps::<4>(p, low),
                _mm256_i32gather_ps::<4>(p, high),
            )
        }
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: the caller has checked for AVX2.
        unsafe { Avx2(_mm256_set1_ps(v), _mm256_set1_ps(v)) }
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable floats at `p` and AVX2.
        unsafe {
            _mm256_storeu_ps(p, self.0);
            _mm256_storeu_ps(p.add(8), self.1);
        }
    }

    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        // SAFETY: the masks enable only the first `n` lanes, which the caller guarantees are
        // writable; masked-off lanes are not touched.
        unsafe {
            if n >= 8 {
                _mm256_storeu_ps(p, self.0);
                _mm256_maskstore_ps(p.add(8), avx2_mask(n - 8), self.1);
            } else {
                _mm256_maskstore_ps(p, avx2_mask(n), self.0);
            }
        }
    }

    #[inline(always)]
    unsafe fn add_product(self, a: Self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX2.
        unsafe {
            let product = a.halves(b, |a, b| _mm256_mul_ps(a, b));
            self.halves(product, |s, p| _mm256_add_ps(s, p))
        }
    }

    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX2.
        unsafe { self.halves(b, |a, b| _mm256_add_ps(a, b)) }
    }

    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX2.
        unsafe { self.halves(b, |a, b| _mm256_mul_ps(a, b)) }
    }

    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX2.
        unsafe { self.halves(b, |a, b| _mm256_max_ps(a, b)) }
    }

    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        // SAFETY: the caller has checked for AVX2.
        unsafe {
            let oct = _mm256_add_ps(self.0, self.1);
            let quad = _mm_add_ps(_mm256_castps256_ps128(oct), _mm256_extractf128_ps::<1>(oct));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            let one = _mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair));
            _mm_cvtss_f32(one)
        }
    }
}

/// A mask of the first `n` of 8 lanes (all bits set in each), for AVX2's masked loads and stores.
///
/// # Safety
///
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn avx2_mask(n: usize) -> __m256i {
    // SAFETY: the caller has checked for AVX2.
    unsafe {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane)
    }
}

/// An AVX-512 register of 16 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Avx512(__m512);

impl Vector for Avx512 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller has checked for AVX-512F (see `Vector`).
        Avx512(unsafe { _mm512_setzero_ps() })
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable floats at `p` and AVX-512F.
        Avx512(unsafe { _mm512_loadu_ps(p) })
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self {
        // SAFETY: the mask enables only the first `n` lanes (`n < 16`), which the caller
        // guarantees are readable; masked-off lanes are not accessed and read as zero.
        unsafe {
            let mask: __mmask16 = (1u16 << n) - 1;
            Avx512(_mm512_maskz_loadu_ps(mask, p))
        }
    }

    #[inline(always)]
    unsafe fn gather(p: *const f32, stride: usize) -> Self {
        // SAFETY: the caller guarantees the 16 floats at `p + j * stride` are readable and that
        // the offsets fit in `i32`, and has checked for AVX-512F.
        unsafe {
            let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let offsets = _mm512_mullo_epi32(lane, _mm512_set1_epi32(stride as i32));
            Avx512(_mm512_i32gather_ps::<4>(offsets, p))
        }
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: the caller has checked for AVX-512F.
        Avx512(unsafe { _mm512_set1_ps(v) })
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable floats at `p` and AVX-512F.
        unsafe { _mm512_storeu_ps(p, self.0) }
    }

    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        // SAFETY: the mask enables only the first `n` lanes (`n < 16`), which the caller
        // guarantees are writable; masked-off lanes are not touched.
        unsafe { _mm512_mask_storeu_ps(p, (1u16 << n) - 1, self.0) }
    }

    #[inline(always)]
    unsafe fn add_product(self, a: Self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX-512F.
        Avx512(unsafe { _mm512_add_ps(self.0, _mm512_mul_ps(a.0, b.0)) })
    }

    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX-512F.
        Avx512(unsafe { _mm512_add_ps(self.0, b.0) })
    }

    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX-512F.
        Avx512(unsafe { _mm512_mul_ps(self.0, b.0) })
    }

    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX-512F.
        Avx512(unsafe { _mm512_max_ps(self.0, b.0) })
    }

    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        // SAFETY: the caller has checked for AVX-512F, which implies AVX and SSE.
        unsafe {
            let v = self.0;
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            let oct = _mm256_add_ps(lo, hi);
            let quad = _mm_add_ps(_mm256_castps256_ps128(oct), _mm256_extractf128_ps::<1>(oct));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            let one = _mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair));
            _mm_cvtss_f32(one)
        }
    }
}

/// [`super::simd::Isa::dot`] with AVX2.
///
/// # Safety
///
/// The CPU supports AVX2; `a` and `b` have the same length.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: forwarded from this function's contract.
    unsafe { dot_generic::<Avx2>(a, b) }
}

/// [`super::simd::Isa::dot`] with AVX-512.
///
/// # Safety
///
/// The CPU supports AVX-512F; `a` and `b` have the same length.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: forwarded from this function's contract.
    unsafe { dot_generic::<Avx512>(a, b) }
}

/// [`super::simd::Isa::matvec`] with AVX2.
///
/// # Safety
///
/// The CPU supports AVX2; `w.len() == out.len() * x.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn matvec_avx2(out: &mut [f32], w: &[f32], x: &[f32]) {
    // SAFETY: forwarded from this function's contract.
    unsafe { matvec_generic::<Avx2>(out, w, x) }
}

/// [`super::simd::Isa::matvec`] with AVX-512.
///
/// # Safety
///
/// The CPU supports AVX-512F; `w.len() == out.len() * x.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn matvec_avx512(out: &mut [f32], w: &[f32], x: &[f32]) {
    // SAFETY: forwarded from this function's contract.
    unsafe { matvec_generic::<Avx512>(out, w, x) }
}

/// [`super::simd::Isa::matmul_t`] with AVX2: tiles of 2 rows by 2 tokens (4 accumulators of two
/// registers each, of the 16 registers; the fastest tile measured).
///
/// # Safety
///
/// The CPU supports AVX2; the shapes are consistent.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn matmul_t_avx2(out_t: &mut [f32], w: &[f32], xs: &[f32], cols: usize) {
    // SAFETY: forwarded from this function's contract.
    unsafe { matmul_t_generic::<Avx2, 2, 2>(out_t, w, xs, cols) }
}

/// [`super::simd::Isa::matmul_t`] with AVX-512: tiles of 4 rows by 4 tokens (16 accumulators of
/// the 32 registers; larger tiles measured slower, the compiler spilling accumulators).
///
/// # Safety
///
/// The CPU supports AVX-512F; the shapes are consistent.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn matmul_t_avx512(out_t: &mut [f32], w: &[f32], xs: &[f32], cols: usize) {
    // SAFETY: forwarded from this function's contract.
    unsafe { matmul_t_generic::<Avx512, 4, 4>(out_t, w, xs, cols) }
}

/// [`super::simd::Isa::dots_strided`] with AVX2.
///
/// # Safety
///
/// The CPU supports AVX2; the rows fit in `rows`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dots_strided_avx2(scores: &mut [f32], q: &[f32], rows: &[f32], stride: usize) {
    // SAFETY: forwarded from this function's contract.
    unsafe { dots_strided_generic::<Avx2>(scores, q, rows, stride) }
}

/// [`super::simd::Isa::dots_strided`] with AVX-512.
///
/// # Safety
///
/// The CPU supports AVX-512F; the rows fit in `rows`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dots_strided_avx512(
    scores: &mut [f32],
    q: &[f32],
    rows: &[f32],
    stride: usize,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { dots_strided_generic::<Avx512>(scores, q, rows, stride) }
}

/// [`super::simd::Isa::weighted_sum_strided`] with AVX2.
///
/// # Safety
///
/// The CPU supports AVX2; the rows fit in `rows`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn weighted_sum_avx2(
    out: &mut [f32],
    weights: &[f32],
    rows: &[f32],
    stride: usize,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { weighted_sum_generic::<Avx2>(out, weights, rows, stride) }
}

/// [`super::simd::Isa::weighted_sum_strided`] with AVX-512.
///
/// # Safety
///
/// The CPU supports AVX-512F; the rows fit in `rows`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn weighted_sum_avx512(
    out: &mut [f32],
    weights: &[f32],
    rows: &[f32],
    stride: usize,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { weighted_sum_generic::<Avx512>(out, weights, rows, stride) }
}

/// [`super::simd::Isa::max`] with AVX2.
///
/// # Safety
///
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn max_avx2(x: &[f32]) -> f32 {
    // SAFETY: forwarded from this function's contract.
    unsafe { max_generic::<Avx2>(x) }
}

/// [`super::simd::Isa::max`] with AVX-512.
///
/// # Safety
///
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn max_avx512(x: &[f32]) -> f32 {
    // SAFETY: forwarded from this function's contract.
    unsafe { max_generic::<Avx512>(x) }
}
