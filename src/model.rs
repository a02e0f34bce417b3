//! The transformer: loading a model, its run state, and the forward pass.
//!
//! [`Model`] is immutable once loaded: it owns the checkpoint bytes and borrows every weight from
//! them, so one model can serve many threads. Everything that changes while generating (the
//! activations and the KV cache) lives in a [`State`], one per sequence.
//!
//! The forward pass reads top to bottom like the Llama 2 paper: embedding, then for each layer
//! (`Model::transformer_block`) RMSNorm, Q/K/V, RoPE, attention, output projection, residual,
//! RMSNorm, SwiGLU feed-forward, residual; then the final norm and the classifier. One body serves a
//! single position ([`Model::forward`]) and a batch of them ([`Model::forward_batch`]): every
//! step takes `m` rows of activations, and `m = 1` when decoding.
//!
//! The arithmetic itself lives in [`crate::kernels`], reached through the [`Kernels`] table the
//! model picks when it is loaded: [`Arithmetic::Fast`] by default (its kernel chosen by timing
//! the candidates on the model's largest matrix), or [`Arithmetic::Exact`] for llama2.c's bits
//! ([`Model::with_arithmetic`]).

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::BTreeMap;
#[cfg(feature = "std")]
use std::path::Path;
#[cfg(feature = "std")]
use std::time::Duration;

use crate::checkpoint::{Checkpoint, Config, Format, TensorRange};
use crate::error::{Error, Result};
use crate::fast;
#[cfg(feature = "std")]
use crate::fast::tune;
use crate::kernels::{self, AttentionShape, Isa, Kernels, MatmulScratch};
pub use crate::kernels::{Arithmetic, Matrix};
use crate::quant::Q8Matrix;
use crate::storage::Storage;

/// The weights of one transformer block.
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'a> {
    /// RMSNorm weights before attention, `(dim,)`.
    pub attn_norm: &'a [f32],
    /// Query projection, `(dim, dim)`.
    pub wq: Matrix<'a>,
    /// Key projection, `(kv_dim, dim)`.
    pub wk: Matrix<'a>,
    /// Value projection, `(kv_dim, dim)`.
    pub wv: Matrix<'a>,
    /// Attention output projection, `(dim, dim)`.
    pub wo: Matrix<'a>,
    /// RMSNorm weights before the feed-forward block, `(dim,)`.
    pub ffn_norm: &'a [f32],
    /// Feed-forward gate, `(hidden_dim, dim)`.
    pub w1: Matrix<'a>,
    /// Feed-forward down projection, `(dim, hidden_dim)`.
    pub w2: Matrix<'a>,
    /// Feed-forward up projection, `(hidden_dim, dim)`.
    pub w3: Matrix<'a>,
}

/// A loaded model: hyperparameters and weights, borrowed from the checkpoint bytes.
pub struct Model {
    checkpoint: Checkpoint,
    /// Group scales copied out of the file because they are not 4-byte aligned there (int8
    /// files whose tensor sizes are not multiples of 4), keyed by their byte offset.
    copied_scales: BTreeMap<usize, Vec<f32>>,
    /// The kernels every forward pass runs on, chosen when the model is loaded.
    kernels: Kernels,
}

impl Model {
    /// Memory-map and validate a llama2.c checkpoint (legacy, version 1 or version 2).
    ///
    /// The weights stay in the file's pages; nothing is copied. As with any memory map, the file
    /// must not be truncated or modified while the model is alive.
    ///
    /// The model computes in [`Arithmetic::Fast`]; see [`Model::open_with`] and
    /// [`Model::with_arithmetic`] for llama2.c's exact bits.
    #[cfg(feature = "std")]
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        Model::open_with(path, Arithmetic::default())
    }

    /// [`Model::open`], computing in `arithmetic` (without timing the fast kernels first when
    /// it is [`Arithmetic::Exact`]).
    #[cfg(feature = "std")]
    pub fn open_with(path: impl AsRef<Path>, arithmetic: Arithmetic) -> Result<Model> {
        let path = path.as_ref();
        let storage = Storage::map(path)?;
        let model = Model::from_storage(&path.display().to_string(), storage)?;
        Ok(model.with_arithmetic(arithmetic))
    }

    /// Load a checkpoint from bytes already in memory (no file system needed). The bytes are
    /// kept, not copied, unless they are not 4-byte aligned.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Model> {
        let model = Model::from_storage("<memory>", Storage::from_vec(bytes))?;
        Ok(model.with_arithmetic(Arithmetic::default()))
    }

    /// Load a checkpoint from bytes that live for the whole program, such as `include_bytes!`.
    pub fn from_static(bytes: &'static [u8]) -> Result<Model> {
        let model = Model::from_storage("<memory>", Storage::from_static(bytes))?;
        Ok(model.with_arithmetic(Arithmetic::default()))
    }

    /// The model on the exact kernels.
    fn from_storage(name: &str, storage: Storage) -> Result<Model> {
        let checkpoint = Checkpoint::parse(name, storage)?;
        let copied_scales = copy_misaligned_scales(&checkpoint);
        Ok(Model {
            checkpoint,
            copied_scales,
            kernels: Kernels::detect(),
        })
    }

    /// The same model computing in `arithmetic`. Models load with [`Arithmetic::Fast`];
    /// [`Arithmetic::Exact`] gives llama2.c's bits, for everything that runs this model
    /// ([`crate::Generator`], [`crate::Chat`], [`crate::evaluate`] included).
    ///
    /// Choosing [`Arithmetic::Fast`] times the candidate kernels on the model's largest matrix
    /// for a few milliseconds (see [`crate::fast::tune`]) and keeps the fastest; `LLAMA2_ISA`
    /// restricts them to one instruction set. Models too small for the choice to matter (largest
    /// matrix under a million weights, such as stories260K) skip the timing.
    pub fn with_arithmetic(self, arithmetic: Arithmetic) -> Model {
        let kernels = match arithmetic {
            Arithmetic::Exact => Kernels::exact(Isa::detect()),
            Arithmetic::Fast => Kernels::fast(self.fastest_kernel()),
        };
        self.with_kernels(kernels)
    }

    /// How this model's forward passes round.
    pub fn arithmetic(&self) -> Arithmetic {
        self.kernels.arithmetic()
    }

    /// The fast kernel that runs this model's largest matrix fastest, by measurement (or a
    /// reasonable one without measuring, for a tiny model).
    fn fastest_kernel(&self) -> fast::Kernel {
        let guess = fast::Kernel::new(fast::Isa::forced().unwrap_or_else(fast::Isa::widest));
        // Without std there is no clock to time kernels with: the guess it is.
        if cfg!(not(feature = "std")) || self.largest_matrix() < TUNE_MIN_WEIGHTS {
            return guess;
        }
        self.timed_kernel(guess)
    }

    /// The fast kernel that runs this model's largest matrix fastest, timed on this CPU.
    #[cfg(not(feature = "std"))]
    fn timed_kernel(&self, guess: fast::Kernel) -> fast::Kernel {
        guess
    }

    /// The fast kernel that runs this model's largest matrix fastest, timed on this CPU.
    #[cfg(feature = "std")]
    fn timed_kernel(&self, guess: fast::Kernel) -> fast::Kernel {
        let candidates = tune::candidates(None);
        let residency = if self.file_size() > CACHED_MODEL_BYTES {
            tune::Residency::Memory
        } else {
            tune::Residency::Cache
        };
        let largest = if self.config().vocab_size >= self.config().hidden_dim {
            self.classifier()
        } else {
            self.layer(0).w1
        };
        match largest {
            Matrix::F32 { data, cols, .. } => {
                tune::plan_f32(&candidates, data, cols, residency, TUNE_BUDGET)
            }
            Matrix::Q8(q) if q.group_size.is_multiple_of(fast::Q8_SIMD_GROUP) => {
                let (wq, ws) = (q.values, q.scales);
                tune::plan_q8(
                    &candidates,
                    wq,
                    ws,
                    q.cols,
                    q.group_size,
                    residency,
                    TUNE_BUDGET,
                )
            }
            Matrix::Q8(_) => guess,
        }
    }

    /// The same model running on other kernels (another instruction set, say): every forward
    /// pass then calls `kernels`' functions.
    pub fn with_kernels(self, kernels: Kernels) -> Model {
        Model { kernels, ..self }
    }

    /// The kernels this model's forward passes run on.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &Config {
        &self.checkpoint.config
    }

    /// How the checkpoint stores its weights.
    pub fn format(&self) -> Format {
        self.checkpoint.format
    }

    /// The name used in error messages: the path, or `<memory>`.
    pub fn name(&self) -> &str {
        &self.checkpoint.name
    }

    /// Size of the checkpoint in bytes.
    pub fn file_size(&self) -> usize {
        self.checkpoint.storage.bytes().len()
    }

    fn floats(&self, range: TensorRange) -> &[f32] {
        self.checkpoint.storage.f32s(range.offset, range.len)
    }

    fn matrix(&self, range: TensorRange, rows: usize, cols: usize) -> Matrix<'_> {
        debug_assert_eq!(range.len, rows * cols);
        match self.checkpoint.format {
            Format::Legacy | Format::Float32V1 => Matrix::F32 {
                data: self.floats(range),
                rows,
                cols,
            },
            Format::Int8V2 { group_size } => {
                let storage = &self.checkpoint.storage;
                let scales_offset = range.scales.expect("int8 tensors have scales");
                let scales = if storage.is_f32_aligned(scales_offset) {
                    storage.f32s(scales_offset, range.len / group_size)
                } else {
                    &self.copied_scales[&scales_offset]
                };
                Matrix::Q8(Q8Matrix {
                    values: storage.i8s(range.offset, range.len),
                    scales,
                    group_size,
                    rows,
                    cols,
                })
            }
        }
    }

    /// Check that every token is in the vocabulary and that `state` was made for a model of
    /// this shape.
    fn check_tokens(&self, tokens: &[u32], state: &State) -> Result<()> {
        let c = self.config();
        if let Some(token) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::input(format!(
                "token {token} is outside the vocabulary of model {} ({} tokens)",
                self.name(),
                c.vocab_size
            )));
        }
        if state.config != *c {
            return Err(Error::input(format!(
                "the state passed to model {} was made for a model of another shape",
                self.name()
            )));
        }
        Ok(())
    }

    /// Size of the largest weight matrix, in values: how much work one position's biggest
    /// matrix product is.
    fn largest_matrix(&self) -> usize {
        let c = self.config();
        c.dim * c.vocab_size.max(c.hidden_dim)
    }

    /// The token embedding table, `(vocab_size, dim)`.
    pub fn token_embedding(&self) -> Matrix<'_> {
        let c = self.config();
        self.matrix(self.checkpoint.layout.token_embedding, c.vocab_size, c.dim)
    }

    /// The classifier, `(vocab_size, dim)` (the embedding table when shared).
    pub fn classifier(&self) -> Matrix<'_> {
        let c = self.config();
        self.matrix(self.checkpoint.layout.classifier, c.vocab_size, c.dim)
    }

    /// The final RMSNorm weights, `(dim,)`.
    pub fn final_norm(&self) -> &[f32] {
        self.floats(self.checkpoint.layout.final_norm)
    }

    /// The weights of every transformer block, first to last.
    pub fn layers(&self) -> impl ExactSizeIterator<Item = LayerWeights<'_>> + '_ {
        (0..self.config().n_layers).map(|l| self.layer(l))
    }

    /// The weights of layer `l`, which must be below `n_layers`.
    pub(crate) fn layer(&self, l: usize) -> LayerWeights<'_> {
        let c = self.config();
        let (dim, hidden, kv_dim) = (c.dim, c.hidden_dim, c.kv_dim());
        let r = &self.checkpoint.layout.layers[l];
        LayerWeights {
            attn_norm: self.floats(r.attn_norm),
            wq: self.matrix(r.wq, dim, dim),
            wk: self.matrix(r.wk, kv_dim, dim),
            wv: self.matrix(r.wv, kv_dim, dim),
            wo: self.matrix(r.wo, dim, dim),
            ffn_norm: self.floats(r.ffn_norm),
            w1: self.matrix(r.w1, hidden, dim),
            w2: self.matrix(r.w2, dim, hidden),
            w3: self.matrix(r.w3, hidden, dim),
        }
    }

    /// A fresh run state with room for the model's whole context (`seq_len` positions).
    pub fn new_state(&self) -> Result<State> {
        State::new(self, self.config().seq_len)
    }

    /// A fresh run state with room for `positions` positions (at most `seq_len`). Memory for
    /// the KV cache is reserved up front but only touched as positions are used.
    pub fn new_state_with_capacity(&self, positions: usize) -> Result<State> {
        State::new(self, positions.min(self.config().seq_len))
    }

    /// Run token `token` at position `pos` through the model and return the logits for the
    /// next token, `(vocab_size,)`.
    ///
    /// Positions must be fed in order: `pos` may be at most the number of positions already in
    /// `state` (feeding an earlier position rewinds the state to it). Errors if `token` is not in
    /// the vocabulary, if `pos` is out of order or beyond the state's capacity, or if `state` was
    /// made by a model of another shape.
    pub fn forward<'s>(
        &self,
        state: &'s mut State,
        token: u32,
        pos: usize,
    ) -> Result<&'s mut [f32]> {
        self.forward_batch(state, &[token], pos, Logits::Last)
    }

    /// Run `tokens` at positions `start_pos..start_pos + tokens.len()` through the model as a
    /// batch (a prompt, typically) and return the logits `which` asks for.
    ///
    /// This is [`Model::forward`] for many positions at once: each weight matrix is read once
    /// per batch of up to 128 positions instead of once per position, and each position attends
    /// causally to the positions before it, in the batch or in the cache. The results are bit
    /// for bit those of feeding the tokens one at a time. With [`Logits::All`], the state's
    /// [`State::logits`] are the last position's.
    ///
    /// `start_pos` follows the rule of `forward`; errors if `tokens` is empty, holds a token
    /// outside the vocabulary, or does not fit in the state.
    pub fn forward_batch<'s>(
        &self,
        state: &'s mut State,
        tokens: &[u32],
        start_pos: usize,
        which: Logits,
    ) -> Result<&'s mut [f32]> {
        let c = *self.config();
        if tokens.is_empty() {
            return Err(Error::input(
                "a batched forward pass needs at least one token",
            ));
        }
        self.check_tokens(tokens, state)?;
        let n = tokens.len();
        let logits_rows = if which == Logits::All { n } else { 0 };
        let chunk = n.min(BATCH_CHUNK);
        // Check the positions before growing any buffer, and grow the buffers before taking the
        // positions: an error leaves the state as it was.
        state.kv_cache.check_room(start_pos, n)?;
        let what = || format!("activations of model {}", self.name());
        state
            .rows
            .reserve(&c, chunk, start_pos + n, logits_rows, what)?;
        state.kv_cache.start_positions(start_pos, n)?;
        kernels::parallel::on_worker(chunk * self.largest_matrix(), || {
            for (i, chunk) in tokens.chunks(BATCH_CHUNK).enumerate() {
                self.forward_chunk(state, chunk, start_pos + i * BATCH_CHUNK);
                self.classify_chunk(state, chunk.len(), i * BATCH_CHUNK, n, which);
            }
        });
        match which {
            Logits::Last => Ok(&mut state.logits),
            Logits::All => {
                let all = &mut state.rows.logits[..n * c.vocab_size];
                state.logits.copy_from_slice(&all[(n - 1) * c.vocab_size..]);
                Ok(all)
            }
        }
    }

    /// The forward pass proper for a chunk of `m` positions from `start` on, whose keys and
    /// values already have room in the cache: embedding, every layer, and the final norm, which
    /// leaves the classifier's input in `state.rows.xb`, `(m, dim)`.
    fn forward_chunk(&self, state: &mut State, tokens: &[u32], start: usize) {
        let c = *self.config();
        let m = tokens.len();
        let (dim, half_head) = (c.dim, c.head_dim() / 2);
        let State { kv_cache, rows, .. } = state;
        let mut rows = rows.first(&c, m);

        // One embedding row per token starts the residual stream x, (m, dim), and one table of
        // RoPE angles per position serves all layers, (m, head_dim / 2).
        for (t, (row, &token)) in rows.x.chunks_exact_mut(dim).zip(tokens).enumerate() {
            self.token_embedding().row_into(token as usize, row);
            let table = &mut rows.rope[t * half_head..(t + 1) * half_head];
            kernels::rope_table(table, start + t, c.head_dim());
        }

        for l in 0..c.n_layers {
            let (keys, values) = kv_cache.layer_mut(l);
            self.transformer_block(&self.layer(l), &mut rows, keys, values, start);
        }

        // The final norm, into xb for the classifier.
        for (out, row) in rows.xb.chunks_exact_mut(dim).zip(rows.x.chunks_exact(dim)) {
            kernels::rms_norm(out, row, self.final_norm());
        }
    }

    /// One transformer block over the `m` positions of `rows` (`m = 1` when decoding), the
    /// first at position `start`. `keys` and `values` are the layer's KV cache, `(start + m,
    /// kv_dim)` at least; this block writes the positions' own keys and values into it.
    fn transformer_block(
        &self,
        w: &LayerWeights,
        rows: &mut Rows,
        keys: &mut [f32],
        values: &mut [f32],
        start: usize,
    ) {
        let c = self.config();
        let k = &self.kernels;
        let Rows {
            x,
            xb,
            xb2,
            q,
            hb,
            hb2,
            rope,
            scores,
            scratch,
        } = rows;
        let (dim, kv_dim, half_head) = (c.dim, c.kv_dim(), c.head_dim() / 2);
        let m = x.len() / dim;
        let new_kv = start * kv_dim..(start + m) * kv_dim;

        // Attention block. Normalise x, then project it to the queries q (m, dim) and to these
        // positions' keys and values (m, kv_dim), which go straight into the KV cache.
        for (out, row) in xb.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
            kernels::rms_norm(out, row, w.attn_norm);
        }
        let (new_keys, new_values) = (&mut keys[new_kv.clone()], &mut values[new_kv.clone()]);
        let qkv = [&mut **q, &mut *new_keys, new_values];
        k.matmul_each(qkv, [&w.wq, &w.wk, &w.wv], xb, scratch);

        // Rotate q and k by their positions (RoPE), so attention scores depend on distance.
        for ((q_row, k_row), table) in q
            .chunks_exact_mut(dim)
            .zip(new_keys.chunks_exact_mut(kv_dim))
            .zip(rope.chunks_exact(half_head))
        {
            kernels::rope(q_row, table);
            kernels::rope(k_row, table);
        }

        // Each position attends over the cache up to and including itself; the heads' outputs
        // are concatenated into xb (m, dim).
        let cached = ..(start + m) * kv_dim;
        let shape = attention_shape(c);
        k.attention(
            xb,
            q,
            &keys[cached],
            &values[cached],
            scores,
            xb2,
            start,
            shape,
        );

        // Output projection, then the residual connection.
        k.matmul_each([&mut **xb2], [&w.wo], xb, scratch);
        kernels::add_in_place(x, xb2);

        // Feed-forward block: normalise, then w2(silu(w1 x) * w3 x), (m, hidden_dim) inside.
        for (out, row) in xb.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
            kernels::rms_norm(out, row, w.ffn_norm);
        }
        k.matmul_each([&mut **hb, &mut **hb2], [&w.w1, &w.w3], xb, scratch);
        // SwiGLU calls `exp` per value: a prompt's batch spreads its rows over the threads.
        let hidden = hb.len() / m;
        kernels::parallel::for_each_block_of_rows(
            [&mut **hb],
            hidden,
            hidden * 8,
            |_, first, gate| {
                kernels::swiglu(gate, &hb2[first * hidden..][..gate.len()]);
            },
        );
        k.matmul_each([&mut **xb], [&w.w2], hb, scratch);
        kernels::add_in_place(x, xb);
    }

    /// The classifier for a chunk of `m` positions whose final-normed residual stream is in
    /// `state.rows.xb`: into rows `first..first + m` of the batch logits for [`Logits::All`], or
    /// into the state's logits for the last of `n` positions with [`Logits::Last`].
    fn classify_chunk(&self, state: &mut State, m: usize, first: usize, n: usize, which: Logits) {
        let (dim, vocab_size) = (self.config().dim, self.config().vocab_size);
        let RowBuffers {
            xb,
            scratch,
            logits,
            ..
        } = &mut state.rows;
        let classifier = self.classifier();
        match which {
            Logits::All => {
                let rows = &mut logits[first * vocab_size..(first + m) * vocab_size];
                let xs = &xb[..m * dim];
                self.kernels.matmul_each([rows], [&classifier], xs, scratch);
            }
            Logits::Last if first + m == n => {
                let last = &xb[(m - 1) * dim..m * dim];
                let logits = &mut state.logits[..];
                self.kernels
                    .matmul_each([logits], [&classifier], last, scratch);
            }
            Logits::Last => {}
        }
    }
}

/// Models whose largest matrix has fewer weights than this skip timing the fast kernels: a
/// product that small takes microseconds whichever kernel runs it.
const TUNE_MIN_WEIGHTS: usize = 1 << 20;
/// Models larger than this are taken to be read from memory when decoding, not from the caches.
#[cfg(feature = "std")]
const CACHED_MODEL_BYTES: usize = 16 << 20;
/// How long choosing the fast kernel may take.
#[cfg(feature = "std")]
const TUNE_BUDGET: Duration = tune::DEFAULT_BUDGET;

/// Which logits [`Model::forward_batch`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's, `(vocab_size,)`: all that sampling the next token needs.
    Last,
    /// Every position's, `(tokens, vocab_size)`, for chat mode and evaluation.
    All,
}

/// How many positions go through the layers together in a batched forward pass. Larger batches
/// read the weights fewer times; smaller ones keep the batch's activations in the caches.
const BATCH_CHUNK: usize = 128;

/// Everything that changes while running one sequence: the KV cache and activation buffers.
pub struct State {
    /// Output logits of the last position, `(vocab_size,)`.
    logits: Vec<f32>,
    /// Keys and values of every position so far, per layer.
    kv_cache: KvCache,
    /// Activations of the positions going through the model, one row per position.
    rows: RowBuffers,
    /// The shape of the model this state was made for.
    config: Config,
}

/// The activations of the positions going through the layers together (one when decoding, a
/// chunk of a prompt otherwise), one row per position. Grown to the largest chunk and kept.
#[derive(Default)]
struct RowBuffers {
    /// Residual stream, normalised input (then attention output), projection output and
    /// queries, `(m, dim)` each.
    x: Vec<f32>,
    xb: Vec<f32>,
    xb2: Vec<f32>,
    q: Vec<f32>,
    /// Feed-forward gate and up projection, `(m, hidden_dim)` each.
    hb: Vec<f32>,
    hb2: Vec<f32>,
    /// RoPE `(cos, sin)` per position, `(m, head_dim / 2)`.
    rope: Vec<(f32, f32)>,
    /// Attention scores, `(m, n_heads, positions)`.
    scores: Vec<f32>,
    /// Scratch of the matrix products: the input transposed or quantized, the output transposed.
    scratch: MatmulScratch,
    /// Logits of every position, `(tokens, vocab_size)`, for [`Logits::All`].
    logits: Vec<f32>,
}

/// The first `m` rows of each of a [`RowBuffers`]' activations: what one layer works on.
struct Rows<'a> {
    x: &'a mut [f32],
    xb: &'a mut [f32],
    xb2: &'a mut [f32],
    q: &'a mut [f32],
    hb: &'a mut [f32],
    hb2: &'a mut [f32],
    rope: &'a mut [(f32, f32)],
    scores: &'a mut [f32],
    scratch: &'a mut MatmulScratch,
}

impl RowBuffers {
    /// Make room for chunks of up to `m` positions attending over up to `positions` positions,
    /// and for the logits of `logits_rows` positions. `what` names the buffers in errors.
    fn reserve(
        &mut self,
        c: &Config,
        m: usize,
        positions: usize,
        logits_rows: usize,
        what: impl Fn() -> String,
    ) -> Result<()> {
        for buffer in [&mut self.x, &mut self.xb, &mut self.xb2, &mut self.q] {
            grow(buffer, m * c.dim, &what)?;
        }
        grow(&mut self.hb, m * c.hidden_dim, &what)?;
        grow(&mut self.hb2, m * c.hidden_dim, &what)?;
        grow(&mut self.scores, m * c.n_heads * positions, &what)?;
        // The widest products: q, k and v together, w1 and w3 together, or the classifier.
        let widest = (c.dim + 2 * c.kv_dim()).max(2 * c.hidden_dim);
        let widest = if logits_rows > 0 {
            widest.max(c.vocab_size)
        } else {
            widest
        };
        let (xs_t, out_t) = MatmulScratch::lengths(m, c.dim.max(c.hidden_dim), widest);
        grow(&mut self.scratch.xs_t, xs_t, &what)?;
        grow(&mut self.scratch.out_t, out_t, &what)?;
        grow(&mut self.logits, logits_rows * c.vocab_size, &what)?;
        if self.rope.len() < m * c.head_dim() / 2 {
            self.rope.resize(m * c.head_dim() / 2, (0.0, 0.0));
        }
        Ok(())
    }

    /// The first `m` rows of every buffer (which must have room for them).
    fn first(&mut self, c: &Config, m: usize) -> Rows<'_> {
        Rows {
            x: &mut self.x[..m * c.dim],
            xb: &mut self.xb[..m * c.dim],
            xb2: &mut self.xb2[..m * c.dim],
            q: &mut self.q[..m * c.dim],
            hb: &mut self.hb[..m * c.hidden_dim],
            hb2: &mut self.hb2[..m * c.hidden_dim],
            rope: &mut self.rope[..m * c.head_dim() / 2],
            scores: &mut self.scores,
            scratch: &mut self.scratch,
        }
    }
}

impl State {
    fn new(model: &Model, positions: usize) -> Result<State> {
        let c = model.config();
        let what = |buffer: &str| format!("{buffer} of model {}", model.name());
        // The position-sized buffers first: they are the ones a huge seq_len makes impossible,
        // and reserving them touches no memory.
        let kv_what = what(&format!("the KV cache ({positions} positions)"));
        let kv_cache = KvCache::new(c, positions, &kv_what)?;
        let mut rows = RowBuffers {
            scores: reserve(
                c.n_heads.checked_mul(positions),
                &what(&format!("attention scores ({positions} positions)")),
            )?,
            ..RowBuffers::default()
        };
        // Room for decoding one position at a time.
        rows.reserve(c, 1, 0, 0, || what("activations"))?;
        Ok(State {
            logits: zeros(c.vocab_size, &what("logits"))?,
            kv_cache,
            rows,
            config: *c,
        })
    }

    /// Number of positions whose keys and values are in the cache.
    pub fn len(&self) -> usize {
        self.kv_cache.positions
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most positions this state can hold.
    pub fn capacity(&self) -> usize {
        self.kv_cache.capacity
    }

    /// The logits of the last forward pass.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// The logits of the last forward pass, for a sampler to overwrite.
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.logits
    }

    /// Forget every position, to start a new sequence with the same buffers.
    pub fn reset(&mut self) {
        self.kv_cache.positions = 0;
    }
}

/// Keys and values of every processed position, one pair of growing buffers per layer, each
/// `(positions, kv_dim)`. Room for `capacity` positions is reserved up front, so pushing never
/// reallocates, but pages are only touched as positions are written.
struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
    positions: usize,
    capacity: usize,
}

impl KvCache {
    fn new(c: &Config, capacity: usize, what: &str) -> Result<KvCache> {
        let kv_dim = c.kv_dim();
        // Keys and values of every layer. Each buffer is reserved separately, so check that the
        // whole could even be addressed before reserving any of it.
        let total_bytes = kv_dim as u128 * capacity as u128 * 4 * 2 * c.n_layers as u128;
        let out_of_memory = || Error::OutOfMemory {
            what: what.to_string(),
            bytes: total_bytes,
        };
        if total_bytes > isize::MAX as u128 {
            return Err(out_of_memory());
        }
        let per_layer = kv_dim.checked_mul(capacity);
        let reserve = || reserve(per_layer, what).map_err(|_| out_of_memory());
        let mut keys = Vec::with_capacity(c.n_layers);
        let mut values = Vec::with_capacity(c.n_layers);
        for _ in 0..c.n_layers {
            keys.push(reserve()?);
            values.push(reserve()?);
        }
        Ok(KvCache {
            keys,
            values,
            kv_dim,
            positions: 0,
            capacity,
        })
    }

    /// Make room for `n` positions from `start` on (dropping any positions after them) and count
    /// them as filled. Nothing changes if they do not fit or skip ahead.
    fn start_positions(&mut self, start: usize, n: usize) -> Result<()> {
        self.check_room(start, n)?;
        let end = start + n;
        let len = end * self.kv_dim;
        for buffer in self.keys.iter_mut().chain(self.values.iter_mut()) {
            buffer.resize(len, 0.0);
        }
        self.positions = end;
        Ok(())
    }

    /// Check that `n` positions from `start` on fit and follow the positions already filled.
    fn check_room(&self, start: usize, n: usize) -> Result<()> {
        let end = start.saturating_add(n);
        if end > self.capacity {
            return Err(Error::input(format!(
                "position {} is beyond the context of {} positions",
                end - 1,
                self.capacity
            )));
        }
        if start > self.positions {
            return Err(Error::input(format!(
                "position {start} skips ahead: only {} positions have been processed",
                self.positions
            )));
        }
        Ok(())
    }

    fn layer_mut(&mut self, l: usize) -> (&mut [f32], &mut [f32]) {
        (&mut self.keys[l], &mut self.values[l])
    }
}

/// Copy the scales of every int8 tensor whose scales cannot be borrowed as `f32` in place.
fn copy_misaligned_scales(checkpoint: &Checkpoint) -> BTreeMap<usize, Vec<f32>> {
    let mut copies = BTreeMap::new();
    let Format::Int8V2 { group_size } = checkpoint.format else {
        return copies;
    };
    let layout = &checkpoint.layout;
    let mut ranges = vec![layout.token_embedding, layout.classifier];
    for l in &layout.layers {
        ranges.extend([l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3]);
    }
    for range in ranges {
        if let Some(offset) = range.scales {
            if !checkpoint.storage.is_f32_aligned(offset) {
                let scales = checkpoint.storage.read_f32s(offset, range.len / group_size);
                copies.insert(offset, scales);
            }
        }
    }
    copies
}

/// The shapes attention needs, from the model's hyperparameters.
fn attention_shape(c: &Config) -> AttentionShape {
    AttentionShape {
        n_heads: c.n_heads,
        kv_mul: c.kv_mul(),
        head_dim: c.head_dim(),
        kv_dim: c.kv_dim(),
    }
}

/// Grow `buffer` to at least `len` floats, or return an error instead of aborting if memory
/// runs out.
fn grow(buffer: &mut Vec<f32>, len: usize, what: &impl Fn() -> String) -> Result<()> {
    if buffer.len() < len {
        buffer
            .try_reserve_exact(len - buffer.len())
            .map_err(|_| Error::OutOfMemory {
                what: what(),
                bytes: len as u128 * 4,
            })?;
        buffer.resize(len, 0.0);
    }
    Ok(())
}

/// A zeroed buffer of `len` floats, or an error instead of an abort if memory runs out.
fn zeros(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut buffer = reserve(Some(len), what)?;
    buffer.resize(len, 0.0);
    Ok(buffer)
}

/// An empty buffer with room for `len` floats (`None`: more than `usize` can count), or an error
/// instead of an abort if they cannot be reserved. Reserving touches no memory.
fn reserve(len: Option<usize>, what: &str) -> Result<Vec<f32>> {
    let out_of_memory = || Error::OutOfMemory {
        what: what.to_string(),
        bytes: len.map_or(u128::MAX, |n| n as u128 * 4),
    };
    let len = len.ok_or_else(out_of_memory)?;
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| out_of_memory())?;
    Ok(buffer)
}
