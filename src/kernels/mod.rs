//! The arithmetic of the forward pass on plain `f32` slices: matrix products (float and int8),
//! attention, softmax, RMSNorm, RoPE, SwiGLU.
//!
//! This module knows nothing about checkpoints or models; it takes slices and writes slices.
//! It is layered, each layer importing only the ones below it:
//!
//! | module | what it is |
//! | --- | --- |
//! | here | the elementwise steps (RMSNorm, RoPE, SwiGLU, residual), written once, plainly |
//! | `ops` | whole-tensor steps for 1 or `m` positions: [`Matrix`] products, attention, threads |
//! | [`parallel`] | cutting work into blocks of rows or heads for rayon (or not) |
//! | [`dispatch`] | [`Isa`], detected once, and the [`Kernels`] table built for it |
//! | `x86` | AVX2 and AVX-512 registers, and the exact kernels built for each |
//! | [`exact`] | the SIMD kernels, every sum in `run.c`'s order, generic over a register |
//! | [`vector`] | the register trait, and a portable 8-lane one |
//! | [`crate::quant`] | int8 types and the int8 kernels (plain and x86), which `dispatch` tables |
//!
//! The tests hold every exact kernel to [`crate::reference`], `run.c`'s loops written as
//! plainly as possible (matmul, RMSNorm, softmax, RoPE, attention, SwiGLU), directly or through
//! results that must be equal bit for bit (a batch against one position at a time, say).
//!
//! ## From a model step to the loop that does it
//!
//! The query projection `q = Wq x` of a layer, on an AVX-512 CPU, takes five steps (rayon's own
//! calls and inlined helpers aside):
//!
//! 1. `Model`'s layer body calls [`Kernels::matmul_each`] (`ops.rs`) with `[Wq, Wk, Wv]`: the
//!    input is prepared once (quantized for int8, transposed for a batch of positions);
//! 2. [`parallel::for_each_block_of_rows`] hands blocks of 32 weight rows to the threads;
//! 3. `Kernels::rows_times` (`ops.rs`) picks the kernel for the matrix's kind: here
//!    [`Kernels::matvec`] (`dispatch.rs`), which checks the slices' shapes and calls the table;
//! 4. the table's entry, `x86::avx512::matvec`, a `#[target_feature]` instance built by
//!    `exact::instantiate!`;
//! 5. [`exact::dots_strided`], the loop itself, 16 rows in the lanes of one register.
//!
//! The table was chosen once, when the model was loaded ([`Kernels::detect`]).

pub mod dispatch;
pub mod exact;
mod ops;
pub mod parallel;
pub mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

#[allow(unused_imports)]
use crate::prelude::*;
pub use dispatch::{Arithmetic, Isa, Kernels};
pub use ops::{transpose_columns, AttentionShape, MatmulScratch, Matrix};

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

/// Softmax in place, `e^(x - max) / Σ e^(x - max)`, with `run.c`'s arithmetic exactly (see
/// [`exact::softmax_rows`]), on the kernels [`Kernels::detect`] picks. For callers without a
/// model at hand, such as the sampler.
pub fn softmax(x: &mut [f32]) {
    Kernels::detect().softmax(x);
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

#[cfg(test)]
mod int8_tests;
#[cfg(test)]
mod tests;
