//! The forward pass's heavy steps on whole tensors, for one position or a batch of them: matrix
//! products (float or int8) and attention, spread over threads and run on a [`Kernels`] table.
//!
//! Every operation here takes `m` rows of activations (`m = 1` when decoding, up to a chunk of a
//! prompt otherwise) and gives each row exactly the bits it would get alone, so one layer body
//! serves both. Only the way the work is cut differs: one position puts one weight row in each
//! vector lane ([`Kernels::matvec`]); a batch transposes its activations once and puts one token
//! in each lane ([`Kernels::matmul_t`]), so each weight is read once for the whole batch.

use super::dispatch::Kernels;
use super::exact::{self, MAX_KV_MUL, TOKEN_BLOCK};
use super::parallel;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::quant::{self, Q8Matrix, QuantizedVector};

/// A weight matrix as the forward pass sees it: float32 or int8 with group scales.
#[derive(Clone, Copy, Debug)]
pub enum Matrix<'a> {
    /// Row-major `f32`, `rows * cols` values.
    F32 {
        /// The values, row after row.
        data: &'a [f32],
        /// Number of rows (outputs).
        rows: usize,
        /// Number of columns (inputs).
        cols: usize,
    },
    /// Row-major int8 with group scales.
    Q8(Q8Matrix<'a>),
}

impl Matrix<'_> {
    /// Number of rows (outputs).
    pub fn rows(&self) -> usize {
        match self {
            Matrix::F32 { rows, .. } => *rows,
            Matrix::Q8(m) => m.rows,
        }
    }

    /// Number of columns (inputs).
    pub fn cols(&self) -> usize {
        match self {
            Matrix::F32 { cols, .. } => *cols,
            Matrix::Q8(m) => m.cols,
        }
    }

    /// Copy (or dequantize) row `row` into `out` (`cols` values; `row` below `rows`).
    pub fn row_into(&self, row: usize, out: &mut [f32]) {
        match self {
            Matrix::F32 { data, cols, .. } => {
                out.copy_from_slice(&data[row * cols..(row + 1) * cols])
            }
            Matrix::Q8(m) => m.dequantize_row(row, out),
        }
    }

    /// The int8 group size that products with this matrix quantize their input in (`None` for
    /// a float matrix, or int8 rows that straddle groups: both read the input as floats).
    fn input_groups(&self) -> Option<usize> {
        match self {
            Matrix::Q8(q) if q.rows_aligned_to_groups() => Some(q.group_size),
            _ => None,
        }
    }
}

/// Scratch of the batched matrix products, kept between calls: the input batch transposed (float
/// matrices) or quantized (int8), and the products before they are transposed into place.
#[derive(Clone, Debug, Default)]
pub struct MatmulScratch {
    /// The batch's activations transposed, `(cols, m rounded up to TOKEN_BLOCK)`.
    pub xs_t: Vec<f32>,
    /// The products transposed, `(rows, m)` for each matrix of a call, one after the other.
    pub out_t: Vec<f32>,
    /// The batch quantized to int8, one vector per row (int8 models only).
    pub quantized: Vec<QuantizedVector>,
}

impl MatmulScratch {
    /// How many values `xs_t` and `out_t` need for products of `m` rows of `cols` inputs into
    /// matrices of `rows` outputs in all (none for one row: it needs no transposing).
    pub fn lengths(m: usize, cols: usize, rows: usize) -> (usize, usize) {
        if m <= 1 {
            (0, 0)
        } else {
            (m.next_multiple_of(TOKEN_BLOCK) * cols, m * rows)
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

/// How the input of a product is given to the kernels.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// One row of floats, as it is.
    Row(&'a [f32]),
    /// `m > 1` rows of floats, transposed by [`exact::transpose_tokens`].
    Transposed(&'a [f32]),
    /// The rows quantized in the matrices' groups.
    Quantized(&'a [QuantizedVector]),
}

impl Kernels {
    /// `outs[i] = xs ms[i]ᵀ` for several matrices that read the same input, in one parallel pass:
    /// `xs` holds `m` rows of `cols` inputs, `outs[i]` gets `m` rows of `ms[i].rows()` outputs,
    /// and each row is bit for bit what it gets alone.
    ///
    /// The input is prepared once for all matrices (transposed for a batch of floats, quantized
    /// for int8); `scratch.xs_t` and `scratch.out_t` must hold [`MatmulScratch::lengths`] values
    /// for the total rows of `ms`.
    pub fn matmul_each<const N: usize>(
        &self,
        outs: [&mut [f32]; N],
        ms: [&Matrix; N],
        xs: &[f32],
        scratch: &mut MatmulScratch,
    ) {
        let Some(cols) = ms.first().map(|w| w.cols()) else {
            return;
        };
        assert!(ms.iter().all(|w| w.cols() == cols), "inputs differ");
        let m = xs.len() / cols;
        let groups = ms[0].input_groups();
        if m == 0 || ms.iter().any(|w| w.input_groups() != groups) {
            // Matrices that want their input in different forms (never those of one model).
            for (out, w) in outs.into_iter().zip(ms) {
                self.matmul_each([out], [w], xs, scratch);
            }
            return;
        }
        let MatmulScratch {
            xs_t,
            out_t,
            quantized,
        } = scratch;
        let input = match groups {
            Some(group_size) => {
                if quantized.len() < m {
                    quantized.resize_with(m, QuantizedVector::default);
                }
                for (q, x) in quantized.iter_mut().zip(xs.chunks_exact(cols)) {
                    q.quantize(x, group_size);
                }
                Input::Quantized(&quantized[..m])
            }
            None if m == 1 => Input::Row(xs),
            None => {
                exact::transpose_tokens(xs_t, xs, m, cols);
                Input::Transposed(xs_t)
            }
        };
        let products = |i: usize, first_row: usize, block: &mut [f32]| {
            self.rows_times(ms[i], first_row, block, xs, input, m);
        };
        if m == 1 {
            parallel::for_each_block_of_rows(outs, 1, cols, products);
            return;
        }
        // A batch: products transposed (a row of `m` values per weight row), then put in place.
        let mut rest = &mut out_t[..];
        let outs_t: [&mut [f32]; N] = core::array::from_fn(|i| {
            let (out_t, after) = core::mem::take(&mut rest).split_at_mut(m * ms[i].rows());
            rest = after;
            out_t
        });
        parallel::for_each_block_of_rows(outs_t, m, m * cols, products);
        let mut at = 0;
        for (out, w) in outs.into_iter().zip(ms) {
            let len = m * w.rows();
            let products = &out_t[at..at + len];
            // Each block of tokens (rows of `out`) gathers its columns of the products.
            parallel::for_each_block_of_rows([out], w.rows(), w.rows(), |_, first, block| {
                transpose_columns(block, products, w.rows(), m, first);
            });
            at += len;
        }
    }

    /// Rows `first_row..` of `w` times the `m` input rows, into `block` (`m` values per weight
    /// row): the one place where a product meets the kernel that computes it.
    fn rows_times(
        &self,
        w: &Matrix,
        first_row: usize,
        block: &mut [f32],
        xs: &[f32],
        input: Input,
        m: usize,
    ) {
        let rows = first_row..first_row + block.len() / m;
        match (w, input) {
            (Matrix::F32 { data, cols, .. }, Input::Row(x)) => {
                self.matvec(block, &data[rows.start * cols..rows.end * cols], x)
            }
            (Matrix::F32 { data, cols, .. }, Input::Transposed(xs_t)) => {
                let w_rows = &data[rows.start * cols..rows.end * cols];
                self.matmul_t(block, w_rows, xs_t, m, *cols)
            }
            (Matrix::Q8(q), Input::Quantized(xs_q)) => self.q8_rows(block, q, first_row, xs_q),
            // Int8 rows that straddle groups: float arithmetic on the int8 values, row by row.
            (Matrix::Q8(q), _) => {
                for (row, outs) in rows.zip(block.chunks_exact_mut(m)) {
                    for (out, x) in outs.iter_mut().zip(xs.chunks_exact(q.cols)) {
                        *out = quant::plain::dot_straddling(q, row, x);
                    }
                }
            }
            (Matrix::F32 { .. }, Input::Quantized(_)) => unreachable!("float input prepared"),
        }
    }

    /// Causal multi-head attention for `m` consecutive query positions `start..start + m`: the
    /// query at `start + t` attends over cached positions `0..=start + t`.
    ///
    /// * `out` and `q`: `(m, n_heads * head_dim)`
    /// * `keys` and `values`: `(start + m, kv_dim)`, the layer's KV cache, these positions
    ///   included
    /// * `scores`: scratch of at least `m * n_heads * (start + m)`
    /// * `by_head`: scratch of `m * n_heads * head_dim` values when `m > 1` (a batch's outputs
    ///   head by head, before they are put in place)
    ///
    /// Query head `h` reads key/value head `h / kv_mul` (grouped-query attention).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        out: &mut [f32],
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        scores: &mut [f32],
        by_head: &mut [f32],
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
        // Every query gets room for the longest row of scores, that of the last position.
        let stride = start + m;
        let scores = &mut scores[..m * n_heads * stride];
        if has_narrow_heads(shape) {
            // Small models: all heads of a position at once, on the calling thread.
            let rows = out.chunks_exact_mut(dim).zip(q.chunks_exact(dim));
            for (t, ((out, q), scores)) in rows
                .zip(scores.chunks_exact_mut(n_heads * stride))
                .enumerate()
            {
                let n_pos = start + t + 1;
                let (keys, values) = (&keys[..n_pos * kv_dim], &values[..n_pos * kv_dim]);
                let scores = &mut scores[..n_heads * n_pos];
                self.scores_all_heads(scores, q, keys, n_pos, head_dim, kv_mul);
                self.divide(scores, (head_dim as f32).sqrt());
                self.softmax_rows(scores, n_pos);
                self.weighted_sums_all_heads(out, scores, values, n_pos, head_dim, kv_mul);
            }
            return;
        }
        let work = m * n_heads * stride * head_dim;
        // One query position `t` of head `h`, into `out_head` (head_dim) with `att` (stride).
        let one = |t: usize, h: usize, out_head: &mut [f32], att: &mut [f32]| {
            let n_pos = start + t + 1;
            let q_head = &q[t * dim + h * head_dim..t * dim + (h + 1) * head_dim];
            let att = &mut att[..n_pos];
            // This head's slice of each cached key and value.
            let offset = (h / kv_mul) * head_dim;
            let keys = &keys[offset..n_pos * kv_dim];
            let values = &values[offset..n_pos * kv_dim];
            self.dots_strided(att, q_head, keys, kv_dim);
            self.divide(att, (head_dim as f32).sqrt());
            self.softmax(att);
            self.weighted_sum(out_head, att, values, kv_dim);
        };
        if m == 1 {
            parallel::for_each_head(out, scores, head_dim, stride, work, |h, out_head, att| {
                one(0, h, out_head, att)
            });
            return;
        }
        // A batch goes head by head, so that a thread reads one head's keys and values for all
        // the positions while they are in its caches; the outputs are then put in place.
        let by_head = &mut by_head[..m * dim];
        let (per_head, per_head_scores) = (m * head_dim, m * stride);
        parallel::for_each_head(
            by_head,
            scores,
            per_head,
            per_head_scores,
            work,
            |h, o, att| {
                for (t, (out_head, att)) in o
                    .chunks_exact_mut(head_dim)
                    .zip(att.chunks_exact_mut(stride))
                    .enumerate()
                {
                    one(t, h, out_head, att);
                }
            },
        );
        for (h, heads) in by_head.chunks_exact(per_head).enumerate() {
            for (row, head) in out.chunks_exact_mut(dim).zip(heads.chunks_exact(head_dim)) {
                row[h * head_dim..(h + 1) * head_dim].copy_from_slice(head);
            }
        }
    }
}

/// True for heads narrower than a 16-lane vector (the tiny models), whose scores are best
/// computed for all heads at once (see [`Kernels::scores_all_heads`]). Such models are small,
/// so their attention runs on the calling thread.
fn has_narrow_heads(shape: AttentionShape) -> bool {
    shape.head_dim < 16 && shape.kv_mul <= MAX_KV_MUL
}

/// Write columns `first..` of the `(rows, cols)` matrix `input` transposed into `out`, which
/// holds `out.len() / rows` of them as rows: `out[(c - first) * rows + r] = input[r * cols + c]`.
/// It goes a square tile at a time, so that both matrices are read and written a few cache
/// lines at a time rather than one value per line.
pub fn transpose_columns(out: &mut [f32], input: &[f32], rows: usize, cols: usize, first: usize) {
    const TILE: usize = 16;
    let n = out.len() / rows;
    debug_assert!(input.len() == rows * cols && first + n <= cols);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..n).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(n) {
                    out[c * rows + r] = input[r * cols + first + c];
                }
            }
        }
    }
}
