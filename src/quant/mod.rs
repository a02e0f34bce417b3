//! Int8 (Q8_0) weights: symmetric int8 values in groups that share one `f32` scale.
//!
//! A quantized tensor is its values flattened row after row and cut into groups of `group_size`
//! consecutive values; value `e` stands for `values[e] * scales[e / group_size]`. llama2.c's
//! export cuts the *flattened* tensor, so when `group_size` does not divide the row length a
//! group can straddle two rows.
//!
//! Two ways to multiply such a matrix by a vector live below this module:
//!
//! * **aligned groups** (every row starts a group): quantize the activation vector in the same
//!   groups and take int8 x int8 dot products with exact i32 sums, then scale each group, the
//!   way `runq.c` does, and in the same order, so the results match it bit for bit
//!   ([`plain::rows_aligned`], and the SIMD versions in `quant/x86.rs`).
//! * **straddling groups**: `runq.c` pairs the wrong scales with the values here. We multiply the
//!   int8 weights by the float activations, one stretch of a row per group, and scale each
//!   stretch by its own group's scale: the same result as float maths on the dequantized weights
//!   ([`plain::dot_straddling`]).
//!
//! Which kernel runs, and on how many threads, is decided above, in [`crate::kernels`].
//!
//! Two roundings meet in this module and must not be confused: weights are quantized like
//! llama2.c's `export.py` (ties to even, as `torch.round`), activations like `runq.c` (ties away
//! from zero, as C's `round`).
//!
//! This module is not about loading files ([`crate::checkpoint`]) or float matrices. It imports
//! nothing from the rest of the crate; its kernels import only this module's types.

use crate::prelude::*;

pub mod plain;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

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
        self.cols.is_multiple_of(self.group_size)
    }

    /// True if the SIMD kernels of `quant/x86.rs` can run this matrix: they sum bytes in fours,
    /// so a group must be a whole number of fours, and small enough that its i32 sum cannot
    /// overflow; and rows must be aligned to groups. Other matrices take [`plain`]'s loops.
    pub fn suits_simd_kernels(&self) -> bool {
        self.group_size.is_multiple_of(4)
            && self.group_size <= MAX_SIMD_GROUP
            && self.rows_aligned_to_groups()
    }

    /// Check that every vector of `xs` was quantized for this matrix (which the SIMD kernels
    /// rely on for the bounds of their reads).
    ///
    /// # Panics
    /// If one was quantized from a vector of another length or in other groups.
    pub fn check_quantized_input(&self, xs: &[QuantizedVector]) {
        for x in xs {
            assert!(
                x.values.len() == self.cols.next_multiple_of(CHUNK)
                    && x.scales.len() * self.group_size == self.cols,
                "the activations were quantized for another matrix"
            );
        }
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

/// The largest group the SIMD kernels take: `128 * 127 * MAX_SIMD_GROUP` must fit in an `i32`.
const MAX_SIMD_GROUP: usize = 1 << 16;

/// The SIMD kernels read activations in chunks of this many bytes, so [`QuantizedVector`] pads
/// its values with zeros to a multiple of it.
pub const CHUNK: usize = 64;

/// An activation vector quantized to int8 in groups, reused across the matrices that read it.
#[derive(Clone, Debug, Default)]
pub struct QuantizedVector {
    /// The int8 values, then zeros up to a multiple of [`CHUNK`].
    pub values: Vec<i8>,
    /// One scale per group.
    pub scales: Vec<f32>,
}

impl QuantizedVector {
    /// Quantize `x` in groups of `group_size` (which must divide `x.len()`), as `runq.c` does:
    /// scale = max|x| / 127, value = round(x / scale), ties away from zero.
    pub fn quantize(&mut self, x: &[f32], group_size: usize) {
        self.values.clear();
        self.scales.clear();
        for group in x.chunks_exact(group_size) {
            let scale = max_abs(group) / 127.0;
            self.scales.push(scale);
            self.values
                .extend(group.iter().map(|&v| quantize_activation(v, scale)));
        }
        self.values.resize(x.len().next_multiple_of(CHUNK), 0);
    }
}

/// The largest `|v|` of a group (NaNs ignored, as `runq.c`'s comparison ignores them).
fn max_abs(group: &[f32]) -> f32 {
    group.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// An activation as int8: `round(v / scale)` with ties away from zero, like C's `round`.
///
/// An all-zero group (scale 0) gives zeros. The result is kept within ±127 even when a tiny
/// (subnormal) scale loses precision: the SIMD kernels rely on never seeing -128 here.
pub fn quantize_activation(v: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    // The clamp keeps infinities and rounding overshoot in range (a NaN stays NaN, and `as`
    // maps it to 0). Rounding by hand, rather than `f32::round`, avoids a libm call per value:
    // `as` truncates towards zero and the remainder `q - t` is exact.
    let q = (v / scale).clamp(-127.0, 127.0);
    let t = q as i8;
    let remainder = q - t as f32;
    if remainder >= 0.5 {
        t + 1
    } else if remainder <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// A weight as int8 the way `export.py`'s `quantize_q80` makes it: `w / scale` in `f32`, rounded
/// to the nearest integer with ties to even (`torch.round`). An all-zero group gives zeros.
pub fn quantize_weight(w: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    (w / scale).round_ties_even().clamp(-127.0, 127.0) as i8
}

/// A float tensor quantized in groups, as `export.py` writes it into a version 2 file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantizedTensor {
    /// The int8 values, in the tensor's order.
    pub values: Vec<i8>,
    /// One scale per group: the group's largest `|w|` divided by 127.
    pub scales: Vec<f32>,
    /// The largest `|dequantized - original|` over the tensor.
    pub max_error: f32,
}

/// Quantize a float tensor (flattened) in groups of `group_size`, which must divide `w.len()`.
pub fn quantize_tensor(w: &[f32], group_size: usize) -> QuantizedTensor {
    let mut q = QuantizedTensor {
        values: Vec::with_capacity(w.len()),
        scales: Vec::with_capacity(w.len() / group_size),
        max_error: 0.0,
    };
    for group in w.chunks_exact(group_size) {
        let scale = max_abs(group) / 127.0;
        q.scales.push(scale);
        for &v in group {
            let value = quantize_weight(v, scale);
            q.values.push(value);
            q.max_error = q.max_error.max((value as f32 * scale - v).abs());
        }
    }
    q
}
