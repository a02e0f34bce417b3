//! A linear layer without bias, `y = x W^T`, forward and backward, in `f32` or in bfloat16.
//!
//! The matrix products come from the `use` below, so a faster implementation is swapped in
//! here and nowhere else. With `--dtype bfloat16` ([`Precision::Bf16`]) both operands of every
//! product are rounded to bfloat16 (nearest, ties to even; on AVX-512 BF16 by its own instruction,
//! which also flushes `f32` subnormals to zero) and the sums stay `f32`; the weights
//! themselves, their gradients and everything outside the products stay `f32`.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::gemm::{matmul_nn, matmul_nn_bf16, matmul_nt, matmul_nt_bf16, matmul_tn};
use crate::gemm::{matmul_tn_bf16, to_bf16_for_products};

use crate::params::{Params, TensorKind};
use crate::train::isa::widest;
use crate::train::ops;

/// The arithmetic of the linear layers' matrix products (`train.py`'s `--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// `f32` operands and sums.
    #[default]
    F32,
    /// bfloat16 copies of weights and activations, `f32` sums.
    Bf16,
}

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

/// The bfloat16 buffers of [`Precision::Bf16`]: a rounded copy of all weights (made once per
/// pass by [`Bf16Copies::round_weights`]), each linear layer's input rounded once per pass
/// (the forward pass rounds it, the backward pass reuses it), and room for one rounded output
/// gradient.
#[derive(Debug)]
pub(crate) struct Bf16Copies {
    weights: Vec<u16>, // like Params::data()
    inputs: Vec<u16>,  // per layer: attention norm, attention, ffn norm, gate; then final norm
    /// Where each slot of `inputs` starts (one more entry: the end).
    slot_starts: Vec<usize>,
    /// Per slot of `inputs`: the `f32` input rounded there in this pass (address, length).
    rounded_from: Vec<Option<(usize, usize)>>,
    d_out: Vec<u16>, // a layer's output gradient
}

impl Bf16Copies {
    /// Buffers for `params_len` weights, the inputs of `layers` layers of width `dim` (hidden
    /// `hidden`) for `tokens` tokens, and output gradients of up to `d_out_len` values.
    pub(crate) fn new(
        params_len: usize,
        (layers, dim, hidden): (usize, usize, usize),
        tokens: usize,
        d_out_len: usize,
    ) -> Result<Bf16Copies> {
        let zeros = |len: usize| {
            let mut v = Vec::new();
            v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
                what: "bfloat16 copies".into(),
                bytes: len as u128 * 2,
            })?;
            v.resize(len, 0u16);
            Ok::<_, Error>(v)
        };
        let widths = (0..layers)
            .flat_map(|_| [dim, dim, dim, hidden])
            .chain([dim]);
        let slot_starts: Vec<usize> = [0]
            .into_iter()
            .chain(widths.scan(0usize, |end, width| {
                *end = end.saturating_add(width.saturating_mul(tokens));
                Some(*end)
            }))
            .collect();
        let inputs_len = slot_starts.last().copied().unwrap_or(0);
        Ok(Bf16Copies {
            weights: zeros(params_len)?,
            inputs: zeros(inputs_len)?,
            rounded_from: vec![None; slot_starts.len() - 1],
            slot_starts,
            d_out: zeros(d_out_len)?,
        })
    }

    /// Bytes of the buffers.
    pub(crate) fn bytes(&self) -> usize {
        (self.weights.len() + self.inputs.len() + self.d_out.len()) * 2
    }

    /// Round the current weights, and start a pass: no input is rounded yet.
    pub(crate) fn round_weights(&mut self, params: &Params) {
        round(&mut self.weights, params.data());
        self.rounded_from.fill(None);
    }

    /// Round `x`, the input of weight `(kind, layer)`, into its slot of `inputs` unless this
    /// pass already rounded this very slice there, and return where it lies. The products that
    /// read one input (`wq`, `wk`, `wv`; `w1`, `w3`) share a slot, and the backward pass
    /// reuses the forward pass's copies (it reads the activations that pass wrote, unchanged).
    fn round_input(&mut self, x: &[f32], (kind, layer): (TensorKind, usize)) -> Range<usize> {
        use TensorKind::*;
        let last = self.rounded_from.len() - 1; // the final norm's output
        let slot = match kind {
            Wq | Wk | Wv => 4 * layer,
            Wo => 4 * layer + 1,
            W1 | W3 => 4 * layer + 2,
            W2 => 4 * layer + 3,
            _ => last,
        }
        .min(last);
        let start = self.slot_starts[slot];
        let end = (start + x.len()).min(self.slot_starts[slot + 1]);
        let source = Some((x.as_ptr() as usize, x.len()));
        if self.rounded_from[slot] != source {
            round(&mut self.inputs[start..end], &x[..end - start]);
            self.rounded_from[slot] = source;
        }
        start..end
    }
}

/// The linear layers of one pass: the weights, and their bfloat16 copies when the products
/// run in bfloat16.
pub(crate) struct Layers<'a> {
    pub(crate) params: &'a Params,
    pub(crate) bf16: Option<&'a mut Bf16Copies>,
}

impl Layers<'_> {
    /// [`linear_forward`] with the weight `(kind, layer)`.
    pub(crate) fn forward(
        &mut self,
        out: &mut [f32],
        x: &[f32],
        (kind, layer): (TensorKind, usize),
        in_dim: usize,
        out_dim: usize,
    ) {
        let weight = self.params.get(kind, layer);
        let Some(b) = self.bf16.as_deref_mut() else {
            return linear_forward(out, x, weight, in_dim, out_dim);
        };
        let tokens = x.len() / in_dim;
        let range = self.params.info(kind, layer).range();
        let xb = b.round_input(x, (kind, layer));
        let (xb, w) = (&b.inputs[xb], &b.weights[range]);
        matmul_nt_bf16(out, xb, w, tokens, in_dim, out_dim, false);
    }

    /// [`linear_backward`] with the weight `(kind, layer)`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &mut self,
        d_x: &mut [f32],
        d_weight: &mut [f32],
        d_out: &[f32],
        x: &[f32],
        (kind, layer): (TensorKind, usize),
        in_dim: usize,
        out_dim: usize,
        accumulate_dx: bool,
    ) {
        let weight = self.params.get(kind, layer);
        let Some(b) = self.bf16.as_deref_mut() else {
            return linear_backward(
                d_x,
                d_weight,
                d_out,
                x,
                weight,
                in_dim,
                out_dim,
                accumulate_dx,
            );
        };
        round(&mut b.d_out[..d_out.len()], d_out);
        self.backward_bf16(
            d_x,
            d_weight,
            x,
            (kind, layer),
            (in_dim, out_dim),
            accumulate_dx,
        );
    }

    /// The cross-entropy loss of each row of `logits (N, vocab)` into `losses` (log-sum-exps
    /// into `lse`), and the gradient of `scale * sum of the losses` for
    /// [`Layers::classifier_backward`]: in `f32` it replaces `logits`; in bfloat16 it is rounded
    /// into the output-gradient buffer as it is made and `logits` stay as they were.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn loss_and_gradient(
        &mut self,
        losses: &mut [f32],
        lse: &mut [f32],
        logits: &mut [f32],
        targets: &[u16],
        vocab: usize,
        scale: f32,
    ) {
        let Some(b) = self.bf16.as_deref_mut() else {
            return ops::cross_entropy_with_gradient(losses, lse, logits, targets, vocab, scale);
        };
        let db = &mut b.d_out[..logits.len()];
        ops::cross_entropy_with_gradient_bf16(losses, lse, db, logits, targets, vocab, scale);
    }

    /// [`Layers::backward`] of the classifier (input `x (N, dim)`) from the gradient
    /// [`Layers::loss_and_gradient`] made: `d_logits` in `f32`, the rounded copy in bfloat16.
    pub(crate) fn classifier_backward(
        &mut self,
        d_x: &mut [f32],
        d_weight: &mut [f32],
        d_logits: &[f32],
        x: &[f32],
        dim: usize,
        vocab: usize,
    ) {
        let weight = (TensorKind::Classifier, 0);
        if self.bf16.is_none() {
            return self.backward(d_x, d_weight, d_logits, x, weight, dim, vocab, false);
        }
        self.backward_bf16(d_x, d_weight, x, weight, (dim, vocab), false);
    }

    /// The two products of [`Layers::backward`] in bfloat16, with the output gradient
    /// already rounded into the start of the `d_out` buffer.
    fn backward_bf16(
        &mut self,
        d_x: &mut [f32],
        d_weight: &mut [f32],
        x: &[f32],
        (kind, layer): (TensorKind, usize),
        (in_dim, out_dim): (usize, usize),
        accumulate_dx: bool,
    ) {
        let Some(b) = self.bf16.as_deref_mut() else {
            return;
        };
        let tokens = x.len() / in_dim;
        let xb = b.round_input(x, (kind, layer));
        let xb = &b.inputs[xb];
        let w = &b.weights[self.params.info(kind, layer).range()];
        let db = &b.d_out[..tokens * out_dim];
        matmul_tn_bf16(d_weight, db, xb, out_dim, tokens, in_dim, true);
        matmul_nn_bf16(d_x, db, w, tokens, out_dim, in_dim, accumulate_dx);
    }
}

/// [`to_bf16_for_products`] by blocks over rayon's threads: the output gradient of the classifier is
/// `N x vocab` values, a pass over memory worth sharing.
fn round(dst: &mut [u16], src: &[f32]) {
    #[cfg(feature = "parallel")]
    if src.len() > 1 << 15 {
        use rayon::prelude::*;
        dst.par_chunks_mut(1 << 15)
            .zip(src.par_chunks(1 << 15))
            .for_each(|(d, s)| round_block(d, s));
        return;
    }
    round_block(dst, src);
}

widest! {
    /// [`to_bf16_for_products`] in the CPU's widest vectors.
    fn round_block / round_block_plain(dst: &mut [u16], src: &[f32]) {
        to_bf16_for_products(dst, src)
    }
}
