//! The exact kernels: every sum in `run.c`'s order, written once over a [`Vector`] of `f32`
//! lanes and built per instruction set in `kernels/x86.rs` (and for [`Portable`] in
//! [`super::dispatch`]).
//!
//! **Every sum is `run.c`'s sum.** `run.c` computes each dot product as
//! `sum += w[j] * x[j]` for `j = 0, 1, 2, ...`: every product rounded, then added, in order.
//! Splitting that sum over SIMD lanes would change its rounding, and with it, now and then, a
//! sampled token. So no kernel here ever splits one sum: vectors run *many sums side by side*,
//! one per lane, each strictly in order.
//!
//! * Matrix-vector products (and attention scores, which are a matrix of cached keys times a
//!   query) put one **row** in each lane: a block of rows is loaded, transposed so that each
//!   register holds one column of the block, and the columns are added in order.
//! * Batched matrix products put one **token** in each lane: the batch's activations are
//!   transposed once ([`transpose_tokens`]), and each weight is broadcast and multiplied by a
//!   column of tokens.
//! * Weighted sums of cached values put one **output element** in each lane, and add the
//!   positions in order.
//! * Softmax finds the maximum with vectors (a maximum is the same in any order), takes the C
//!   library's `e^x` of each value and adds them in order.
//!
//! So all instruction sets, and the plain loops of [`crate::reference`], give the same bits, and a
//! batch of tokens gives exactly the numbers of one token at a time.
//!
//! Every function here is `unsafe`: it trusts its caller (the checked methods of
//! [`Kernels`](super::dispatch::Kernels)) for the shapes and for the CPU's instructions. Threads
//! are not this module's business: see [`super::parallel`].

pub use super::vector::{Portable, Vector};
#[allow(unused_imports)]
use crate::prelude::*;

/// Batched products transpose the activations into columns of this many tokens (a multiple of
/// every instruction set's lane count), zero-padded.
pub const TOKEN_BLOCK: usize = 16;

/// The most query heads per key head that [`scores_all_heads`] handles (it keeps one running
/// sum per query head of the current key head in registers).
pub const MAX_KV_MUL: usize = 8;

/// The shape of one [`scores_all_heads`] or [`weighted_sums_all_heads`] call.
#[derive(Clone, Copy, Debug)]
pub struct HeadShape {
    /// Cached positions (rows of keys).
    pub n_pos: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Query heads per key head.
    pub kv_mul: usize,
    /// Values per cached row: key heads times `head_dim`.
    pub kv_dim: usize,
}

/// Write the `m` rows of `xs` (each `cols` long) as columns: `xs_t[j * padded + t] = xs[t][j]`,
/// with `padded = m` rounded up to [`TOKEN_BLOCK`] and the padding zeroed. `xs_t` must hold at
/// least `cols * padded` values.
pub fn transpose_tokens(xs_t: &mut [f32], xs: &[f32], m: usize, cols: usize) {
    let padded = m.next_multiple_of(TOKEN_BLOCK);
    let xs_t = &mut xs_t[..cols * padded];
    for (j, column) in xs_t.chunks_exact_mut(padded).enumerate() {
        for (t, value) in column.iter_mut().enumerate() {
            *value = if t < m { xs[t * cols + j] } else { 0.0 };
        }
    }
}

/// `out[i] = w[i] · x` for each row `i` of the row-major matrix `w`, `(out.len(), x.len())`:
/// [`dots_strided`] with rows one after the other.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; `w.len() == out.len() * x.len()`.
#[inline(always)]
pub unsafe fn matvec<V: Vector>(out: &mut [f32], w: &[f32], x: &[f32]) {
    // SAFETY: forwarded from this function's contract.
    unsafe { dots_strided::<V>(out, x, w, x.len()) }
}

/// Softmax of every row of `x` (rows of `width` values, `width > 0`), in place: subtract the
/// row's maximum (so `e^x` cannot overflow), take the C library's `e^x` of each value, add them
/// in order, divide. `run.c`'s arithmetic exactly: the sampler depends on these values to pick
/// its token for a random coin, and attention on them to give `run.c`'s text. (A vectorised
/// `e^x` within 2 ulp was measured 25% faster on stories260K, but changed int8 outputs.)
///
/// The rows' sums are added side by side, eight rows at a time: each is still summed in order,
/// but eight independent additions can be in flight instead of one waiting on the last.
///
/// # Safety
///
/// The CPU supports `V`'s instructions.
#[inline(always)]
pub unsafe fn softmax_rows<V: Vector>(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        // SAFETY: the caller vouches for the CPU.
        let max = unsafe { max::<V>(row) };
        for v in row.iter_mut() {
            *v = (*v - max).exp();
        }
    }
    for rows in x.chunks_mut(8 * width) {
        let mut sums = [0.0f32; 8];
        let n_rows = rows.len() / width;
        for t in 0..width {
            for (r, sum) in sums.iter_mut().enumerate().take(n_rows) {
                *sum += rows[r * width + t];
            }
        }
        for (row, &sum) in rows.chunks_exact_mut(width).zip(&sums) {
            // SAFETY: the caller vouches for the CPU.
            unsafe { divide::<V>(row, sum) };
        }
    }
}

/// The kernel of `Kernels::dots_strided`, for vector type `V`: blocks of `LANES` rows, one row per
/// lane. Each block of `LANES` columns is loaded row by row and transposed, so that vector `c`
/// holds column `c` of every row; the columns are then added to the running sums in order.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the rows fit in `rows` (see `check_strided`).
#[inline(always)]
pub unsafe fn dots_strided<V: Vector>(out: &mut [f32], x: &[f32], rows: &[f32], stride: usize) {
    let lanes = V::LANES;
    let mut first = 0;
    while first < out.len() {
        let block_rows = lanes.min(out.len() - first);
        // SAFETY: rows `first..first + block_rows` are in bounds (checked by the caller), and
        // `out` holds them; the caller vouches for the CPU.
        unsafe {
            let row0 = rows.as_ptr().add(first * stride);
            // The rows after this block, to prefetch while this one is summed. Past the last
            // block they lie outside `rows`, maybe outside any allocation (`wrapping_add`):
            // harmless for a prefetch, and often the rows this thread takes next.
            let next_block = row0.wrapping_add(lanes * stride);
            let sums = if block_rows == lanes {
                dots_of_full_block::<V>(row0, stride, x, next_block)
            } else {
                dots_of_block::<V>(row0, stride, block_rows, x)
            };
            let dst = out.as_mut_ptr().add(first);
            if block_rows == lanes {
                sums.store(dst);
            } else {
                sums.store_partial(dst, block_rows);
            }
        }
        first += block_rows;
    }
}

/// The running sums of `LANES` rows starting at `row0`, `stride` apart, times `x`: the hot loop
/// of [`dots_strided`], with no partial rows to check for.
///
/// While it reads this block a column at a time, it asks for the next block (the `LANES` rows
/// from `next_block` on) as fast as it consumes this one. Read a column at a time, a block is
/// `LANES` short streams side by side, which the hardware prefetchers follow poorly:
///
/// * rows that follow each other in memory (a matrix) are asked for front to back, one long
///   stream that keeps memory busy (decoding stories110M's shapes measured 10% faster,
///   stories15M's 20%);
/// * rows with gaps between them (one head's part of the cached keys) are asked for at the
///   place being read in this block, a block on (int8 stories110M decoded 5% faster).
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the `LANES` rows hold `x.len()` readable floats each.
#[inline(always)]
unsafe fn dots_of_full_block<V: Vector>(
    row0: *const f32,
    stride: usize,
    x: &[f32],
    next_block: *const f32,
) -> V {
    let (n, lanes) = (x.len(), V::LANES);
    let full = n - n % lanes;
    let contiguous = stride == n;
    // Each step reads `LANES * LANES` floats of this block: prefetch as many of the next.
    let lines_per_step = (lanes * lanes / FLOATS_PER_LINE).min(lanes);
    // SAFETY: every read is of row `r < LANES` at a column below `n`; the caller vouches for
    // the CPU. Prefetches never fault, so their addresses need no such care.
    unsafe {
        let mut sums = V::zero();
        let mut block = [V::zero(); 16];
        let block = &mut block[..lanes];
        let mut j = 0;
        while j < full {
            for (r, v) in block.iter_mut().enumerate() {
                if !contiguous {
                    V::prefetch(next_block.wrapping_add(r * stride + j));
                } else if r < lines_per_step {
                    V::prefetch(next_block.wrapping_add(j * lanes + r * FLOATS_PER_LINE));
                }
                *v = V::load(row0.add(r * stride + j));
            }
            V::transpose(block);
            for (c, column) in block.iter().enumerate() {
                sums = sums.add_product(*column, V::splat(*x.get_unchecked(j + c)));
            }
            j += lanes;
        }
        if j < n {
            sums = add_columns(sums, row0, stride, lanes, j, x);
        }
        sums
    }
}

/// True when 16 rows `stride` floats apart would crowd into the same sets of a level-1 data
/// cache (64 sets of 64-byte lines, 8 to 12 of them per set): 8 or more in one set, with the
/// lines prefetched for the next block beside them, evict each other before they are used.
/// Rows 8 KiB long (hidden size 2048) put all 16 in one set; rows of 2 KiB (dim 512) put 8 in
/// each of two, which measured 13% slower decoding of the stories42M shape than 8 rows at a
/// time.
pub fn sixteen_rows_alias(stride: usize) -> bool {
    let mut per_set = [0u8; 64];
    for r in 0..16 {
        per_set[(r * stride * 4 / 64) % 64] += 1;
    }
    per_set.iter().any(|&n| n >= 8)
}

/// Floats in a 64-byte cache line.
const FLOATS_PER_LINE: usize = 16;

/// [`dots_of_full_block`] for the last, partial block of `block_rows < LANES` rows (the other
/// lanes see zeros).
///
/// # Safety
///
/// As for [`dots_of_full_block`], for `block_rows` rows.
#[inline(always)]
unsafe fn dots_of_block<V: Vector>(
    row0: *const f32,
    stride: usize,
    block_rows: usize,
    x: &[f32],
) -> V {
    let mut sums = V::zero();
    let mut j = 0;
    while j < x.len() {
        // SAFETY: forwarded from this function's contract.
        sums = unsafe { add_columns(sums, row0, stride, block_rows, j, x) };
        j += V::LANES.min(x.len() - j);
    }
    sums
}

/// Add columns `j..j + LANES` (or up to the end of `x`) of `block_rows` rows to `sums`, one
/// column after the other: the general (and slower) step, for edges of the matrix.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the `block_rows` rows from `row0` hold `x.len()`
/// readable floats each.
#[inline(always)]
unsafe fn add_columns<V: Vector>(
    mut sums: V,
    row0: *const f32,
    stride: usize,
    block_rows: usize,
    j: usize,
    x: &[f32],
) -> V {
    let lanes = V::LANES;
    let width = lanes.min(x.len() - j);
    // SAFETY: rows below `block_rows`, columns below `x.len()`; the caller vouches for the CPU.
    unsafe {
        let mut block = [V::zero(); 16];
        let block = &mut block[..lanes];
        for (r, v) in block.iter_mut().enumerate().take(block_rows) {
            let p = row0.add(r * stride + j);
            *v = if width == lanes {
                V::load(p)
            } else {
                V::load_partial(p, width)
            };
        }
        V::transpose(block);
        for (c, column) in block[..width].iter().enumerate() {
            sums = sums.add_product(*column, V::splat(*x.get_unchecked(j + c)));
        }
    }
    sums
}

/// The kernel of `Kernels::scores_all_heads`, for vector type `V`: blocks of `LANES` positions, one
/// position per lane. Each block of `LANES` key columns is transposed once; column `j` belongs to
/// key head `j / head_dim`, and is added (times the query value) to the running sums of that key
/// head's `kv_mul` query heads. Columns come in order, so each sum is in order; when the key head
/// changes, the finished sums are stored.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the shapes are consistent (as checked by
/// `scores_all_heads`).
#[inline(always)]
pub unsafe fn scores_all_heads<V: Vector>(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    shape: HeadShape,
) {
    let HeadShape {
        n_pos,
        head_dim,
        kv_mul,
        kv_dim,
    } = shape;
    let lanes = V::LANES;
    let mut first = 0;
    while first < n_pos {
        let block_rows = lanes.min(n_pos - first);
        // Store the sums of key head `kv_head`'s query heads for this block of positions.
        let flush = |sums: &[V; MAX_KV_MUL], kv_head: usize, scores: &mut [f32]| {
            for (k, sum) in sums.iter().enumerate().take(kv_mul) {
                let head = kv_head * kv_mul + k;
                // SAFETY: `scores` holds `n_pos` values per head, and positions
                // `first..first + block_rows` are below `n_pos`; the caller vouches for the CPU.
                unsafe {
                    let dst = scores.as_mut_ptr().add(head * n_pos + first);
                    if block_rows == lanes {
                        sum.store(dst);
                    } else {
                        sum.store_partial(dst, block_rows);
                    }
                }
            }
        };
        // SAFETY: rows `first..first + block_rows` hold `kv_dim` floats each and the columns
        // read stay below `kv_dim`; query indices stay inside `q`. The caller vouches for the
        // CPU.
        unsafe {
            let mut sums = [V::zero(); MAX_KV_MUL];
            let mut kv_head = 0;
            let mut block = [V::zero(); 16];
            let block = &mut block[..lanes];
            let mut j = 0;
            while j < kv_dim {
                let width = lanes.min(kv_dim - j);
                for (r, v) in block.iter_mut().enumerate() {
                    *v = if r >= block_rows {
                        V::zero()
                    } else {
                        let p = keys.as_ptr().add((first + r) * kv_dim + j);
                        if width == lanes {
                            V::load(p)
                        } else {
                            V::load_partial(p, width)
                        }
                    };
                }
                V::transpose(block);
                for (c, column) in block[..width].iter().enumerate() {
                    let (head_of_column, i) = ((j + c) / head_dim, (j + c) % head_dim);
                    if head_of_column != kv_head {
                        flush(&sums, kv_head, scores);
                        sums = [V::zero(); MAX_KV_MUL];
                        kv_head = head_of_column;
                    }
                    for (k, sum) in sums.iter_mut().enumerate().take(kv_mul) {
                        let query = *q.get_unchecked((kv_head * kv_mul + k) * head_dim + i);
                        *sum = sum.add_product(*column, V::splat(query));
                    }
                }
                j += width;
            }
            flush(&sums, kv_head, scores);
        }
        first += block_rows;
    }
}

/// The kernel of `Kernels::weighted_sum`, for vector type `V`: up to [`WEIGHTED_SUM_VECTORS`]
/// registers of output at a time (a whole head, usually), in one pass down the rows, each value
/// summed in order of the rows. One pass reads each row's slice once, as a few neighbouring lines,
/// and asks for the slice [`ROWS_AHEAD`] rows on: the rows are far apart (one head's part of the
/// cached values), and the hardware prefetchers do not follow them.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the rows fit in `rows` (see `check_strided`).
#[inline(always)]
pub unsafe fn weighted_sum<V: Vector>(
    out: &mut [f32],
    weights: &[f32],
    rows: &[f32],
    stride: usize,
) {
    let (n, lanes) = (out.len(), V::LANES);
    let mut j0 = 0;
    while j0 < n {
        let width = (WEIGHTED_SUM_VECTORS * lanes).min(n - j0);
        // SAFETY: each row holds `n` floats from `t * stride`, so `width` floats from `j0` are
        // readable, and `out` has `width` writable floats from `j0`; the caller vouches for
        // the CPU. Prefetches never fault, so their addresses need no such care.
        unsafe {
            let mut sums = [V::zero(); WEIGHTED_SUM_VECTORS];
            for (t, &weight) in weights.iter().enumerate() {
                let row = rows.as_ptr().add(t * stride + j0);
                for line in (0..width).step_by(FLOATS_PER_LINE) {
                    V::prefetch(row.wrapping_add(ROWS_AHEAD * stride + line));
                }
                let weight = V::splat(weight);
                for (k, sum) in sums.iter_mut().enumerate().take(width.div_ceil(lanes)) {
                    let (p, left) = (row.add(k * lanes), width - k * lanes);
                    let v = if left >= lanes {
                        V::load(p)
                    } else {
                        V::load_partial(p, left)
                    };
                    *sum = sum.add_product(weight, v);
                }
            }
            for (k, sum) in sums.iter().enumerate().take(width.div_ceil(lanes)) {
                let (p, left) = (out.as_mut_ptr().add(j0 + k * lanes), width - k * lanes);
                if left >= lanes {
                    sum.store(p);
                } else {
                    sum.store_partial(p, left);
                }
            }
        }
        j0 += width;
    }
}

/// Output registers [`weighted_sum`] fills in one pass (a head of 128 values with
/// AVX-512).
pub const WEIGHTED_SUM_VECTORS: usize = 8;

/// How many rows ahead [`weighted_sum`] asks for the values it will read.
pub const ROWS_AHEAD: usize = 8;

/// The kernel of `Kernels::divide`, for vector type `V`.
///
/// # Safety
///
/// The CPU supports `V`'s instructions.
#[inline(always)]
pub unsafe fn divide<V: Vector>(x: &mut [f32], divisor: f32) {
    let mut j = 0;
    while j < x.len() {
        let lanes = V::LANES.min(x.len() - j);
        // SAFETY: `lanes` floats from `j` are inside `x`; the caller vouches for the CPU.
        unsafe {
            let p = x.as_mut_ptr().add(j);
            if lanes == V::LANES {
                V::load(p).div(V::splat(divisor)).store(p);
            } else {
                V::load_partial(p, lanes)
                    .div(V::splat(divisor))
                    .store_partial(p, lanes);
            }
        }
        j += lanes;
    }
}

/// The kernel of `Kernels::weighted_sums_all_heads`, for vector type `V`: for each stretch of
/// `LANES` values of a head, eight heads at a time run down the positions together, each adding its
/// weight times its key head's values.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the shapes are consistent (as checked by
/// `weighted_sums_all_heads`).
#[inline(always)]
pub unsafe fn weighted_sums_all_heads<V: Vector>(
    out: &mut [f32],
    att: &[f32],
    values: &[f32],
    shape: HeadShape,
) {
    const HEADS: usize = 8;
    let HeadShape {
        n_pos,
        head_dim,
        kv_mul,
        kv_dim,
    } = shape;
    let n_heads = out.len() / head_dim;
    let mut first_head = 0;
    while first_head < n_heads {
        let heads = HEADS.min(n_heads - first_head);
        let mut j = 0;
        while j < head_dim {
            let lanes = V::LANES.min(head_dim - j);
            // SAFETY: for head `h < n_heads`, position `t < n_pos` and values `j..j + lanes` of
            // a head, `att[h * n_pos + t]`, `values[t * kv_dim + (h / kv_mul) * head_dim + j..]`
            // and `out[h * head_dim + j..]` are in bounds (checked by the caller); the caller
            // vouches for the CPU.
            unsafe {
                let mut sums = [V::zero(); HEADS];
                let value_at = |h: usize| (h / kv_mul) * head_dim + j;
                for t in 0..n_pos {
                    let row = values.as_ptr().add(t * kv_dim);
                    for (k, sum) in sums.iter_mut().enumerate().take(heads) {
                        let h = first_head + k;
                        let p = row.add(value_at(h));
                        let v = if lanes == V::LANES {
                            V::load(p)
                        } else {
                            V::load_partial(p, lanes)
                        };
                        *sum = sum.add_product(V::splat(*att.get_unchecked(h * n_pos + t)), v);
                    }
                }
                for (k, sum) in sums.iter().enumerate().take(heads) {
                    let dst = out.as_mut_ptr().add((first_head + k) * head_dim + j);
                    if lanes == V::LANES {
                        sum.store(dst);
                    } else {
                        sum.store_partial(dst, lanes);
                    }
                }
            }
            j += lanes;
        }
        first_head += heads;
    }
}

/// The kernel of `Kernels::max`, for vector type `V`: lane by lane over the full chunks, starting
/// from `x[0]` in every lane (so that a NaN there stays, as in the scan), then across the lanes and
/// on through the values left over.
///
/// # Safety
///
/// The CPU supports `V`'s instructions.
#[inline(always)]
pub unsafe fn max<V: Vector>(x: &[f32]) -> f32 {
    let Some(&first) = x.first() else {
        return f32::NEG_INFINITY;
    };
    let full = x.len() - x.len() % V::LANES;
    // SAFETY: every chunk below `full` holds `LANES` readable floats; the caller vouches for the
    // CPU.
    let max = unsafe {
        let mut maxes = V::splat(first);
        for k in (0..full).step_by(V::LANES) {
            maxes = V::load(x[k..].as_ptr()).max(maxes);
        }
        maxes.max_lane()
    };
    x[full..]
        .iter()
        .fold(max, |m, &v| if v > m { v } else { m })
}

/// The kernel of `Kernels::matmul_t`, for vector type `V`: groups of `R` weight rows, one token per
/// lane. For each group, every block of `LANES` tokens runs down all the columns, adding each
/// broadcast weight times the column of tokens: `R` running sums per token, each in column order.
///
/// Weight rows are the outer loop so that each group is read from memory once and then served
/// from cache to every block of tokens.
///
/// # Safety
///
/// The CPU supports `V`'s instructions; the shapes are consistent (as checked by `matmul_t`).
#[inline(always)]
pub unsafe fn matmul_t<V: Vector, const R: usize>(
    out_t: &mut [f32],
    w: &[f32],
    xs_t: &[f32],
    m: usize,
    cols: usize,
) {
    let rows = w.len() / cols;
    let padded = m.next_multiple_of(TOKEN_BLOCK);
    let mut i = 0;
    while i < rows {
        let group = R.min(rows - i);
        // Rows past the matrix's end repeat its last row; their sums are not stored.
        let row: [*const f32; R] =
            core::array::from_fn(|r| w[(i + r.min(group - 1)) * cols..].as_ptr());
        let mut t = 0;
        while t < m {
            let tokens = V::LANES.min(m - t);
            // SAFETY: each row pointer has `cols` readable floats; column `j` of tokens
            // `t..t + LANES` lies inside the padded `xs_t`; the output holds `m` floats per row
            // from `(i + r) * m`. The caller vouches for the CPU.
            unsafe {
                let mut sums = [V::zero(); R];
                for j in 0..cols {
                    let x = V::load(xs_t.as_ptr().add(j * padded + t));
                    for r in 0..R {
                        sums[r] = sums[r].add_product(V::splat(*row[r].add(j)), x);
                    }
                }
                for (r, sum) in sums.iter().enumerate().take(group) {
                    let dst = out_t.as_mut_ptr().add((i + r) * m + t);
                    if tokens == V::LANES {
                        sum.store(dst);
                    } else {
                        sum.store_partial(dst, tokens);
                    }
                }
            }
            t += tokens;
        }
        i += group;
    }
}

/// Build the exact kernels for the vector type `$V` as a module `$name` of functions carrying
/// `$attr` (a `#[target_feature]`, so the compiler may use the instructions inside; nothing for
/// [`Portable`]): one function per kernel, named as here. `$Narrow` is the vector used where
/// `$V` would waste lanes or thrash the cache: heads narrower than `$V`, and 16 rows that alias
/// in the level-1 cache ([`sixteen_rows_alias`]). A batched product takes `$rows` weight rows
/// at a time.
///
/// Every function is `unsafe` with the contract of the kernel it builds, and one more: the CPU
/// has the instructions of `$attr`.
macro_rules! instantiate {
    (
        $(#[$doc:meta])*
        $name:ident, $V:ty, $Narrow:ty, $rows:literal $(, #[$attr:meta])? $(,)?
    ) => {
        $(#[$doc])*
        pub mod $name {
            use $crate::kernels::exact::{self, HeadShape, Vector};

            /// [`exact::matvec`].
            ///
            /// # Safety
            ///
            /// See [`exact::matvec`]; the CPU has this module's instructions.
            $(#[$attr])?
            pub unsafe fn matvec(out: &mut [f32], w: &[f32], x: &[f32]) {
                // SAFETY: forwarded from this function's contract.
                unsafe { dots_strided(out, x, w, x.len()) }
            }

            /// [`exact::dots_strided`], in `$Narrow` registers when 16 rows alias in the cache.
            ///
            /// # Safety
            ///
            /// See [`exact::dots_strided`]; the CPU has this module's instructions.
            $(#[$attr])?
            pub unsafe fn dots_strided(out: &mut [f32], x: &[f32], rows: &[f32], stride: usize) {
                // SAFETY: forwarded from this function's contract.
                unsafe {
                    if <$V>::LANES == 16 && exact::sixteen_rows_alias(stride) {
                        exact::dots_strided::<$Narrow>(out, x, rows, stride)
                    } else {
                        exact::dots_strided::<$V>(out, x, rows, stride)
                    }
                }
            }

            /// [`exact::matmul_t`].
            ///
            /// # Safety
            ///
            /// See [`exact::matmul_t`]; the CPU has this module's instructions.
            $(#[$attr])?
            pub unsafe fn matmul_t(
                out_t: &mut [f32],
                w: &[f32],
                xs_t: &[f32],
                m: usize,
                cols: usize,
            ) {
                // SAFETY: forwarded from this function's contract.
                unsafe { exact::matmul_t::<$V, $rows>(out_t, w, xs_t, m, cols) }
            }

            /// [`exact::weighted_sum`].
            ///
            /// # Safety
            ///
            /// See [`exact::weighted_sum`]; the CPU has this module's instructions.
            $(#[$attr])?
            pub unsafe fn weighted_sum(
                out: &mut [f32],
                weights: &[f32],
                rows: &[f32],
                stride: usize,
            ) {
                // SAFETY: forwarded from this function's contract.
                unsafe { exact::weighted_sum::<$V>(out, weights, rows, stride) }
            }

            /// [`exact::scores_all_heads`].
            ///
            /// # Safety
            ///
            /// See [`exact::scores_all_heads`]; the CPU has this module's instructions.
            $(#[$attr])?
            pub unsafe fn scores_all_heads(
                scores: &mut [f32],
                q: &[f32],
                keys: &[f32],
                shape: HeadShape,
            ) {
                // SAFETY: forwarded from this function's contract.
                unsafe { exact::scores_all_heads::<$V>(scores, q, keys, shape) }
            }

            /// [`exact::weighted_sums_all_heads`], in `$Narrow` registers for narrow heads.
            ///
            /// # Safety
            ///
            /// See [`exact::weighted_sums_all_heads`]; the CPU has this module's instructions.
            $(#[$attr])?
            pub unsafe fn weighted_sums_all_heads(
                out: &mut [f32],
                att: &[f32],
                values: &[f32],
                shape: HeadShape,
            ) {
                // SAFETY: forwarded from this function's contract.
                unsafe {
                    if shape.head_dim < <$V>::LANES {
                        exact::weighted_sums_all_heads::<$Narrow>(out, att, values, shape)
                    } else {
                        exact::weighted_sums_all_heads::<$V>(out, att, values, shape)
                    }
                }
            }

            /// [`exact::max`].
            ///
            /// # Safety
            ///
            /// The CPU has this module's instructions.
            $(#[$attr])?
            pub unsafe fn max(x: &[f32]) -> f32 {
                // SAFETY: forwarded from this function's contract.
                unsafe { exact::max::<$V>(x) }
            }

            /// [`exact::divide`].
            ///
            /// # Safety
            ///
            /// The CPU has this module's instructions.
            $(#[$attr])?
            pub unsafe fn divide(x: &mut [f32], divisor: f32) {
                // SAFETY: forwarded from this function's contract.
                unsafe { exact::divide::<$V>(x, divisor) }
            }

            /// [`exact::softmax_rows`].
            ///
            /// # Safety
            ///
            /// The CPU has this module's instructions.
            $(#[$attr])?
            pub unsafe fn softmax_rows(x: &mut [f32], width: usize) {
                // SAFETY: forwarded from this function's contract.
                unsafe { exact::softmax_rows::<$V>(x, width) }
            }
        }
    };
}
pub(crate) use instantiate;
