//! x86-64 vectors for the generic kernels of [`super::simd`]: an AVX2 register of 8 lanes and
//! an AVX-512F register of 16.
//!
//! This module only says how to load, multiply, add and transpose these registers, and builds
//! each generic kernel once per instruction set inside a `#[target_feature]` function, so the
//! compiler may use those instructions there (and only there). Which one runs is decided in
//! [`super::simd::Isa`].

use std::arch::x86_64::*;

use super::simd::{
    divide_generic, dots_strided_generic, matmul_t_generic, max_generic, scores_all_heads_generic,
    weighted_sum_generic, weighted_sums_all_heads_generic, HeadShape, Vector,
};

/// An AVX2 register of 8 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(__m256);

impl Vector for Avx2 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller has checked for AVX2 (see `Vector`).
        Avx2(unsafe { _mm256_setzero_ps() })
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable floats at `p` and AVX2; unaligned is fine.
        Avx2(unsafe { _mm256_loadu_ps(p) })
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self {
        // SAFETY: the mask enables only the first `n` lanes, which the caller guarantees are
        // readable; masked-off lanes are not accessed and read as zero.
        Avx2(unsafe { _mm256_maskload_ps(p, avx2_mask(n)) })
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: the caller has checked for AVX2.
        Avx2(unsafe { _mm256_set1_ps(v) })
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable floats at `p` and AVX2.
        unsafe { _mm256_storeu_ps(p, self.0) }
    }

    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        // SAFETY: the mask enables only the first `n` lanes, which the caller guarantees are
        // writable; masked-off lanes are not touched.
        unsafe { _mm256_maskstore_ps(p, avx2_mask(n), self.0) }
    }

    #[inline(always)]
    unsafe fn add_product(self, a: Self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX2. Multiply, then add: no fused multiply-add.
        Avx2(unsafe { _mm256_add_ps(self.0, _mm256_mul_ps(a.0, b.0)) })
    }

    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX2.
        Avx2(unsafe { _mm256_div_ps(self.0, b.0) })
    }

    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX2.
        Avx2(unsafe { _mm256_max_ps(self.0, b.0) })
    }

    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: a prefetch is a hint that never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }

    #[inline(always)]
    unsafe fn transpose(block: &mut [Self]) {
        debug_assert_eq!(block.len(), 8);
        // SAFETY: the caller has checked for AVX2. Three rounds of shuffles: pairs of lanes,
        // pairs of pairs, then the two 128-bit halves.
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|i| block[i].0);
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            block[0] = Avx2(_mm256_permute2f128_ps::<0x20>(s0, s4));
            block[1] = Avx2(_mm256_permute2f128_ps::<0x20>(s1, s5));
            block[2] = Avx2(_mm256_permute2f128_ps::<0x20>(s2, s6));
            block[3] = Avx2(_mm256_permute2f128_ps::<0x20>(s3, s7));
            block[4] = Avx2(_mm256_permute2f128_ps::<0x31>(s0, s4));
            block[5] = Avx2(_mm256_permute2f128_ps::<0x31>(s1, s5));
            block[6] = Avx2(_mm256_permute2f128_ps::<0x31>(s2, s6));
            block[7] = Avx2(_mm256_permute2f128_ps::<0x31>(s3, s7));
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
        // SAFETY: the caller has checked for AVX-512F. Multiply, then add: no fused
        // multiply-add.
        Avx512(unsafe { _mm512_add_ps(self.0, _mm512_mul_ps(a.0, b.0)) })
    }

    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX-512F.
        Avx512(unsafe { _mm512_div_ps(self.0, b.0) })
    }

    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX-512F.
        Avx512(unsafe { _mm512_max_ps(self.0, b.0) })
    }

    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: a prefetch is a hint that never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }

    #[inline(always)]
    unsafe fn transpose(block: &mut [Self]) {
        debug_assert_eq!(block.len(), 16);
        // SAFETY: the caller has checked for AVX-512F. Four rounds of shuffles: pairs of lanes,
        // pairs of pairs, then 128-bit quarters twice.
        unsafe {
            let mut r: [__m512; 16] = std::array::from_fn(|i| block[i].0);
            let mut t = r;
            for k in 0..8 {
                t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
                t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
            }
            for k in 0..4 {
                let a = _mm512_castps_pd(t[4 * k]);
                let b = _mm512_castps_pd(t[4 * k + 1]);
                let c = _mm512_castps_pd(t[4 * k + 2]);
                let d = _mm512_castps_pd(t[4 * k + 3]);
                r[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
                r[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
                r[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
                r[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
            }
            for k in 0..2 {
                for j in 0..4 {
                    let (a, b) = (r[8 * k + j], r[8 * k + 4 + j]);
                    t[8 * k + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
                    t[8 * k + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(a, b);
                }
            }
            for j in 0..8 {
                let (a, b) = (t[j], t[8 + j]);
                block[j] = Avx512(_mm512_shuffle_f32x4::<0x88>(a, b));
                block[8 + j] = Avx512(_mm512_shuffle_f32x4::<0xDD>(a, b));
            }
        }
    }
}

/// True when 16 rows `stride` floats apart would crowd into the same sets of a level-1 data
/// cache (64 sets of 64-byte lines, 8 to 12 of them per set): 8 or more in one set, with the
/// lines prefetched for the next block beside them, evict each other before they are used.
/// Rows 8 KiB long (hidden size 2048) put all 16 in one set; rows of 2 KiB (dim 512) put 8 in
/// each of two, which measured 13% slower decoding of the stories42M shape than 8 rows at a
/// time.
fn sixteen_rows_alias(stride: usize) -> bool {
    let mut per_set = [0u8; 64];
    for r in 0..16 {
        per_set[(r * stride * 4 / 64) % 64] += 1;
    }
    per_set.iter().any(|&n| n >= 8)
}

/// [`super::simd::Isa::dots_strided`] with AVX2.
///
/// # Safety
///
/// The CPU supports AVX2; the rows fit in `rows`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dots_strided_avx2(out: &mut [f32], x: &[f32], rows: &[f32], stride: usize) {
    // SAFETY: forwarded from this function's contract.
    unsafe { dots_strided_generic::<Avx2>(out, x, rows, stride) }
}

/// [`super::simd::Isa::dots_strided`] with AVX-512: 16 rows at a time, or 8 (in AVX2
/// registers, which AVX-512F includes) when 16 rows would thrash the cache.
///
/// # Safety
///
/// The CPU supports AVX-512F; the rows fit in `rows`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dots_strided_avx512(out: &mut [f32], x: &[f32], rows: &[f32], stride: usize) {
    // SAFETY: forwarded from this function's contract; AVX-512F implies AVX2.
    unsafe {
        if sixteen_rows_alias(stride) {
            dots_strided_generic::<Avx2>(out, x, rows, stride)
        } else {
            dots_strided_generic::<Avx512>(out, x, rows, stride)
        }
    }
}

/// [`super::simd::Isa::matmul_t`] with AVX2: groups of 4 rows (4 running sums and a column of
/// tokens fit easily in 16 registers).
///
/// # Safety
///
/// The CPU supports AVX2; the shapes are consistent.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn matmul_t_avx2(
    out_t: &mut [f32],
    w: &[f32],
    xs_t: &[f32],
    m: usize,
    cols: usize,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { matmul_t_generic::<Avx2, 4>(out_t, w, xs_t, m, cols) }
}

/// [`super::simd::Isa::matmul_t`] with AVX-512: groups of 8 rows.
///
/// # Safety
///
/// The CPU supports AVX-512F; the shapes are consistent.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn matmul_t_avx512(
    out_t: &mut [f32],
    w: &[f32],
    xs_t: &[f32],
    m: usize,
    cols: usize,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { matmul_t_generic::<Avx512, 8>(out_t, w, xs_t, m, cols) }
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

/// [`super::simd::Isa::divide`] with AVX2.
///
/// # Safety
///
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn divide_avx2(x: &mut [f32], divisor: f32) {
    // SAFETY: forwarded from this function's contract.
    unsafe { divide_generic::<Avx2>(x, divisor) }
}

/// [`super::simd::Isa::divide`] with AVX-512.
///
/// # Safety
///
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn divide_avx512(x: &mut [f32], divisor: f32) {
    // SAFETY: forwarded from this function's contract.
    unsafe { divide_generic::<Avx512>(x, divisor) }
}

/// [`super::simd::Isa::scores_all_heads`] with AVX2.
///
/// # Safety
///
/// The CPU supports AVX2; the shapes are consistent.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn scores_all_heads_avx2(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    shape: HeadShape,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { scores_all_heads_generic::<Avx2>(scores, q, keys, shape) }
}

/// [`super::simd::Isa::scores_all_heads`] with AVX-512.
///
/// # Safety
///
/// The CPU supports AVX-512F; the shapes are consistent.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn scores_all_heads_avx512(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    shape: HeadShape,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { scores_all_heads_generic::<Avx512>(scores, q, keys, shape) }
}

/// [`super::simd::Isa::weighted_sums_all_heads`] with AVX2.
///
/// # Safety
///
/// The CPU supports AVX2; the shapes are consistent.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn weighted_sums_all_heads_avx2(
    out: &mut [f32],
    att: &[f32],
    values: &[f32],
    shape: HeadShape,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { weighted_sums_all_heads_generic::<Avx2>(out, att, values, shape) }
}

/// [`super::simd::Isa::weighted_sums_all_heads`] with AVX-512: in AVX2 registers when heads are
/// narrower than 16 values (no lanes wasted on 8-value heads).
///
/// # Safety
///
/// The CPU supports AVX-512F; the shapes are consistent.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn weighted_sums_all_heads_avx512(
    out: &mut [f32],
    att: &[f32],
    values: &[f32],
    shape: HeadShape,
) {
    // SAFETY: forwarded from this function's contract; AVX-512F implies AVX2.
    unsafe {
        if shape.head_dim < 16 {
            weighted_sums_all_heads_generic::<Avx2>(out, att, values, shape)
        } else {
            weighted_sums_all_heads_generic::<Avx512>(out, att, values, shape)
        }
    }
}
