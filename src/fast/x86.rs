//! The fast kernels for x86-64: AVX2 with FMA (8 float lanes a register) and AVX-512 (16).
//!
//! Each computes the canonical order of [`super`] exactly, only several lanes per instruction:
//!
//! * float rows: 32 lanes are four AVX2 registers or two AVX-512 ones; a row's tail updates its
//!   first lanes under a mask and leaves the others alone, as the definition says;
//! * int8 rows: a 64-byte chunk of a row gives 16 quad sums (AVX-512 VNNI `vpdpbusd`, or AVX2
//!   `vpmaddubsw` then `vpmaddwd` on each 32-byte half), lane `l` for bytes `4l..4l+4`, which is
//!   quad `q ≡ l (mod 16)`;
//! * the lanes are added in the halving tree, register halves first.
//!
//! A kernel does `R` rows side by side (each load of `x` serves all of them) and can ask for
//! the weights `prefetch` bytes ahead of where each row reads, so that the next rows are on
//! their way while these are summed. `R` and the prefetch distance change the speed, never the
//! result; [`super::tune`] picks them by timing.
//!
//! Int8 products multiply unsigned by signed bytes, and weights may be any `i8`:
//!
//! * AVX-512 flips each weight's top bit (`w + 128`, now `0..=255`) and starts each quad's sum
//!   at `-128 * (sum of the quad's x)`, computed once per chunk of `x` for all rows;
//! * AVX2 multiplies `|w|` (at most 128) by `x` carrying `w`'s sign: a pair of products is at
//!   most `2 * 128 * 127`, inside `vpmaddubsw`'s `i16`, given `x != -128`.

use core::arch::x86_64::*;

#[allow(unused_imports)]
use crate::prelude::*;

use super::{exp_one, EXP_MAX, EXP_MIN, EXP_TAYLOR, LN2_HI, LN2_LO};

/// True if the CPU runs the AVX2 kernels.
pub fn has_avx2() -> bool {
    crate::platform::cpu_has!("avx2") && crate::platform::cpu_has!("fma")
}

/// True if the CPU runs the AVX-512 kernels.
pub fn has_avx512() -> bool {
    has_avx2()
        && crate::platform::cpu_has!("avx512f")
        && crate::platform::cpu_has!("avx512bw")
        && crate::platform::cpu_has!("avx512vl")
        && crate::platform::cpu_has!("avx512vnni")
}

/// Ask for the cache line at `p` (a hint: an address outside any mapping is ignored).
#[inline(always)]
fn fetch_line<T>(p: *const T) {
    // SAFETY: prefetching never faults and has no effect on program state.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
}

// ---------------------------------------------------------------------------------------------
// Float matrix-vector product
// ---------------------------------------------------------------------------------------------

/// Pick the kernel with `rows` rows a pass (rounded down to one there is) and prefetch or not.
macro_rules! dispatch_rows {
    ($kernel:ident, $rows:expr, $prefetch:expr, [$($r:literal),+], $args:tt) => {{
        let rows = $rows;
        let on = $prefetch > 0;
        $(
            if rows == $r {
                return if on { $kernel::<$r, true> $args } else { $kernel::<$r, false> $args };
            }
        )+
        if on { $kernel::<1, true> $args } else { $kernel::<1, false> $args }
    }};
}

/// Run the kernel `$block` on the rows of `$out`: `$R` at a time, the last few one at a time.
/// `$args` are its arguments after the block's outputs, for the block starting at row `$r`.
macro_rules! in_blocks {
    ($out:expr, $R:ident, $PF:ident, $block:ident, |$r:ident| ($($arg:expr),*)) => {{
        let out: &mut [f32] = $out;
        let mut $r = 0;
        while $r < out.len() {
            let n = if $r + $R <= out.len() { $R } else { 1 };
            let rows = &mut out[$r..$r + n];
            if n == $R {
                $block::<$R, $PF>(rows, $($arg),*)
            } else {
                $block::<1, $PF>(rows, $($arg),*)
            }
            $r += n;
        }
    }};
}

/// [`super::dots_f32_strided`] on AVX2.
///
/// # Safety
/// The CPU must have AVX2 and FMA, and each of the `out.len()` rows (`stride` apart) must end
/// inside `w`, with `stride >= x.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matvec_f32_avx2(
    out: &mut [f32],
    w: &[f32],
    stride: usize,
    x: &[f32],
    rows: usize,
    prefetch: usize,
) {
    dispatch_rows!(
        f32_rows_avx2,
        rows,
        prefetch,
        [1, 2, 3],
        (out, w, stride, x, prefetch)
    )
}

/// [`super::dots_f32_strided`] on AVX-512.
///
/// # Safety
/// As [`matvec_f32_avx2`], with AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub unsafe fn matvec_f32_avx512(
    out: &mut [f32],
    w: &[f32],
    stride: usize,
    x: &[f32],
    rows: usize,
    prefetch: usize,
) {
    dispatch_rows!(
        f32_rows_avx512,
        rows,
        prefetch,
        [1, 2, 4, 8],
        (out, w, stride, x, prefetch)
    )
}

/// All rows, `R` at a time, the last few one at a time.
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_rows_avx2<const R: usize, const PF: bool>(
    out: &mut [f32],
    w: &[f32],
    stride: usize,
    x: &[f32],
    prefetch: usize,
) {
    // SAFETY: rows r..r+n lie inside `w` (the caller's promise).
    unsafe {
        in_blocks!(out, R, PF, f32_block_avx2, |r| (
            w.as_ptr().add(r * stride),
            stride,
            x,
            prefetch
        ))
    }
}

/// Lanes `0..n` of an 8-lane mask (`n` clamped to `0..=8`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lane_mask_avx2(n: usize) -> __m256i {
    let n = n.min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Add the 8 lanes of `v` in the halving tree.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn reduce8(v: __m256) -> f32 {
    let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    let v = _mm_add_ss(v, _mm_shuffle_ps::<1>(v, v));
    _mm_cvtss_f32(v)
}

/// `R` rows starting at `w`, 32 lanes each in four registers.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_block_avx2<const R: usize, const PF: bool>(
    out: &mut [f32],
    w: *const f32,
    stride: usize,
    x: &[f32],
    prefetch: usize,
) {
    let cols = x.len();
    let xp = x.as_ptr();
    let full = cols - cols % 32;
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    let mut c = 0;
    // SAFETY (whole loop): every read is within columns 0..cols of a row the caller vouched
    // for; prefetches only hint.
    while c < full {
        let xv = unsafe { [0, 8, 16, 24].map(|k| _mm256_loadu_ps(xp.add(c + k))) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let p = unsafe { w.add(r * stride + c) };
            if PF {
                fetch_line(p.wrapping_byte_add(prefetch));
                fetch_line(p.wrapping_byte_add(prefetch + 64));
            }
            for k in 0..4 {
                let wv = unsafe { _mm256_loadu_ps(p.add(8 * k)) };
                acc[k] = _mm256_fmadd_ps(wv, xv[k], acc[k]);
            }
        }
        c += 32;
    }
    if c < cols {
        // The tail: lanes past the row's end keep their sums (blend), as the definition says.
        let tail = cols - c;
        for k in 0..4 {
            let n = tail.saturating_sub(8 * k);
            if n == 0 {
                break;
            }
            let mask = lane_mask_avx2(n);
            // SAFETY: masked loads read only lanes < n, inside the rows and `x`.
            let xv = unsafe { _mm256_maskload_ps(xp.add(c + 8 * k), mask) };
            for (r, acc) in acc.iter_mut().enumerate() {
                let wv = unsafe { _mm256_maskload_ps(w.add(r * stride + c + 8 * k), mask) };
                let sum = _mm256_fmadd_ps(wv, xv, acc[k]);
                acc[k] = _mm256_blendv_ps(acc[k], sum, _mm256_castsi256_ps(mask));
            }
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        let half = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
        *o = reduce8(half);
    }
}

/// 32 bytes at `p`, or 16 and zeros unless `both` quarters are there.
///
/// # Safety
/// The bytes read must be readable.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_half(p: *const i8, both: bool) -> __m256i {
    // SAFETY: the caller's promise.
    unsafe {
        if both {
            _mm256_loadu_si256(p as *const __m256i)
        } else {
            _mm256_zextsi128_si256(_mm_loadu_si128(p as *const __m128i))
        }
    }
}

/// The scale at `p` in all 8 lanes, or if `two`, it in lanes 0..4 and the next in 4..8.
///
/// # Safety
/// `p` (and `p + 1` if `two`) must be readable.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn quarter_scales(p: *const f32, two: bool, second_quarter: __m256i) -> __m256 {
    // SAFETY: the caller's promise.
    unsafe {
        if two {
            let pair = _mm_castpd_ps(_mm_load_sd(p as *const f64));
            _mm256_permutevar8x32_ps(_mm256_castps128_ps256(pair), second_quarter)
        } else {
            _mm256_set1_ps(*p)
        }
    }
}

/// All rows, `R` at a time, the last few one at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn f32_rows_avx512<const R: usize, const PF: bool>(
    out: &mut [f32],
    w: &[f32],
    stride: usize,
    x: &[f32],
    prefetch: usize,
) {
    // SAFETY: rows r..r+n lie inside `w` (the caller's promise).
    unsafe {
        in_blocks!(out, R, PF, f32_block_avx512, |r| (
            w.as_ptr().add(r * stride),
            stride,
            x,
            prefetch
        ))
    }
}

/// The mask of lanes `0..n` of 16 (`n` clamped to `0..=16`).
#[inline]
fn lane_mask16(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// Add the 16 lanes of `v` in the halving tree.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn reduce16(v: __m512) -> f32 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    reduce8(_mm256_add_ps(_mm512_castps512_ps256(v), hi))
}

/// `R` rows starting at `w`, 32 lanes each in two registers.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn f32_block_avx512<const R: usize, const PF: bool>(
    out: &mut [f32],
    w: *const f32,
    stride: usize,
    x: &[f32],
    prefetch: usize,
) {
    let cols = x.len();
    let xp = x.as_ptr();
    let full = cols - cols % 32;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let mut c = 0;
    // SAFETY (whole loop): every read is within columns 0..cols of a row the caller vouched
    // for; prefetches only hint.
    while c < full {
        let x0 = unsafe { _mm512_loadu_ps(xp.add(c)) };
        let x1 = unsafe { _mm512_loadu_ps(xp.add(c + 16)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let p = unsafe { w.add(r * stride + c) };
            if PF {
                fetch_line(p.wrapping_byte_add(prefetch));
                fetch_line(p.wrapping_byte_add(prefetch + 64));
            }
            acc[0] = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(p) }, x0, acc[0]);
            acc[1] = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(p.add(16)) }, x1, acc[1]);
        }
        c += 32;
    }
    if c < cols {
        // The tail: lanes past the row's end keep their sums (`mask3`), as the definition says.
        let tail = cols - c;
        let (m0, m1) = (lane_mask16(tail), lane_mask16(tail.saturating_sub(16)));
        // SAFETY: masked loads read only the lanes in the mask, inside the rows and `x`.
        let x0 = unsafe { _mm512_maskz_loadu_ps(m0, xp.add(c)) };
        let x1 = unsafe { _mm512_maskz_loadu_ps(m1, xp.wrapping_add(c + 16)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let p = unsafe { w.add(r * stride + c) };
            let w0 = unsafe { _mm512_maskz_loadu_ps(m0, p) };
            let w1 = unsafe { _mm512_maskz_loadu_ps(m1, p.wrapping_add(16)) };
            acc[0] = _mm512_mask3_fmadd_ps(w0, x0, acc[0], m0);
            acc[1] = _mm512_mask3_fmadd_ps(w1, x1, acc[1], m1);
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = reduce16(_mm512_add_ps(a[0], a[1]));
    }
}

// ---------------------------------------------------------------------------------------------
// Int8 matrix-vector product
// ---------------------------------------------------------------------------------------------

/// Run `$body` for every 64-byte chunk of a row, with `$c` its first byte, `$g0` and `$g1` the
/// groups of its two 32-byte halves, and `$whole` false for a last chunk of one half. Groups of
/// whole chunks and of 32 bytes are walked without dividing; others step a [`GroupWalk`].
macro_rules! for_each_chunk {
    ($group:expr, $groups:expr, |$c:ident, $g0:ident, $g1:ident, $whole:ident| $body:block) => {{
        let (group, groups): (usize, usize) = ($group, $groups);
        if group.is_multiple_of(64) {
            let chunks_per_group = group / 64;
            for g in 0..groups {
                for k in 0..chunks_per_group {
                    let ($c, $g0, $g1, $whole) = (64 * (g * chunks_per_group + k), g, g, true);
                    $body
                }
            }
        } else if group == 32 {
            for pair in 0..groups / 2 {
                let ($c, $g0, $g1, $whole) = (64 * pair, 2 * pair, 2 * pair + 1, true);
                $body
            }
            if groups % 2 == 1 {
                let last = groups - 1;
                let ($c, $g0, $g1, $whole) = (32 * last, last, last, false);
                $body
            }
        } else {
            let cols = group * groups;
            let mut walk = GroupWalk::new(32, group);
            for $c in (0..cols).step_by(64) {
                let $whole = $c + 64 <= cols;
                let $g0 = walk.next();
                let $g1 = if $whole { walk.next() } else { $g0 };
                $body
            }
        }
    }};
}

/// Which group each piece of `unit` bytes (32: halves, 16: quarters of a chunk) of a row
/// belongs to, piece after piece.
#[derive(Clone, Copy)]
struct GroupWalk {
    units_per_group: usize,
    group: usize,
    unit_in_group: usize,
}

impl GroupWalk {
    fn new(unit: usize, group_size: usize) -> GroupWalk {
        GroupWalk {
            units_per_group: group_size / unit,
            group: 0,
            unit_in_group: 0,
        }
    }

    /// The group of the current piece; then step to the next piece.
    #[inline(always)]
    fn next(&mut self) -> usize {
        let g = self.group;
        self.unit_in_group += 1;
        if self.unit_in_group == self.units_per_group {
            self.unit_in_group = 0;
            self.group += 1;
        }
        g
    }
}

/// [`super::matvec_q8`] on AVX2.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `group` a multiple of 16; `wq` holds `out.len()` rows of
/// `cols = xs.len() * group` values, `ws` their `xs.len()` scales each, `xq` at least `cols`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn matvec_q8_avx2(
    out: &mut [f32],
    wq: &[i8],
    ws: &[f32],
    xq: &[i8],
    xs: &[f32],
    group: usize,
    rows: usize,
    prefetch: usize,
) {
    dispatch_rows!(
        q8_rows_avx2,
        rows,
        prefetch,
        [1, 2, 4],
        (out, wq, ws, xq, xs, group, prefetch)
    )
}

/// [`super::matvec_q8`] on AVX-512.
///
/// # Safety
/// As [`matvec_q8_avx2`], with AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn matvec_q8_avx512(
    out: &mut [f32],
    wq: &[i8],
    ws: &[f32],
    xq: &[i8],
    xs: &[f32],
    group: usize,
    rows: usize,
    prefetch: usize,
) {
    dispatch_rows!(
        q8_rows_avx512,
        rows,
        prefetch,
        [1, 2, 4, 8],
        (out, wq, ws, xq, xs, group, prefetch)
    )
}

/// All rows, `R` at a time, the last few one at a time.
#[target_feature(enable = "avx2,fma")]
unsafe fn q8_rows_avx2<const R: usize, const PF: bool>(
    out: &mut [f32],
    wq: &[i8],
    ws: &[f32],
    xq: &[i8],
    xs: &[f32],
    group: usize,
    prefetch: usize,
) {
    let (cols, groups) = (xs.len() * group, xs.len());
    // SAFETY: rows r..r+n lie inside `wq` and their scales inside `ws` (the caller's promise).
    unsafe {
        in_blocks!(out, R, PF, q8_block_avx2, |r| (
            wq.as_ptr().add(r * cols),
            ws.as_ptr().add(r * groups),
            xq,
            xs,
            group,
            prefetch
        ))
    }
}

/// `R` int8 rows starting at `w` (scales at `s`), 16 lanes each in two registers, one per
/// 32-byte half of a chunk.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn q8_block_avx2<const R: usize, const PF: bool>(
    out: &mut [f32],
    w: *const i8,
    s: *const f32,
    xq: &[i8],
    xs: &[f32],
    group: usize,
    prefetch: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    if !group.is_multiple_of(32) {
        // SAFETY: the caller's promises, passed on.
        unsafe { q8_quarters_avx2::<R, PF>(&mut acc, w, s, xq, xs, group, prefetch) };
    } else {
        // SAFETY: as above.
        unsafe { q8_halves_avx2::<R, PF>(&mut acc, w, s, xq, xs, group, prefetch) };
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = reduce8(_mm256_add_ps(a[0], a[1]));
    }
}

/// [`q8_block_avx2`]'s sums for groups of a multiple of 32 bytes: each 32-byte half of a
/// chunk in one group.
///
/// # Safety
/// As [`matvec_q8_avx2`], with `group` a multiple of 32.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn q8_halves_avx2<const R: usize, const PF: bool>(
    acc: &mut [[__m256; 2]; R],
    w: *const i8,
    s: *const f32,
    xq: &[i8],
    xs: &[f32],
    group: usize,
    prefetch: usize,
) {
    let (cols, groups) = (xs.len() * group, xs.len());
    let ones = _mm256_set1_epi16(1);
    for_each_chunk!(group, groups, |c, g0, g1, whole| {
        let halves = if whole { 2 } else { 1 };
        for (h, g) in [g0, g1].into_iter().enumerate().take(halves) {
            // SAFETY: the half's bytes c + 32h.. + 32 <= cols lie inside the rows and `xq`,
            // and g < groups; prefetches only hint.
            let xv = unsafe { _mm256_loadu_si256(xq.as_ptr().add(c + 32 * h) as *const __m256i) };
            let x_scale = _mm256_set1_ps(unsafe { *xs.get_unchecked(g) });
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = unsafe { w.add(r * cols + c + 32 * h) };
                if PF && h == 0 {
                    fetch_line(p.wrapping_add(prefetch));
                }
                let wv = unsafe { _mm256_loadu_si256(p as *const __m256i) };
                let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
                let quads = _mm256_madd_epi16(pairs, ones);
                let w_scale = _mm256_set1_ps(unsafe { *s.add(r * groups + g) });
                let scale = _mm256_mul_ps(w_scale, x_scale);
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), scale, acc[h]);
            }
        }
    });
}

/// [`q8_block_avx2`]'s sums for groups of a multiple of 16 bytes but not of 32: a 32-byte half
/// may span two groups, one per 16-byte quarter (lanes 0..4 and 4..8).
///
/// # Safety
/// As [`matvec_q8_avx2`], with `group` a multiple of 16.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn q8_quarters_avx2<const R: usize, const PF: bool>(
    acc: &mut [[__m256; 2]; R],
    w: *const i8,
    s: *const f32,
    xq: &[i8],
    xs: &[f32],
    group: usize,
    prefetch: usize,
) {
    let (cols, groups) = (xs.len() * group, xs.len());
    let ones = _mm256_set1_epi16(1);
    let second_quarter = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    let mut walk = GroupWalk::new(16, group);
    // Lanes of a missing second quarter keep their sums.
    let keep = _mm256_castsi256_ps(_mm256_setr_epi32(0, 0, 0, 0, -1, -1, -1, -1));
    for chunk in (0..cols).step_by(64) {
        // The two halves spelled out (`h` a constant), so the sums stay in registers.
        for h in 0..2 {
            let c = chunk + 32 * h;
            if c >= cols {
                break;
            }
            let both = c + 32 <= cols;
            let ga = walk.next();
            let gb = if both { walk.next() } else { ga };
            // SAFETY (loop body): bytes c..c+32 (c..c+16 unless `both`) lie inside the rows
            // and `xq`, ga, gb < groups, gb = ga + 1 when they differ; prefetches only hint.
            let xv = unsafe { load_half(xq.as_ptr().add(c), both) };
            let x_scales = unsafe { quarter_scales(xs.as_ptr().add(ga), gb != ga, second_quarter) };
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = unsafe { w.add(r * cols + c) };
                if PF && h == 0 {
                    fetch_line(p.wrapping_add(prefetch));
                }
                let wv = unsafe { load_half(p, both) };
                let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
                let quads = _mm256_madd_epi16(pairs, ones);
                let row = unsafe { s.add(r * groups + ga) };
                let w_scales = unsafe { quarter_scales(row, gb != ga, second_quarter) };
                let scale = _mm256_mul_ps(w_scales, x_scales);
                let sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), scale, acc[h]);
                acc[h] = if both {
                    sum
                } else {
                    _mm256_blendv_ps(sum, acc[h], keep)
                };
            }
        }
    }
}

/// All rows, `R` at a time, the last few one at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn q8_rows_avx512<const R: usize, const PF: bool>(
    out: &mut [f32],
    wq: &[i8],
    ws: &[f32],
    xq: &[i8],
    xs: &[f32],
    group: usize,
    prefetch: usize,
) {
    let (cols, groups) = (xs.len() * group, xs.len());
    // SAFETY: rows r..r+n lie inside `wq` and their scales inside `ws` (the caller's promise).
    unsafe {
        in_blocks!(out, R, PF, q8_block_avx512, |r| (
            wq.as_ptr().add(r * cols),
            ws.as_ptr().add(r * groups),
            xq,
            xs,
            group,
            prefetch
        ))
    }
}

/// `R` int8 rows starting at `w` (scales at `s`), 16 lanes each in one register: a 64-byte
/// chunk at a time, its two 32-byte halves in groups `g0` and `g1` (the same group when groups
/// are a whole number of chunks).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn q8_block_avx512<const R: usize, const PF: bool>(
    out: &mut [f32],
    w: *const i8,
    s: *const f32,
    xq: &[i8],
    xs: &[f32],
    group: usize,
    prefetch: usize,
) {
    let (cols, groups) = (xs.len() * group, xs.len());
    let mut acc = [_mm512_setzero_ps(); R];
    let rows = Rows {
        w,
        s,
        xq,
        xs,
        cols,
        groups,
        prefetch,
    };
    if !group.is_multiple_of(32) {
        // SAFETY: the caller's promises, passed on.
        unsafe { q8_quarters_avx512::<R, PF>(&mut acc, &rows) };
    } else {
        for_each_chunk!(group, groups, |c, g0, g1, whole| {
            // SAFETY: the chunk lies inside the rows and `xq`, and g1 < groups.
            unsafe { q8_chunk_avx512::<R, PF>(&mut acc, &rows, c, g0, g1, whole) };
        });
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = reduce16(a);
    }
}

/// [`q8_block_avx512`]'s sums for groups of a multiple of 16 bytes but not of 32: each
/// 16-byte quarter of a chunk (lanes `4q..4q + 4`) is in one group, up to four of them.
///
/// # Safety
/// As [`matvec_q8_avx512`], with the group size a multiple of 16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn q8_quarters_avx512<const R: usize, const PF: bool>(acc: &mut [__m512; R], rows: &Rows) {
    let flip = _mm512_set1_epi8(-128);
    let zero = _mm512_setzero_si512();
    let quarters_per_group = (rows.cols / rows.groups / 16) as i32;
    let quarter_of_lane = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    // The chunk starts `into` quarters into group g0.
    let (mut g0, mut into) = (0usize, 0i32);
    for c in (0..rows.cols).step_by(64) {
        let quarters = ((rows.cols - c) / 16).min(4);
        let bytes: __mmask64 = if quarters == 4 {
            !0
        } else {
            (1u64 << (16 * quarters)) - 1
        };
        let lanes = ((1u32 << (4 * quarters)) - 1) as __mmask16;
        // Lane l's quarter is `into + l / 4` quarters past g0's start: count the group ends
        // it has passed (at most three, since a group has at least one quarter).
        let position = _mm512_add_epi32(_mm512_set1_epi32(into), quarter_of_lane);
        let mut index = _mm512_setzero_si512();
        for k in 1..=3 {
            let passed =
                _mm512_cmpge_epi32_mask(position, _mm512_set1_epi32(k * quarters_per_group));
            index = _mm512_mask_add_epi32(index, passed, index, _mm512_set1_epi32(1));
        }
        // Scales of g0 and up to three more (never past the row's last group).
        let scale_mask = ((1u32 << (rows.groups - g0).min(4)) - 1) as __mmask8;
        // SAFETY (loop body): the chunk's bytes lie inside the rows and `xq`, and the scales
        // loaded inside every row's; prefetches only hint.
        let xv = unsafe { _mm512_maskz_loadu_epi8(bytes, rows.xq.as_ptr().add(c)) };
        let start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, xv));
        let x_scales = unsafe { spread_scales(rows.xs.as_ptr().add(g0), scale_mask, index) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let p = unsafe { rows.w.add(r * rows.cols + c) };
            if PF {
                fetch_line(p.wrapping_add(rows.prefetch));
            }
            let wv = unsafe { _mm512_maskz_loadu_epi8(bytes, p) };
            let quads = _mm512_dpbusd_epi32(start, _mm512_xor_si512(wv, flip), xv);
            let row = unsafe { rows.s.add(r * rows.groups + g0) };
            let w_scales = unsafe { spread_scales(row, scale_mask, index) };
            let scale = _mm512_mul_ps(w_scales, x_scales);
            *acc = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(quads), scale, *acc, lanes);
        }
        into += 4;
        while into >= quarters_per_group {
            into -= quarters_per_group;
            g0 += 1;
        }
    }
}

/// Up to four scales from `p` (those in `mask`), lane `l` getting number `index[l]`.
///
/// # Safety
/// The scales in `mask` must be readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn spread_scales(p: *const f32, mask: __mmask8, index: __m512i) -> __m512 {
    // SAFETY: the caller's promise; masked-off lanes are not read.
    let loaded = unsafe { _mm_maskz_loadu_ps(mask, p) };
    _mm512_permutexvar_ps(index, _mm512_castps128_ps512(loaded))
}

/// A block of int8 rows and the vector they multiply.
struct Rows<'a> {
    w: *const i8,
    s: *const f32,
    xq: &'a [i8],
    xs: &'a [f32],
    cols: usize,
    groups: usize,
    prefetch: usize,
}

/// Add the chunk of bytes `c..c + 64` (`c..c + 32` unless `whole`) of each of `R` rows into
/// their lanes; its halves are in groups `g0` and `g1` (`g1` is `g0` or `g0 + 1`).
///
/// # Safety
/// The CPU must have the instructions; the chunk must lie inside the rows and `xq`, and
/// `g1 < groups`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn q8_chunk_avx512<const R: usize, const PF: bool>(
    acc: &mut [__m512; R],
    rows: &Rows,
    c: usize,
    g0: usize,
    g1: usize,
    whole: bool,
) {
    let flip = _mm512_set1_epi8(-128);
    let zero = _mm512_setzero_si512();
    let bytes: __mmask64 = if whole { !0 } else { 0xFFFF_FFFF };
    let lanes: __mmask16 = if whole { 0xFFFF } else { 0x00FF };
    // SAFETY: the caller's promises cover every read; prefetches only hint.
    let xv = unsafe { _mm512_maskz_loadu_epi8(bytes, rows.xq.as_ptr().add(c)) };
    // Each quad's sum starts at -128 * (its x's sum), undoing the flipped weights' +128.
    let start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, xv));
    let two_groups = g1 != g0;
    let halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let x_scales = unsafe {
        let s0 = _mm512_set1_ps(*rows.xs.get_unchecked(g0));
        _mm512_mask_blend_ps(0xFF00, s0, _mm512_set1_ps(*rows.xs.get_unchecked(g1)))
    };
    for (r, acc) in acc.iter_mut().enumerate() {
        let p = unsafe { rows.w.add(r * rows.cols + c) };
        if PF {
            fetch_line(p.wrapping_add(rows.prefetch));
        }
        let wv = if whole {
            unsafe { _mm512_loadu_si512(p as *const __m512i) }
        } else {
            unsafe { _mm512_maskz_loadu_epi8(bytes, p) }
        };
        let quads = _mm512_dpbusd_epi32(start, _mm512_xor_si512(wv, flip), xv);
        // This row's scales of g0 (and g1, the next float) in the lanes of their halves.
        let row_scale = unsafe { rows.s.add(r * rows.groups + g0) };
        let w_scales = if two_groups {
            let pair = unsafe { _mm_castpd_ps(_mm_load_sd(row_scale as *const f64)) };
            _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(pair))
        } else {
            _mm512_set1_ps(unsafe { *row_scale })
        };
        let scale = _mm512_mul_ps(w_scales, x_scales);
        *acc = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(quads), scale, *acc, lanes);
    }
}

// ---------------------------------------------------------------------------------------------
// exp and attention's weighted sum
// ---------------------------------------------------------------------------------------------

/// [`super::exp_one`] on 8 lanes, operation for operation.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    let t = _mm256_max_ps(_mm256_set1_ps(EXP_MIN), x);
    let t = _mm256_min_ps(_mm256_set1_ps(EXP_MAX), t);
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        t,
        _mm256_set1_ps(core::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), t);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(EXP_TAYLOR[0]);
    for &c in &EXP_TAYLOR[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let one = _mm256_set1_ps(1.0);
    let p = _mm256_fmadd_ps(_mm256_fmadd_ps(p, r, one), r, one);
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    let e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_MIN));
    _mm256_blendv_ps(e, _mm256_setzero_ps(), under)
}

/// [`super::exp_one`] on 16 lanes, operation for operation.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn exp16(x: __m512) -> __m512 {
    let t = _mm512_max_ps(_mm512_set1_ps(EXP_MIN), x);
    let t = _mm512_min_ps(_mm512_set1_ps(EXP_MAX), t);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(t, _mm512_set1_ps(core::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), t);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_TAYLOR[0]);
    for &c in &EXP_TAYLOR[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let one = _mm512_set1_ps(1.0);
    let p = _mm512_fmadd_ps(_mm512_fmadd_ps(p, r, one), r, one);
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    let e = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
    let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_MIN));
    _mm512_mask_mov_ps(e, under, _mm512_setzero_ps())
}

/// [`super::exp`] on AVX2.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp_avx2(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: the chunk holds 8 values.
        unsafe {
            let v = exp8(_mm256_loadu_ps(chunk.as_ptr()));
            _mm256_storeu_ps(chunk.as_mut_ptr(), v);
        }
    }
    chunks
        .into_remainder()
        .iter_mut()
        .for_each(|v| *v = exp_one(*v));
}

/// [`super::exp`] on AVX-512.
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub unsafe fn exp_avx512(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(16);
    for chunk in &mut chunks {
        // SAFETY: the chunk holds 16 values.
        unsafe {
            let v = exp16(_mm512_loadu_ps(chunk.as_ptr()));
            _mm512_storeu_ps(chunk.as_mut_ptr(), v);
        }
    }
    chunks
        .into_remainder()
        .iter_mut()
        .for_each(|v| *v = exp_one(*v));
}

/// [`super::weighted_sum`] on AVX2.
///
/// # Safety
/// The CPU must have AVX2 and FMA; the `a.len()` rows of `out.len()` values, `stride` apart,
/// must lie inside `values`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn weighted_sum_avx2(out: &mut [f32], a: &[f32], values: &[f32], stride: usize) {
    let n = out.len();
    let full = n - n % 8;
    for i in (0..full).step_by(8) {
        let mut sum = _mm256_setzero_ps();
        for (t, &at) in a.iter().enumerate() {
            // SAFETY: columns i..i+8 of row t are inside `values` (caller's promise).
            let v = unsafe { _mm256_loadu_ps(values.as_ptr().add(t * stride + i)) };
            sum = _mm256_fmadd_ps(_mm256_set1_ps(at), v, sum);
        }
        // SAFETY: i + 8 <= out.len().
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i), sum) };
    }
    for i in full..n {
        out[i] = a.iter().enumerate().fold(0.0f32, |sum, (t, &at)| {
            at.mul_add(values[t * stride + i], sum)
        });
    }
}

/// [`super::weighted_sum`] on AVX-512.
///
/// # Safety
/// As [`weighted_sum_avx2`], with AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub unsafe fn weighted_sum_avx512(out: &mut [f32], a: &[f32], values: &[f32], stride: usize) {
    let n = out.len();
    for i in (0..n).step_by(16) {
        let mask = lane_mask16(n - i);
        let mut sum = _mm512_setzero_ps();
        for (t, &at) in a.iter().enumerate() {
            // SAFETY: the masked lanes are columns < n of row t, inside `values`.
            let v = unsafe { _mm512_maskz_loadu_ps(mask, values.as_ptr().add(t * stride + i)) };
            sum = _mm512_fmadd_ps(_mm512_set1_ps(at), v, sum);
        }
        // SAFETY: only lanes < n - i are stored.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask, sum) };
    }
}
