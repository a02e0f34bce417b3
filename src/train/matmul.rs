//! Plain matrix products for training, row-major: the three a linear layer needs.
//!
//! A linear layer computes `Y = X W^T` for `X (m, k)` and `W (n, k)`; its backward pass needs
//! `dX = dY W` and `dW += dY^T X`. These versions split the rows of the output between threads
//! (each output value is summed by one thread in a fixed order, so the result does not depend on
//! the thread count), with no blocking for caches: the reference that faster kernels are
//! measured against. [`super::linear`] chooses which implementation the model uses.

use super::vector::{axpy, dot};
use crate::kernels::parallel::for_each_row_group;

/// `out (m, n) [+]= a (m, k) * b (n, k)^T`: each output is a dot product of two rows.
pub fn matmul_nt(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    check_shapes(out, a, b, m * n, m * k, n * k);
    for_each_row_group(out, n, k * n, |first_row, block| {
        for (r, out_row) in block.chunks_exact_mut(n).enumerate() {
            let a_row = &a[(first_row + r) * k..][..k];
            for (j, o) in out_row.iter_mut().enumerate() {
                let d = dot(a_row, &b[j * k..][..k]);
                *o = if accumulate { *o + d } else { d };
            }
        }
    });
}

/// `out (m, n) [+]= a (m, k) * b (k, n)`: each output row is a sum of rows of `b`.
pub fn matmul_nn(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    check_shapes(out, a, b, m * n, m * k, k * n);
    for_each_row_group(out, n, k * n, |first_row, block| {
        for (r, out_row) in block.chunks_exact_mut(n).enumerate() {
            if !accumulate {
                out_row.fill(0.0);
            }
            let a_row = &a[(first_row + r) * k..][..k];
            for (p, &a_rp) in a_row.iter().enumerate() {
                axpy(out_row, a_rp, &b[p * n..][..n]);
            }
        }
    });
}

/// `out (m, n) [+]= a (k, m)^T * b (k, n)`: output row `i` sums the rows of `b` weighted by
/// column `i` of `a` (a weight gradient: `a` = dY, `b` = X, summed over the `k` tokens).
pub fn matmul_tn(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    check_shapes(out, a, b, m * n, k * m, k * n);
    for_each_row_group(out, n, k * n, |first_row, block| {
        if !accumulate {
            block.fill(0.0);
        }
        for p in 0..k {
            let b_row = &b[p * n..][..n];
            let a_row = &a[p * m..][..m];
            for (r, out_row) in block.chunks_exact_mut(n).enumerate() {
                axpy(out_row, a_row[first_row + r], b_row);
            }
        }
    });
}

fn check_shapes(out: &[f32], a: &[f32], b: &[f32], out_len: usize, a_len: usize, b_len: usize) {
    assert_eq!(out.len(), out_len, "matmul: output length");
    assert_eq!(a.len(), a_len, "matmul: left operand length");
    assert_eq!(b.len(), b_len, "matmul: right operand length");
}
