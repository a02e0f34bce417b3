//! `run.c`'s forward pass, written out plainly from the reference kernels of
//! `llama2::kernels::plain`: fresh buffers, one KV cache per layer, every sum in order. Tests
//! hold the real forward pass to it, bit for bit.

use llama2::convert::FloatTensors;
use llama2::kernels::plain;
use llama2::Model;

/// The obviously correct forward pass: plain kernels, fresh buffers, one KV cache per layer.
pub struct NaiveTransformer<'a> {
    t: FloatTensors<'a>,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl NaiveTransformer<'_> {
    pub fn new(model: &Model) -> NaiveTransformer<'_> {
        let layers = model.config().n_layers;
        NaiveTransformer {
            t: FloatTensors::from_model(model),
            keys: vec![Vec::new(); layers],
            values: vec![Vec::new(); layers],
        }
    }

    /// The logits after running `token` at `pos` (positions in order, or rewinding).
    pub fn logits(&mut self, token: u32, pos: usize) -> Vec<f32> {
        let c = self.t.config;
        let (dim, kv_dim, head_dim) = (c.dim, c.kv_dim(), c.head_dim());
        let matmul = |w: &[f32], x: &[f32], rows: usize| {
            let mut out = vec![0.0; rows];
            plain::matmul(&mut out, w, x);
            out
        };
        let norm = |x: &[f32], weight: &[f32]| {
            let mut out = vec![0.0; x.len()];
            plain::rms_norm(&mut out, x, weight);
            out
        };
        let t = token as usize;
        let mut x = self.t.token_embedding[t * dim..(t + 1) * dim].to_vec();
        for (l, w) in self.t.layers.iter().enumerate() {
            let xb = norm(&x, &w.attn_norm);
            let mut q = matmul(&w.wq, &xb, dim);
            let mut k = matmul(&w.wk, &xb, kv_dim);
            let v = matmul(&w.wv, &xb, kv_dim);
            plain::rope(&mut q, pos, head_dim);
            plain::rope(&mut k, pos, head_dim);
            self.keys[l].truncate(pos * kv_dim);
            self.keys[l].extend(k);
            self.values[l].truncate(pos * kv_dim);
            self.values[l].extend(v);
            let mut attended = vec![0.0; dim];
            plain::attention(
                &mut attended,
                &q,
                &self.keys[l],
                &self.values[l],
                pos + 1,
                c.n_heads,
                c.kv_mul(),
                head_dim,
            );
            for (xi, o) in x.iter_mut().zip(matmul(&w.wo, &attended, dim)) {
                *xi += o;
            }
            let xb = norm(&x, &w.ffn_norm);
            let mut gate = matmul(&w.w1, &xb, c.hidden_dim);
            let up = matmul(&w.w3, &xb, c.hidden_dim);
            plain::swiglu(&mut gate, &up);
            for (xi, o) in x.iter_mut().zip(matmul(&w.w2, &gate, dim)) {
                *xi += o;
            }
        }
        let x = norm(&x, &self.t.final_norm);
        matmul(&self.t.classifier, &x, c.vocab_size)
    }
}
