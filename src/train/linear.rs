//! A linear layer without bias, `y = x W^T`, forward and backward.
//!
//! The matrix products come from the one `use` below, so a faster implementation is swapped in
//! here and nowhere else.

use crate::gemm::{matmul_nn, matmul_nt, matmul_tn};

/// `out (N, out_dim) = x (N, in_dim) * weight (out_dim, in_dim)^T`.
pub fn linear_forward(out: &mut [f32], x: &[f32], weight: &[f32], in_dim: usize, out_dim: usize) {
    let tokens = x.len() / in_dim;
    matmul_nt(out, x, weight, tokens, in_dim, out_dim, false);
}

/// `d_weight += d_out^T x` and `d_x (=, or += with accumulate_dx) d_out * weight`, for
/// `d_out (N, out_dim)`, `x (N, in_dim)` and `weight (out_dim, in_dim)`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    d_x: &mut [f32],
    d_weight: &mut [f32],
    d_out: &[f32],
    x: &[f32],
    weight: &[f32],
    in_dim: usize,
    out_dim: usize,
    accumulate_dx: bool,
) {
    let tokens = x.len() / in_dim;
    matmul_tn(d_weight, d_out, x, out_dim, tokens, in_dim, true);
    matmul_nn(d_x, d_out, weight, tokens, out_dim, in_dim, accumulate_dx);
}
