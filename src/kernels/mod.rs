//! The math of the forward pass, on plain `f32` slices: matmul, RMSNorm, softmax, RoPE,
//! attention, SwiGLU.
//!
//! This module knows nothing about checkpoints or models; it takes slices and writes slices.
//! Each kernel has a plain version in [`plain`], written as directly as the maths, and the tests
//! hold the fast versions here to those. The matrix kernels pick the best instruction set at run
//! time (see [`simd`]) and spread rows over threads (see [`parallel`]).
//!
//! Int8 kernels live in [`crate::quant`].

pub mod parallel;
pub mod plain;
pub mod simd;
#[cfg(target_arch = "x86_64")]
mod x86;

/// RMSNorm with llama2.c's epsilon: `out = weight * x / sqrt(mean(x^2) + 1e-5)`.
///
/// The sum of squares is accumulated in order, as `run.c` does, so results match it exactly.
pub fn rms_norm(out: &mut [f32], x: &[f32], weight: &[f32]) {
    debug_assert!(out.len() == x.len() && x.len() == weight.len());
    let mut sum_squares = 0.0f32;
    for &v in x {
        sum_squares += v * v;
    }
    let inv_rms = 1.0 / (sum_squares / x.len() as f32 + 1e-5).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (inv_rms * v);
    }
}

/// RMSNorm in place (the final norm before the classifier).
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32]) {
    let mut sum_squares = 0.0f32;
    for &v in x.iter() {
        sum_squares += v * v;
    }
    let inv_rms = 1.0 / (sum_squares / x.len() as f32 + 1e-5).sqrt();
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = w * (inv_rms * *v);
    }
}

/// Softmax in place, subtracting the maximum first so `exp` cannot overflow.
///
/// `run.c`'s arithmetic exactly: the C library's `e^x` and the sum in order. The sampler depends
/// on these exact values to pick the same token for the same random coin, and attention on them
/// to give `run.c`'s (and `runq.c`'s) text. (A vectorised `e^x` within 2 ulp was measured 25%
/// faster on stories260K, where attention dominates, but changed int8 outputs.)
pub fn softmax(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    // The maximum is exact whatever the order, so vectors may find it.
    let isa = simd::Isa::detect();
    let max = isa.max(x);
    // Two passes, not one: the calls to `exp` are then independent of each other and overlap,
    // instead of waiting on the running sum. The sum is the same, added in the same order.
    for v in x.iter_mut() {
        *v = (*v - max).exp();
    }
    let mut sum = 0.0f32;
    for &v in x.iter() {
        sum += v;
    }
    isa.divide(x, sum);
}

/// Fill `table` with the RoPE rotation for position `pos`: `(cos, sin)` of `pos * freq_j` for each
/// pair `j` of a head, with `freq_j = 10000^(-2j / head_dim)`.
///
/// The formula and operation order are run.c's, so the angles match it bit for bit.
pub fn rope_table(table: &mut [(f32, f32)], pos: usize, head_dim: usize) {
    for (j, entry) in table.iter_mut().enumerate() {
        let freq = 1.0f32 / 10000.0f32.powf((2 * j) as f32 / head_dim as f32);
        let angle = pos as f32 * freq;
        *entry = (angle.cos(), angle.sin());
    }
}

/// Rotate each adjacent pair `(v[2j], v[2j+1])` of every head in `vec` by the angles of `table`
/// (one entry per pair of a head).
pub fn rope(vec: &mut [f32], table: &[(f32, f32)]) {
    let head_dim = table.len() * 2;
    for head in vec.chunks_exact_mut(head_dim) {
        for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(table) {
            let (v0, v1) = (pair[0], pair[1]);
            pair[0] = v0 * cos - v1 * sin;
            pair[1] = v0 * sin + v1 * cos;
        }
    }
}

/// SwiGLU in place: `gate = silu(gate) * up`, where `silu(v) = v * sigmoid(v)`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let v = *g;
        *g = v * (1.0 / (1.0 + (-v).exp())) * u;
    }
}

/// `x += y`, the residual connection.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Dot product of two equal-length vectors, summed in order as `run.c` sums it.
///
/// One sum cannot be split over SIMD lanes without changing its rounding, so this is a plain
/// loop; the matrix kernels get their speed from running many such sums side by side.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        sum += x * y;
    }
    sum
}

/// Matrix-vector product `out = W x` for a row-major `W` of shape `(out.len(), x.len())`.
///
/// Rows are spread over threads when the matrix is large enough to pay for it.
pub fn matmul(out: &mut [f32], w: &[f32], x: &[f32]) {
    let cols = x.len();
    debug_assert_eq!(w.len(), out.len() * cols);
    parallel::for_each_row_block(out, cols, |first_row, block| {
        let rows = &w[first_row * cols..(first_row + block.len()) * cols];
        simd::matvec(block, rows, x);
    });
}

/// Matrix-vector products of several matrices with the same `x`, `outs[i] = ws[i] x`, in one
/// parallel pass: each gives exactly what [`matmul`] gives.
pub fn matmul_each<const N: usize>(outs: [&mut [f32]; N], ws: [&[f32]; N], x: &[f32]) {
    let cols = x.len();
    parallel::for_each_row_block_of_each(outs, cols, |i, first_row, block| {
        let rows = &ws[i][first_row * cols..(first_row + block.len()) * cols];
        simd::matvec(block, rows, x);
    });
}

/// Matrix-matrix product for a batch of `m` activation rows: `out = X Wᵀ`, with `xs` of shape
/// `(m, cols)` (`cols > 0`), row-major `W` of shape `(rows, cols)` and `out` of shape `(m, rows)`.
///
/// Each weight is read once for the whole batch (the point of batching a prompt), and each row
/// of `out` is bit for bit what [`matmul`] gives for that row of `xs`. `scratch` must hold at
/// least [`matmul_batch_scratch`] values: the batch is transposed into it so that one vector
/// lane holds one token, and threads write whole weight rows (columns of `out`) into it before
/// they are copied into place.
pub fn matmul_batch(out: &mut [f32], w: &[f32], xs: &[f32], cols: usize, scratch: &mut [f32]) {
    matmul_batch_each([out], [w], xs, cols, scratch);
}

/// [`matmul_batch`] for several matrices that read the same batch, `outs[i] = X ws[i]ᵀ`: the
/// batch is transposed once for all of them. `scratch` must hold [`matmul_batch_scratch`]
/// values for the widest of them.
pub fn matmul_batch_each<const N: usize>(
    outs: [&mut [f32]; N],
    ws: [&[f32]; N],
    xs: &[f32],
    cols: usize,
    scratch: &mut [f32],
) {
    let m = xs.len() / cols;
    if m == 0 {
        return;
    }
    let (xs_t, out_t) = scratch.split_at_mut(cols * m.next_multiple_of(simd::TOKEN_BLOCK));
    simd::transpose_tokens(xs_t, xs, m, cols);
    let xs_t = &*xs_t;
    for (out, w) in outs.into_iter().zip(ws) {
        let rows = w.len() / cols;
        debug_assert_eq!(out.len(), m * rows);
        let out_t = &mut out_t[..m * rows];
        parallel::for_each_row_group(out_t, m, m * cols, |first_row, block| {
            let block_rows = block.len() / m;
            let w_rows = &w[first_row * cols..(first_row + block_rows) * cols];
            simd::matmul_t(block, w_rows, xs_t, m, cols);
        });
        transpose(out, out_t, rows, m);
    }
}

/// Write the `(rows, cols)` matrix `input` transposed into `out`, `(cols, rows)`: `out[c * rows +
/// r] = input[r * cols + c]`. It goes a square tile at a time, so that both matrices are read
/// and written a few cache lines at a time rather than one value per line.
pub fn transpose(out: &mut [f32], input: &[f32], rows: usize, cols: usize) {
    const TILE: usize = 16;
    debug_assert!(out.len() == rows * cols && input.len() == rows * cols);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = input[r * cols + c];
                }
            }
        }
    }
}

/// How much scratch [`matmul_batch`] needs for `m` rows of `cols` inputs and `rows` outputs.
pub fn matmul_batch_scratch(m: usize, cols: usize, rows: usize) -> usize {
    m.next_multiple_of(simd::TOKEN_BLOCK) * cols + m * rows
}

/// Shapes of one attention call, shared by all heads.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Number of query heads.
    pub n_heads: usize,
    /// Query heads per key/value head.
    pub kv_mul: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of one cached position: `n_kv_heads * head_dim`.
    pub kv_dim: usize,
}

/// Causal multi-head attention for one query position over `n_pos` cached positions.
///
/// * `out` and `q`: `(n_heads * head_dim,)`
/// * `keys` and `values`: `(n_pos, kv_dim)`, the layer's KV cache up to and including this position
/// * `scores`: scratch of at least `n_heads * n_pos`
///
/// Query head `h` reads key/value head `h / kv_mul` (grouped-query attention).
pub fn attention(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scores: &mut [f32],
    n_pos: usize,
    shape: AttentionShape,
) {
    let AttentionShape { head_dim, .. } = shape;
    let scores = &mut scores[..shape.n_heads * n_pos];
    if has_narrow_heads(shape) {
        attend_narrow_heads(out, q, keys, values, scores, n_pos, shape);
        return;
    }
    let work = shape.n_heads * n_pos * head_dim;
    parallel::for_each_head(out, scores, head_dim, n_pos, work, |h, out_head, att| {
        let q_head = &q[h * head_dim..(h + 1) * head_dim];
        attend_one_head(out_head, q_head, keys, values, att, h / shape.kv_mul, shape);
    });
}

/// Causal attention for a batch of `m` consecutive query positions `start..start + m`: the query
/// at `start + t` attends over cached positions `0..=start + t`, exactly as [`attention`] does
/// for it alone.
///
/// * `out` and `q`: `(m, n_heads * head_dim)`
/// * `keys` and `values`: `(start + m, kv_dim)`, the batch's own positions included
/// * `scores`: scratch of at least `m * n_heads * (start + m)`
pub fn attention_batch(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scores: &mut [f32],
    start: usize,
    shape: AttentionShape,
) {
    let AttentionShape {
        n_heads,
        head_dim,
        kv_dim,
        kv_mul,
    } = shape;
    let dim = n_heads * head_dim;
    let m = q.len() / dim;
    // Every query gets room for the longest row of scores, that of the batch's last position.
    let stride = start + m;
    let scores = &mut scores[..m * n_heads * stride];
    if has_narrow_heads(shape) {
        let rows = out.chunks_exact_mut(dim).zip(q.chunks_exact(dim));
        for (t, ((out, q), scores)) in rows
            .zip(scores.chunks_exact_mut(n_heads * stride))
            .enumerate()
        {
            let n_pos = start + t + 1;
            let (keys, values) = (&keys[..n_pos * kv_dim], &values[..n_pos * kv_dim]);
            attend_narrow_heads(
                out,
                q,
                keys,
                values,
                &mut scores[..n_heads * n_pos],
                n_pos,
                shape,
            );
        }
        return;
    }
    let work = m * n_heads * stride * head_dim;
    parallel::for_each_head(out, scores, head_dim, stride, work, |i, out_head, att| {
        let (t, h) = (i / n_heads, i % n_heads);
        let n_pos = start + t + 1;
        let q_head = &q[t * dim + h * head_dim..t * dim + (h + 1) * head_dim];
        let (keys, values) = (&keys[..n_pos * kv_dim], &values[..n_pos * kv_dim]);
        attend_one_head(
            out_head,
            q_head,
            keys,
            values,
            &mut att[..n_pos],
            h / kv_mul,
            shape,
        );
    });
}

/// True for heads narrower than a 16-lane vector (the tiny models), whose scores are best
/// computed for all heads at once (see [`simd::Isa::scores_all_heads`]). Such models are small,
/// so their attention runs on the calling thread.
fn has_narrow_heads(shape: AttentionShape) -> bool {
    shape.head_dim < 16 && shape.kv_mul <= simd::MAX_KV_MUL
}

/// [`attention`] for narrow heads: the scores of every head in one pass over the keys, then
/// each head's softmax and weighted sum. `scores` holds `n_pos` values per head.
fn attend_narrow_heads(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scores: &mut [f32],
    n_pos: usize,
    shape: AttentionShape,
) {
    let AttentionShape {
        head_dim, kv_mul, ..
    } = shape;
    let isa = simd::Isa::detect();
    isa.scores_all_heads(scores, q, keys, n_pos, head_dim, kv_mul);
    isa.divide(scores, (head_dim as f32).sqrt());
    softmax_rows(scores, n_pos);
    isa.weighted_sums_all_heads(out, scores, values, n_pos, head_dim, kv_mul);
}

/// [`softmax`] of every row of `x` (rows of `width` values), with the same bits. The rows' sums
/// are added side by side, eight rows at a time: each is still summed in order, but eight
/// independent additions can be in flight instead of one waiting on the last.
pub fn softmax_rows(x: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    let isa = simd::Isa::detect();
    for row in x.chunks_exact_mut(width) {
        let max = isa.max(row);
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
            isa.divide(row, sum);
        }
    }
}

/// One head of [`attention`]: scores, softmax, weighted sum of values.
fn attend_one_head(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    att: &mut [f32],
    kv_head: usize,
    shape: AttentionShape,
) {
    let AttentionShape {
        head_dim, kv_dim, ..
    } = shape;
    // Scores: this head's query against every cached key.
    let offset = kv_head * head_dim;
    simd::Isa::detect().dots_strided(att, q, &keys[offset..], kv_dim);
    weigh_values(out, att, values, kv_head, shape);
}

/// The rest of one head's attention once `att` holds its raw scores: scale by sqrt(head_dim),
/// softmax into probabilities, and weigh the cached values by them into `out`.
fn weigh_values(
    out: &mut [f32],
    att: &mut [f32],
    values: &[f32],
    kv_head: usize,
    shape: AttentionShape,
) {
    let AttentionShape {
        head_dim, kv_dim, ..
    } = shape;
    let isa = simd::Isa::detect();
    isa.divide(att, (head_dim as f32).sqrt());
    softmax(att);
    let offset = kv_head * head_dim;
    isa.weighted_sum_strided(out, att, &values[offset..], kv_dim);
}

#[cfg(test)]
mod tests;
