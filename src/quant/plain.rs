//! The int8 matrix kernels written as plainly as the maths, one row at a time: the reference
//! the SIMD kernels are held to, and the path on CPUs without them.

use super::{Q8Matrix, QuantizedVector};
#[allow(unused_imports)]
use crate::prelude::*;

/// `out[i * m + t]` = row `first_row + i` of `w` times the quantized vector `xs[t]`, for each of
/// the `m = xs.len()` vectors and every row `i < out.len() / m`.
pub fn rows_aligned(out: &mut [f32], w: &Q8Matrix, first_row: usize, xs: &[QuantizedVector]) {
    for (i, row) in out.chunks_exact_mut(xs.len()).enumerate() {
        for (o, x) in row.iter_mut().zip(xs) {
            *o = dot_aligned(w, first_row + i, x);
        }
    }
}

/// Row `row` of `w` times the quantized vector: an exact integer sum per group, then
/// `sum += (group_sum * weight_scale) * activation_scale`, group after group, as `runq.c` does.
pub fn dot_aligned(w: &Q8Matrix, row: usize, x: &QuantizedVector) -> f32 {
    let gs = w.group_size;
    let start = row * w.cols;
    let values = &w.values[start..start + w.cols];
    let scales = &w.scales[start / gs..(start + w.cols) / gs];
    let mut sum = 0.0f32;
    for (((wg, xg), &ws), &xs) in values
        .chunks_exact(gs)
        .zip(x.values.chunks_exact(gs))
        .zip(scales)
        .zip(&x.scales)
    {
        // i64 so that no group size can overflow; for any real group the value fits an i32,
        // and converts to the same f32 as runq.c's int32 sum.
        let group_sum: i64 = wg.iter().zip(xg).map(|(&a, &b)| a as i64 * b as i64).sum();
        sum += group_sum as f32 * ws * xs;
    }
    sum
}

/// Row `row` of `w` times the float vector `x`, correct for groups that straddle rows: each
/// stretch of the row that lies in one group is summed in float and scaled by that group's scale.
pub fn dot_straddling(w: &Q8Matrix, row: usize, x: &[f32]) -> f32 {
    let gs = w.group_size;
    let start = row * w.cols;
    let end = start + w.cols;
    let mut sum = 0.0f32;
    let mut e = start;
    while e < end {
        let group = e / gs;
        let stretch_end = ((group + 1) * gs).min(end);
        let mut partial = 0.0f32;
        for k in e..stretch_end {
            partial += w.values[k] as f32 * x[k - start];
        }
        sum += partial * w.scales[group];
        e = stretch_end;
    }
    sum
}
