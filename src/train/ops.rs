//! The operations of a Llama 2 transformer, each forward pass beside its backward pass.
//!
//! Every function works on flat row-major `f32` buffers whose shapes are written in its
//! comment, with `N` the number of tokens (batch x positions), `C` the model width, `H` the
//! number of heads and `T` the positions of one sequence. A backward function receives the
//! gradient of the loss with respect to the forward function's output (`d_out`) and produces
//! the gradients with respect to its inputs; weight gradients are always *added* (`+=`), so that
//! gradients of a tensor used twice, and of several micro-batches, sum up.
//!
//! This module is the chain rule only: it owns no buffers and knows nothing of layers. The
//! matrix products live in `train::linear`, the order of the operations in `train::model`.

use super::dropout::Mask;
use super::isa::widest;
use super::par::{for_each_block, for_each_zip2, for_each_zip3, for_each_zip4};
use super::vector::{axpy, dot, exp, exp_shifted, exp_shifted_sum, max, sum_exp};
use crate::gemm::to_bf16_for_products;
use crate::kernels::parallel::for_each_block_of_rows;

/// RMSNorm's epsilon, as `model.py` sets it (`norm_eps`).
pub const NORM_EPS: f32 = 1e-5;

// ----------------------------------------------------------------------------------------------
// Embedding

/// `out (N, C)`: row `i` is row `tokens[i]` of `table (V, C)`. Ids must be below `V`.
pub fn embedding_forward(out: &mut [f32], table: &[f32], tokens: &[u16], dim: usize) {
    for_each_rows(out, dim, |first, block| {
        for (row, &t) in block.chunks_exact_mut(dim).zip(&tokens[first..]) {
            row.copy_from_slice(&table[t as usize * dim..][..dim]);
        }
    });
}

/// `d_table (V, C) += ` each `d_out (N, C)` row, added to the row of its token. Serial, in token
/// order, because tokens repeat.
pub fn embedding_backward(d_table: &mut [f32], d_out: &[f32], tokens: &[u16], dim: usize) {
    for (row, &t) in d_out.chunks_exact(dim).zip(tokens) {
        for (d, g) in d_table[t as usize * dim..][..dim].iter_mut().zip(row) {
            *d += g;
        }
    }
}

// ----------------------------------------------------------------------------------------------
// RMSNorm: y = x / sqrt(mean(x^2) + eps) * w

/// `out (N, C) = norm(x (N, C)) * weight (C)`; `rstd (N)` keeps `1 / sqrt(mean(x^2) + eps)` of
/// each row for the backward pass.
pub fn rmsnorm_forward(out: &mut [f32], rstd: &mut [f32], x: &[f32], weight: &[f32]) {
    let dim = weight.len().max(1);
    let work = ROWS_PER_TASK * dim * ELEMENT_COST;
    let (out_block, rstd_block) = (ROWS_PER_TASK * dim, ROWS_PER_TASK);
    for_each_zip2(
        (out, out_block),
        (rstd, rstd_block),
        work,
        |i, out, rstd| {
            let x = &x[i * out_block..];
            for ((o, r), x) in out
                .chunks_exact_mut(dim)
                .zip(rstd.iter_mut())
                .zip(x.chunks_exact(dim))
            {
                let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
                *r = 1.0 / (mean_sq + NORM_EPS).sqrt();
                for ((o, x), w) in o.iter_mut().zip(x).zip(weight) {
                    *o = x * *r * w;
                }
            }
        },
    );
}

/// With `xhat = x * rstd` and `g = w * d_out` (per row):
/// `d_x += rstd * (g - xhat * mean(g * xhat))` and `d_weight += sum over rows of d_out * xhat`.
pub fn rmsnorm_backward(
    d_x: &mut [f32],
    d_weight: &mut [f32],
    d_out: &[f32],
    x: &[f32],
    rstd: &[f32],
    weight: &[f32],
) {
    let dim = weight.len().max(1);
    // d_x by blocks of rows.
    for_each_rows(d_x, dim, |first, block| {
        let rows = block
            .chunks_exact_mut(dim)
            .zip(d_out[first * dim..].chunks_exact(dim));
        let inputs = x[first * dim..].chunks_exact(dim).zip(&rstd[first..]);
        for ((dx, dy), (x, &r)) in rows.zip(inputs) {
            let mut dot = 0.0f32;
            for ((dy, w), x) in dy.iter().zip(weight).zip(x) {
                dot += dy * w * x * r;
            }
            let mean = dot / dim as f32;
            for (i, dx) in dx.iter_mut().enumerate() {
                let xhat = x[i] * r;
                *dx += r * (dy[i] * weight[i] - xhat * mean);
            }
        }
    });
    // d_weight by blocks of columns, each a sum over the rows in order.
    const COLUMNS: usize = 16;
    let work = d_x.len() / dim * COLUMNS * ELEMENT_COST;
    for_each_block((d_weight, COLUMNS), work, |i, d_w| {
        let c0 = i * COLUMNS;
        let rows = d_out.chunks_exact(dim).zip(x.chunks_exact(dim)).zip(rstd);
        for ((dy, x), &r) in rows {
            let (dy, x) = (&dy[c0..][..d_w.len()], &x[c0..][..d_w.len()]);
            for ((d, &dy), &x) in d_w.iter_mut().zip(dy).zip(x) {
                let xhat = x * r;
                *d += dy * xhat;
            }
        }
    });
}

// ----------------------------------------------------------------------------------------------
// RoPE: each pair (2i, 2i+1) of a head is rotated by the angle pos * 10000^(-2i / head_dim).

/// The rotation angles' cosines and sines, `(T, head_dim / 2)` each, computed in `f32` as
/// `model.py` (and `run.c`) compute them.
pub fn rope_tables(cos: &mut [f32], sin: &mut [f32], seq_len: usize, head_dim: usize) {
    let half = head_dim / 2;
    for pos in 0..seq_len {
        for i in 0..half {
            let freq = 1.0 / 10000f32.powf((2 * i) as f32 / head_dim as f32);
            let angle = pos as f32 * freq;
            cos[pos * half + i] = angle.cos();
            sin[pos * half + i] = angle.sin();
        }
    }
}

/// Rotates `x (N, heads * head_dim)` in place; token `n` is at position `n % T` (`T` =
/// `cos.len() / (head_dim / 2)`).
pub fn rope_forward(x: &mut [f32], cos: &[f32], sin: &[f32], head_dim: usize, width: usize) {
    rotate(x, cos, sin, head_dim, width, 1.0);
}

/// The inverse rotation (the transpose of a rotation), applied to `d_x` in place.
pub fn rope_backward(d_x: &mut [f32], cos: &[f32], sin: &[f32], head_dim: usize, width: usize) {
    rotate(d_x, cos, sin, head_dim, width, -1.0);
}

fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], head_dim: usize, width: usize, sign: f32) {
    let half = (head_dim / 2).max(1);
    let seq_len = (cos.len() / half).max(1);
    for_each_rows(x, width, |first, block| {
        rotate_rows(block, first, (cos, sin), (head_dim, width, seq_len), sign)
    });
}

/// [`rotate`] of the rows of `block`, the first being row `first`.
fn rotate_rows(
    block: &mut [f32],
    first: usize,
    (cos, sin): (&[f32], &[f32]),
    (head_dim, width, seq_len): (usize, usize, usize),
    sign: f32,
) {
    let half = head_dim / 2;
    for (n, row) in block.chunks_exact_mut(width).enumerate() {
        let pos = (first + n) % seq_len;
        let (cos, sin) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
        for head in row.chunks_exact_mut(head_dim) {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let (c, s) = (cos[i], sign * sin[i]);
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c - b * s;
                pair[1] = a * s + b * c;
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Heads: token-major (B, T, H, hd) <-> head-major (B, H, T, hd)

/// `out (B, H, T, hd)` from `x (B, T, H, hd)`, so that each head's positions are contiguous.
pub fn split_heads(out: &mut [f32], x: &[f32], seq_len: usize, heads: usize, head_dim: usize) {
    let (width, head) = (heads * head_dim, seq_len * head_dim);
    // One task per head of a sequence.
    for_each_block((out, head.max(1)), head * ELEMENT_COST, |bh, out_h| {
        let (b, h) = (bh / heads, bh % heads);
        let x_b = &x[b * seq_len * width..][..seq_len * width];
        for (t, o) in out_h.chunks_exact_mut(head_dim).enumerate() {
            o.copy_from_slice(&x_b[t * width + h * head_dim..][..head_dim]);
        }
    });
}

/// `out (B, T, H, hd)` from `x (B, H, T, hd)`: the inverse of [`split_heads`].
pub fn merge_heads(out: &mut [f32], x: &[f32], seq_len: usize, heads: usize, head_dim: usize) {
    let width = heads * head_dim;
    // One task per sequence.
    let sequence = seq_len * width;
    for_each_block(
        (out, sequence.max(1)),
        sequence * ELEMENT_COST,
        |b, out_b| {
            let x_b = &x[b * sequence..][..sequence];
            for (t, o) in out_b.chunks_exact_mut(width).enumerate() {
                for (h, o) in o.chunks_exact_mut(head_dim).enumerate() {
                    o.copy_from_slice(&x_b[(h * seq_len + t) * head_dim..][..head_dim]);
                }
            }
        },
    );
}

// ----------------------------------------------------------------------------------------------
// Causal self-attention with grouped-query heads, softmax and dropout of the weights.
//
// For query position t of head h (key/value head g = h / rep):
//   s_j = q_t . k_j / sqrt(hd) for j <= t,   p = softmax(s),   a_j = p_j * mask_j,
//   y_t = sum_j a_j v_j.
// The T x T weights are not stored: the forward pass keeps each row's log-sum-exp
// (`lse_t = log sum_j exp(s_j)`), and the backward pass recomputes p_j = exp(s_j - lse_t).
// A task (one head of one sequence) first transposes its keys (and, backward, its values) to
// (hd, T), so that the loops that make a row of scores run along positions j: long,
// contiguous, vectorizable. Query rows go by groups of [`GROUP`]: each key read makes a score
// for every row of the group ([`scores_of_group`]), and each value row read adds into every
// row's output ([`weighted_rows_of_group`]), so the arithmetic waits less on memory.

/// The shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Sequences in the batch (`B`).
    pub batch: usize,
    /// Positions per sequence (`T`).
    pub seq_len: usize,
    /// Query heads (`H`).
    pub heads: usize,
    /// Key/value heads (`H / rep`).
    pub kv_heads: usize,
    /// Width of a head (`hd`).
    pub head_dim: usize,
}

impl AttentionShape {
    fn rep(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Scratch values [`attention_forward`] and [`attention_backward`] need (saturating at
    /// `usize::MAX`, which no allocation satisfies).
    pub fn scratch_len(&self) -> usize {
        let per_task = self
            .seq_len
            .saturating_mul(BACKWARD_ROWS + 4 * self.head_dim);
        per_task.saturating_mul(self.batch * self.heads)
    }
}

/// `y (B, H, T, hd)` and `lse (B, H, T)` from `q (B, H, T, hd)`, `k, v (B, H/rep, T, hd)`.
/// `scratch` holds at least [`AttentionShape::scratch_len`] values. The weights of head
/// `bh = b * H + h`, row `t`, column `j`, are dropped by `mask` at index `(bh * T + t) * T + j`.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    y: &mut [f32],
    lse: &mut [f32],
    scratch: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttentionShape,
    mask: Mask,
) {
    let (t_len, hd) = (s.seq_len, s.head_dim);
    let per_task = t_len * (GROUP + hd);
    let scratch = &mut scratch[..s.batch * s.heads * per_task];
    for_each_zip3(
        (y, t_len * hd),
        (lse, t_len),
        (scratch, per_task),
        t_len * t_len * hd,
        |bh, y, lse, scratch| forward_head(y, lse, scratch, q, k, v, s, mask, bh),
    );
}

widest! {
    /// Attention of one head of one sequence: `y (T, hd)`, `lse (T)`, `scratch` of
    /// `T (GROUP + hd)` values, for head `bh = b * H + h`.
    fn forward_head / forward_head_body(
        y: &mut [f32],
        lse: &mut [f32],
        scratch: &mut [f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttentionShape,
        mask: Mask,
        bh: usize,
    ) {
        let (t_len, hd) = (s.seq_len, s.head_dim);
        let scale = 1.0 / (hd as f32).sqrt();
        let (b, h) = (bh / s.heads, bh % s.heads);
        let kv = (b * s.kv_heads + h / s.rep()) * t_len * hd;
        let (p4, k_t) = scratch.split_at_mut(GROUP * t_len);
        transpose(&mut k_t[..t_len * hd], &k[kv..][..t_len * hd], t_len, hd);
        let (q, v) = (&q[bh * t_len * hd..][..t_len * hd], &v[kv..][..t_len * hd]);
        for t0 in (0..t_len).step_by(GROUP) {
            let (rows, n) = group_at(t0, t_len);
            scores_of_group(p4, rows_of_group(q, hd, t0, rows), k_t, t_len, n, scale);
            let mut inv_sum = [0.0f32; GROUP];
            for (i, p) in p4.chunks_exact_mut(t_len).enumerate() {
                let (p, later) = p[..n].split_at_mut((t0 + i + 1).min(n));
                if i >= rows {
                    p.fill(0.0);
                    continue;
                }
                let t = t0 + i;
                let max = max(p);
                let sum = exp_shifted_sum(p, max);
                lse[t] = max + sum.ln();
                // y_t = sum_j (p_j / sum) mask_j v_j, dividing once at the end.
                apply_mask(p, mask, (bh * t_len + t) * t_len);
                later.fill(0.0);
                inv_sum[i] = 1.0 / sum;
            }
            let y = &mut y[t0 * hd..][..rows * hd];
            weighted_rows_of_group(y, p4, t_len, n, v);
            for (y, inv_sum) in y.chunks_exact_mut(hd).zip(inv_sum) {
                y.iter_mut().for_each(|y| *y *= inv_sum);
            }
        }
    }
}

/// Gradients of [`attention_forward`]: `d_q (B, H, T, hd)`, `d_k, d_v (B, H/rep, T, hd)` (all
/// overwritten) from `d_y (B, H, T, hd)`. `scratch` holds at least
/// [`AttentionShape::scratch_len`] values. With `dA_j = d_y_t . v_j`, `dP_j = dA_j * mask_j`
/// and `ds_j = p_j (dP_j - sum_i p_i dP_i)`: `d_q_t = sum_j ds_j k_j / sqrt(hd)`,
/// `d_k_j += ds_j q_t / sqrt(hd)`, `d_v_j += a_j d_y_t`. One task per key/value head, so the
/// sums over its query heads stay in order.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    d_q: &mut [f32],
    d_k: &mut [f32],
    d_v: &mut [f32],
    scratch: &mut [f32],
    d_y: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lse: &[f32],
    s: AttentionShape,
    mask: Mask,
) {
    let (t_len, hd, rep) = (s.seq_len, s.head_dim, s.rep());
    let per_task = t_len * (BACKWARD_ROWS + 4 * hd);
    let scratch = &mut scratch[..s.batch * s.kv_heads * per_task];
    for_each_zip4(
        (d_q, rep * t_len * hd),
        (d_k, t_len * hd),
        (d_v, t_len * hd),
        (scratch, per_task),
        rep * t_len * t_len * hd * 2,
        |bg, d_q, d_k, d_v, scratch| {
            backward_kv_head(d_q, d_k, d_v, scratch, d_y, q, k, v, lse, s, mask, bg)
        },
    );
}

widest! {
    /// Gradients of the query heads of key/value head `bg = b * (H / rep) + g`: `d_q`
    /// `(rep, T, hd)`, `d_k, d_v (T, hd)`, `scratch` of `T (BACKWARD_ROWS + 4 hd)` values.
    /// Query rows go by groups of [`GROUP`], whose contributions to `d_k` and `d_v` are added
    /// in one pass over them (row after row, as one at a time would).
    fn backward_kv_head / backward_kv_head_body(
        d_q: &mut [f32],
        d_k: &mut [f32],
        d_v: &mut [f32],
        scratch: &mut [f32],
        d_y: &[f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        lse: &[f32],
        s: AttentionShape,
        mask: Mask,
        bg: usize,
    ) {
        let (t_len, hd, rep) = (s.seq_len, s.head_dim, s.rep());
        let scale = 1.0 / (hd as f32).sqrt();
        let b = bg / s.kv_heads;
        let kv = bg * t_len * hd;
        let (rows_scratch, cols) = scratch.split_at_mut(BACKWARD_ROWS * t_len);
        let (a4, ds4) = rows_scratch.split_at_mut(GROUP * t_len);
        let (k_t, rest) = cols.split_at_mut(t_len * hd);
        let (v_t, rest) = rest.split_at_mut(t_len * hd);
        let (d_k_t, d_v_t) = rest.split_at_mut(t_len * hd);
        transpose(k_t, &k[kv..][..t_len * hd], t_len, hd);
        transpose(v_t, &v[kv..][..t_len * hd], t_len, hd);
        d_k_t.fill(0.0);
        d_v_t.fill(0.0);
        for r in 0..rep {
            let bh = b * s.heads + (bg % s.kv_heads) * rep + r;
            let q = &q[bh * t_len * hd..][..t_len * hd];
            let d_y = &d_y[bh * t_len * hd..][..t_len * hd];
            let d_q = &mut d_q[r * t_len * hd..][..t_len * hd];
            for t0 in (0..t_len).step_by(GROUP) {
                let (rows, n) = group_at(t0, t_len);
                let (q_rows, g) = (rows_of_group(q, hd, t0, rows), rows_of_group(d_y, hd, t0, rows));
                // The forward pass's weights again (p, then a = p * mask in place), and
                // dP_j = (d_y_t . v_j) * mask_j, for the whole group.
                scores_of_group(a4, q_rows, k_t, t_len, n, scale);
                scores_of_group(ds4, g, v_t, t_len, n, 1.0);
                let group = a4.chunks_exact_mut(t_len).zip(ds4.chunks_exact_mut(t_len));
                for (i, (p, dp)) in group.enumerate() {
                    // A row's weights past its own position are 0.
                    let own = (t0 + i + 1).min(n);
                    let (p, p_later) = p[..n].split_at_mut(own);
                    let (dp, dp_later) = dp[..n].split_at_mut(own);
                    p_later.fill(0.0);
                    dp_later.fill(0.0);
                    if i >= rows {
                        p.fill(0.0);
                        dp.fill(0.0);
                        continue;
                    }
                    let t = t0 + i;
                    exp_shifted(p, lse[bh * t_len + t]);
                    let row = (bh * t_len + t) * t_len;
                    apply_mask(dp, mask, row);
                    // Through the softmax: ds_j = p_j (dP_j - p . dP), scaled as s was.
                    let p_dot_dp = dot(p, dp);
                    for (ds, &p) in dp.iter_mut().zip(p.iter()) {
                        *ds = p * (*ds - p_dot_dp) * scale;
                    }
                    apply_mask(p, mask, row);
                }
                // d_q_t = sum_j ds_j k_j for the group's rows.
                let d_q = &mut d_q[t0 * hd..][..rows * hd];
                weighted_rows_of_group(d_q, ds4, t_len, n, &k[kv..][..t_len * hd]);
                // d_v_j += a_j d_y_t and d_k_j += ds_j q_t, for the group's rows in order.
                let last = rows - 1;
                let a_rows: [&[f32]; GROUP] =
                    core::array::from_fn(|i| &a4[i.min(last) * t_len..][..n]);
                let ds_rows: [&[f32]; GROUP] =
                    core::array::from_fn(|i| &ds4[i.min(last) * t_len..][..n]);
                add_rows(d_v_t, t_len, rows, g, a_rows);
                add_rows(d_k_t, t_len, rows, q_rows, ds_rows);
            }
        }
        transpose(d_k, d_k_t, hd, t_len);
        transpose(d_v, d_v_t, hd, t_len);
    }
}

/// Query rows that go together: their scores are made in one pass over the keys, their
/// outputs in one pass over the values, and their contributions to the key and value
/// gradients in one pass over those.
const GROUP: usize = 4; // The kernels below name the four rows one by one.
/// Rows of `T` values a backward task keeps: `a` (first `p`) and `ds` for each row of a group.
const BACKWARD_ROWS: usize = 2 * GROUP;

/// The rows of the group at `t0` that exist (`GROUP` but at the end) and the positions they
/// reach, `t0 + rows`.
#[inline(always)]
fn group_at(t0: usize, t_len: usize) -> (usize, usize) {
    let rows = GROUP.min(t_len - t0);
    (rows, t0 + rows)
}

/// The `hd`-wide rows `t0..t0 + rows` of `x`, the last repeated to fill the group.
#[inline(always)]
fn rows_of_group(x: &[f32], hd: usize, t0: usize, rows: usize) -> [&[f32]; GROUP] {
    core::array::from_fn(|i| &x[(t0 + i.min(rows - 1)) * hd..][..hd])
}

/// `out_d += c_0[d] x_0 + c_1[d] x_1 + ...` for the rows `out_d = out_t[d * t_len..]` (as long
/// as the `x_i`), the first `rows` pairs `(c_i, x_i)`, added one pair after the other, as one
/// [`axpy`] per pair would: with all [`GROUP`] pairs, in one pass over `out_t`.
#[inline(always)]
fn add_rows(out_t: &mut [f32], t_len: usize, rows: usize, c: [&[f32]; GROUP], x: [&[f32]; GROUP]) {
    let n = x[0].len();
    for (d, out) in out_t.chunks_exact_mut(t_len).take(c[0].len()).enumerate() {
        let out = &mut out[..n];
        if rows < GROUP {
            for i in 0..rows {
                axpy(out, c[i][d], x[i]);
            }
            continue;
        }
        let (c0, c1, c2, c3) = (c[0][d], c[1][d], c[2][d], c[3][d]);
        let xs = x[0].iter().zip(x[1]).zip(x[2]).zip(x[3]);
        for (o, (((&x0, &x1), &x2), &x3)) in out.iter_mut().zip(xs) {
            *o = (((*o + c0 * x0) + c1 * x1) + c2 * x2) + c3 * x3;
        }
    }
}

/// `s_ij = (q_i . k_j) * scale` for the rows `s_i = s[i * T..]` of the group and positions
/// `j < n`, from keys transposed to `k_t (hd, T)`: each is `0 + (q_i0 scale) k_0j + (q_i1
/// scale) k_1j + ...` in order of `d`. Positions go 32, then 16 at a time, the sums in
/// registers so that `s` is written once, not once per `d`; a block may make positions past
/// `n` (not past `T`), which are left out.
#[inline(always)]
fn scores_of_group(
    s: &mut [f32],
    q: [&[f32]; GROUP],
    k_t: &[f32],
    t_len: usize,
    n: usize,
    scale: f32,
) {
    let mut j = 0;
    while j < n && j + 32 <= t_len {
        scores_block::<32>(s, q, k_t, t_len, scale, j, n);
        j += 32;
    }
    while j < n && j + 16 <= t_len {
        scores_block::<16>(s, q, k_t, t_len, scale, j, n);
        j += 16;
    }
    for (i, q) in q.iter().enumerate() {
        for j in j..n {
            let mut acc = 0.0f32;
            for (d, &qd) in q.iter().enumerate() {
                acc += qd * scale * k_t[d * t_len + j];
            }
            s[i * t_len + j] = acc;
        }
    }
}

/// [`scores_of_group`] for the `W` positions from `first`, of which those below `n` are kept.
#[inline(always)]
fn scores_block<const W: usize>(
    s: &mut [f32],
    q: [&[f32]; GROUP],
    k_t: &[f32],
    t_len: usize,
    scale: f32,
    first: usize,
    n: usize,
) {
    // Four named arrays, not an array of arrays, so that the compiler keeps them in registers.
    let (mut s0, mut s1, mut s2, mut s3) = ([0.0f32; W], [0.0f32; W], [0.0f32; W], [0.0f32; W]);
    let [q0, q1, q2, q3] = q;
    let hd = q0.len();
    let (q1, q2, q3) = (&q1[..hd], &q2[..hd], &q3[..hd]);
    for d in 0..hd {
        let k = &k_t[d * t_len + first..][..W];
        let (a0, a1, a2, a3) = (q0[d] * scale, q1[d] * scale, q2[d] * scale, q3[d] * scale);
        for i in 0..W {
            s0[i] += a0 * k[i];
            s1[i] += a1 * k[i];
            s2[i] += a2 * k[i];
            s3[i] += a3 * k[i];
        }
    }
    let keep = W.min(n - first);
    for (i, acc) in [s0, s1, s2, s3].iter().enumerate() {
        s[i * t_len + first..][..keep].copy_from_slice(&acc[..keep]);
    }
}

/// `out_i = sum_{j < n} w_ij row_j` for the rows `out_i = out[i * hd..]` of the group (as many
/// as `out` holds), weights `w_i = w[i * T..]` and rows `row_j` of `rows (T, hd)`: each value one
/// sum in order of `j`. All the group's sums stay in registers for common head widths, so each
/// row is read once per group.
#[inline(always)]
fn weighted_rows_of_group(out: &mut [f32], w: &[f32], t_len: usize, n: usize, rows: &[f32]) {
    match rows.len() / t_len {
        8 => weighted_rows_block::<8>(out, w, t_len, n, rows),
        16 => weighted_rows_block::<16>(out, w, t_len, n, rows),
        32 => weighted_rows_block::<32>(out, w, t_len, n, rows),
        48 => weighted_rows_block::<48>(out, w, t_len, n, rows),
        64 => weighted_rows_block::<64>(out, w, t_len, n, rows),
        // Other widths: row by row, 16 of the head's values at a time.
        hd => {
            for (out, w) in out.chunks_exact_mut(hd).zip(w.chunks_exact(t_len)) {
                for d0 in (0..hd).step_by(16) {
                    let width = 16.min(hd - d0);
                    let mut sums = [0.0f32; 16];
                    for (j, &w) in w[..n].iter().enumerate() {
                        let row = &rows[j * hd + d0..][..width];
                        for (sum, &v) in sums.iter_mut().zip(row) {
                            *sum += w * v;
                        }
                    }
                    out[d0..d0 + width].copy_from_slice(&sums[..width]);
                }
            }
        }
    }
}

/// [`weighted_rows_of_group`] for rows of `HD` values.
#[inline(always)]
fn weighted_rows_block<const HD: usize>(
    out: &mut [f32],
    w: &[f32],
    t_len: usize,
    n: usize,
    rows: &[f32],
) {
    // Four named arrays, not an array of arrays, so that the compiler keeps them in registers.
    let (mut s0, mut s1, mut s2, mut s3) = ([0.0f32; HD], [0.0f32; HD], [0.0f32; HD], [0.0f32; HD]);
    let (w0, w1, w2, w3) = (
        &w[..n],
        &w[t_len..][..n],
        &w[2 * t_len..][..n],
        &w[3 * t_len..][..n],
    );
    for (j, row) in rows.chunks_exact(HD).take(n).enumerate() {
        let (a0, a1, a2, a3) = (w0[j], w1[j], w2[j], w3[j]);
        for d in 0..HD {
            s0[d] += a0 * row[d];
            s1[d] += a1 * row[d];
            s2[d] += a2 * row[d];
            s3[d] += a3 * row[d];
        }
    }
    for (out, sum) in out.chunks_exact_mut(HD).zip([s0, s1, s2, s3].iter()) {
        out.copy_from_slice(sum);
    }
}

/// `x[i] *= mask.scale(first + i)`, skipped when the mask keeps everything.
#[inline(always)]
fn apply_mask(x: &mut [f32], mask: Mask, first: usize) {
    if mask.is_off() {
        return;
    }
    for (i, x) in x.iter_mut().enumerate() {
        *x *= mask.scale(first + i);
    }
}

/// `out (cols, rows)` = `x (rows, cols)` transposed.
#[inline(always)]
fn transpose(out: &mut [f32], x: &[f32], rows: usize, cols: usize) {
    for (r, row) in x.chunks_exact(cols).enumerate().take(rows) {
        for (c, &value) in row.iter().enumerate() {
            out[c * rows + r] = value;
        }
    }
}

// ----------------------------------------------------------------------------------------------
// SwiGLU: gate = silu(h1) * h3, silu(x) = x * sigmoid(x)

/// Values per task of the elementwise SwiGLU loops (spread over the threads).
const ELEMENTWISE_BLOCK: usize = 16 * 1024;
/// Rough cost of one SwiGLU value in multiply-adds (an `exp` and a division), to decide whether
/// waking threads pays.
const SWIGLU_COST: usize = 24;

/// `out (N, F) = silu(h1) * h3`, elementwise.
pub fn swiglu_forward(out: &mut [f32], h1: &[f32], h3: &[f32]) {
    let block = ELEMENTWISE_BLOCK;
    for_each_block((out, block), block * SWIGLU_COST, |i, out| {
        let at = i * block;
        swiglu_forward_block(out, &h1[at..], &h3[at..])
    });
}

widest! {
    /// [`swiglu_forward`] for the values of `out`.
    fn swiglu_forward_block / swiglu_forward_body(out: &mut [f32], h1: &[f32], h3: &[f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(h1).zip(h3) {
            *o = silu(a) * b;
        }
    }
}

/// `d_h1 = d_out * h3 * silu'(h1)`, `d_h3 = d_out * silu(h1)`, with
/// `silu'(x) = sigmoid(x) * (1 + x * (1 - sigmoid(x)))`. Both overwritten.
pub fn swiglu_backward(d_h1: &mut [f32], d_h3: &mut [f32], d_out: &[f32], h1: &[f32], h3: &[f32]) {
    let block = ELEMENTWISE_BLOCK;
    for_each_zip2(
        (d_h1, block),
        (d_h3, block),
        block * SWIGLU_COST,
        |i, d1, d3| {
            let at = i * block;
            swiglu_backward_block(d1, d3, &d_out[at..], &h1[at..], &h3[at..])
        },
    );
}

widest! {
    /// [`swiglu_backward`] for the values of `d_h1` and `d_h3`.
    fn swiglu_backward_block / swiglu_backward_body(
        d_h1: &mut [f32],
        d_h3: &mut [f32],
        d_out: &[f32],
        h1: &[f32],
        h3: &[f32],
    ) {
        let inputs = d_out.iter().zip(h1).zip(h3);
        for ((d1, d3), ((&dy, &a), &b)) in d_h1.iter_mut().zip(d_h3.iter_mut()).zip(inputs) {
            let sig = sigmoid(a);
            *d1 = dy * b * sig * (1.0 + a * (1.0 - sig));
            *d3 = dy * a * sig;
        }
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

// ----------------------------------------------------------------------------------------------
// Residual connection with dropout: out = x + dropout(y)

/// `out = x + y * mask`, elementwise (the mask's index is the position in `y`).
pub fn residual_forward(out: &mut [f32], x: &[f32], y: &[f32], mask: Mask) {
    for_each_values(out, |first, out| {
        let (x, y) = (&x[first..], &y[first..]);
        for (i, ((o, &x), &y)) in out.iter_mut().zip(x).zip(y).enumerate() {
            *o = x + y * mask.scale(first + i);
        }
    });
}

/// `d_y = d_out * mask` (overwritten); the gradient of `x` is `d_out` itself, which the caller
/// keeps.
pub fn residual_backward(d_y: &mut [f32], d_out: &[f32], mask: Mask) {
    dropout_backward(d_y, d_out, mask);
}

/// `x *= mask`, in place (dropout on its own, as on the embeddings).
pub fn dropout_forward(x: &mut [f32], mask: Mask) {
    if mask.is_off() {
        return;
    }
    for_each_values(x, |first, x| {
        for (i, x) in x.iter_mut().enumerate() {
            *x *= mask.scale(first + i);
        }
    });
}

/// `d_x = d_out * mask` (overwritten).
pub fn dropout_backward(d_x: &mut [f32], d_out: &[f32], mask: Mask) {
    for_each_values(d_x, |first, d_x| {
        for (i, (d, &g)) in d_x.iter_mut().zip(&d_out[first..]).enumerate() {
            *d = g * mask.scale(first + i);
        }
    });
}

// ----------------------------------------------------------------------------------------------
// Work split for the passes over activations above: they are memory-bound, so worth both cores
// only for large tensors (a few tens of thousands of values), and each value's arithmetic is
// the same whichever task computes it.

/// Rows per task of a pass over rows.
const ROWS_PER_TASK: usize = 16;
/// Values per task of a pass over values.
const VALUES_PER_TASK: usize = 1 << 12;
/// What [`for_each_block`] counts for a value: a pass over 16K values is worth threads.
const ELEMENT_COST: usize = 4;

/// `f(first_row, block)` for blocks of [`ROWS_PER_TASK`] rows of `width` values of `out`.
fn for_each_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let width = width.max(1);
    let block = ROWS_PER_TASK * width;
    for_each_block((out, block), block * ELEMENT_COST, |i, rows| {
        f(i * ROWS_PER_TASK, rows)
    });
}

/// `f(first, block)` for blocks of [`VALUES_PER_TASK`] values of `out`.
fn for_each_values(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    let block = VALUES_PER_TASK;
    for_each_block((out, block), block * ELEMENT_COST, |i, values| {
        f(i * block, values)
    });
}

// ----------------------------------------------------------------------------------------------
// Cross-entropy of the softmax of the logits, one target per row

/// `losses (N)`: `-log softmax(logits (N, V))[target]` of each row, and `lse (N)`: each row's
/// log-sum-exp, which the backward pass reuses. `targets` must be below `V`.
pub fn cross_entropy_forward(
    losses: &mut [f32],
    lse: &mut [f32],
    logits: &[f32],
    targets: &[u16],
    vocab: usize,
) {
    for_each_block_of_rows([&mut *lse], 1, vocab, |_, first_row, block| {
        log_sum_exp_rows(block, logits, vocab, first_row)
    });
    for (i, (loss, &lse)) in losses.iter_mut().zip(lse.iter()).enumerate() {
        *loss = lse - logits[i * vocab + targets[i] as usize];
    }
}

/// [`cross_entropy_forward`] and [`cross_entropy_backward`] in one pass over the rows: each
/// row's gradient is made right after its log-sum-exp, while the row (128 KiB at 32,000
/// values) is still in L2, instead of reading all `N x V` logits from memory again. The bits
/// are those of the two functions.
pub fn cross_entropy_with_gradient(
    losses: &mut [f32],
    lse: &mut [f32],
    logits: &mut [f32],
    targets: &[u16],
    vocab: usize,
    scale: f32,
) {
    for_each_loss_rows(
        logits,
        vocab,
        lse,
        losses,
        |first_row, rows, lse, losses| {
            loss_and_gradient_rows(rows, lse, losses, &targets[first_row..], vocab, scale)
        },
    );
}

/// [`cross_entropy_with_gradient`] for products in bfloat16: the gradient goes to `d_logits`
/// as [`cross_entropy_backward_bf16`] makes it, and `logits` stay as they are.
pub fn cross_entropy_with_gradient_bf16(
    losses: &mut [f32],
    lse: &mut [f32],
    d_logits: &mut [u16],
    logits: &[f32],
    targets: &[u16],
    vocab: usize,
    scale: f32,
) {
    for_each_loss_rows(
        d_logits,
        vocab,
        lse,
        losses,
        |first_row, out, lse, losses| {
            let logits = &logits[first_row * vocab..][..out.len()];
            let targets = &targets[first_row..];
            loss_and_gradient_rows_bf16(out, logits, lse, losses, targets, vocab, scale)
        },
    );
}

/// `f(first_row, rows, lse, losses)` for blocks of rows of `rows` (`width` values each) and
/// the matching values of `lse` and `losses`, on rayon's threads.
fn for_each_loss_rows<T: Send>(
    rows: &mut [T],
    width: usize,
    lse: &mut [f32],
    losses: &mut [f32],
    f: impl Fn(usize, &mut [T], &mut [f32], &mut [f32]) + Sync,
) {
    const ROWS: usize = 8;
    let width = width.max(1);
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        rows.par_chunks_mut(ROWS * width)
            .zip(lse.par_chunks_mut(ROWS))
            .zip(losses.par_chunks_mut(ROWS))
            .enumerate()
            .for_each(|(i, ((rows, lse), losses))| f(i * ROWS, rows, lse, losses));
    }
    #[cfg(not(feature = "parallel"))]
    {
        let blocks = rows.chunks_mut(ROWS * width).zip(lse.chunks_mut(ROWS));
        for (i, ((rows, lse), losses)) in blocks.zip(losses.chunks_mut(ROWS)).enumerate() {
            f(i * ROWS, rows, lse, losses);
        }
    }
}

widest! {
    /// [`cross_entropy_with_gradient`] for the rows of `rows`, one per value of `lse`, `losses`
    /// and `targets`.
    fn loss_and_gradient_rows / loss_and_gradient_rows_body(
        rows: &mut [f32],
        lse: &mut [f32],
        losses: &mut [f32],
        targets: &[u16],
        vocab: usize,
        scale: f32,
    ) {
        let rows = rows.chunks_exact_mut(vocab).zip(lse.iter_mut()).zip(losses.iter_mut());
        for (r, ((row, lse), loss)) in rows.enumerate() {
            *lse = log_sum_exp(row);
            *loss = *lse - row[targets[r] as usize];
            softmax_gradient_rows_body(row, &[*lse], &targets[r..], vocab, scale, 0);
        }
    }
}

widest! {
    /// [`cross_entropy_with_gradient_bf16`] for the rows of `out`, one per value of `lse`,
    /// `losses` and `targets`.
    fn loss_and_gradient_rows_bf16 / loss_and_gradient_rows_bf16_body(
        out: &mut [u16],
        logits: &[f32],
        lse: &mut [f32],
        losses: &mut [f32],
        targets: &[u16],
        vocab: usize,
        scale: f32,
    ) {
        let rows = out.chunks_exact_mut(vocab).zip(logits.chunks_exact(vocab));
        for (r, ((out, row), (lse, loss))) in rows.zip(lse.iter_mut().zip(losses)).enumerate() {
            *lse = log_sum_exp(row);
            *loss = *lse - row[targets[r] as usize];
            softmax_gradient_rows_bf16_body(out, row, &[*lse], &targets[r..], vocab, scale, 0);
        }
    }
}

widest! {
    /// The log-sum-exp of the rows of `logits` from `first_row` on, one per value of `lse`.
    fn log_sum_exp_rows / log_sum_exp_rows_body(
        lse: &mut [f32],
        logits: &[f32],
        vocab: usize,
        first_row: usize,
    ) {
        for (r, lse) in lse.iter_mut().enumerate() {
            *lse = log_sum_exp(&logits[(first_row + r) * vocab..][..vocab]);
        }
    }
}

/// Turns `logits (N, V)` in place into the gradient of `scale * sum of the rows' losses`:
/// `scale * (softmax(row) - onehot(target))`, with `lse` from [`cross_entropy_forward`].
pub fn cross_entropy_backward(
    logits: &mut [f32],
    lse: &[f32],
    targets: &[u16],
    vocab: usize,
    scale: f32,
) {
    for_each_block_of_rows([logits], vocab, vocab, |_, first_row, block| {
        softmax_gradient_rows(block, lse, targets, vocab, scale, first_row)
    });
}

widest! {
    /// [`cross_entropy_backward`] for the rows of `block`, the first being row `first_row`.
    fn softmax_gradient_rows / softmax_gradient_rows_body(
        block: &mut [f32],
        lse: &[f32],
        targets: &[u16],
        vocab: usize,
        scale: f32,
        first_row: usize,
    ) {
        for (r, row) in block.chunks_exact_mut(vocab).enumerate() {
            let lse = lse[first_row + r];
            for x in row.iter_mut() {
                *x = exp(*x - lse) * scale;
            }
            row[targets[first_row + r] as usize] -= scale;
        }
    }
}

/// [`cross_entropy_backward`] for products in bfloat16: the gradient goes straight into
/// `d_logits` (`N x V` bfloat16 bit patterns, each the rounded value `cross_entropy_backward`
/// would leave) and `logits` stay as they are, so the `f32` gradient is never written: the
/// classifier's bfloat16 products read nothing else, and that saves two passes over `N x V`.
pub fn cross_entropy_backward_bf16(
    d_logits: &mut [u16],
    logits: &[f32],
    lse: &[f32],
    targets: &[u16],
    vocab: usize,
    scale: f32,
) {
    const ROWS: usize = 8;
    let task = |i: usize, out: &mut [u16]| {
        let first_row = i * ROWS;
        let logits = &logits[first_row * vocab..][..out.len()];
        softmax_gradient_rows_bf16(out, logits, lse, targets, vocab, scale, first_row);
    };
    let vocab = vocab.max(1);
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        d_logits
            .par_chunks_mut(ROWS * vocab)
            .enumerate()
            .for_each(|(i, out)| task(i, out));
    }
    #[cfg(not(feature = "parallel"))]
    for (i, out) in d_logits.chunks_mut(ROWS * vocab).enumerate() {
        task(i, out);
    }
}

widest! {
    /// [`cross_entropy_backward_bf16`] for the rows of `out`, the first being row `first_row`.
    fn softmax_gradient_rows_bf16 / softmax_gradient_rows_bf16_body(
        out: &mut [u16],
        logits: &[f32],
        lse: &[f32],
        targets: &[u16],
        vocab: usize,
        scale: f32,
        first_row: usize,
    ) {
        // The gradient is made in `f32` a block at a time, then rounded as the products round.
        const BLOCK: usize = 256;
        let mut grads = [0.0f32; BLOCK];
        let rows = out.chunks_exact_mut(vocab).zip(logits.chunks_exact(vocab));
        for (r, (out, row)) in rows.enumerate() {
            let lse = lse[first_row + r];
            for (out, row) in out.chunks_mut(BLOCK).zip(row.chunks(BLOCK)) {
                let grads = &mut grads[..row.len()];
                for (g, &x) in grads.iter_mut().zip(row) {
                    *g = exp(x - lse) * scale;
                }
                to_bf16_for_products(out, grads);
            }
            let t = targets[first_row + r] as usize;
            to_bf16_for_products(&mut out[t..t + 1], &[exp(row[t] - lse) * scale - scale]);
        }
    }
}

/// Values of a row [`log_sum_exp`] takes at a time (2 KiB: they stay in L1 between its two
/// loops over them).
const LSE_BLOCK: usize = 512;

/// `log sum_j e^(row_j)` in one pass over memory: block by block, the block's maximum, then its
/// exponentials shifted by the largest value so far, the sum so far rescaled when that grows.
/// A row of the classifier's logits is 32,000 values: read once, not twice.
#[inline(always)]
fn log_sum_exp(row: &[f32]) -> f32 {
    let (mut shift, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    for block in row.chunks(LSE_BLOCK) {
        let block_max = max(block);
        if block_max > shift {
            if sum != 0.0 {
                sum *= exp(shift - block_max);
            }
            shift = block_max;
        }
        sum += sum_exp(block, shift);
    }
    shift + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Dropout;

    /// The passes over activations split into blocks (and threads) give the bits of plain
    /// loops over the whole tensors, at sizes of many blocks and a partial last one: no block
    /// starts at the wrong row, position, head or mask index.
    #[test]
    fn blocked_passes_match_plain_loops() {
        let (batch, seq_len, heads, hd) = (3, 37, 4, 22);
        let (width, n) = (heads * hd, batch * seq_len);
        let len = n * width;
        let value = |i: usize, m: usize| ((i * 31) % m) as f32 * 0.01 - 0.2;
        let x: Vec<f32> = (0..len).map(|i| value(i, 97)).collect();
        let y: Vec<f32> = (0..len).map(|i| value(i, 89)).collect();
        let mask = Dropout::for_step(0.25, 7, 1, 0).mask(3);
        let weight: Vec<f32> = (0..width).map(|i| 0.5 + value(i, 13)).collect();

        let mut out = vec![0.0; len];
        residual_forward(&mut out, &x, &y, mask);
        let want: Vec<f32> = (0..len).map(|i| x[i] + y[i] * mask.scale(i)).collect();
        assert_eq!(out, want, "residual_forward");
        dropout_backward(&mut out, &y, mask);
        let want: Vec<f32> = (0..len).map(|i| y[i] * mask.scale(i)).collect();
        assert_eq!(out, want, "dropout_backward");
        out.copy_from_slice(&x);
        dropout_forward(&mut out, mask);
        let want: Vec<f32> = (0..len).map(|i| x[i] * mask.scale(i)).collect();
        assert_eq!(out, want, "dropout_forward");

        let table: Vec<f32> = (0..50 * width).map(|i| value(i, 101)).collect();
        let tokens: Vec<u16> = (0..n).map(|i| (i * 7 % 50) as u16).collect();
        embedding_forward(&mut out, &table, &tokens, width);
        for (t, row) in out.chunks_exact(width).enumerate() {
            let token = tokens[t] as usize;
            assert_eq!(row, &table[token * width..][..width], "embedding row {t}");
        }

        let (mut cos, mut sin) = (vec![0.0; seq_len * hd / 2], vec![0.0; seq_len * hd / 2]);
        rope_tables(&mut cos, &mut sin, seq_len, hd);
        out.copy_from_slice(&x);
        rope_forward(&mut out, &cos, &sin, hd, width);
        for (i, pair) in out.chunks_exact(2).enumerate() {
            let (pos, k) = ((2 * i / width) % seq_len, (2 * i % width) % hd / 2);
            let (c, s, a, b) = (
                cos[pos * hd / 2 + k],
                sin[pos * hd / 2 + k],
                x[2 * i],
                x[2 * i + 1],
            );
            assert_eq!(pair, [a * c - b * s, a * s + b * c], "rope pair {i}");
        }

        let mut split = vec![0.0; len];
        split_heads(&mut split, &x, seq_len, heads, hd);
        merge_heads(&mut out, &split, seq_len, heads, hd);
        assert_eq!(out, x, "merge_heads after split_heads");
        for (i, &v) in split.iter().enumerate() {
            let (bh, t, d) = (i / (seq_len * hd), i / hd % seq_len, i % hd);
            let (b, h) = (bh / heads, bh % heads);
            assert_eq!(
                v,
                x[(b * seq_len + t) * width + h * hd + d],
                "split value {i}"
            );
        }

        let mut rstd = vec![0.0; n];
        rmsnorm_forward(&mut out, &mut rstd, &x, &weight);
        let (mut d_x, mut d_w) = (y.clone(), vec![0.25; width]);
        rmsnorm_backward(&mut d_x, &mut d_w, &x, &x, &rstd, &weight);
        let mut want_d_w = vec![0.25f32; width];
        for t in 0..n {
            let row = &x[t * width..][..width];
            let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
            let r = 1.0 / (mean_sq + NORM_EPS).sqrt();
            assert_eq!(rstd[t], r, "rstd {t}");
            let mut dot = 0.0f32;
            for i in 0..width {
                dot += row[i] * weight[i] * row[i] * r;
            }
            for i in 0..width {
                let xhat = row[i] * r;
                assert_eq!(
                    out[t * width + i],
                    row[i] * r * weight[i],
                    "norm ({t}, {i})"
                );
                let want =
                    y[t * width + i] + r * (row[i] * weight[i] - xhat * (dot / width as f32));
                assert_eq!(d_x[t * width + i], want, "d_x ({t}, {i})");
                want_d_w[i] += row[i] * xhat;
            }
        }
        assert_eq!(d_w, want_d_w, "d_weight");
    }

    /// Scores and weighted sums of rows for a group of query rows, for every specialised head
    /// width and one that is not, any number of positions and rows in the group: within
    /// rounding of `f64` sums.
    #[test]
    fn group_kernels_match_f64_sums() {
        let t_len = 70;
        let value = |i: usize, m: usize| ((i * 13) % m) as f32 * 0.05 - 0.3;
        for hd in [8, 12, 16, 32, 48, 64] {
            let rows: Vec<f32> = (0..t_len * hd).map(|i| value(i, 17)).collect();
            let k_t: Vec<f32> = (0..t_len * hd).map(|i| value(i, 23)).collect();
            let q: Vec<f32> = (0..GROUP * hd).map(|i| value(i, 19)).collect();
            for n in [0, 1, 3, 4, 5, 17, 64, 70] {
                let w: Vec<f32> = (0..GROUP * t_len).map(|j| value(j * 7, 11)).collect();
                let mut out = vec![f32::NAN; GROUP * hd];
                weighted_rows_of_group(&mut out, &w, t_len, n, &rows);
                let mut s = vec![f32::NAN; GROUP * t_len];
                let q_rows = core::array::from_fn(|i| &q[i * hd..][..hd]);
                scores_of_group(&mut s, q_rows, &k_t, t_len, n, 0.5);
                for i in 0..GROUP {
                    for d in 0..hd {
                        let want: f64 = (0..n)
                            .map(|j| w[i * t_len + j] as f64 * rows[j * hd + d] as f64)
                            .sum();
                        let o = out[i * hd + d];
                        assert!(
                            (o as f64 - want).abs() < 1e-5,
                            "hd {hd}, n {n}: {o} vs {want}"
                        );
                    }
                    for j in 0..n {
                        let want: f64 = (0..hd)
                            .map(|d| q[i * hd + d] as f64 * k_t[d * t_len + j] as f64 * 0.5)
                            .sum();
                        let o = s[i * t_len + j];
                        assert!(
                            (o as f64 - want).abs() < 1e-5,
                            "hd {hd}, n {n}: {o} vs {want}"
                        );
                    }
                    assert!(s[i * t_len + n..(i + 1) * t_len].iter().all(|x| x.is_nan()));
                }
            }
        }
    }

    /// The one-pass log-sum-exp of long rows, whose maximum grows block after block (each
    /// rescaling the sum) or comes first, against an `f64` sum.
    #[test]
    fn log_sum_exp_of_long_rows_matches_f64() {
        for len in [1, 511, 512, 513, 5000, 32000] {
            let rising: Vec<f32> = (0..len)
                .map(|i| (i as f32 * 0.37).sin() * 3.0 + i as f32 * 0.004)
                .collect();
            let falling: Vec<f32> = rising.iter().rev().copied().collect();
            for row in [rising, falling] {
                let max = row.iter().fold(f64::MIN, |m, &x| m.max(x as f64));
                let want = max
                    + row
                        .iter()
                        .map(|&x| (x as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                let got = log_sum_exp(&row) as f64;
                assert!(
                    (got - want).abs() < 1e-5 * want.abs().max(1.0),
                    "{len}: {got} vs {want}"
                );
            }
        }
    }

    /// The widest build of the attention loops gives the bits of the plain build.
    #[test]
    fn every_vector_width_computes_the_same_bits() {
        let s = AttentionShape {
            batch: 1,
            seq_len: 37,
            heads: 2,
            kv_heads: 1,
            head_dim: 8,
        };
        let n = s.seq_len * s.head_dim;
        let wave =
            |len: usize, f: f32| -> Vec<f32> { (0..len).map(|i| (i as f32 * f).sin()).collect() };
        let (q, k, v, d_y) = (
            wave(2 * n, 0.37),
            wave(n, 0.91),
            wave(n, 1.3),
            wave(2 * n, 0.53),
        );
        let mask = Dropout::for_step(0.2, 3, 0, 0).mask(1);
        let mut scratch = vec![0.0; s.scratch_len()];
        let (mut y1, mut lse1, mut y2, mut lse2) =
            (vec![0.0; n], vec![0.0; 37], vec![0.0; n], vec![0.0; 37]);
        forward_head(&mut y1, &mut lse1, &mut scratch, &q, &k, &v, s, mask, 1);
        forward_head_body(&mut y2, &mut lse2, &mut scratch, &q, &k, &v, s, mask, 1);
        assert!(y1.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(lse1
            .iter()
            .zip(&lse2)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let grads = |widest: bool| {
            let (mut d_q, mut d_k, mut d_v) = (vec![0.0; 2 * n], vec![0.0; n], vec![0.0; n]);
            let mut scratch = vec![0.0; s.scratch_len()];
            let lse = [lse1.clone(), lse1.clone()].concat();
            let args = (&mut d_q, &mut d_k, &mut d_v);
            if widest {
                backward_kv_head(
                    args.0,
                    args.1,
                    args.2,
                    &mut scratch,
                    &d_y,
                    &q,
                    &k,
                    &v,
                    &lse,
                    s,
                    mask,
                    0,
                );
            } else {
                backward_kv_head_body(
                    args.0,
                    args.1,
                    args.2,
                    &mut scratch,
                    &d_y,
                    &q,
                    &k,
                    &v,
                    &lse,
                    s,
                    mask,
                    0,
                );
            }
            [d_q, d_k, d_v].concat()
        };
        let (a, b) = (grads(true), grads(false));
        assert!(a.iter().any(|&x| x != 0.0));
        assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
