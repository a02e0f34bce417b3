//! Int8 (Q8_0) weights: symmetric int8 values in groups that share one `f32` scale.
//!
//! A quantized tensor is its values flattened row after row and cut into groups of `group_size`
//! consecutive values; value `e` stands for `values[e] * scales[e / group_size]`. llama2.c's
//! export cuts the *flattened* tensor, so when `group_size` does not divide the row length a
//! group can straddle two rows.
//!
//! Two ways to multiply such a matrix by a vector live here:
//!
//! * **aligned groups** (every row starts a group): quantize the activation vector in the same
//!   groups and take int8 x int8 dot products with exact i32 sums, then scale each group, the
//!   way `runq.c` does, and in the same order, so the results match it.
//! * **straddling groups**: `runq.c` pairs the wrong scales with the values here. We multiply the
//!   int8 weights by the float activations, one stretch of a row per group, and scale each
//!   stretch by its own group's scale: the same result as float maths on the dequantized weights.
//!
//! This module is not about loading files ([`crate::checkpoint`]) or choosing SIMD paths for
//! float matrices ([`crate::kernels`]).

use crate::kernels::parallel;

/// A row-major int8 matrix with group scales, borrowed from a checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct Q8Matrix<'a> {
    /// `rows * cols` int8 values, row after row.
    pub values: &'a [i8],
    /// One scale per `group_size` consecutive values.
    pub scales: &'a [f32],
    /// Values per scale.
    pub group_size: usize,
    /// Number of rows (outputs).
    pub rows: usize,
    /// Number of columns (inputs).
    pub cols: usize,
}

impl Q8Matrix<'_> {
    /// True when every row starts on a group boundary, so the int8 x int8 path applies.
    pub fn rows_aligned_to_groups(&self) -> bool {
        self.cols % self.group_size == 0
    }

    /// Write the dequantized row `row` into `out` (`cols` values).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let start = row * self.cols;
        for (j, o) in out.iter_mut().enumerate() {
            let e = start + j;
            *o = self.values[e] as f32 * self.scales[e / self.group_size];
        }
    }
}

/// An activation vector quantized to int8 in groups, reused across the matrices that read it.
#[derive(Clone, Debug, Default)]
pub struct QuantizedVector {
    /// The int8 values.
    pub values: Vec<i8>,
    /// One scale per group.
    pub scales: Vec<f32>,
}

impl QuantizedVector {
    /// Quantize `x` in groups of `group_size` (which must divide `x.len()`), as `runq.c` does:
    /// scale = max|x| / 127, value = round(x / scale).
    pub fn quantize(&mut self, x: &[f32], group_size: usize) {
        self.values.clear();
        self.scales.clear();
        for group in x.chunks_exact(group_size) {
            let max_abs = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = max_abs / 127.0;
            self.scales.push(scale);
            self.values
                .extend(group.iter().map(|&v| quantize_value(v, scale)));
        }
    }
}

/// `round(v / scale)` as int8, with an all-zero group (scale 0) giving zeros.
pub fn quantize_value(v: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    // `as` saturates, so even a NaN or an out-of-range value stays defined.
    (v / scale).round() as i8
}

/// `out = W x` for an int8 matrix: the aligned int8 path when rows start on group boundaries,
/// the straddling-safe path otherwise. `scratch` holds the quantized `x` on the aligned path.
pub fn matmul(out: &mut [f32], w: &Q8Matrix, x: &[f32], scratch: &mut QuantizedVector) {
    debug_assert_eq!(out.len(), w.rows);
    debug_assert_eq!(x.len(), w.cols);
    if w.rows_aligned_to_groups() {
        scratch.quantize(x, w.group_size);
        let xq: &QuantizedVector = scratch;
        parallel::for_each_row_block(out, w.cols, |first_row, block| {
            for (i, o) in block.iter_mut().enumerate() {
                *o = dot_aligned(w, first_row + i, xq);
            }
        });
    } else {
        parallel::for_each_row_block(out, w.cols, |first_row, block| {
            for (i, o) in block.iter_mut().enumerate() {
                *o = dot_straddling(w, first_row + i, x);
            }
        });
    }
}

/// Row `row` of `w` times the quantized vector: exact i32 sums per group, then
/// `sum += (group_sum * weight_scale) * activation_scale`, group after group, as `runq.c`.
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
        let group_sum: i32 = wg.iter().zip(xg).map(|(&a, &b)| a as i32 * b as i32).sum();
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

/// Quantize a float tensor (flattened) in groups of `group_size`: the values, the scales, and the
/// largest absolute error of any dequantized value. `group_size` must divide `w.len()`.
pub fn quantize_tensor(w: &[f32], group_size: usize) -> (Vec<i8>, Vec<f32>, f32) {
    let mut q = QuantizedVector::default();
    q.quantize(w, group_size);
    let mut max_err = 0.0f32;
    for (e, (&v, &qv)) in w.iter().zip(&q.values).enumerate() {
        let err = (qv as f32 * q.scales[e / group_size] - v).abs();
        max_err = max_err.max(err);
    }
    (q.values, q.scales, max_err)
}
