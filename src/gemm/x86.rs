//! x86-64 register tiles: AVX-512F (16 lanes, tiles of 14 x 32: 28 sums in registers, two
//! loads of `b` and a broadcast of `a` per row), AVX2 with FMA (8 lanes, 6 x 16), and AVX-512
//! BF16's `vdpbf16ps`, which multiplies pairs of bf16 values and adds both products to an `f32`
//! lane in one instruction.
//!
//! Each `#[target_feature]` function here instantiates the generic tile of [`super::tile`] for
//! one instruction set, so the compiler may use those instructions there and only there.

use std::arch::x86_64::*;

use super::tile::{self, Lanes, Operand, Order};
use super::{pack_strips, Kernel, Tile, View};

/// An AVX-512 register of 16 `f32` lanes.
#[derive(Clone, Copy)]
pub(crate) struct Avx512(__m512);

impl Lanes for Avx512 {
    const N: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller has checked for AVX-512F (see `Lanes`).
        Avx512(unsafe { _mm512_setzero_ps() })
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: as above.
        Avx512(unsafe { _mm512_set1_ps(v) })
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees AVX-512F and 16 readable values at `p`.
        Avx512(unsafe { _mm512_loadu_ps(p) })
    }

    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        // SAFETY: only the first `n` lanes are read, which the caller guarantees are readable.
        Avx512(unsafe { _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p) })
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable values at `p`.
        unsafe { _mm512_storeu_ps(p, self.0) }
    }

    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: only the first `n` lanes are written, which the caller guarantees exist.
        unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, self.0) }
    }

    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        // SAFETY: the caller has checked for AVX-512F.
        Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
    }
}

/// An AVX2 register of 8 `f32` lanes.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(__m256);

/// A mask of the first `n` of 8 lanes, for AVX2's masked loads and stores.
///
/// # Safety
///
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn avx2_mask(n: usize) -> __m256i {
    // SAFETY: the caller has checked for AVX2.
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

impl Lanes for Avx2 {
    const N: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller has checked for AVX2 and FMA (see `Lanes`).
        Avx2(unsafe { _mm256_setzero_ps() })
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: as above.
        Avx2(unsafe { _mm256_set1_ps(v) })
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees AVX2 and 8 readable values at `p`.
        Avx2(unsafe { _mm256_loadu_ps(p) })
    }

    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        // SAFETY: only the first `n` lanes are read, which the caller guarantees are readable.
        Avx2(unsafe { _mm256_maskload_ps(p, avx2_mask(n)) })
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees AVX2 and 8 writable values at `p`.
        unsafe { _mm256_storeu_ps(p, self.0) }
    }

    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: only the first `n` lanes are written, which the caller guarantees exist.
        unsafe { _mm256_maskstore_ps(p, avx2_mask(n), self.0) }
    }

    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        // SAFETY: the caller has checked for FMA.
        Avx2(unsafe { _mm256_fmadd_ps(a.0, b.0, self.0) })
    }
}

/// Tile heights of the AVX-512 kernels, tallest first.
const AVX512_HEIGHTS: [usize; 5] = [14, 8, 4, 2, 1];
/// Tile heights of the AVX2 kernels, tallest first.
const AVX2_HEIGHTS: [usize; 4] = [6, 4, 2, 1];

/// Any tile up to 14 x 32 with AVX-512F.
///
/// # Safety
///
/// The CPU has AVX-512F; the tile is in bounds (see [`Kernel::tile`]).
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<A: Operand>(t: &Tile<A, f32>, order: Order) {
    tile::by_heights(t, &AVX512_HEIGHTS, |height, sub| {
        // SAFETY: the caller's guarantees hold for each band of rows of the tile.
        unsafe {
            match height {
                14 => tile::tile::<Avx512, A, 14, 2>(sub, order),
                8 => tile::tile::<Avx512, A, 8, 2>(sub, order),
                4 => tile::tile::<Avx512, A, 4, 2>(sub, order),
                2 => tile::tile::<Avx512, A, 2, 2>(sub, order),
                _ => tile::tile::<Avx512, A, 1, 2>(sub, order),
            }
        }
    });
}

/// Any tile up to 6 x 16 with AVX2 and FMA.
///
/// # Safety
///
/// The CPU has AVX2 and FMA; the tile is in bounds (see [`Kernel::tile`]).
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<A: Operand>(t: &Tile<A, f32>, order: Order) {
    tile::by_heights(t, &AVX2_HEIGHTS, |height, sub| {
        // SAFETY: the caller's guarantees hold for each band of rows of the tile.
        unsafe {
            match height {
                6 => tile::tile::<Avx2, A, 6, 2>(sub, order),
                4 => tile::tile::<Avx2, A, 4, 2>(sub, order),
                2 => tile::tile::<Avx2, A, 2, 2>(sub, order),
                _ => tile::tile::<Avx2, A, 1, 2>(sub, order),
            }
        }
    });
}

/// `f32` products with AVX-512F.
pub(crate) struct Avx512F32;
/// bf16 products on AVX-512F without BF16: operands widened to `f32` (exactly), sums in
/// `vdpbf16ps`'s order.
pub(crate) struct Avx512Bf16Emulated;
/// `f32` products with AVX2 and FMA.
pub(crate) struct Avx2F32;
/// bf16 products with AVX2, emulated as [`Avx512Bf16Emulated`].
pub(crate) struct Avx2Bf16;

/// The `Kernel` of a generic tile function for operands of type `$a`.
macro_rules! lanes_kernel {
    ($kernel:ident, $a:ty, $mr:expr, $nr:expr, $tile:ident, $order:expr) => {
        impl Kernel for $kernel {
            type A = $a;
            type Packed = f32;
            const MR: usize = $mr;
            const NR: usize = $nr;

            fn convert(&self, x: $a) -> f32 {
                x.to_f32()
            }

            unsafe fn tile(&self, t: &Tile<$a, f32>) {
                // SAFETY: the caller guarantees the CPU features and the bounds.
                unsafe { $tile(t, $order) }
            }
        }
    };
}

lanes_kernel!(Avx512F32, f32, 14, 32, tile_avx512, Order::InOrder);
lanes_kernel!(
    Avx512Bf16Emulated,
    u16,
    14,
    32,
    tile_avx512,
    Order::OddFirst
);
lanes_kernel!(Avx2F32, f32, 6, 16, tile_avx2, Order::InOrder);
lanes_kernel!(Avx2Bf16, u16, 6, 16, tile_avx2, Order::OddFirst);

/// bf16 products with `vdpbf16ps`: strips of `b` hold pairs of `k` values of each column side
/// by side, and each row of `a` gives a pair (a 32-bit broadcast) per step.
pub(crate) struct Avx512Dpbf16;

impl Kernel for Avx512Dpbf16 {
    type A = u16;
    type Packed = u16;
    const MR: usize = 14;
    const NR: usize = 32;

    const GROUP: usize = 2;

    const COPIES_COLUMNS_OF_A: bool = true;

    fn pack_b(&self, packed: &mut [u16], b: View<u16>, p0: usize, kc: usize, j0: usize, nc: usize) {
        let fits = i32::try_from(b.cs.saturating_mul(Self::NR)).is_ok();
        if b.rs != 1 || !fits || kc < 2 {
            return pack_strips::<_, _, 2>(packed, b, p0, kc, j0, nc, Self::NR, |x| x);
        }
        // `b`'s columns run along `k` (`matmul_nt`): each pair is one 32-bit word already.
        let strip_len = Self::NR * kc.next_multiple_of(2);
        for (s, strip) in packed[..nc.div_ceil(Self::NR) * strip_len]
            .chunks_exact_mut(strip_len)
            .enumerate()
        {
            let (col, cols) = (j0 + s * Self::NR, Self::NR.min(nc - s * Self::NR));
            // SAFETY: this kernel only runs where AVX-512F is (it needs AVX-512 BF16); the
            // strip holds `32 * kc` (rounded up to pairs) values, `b` holds `(p0 + p, col + j)`
            // for `p < kc`, `j < cols` (the caller's block is inside the product), and
            // `32 * b.cs` fits an `i32`, checked above.
            unsafe { gather_pairs(strip, b, (p0, kc), (col, cols)) };
        }
    }

    fn convert(&self, x: u16) -> u16 {
        x
    }

    /// The tile reads a pair of `k` values of a row at once. Rows of `a` that hold them side
    /// by side are read in place (pairs 2 values apart); [`super::matmul_tn`]'s `a`, whose
    /// rows are its columns, is copied out as a strip of pairs, as `b` is (pairs `2 * MR`
    /// apart, rows 2 apart).
    fn a_tile(
        &self,
        scratch: &mut Vec<u16>,
        a: View<u16>,
        row: usize,
        rows: usize,
        p0: usize,
        kc: usize,
    ) -> (*const u16, usize, usize) {
        if a.cs == 1 {
            return (a.data[row * a.rs + p0..].as_ptr(), a.rs, 2);
        }
        let columns = View {
            data: a.data,
            rs: a.cs,
            cs: a.rs,
        };
        super::resize_pack_buffer(scratch, Self::MR * kc.next_multiple_of(2));
        // SAFETY: this kernel only runs where AVX-512F is (it needs AVX-512 BF16); the tile's
        // rows `row..row + rows` (at most 14) and steps `p0..p0 + kc` lie inside `a` (the
        // caller's block is inside the product), and `scratch` holds `kc` rounded up to
        // pairs of 14 pairs.
        if !unsafe { pair_rows(scratch, columns, (p0, kc), (row, rows)) } {
            pack_strips::<_, _, 2>(scratch, columns, p0, kc, row, rows, Self::MR, |x| x);
        }
        (scratch.as_ptr(), 2, 2 * Self::MR)
    }

    unsafe fn tile(&self, t: &Tile<u16, u16>) {
        // SAFETY: the caller guarantees AVX-512 BF16 and the bounds.
        unsafe { tile_dpbf16(t) }
    }
}

/// [`pack_strips`] of up to 14 columns with pairs (what [`Avx512Dpbf16::a_tile`] makes of
/// `matmul_tn`'s `a`) in vectors: per pair of steps, the values of each of two rows of
/// `columns` are widened to 32 bits and the second row's shifted into the high halves, so each
/// 32-bit lane is one column's pair, and lanes past `cols` are zeros. (The scalar loop spent
/// 3-4% of a bf16 training step here.) Returns false, having done nothing, if the last row
/// ends too near the end of `columns` to read a whole number of 32-bit lanes.
///
/// # Safety
///
/// The CPU has AVX-512F; `columns` holds values `(p0 + p, col + j)` for `p < kc`,
/// `j < cols <= 14`; `scratch` holds at least `14 * kc.next_multiple_of(2)` values.
#[target_feature(enable = "avx512f")]
unsafe fn pair_rows(
    scratch: &mut [u16],
    columns: View<u16>,
    (p0, kc): (usize, usize),
    (col, cols): (usize, usize),
) -> bool {
    debug_assert!(columns.cs == 1 && cols <= 14 && scratch.len() >= 14 * kc.next_multiple_of(2));
    // Whole 32-bit lanes: an odd `cols` reads one value more, which must exist.
    let lanes = cols.div_ceil(2);
    let start = |p: usize| (p0 + p) * columns.rs + col;
    if kc == 0 || start(kc - 1) + 2 * lanes > columns.data.len() {
        return false;
    }
    let (read, keep): (__mmask16, __mmask16) = ((1 << lanes) - 1, (1 << cols) - 1);
    const FOURTEEN: __mmask16 = 0x3fff;
    let row = |p: usize| columns.data[start(p)..][..2 * lanes].as_ptr();
    let out = scratch.as_mut_ptr();
    // SAFETY (whole body): masked loads read only `2 * lanes` values of a row, which the
    // slicing above checked; masked stores write 14 pairs inside `scratch`, `28 * g` values in.
    unsafe {
        let widen = |p: *const u16| {
            let values = _mm512_maskz_loadu_epi32(read, p.cast());
            _mm512_maskz_cvtepu16_epi32(keep, _mm512_castsi512_si256(values))
        };
        for g in 0..kc / 2 {
            let even = widen(row(2 * g));
            let odd = _mm512_slli_epi32::<16>(widen(row(2 * g + 1)));
            let pairs = _mm512_or_si512(even, odd);
            _mm512_mask_storeu_epi32(out.add(28 * g).cast(), FOURTEEN, pairs);
        }
        if kc % 2 == 1 {
            let g = kc / 2;
            _mm512_mask_storeu_epi32(out.add(28 * g).cast(), FOURTEEN, widen(row(2 * g)));
        }
    }
    true
}

/// One strip of [`pack_strips`] with pairs, for a `b` whose columns run along `k`: there the
/// two values of a pair are adjacent, so each pair of steps is two gathers of 16 words, one per
/// column (columns past `cols` are zeros); an odd last step is copied alone.
///
/// # Safety
///
/// The CPU has AVX-512F; `b.rs == 1`, `b` holds values `(p0 + p, col + j)` for `p < kc`,
/// `j < cols <= 32`, `32 * b.cs` fits an `i32`, and `strip` holds `32 * kc.next_multiple_of(2)`
/// values.
#[target_feature(enable = "avx512f")]
unsafe fn gather_pairs(
    strip: &mut [u16],
    b: View<u16>,
    (p0, kc): (usize, usize),
    (col, cols): (usize, usize),
) {
    debug_assert!(b.rs == 1 && cols <= 32 && strip.len() >= 32 * kc.next_multiple_of(2));
    if kc == 0 || cols == 0 {
        return;
    }
    let last = (p0 + kc - 1) + (col + cols - 1) * b.cs;
    debug_assert!(last < b.data.len());
    if last >= b.data.len() {
        return;
    }
    let column = b.cs as i32; // in values: the gathers scale by their size, 2 bytes
    let (lanes_lo, lanes_hi) = (cols.min(16), cols.saturating_sub(16));
    let mask = |n: usize| ((1u32 << n) - 1) as __mmask16;
    let out = strip.as_mut_ptr().cast::<i32>();
    // SAFETY (whole body): every gathered word is the pair `(p0 + 2g, p0 + 2g + 1)` of a
    // column `j < cols`, both below `last + 1`, which was checked to lie inside `b`; the stores
    // write the strip's 32 words of pair `g < kc / 2`, inside `strip`.
    unsafe {
        let index_lo = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(column),
        );
        let index_hi = _mm512_add_epi32(index_lo, _mm512_set1_epi32(16 * column));
        let zero = _mm512_setzero_si512();
        let base = b.data.as_ptr().add(p0 + col * b.cs);
        for g in 0..kc / 2 {
            let at = base.add(2 * g).cast::<u8>();
            let lo = _mm512_mask_i32gather_epi32::<2>(zero, mask(lanes_lo), index_lo, at.cast());
            let hi = _mm512_mask_i32gather_epi32::<2>(zero, mask(lanes_hi), index_hi, at.cast());
            _mm512_storeu_si512(out.add(32 * g).cast(), lo);
            _mm512_storeu_si512(out.add(32 * g + 16).cast(), hi);
        }
    }
    if kc % 2 == 1 {
        let g = kc / 2;
        let pairs = &mut strip[64 * g..][..64];
        pairs.fill(0);
        for j in 0..cols {
            pairs[2 * j] = b.data[p0 + 2 * g + (col + j) * b.cs];
        }
    }
}

/// [`super::to_bf16_for_products`] with `vcvtneps2bf16`: 16 values at a time, the last few
/// through a zero-padded block of 16.
///
/// # Safety
///
/// The CPU has AVX-512F and AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn to_bf16_cvtne(dst: &mut [u16], src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    let convert = |d: &mut [u16], s: &[f32]| {
        // SAFETY: `d` and `s` hold 16 values each (the chunks below); the cast reinterprets
        // 16 bf16 values as 256 bits.
        unsafe {
            let rounded: __m256i =
                std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(s.as_ptr())));
            _mm256_storeu_si256(d.as_mut_ptr().cast(), rounded);
        }
    };
    let (mut d, mut s) = (dst.chunks_exact_mut(16), src.chunks_exact(16));
    for (d, s) in d.by_ref().zip(s.by_ref()) {
        convert(d, s);
    }
    let (d, s) = (d.into_remainder(), s.remainder());
    let n = d.len().min(s.len());
    if n > 0 {
        let (mut d16, mut s16) = ([0u16; 16], [0.0f32; 16]);
        s16[..n].copy_from_slice(&s[..n]);
        convert(&mut d16, &s16);
        d[..n].copy_from_slice(&d16[..n]);
    }
}

/// Any tile up to 14 x 32 with `vdpbf16ps`.
///
/// # Safety
///
/// The CPU has AVX-512F and AVX-512 BF16; the tile is in bounds, where for this kernel `a_cs`
/// is the distance between a row's pairs of `a` (whose two values are adjacent), and the strip
/// holds `kc` rounded up to a pair.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_dpbf16(t: &Tile<u16, u16>) {
    tile::by_heights(t, &AVX512_HEIGHTS, |height, sub| {
        // SAFETY: the caller's guarantees hold for each band of rows of the tile.
        unsafe {
            match height {
                14 => dpbf16::<14>(sub),
                8 => dpbf16::<8>(sub),
                4 => dpbf16::<4>(sub),
                2 => dpbf16::<2>(sub),
                _ => dpbf16::<1>(sub),
            }
        }
    });
}

/// A tile of `MR x 32` with `vdpbf16ps`: per pair of `k`, two 32-value loads of the strip
/// (16 column pairs each) and one pair of `a` broadcast per row.
///
/// # Safety
///
/// As [`tile_dpbf16`].
#[inline(always)]
unsafe fn dpbf16<const MR: usize>(t: &Tile<u16, u16>) {
    // SAFETY (whole body): the caller guarantees the CPU features; the loads stay inside the
    // rows of `a` (`kc` values each; the last of an odd `kc` is read alone) and the strip.
    unsafe {
        let mut acc = tile::load::<Avx512, u16, u16, MR, 2>(t);
        let pairs = t.kc / 2;
        for j in 0..pairs {
            let pair = |i: usize| {
                t.a.add(i * t.a_rs + j * t.a_cs)
                    .cast::<u32>()
                    .read_unaligned()
            };
            acc = dpbf16_step(acc, t.b.add(j * 64), pair);
        }
        if t.kc % 2 == 1 {
            let last = |i: usize| *t.a.add(i * t.a_rs + pairs * t.a_cs) as u32;
            acc = dpbf16_step(acc, t.b.add(pairs * 64), last);
        }
        tile::store::<Avx512, u16, u16, MR, 2>(acc, t);
    }
}

/// One pair of `k` of a [`dpbf16`] tile: `b` points at the strip's 32 column pairs, and
/// `pair_of_row(i)` is row `i`'s pair of `a` (even value in the low half).
///
/// # Safety
///
/// As [`tile_dpbf16`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // constant indices keep the sums in registers
unsafe fn dpbf16_step<const MR: usize>(
    mut acc: [[Avx512; 2]; MR],
    b: *const u16,
    pair_of_row: impl Fn(usize) -> u32,
) -> [[Avx512; 2]; MR] {
    // SAFETY: the caller guarantees AVX-512 BF16 and 64 readable values at `b`; the casts
    // reinterpret 512 bits as 32 bf16 values.
    unsafe {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.cast()));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(32).cast()));
        for i in 0..MR {
            let row = &mut acc[i];
            let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair_of_row(i) as i32));
            row[0] = Avx512(_mm512_dpbf16_ps(row[0].0, a, b0));
            row[1] = Avx512(_mm512_dpbf16_ps(row[1].0, a, b1));
        }
        acc
    }
}
