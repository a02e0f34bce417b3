//! x86-64 registers for the kernels of [`super::exact`]: an AVX2 register of 8 lanes and an
//! AVX-512F register of 16, and the exact kernels built for each.
//!
//! This module only says how to load, multiply, add and transpose these registers, and builds
//! each exact kernel once per instruction set inside a `#[target_feature]` function (modules
//! [`avx2`] and [`avx512`]), so the compiler may use those instructions there (and only there).
//! Which one runs is decided in [`super::dispatch`].

use core::arch::x86_64::*;

use super::exact;
use super::vector::Vector;

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
            let r: [__m256; 8] = core::array::from_fn(|i| block[i].0);
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
            let mut r: [__m512; 16] = core::array::from_fn(|i| block[i].0);
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

exact::instantiate!(
    /// The exact kernels with AVX2: 8 rows (or tokens, or values) per register.
    avx2,
    crate::kernels::x86::Avx2,
    crate::kernels::x86::Avx2,
    4,
    #[target_feature(enable = "avx2")]
);

exact::instantiate!(
    /// The exact kernels with AVX-512F: 16 per register, but 8 (in AVX2 registers, which
    /// AVX-512F includes) where 16 would waste lanes or thrash the cache.
    avx512,
    crate::kernels::x86::Avx512,
    crate::kernels::x86::Avx2,
    8,
    #[target_feature(enable = "avx512f")]
);
