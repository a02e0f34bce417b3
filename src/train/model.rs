//! The whole transformer's forward and backward pass over one micro-batch, on buffers
//! allocated once.
//!
//! [`Workspace`] holds every activation the backward pass needs, for all layers of a batch of
//! `B` sequences of `T` tokens, plus the scratch buffers of the gradients; a training step
//! allocates nothing. [`forward_backward`] runs `model.py`'s `Transformer.forward` with the
//! cross-entropy loss and then the chain rule back through it, layer by layer in reverse;
//! [`loss`] runs the forward pass alone.
//!
//! Shapes below: `N = B * T` tokens, `C` = dim, `F` = hidden_dim, `K` = kv_dim, `V` = vocab,
//! `L` = layers, `H` = heads.

use super::dropout::Dropout;
use super::linear::{Bf16Copies, Layers, Precision};
use super::ops::{self, AttentionShape};
use crate::error::{Error, Result};
use crate::params::{Params, TensorKind};
use crate::Config;

/// Activations and scratch space for forward and backward passes of `B x T` tokens, allocated
/// once for a model shape.
#[derive(Debug)]
pub struct Workspace {
    config: Config,
    batch: usize,
    seq_len: usize,
    // RoPE rotation tables, (T, hd / 2).
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    // Kept for the backward pass, per layer.
    residual: Vec<f32>, // (L + 1, N, C): each layer's input, then the last layer's output
    xn_att: Vec<f32>,   // (L, N, C) attention RMSNorm output
    rstd_att: Vec<f32>, // (L, N)
    q: Vec<f32>,        // (L, B, H, T, hd) rotated queries
    k: Vec<f32>,        // (L, B, H/rep, T, hd) rotated keys
    v: Vec<f32>,        // (L, B, H/rep, T, hd) values
    lse: Vec<f32>,      // (L, B, H, T) attention softmax log-sum-exp per row
    att_out: Vec<f32>,  // (L, N, C) attention output, heads concatenated (input of wo)
    residual_mid: Vec<f32>, // (L, N, C) residual after the attention block
    xn_ffn: Vec<f32>,   // (L, N, C) feed-forward RMSNorm output
    rstd_ffn: Vec<f32>, // (L, N)
    h1: Vec<f32>,       // (L, N, F) w1 x
    h3: Vec<f32>,       // (L, N, F) w3 x
    gate: Vec<f32>,     // (L, N, F) silu(h1) * h3
    xn_final: Vec<f32>, // (N, C)
    rstd_final: Vec<f32>, // (N)
    logits: Vec<f32>,   // (N, V), turned into their gradient by the backward pass
    losses: Vec<f32>,   // (N) per-token loss
    logits_lse: Vec<f32>, // (N) log-sum-exp of each row of logits
    // Scratch, reused by every layer.
    tmp_c: Vec<f32>,       // (N, C)
    tmp_heads: Vec<f32>,   // (N, C) head-major attention output / its gradient
    tmp_k: Vec<f32>,       // (N, K)
    tmp_v: Vec<f32>,       // (N, K)
    att_scratch: Vec<f32>, // per head: rows of weights, transposed keys and values
    d_residual: Vec<f32>,  // (N, C)
    d_xn: Vec<f32>,        // (N, C)
    d_q: Vec<f32>,         // (N, C)
    d_k: Vec<f32>,         // (N, K)
    d_v: Vec<f32>,         // (N, K)
    d_h1: Vec<f32>,        // (N, F)
    d_h3: Vec<f32>,        // (N, F)
    d_gate: Vec<f32>,      // (N, F)
    // With `Precision::Bf16`: rounded weights, the linear layers' rounded inputs
    // (N, L (3C + F) + C) and room for a rounded output gradient (N, max(C, F, V)).
    bf16: Option<Bf16Copies>,
}

impl Workspace {
    /// Buffers for micro-batches of `batch` sequences of `seq_len` tokens of a model of shape
    /// `config`. Errors on an empty batch, a `seq_len` beyond the model's context, a shape the
    /// attention cannot run (odd head width, heads not a multiple of the key/value heads) or
    /// memory that cannot be had.
    pub fn new(config: &Config, batch: usize, seq_len: usize) -> Result<Workspace> {
        Workspace::with_precision(config, batch, seq_len, Precision::F32)
    }

    /// [`Workspace::new`] for matrix products in `precision`: with [`Precision::Bf16`] the
    /// workspace also holds bfloat16 copies of the weights, of the linear layers' inputs and of
    /// one output gradient.
    pub fn with_precision(
        config: &Config,
        batch: usize,
        seq_len: usize,
        precision: Precision,
    ) -> Result<Workspace> {
        let c = config;
        if batch == 0 || seq_len == 0 {
            return Err(Error::input(
                "batch size and sequence length must be at least 1",
            ));
        }
        if seq_len > c.seq_len {
            return Err(Error::input(format!(
                "sequence length {seq_len} exceeds the model's context of {}",
                c.seq_len
            )));
        }
        if c.dim == 0 || c.n_heads == 0 || c.n_kv_heads == 0 || c.n_layers == 0 {
            return Err(Error::input("model shape has a zero dimension"));
        }
        let dim_splits = c.dim.is_multiple_of(c.n_heads) && c.head_dim().is_multiple_of(2);
        if !dim_splits || !c.n_heads.is_multiple_of(c.n_kv_heads) {
            return Err(Error::input(format!(
                "attention needs dim divisible by heads into an even head width, and heads \
                 divisible by kv heads (dim {}, heads {}, kv heads {})",
                c.dim, c.n_heads, c.n_kv_heads
            )));
        }
        let n = batch
            .checked_mul(seq_len)
            .ok_or_else(|| Error::input("batch too large"))?;
        let (layers, dim, kv, hidden) = (c.n_layers, c.dim, c.kv_dim(), c.hidden_dim);
        let a = |parts: &[usize]| alloc(parts);
        let bf16 = match precision {
            Precision::F32 => None,
            Precision::Bf16 => {
                let widest = dim.max(hidden).max(c.vocab_size);
                let params_len = crate::params::tensor_table(c)?
                    .iter()
                    .map(|t| t.range().end)
                    .max()
                    .unwrap_or(0);
                let d_out_len = n.saturating_mul(widest);
                Some(Bf16Copies::new(
                    params_len,
                    (layers, dim, hidden),
                    n,
                    d_out_len,
                )?)
            }
        };
        Ok(Workspace {
            config: *c,
            batch,
            seq_len,
            rope_cos: a(&[seq_len, c.head_dim() / 2])?,
            rope_sin: a(&[seq_len, c.head_dim() / 2])?,
            residual: a(&[layers + 1, n, dim])?,
            xn_att: a(&[layers, n, dim])?,
            rstd_att: a(&[layers, n])?,
            q: a(&[layers, n, dim])?,
            k: a(&[layers, n, kv])?,
            v: a(&[layers, n, kv])?,
            lse: a(&[layers, n, c.n_heads])?,
            att_out: a(&[layers, n, dim])?,
            residual_mid: a(&[layers, n, dim])?,
            xn_ffn: a(&[layers, n, dim])?,
            rstd_ffn: a(&[layers, n])?,
            h1: a(&[layers, n, hidden])?,
            h3: a(&[layers, n, hidden])?,
            gate: a(&[layers, n, hidden])?,
            xn_final: a(&[n, dim])?,
            rstd_final: a(&[n])?,
            logits: a(&[n, c.vocab_size])?,
            losses: a(&[n])?,
            logits_lse: a(&[n])?,
            tmp_c: a(&[n, dim])?,
            tmp_heads: a(&[n, dim])?,
            tmp_k: a(&[n, kv])?,
            tmp_v: a(&[n, kv])?,
            att_scratch: a(&[AttentionShape {
                batch,
                seq_len,
                heads: c.n_heads,
                kv_heads: c.n_kv_heads,
                head_dim: c.head_dim(),
            }
            .scratch_len()])?,
            d_residual: a(&[n, dim])?,
            d_xn: a(&[n, dim])?,
            d_q: a(&[n, dim])?,
            d_k: a(&[n, kv])?,
            d_v: a(&[n, kv])?,
            d_h1: a(&[n, hidden])?,
            d_h3: a(&[n, hidden])?,
            d_gate: a(&[n, hidden])?,
            bf16,
        })
        .map(|mut ws| {
            ops::rope_tables(&mut ws.rope_cos, &mut ws.rope_sin, seq_len, c.head_dim());
            ws
        })
    }

    /// The arithmetic of the matrix products.
    pub fn precision(&self) -> Precision {
        match self.bf16 {
            Some(_) => Precision::Bf16,
            None => Precision::F32,
        }
    }

    /// Bytes of all buffers: the activations of one micro-batch, the gradients' scratch and,
    /// in bfloat16, the rounded copies.
    pub fn bytes(&self) -> usize {
        let f32s: usize = [
            &self.rope_cos,
            &self.rope_sin,
            &self.residual,
            &self.xn_att,
            &self.rstd_att,
            &self.q,
            &self.k,
            &self.v,
            &self.lse,
            &self.att_out,
            &self.residual_mid,
            &self.xn_ffn,
            &self.rstd_ffn,
            &self.h1,
            &self.h3,
            &self.gate,
            &self.xn_final,
            &self.rstd_final,
            &self.logits,
            &self.losses,
            &self.logits_lse,
            &self.tmp_c,
            &self.tmp_heads,
            &self.tmp_k,
            &self.tmp_v,
            &self.att_scratch,
            &self.d_residual,
            &self.d_xn,
            &self.d_q,
            &self.d_k,
            &self.d_v,
            &self.d_h1,
            &self.d_h3,
            &self.d_gate,
        ]
        .iter()
        .map(|b| b.len())
        .sum();
        f32s * 4 + self.bf16.as_ref().map_or(0, |b| b.bytes())
    }

    /// The model shape the buffers are for.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sequences per micro-batch (`B`).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens per sequence (`T`).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The `B * T * vocab` logits of the last [`loss`] call (row `b * T + t` for position `t` of
    /// sequence `b`). A [`forward_backward`] call leaves their gradients here instead.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// The mean of the last forward pass's per-token losses, summed in f64 without rounding the
    /// result to f32 (finite differences of the loss need the extra digits).
    #[cfg(test)]
    pub(crate) fn mean_loss_f64(&self) -> f64 {
        self.losses.iter().map(|&l| l as f64).sum::<f64>() / self.losses.len() as f64
    }

    /// The attention shape of one layer.
    fn attention_shape(&self) -> AttentionShape {
        AttentionShape {
            batch: self.batch,
            seq_len: self.seq_len,
            heads: self.config.n_heads,
            kv_heads: self.config.n_kv_heads,
            head_dim: self.config.head_dim(),
        }
    }
}

/// A zeroed buffer of the product of `parts` values, or an out-of-memory error.
fn alloc(parts: &[usize]) -> Result<Vec<f32>> {
    let len = parts
        .iter()
        .try_fold(1usize, |acc, &p| acc.checked_mul(p))
        .ok_or_else(|| Error::input("training batch too large for this machine"))?;
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
        what: "training activations".into(),
        bytes: len as u128 * 4,
    })?;
    v.resize(len, 0.0);
    Ok(v)
}

/// Forward and backward pass over a micro-batch: `inputs` and `targets` hold `B * T` token ids
/// (row `b` is `inputs[b * T..(b + 1) * T]`, and `targets[i]` is the token that should follow
/// `inputs[i]`). Adds `loss_scale * d(mean loss) / d(params)` into `grads` (pass `1 /
/// accumulation steps` to average micro-batches) and returns the mean (unscaled) cross-entropy
/// loss over the `B * T` positions. `dropout` is applied where `model.py` applies it.
///
/// Errors if the shapes of `params`, `grads` and `ws` differ, if `inputs` or `targets` are not
/// `B * T` ids below the vocabulary size, or if `dropout.p` is not in `[0, 1)`.
pub fn forward_backward(
    params: &Params,
    grads: &mut Params,
    ws: &mut Workspace,
    inputs: &[u16],
    targets: &[u16],
    dropout: Dropout,
    loss_scale: f32,
) -> Result<f32> {
    if grads.config() != params.config() {
        return Err(Error::input(
            "gradients and parameters have different shapes",
        ));
    }
    check_batch(params, ws, inputs, targets)?;
    if !dropout.is_valid() {
        return Err(Error::input(format!(
            "dropout {} is not in [0, 1)",
            dropout.p
        )));
    }
    let scale = loss_scale / inputs.len() as f32;
    let loss = forward(params, ws, inputs, targets, dropout, Some(scale));
    backward(params, grads, ws, inputs, dropout);
    Ok(loss)
}

/// The mean cross-entropy loss of a micro-batch, forward pass only and without dropout (as in
/// evaluation). The logits stay in the workspace: [`Workspace::logits`].
///
/// Errors as [`forward_backward`] does.
pub fn loss(params: &Params, ws: &mut Workspace, inputs: &[u16], targets: &[u16]) -> Result<f32> {
    check_batch(params, ws, inputs, targets)?;
    Ok(forward(params, ws, inputs, targets, Dropout::OFF, None))
}

fn check_batch(params: &Params, ws: &Workspace, inputs: &[u16], targets: &[u16]) -> Result<()> {
    if params.config() != &ws.config {
        return Err(Error::input(
            "workspace and parameters are for different model shapes",
        ));
    }
    let n = ws.batch * ws.seq_len;
    if inputs.len() != n || targets.len() != n {
        return Err(Error::input(format!(
            "a micro-batch needs {n} inputs and targets ({} x {}), got {} and {}",
            ws.batch,
            ws.seq_len,
            inputs.len(),
            targets.len()
        )));
    }
    let vocab = ws.config.vocab_size;
    if let Some(&bad) = inputs.iter().chain(targets).find(|&&t| t as usize >= vocab) {
        return Err(Error::input(format!(
            "token id {bad} is out of range for a vocabulary of {vocab}"
        )));
    }
    Ok(())
}

/// Which dropout site of the model a mask belongs to: the embeddings, then three per layer.
fn embedding_site() -> u64 {
    0
}

fn layer_site(layer: usize, which: u64) -> u64 {
    1 + 3 * layer as u64 + which
}

const ATTENTION_SITE: u64 = 0;
const ATTENTION_OUT_SITE: u64 = 1;
const FFN_OUT_SITE: u64 = 2;

/// Layer `l`'s part of a per-layer buffer of `len` values per layer.
fn at(buf: &[f32], l: usize, len: usize) -> &[f32] {
    &buf[l * len..][..len]
}

fn at_mut(buf: &mut [f32], l: usize, len: usize) -> &mut [f32] {
    &mut buf[l * len..][..len]
}

/// `model.py`'s forward pass with the loss: fills the workspace and returns the mean loss.
fn forward(
    params: &Params,
    ws: &mut Workspace,
    inputs: &[u16],
    targets: &[u16],
    dropout: Dropout,
    gradient_scale: Option<f32>,
) -> f32 {
    use TensorKind::*;
    let c = ws.config;
    let n = inputs.len();
    let (dim, kv, hidden, heads, kv_heads, hd) = (
        c.dim,
        c.kv_dim(),
        c.hidden_dim,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim(),
    );
    let shape = ws.attention_shape();
    let t_len = ws.seq_len;
    if let Some(b) = ws.bf16.as_mut() {
        b.round_weights(params);
    }
    let mut layers = Layers {
        params,
        bf16: ws.bf16.as_mut(),
    };

    // x = dropout(embedding[tokens])
    let x0 = at_mut(&mut ws.residual, 0, n * dim);
    ops::embedding_forward(x0, params.get(TokenEmbedding, 0), inputs, dim);
    ops::dropout_forward(x0, dropout.mask(embedding_site()));

    for l in 0..c.n_layers {
        let x = at(&ws.residual, l, n * dim);
        // Attention block: x_mid = x + dropout(wo attention(rope(wq xn), rope(wk xn), wv xn))
        let xn = at_mut(&mut ws.xn_att, l, n * dim);
        let rstd = at_mut(&mut ws.rstd_att, l, n);
        ops::rmsnorm_forward(xn, rstd, x, params.get(AttnNorm, l));
        let xn = at(&ws.xn_att, l, n * dim);
        layers.forward(&mut ws.tmp_c, xn, (Wq, l), dim, dim);
        layers.forward(&mut ws.tmp_k, xn, (Wk, l), dim, kv);
        layers.forward(&mut ws.tmp_v, xn, (Wv, l), dim, kv);
        ops::rope_forward(&mut ws.tmp_c, &ws.rope_cos, &ws.rope_sin, hd, dim);
        ops::rope_forward(&mut ws.tmp_k, &ws.rope_cos, &ws.rope_sin, hd, kv);
        let q = at_mut(&mut ws.q, l, n * dim);
        ops::split_heads(q, &ws.tmp_c, t_len, heads, hd);
        let k = at_mut(&mut ws.k, l, n * kv);
        ops::split_heads(k, &ws.tmp_k, t_len, kv_heads, hd);
        let v = at_mut(&mut ws.v, l, n * kv);
        ops::split_heads(v, &ws.tmp_v, t_len, kv_heads, hd);
        ops::attention_forward(
            &mut ws.tmp_heads,
            at_mut(&mut ws.lse, l, n * heads),
            &mut ws.att_scratch,
            at(&ws.q, l, n * dim),
            at(&ws.k, l, n * kv),
            at(&ws.v, l, n * kv),
            shape,
            dropout.mask(layer_site(l, ATTENTION_SITE)),
        );
        let att_out = at_mut(&mut ws.att_out, l, n * dim);
        ops::merge_heads(att_out, &ws.tmp_heads, t_len, heads, hd);
        layers.forward(
            &mut ws.tmp_c,
            at(&ws.att_out, l, n * dim),
            (Wo, l),
            dim,
            dim,
        );
        let x_mid = at_mut(&mut ws.residual_mid, l, n * dim);
        let x = at(&ws.residual, l, n * dim);
        ops::residual_forward(
            x_mid,
            x,
            &ws.tmp_c,
            dropout.mask(layer_site(l, ATTENTION_OUT_SITE)),
        );

        // Feed-forward block: x_out = x_mid + dropout(w2 (silu(w1 xn) * w3 xn))
        let x_mid = at(&ws.residual_mid, l, n * dim);
        let xn = at_mut(&mut ws.xn_ffn, l, n * dim);
        ops::rmsnorm_forward(
            xn,
            at_mut(&mut ws.rstd_ffn, l, n),
            x_mid,
            params.get(FfnNorm, l),
        );
        let xn = at(&ws.xn_ffn, l, n * dim);
        layers.forward(at_mut(&mut ws.h1, l, n * hidden), xn, (W1, l), dim, hidden);
        layers.forward(at_mut(&mut ws.h3, l, n * hidden), xn, (W3, l), dim, hidden);
        let gate = at_mut(&mut ws.gate, l, n * hidden);
        ops::swiglu_forward(gate, at(&ws.h1, l, n * hidden), at(&ws.h3, l, n * hidden));
        layers.forward(
            &mut ws.tmp_c,
            at(&ws.gate, l, n * hidden),
            (W2, l),
            hidden,
            dim,
        );
        ops::residual_forward(
            at_mut(&mut ws.residual, l + 1, n * dim),
            x_mid,
            &ws.tmp_c,
            dropout.mask(layer_site(l, FFN_OUT_SITE)),
        );
    }

    // logits = classifier(rmsnorm(x)), loss = mean cross-entropy
    let x = at(&ws.residual, c.n_layers, n * dim);
    ops::rmsnorm_forward(
        &mut ws.xn_final,
        &mut ws.rstd_final,
        x,
        params.get(FinalNorm, 0),
    );
    layers.forward(
        &mut ws.logits,
        &ws.xn_final,
        (Classifier, 0),
        dim,
        c.vocab_size,
    );
    // With a gradient to make (training), the loss's gradient is made row by row with the
    // loss, for the backward pass to start from.
    match gradient_scale {
        None => ops::cross_entropy_forward(
            &mut ws.losses,
            &mut ws.logits_lse,
            &ws.logits,
            targets,
            c.vocab_size,
        ),
        Some(scale) => layers.loss_and_gradient(
            &mut ws.losses,
            &mut ws.logits_lse,
            &mut ws.logits,
            targets,
            c.vocab_size,
            scale,
        ),
    }
    let total: f64 = ws.losses.iter().map(|&l| l as f64).sum();
    (total / n as f64) as f32
}

/// The chain rule back through [`forward`]: adds `scale * d(sum of token losses) / d(params)`
/// into `grads`, from the loss's gradient `forward` made with that `scale` and the activations
/// it left in `ws`.
fn backward(
    params: &Params,
    grads: &mut Params,
    ws: &mut Workspace,
    inputs: &[u16],
    dropout: Dropout,
) {
    use TensorKind::*;
    let c = ws.config;
    let n = inputs.len();
    let (dim, kv, hidden, heads, kv_heads, hd) = (
        c.dim,
        c.kv_dim(),
        c.hidden_dim,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim(),
    );
    let shape = ws.attention_shape();
    let t_len = ws.seq_len;
    // The bfloat16 weights are the ones `forward` rounded.
    let mut layers = Layers {
        params,
        bf16: ws.bf16.as_mut(),
    };

    // Classifier, from the loss's gradient the forward pass made, then the final norm into
    // d_residual.
    layers.classifier_backward(
        &mut ws.d_xn,
        grads.get_mut(Classifier, 0),
        &ws.logits,
        &ws.xn_final,
        dim,
        c.vocab_size,
    );
    ws.d_residual.fill(0.0);
    ops::rmsnorm_backward(
        &mut ws.d_residual,
        grads.get_mut(FinalNorm, 0),
        &ws.d_xn,
        at(&ws.residual, c.n_layers, n * dim),
        &ws.rstd_final,
        params.get(FinalNorm, 0),
    );

    for l in (0..c.n_layers).rev() {
        // Feed-forward block; d_residual holds d x_out and becomes d x_mid.
        ops::residual_backward(
            &mut ws.tmp_c,
            &ws.d_residual,
            dropout.mask(layer_site(l, FFN_OUT_SITE)),
        );
        layers.backward(
            &mut ws.d_gate,
            grads.get_mut(W2, l),
            &ws.tmp_c,
            at(&ws.gate, l, n * hidden),
            (W2, l),
            hidden,
            dim,
            false,
        );
        let (h1, h3) = (at(&ws.h1, l, n * hidden), at(&ws.h3, l, n * hidden));
        ops::swiglu_backward(&mut ws.d_h1, &mut ws.d_h3, &ws.d_gate, h1, h3);
        let xn = at(&ws.xn_ffn, l, n * dim);
        layers.backward(
            &mut ws.d_xn,
            grads.get_mut(W1, l),
            &ws.d_h1,
            xn,
            (W1, l),
            dim,
            hidden,
            false,
        );
        layers.backward(
            &mut ws.d_xn,
            grads.get_mut(W3, l),
            &ws.d_h3,
            xn,
            (W3, l),
            dim,
            hidden,
            true,
        );
        ops::rmsnorm_backward(
            &mut ws.d_residual,
            grads.get_mut(FfnNorm, l),
            &ws.d_xn,
            at(&ws.residual_mid, l, n * dim),
            at(&ws.rstd_ffn, l, n),
            params.get(FfnNorm, l),
        );

        // Attention block; d_residual holds d x_mid and becomes d x.
        ops::residual_backward(
            &mut ws.tmp_c,
            &ws.d_residual,
            dropout.mask(layer_site(l, ATTENTION_OUT_SITE)),
        );
        layers.backward(
            &mut ws.d_xn,
            grads.get_mut(Wo, l),
            &ws.tmp_c,
            at(&ws.att_out, l, n * dim),
            (Wo, l),
            dim,
            dim,
            false,
        );
        ops::split_heads(&mut ws.tmp_heads, &ws.d_xn, t_len, heads, hd);
        ops::attention_backward(
            &mut ws.tmp_c,
            &mut ws.tmp_k,
            &mut ws.tmp_v,
            &mut ws.att_scratch,
            &ws.tmp_heads,
            at(&ws.q, l, n * dim),
            at(&ws.k, l, n * kv),
            at(&ws.v, l, n * kv),
            at(&ws.lse, l, n * heads),
            shape,
            dropout.mask(layer_site(l, ATTENTION_SITE)),
        );
        ops::merge_heads(&mut ws.d_q, &ws.tmp_c, t_len, heads, hd);
        ops::merge_heads(&mut ws.d_k, &ws.tmp_k, t_len, kv_heads, hd);
        ops::merge_heads(&mut ws.d_v, &ws.tmp_v, t_len, kv_heads, hd);
        ops::rope_backward(&mut ws.d_q, &ws.rope_cos, &ws.rope_sin, hd, dim);
        ops::rope_backward(&mut ws.d_k, &ws.rope_cos, &ws.rope_sin, hd, kv);
        let xn = at(&ws.xn_att, l, n * dim);
        layers.backward(
            &mut ws.d_xn,
            grads.get_mut(Wq, l),
            &ws.d_q,
            xn,
            (Wq, l),
            dim,
            dim,
            false,
        );
        layers.backward(
            &mut ws.d_xn,
            grads.get_mut(Wk, l),
            &ws.d_k,
            xn,
            (Wk, l),
            dim,
            kv,
            true,
        );
        layers.backward(
            &mut ws.d_xn,
            grads.get_mut(Wv, l),
            &ws.d_v,
            xn,
            (Wv, l),
            dim,
            kv,
            true,
        );
        ops::rmsnorm_backward(
            &mut ws.d_residual,
            grads.get_mut(AttnNorm, l),
            &ws.d_xn,
            at(&ws.residual, l, n * dim),
            at(&ws.rstd_att, l, n),
            params.get(AttnNorm, l),
        );
    }

    // Embedding (its gradient adds to the classifier's when the two are one tensor).
    ops::dropout_backward(
        &mut ws.tmp_c,
        &ws.d_residual,
        dropout.mask(embedding_site()),
    );
    ops::embedding_backward(grads.get_mut(TokenEmbedding, 0), &ws.tmp_c, inputs, dim);
}
