//! Writing checkpoints: float tensors out to legacy, version 1 or version 2 (int8) files.
//!
//! [`FloatTensors`] is a model's weights as plain `f32` slices, borrowed from a loaded float
//! model, dequantized from an int8 one, or made up ([`FloatTensors::random`]) for tests and
//! benchmarks that need a model of a given shape without downloading one. The `write_*`
//! functions lay them out exactly as llama2.c's `export.py` does, so `run.c` and `runq.c` read
//! what we write. [`quantize_to_file`] is `llama2 quantize`: a float checkpoint in, an int8 one
//! out, with a group size that keeps every row on group boundaries.
//!
//! Reading checkpoints is [`crate::checkpoint`]'s job, not this module's.

use std::borrow::Cow;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::checkpoint::{tensor_order, Config, FileEntry, Format, MAGIC, VERSIONED_HEADER_BYTES};
use crate::error::{Error, Result};
use crate::model::{Matrix, Model};
use crate::params::{Params, TensorKind};
use crate::quant;
use crate::rng::Rng;

/// The weights of one transformer block as float slices.
#[derive(Clone, Debug)]
pub struct LayerTensors<'a> {
    /// RMSNorm weights before attention, `(dim,)`.
    pub attn_norm: Cow<'a, [f32]>,
    /// Query projection, `(dim, dim)`.
    pub wq: Cow<'a, [f32]>,
    /// Key projection, `(kv_dim, dim)`.
    pub wk: Cow<'a, [f32]>,
    /// Value projection, `(kv_dim, dim)`.
    pub wv: Cow<'a, [f32]>,
    /// Output projection, `(dim, dim)`.
    pub wo: Cow<'a, [f32]>,
    /// RMSNorm weights before the feed-forward block, `(dim,)`.
    pub ffn_norm: Cow<'a, [f32]>,
    /// Feed-forward gate, `(hidden_dim, dim)`.
    pub w1: Cow<'a, [f32]>,
    /// Feed-forward down projection, `(dim, hidden_dim)`.
    pub w2: Cow<'a, [f32]>,
    /// Feed-forward up projection, `(hidden_dim, dim)`.
    pub w3: Cow<'a, [f32]>,
}

/// Every weight of a model as float slices, ready to be written in any format.
#[derive(Clone, Debug)]
pub struct FloatTensors<'a> {
    /// The hyperparameters (`shared_classifier` says whether `classifier` is written).
    pub config: Config,
    /// Token embedding table, `(vocab_size, dim)`.
    pub token_embedding: Cow<'a, [f32]>,
    /// One entry per layer.
    pub layers: Vec<LayerTensors<'a>>,
    /// Final RMSNorm weights, `(dim,)`.
    pub final_norm: Cow<'a, [f32]>,
    /// Classifier `(vocab_size, dim)`; ignored when `config.shared_classifier`.
    pub classifier: Cow<'a, [f32]>,
}

impl<'a> FloatTensors<'a> {
    /// Borrow a float model's weights, or dequantize an int8 model's.
    pub fn from_model(model: &'a Model) -> FloatTensors<'a> {
        let floats = |m: Matrix<'a>| -> Cow<'a, [f32]> {
            match m {
                Matrix::F32 { data, .. } => Cow::Borrowed(data),
                Matrix::Q8(q) => {
                    let mut all = vec![0.0; q.rows * q.cols];
                    for (row, out) in all.chunks_exact_mut(q.cols).enumerate() {
                        q.dequantize_row(row, out);
                    }
                    Cow::Owned(all)
                }
            }
        };
        let layers = (0..model.config().n_layers)
            .map(|l| {
                let w = model.layer(l);
                LayerTensors {
                    attn_norm: Cow::Borrowed(w.attn_norm),
                    wq: floats(w.wq),
                    wk: floats(w.wk),
                    wv: floats(w.wv),
                    wo: floats(w.wo),
                    ffn_norm: Cow::Borrowed(w.ffn_norm),
                    w1: floats(w.w1),
                    w2: floats(w.w2),
                    w3: floats(w.w3),
                }
            })
            .collect();
        let token_embedding = floats(model.token_embedding());
        let classifier = if model.config().shared_classifier {
            token_embedding.clone()
        } else {
            floats(model.classifier())
        };
        FloatTensors {
            config: *model.config(),
            token_embedding,
            layers,
            final_norm: Cow::Borrowed(model.final_norm()),
            classifier,
        }
    }

    /// Borrow the tensors of owned parameters (a training run's weights, say).
    pub fn from_params(p: &'a Params) -> FloatTensors<'a> {
        let get = |kind, layer| Cow::Borrowed(p.get(kind, layer));
        let layers = (0..p.config().n_layers)
            .map(|l| LayerTensors {
                attn_norm: get(TensorKind::AttnNorm, l),
                wq: get(TensorKind::Wq, l),
                wk: get(TensorKind::Wk, l),
                wv: get(TensorKind::Wv, l),
                wo: get(TensorKind::Wo, l),
                ffn_norm: get(TensorKind::FfnNorm, l),
                w1: get(TensorKind::W1, l),
                w2: get(TensorKind::W2, l),
                w3: get(TensorKind::W3, l),
            })
            .collect();
        FloatTensors {
            config: *p.config(),
            token_embedding: get(TensorKind::TokenEmbedding, 0),
            layers,
            final_norm: get(TensorKind::FinalNorm, 0),
            classifier: get(TensorKind::Classifier, 0),
        }
    }

    /// Copy these tensors into owned parameters.
    pub fn to_params(&self) -> Result<Params> {
        self.check_shapes()
            .map_err(|e| Error::input(format!("cannot own these tensors: {e}")))?;
        let mut p = Params::zeros(&self.config)?;
        for info in p.tensors().to_vec() {
            let source = self.tensor(info.kind, info.layer.unwrap_or(0));
            p.data_mut()[info.range()].copy_from_slice(source);
        }
        Ok(p)
    }

    /// The values of tensor `kind` of layer `layer` (ignored for the other kinds); a shared
    /// classifier is the embedding table.
    ///
    /// # Panics
    /// If `layer` is not below the number of layers, for a per-layer kind.
    pub fn tensor(&self, kind: TensorKind, layer: usize) -> &[f32] {
        let l = || &self.layers[layer];
        match kind {
            TensorKind::TokenEmbedding => &self.token_embedding,
            TensorKind::FinalNorm => &self.final_norm,
            TensorKind::Classifier if !self.config.shared_classifier => &self.classifier,
            TensorKind::Classifier => &self.token_embedding,
            TensorKind::AttnNorm => &l().attn_norm,
            TensorKind::Wq => &l().wq,
            TensorKind::Wk => &l().wk,
            TensorKind::Wv => &l().wv,
            TensorKind::Wo => &l().wo,
            TensorKind::FfnNorm => &l().ffn_norm,
            TensorKind::W1 => &l().w1,
            TensorKind::W2 => &l().w2,
            TensorKind::W3 => &l().w3,
        }
    }

    /// Random weights of the given shape, deterministic for a seed: uniform in
    /// `±1/sqrt(fan_in)` for matrices, near 1 for norms. For tests and benchmarks.
    pub fn random(config: Config, seed: u64) -> FloatTensors<'static> {
        let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut uniform = |n: usize, scale: f32| -> Cow<'static, [f32]> {
            Cow::Owned((0..n).map(|_| rng.symmetric() * scale).collect())
        };
        let (dim, hidden, kv_dim) = (config.dim, config.hidden_dim, config.kv_dim());
        let in_dim = 1.0 / (dim as f32).sqrt();
        let in_hidden = 1.0 / (hidden as f32).sqrt();
        let norm = |values: Cow<'static, [f32]>| -> Cow<'static, [f32]> {
            Cow::Owned(values.iter().map(|v| 1.0 + v).collect())
        };
        let layers = (0..config.n_layers)
            .map(|_| LayerTensors {
                attn_norm: norm(uniform(dim, 0.1)),
                wq: uniform(dim * dim, in_dim),
                wk: uniform(kv_dim * dim, in_dim),
                wv: uniform(kv_dim * dim, in_dim),
                wo: uniform(dim * dim, in_dim),
                ffn_norm: norm(uniform(dim, 0.1)),
                w1: uniform(hidden * dim, in_dim),
                w2: uniform(dim * hidden, in_hidden),
                w3: uniform(hidden * dim, in_dim),
            })
            .collect::<Vec<_>>();
        let final_norm = norm(uniform(dim, 0.1));
        let token_embedding = uniform(config.vocab_size * dim, 1.0);
        let classifier = if config.shared_classifier {
            token_embedding.clone()
        } else {
            uniform(config.vocab_size * dim, in_dim)
        };
        FloatTensors {
            config,
            token_embedding,
            layers,
            final_norm,
            classifier,
        }
    }

    /// Check that the header fields fit a file and that every tensor has the length the config
    /// implies, so that what we write is a checkpoint that loads.
    fn check_shapes(&self) -> io::Result<()> {
        let c = &self.config;
        let fields = [
            ("dim", c.dim),
            ("hidden_dim", c.hidden_dim),
            ("n_layers", c.n_layers),
            ("n_heads", c.n_heads),
            ("n_kv_heads", c.n_kv_heads),
            ("vocab_size", c.vocab_size),
            ("seq_len", c.seq_len),
        ];
        for (name, value) in fields {
            if value == 0 || value > i32::MAX as usize {
                return Err(invalid(format!("config field {name} is {value}")));
            }
        }
        if self.layers.len() != c.n_layers {
            return Err(invalid(format!(
                "{} layers of tensors for a config of {} layers",
                self.layers.len(),
                c.n_layers
            )));
        }
        for entry in tensor_order(Format::Legacy, c) {
            let FileEntry::Tensor(kind, layer) = entry else {
                continue;
            };
            let (rows, cols) = kind.shape(c);
            let (tensor, len) = (
                self.tensor(kind, layer.unwrap_or(0)),
                rows.saturating_mul(cols),
            );
            if tensor.len() != len {
                return Err(invalid(format!(
                    "tensor {} has {} values, its shape needs {len}",
                    kind.name(),
                    tensor.len()
                )));
            }
        }
        Ok(())
    }
}

fn write_f32s(out: &mut impl Write, values: &[f32]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    out.write_all(&bytes)
}

fn header_ints(c: &Config, negative_vocab: bool) -> Vec<u8> {
    let vocab = if negative_vocab {
        -(c.vocab_size as i32)
    } else {
        c.vocab_size as i32
    };
    let fields = [
        c.dim as i32,
        c.hidden_dim as i32,
        c.n_layers as i32,
        c.n_heads as i32,
        c.n_kv_heads as i32,
        vocab,
        c.seq_len as i32,
    ];
    fields.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// An [`io::ErrorKind::InvalidInput`] error: what we were asked to write is not a checkpoint.
fn invalid(problem: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, problem)
}

/// Write a float checkpoint in the legacy (`run.c`) or version 1 layout.
///
/// Errors with [`io::ErrorKind::InvalidInput`], before writing anything, if `format` is
/// [`Format::Int8V2`] (use [`write_int8`]) or a tensor does not have its config's shape.
pub fn write_float(out: &mut impl Write, t: &FloatTensors, format: Format) -> io::Result<()> {
    if let Format::Int8V2 { .. } = format {
        return Err(invalid(
            "write_float writes float formats; use write_int8".into(),
        ));
    }
    write(out, t, format).map(|_| ())
}

/// Write an int8 version 2 checkpoint, quantizing every matrix in groups of `group_size`
/// (which must divide every matrix's size). Returns the largest absolute quantization error.
///
/// Errors with [`io::ErrorKind::InvalidInput`], before writing anything, if `group_size` is 0 or
/// does not divide a matrix, or a tensor does not have its config's shape.
pub fn write_int8(out: &mut impl Write, t: &FloatTensors, group_size: usize) -> io::Result<f32> {
    t.check_shapes()?;
    let c = &t.config;
    // Every tensor has its shape (checked above), so these products fit in memory.
    let matrix_sizes = [
        c.vocab_size * c.dim,
        c.dim * c.dim,
        c.kv_dim() * c.dim,
        c.hidden_dim * c.dim,
    ];
    if group_size == 0 || group_size > i32::MAX as usize {
        return Err(invalid(format!("group size {group_size} is out of range")));
    }
    if let Some(size) = matrix_sizes.iter().find(|&&size| size % group_size != 0) {
        return Err(invalid(format!(
            "group size {group_size} does not divide a matrix of {size} values"
        )));
    }
    write(out, t, Format::Int8V2 { group_size })
}

/// Write `t` as a checkpoint of `format`: the header, then every entry of
/// [`tensor_order`] (matrices quantized for int8). Returns the largest quantization error.
fn write(out: &mut impl Write, t: &FloatTensors, format: Format) -> io::Result<f32> {
    t.check_shapes()?;
    let c = &t.config;
    match format {
        Format::Legacy => out.write_all(&header_ints(c, !c.shared_classifier))?,
        Format::Float32V1 => out.write_all(&versioned_header(c, 1, None))?,
        Format::Int8V2 { group_size } => {
            out.write_all(&versioned_header(c, 2, Some(group_size)))?
        }
    }
    let mut max_error = 0.0f32;
    for entry in tensor_order(format, c) {
        match entry {
            FileEntry::LegacyRopeTables => write_rope_tables(out, c)?,
            FileEntry::Tensor(kind, layer) => {
                let tensor = t.tensor(kind, layer.unwrap_or(0));
                match format {
                    Format::Int8V2 { group_size } if kind.is_matrix() => {
                        let q = quant::quantize_tensor(tensor, group_size);
                        max_error = max_error.max(q.max_error);
                        out.write_all(&q.values.iter().map(|&v| v as u8).collect::<Vec<u8>>())?;
                        write_f32s(out, &q.scales)?;
                    }
                    _ => write_f32s(out, tensor)?,
                }
            }
        }
    }
    Ok(max_error)
}

/// The group size `llama2 quantize` uses unless told otherwise: the largest of at most
/// `limit` that divides every row length (`dim` and `hidden_dim`), so that no group straddles
/// two rows and the fast int8 kernels apply.
pub fn largest_row_aligned_group_size(config: &Config, limit: usize) -> usize {
    let rows = gcd(config.dim, config.hidden_dim);
    (1..=limit.min(rows))
        .rev()
        .find(|gs| rows.is_multiple_of(*gs))
        .unwrap_or(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Check that `group_size` can quantize `config`'s matrices with no group straddling a row.
pub fn check_group_size(config: &Config, group_size: usize) -> Result<()> {
    if group_size == 0 {
        return Err(Error::input("group size must be at least 1"));
    }
    let largest = largest_row_aligned_group_size(config, usize::MAX);
    if !largest.is_multiple_of(group_size) {
        return Err(Error::input(format!(
            "group size {group_size} does not divide the row lengths (dim {}, hidden_dim {}); \
             use a divisor of {largest}",
            config.dim, config.hidden_dim
        )));
    }
    Ok(())
}

/// What [`quantize_to_file`] wrote.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantized {
    /// The group size used.
    pub group_size: usize,
    /// The largest `|dequantized - original|` over all matrices.
    pub max_error: f32,
}

/// Quantize a float model into a version 2 (int8) checkpoint at `path`, in groups of
/// `group_size` (see [`check_group_size`]; `None` picks
/// [`largest_row_aligned_group_size`] of at most 64).
///
/// The file is written beside `path` under a temporary name and renamed into place at the end,
/// so a failure leaves no half-written checkpoint, and `path` may even be the model's own file
/// (which stays mapped, unharmed, until the model is dropped).
pub fn quantize_to_file(
    model: &Model,
    path: &Path,
    group_size: Option<usize>,
) -> Result<Quantized> {
    if let Format::Int8V2 { .. } = model.format() {
        return Err(Error::input(format!(
            "{} is already an int8 (version 2) checkpoint; quantize a float one",
            model.name()
        )));
    }
    let config = model.config();
    let group_size = group_size.unwrap_or_else(|| largest_row_aligned_group_size(config, 64));
    check_group_size(config, group_size)?;
    let tensors = FloatTensors::from_model(model);
    let mut max_error = 0.0;
    write_atomically(path, |out| {
        max_error = write_int8(out, &tensors, group_size)?;
        Ok(())
    })?;
    Ok(Quantized {
        group_size,
        max_error,
    })
}

fn versioned_header(c: &Config, version: i32, group_size: Option<usize>) -> Vec<u8> {
    let mut header = Vec::with_capacity(VERSIONED_HEADER_BYTES);
    header.extend_from_slice(&MAGIC.to_le_bytes());
    header.extend_from_slice(&version.to_le_bytes());
    header.extend_from_slice(&header_ints(c, false));
    header.push(c.shared_classifier as u8);
    if let Some(gs) = group_size {
        header.extend_from_slice(&(gs as i32).to_le_bytes());
    }
    header.resize(VERSIONED_HEADER_BYTES, 0);
    header
}

/// Write the obsolete RoPE tables legacy files carry, `(seq_len, head_dim / 2)` each, cosines
/// then sines, filled with the values `model.py` exports (run.c ignores them). Written a row at a
/// time: for a long context they can be far larger than the weights.
fn write_rope_tables(out: &mut impl Write, c: &Config) -> io::Result<()> {
    let half = c.head_dim() / 2;
    for trig in [f32::cos, f32::sin] {
        let mut row = Vec::with_capacity(half);
        for pos in 0..c.seq_len {
            row.clear();
            for j in 0..half {
                let freq = 1.0 / 10000f32.powf((2 * j) as f32 / c.head_dim() as f32);
                row.push(trig(pos as f32 * freq));
            }
            write_f32s(out, &row)?;
        }
    }
    Ok(())
}

impl Params {
    /// Copy a loaded model's weights (dequantizing an int8 model's) into owned parameters.
    pub fn from_model(model: &Model) -> Result<Params> {
        FloatTensors::from_model(model).to_params()
    }

    /// A model that runs these weights: written as a version 1 checkpoint in memory and loaded
    /// from there (the bytes are owned by the model).
    pub fn to_model(&self) -> Result<Model> {
        let mut bytes = Vec::new();
        write_float(
            &mut bytes,
            &FloatTensors::from_params(self),
            Format::Float32V1,
        )
        .map_err(|e| Error::input(format!("cannot write these parameters: {e}")))?;
        Model::from_bytes(bytes)
    }

    /// Write these weights to `path` as a float checkpoint (`Format::Legacy` is what `run.c`
    /// reads). The file is written under a temporary name beside `path` and renamed into place,
    /// so a reader never sees half a checkpoint and a failure leaves `path` as it was.
    pub fn save(&self, path: &Path, format: Format) -> Result<()> {
        let tensors = FloatTensors::from_params(self);
        write_atomically(path, |out| write_float(out, &tensors, format))
    }
}

/// Write a file through `write` under a temporary name beside `path`, flush it to disk, then
/// rename it over `path`: a kill at any moment leaves either the old file or the new one.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<fs::File>) -> io::Result<()>,
) -> Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = std::path::PathBuf::from(partial);
    let written = (|| {
        let mut out = io::BufWriter::new(fs::File::create(&partial)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&partial, path)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&partial);
        Error::io(path, e)
    })
}
