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
//!   way `runq.c` does, and in the same order, so the results match it bit for bit. The integer
//!   part runs on the best [`Kernel`] for the CPU.
//! * **straddling groups**: `runq.c` pairs the wrong scales with the values here. We multiply the
//!   int8 weights by the float activations, one stretch of a row per group, and scale each
//!   stretch by its own group's scale: the same result as float maths on the dequantized weights.
//!
//! Two roundings meet in this module and must not be confused: weights are quantized like
//! llama2.c's `export.py` (ties to even, as `torch.round`), activations like `runq.c` (ties away
//! from zero, as C's `round`).
//!
//! This module is not about loading files ([`crate::checkpoint`]) or float matrices
//! ([`crate::kernels`]).

pub mod plain;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

use crate::kernels::{self, parallel};

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

    /// Write the dequantized row `row` into `out` (`cols` values).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let start = row * self.cols;
        for (j, o) in out.iter_mut().enumerate() {
            let e = start + j;
            *o = self.values[e] as f32 * self.scales[e / self.group_size];
        }
    }
}

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

/// The implementations of the row-aligned int8 x int8 matrix-vector product. All give
/// bit-identical results; they differ only in speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 16 rows at a time with AVX-512 VNNI's byte dot products (`vpdpbusd`).
    Avx512Vnni,
    /// 8 rows at a time with AVX2 (`vpmaddubsw`, `vpmaddwd`).
    Avx2,
    /// One row at a time, written as plainly as `runq.c`'s loop: the reference.
    Plain,
}

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 3] = [Kernel::Avx512Vnni, Kernel::Avx2, Kernel::Plain];

    /// The fastest kernel this CPU can run.
    pub fn best() -> Kernel {
        Kernel::ALL
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Plain)
    }

    /// True if this CPU has the instructions the kernel needs.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Plain => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => x86::has_avx512_vnni(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::has_avx2(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// True if the kernel can run `w`: the SIMD kernels sum bytes in fours, so a group must be
    /// a whole number of fours, and small enough that its i32 sum cannot overflow.
    pub fn handles(self, w: &Q8Matrix) -> bool {
        self == Kernel::Plain
            || (self.is_available()
                && w.group_size.is_multiple_of(4)
                && w.group_size <= MAX_SIMD_GROUP
                && w.rows_aligned_to_groups())
    }

    /// `out[i * m + t] = row first_row + i of w` times `xs[t]`, for each of the `m = xs.len()`
    /// vectors (at least one) and every row `i < out.len() / m`. `w`'s rows must be aligned to
    /// its groups, and every `x` quantized in the same groups.
    fn rows(self, out: &mut [f32], w: &Q8Matrix, first_row: usize, xs: &[QuantizedVector]) {
        debug_assert!(self.handles(w) && !xs.is_empty());
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `handles` checked that the CPU has AVX-512 F, BW and VNNI.
            Kernel::Avx512Vnni => unsafe { x86::rows_avx512_vnni(out, w, first_row, xs) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `handles` checked that the CPU has AVX2.
            Kernel::Avx2 => unsafe { x86::rows_avx2(out, w, first_row, xs) },
            _ => plain::rows_aligned(out, w, first_row, xs),
        }
    }
}

/// The largest group the SIMD kernels take: `128 * 127 * MAX_SIMD_GROUP` must fit in an `i32`.
const MAX_SIMD_GROUP: usize = 1 << 16;

/// `out = W x` for an int8 matrix: the aligned int8 path when rows start on group boundaries,
/// the straddling-safe path otherwise. `scratch` holds the quantized `x` on the aligned path.
pub fn matmul(out: &mut [f32], w: &Q8Matrix, x: &[f32], scratch: &mut QuantizedVector) {
    debug_assert_eq!(out.len(), w.rows);
    debug_assert_eq!(x.len(), w.cols);
    if w.rows_aligned_to_groups() {
        scratch.quantize(x, w.group_size);
        matmul_quantized(Kernel::best(), out, w, scratch);
    } else {
        parallel::for_each_row_block(out, w.cols, |first_row, block| {
            for (i, o) in block.iter_mut().enumerate() {
                *o = plain::dot_straddling(w, first_row + i, x);
            }
        });
    }
}

/// [`matmul`] for several matrices that read the same `x`, `outs[i] = ws[i] x`, in one parallel
/// pass, with `x` quantized once when the matrices share their groups.
pub fn matmul_each<const N: usize>(
    outs: [&mut [f32]; N],
    ws: [&Q8Matrix; N],
    x: &[f32],
    scratch: &mut QuantizedVector,
) {
    let Some(group_size) = ws.first().map(|w| w.group_size) else {
        return;
    };
    let shared = ws
        .iter()
        .all(|w| w.rows_aligned_to_groups() && w.group_size == group_size);
    if !shared {
        for (out, w) in outs.into_iter().zip(ws) {
            matmul(out, w, x, scratch);
        }
        return;
    }
    scratch.quantize(x, group_size);
    let xs = std::slice::from_ref(&*scratch);
    let kernels = ws.map(|w| kernel_for(Kernel::best(), w, xs));
    parallel::for_each_row_block_of_each(outs, x.len(), |i, first_row, block| {
        kernels[i].rows(block, ws[i], first_row, xs);
    });
}

/// `out = W x` for a matrix whose rows are aligned to its groups and an `x` already quantized
/// in the same groups, using `kernel` (or [`Kernel::Plain`] where `kernel` cannot run `w`).
///
/// # Panics
/// If `x` was not quantized from a vector of `w.cols` values in `w`'s groups.
pub fn matmul_quantized(kernel: Kernel, out: &mut [f32], w: &Q8Matrix, x: &QuantizedVector) {
    debug_assert_eq!(out.len(), w.rows);
    let (kernel, xs) = (
        kernel_for(kernel, w, std::slice::from_ref(x)),
        std::slice::from_ref(x),
    );
    parallel::for_each_row_block(out, w.cols, |first_row, block| {
        kernel.rows(block, w, first_row, xs);
    });
}

/// [`matmul_quantized`] for a batch of quantized vectors, transposed: `out_t[i * m + t]` is row
/// `i` of `w` times `xs[t]`, for the `m = xs.len()` vectors. Each block of weight rows is read
/// from memory once for the whole batch.
///
/// # Panics
/// As [`matmul_quantized`], for any of the vectors.
pub fn matmul_quantized_batch(
    kernel: Kernel,
    out_t: &mut [f32],
    w: &Q8Matrix,
    xs: &[QuantizedVector],
) {
    let m = xs.len();
    debug_assert_eq!(out_t.len(), w.rows * m);
    if m == 0 {
        return;
    }
    let kernel = kernel_for(kernel, w, xs);
    parallel::for_each_row_group(out_t, m, m * w.cols, |first_row, block| {
        kernel.rows(block, w, first_row, xs);
    });
}

/// `kernel`, or [`Kernel::Plain`] where `kernel` cannot run `w`, after checking that every
/// vector of `xs` was quantized for `w` (which the SIMD kernels rely on).
fn kernel_for(kernel: Kernel, w: &Q8Matrix, xs: &[QuantizedVector]) -> Kernel {
    for x in xs {
        assert!(
            x.values.len() == w.cols.next_multiple_of(CHUNK)
                && x.scales.len() * w.group_size == w.cols,
            "the activations were quantized for another matrix"
        );
    }
    if kernel.handles(w) {
        kernel
    } else {
        Kernel::Plain
    }
}

/// `out = X Wᵀ` for a batch of activation rows: `xs` is `(m, cols)`, `out` is `(m, rows)`, and
/// each row of `out` is bit for bit what [`matmul`] gives for that row of `xs`.
///
/// On the aligned path the batch is quantized into `quantized` (grown to `m` vectors), each
/// block of weight rows is read from memory once for the whole batch, and `out_t` (at least
/// `m * rows` values) holds the result transposed before it is copied into place. Straddling
/// groups take [`matmul`]'s path one row of `xs` at a time.
pub fn matmul_batch(
    out: &mut [f32],
    w: &Q8Matrix,
    xs: &[f32],
    quantized: &mut Vec<QuantizedVector>,
    out_t: &mut [f32],
) {
    matmul_batch_each([out], [w], xs, quantized, out_t);
}

/// [`matmul_batch`] for several matrices that read the same batch, `outs[i] = X ws[i]ᵀ`: the
/// batch is quantized once for all of them when they share a group size.
pub fn matmul_batch_each<const N: usize>(
    outs: [&mut [f32]; N],
    ws: [&Q8Matrix; N],
    xs: &[f32],
    quantized: &mut Vec<QuantizedVector>,
    out_t: &mut [f32],
) {
    let mut quantized_for = None;
    for (out, w) in outs.into_iter().zip(ws) {
        let m = xs.len() / w.cols;
        debug_assert_eq!(out.len(), m * w.rows);
        if !w.rows_aligned_to_groups() {
            let mut scratch = QuantizedVector::default();
            for (o, x) in out.chunks_exact_mut(w.rows).zip(xs.chunks_exact(w.cols)) {
                matmul(o, w, x, &mut scratch);
            }
            continue;
        }
        if quantized_for != Some(w.group_size) {
            if quantized.len() < m {
                quantized.resize_with(m, QuantizedVector::default);
            }
            for (q, x) in quantized.iter_mut().zip(xs.chunks_exact(w.cols)) {
                q.quantize(x, w.group_size);
            }
            quantized_for = Some(w.group_size);
        }
        let out_t = &mut out_t[..m * w.rows];
        matmul_quantized_batch(Kernel::best(), out_t, w, &quantized[..m]);
        kernels::transpose(out, out_t, w.rows, m);
    }
}
