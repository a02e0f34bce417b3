//! # Start here: the whole model in plain Rust
//!
//! This module is Llama 2 written out once, as plainly as llama2.c's `run.c` writes it: read
//! a checkpoint, then run one token through the network and get the scores of the next token.
//! Every function fits on a screen and says the shapes of its tensors. Read it top to bottom:
//!
//! 1. [`parse`] turns the bytes of a llama2.c checkpoint into [`Weights`].
//! 2. The building blocks: [`matmul`], [`rmsnorm`], [`rope`], [`softmax`], [`attention_head`]
//!    and [`swiglu`].
//! 3. [`forward`] puts them together for one position, with a [`KvCache`] holding the keys and
//!    values of the positions before it, and returns the logits (and, for pictures, every
//!    head's attention weights).
//!
//! ```
//! use llama2::reference::{forward, parse, KvCache};
//!
//! # fn main() -> llama2::Result<()> {
//! let bytes = std::fs::read("tests/models/stories260K.bin").unwrap();
//! let weights = parse(&bytes)?;
//! let mut cache = KvCache::new(&weights.config);
//! let out = forward(&weights, &mut cache, 1, 0)?; // BOS at position 0
//! assert_eq!(out.logits.len(), weights.config.vocab_size);
//! assert_eq!(out.attention[0][0], [1.0]); // the first position sees only itself
//! # Ok(())
//! # }
//! ```
//!
//! ## How it maps to the paper
//!
//! Llama 2 (Touvron et al., 2023) is the decoder-only Transformer of *Attention Is All You
//! Need* (Vaswani et al., 2017) with four changes, each one function here:
//!
//! * **RMSNorm before each block** ([`rmsnorm`]; Zhang and Sennrich, 2019) instead of
//!   LayerNorm after it: `x + Attention(norm(x))`, then `x + FeedForward(norm(x))`.
//! * **Rotary position embeddings** ([`rope`]; Su et al., 2021): no position vectors are added
//!   to the input; each query and key is rotated by an angle proportional to its position, so
//!   their dot product depends on how far apart they are.
//! * **SwiGLU feed-forward** ([`swiglu`]; Shazeer, 2020): `W2 (silu(W1 x) * W3 x)`.
//! * **Grouped-query attention** ([`attention_head`]; Ainslie et al., 2023): several query
//!   heads share one key/value head, which shrinks the cache.
//!
//! One position of the whole network, in the paper's notation:
//!
//! ```text
//! x      = embedding[token]
//! for each layer:
//!     h  = rmsnorm(x)
//!     q, k, v = rope(Wq h), rope(Wk h), Wv h          (k and v appended to the cache)
//!     x  = x + Wo [softmax(q_i K_i^T / sqrt(head_size)) V_i  for each head i]
//!     h  = rmsnorm(x)
//!     x  = x + W2 (silu(W1 h) * W3 h)
//! logits = W_cls rmsnorm(x)
//! ```
//!
//! ## Same bits as llama2.c
//!
//! Every sum runs in `run.c`'s order and the transcendental functions are the C library's (see
//! the small `c_math` section), so for float checkpoints the logits here are `run.c`'s, bit for
//! bit, and for int8 checkpoints whose groups align with rows they are `runq.c`'s. The tests
//! hold the fast forward pass ([`crate::Model`]) to this module, bit for bit.
//!
//! ## What it is not
//!
//! Not fast: one thread, no SIMD, no batching, a fresh vector for every intermediate result.
//! It shares no code with the fast path (`model`, `kernels`, `quant`, `checkpoint`): a formula
//! wrong there is not wrong here too. It needs only `core` and `alloc` (plus six C maths
//! functions, see `c_math`), no files and no threads, so it can move into a `no_std` core.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::Config;

// ----------------------------------------------------------------------------
// The weights

/// A weight matrix of shape `(rows, cols)`, stored row after row: `out = W x` takes `cols`
/// inputs to `rows` outputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Matrix {
    /// float32 values (legacy and version 1 files).
    F32(Vec<f32>),
    /// int8 values in groups that share a scale (version 2 files).
    Q8(Q8Matrix),
}

/// An int8 matrix as `export.py` writes it: the flattened matrix cut into groups of
/// `group_size` consecutive values; value `e` stands for `values[e] * scales[e / group_size]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Q8Matrix {
    /// `rows * cols` int8 values.
    pub values: Vec<i8>,
    /// One scale per group.
    pub scales: Vec<f32>,
    /// Values per group.
    pub group_size: usize,
}

/// The weights of one transformer block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layer {
    /// RMSNorm weights before attention, `(dim,)`.
    pub attn_norm: Vec<f32>,
    /// Query projection, `(dim, dim)`.
    pub wq: Matrix,
    /// Key projection, `(kv_dim, dim)`.
    pub wk: Matrix,
    /// Value projection, `(kv_dim, dim)`.
    pub wv: Matrix,
    /// Attention output projection, `(dim, dim)`.
    pub wo: Matrix,
    /// RMSNorm weights before the feed-forward block, `(dim,)`.
    pub ffn_norm: Vec<f32>,
    /// Feed-forward gate, `(hidden_dim, dim)`.
    pub w1: Matrix,
    /// Feed-forward down projection, `(dim, hidden_dim)`.
    pub w2: Matrix,
    /// Feed-forward up projection, `(hidden_dim, dim)`.
    pub w3: Matrix,
}

impl Default for Matrix {
    fn default() -> Matrix {
        Matrix::F32(Vec::new())
    }
}

/// Every weight of a model. [`parse`] guarantees that the shapes agree with `config`;
/// [`forward`] panics on weights built by hand whose shapes do not.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// The hyperparameters.
    pub config: Config,
    /// One row of `dim` values per token, `(vocab_size, dim)`; dequantized for int8 files, as
    /// `runq.c` does.
    pub token_embedding: Vec<f32>,
    /// The transformer blocks, first to last.
    pub layers: Vec<Layer>,
    /// RMSNorm weights before the classifier, `(dim,)`.
    pub final_norm: Vec<f32>,
    /// The classifier, `(vocab_size, dim)`: a copy of the embedding when the file shares them.
    pub classifier: Matrix,
}

// ----------------------------------------------------------------------------
// Reading a checkpoint

/// `"ak42"` as a little-endian `u32`: the first four bytes of version 1 and 2 files.
const MAGIC: u32 = 0x616b_3432;

/// Parse a llama2.c checkpoint held in memory: the legacy format `run.c` reads, version 1
/// (float32 with a 256-byte header) or version 2 (int8, what `runq.c` reads).
///
/// The layouts, all little-endian:
/// * legacy: 7 `i32` (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a
///   negative vocab_size means an unshared classifier), then the embedding, the per-layer
///   tensors kind by kind (attention norms, wq, wk, wv, wo, ffn norms, w1, w2, w3), the final
///   norm, two obsolete RoPE tables of `(seq_len, head_size / 2)`, and the classifier if unshared.
/// * version 1: magic, version 1, the 7 `i32`, a shared-classifier byte, zeros up to 256 bytes;
///   then attention norms, ffn norms, final norm, embedding, wq, wk, wv, wo, w1, w2, w3,
///   classifier if unshared.
/// * version 2: as version 1 with an `i32` group size after the flag byte; the norms stay
///   float32 and each matrix is its int8 values followed by its float32 group scales.
pub fn parse(bytes: &[u8]) -> Result<Weights> {
    let mut r = Reader { bytes, at: 0 };
    let (config, storage) = read_header(&mut r)?;
    let weights = match storage {
        Storage::Legacy => read_legacy(&mut r, config)?,
        _ => read_versioned(&mut r, config, storage)?,
    };
    if r.at != bytes.len() {
        let extra = bytes.len() - r.at;
        return Err(bad(alloc::format!("{extra} bytes after the last tensor")));
    }
    Ok(weights)
}

/// How a file stores its tensors.
#[derive(Clone, Copy, PartialEq)]
enum Storage {
    Legacy,
    Float32,
    Int8 { group_size: usize },
}

fn read_header(r: &mut Reader) -> Result<(Config, Storage)> {
    let versioned = r.bytes.get(..4) == Some(&MAGIC.to_le_bytes()[..]);
    let mut storage = Storage::Legacy;
    if versioned {
        r.take(4)?; // the magic
        storage = match r.i32()? {
            1 => Storage::Float32,
            2 => Storage::Int8 { group_size: 0 }, // read below
            v => return Err(bad(alloc::format!("version {v}, expected 1 or 2"))),
        };
    }
    let mut fields = [0i32; 7];
    for field in &mut fields {
        *field = r.i32()?;
    }
    let shared_classifier = if versioned {
        r.take(1)?[0] == 1
    } else {
        let shared = fields[5] > 0;
        fields[5] = fields[5].saturating_abs();
        shared
    };
    if let Storage::Int8 { group_size } = &mut storage {
        *group_size = positive(r.i32()?, "group size")?;
    }
    if versioned {
        r.at = 256; // the rest of the header is padding
    }
    let [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len] = fields;
    let config = Config {
        dim: positive(dim, "dim")?,
        hidden_dim: positive(hidden_dim, "hidden_dim")?,
        n_layers: positive(n_layers, "n_layers")?,
        n_heads: positive(n_heads, "n_heads")?,
        n_kv_heads: positive(n_kv_heads, "n_kv_heads")?,
        vocab_size: positive(vocab_size, "vocab_size")?,
        seq_len: positive(seq_len, "seq_len")?,
        shared_classifier,
    };
    // Whole heads of an even size (RoPE rotates pairs), shared by whole groups of query heads.
    let c = &config;
    let heads_fit = c.dim.is_multiple_of(c.n_heads) && c.n_heads.is_multiple_of(c.n_kv_heads);
    if !heads_fit || !(c.dim / c.n_heads).is_multiple_of(2) {
        let (dim, heads, kv_heads) = (c.dim, c.n_heads, c.n_kv_heads);
        let problem = alloc::format!(
            "dim {dim} does not split into {heads} even heads sharing {kv_heads} key/value heads"
        );
        return Err(bad(problem));
    }
    Ok((config, storage))
}

fn read_legacy(r: &mut Reader, c: Config) -> Result<Weights> {
    let (dim, hidden, kv_dim) = (c.dim, c.hidden_dim, c.dim / c.n_heads * c.n_kv_heads);
    let token_embedding = r.f32s(c.vocab_size, dim)?;
    let mut layers = Vec::new();
    for _ in 0..c.n_layers {
        let attn_norm = r.f32s(1, dim)?;
        layers.push(Layer {
            attn_norm,
            ..Layer::default()
        });
    }
    for l in &mut layers {
        l.wq = Matrix::F32(r.f32s(dim, dim)?)
    }
    for l in &mut layers {
        l.wk = Matrix::F32(r.f32s(kv_dim, dim)?)
    }
    for l in &mut layers {
        l.wv = Matrix::F32(r.f32s(kv_dim, dim)?)
    }
    for l in &mut layers {
        l.wo = Matrix::F32(r.f32s(dim, dim)?)
    }
    for l in &mut layers {
        l.ffn_norm = r.f32s(1, dim)?
    }
    for l in &mut layers {
        l.w1 = Matrix::F32(r.f32s(hidden, dim)?)
    }
    for l in &mut layers {
        l.w2 = Matrix::F32(r.f32s(dim, hidden)?)
    }
    for l in &mut layers {
        l.w3 = Matrix::F32(r.f32s(hidden, dim)?)
    }
    let final_norm = r.f32s(1, dim)?;
    // The obsolete freq_cis_real and freq_cis_imag tables: RoPE is computed, not read.
    r.f32s(c.seq_len, dim / c.n_heads / 2)?;
    r.f32s(c.seq_len, dim / c.n_heads / 2)?;
    let classifier = match c.shared_classifier {
        true => Matrix::F32(token_embedding.clone()),
        false => Matrix::F32(r.f32s(c.vocab_size, dim)?),
    };
    Ok(Weights {
        config: c,
        token_embedding,
        layers,
        final_norm,
        classifier,
    })
}

fn read_versioned(r: &mut Reader, c: Config, storage: Storage) -> Result<Weights> {
    let (dim, hidden, kv_dim) = (c.dim, c.hidden_dim, c.dim / c.n_heads * c.n_kv_heads);
    let matrix = |r: &mut Reader, rows: usize, cols: usize| match storage {
        Storage::Int8 { group_size } => r.q8(rows, cols, group_size).map(Matrix::Q8),
        _ => r.f32s(rows, cols).map(Matrix::F32),
    };
    let mut layers = Vec::new();
    for _ in 0..c.n_layers {
        let attn_norm = r.f32s(1, dim)?;
        layers.push(Layer {
            attn_norm,
            ..Layer::default()
        });
    }
    for l in &mut layers {
        l.ffn_norm = r.f32s(1, dim)?
    }
    let final_norm = r.f32s(1, dim)?;
    let embedding = matrix(r, c.vocab_size, dim)?;
    for l in &mut layers {
        l.wq = matrix(r, dim, dim)?
    }
    for l in &mut layers {
        l.wk = matrix(r, kv_dim, dim)?
    }
    for l in &mut layers {
        l.wv = matrix(r, kv_dim, dim)?
    }
    for l in &mut layers {
        l.wo = matrix(r, dim, dim)?
    }
    for l in &mut layers {
        l.w1 = matrix(r, hidden, dim)?
    }
    for l in &mut layers {
        l.w2 = matrix(r, dim, hidden)?
    }
    for l in &mut layers {
        l.w3 = matrix(r, hidden, dim)?
    }
    let classifier = match c.shared_classifier {
        true => embedding.clone(),
        false => matrix(r, c.vocab_size, dim)?,
    };
    let token_embedding = match embedding {
        Matrix::F32(table) => table,
        Matrix::Q8(q) => dequantize(&q),
    };
    Ok(Weights {
        config: c,
        token_embedding,
        layers,
        final_norm,
        classifier,
    })
}

/// Reads consecutive little-endian values, never past the end of the bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let wanted = self.at.saturating_add(n);
        let end = end.ok_or_else(|| bad(alloc::format!("file ends before byte {wanted}")))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A float tensor of shape `(rows, cols)`.
    fn f32s(&mut self, rows: usize, cols: usize) -> Result<Vec<f32>> {
        let bytes = self.take(size(&[rows, cols, 4])?)?;
        let floats = bytes.chunks_exact(4);
        Ok(floats
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// An int8 tensor of shape `(rows, cols)`: the values, then one float32 scale per group.
    fn q8(&mut self, rows: usize, cols: usize, group_size: usize) -> Result<Q8Matrix> {
        let n = size(&[rows, cols])?;
        if n % group_size != 0 {
            return Err(bad(alloc::format!(
                "group size {group_size} does not divide {n} values"
            )));
        }
        let values = self.take(n)?.iter().map(|&b| b as i8).collect();
        let scales = self.f32s(n / group_size, 1)?;
        Ok(Q8Matrix {
            values,
            scales,
            group_size,
        })
    }
}

/// The product of `factors`, or an error if it does not fit in memory.
fn size(factors: &[usize]) -> Result<usize> {
    let product = factors.iter().try_fold(1usize, |p, &f| p.checked_mul(f));
    product.ok_or_else(|| {
        bad(String::from(
            "the header implies a tensor too large for memory",
        ))
    })
}

fn positive(value: i32, name: &str) -> Result<usize> {
    match value {
        1.. => Ok(value as usize),
        _ => Err(bad(alloc::format!(
            "header field {name} is {value}, expected a positive number"
        ))),
    }
}

fn bad(problem: String) -> Error {
    Error::Checkpoint {
        name: String::from("<memory>"),
        problem,
    }
}

/// The float values an int8 tensor stands for: `values[e] * scales[e / group_size]`.
pub fn dequantize(w: &Q8Matrix) -> Vec<f32> {
    let scale_of = |e: usize| w.scales[e / w.group_size];
    w.values
        .iter()
        .enumerate()
        .map(|(e, &v)| v as f32 * scale_of(e))
        .collect()
}

// ----------------------------------------------------------------------------
// The C library's maths

/// The C maths functions `run.c` and `runq.c` call, by their C names. For `exp`, `pow`, `cos`
/// and `sin`, Rust's `f32` methods call the same C library functions, which is why the bits
/// agree with llama2.c's; square roots and rounding are exact everywhere. These are the only
/// functions of this module that need `std`; a `no_std` build would take them from
/// [`crate::math`].
mod c_math {
    #[allow(unused_imports)]
    use crate::prelude::*;

    pub fn expf(x: f32) -> f32 {
        x.exp()
    }
    pub fn sqrtf(x: f32) -> f32 {
        x.sqrt() // correctly rounded everywhere
    }
    pub fn powf(x: f32, y: f32) -> f32 {
        x.powf(y)
    }
    pub fn cosf(x: f32) -> f32 {
        x.cos()
    }
    pub fn sinf(x: f32) -> f32 {
        x.sin()
    }
    /// Round half away from zero, like C's `round`.
    pub fn roundf(x: f32) -> f32 {
        x.round()
    }
}

use c_math::{cosf, expf, powf, roundf, sinf, sqrtf};

// ----------------------------------------------------------------------------
// The building blocks

/// `W x` for `W` of shape `(rows, x.len())`: one output per row.
pub fn matmul(w: &Matrix, x: &[f32], rows: usize) -> Vec<f32> {
    match w {
        Matrix::F32(w) => matmul_f32(w, x, rows),
        Matrix::Q8(w) if x.len().is_multiple_of(w.group_size) => matmul_q8(w, x, rows),
        Matrix::Q8(w) => matmul_q8_straddling(w, x, rows),
    }
}

/// Float `W x`, each row summed from left to right, as `run.c` does.
pub fn matmul_f32(w: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
    let n = x.len();
    let mut out = vec![0.0f32; rows]; // (rows,)
    for (i, o) in out.iter_mut().enumerate() {
        let row = &w[i * n..(i + 1) * n]; // (n,)
        let mut sum = 0.0f32;
        for j in 0..n {
            sum += row[j] * x[j];
        }
        *o = sum;
    }
    out
}

/// `runq.c`'s int8 `W x` for rows that start on a group boundary: `x` is quantized in the same
/// groups as the weights ([`quantize`]); each group's dot product is an exact integer sum, then
/// `sum += (group_sum * weight_scale) * x_scale`, group after group.
pub fn matmul_q8(w: &Q8Matrix, x: &[f32], rows: usize) -> Vec<f32> {
    let (n, gs) = (x.len(), w.group_size);
    let (xq, xs) = quantize(x, gs); // (n,) int8 values, (n / gs,) scales
    let mut out = vec![0.0f32; rows];
    for (i, o) in out.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for (g, &x_scale) in xs.iter().enumerate() {
            let (row_start, x_start) = (i * n + g * gs, g * gs);
            // i64 so that no group size can overflow; every real group fits runq.c's int32.
            let mut group_sum = 0i64;
            for k in 0..gs {
                group_sum += w.values[row_start + k] as i64 * xq[x_start + k] as i64;
            }
            sum += group_sum as f32 * w.scales[row_start / gs] * x_scale;
        }
        *o = sum;
    }
    out
}

/// Int8 `W x` when rows do *not* start on group boundaries (`x.len()` not a multiple of the
/// group size), so a group can straddle two rows.
///
/// `runq.c` is wrong here: its loop assumes every row starts a group, so it pairs values with
/// the scales of other groups and drops each row's tail. This is the correct product instead:
/// each stretch of a row that lies in one group is summed in float against `x` (not quantized)
/// and scaled by that group's scale, which is float maths on the dequantized weights.
pub fn matmul_q8_straddling(w: &Q8Matrix, x: &[f32], rows: usize) -> Vec<f32> {
    let (n, gs) = (x.len(), w.group_size);
    let mut out = vec![0.0f32; rows];
    for (i, o) in out.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        let mut e = i * n; // index of a value in the flattened matrix
        while e < (i + 1) * n {
            let stretch_end = ((e / gs + 1) * gs).min((i + 1) * n);
            let mut partial = 0.0f32;
            for k in e..stretch_end {
                partial += w.values[k] as f32 * x[k - i * n];
            }
            sum += partial * w.scales[e / gs];
            e = stretch_end;
        }
        *o = sum;
    }
    out
}

/// `runq.c`'s activation quantization, per group of `group_size` values: `scale = max|x| /
/// 127` and `q = round(x / scale)` (half away from zero). Returns `(q, scales)`. An all-zero
/// group has scale 0 and values 0 (C would convert a NaN there, which is undefined).
pub fn quantize(x: &[f32], group_size: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(x.len() / group_size);
    for group in x.chunks_exact(group_size) {
        let mut max = 0.0f32;
        for &v in group {
            if v.abs() > max {
                max = v.abs();
            }
        }
        let scale = max / 127.0;
        scales.push(scale);
        for &v in group {
            // `as` turns the NaN of 0/0 into 0; the clamp keeps the symmetric int8 range.
            q.push(roundf(v / scale).clamp(-127.0, 127.0) as i8);
        }
    }
    (q, scales)
}

/// RMSNorm: `weight * x / sqrt(mean(x²) + 1e-5)`. `x` and `weight` are `(dim,)`.
pub fn rmsnorm(x: &[f32], weight: &[f32]) -> Vec<f32> {
    let mut sum_of_squares = 0.0f32;
    for &v in x {
        sum_of_squares += v * v;
    }
    let mean = sum_of_squares / x.len() as f32;
    let scale = 1.0 / sqrtf(mean + 1e-5);
    x.iter()
        .zip(weight)
        .map(|(&v, &w)| w * (scale * v))
        .collect()
}

/// Rotary position embedding, in place: each pair `(v[i], v[i+1])` of every head is rotated by
/// the angle `pos * 10000^(-j / head_size)`, where `j = i mod head_size` is the pair's even
/// index within its head. `v` is `(n_heads * head_size,)`: the query, or the key.
pub fn rope(v: &mut [f32], pos: usize, head_size: usize) {
    for i in (0..v.len()).step_by(2) {
        let j = i % head_size;
        let frequency = 1.0 / powf(10000.0, j as f32 / head_size as f32);
        let angle = pos as f32 * frequency;
        let (cos, sin) = (cosf(angle), sinf(angle));
        let (v0, v1) = (v[i], v[i + 1]);
        v[i] = v0 * cos - v1 * sin;
        v[i + 1] = v0 * sin + v1 * cos;
    }
}

/// Softmax in place: `x[i] = exp(x[i] - max) / sum_j exp(x[j] - max)`. Subtracting the
/// largest value first keeps `exp` from overflowing and does not change the result.
pub fn softmax(x: &mut [f32]) {
    let Some(&first) = x.first() else {
        return; // nothing to normalize
    };
    let mut max = first;
    for &v in &x[1..] {
        if v > max {
            max = v;
        }
    }
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = expf(*v - max);
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// One attention head for the newest position. `q` is the head's query, `(head_size,)`;
/// `keys` and `values` are one layer's cache, `(positions, kv_dim)`, of which this head reads
/// the `head_size` columns starting at `kv_offset` (its key/value head, shared with the other
/// query heads of its group). Returns the head's output `(head_size,)` and its attention weights
/// `(positions,)`, which sum to 1.
pub fn attention_head(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    kv_dim: usize,
    kv_offset: usize,
) -> (Vec<f32>, Vec<f32>) {
    let head_size = q.len();
    let positions = keys.len() / kv_dim;
    // How well the query matches each position's key, scaled so the dot products of random
    // vectors stay near unit size whatever the head size.
    let mut weights = vec![0.0f32; positions]; // (positions,)
    for (t, score) in weights.iter_mut().enumerate() {
        let k = &keys[t * kv_dim + kv_offset..][..head_size];
        let mut dot = 0.0f32;
        for i in 0..head_size {
            dot += q[i] * k[i];
        }
        *score = dot / sqrtf(head_size as f32);
    }
    softmax(&mut weights);
    // The output is the weighted sum of the values, summed over positions in order.
    let mut out = vec![0.0f32; head_size]; // (head_size,)
    for (t, &a) in weights.iter().enumerate() {
        let v = &values[t * kv_dim + kv_offset..][..head_size];
        for i in 0..head_size {
            out[i] += a * v[i];
        }
    }
    (out, weights)
}

/// SwiGLU, in place: `gate = silu(gate) * up`, with `silu(g) = g * sigmoid(g)`. Both are
/// `(hidden_dim,)`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let silu = *g * (1.0 / (1.0 + expf(-*g)));
        *g = silu * u;
    }
}

// ----------------------------------------------------------------------------
// The forward pass

/// The keys and values of the positions seen so far, one cache per layer. It grows by one row
/// per position, so memory follows the text rather than `seq_len`.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// `keys[layer]` is `(positions, kv_dim)`: row `t` holds position `t`'s rotated keys.
    pub keys: Vec<Vec<f32>>,
    /// `values[layer]` is `(positions, kv_dim)`.
    pub values: Vec<Vec<f32>>,
    kv_dim: usize,
}

impl KvCache {
    /// An empty cache for a model of this shape.
    pub fn new(config: &Config) -> KvCache {
        KvCache {
            keys: vec![Vec::new(); config.n_layers],
            values: vec![Vec::new(); config.n_layers],
            kv_dim: config.dim / config.n_heads * config.n_kv_heads,
        }
    }

    /// How many positions the cache holds.
    pub fn positions(&self) -> usize {
        self.keys.first().map_or(0, |k| k.len() / self.kv_dim)
    }
}

/// What [`forward`] computes for one position.
#[derive(Clone, Debug)]
pub struct Output {
    /// Unnormalized scores of the next token, `(vocab_size,)`.
    pub logits: Vec<f32>,
    /// `attention[layer][head][t]`: how much that head attended to position `t`, for
    /// `t = 0..=pos`; each head's weights sum to 1.
    pub attention: Vec<Vec<Vec<f32>>>,
}

/// Run `token` at position `pos` through the network: store its keys and values in `cache`,
/// attend over positions `0..=pos`, and return the logits of the next token. Positions come in
/// order; running an earlier position again forgets the positions after it.
///
/// Errors if `token` is not in the vocabulary, `pos` is not below `seq_len`, or `pos` skips
/// positions the cache does not hold. Panics if `cache` or `w` were built by hand for another
/// shape than `w.config`.
pub fn forward(w: &Weights, cache: &mut KvCache, token: u32, pos: usize) -> Result<Output> {
    let c = &w.config;
    if token as usize >= c.vocab_size || pos >= c.seq_len || pos > cache.positions() {
        let problem = alloc::format!(
            "token {token} at position {pos} does not fit (vocabulary {}, context {}, {} positions cached)",
            c.vocab_size,
            c.seq_len,
            cache.positions()
        );
        return Err(Error::InvalidInput(problem));
    }
    let (dim, hidden_dim, head_size) = (c.dim, c.hidden_dim, c.dim / c.n_heads);
    let kv_dim = head_size * c.n_kv_heads;
    let kv_mul = c.n_heads / c.n_kv_heads; // query heads per key/value head

    // The residual stream, (dim,): starts as the token's embedding.
    let t = token as usize;
    let mut x = w.token_embedding[t * dim..(t + 1) * dim].to_vec();
    let mut attention = Vec::with_capacity(c.n_layers);

    for (l, layer) in w.layers.iter().enumerate() {
        // Attention: project, rotate, cache this position's key and value.
        let h = rmsnorm(&x, &layer.attn_norm); // (dim,)
        let mut q = matmul(&layer.wq, &h, dim); // (dim,)
        let mut k = matmul(&layer.wk, &h, kv_dim); // (kv_dim,)
        let v = matmul(&layer.wv, &h, kv_dim); // (kv_dim,)
        rope(&mut q, pos, head_size);
        rope(&mut k, pos, head_size);
        cache.keys[l].truncate(pos * kv_dim);
        cache.keys[l].extend_from_slice(&k);
        cache.values[l].truncate(pos * kv_dim);
        cache.values[l].extend_from_slice(&v);

        // Each query head attends over positions 0..=pos of its key/value head.
        let (keys, values) = (&cache.keys[l], &cache.values[l]); // (pos + 1, kv_dim)
        let mut heads = Vec::with_capacity(dim); // (n_heads * head_size,) = (dim,)
        let mut layer_attention = Vec::with_capacity(c.n_heads);
        for head in 0..c.n_heads {
            let q_head = &q[head * head_size..(head + 1) * head_size];
            let kv_offset = (head / kv_mul) * head_size;
            let (out, weights) = attention_head(q_head, keys, values, kv_dim, kv_offset);
            heads.extend_from_slice(&out);
            layer_attention.push(weights);
        }
        attention.push(layer_attention);
        let attended = matmul(&layer.wo, &heads, dim); // (dim,)
        for (xi, a) in x.iter_mut().zip(attended) {
            *xi += a;
        }

        // Feed-forward: W2 (silu(W1 h) * W3 h).
        let h = rmsnorm(&x, &layer.ffn_norm); // (dim,)
        let mut gate = matmul(&layer.w1, &h, hidden_dim); // (hidden_dim,)
        let up = matmul(&layer.w3, &h, hidden_dim); // (hidden_dim,)
        swiglu(&mut gate, &up);
        let down = matmul(&layer.w2, &gate, dim); // (dim,)
        for (xi, d) in x.iter_mut().zip(down) {
            *xi += d;
        }
    }

    // The classifier reads the normalized residual stream.
    let x = rmsnorm(&x, &w.final_norm);
    let logits = matmul(&w.classifier, &x, c.vocab_size); // (vocab_size,)
    Ok(Output { logits, attention })
}
