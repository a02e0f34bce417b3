//! The row-aligned int8 kernel for x86-64: AVX-512 VNNI (16 rows at a time) and AVX2 (8 rows).
//!
//! Both work the same way. For a block of rows they walk the columns a chunk at a time and
//! compute, for every row, the exact dot product of each run of four bytes (a "quad sum", one
//! `i32` lane). These become one vector of group sums, one lane per row:
//!
//! * groups of whole chunks (64, 128, ... on AVX-512): each row's quads are added up across the
//!   group's chunks, then the 16 rows' vectors are reduced together in one pass;
//! * other groups: a transpose turns "a vector per row, a lane per quad" into "a vector per quad,
//!   a lane per row", and a group's quads are added up as they come.
//!
//! Each vector of group sums is then scaled and added to one float accumulator per row. Lane by
//! lane these are the float operations of [`super::plain::dot_aligned`], in the same order, so
//! the results are identical bit for bit; the integer sums are exact in any order.
//!
//! Decoding streams every weight from memory once per token. A block reads its rows side by
//! side, a chunk of each at a time: many short streams, which the hardware prefetchers do not
//! follow. So while a block is summed, it asks for the next block's weights front to back (one
//! line per line it reads) and for the next block's scales: one long stream that keeps memory
//! busy. Without it a core waits on every block's loads (less than half the speed).
//!
//! Both instruction sets multiply *unsigned* by signed bytes, and weights may be any `i8`,
//! including -128:
//!
//! * AVX-512 VNNI adds 128 to every weight (now `0..=255`) and subtracts `128 * sum(x)` again.
//! * AVX2's `vpmaddubsw` saturates pairs of products to `i16`, which `255 * 127 * 2` would
//!   overflow, so it multiplies `|w|` (at most 128) by `x` carrying `w`'s sign instead: a pair is
//!   at most `2 * 128 * 127 = 32512`. This needs `x != -128`, which
//!   [`super::quantize_activation`] guarantees.

use core::arch::x86_64::*;

use super::{plain, Q8Matrix, QuantizedVector, CHUNK};

/// Where a block of rows is in the matrix, and how to read the scales of its groups.
#[derive(Clone, Copy)]
struct Block<'a> {
    /// The block's rows, `rows * cols` values.
    values: &'a [i8],
    /// Scales from the block's first group on; row `r`'s group `g` is at `r * groups_per_row + g`.
    scales: &'a [f32],
    cols: usize,
    group_size: usize,
    /// Whether reading the block also asks for the next one. Only the first of a batch of
    /// vectors reads the block from memory: the others find it in the cache.
    prefetch: bool,
}

impl<'a> Block<'a> {
    fn new(w: &'a Q8Matrix, first_row: usize, rows: usize) -> Block<'a> {
        let groups_per_row = w.cols / w.group_size;
        Block {
            values: &w.values[first_row * w.cols..(first_row + rows) * w.cols],
            scales: &w.scales[first_row * groups_per_row..(first_row + rows) * groups_per_row],
            cols: w.cols,
            group_size: w.group_size,
            prefetch: true,
        }
    }

    /// Ask for cache line `line` of the next block's weights (the rows after this block's; past
    /// the matrix, the request is for whatever lies there, or nothing) to be brought in.
    fn prefetch_next(&self, line: usize) {
        if !self.prefetch {
            return;
        }
        let ahead = self
            .values
            .as_ptr()
            .wrapping_add(self.values.len() + line * CACHE_LINE);
        prefetch(ahead);
    }

    /// Ask for the scales of the next block (of as many rows as this one).
    fn prefetch_next_scales(&self) {
        if !self.prefetch {
            return;
        }
        let next = self.scales.as_ptr().wrapping_add(self.scales.len());
        for line in (0..self.scales.len()).step_by(CACHE_LINE / 4) {
            prefetch(next.wrapping_add(line));
        }
    }
}

/// Ask for the cache line holding `p` to be brought into the cache, without waiting for it.
fn prefetch<T>(p: *const T) {
    // SAFETY: prefetching is a hint that never faults, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
}

/// Ask for the first block of a range of rows (and its scales): each block asks for the next
/// one, which leaves the first to this.
fn prefetch_first_block(w: &Q8Matrix, first_row: usize, rows: usize) {
    let block = Block::new(w, first_row, rows);
    for at in (0..block.values.len()).step_by(CACHE_LINE) {
        prefetch(block.values.as_ptr().wrapping_add(at));
    }
    for at in (0..block.scales.len()).step_by(CACHE_LINE / 4) {
        prefetch(block.scales.as_ptr().wrapping_add(at));
    }
}

/// Bytes per cache line.
const CACHE_LINE: usize = 64;

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI

/// Rows of a block on the AVX-512 path: one per `i32` lane of a 512-bit vector.
const ROWS_512: usize = 16;

/// `out[i * m + t]` = row `first_row + i` of `w` times `xs[t]`, for each of the `m = xs.len()`
/// vectors and each row `i < out.len() / m`: 16 rows at a time, each block read from memory once
/// for all the vectors, the leftover rows plainly.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI. `w`'s rows must be aligned
/// to groups that are a multiple of 4 values, and `xs` quantized in the same groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn rows_avx512_vnni(
    out: &mut [f32],
    w: &Q8Matrix,
    first_row: usize,
    xs: &[QuantizedVector],
) {
    rows_in_blocks(out, w, first_row, xs, |block, x| {
        let mut sums = [0.0f32; ROWS_512];
        // SAFETY: `sums` holds 16 floats; the caller vouches for the CPU.
        unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), block_avx512(block, x)) };
        sums
    });
}

/// The loop of both kernels: `out[i * m + t]` = row `first_row + i` of `w` times `xs[t]`, a
/// block of `ROWS` rows at a time, each block read from memory for the first vector and from
/// the cache for the others (which do not ask for the next block again); the leftover rows
/// plainly. `sums_of` gives the sums of one block with one vector.
#[inline(always)]
fn rows_in_blocks<const ROWS: usize>(
    out: &mut [f32],
    w: &Q8Matrix,
    first_row: usize,
    xs: &[QuantizedVector],
    sums_of: impl Fn(&Block, &QuantizedVector) -> [f32; ROWS],
) {
    let m = xs.len();
    let rows = out.len() / m;
    prefetch_first_block(w, first_row, rows.min(ROWS));
    let full = rows - rows % ROWS;
    for i in (0..full).step_by(ROWS) {
        let block = Block::new(w, first_row + i, ROWS);
        for (t, x) in xs.iter().enumerate() {
            let block = Block {
                prefetch: t == 0,
                ..block
            };
            store_block(out, i, m, t, &sums_of(&block, x));
        }
    }
    plain::rows_aligned(&mut out[full * m..], w, first_row + full, xs);
}

/// Write the sums of one block of rows from row `i` on for vector `t` of `m` into `out`, which
/// holds `m` values per row.
fn store_block(out: &mut [f32], i: usize, m: usize, t: usize, sums: &[f32]) {
    if m == 1 {
        out[i..i + sums.len()].copy_from_slice(sums);
    } else {
        for (r, &sum) in sums.iter().enumerate() {
            out[(i + r) * m + t] = sum;
        }
    }
}

/// The 16 dot products of a 16-row block with `x`, lane `r` for row `r`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn block_avx512(block: &Block, x: &QuantizedVector) -> __m512 {
    block.prefetch_next_scales();
    if block.group_size.is_multiple_of(CHUNK) {
        block_avx512_whole_chunk_groups(block, x)
    } else {
        block_avx512_groups_within_chunks(block, x)
    }
}

/// [`block_avx512`] when every group is a whole number of chunks (so rows are too): the quads
/// of each row are summed across the group's chunks, then reduced, so no transpose is needed.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn block_avx512_whole_chunk_groups(block: &Block, x: &QuantizedVector) -> __m512 {
    let (cols, group_size) = (block.cols, block.group_size);
    assert!(block.values.len() == ROWS_512 * cols && x.values.len() >= cols);
    let scales = ScaleReader512::new(block);
    let rows = block.values.as_ptr();
    let mut sums = _mm512_setzero_ps();
    let mut chunk = 0;
    for g in 0..cols / group_size {
        let group = g * group_size..(g + 1) * group_size;
        let mut correction = _mm512_setzero_si512();
        for start in group.clone().step_by(CHUNK) {
            correction = _mm512_add_epi32(correction, x_correction_512(x, start));
        }
        let mut quads = [correction; ROWS_512];
        for start in group.step_by(CHUNK) {
            let xc = load_x_512(x, start);
            for (r, quad) in quads.iter_mut().enumerate() {
                // The next block, line by line as this one is read (asking first, then loading,
                // measured 15% faster than the other way round).
                block.prefetch_next(chunk * ROWS_512 + r);
                // SAFETY: row `r` of the block holds `cols` bytes, and the chunk lies within the
                // group, so within `0..cols`.
                let wr = unsafe { _mm512_loadu_si512(rows.add(r * cols + start).cast()) };
                *quad = add_quads_512(*quad, wr, xc);
            }
            chunk += 1;
        }
        let group_sums = reduce_16x16(&quads);
        sums = scales.add_scaled_group(sums, group_sums, g, x.scales[g]);
    }
    sums
}

/// [`block_avx512`] for groups smaller than a chunk (or not a whole number of them): each
/// chunk's quads are transposed to one vector per quad and added up group by group.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn block_avx512_groups_within_chunks(block: &Block, x: &QuantizedVector) -> __m512 {
    let scales = ScaleReader512::new(block);
    let mut groups = GroupCounter::new(block.group_size / 4);
    let mut sums = _mm512_setzero_ps();
    let mut group_sums = _mm512_setzero_si512();
    for start in (0..block.cols).step_by(CHUNK) {
        let len = (block.cols - start).min(CHUNK);
        let in_row = chunk_mask(block, start);
        let xc = load_x_512(x, start);
        let mut quads = [x_correction_512(x, start); ROWS_512];
        for (r, quad) in quads.iter_mut().enumerate() {
            block.prefetch_next(start / CHUNK * ROWS_512 + r);
            // SAFETY: r < 16 rows, and `chunk_mask` selects the bytes left in the row.
            let wr = unsafe { load_row_chunk(block, r, start, in_row) };
            *quad = add_quads_512(*quad, wr, xc);
        }
        transpose_16x16(&mut quads);
        for &quad in &quads[..len / 4] {
            group_sums = _mm512_add_epi32(group_sums, quad);
            if let Some(g) = groups.add_quad() {
                sums = scales.add_scaled_group(sums, group_sums, g, x.scales[g]);
                group_sums = _mm512_setzero_si512();
            }
        }
    }
    sums
}

/// The 64 activation bytes from `start` on.
#[target_feature(enable = "avx512f")]
fn load_x_512(x: &QuantizedVector, start: usize) -> __m512i {
    let chunk = &x.values[start..start + CHUNK];
    // SAFETY: `chunk` is 64 bytes (`x.values` is padded with zeros to a multiple of CHUNK).
    unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) }
}

/// `-128 * (sum of each quad of x)` for the chunk at `start`: added to the quad sums of the
/// weights plus 128, it leaves the quad sums of the weights themselves.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn x_correction_512(x: &QuantizedVector, start: usize) -> __m512i {
    let plus_128 = _mm512_set1_epi8(i8::MIN);
    let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), plus_128, load_x_512(x, start));
    _mm512_sub_epi32(_mm512_setzero_si512(), sums)
}

/// The bytes of a chunk that lie in the row, as a load mask: all 64 but at the end of a row.
fn chunk_mask(block: &Block, start: usize) -> __mmask64 {
    match block.cols.saturating_sub(start) {
        len if len >= CHUNK => !0,
        len => (1 << len) - 1,
    }
}

/// The bytes of row `r`'s chunk at `start` selected by `in_row`, the others zero.
///
/// # Safety
/// `r` must be a row of the block, and `in_row` select only bytes of that row from `start` on,
/// as [`chunk_mask`] does. (A bounds check per load costs about 15% in cache.)
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn load_row_chunk(block: &Block, r: usize, start: usize, in_row: __mmask64) -> __m512i {
    let at = r * block.cols + start;
    debug_assert!(at + (64 - in_row.leading_zeros() as usize) <= block.values.len());
    // SAFETY: the caller promises that the mask selects bytes of row `r`, inside the block.
    unsafe { _mm512_maskz_loadu_epi8(in_row, block.values.as_ptr().add(at)) }
}

/// `quads` plus the quad sums of (the weights `wr`, plus 128) times the activations `xc`.
/// (Bytes of `wr` past a row's end are 0, so 128 after the flip, but meet x's zero padding.)
#[target_feature(enable = "avx512f,avx512vnni")]
fn add_quads_512(quads: __m512i, wr: __m512i, xc: __m512i) -> __m512i {
    let unsigned = _mm512_xor_si512(wr, _mm512_set1_epi8(i8::MIN));
    _mm512_dpbusd_epi32(quads, unsigned, xc)
}

/// Reads the scales of one group for all 16 rows of a block as a vector.
struct ScaleReader512<'a> {
    block: &'a Block<'a>,
    /// Lane `r`: where row `r`'s scales start, `r * groups_per_row`.
    offsets: __m512i,
}

impl<'a> ScaleReader512<'a> {
    #[target_feature(enable = "avx512f")]
    fn new(block: &'a Block<'a>) -> ScaleReader512<'a> {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let groups_per_row = (block.scales.len() / ROWS_512) as i32;
        ScaleReader512 {
            block,
            offsets: _mm512_mullo_epi32(lanes, _mm512_set1_epi32(groups_per_row)),
        }
    }

    /// `sums + (group_sums * weight_scales) * x_scale` for group `g`, lane by lane: runq.c's
    /// float operations in runq.c's order (no fused multiply-add).
    #[target_feature(enable = "avx512f")]
    fn add_scaled_group(
        &self,
        sums: __m512,
        group_sums: __m512i,
        g: usize,
        x_scale: f32,
    ) -> __m512 {
        assert!(g < self.block.scales.len() / ROWS_512);
        // SAFETY: lane r reads scale r * groups_per_row + g < 16 * groups_per_row of the block.
        let ws =
            unsafe { _mm512_i32gather_ps::<4>(self.offsets, self.block.scales.as_ptr().add(g)) };
        let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(group_sums), ws);
        _mm512_add_ps(sums, _mm512_mul_ps(scaled, _mm512_set1_ps(x_scale)))
    }
}

/// Sum each of 16 vectors of `i32`: lane `r` of the result is the sum of `m[r]`'s lanes.
#[target_feature(enable = "avx512f")]
fn reduce_16x16(m: &[__m512i; 16]) -> __m512i {
    // Pairs of rows: within each 128-bit lane, [r0 lanes 0+2, r1 0+2, r0 1+3, r1 1+3].
    let mut pairs = [_mm512_setzero_si512(); 8];
    for (i, p) in pairs.iter_mut().enumerate() {
        let (a, b) = (m[2 * i], m[2 * i + 1]);
        *p = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    }
    // Fours of rows: each 128-bit lane L holds the sums over lane L of rows 4j..4j+4.
    let mut fours = [_mm512_setzero_si512(); 4];
    for (j, f) in fours.iter_mut().enumerate() {
        let (a, b) = (pairs[2 * j], pairs[2 * j + 1]);
        *f = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    }
    // Add the four 128-bit lanes of each: 128-bit lane j of the result holds rows 4j..4j+4.
    let low01 = _mm512_shuffle_i32x4::<0x44>(fours[0], fours[1]);
    let high01 = _mm512_shuffle_i32x4::<0xEE>(fours[0], fours[1]);
    let low23 = _mm512_shuffle_i32x4::<0x44>(fours[2], fours[3]);
    let high23 = _mm512_shuffle_i32x4::<0xEE>(fours[2], fours[3]);
    let halves01 = _mm512_add_epi32(low01, high01);
    let halves23 = _mm512_add_epi32(low23, high23);
    _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0x88>(halves01, halves23),
        _mm512_shuffle_i32x4::<0xDD>(halves01, halves23),
    )
}

/// Transpose a 16x16 matrix of `i32`: afterwards `m[k]` lane `r` is what `m[r]` lane `k` was.
#[target_feature(enable = "avx512f")]
fn transpose_16x16(m: &mut [__m512i; 16]) {
    // Within each 128-bit lane, interleave pairs of rows, then pairs of pairs: b[4j + q] holds,
    // in 128-bit lane L, element 4L + q of rows 4j..4j+4.
    let mut a = *m;
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_epi32(m[2 * i], m[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(m[2 * i], m[2 * i + 1]);
    }
    let mut b = a;
    for j in 0..4 {
        b[4 * j] = _mm512_unpacklo_epi64(a[4 * j], a[4 * j + 2]);
        b[4 * j + 1] = _mm512_unpackhi_epi64(a[4 * j], a[4 * j + 2]);
        b[4 * j + 2] = _mm512_unpacklo_epi64(a[4 * j + 1], a[4 * j + 3]);
        b[4 * j + 3] = _mm512_unpackhi_epi64(a[4 * j + 1], a[4 * j + 3]);
    }
    // Then transpose the 4x4 grid of 128-bit lanes.
    for q in 0..4 {
        let low01 = _mm512_shuffle_i32x4::<0x44>(b[q], b[4 + q]);
        let high01 = _mm512_shuffle_i32x4::<0xEE>(b[q], b[4 + q]);
        let low23 = _mm512_shuffle_i32x4::<0x44>(b[8 + q], b[12 + q]);
        let high23 = _mm512_shuffle_i32x4::<0xEE>(b[8 + q], b[12 + q]);
        m[q] = _mm512_shuffle_i32x4::<0x88>(low01, low23);
        m[4 + q] = _mm512_shuffle_i32x4::<0xDD>(low01, low23);
        m[8 + q] = _mm512_shuffle_i32x4::<0x88>(high01, high23);
        m[12 + q] = _mm512_shuffle_i32x4::<0xDD>(high01, high23);
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2

/// Rows of a block on the AVX2 path: one per `i32` lane of a 256-bit vector.
const ROWS_256: usize = 8;
/// Columns per step on the AVX2 path.
const CHUNK_256: usize = 32;

/// [`rows_avx512_vnni`] with AVX2, 8 rows at a time.
///
/// # Safety
/// The CPU must support AVX2. `w`'s rows must be aligned to groups that are a
/// multiple of 4 values, and `xs` quantized in the same groups.
#[target_feature(enable = "avx2")]
pub unsafe fn rows_avx2(out: &mut [f32], w: &Q8Matrix, first_row: usize, xs: &[QuantizedVector]) {
    rows_in_blocks(out, w, first_row, xs, |block, x| {
        let mut sums = [0.0f32; ROWS_256];
        // SAFETY: `sums` holds 8 floats; the caller vouches for the CPU.
        unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), block_avx2(block, x)) };
        sums
    });
}

/// The 8 dot products of an 8-row block with `x`, lane `r` for row `r`: each chunk's quads are
/// transposed to one vector per quad and added up group by group.
#[target_feature(enable = "avx2")]
fn block_avx2(block: &Block, x: &QuantizedVector) -> __m256 {
    block.prefetch_next_scales();
    let scales = ScaleReader256::new(block);
    let mut groups = GroupCounter::new(block.group_size / 4);
    let mut sums = _mm256_setzero_ps();
    let mut group_sums = _mm256_setzero_si256();
    for start in (0..block.cols).step_by(CHUNK_256) {
        let len = (block.cols - start).min(CHUNK_256);
        let xc = load_up_to_32(&x.values[start..start + CHUNK_256]);
        let mut quads = [_mm256_setzero_si256(); ROWS_256];
        for (r, quad) in quads.iter_mut().enumerate() {
            // Each chunk reads 8 times 32 bytes: ask for as many of the next block, in order.
            if r < ROWS_256 * CHUNK_256 / CACHE_LINE {
                block.prefetch_next(start / CHUNK_256 * (ROWS_256 * CHUNK_256 / CACHE_LINE) + r);
            }
            let at = r * block.cols + start;
            let wr = load_up_to_32(&block.values[at..at + len]);
            // |w| * (x with w's sign) = w * x, in pairs that cannot saturate an i16.
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wr), _mm256_sign_epi8(xc, wr));
            *quad = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
        }
        transpose_8x8(&mut quads);
        for &quad in &quads[..len / 4] {
            group_sums = _mm256_add_epi32(group_sums, quad);
            if let Some(g) = groups.add_quad() {
                sums = scales.add_scaled_group(sums, group_sums, g, x.scales[g]);
                group_sums = _mm256_setzero_si256();
            }
        }
    }
    sums
}

/// Reads the scales of one group for all 8 rows of a block as a vector.
struct ScaleReader256<'a> {
    block: &'a Block<'a>,
    /// Lane `r`: where row `r`'s scales start, `r * groups_per_row`.
    offsets: __m256i,
}

impl<'a> ScaleReader256<'a> {
    #[target_feature(enable = "avx2")]
    fn new(block: &'a Block<'a>) -> ScaleReader256<'a> {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let groups_per_row = (block.scales.len() / ROWS_256) as i32;
        ScaleReader256 {
            block,
            offsets: _mm256_mullo_epi32(lanes, _mm256_set1_epi32(groups_per_row)),
        }
    }

    /// As [`ScaleReader512::add_scaled_group`], for 8 rows.
    #[target_feature(enable = "avx2")]
    fn add_scaled_group(
        &self,
        sums: __m256,
        group_sums: __m256i,
        g: usize,
        x_scale: f32,
    ) -> __m256 {
        assert!(g < self.block.scales.len() / ROWS_256);
        // SAFETY: lane r reads scale r * groups_per_row + g < 8 * groups_per_row of the block.
        let ws =
            unsafe { _mm256_i32gather_ps::<4>(self.block.scales.as_ptr().add(g), self.offsets) };
        let scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(group_sums), ws);
        _mm256_add_ps(sums, _mm256_mul_ps(scaled, _mm256_set1_ps(x_scale)))
    }
}

/// Up to 32 bytes into a vector, zero-filled past the end.
#[target_feature(enable = "avx2")]
fn load_up_to_32(bytes: &[i8]) -> __m256i {
    if bytes.len() == CHUNK_256 {
        // SAFETY: 32 bytes are readable.
        return unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) };
    }
    let mut padded = [0i8; CHUNK_256];
    padded[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `padded` is 32 bytes.
    unsafe { _mm256_loadu_si256(padded.as_ptr().cast()) }
}

/// Transpose an 8x8 matrix of `i32`: afterwards `m[k]` lane `r` is what `m[r]` lane `k` was.
#[target_feature(enable = "avx2")]
fn transpose_8x8(m: &mut [__m256i; 8]) {
    // As in transpose_16x16: b[4j + q] holds, in 128-bit lane L, element 4L + q of rows 4j..4j+4.
    let mut a = *m;
    for i in 0..4 {
        a[2 * i] = _mm256_unpacklo_epi32(m[2 * i], m[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_epi32(m[2 * i], m[2 * i + 1]);
    }
    let mut b = a;
    for j in 0..2 {
        b[4 * j] = _mm256_unpacklo_epi64(a[4 * j], a[4 * j + 2]);
        b[4 * j + 1] = _mm256_unpackhi_epi64(a[4 * j], a[4 * j + 2]);
        b[4 * j + 2] = _mm256_unpacklo_epi64(a[4 * j + 1], a[4 * j + 3]);
        b[4 * j + 3] = _mm256_unpackhi_epi64(a[4 * j + 1], a[4 * j + 3]);
    }
    for q in 0..4 {
        m[q] = _mm256_permute2x128_si256::<0x20>(b[q], b[4 + q]);
        m[4 + q] = _mm256_permute2x128_si256::<0x31>(b[q], b[4 + q]);
    }
}

// ---------------------------------------------------------------------------------------------

/// Counts quads into groups as a row is walked: says when a group is complete, and which.
struct GroupCounter {
    quads_per_group: usize,
    quads: usize,
    /// The group being filled, counted from the row's first group (which is also x's).
    group: usize,
}

impl GroupCounter {
    fn new(quads_per_group: usize) -> GroupCounter {
        GroupCounter {
            quads_per_group,
            quads: 0,
            group: 0,
        }
    }

    /// Count one more quad; if it completes a group, return that group's index in the row.
    fn add_quad(&mut self) -> Option<usize> {
        self.quads += 1;
        if self.quads < self.quads_per_group {
            return None;
        }
        self.quads = 0;
        self.group += 1;
        Some(self.group - 1)
    }
}
