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
    let max = simd::Isa::detect().max(x);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
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

/// Dot product of two equal-length vectors (the best SIMD version for this CPU).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    simd::dot(a, b)
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
/// of `out` is bit for bit what [`matmul`] gives for that row of `xs`. `transposed` is scratch of
/// at least `m * rows` values: threads write whole weight rows, which are columns of `out`, so
/// they write them as rows there and the result is transposed at the end.
pub fn matmul_batch(out: &mut [f32], w: &[f32], xs: &[f32], cols: usize, transposed: &mut [f32]) {
    let (rows, m) = (w.len() / cols, xs.len() / cols);
    debug_assert_eq!(out.len(), m * rows);
    if m == 0 {
        return;
    }
    let transposed = &mut transposed[..m * rows];
    parallel::for_each_row_group(transposed, m, m * cols, |first_row, block| {
        let block_rows = block.len() / m;
        let w_rows = &w[first_row * cols..(first_row + block_rows) * cols];
        simd::matmul_t(block, w_rows, xs, cols);
    });
    for (i, column) in transposed.chunks_exact(m).enumerate() {
        for (t, &v) in column.iter().enumerate() {
            out[t * rows + i] = v;
        }
    }
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
    let offset = kv_head * head_dim;
    let isa = simd::Isa::detect();
    // Scores: this head's query against every cached key, scaled by sqrt(head_dim).
    isa.dots_strided(att, q, &keys[offset..], kv_dim);
    let scale = (head_dim as f32).sqrt();
    for score in att.iter_mut() {
        *score /= scale;
    }
    softmax(att);
    // Output: the cached values weighted by the attention probabilities.
    isa.weighted_sum_strided(out, att, &values[offset..], kv_dim);
}

#[cfg(test)]
mod tests;
