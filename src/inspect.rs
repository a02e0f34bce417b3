//! What is inside a checkpoint: `llama2 inspect`.
//!
//! [`Inspection::of`] lists a loaded model's tensors (those of [`tensor_table`], with llama2.c's
//! `model.py` names, in the legacy checkpoint order), each with its shape, how it is stored, its
//! parameter count and its bytes in the file; and accounts for the rest of the file (the header,
//! and the unused RoPE tables of legacy files) so that the parts add up to the file's size. [`TensorStats`] summarises a tensor's values, and
//! [`Inspection::report`] writes all of it as the text the command prints.
//!
//! This module only reads what [`Model`] exposes; it parses nothing itself (that is
//! [`crate::checkpoint`]'s job) and never prints.

use std::fmt::Write as _;

use crate::checkpoint::{Config, Format, LEGACY_HEADER_BYTES, VERSIONED_HEADER_BYTES};
use crate::error::Result;
use crate::model::{Matrix, Model};
use crate::params::{tensor_table, TensorKind};

/// The values of one tensor, borrowed from the model.
#[derive(Clone, Copy, Debug)]
pub enum TensorData<'a> {
    /// A float vector (the RMSNorm weights, float32 in every format).
    Vector(&'a [f32]),
    /// A weight matrix, float32 or int8.
    Matrix(Matrix<'a>),
}

/// One tensor of a checkpoint.
#[derive(Clone, Debug)]
pub struct Tensor<'a> {
    /// Its name in llama2.c's `model.py`, such as `layers.3.attention.wq.weight`.
    pub name: String,
    /// Its values.
    pub data: TensorData<'a>,
}

impl Tensor<'_> {
    /// `[len]` for a vector, `[rows, cols]` for a matrix.
    pub fn shape(&self) -> Vec<usize> {
        match &self.data {
            TensorData::Vector(v) => vec![v.len()],
            TensorData::Matrix(m) => vec![m.rows(), m.cols()],
        }
    }

    /// Number of parameters (values).
    pub fn parameters(&self) -> usize {
        self.shape().iter().product()
    }

    /// Bytes it takes in the file: 4 per float32 value; for int8, 1 per value plus a 4-byte
    /// scale per group.
    pub fn bytes(&self) -> usize {
        match &self.data {
            TensorData::Matrix(Matrix::Q8(q)) => q.values.len() + 4 * q.scales.len(),
            _ => 4 * self.parameters(),
        }
    }

    /// How the values are stored: `f32`, or `int8/g` with `g` values per scale.
    pub fn storage(&self) -> String {
        match &self.data {
            TensorData::Matrix(Matrix::Q8(q)) => format!("int8/{}", q.group_size),
            _ => "f32".to_string(),
        }
    }

    /// Mean, standard deviation and largest magnitude of the values (int8 ones dequantized).
    pub fn stats(&self) -> TensorStats {
        let mut stats = StatsAccumulator::default();
        match &self.data {
            TensorData::Vector(v) => v.iter().for_each(|&w| stats.push(w)),
            TensorData::Matrix(Matrix::F32 { data, .. }) => {
                data.iter().for_each(|&w| stats.push(w))
            }
            TensorData::Matrix(Matrix::Q8(q)) => {
                let mut row = vec![0.0; q.cols];
                for r in 0..q.rows {
                    q.dequantize_row(r, &mut row);
                    row.iter().for_each(|&w| stats.push(w));
                }
            }
        }
        stats.finish()
    }
}

/// A summary of a tensor's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorStats {
    /// Mean of the values.
    pub mean: f64,
    /// Standard deviation of the values (of the whole population, divided by `n`).
    pub std: f64,
    /// Largest absolute value.
    pub max_abs: f32,
}

/// Sums for [`TensorStats`], in f64 so that a million values average accurately.
#[derive(Default)]
struct StatsAccumulator {
    n: usize,
    sum: f64,
    sum_squares: f64,
    max_abs: f32,
}

impl StatsAccumulator {
    fn push(&mut self, w: f32) {
        self.n += 1;
        self.sum += w as f64;
        self.sum_squares += w as f64 * w as f64;
        self.max_abs = self.max_abs.max(w.abs());
    }

    fn finish(&self) -> TensorStats {
        let n = self.n.max(1) as f64;
        let mean = self.sum / n;
        // E[w²] - E[w]², clamped: rounding can make it a hair below zero for constant tensors.
        let variance = (self.sum_squares / n - mean * mean).max(0.0);
        TensorStats {
            mean,
            std: variance.sqrt(),
            max_abs: self.max_abs,
        }
    }
}

/// Everything `llama2 inspect` reports about a model.
#[derive(Clone, Debug)]
pub struct Inspection<'a> {
    /// The model's name (its path, or `<memory>`).
    pub name: String,
    /// How the weights are stored.
    pub format: Format,
    /// The hyperparameters.
    pub config: Config,
    /// Every tensor, in legacy checkpoint order; a shared classifier is not listed again after
    /// the token embedding.
    pub tensors: Vec<Tensor<'a>>,
    /// Size of the whole file, in bytes.
    pub file_size: usize,
}

impl<'a> Inspection<'a> {
    /// Describe a loaded model.
    pub fn of(model: &'a Model) -> Result<Inspection<'a>> {
        let tensors = tensor_table(model.config())?
            .iter()
            .map(|info| Tensor {
                name: info.full_name(),
                data: tensor_data(model, info.kind, info.layer.unwrap_or(0)),
            })
            .collect();
        Ok(Inspection {
            name: model.name().to_string(),
            format: model.format(),
            config: *model.config(),
            tensors,
            file_size: model.file_size(),
        })
    }

    /// Total number of parameters (a shared classifier counted once).
    pub fn parameters(&self) -> usize {
        self.tensors.iter().map(Tensor::parameters).sum()
    }

    /// Bytes of all the tensors in the file.
    pub fn tensor_bytes(&self) -> usize {
        self.tensors.iter().map(Tensor::bytes).sum()
    }

    /// Bytes of the header: 28 for legacy files, 256 for versions 1 and 2.
    pub fn header_bytes(&self) -> usize {
        match self.format {
            Format::Legacy => LEGACY_HEADER_BYTES,
            Format::Float32V1 | Format::Int8V2 { .. } => VERSIONED_HEADER_BYTES,
        }
    }

    /// Bytes of the two RoPE tables legacy files still carry, `(seq_len, head_dim / 2)` float32
    /// each, which nothing reads any more (0 for the other formats).
    pub fn unused_rope_bytes(&self) -> usize {
        match self.format {
            Format::Legacy => 2 * self.config.seq_len * (self.config.head_dim() / 2) * 4,
            Format::Float32V1 | Format::Int8V2 { .. } => 0,
        }
    }

    /// Bytes of KV cache one position takes: a float32 key and value of `kv_dim` in every layer.
    pub fn kv_cache_bytes_per_position(&self) -> usize {
        2 * self.config.n_layers * self.config.kv_dim() * 4
    }

    /// The report `llama2 inspect` prints; with `stats`, each tensor's mean, standard deviation
    /// and largest magnitude too.
    pub fn report(&self, stats: bool) -> String {
        let c = &self.config;
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(format!("checkpoint  {}", self.name));
        line(format!("format      {}", format_name(self.format)));
        line(format!("header      {} bytes", self.header_bytes()));
        line(format!(
            "config      dim {}, hidden_dim {}, {} layers, vocab {}, seq_len {}",
            c.dim, c.hidden_dim, c.n_layers, c.vocab_size, c.seq_len
        ));
        line(format!("attention   {}", attention_layout(c)));
        line(format!(
            "classifier  {}",
            if c.shared_classifier {
                "shared with the token embedding"
            } else {
                "its own matrix"
            }
        ));
        if let Format::Int8V2 { group_size } = self.format {
            line(format!(
                "int8 groups {group_size} values per float32 scale (norms stay float32)"
            ));
        }
        line(String::new());
        let mut header = format!(
            "{:<34} {:>12} {:>8} {:>10} {:>10}",
            "tensor", "shape", "storage", "parameters", "bytes"
        );
        if stats {
            let _ = write!(header, " {:>12} {:>12} {:>12}", "mean", "std", "max|w|");
        }
        line(header);
        for t in &self.tensors {
            let shape: Vec<String> = t.shape().iter().map(usize::to_string).collect();
            let mut row = format!(
                "{:<34} {:>12} {:>8} {:>10} {:>10}",
                t.name,
                shape.join(" x "),
                t.storage(),
                t.parameters(),
                t.bytes()
            );
            if stats {
                let s = t.stats();
                let _ = write!(row, " {:>12.6} {:>12.6} {:>12.6}", s.mean, s.std, s.max_abs);
            }
            line(row);
        }
        line(String::new());
        line(format!(
            "parameters  {} ({})",
            self.parameters(),
            human_count(self.parameters())
        ));
        let mut parts = format!(
            "header {} + tensors {}",
            self.header_bytes(),
            self.tensor_bytes()
        );
        if self.unused_rope_bytes() > 0 {
            let _ = write!(parts, " + unused RoPE tables {}", self.unused_rope_bytes());
        }
        line(format!("file size   {} bytes = {parts}", self.file_size));
        let per_position = self.kv_cache_bytes_per_position();
        line(format!(
            "KV cache    {per_position} bytes per position (a key and a value of {} floats in \
             each of {} layers), {} for all {} positions",
            c.kv_dim(),
            c.n_layers,
            human_bytes(per_position * c.seq_len),
            c.seq_len
        ));
        out
    }
}

/// The values of tensor `kind` (of layer `layer`, for the per-layer kinds), borrowed from the
/// model.
fn tensor_data(model: &Model, kind: TensorKind, layer: usize) -> TensorData<'_> {
    let w = || model.layer(layer);
    match kind {
        TensorKind::TokenEmbedding => TensorData::Matrix(model.token_embedding()),
        TensorKind::AttnNorm => TensorData::Vector(w().attn_norm),
        TensorKind::Wq => TensorData::Matrix(w().wq),
        TensorKind::Wk => TensorData::Matrix(w().wk),
        TensorKind::Wv => TensorData::Matrix(w().wv),
        TensorKind::Wo => TensorData::Matrix(w().wo),
        TensorKind::FfnNorm => TensorData::Vector(w().ffn_norm),
        TensorKind::W1 => TensorData::Matrix(w().w1),
        TensorKind::W2 => TensorData::Matrix(w().w2),
        TensorKind::W3 => TensorData::Matrix(w().w3),
        TensorKind::FinalNorm => TensorData::Vector(model.final_norm()),
        TensorKind::Classifier => TensorData::Matrix(model.classifier()),
    }
}

/// A format's name as the report shows it.
fn format_name(format: Format) -> String {
    match format {
        Format::Legacy => "legacy (llama2.c run.c), float32".into(),
        Format::Float32V1 => "version 1, float32".into(),
        Format::Int8V2 { group_size } => format!("version 2, int8 in groups of {group_size}"),
    }
}

/// Heads, kv heads and head size, and what kind of attention they make.
fn attention_layout(c: &Config) -> String {
    let kind = if c.n_kv_heads == c.n_heads {
        "multi-head: one kv head per query head".to_string()
    } else if c.n_kv_heads == 1 {
        "multi-query: every query head shares one kv head".to_string()
    } else {
        format!("grouped-query: {} query heads per kv head", c.kv_mul())
    };
    format!(
        "{} heads, {} kv heads, head size {} ({kind})",
        c.n_heads,
        c.n_kv_heads,
        c.head_dim()
    )
}

/// `1234567` as `1.23M`.
fn human_count(n: usize) -> String {
    let n = n as f64;
    match n {
        _ if n >= 1e9 => format!("{:.2}B", n / 1e9),
        _ if n >= 1e6 => format!("{:.2}M", n / 1e6),
        _ if n >= 1e3 => format!("{:.2}K", n / 1e3),
        _ => format!("{n}"),
    }
}

/// A byte count in KiB, MiB or GiB.
fn human_bytes(n: usize) -> String {
    let n = n as f64;
    let kib = 1024.0;
    match n {
        _ if n >= kib * kib * kib => format!("{:.2} GiB", n / (kib * kib * kib)),
        _ if n >= kib * kib => format!("{:.2} MiB", n / (kib * kib)),
        _ if n >= kib => format!("{:.2} KiB", n / kib),
        _ => format!("{n} bytes"),
    }
}
