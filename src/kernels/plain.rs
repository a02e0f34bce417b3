//! Reference versions of the kernels: `run.c`'s loops, written as plainly as possible, one loop
//! per formula, accumulating in order. They are slow and exist to be compared against: every
//! fast kernel must give exactly their bits.

// Index loops mirror the formulas they implement, which is the point of this module.
#![allow(clippy::needless_range_loop)]

#[allow(unused_imports)]
use crate::prelude::*;

/// `out = W x` for a row-major `W` of shape `(out.len(), x.len())`, one sequential sum per row.
pub fn matmul(out: &mut [f32], w: &[f32], x: &[f32]) {
    let n = x.len();
    for (i, o) in out.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for j in 0..n {
            sum += w[i * n + j] * x[j];
        }
        *o = sum;
    }
}

/// Sequential dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for i in 0..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// RMSNorm: `out = weight * x / sqrt(mean(x^2) + 1e-5)`.
pub fn rms_norm(out: &mut [f32], x: &[f32], weight: &[f32]) {
    let mean_square = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv_rms = 1.0 / (mean_square + 1e-5).sqrt();
    for i in 0..x.len() {
        out[i] = weight[i] * (inv_rms * x[i]);
    }
}

/// Softmax: `exp(x - max) / sum(exp(x - max))`.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    for i in 0..x.len() {
        x[i] = exps[i] / sum;
    }
}

/// RoPE as run.c writes it: for every even index `i` of `vec`, rotate `(vec[i], vec[i+1])` by
/// `pos * 10000^(-(i mod head_dim) / head_dim)`.
pub fn rope(vec: &mut [f32], pos: usize, head_dim: usize) {
    for i in (0..vec.len()).step_by(2) {
        let freq = 1.0f32 / 10000.0f32.powf((i % head_dim) as f32 / head_dim as f32);
        let angle = pos as f32 * freq;
        let (cos, sin) = (angle.cos(), angle.sin());
        let (v0, v1) = (vec[i], vec[i + 1]);
        vec[i] = v0 * cos - v1 * sin;
        vec[i + 1] = v0 * sin + v1 * cos;
    }
}

/// Multi-head attention of one query over `n_pos` positions, head by head, with no scratch
/// buffers shared between heads. Query head `h` uses key/value head `h / kv_mul`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n_pos: usize,
    n_heads: usize,
    kv_mul: usize,
    head_dim: usize,
) {
    let kv_dim = keys.len() / n_pos;
    for h in 0..n_heads {
        let kv = (h / kv_mul) * head_dim;
        let mut scores = vec![0.0f32; n_pos];
        for t in 0..n_pos {
            let mut s = 0.0f32;
            for i in 0..head_dim {
                s += q[h * head_dim + i] * keys[t * kv_dim + kv + i];
            }
            scores[t] = s / (head_dim as f32).sqrt();
        }
        softmax(&mut scores);
        for i in 0..head_dim {
            let mut acc = 0.0f32;
            for t in 0..n_pos {
                acc += scores[t] * values[t * kv_dim + kv + i];
            }
            out[h * head_dim + i] = acc;
        }
    }
}

/// SwiGLU: `silu(gate) * up`, with `silu(g) = g * (1 / (1 + e^-g))` as run.c writes it.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for i in 0..gate.len() {
        let g = gate[i];
        let silu = g * (1.0 / (1.0 + (-g).exp()));
        gate[i] = silu * up[i];
    }
}
