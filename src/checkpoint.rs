//! llama2.c checkpoint files: the header, its validation, and where each tensor lives.
//!
//! Three layouts exist, all little-endian:
//!
//! * **legacy** (what `run.c` reads): seven `i32` (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//!   vocab_size, seq_len), then float32 tensors. A negative `vocab_size` means the classifier is
//!   stored separately at the end; two obsolete RoPE tables sit before it and are skipped.
//! * **version 1**: magic `"ak42"` (`0x616b3432`), version 1, the seven ints, a shared-classifier
//!   byte, zero padding to 256 bytes, then float32 tensors in a different order (norms first).
//! * **version 2** (what `runq.c` reads): like version 1 plus an `i32` group size in the header;
//!   the norms stay float32 and every matrix is stored as int8 values followed by one float32
//!   scale per group of `group_size` consecutive values (Q8_0).
//!
//! This module only reads and checks: it turns bytes into a [`Config`] and a layout of byte
//! ranges, after proving that every range lies inside the file. It does no arithmetic on weights;
//! [`crate::model`] borrows the tensors through the ranges found here.

use crate::error::{Error, Result};
#[allow(unused_imports)]
use crate::prelude::*;
use crate::storage::Storage;

/// `"ak42"` read as a little-endian `u32`: the first four bytes of version 1 and 2 files.
pub const MAGIC: u32 = 0x616b_3432;
/// Size of the version 1 and 2 header, in bytes.
pub const VERSIONED_HEADER_BYTES: usize = 256;
/// Size of the legacy header (seven `i32`), in bytes.
pub const LEGACY_HEADER_BYTES: usize = 28;

/// The hyperparameters of a Llama-2-architecture transformer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Width of the residual stream (the model dimension).
    pub dim: usize,
    /// Width of the feed-forward layer.
    pub hidden_dim: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads (fewer than `n_heads` with grouped-query attention).
    pub n_kv_heads: usize,
    /// Number of tokens in the vocabulary.
    pub vocab_size: usize,
    /// Longest sequence the model was trained for: the size of the context.
    pub seq_len: usize,
    /// True when the classifier reuses the token embedding table.
    pub shared_classifier: bool,
}

impl Config {
    /// Width of one attention head (0 for a config with no heads).
    pub fn head_dim(&self) -> usize {
        self.dim.checked_div(self.n_heads).unwrap_or(0)
    }

    /// Width of the keys (and values) of one position: `n_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// How many query heads share one key/value head (0 for a config with no kv heads).
    pub fn kv_mul(&self) -> usize {
        self.n_heads.checked_div(self.n_kv_heads).unwrap_or(0)
    }
}

/// How the weights of a checkpoint are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The original headerless llama2.c float32 format.
    Legacy,
    /// Version 1: float32 with a 256-byte header.
    Float32V1,
    /// Version 2: int8 matrices quantized in groups of `group_size` values.
    Int8V2 {
        /// Number of consecutive values that share one scale.
        group_size: usize,
    },
}

/// What a tensor is for. Per-layer kinds come once per layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// Token embedding table, `(vocab_size, dim)`.
    TokenEmbedding,
    /// RMSNorm weights before attention, `(dim,)`.
    AttnNorm,
    /// Query projection, `(dim, dim)`.
    Wq,
    /// Key projection, `(kv_dim, dim)`.
    Wk,
    /// Value projection, `(kv_dim, dim)`.
    Wv,
    /// Attention output projection, `(dim, dim)`.
    Wo,
    /// RMSNorm weights before the feed-forward block, `(dim,)`.
    FfnNorm,
    /// Feed-forward gate, `(hidden_dim, dim)`.
    W1,
    /// Feed-forward down projection, `(dim, hidden_dim)`.
    W2,
    /// Feed-forward up projection, `(hidden_dim, dim)`.
    W3,
    /// RMSNorm weights before the classifier, `(dim,)`.
    FinalNorm,
    /// Classifier, `(vocab_size, dim)`; absent when it shares the embedding table.
    Classifier,
}

impl TensorKind {
    /// The name llama2.c's `model.py` gives this tensor (per-layer ones without the layer).
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::TokenEmbedding => "tok_embeddings.weight",
            TensorKind::AttnNorm => "attention_norm.weight",
            TensorKind::Wq => "attention.wq.weight",
            TensorKind::Wk => "attention.wk.weight",
            TensorKind::Wv => "attention.wv.weight",
            TensorKind::Wo => "attention.wo.weight",
            TensorKind::FfnNorm => "ffn_norm.weight",
            TensorKind::W1 => "feed_forward.w1.weight",
            TensorKind::W2 => "feed_forward.w2.weight",
            TensorKind::W3 => "feed_forward.w3.weight",
            TensorKind::FinalNorm => "norm.weight",
            TensorKind::Classifier => "output.weight",
        }
    }

    /// The shape of this tensor in a model of shape `c`: `(rows, cols)` of a matrix, `(dim, 1)`
    /// for a norm's weights.
    pub fn shape(self, c: &Config) -> (usize, usize) {
        use TensorKind::*;
        match self {
            TokenEmbedding | Classifier => (c.vocab_size, c.dim),
            AttnNorm | FfnNorm | FinalNorm => (c.dim, 1),
            Wq | Wo => (c.dim, c.dim),
            Wk | Wv => (c.kv_dim(), c.dim),
            W1 | W3 => (c.hidden_dim, c.dim),
            W2 => (c.dim, c.hidden_dim),
        }
    }

    /// False for the RMSNorm weight vectors (which stay `f32` in every format), true for the
    /// matrices.
    pub fn is_matrix(self) -> bool {
        !matches!(
            self,
            TensorKind::AttnNorm | TensorKind::FfnNorm | TensorKind::FinalNorm
        )
    }

    /// True for the kinds that come once per layer.
    pub fn is_per_layer(self) -> bool {
        !matches!(
            self,
            TensorKind::TokenEmbedding | TensorKind::FinalNorm | TensorKind::Classifier
        )
    }
}

/// One item of a checkpoint's body, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileEntry {
    /// A tensor: its kind and, for per-layer kinds, its layer.
    Tensor(TensorKind, Option<usize>),
    /// The two obsolete RoPE tables of legacy files, `(seq_len, head_dim / 2)` each: cosines
    /// then sines, which `run.c` skips.
    LegacyRopeTables,
}

/// Everything in the body of a checkpoint of format `format` for a model of shape `c`, in file
/// order: the one description of each format's order, which reading (`Checkpoint::parse`),
/// writing (`crate::convert`) and [`crate::params`] share.
///
/// * **legacy**: the embedding, then each kind of per-layer tensor for every layer (attention
///   norms, wq, wk, wv, wo, feed-forward norms, w1, w2, w3), the final norm, the RoPE tables;
/// * **versions 1 and 2**: the norms first (attention, feed-forward, final), then the embedding
///   and every kind of per-layer matrix in the same order (int8 in version 2);
///
/// and, last in every format, the classifier when it is not shared.
pub fn tensor_order(format: Format, c: &Config) -> Vec<FileEntry> {
    use TensorKind::*;
    let all_layers = |kinds: &[TensorKind]| -> Vec<FileEntry> {
        kinds
            .iter()
            .flat_map(|&kind| (0..c.n_layers).map(move |l| FileEntry::Tensor(kind, Some(l))))
            .collect()
    };
    let one = |kind| FileEntry::Tensor(kind, None);
    let mut order = Vec::new();
    match format {
        Format::Legacy => {
            order.push(one(TokenEmbedding));
            order.extend(all_layers(&[AttnNorm, Wq, Wk, Wv, Wo, FfnNorm, W1, W2, W3]));
            order.push(one(FinalNorm));
            order.push(FileEntry::LegacyRopeTables);
        }
        Format::Float32V1 | Format::Int8V2 { .. } => {
            order.extend(all_layers(&[AttnNorm, FfnNorm]));
            order.push(one(FinalNorm));
            order.push(one(TokenEmbedding));
            order.extend(all_layers(&[Wq, Wk, Wv, Wo, W1, W2, W3]));
        }
    }
    if !c.shared_classifier {
        order.push(one(Classifier));
    }
    order
}

/// Where one tensor lives in the file: a byte offset and a count of elements.
///
/// For a float tensor the elements are `f32`; for a quantized tensor they are `i8` values, and
/// `scales` holds the byte offset of the `f32` group scales that follow them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TensorRange {
    /// Byte offset of the first element.
    pub offset: usize,
    /// Number of elements (not bytes).
    pub len: usize,
    /// For int8 tensors, the byte offset of the `len / group_size` scales.
    pub scales: Option<usize>,
}

/// The byte ranges of one transformer block's tensors.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LayerLayout {
    /// RMSNorm weights before attention, `(dim,)`.
    pub attn_norm: TensorRange,
    /// Query projection, `(n_heads * head_dim, dim)`.
    pub wq: TensorRange,
    /// Key projection, `(kv_dim, dim)`.
    pub wk: TensorRange,
    /// Value projection, `(kv_dim, dim)`.
    pub wv: TensorRange,
    /// Attention output projection, `(dim, n_heads * head_dim)`.
    pub wo: TensorRange,
    /// RMSNorm weights before the feed-forward block, `(dim,)`.
    pub ffn_norm: TensorRange,
    /// Feed-forward gate, `(hidden_dim, dim)`.
    pub w1: TensorRange,
    /// Feed-forward down projection, `(dim, hidden_dim)`.
    pub w2: TensorRange,
    /// Feed-forward up projection, `(hidden_dim, dim)`.
    pub w3: TensorRange,
}

/// The byte ranges of every tensor of a checkpoint.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// Token embedding table, `(vocab_size, dim)`.
    pub token_embedding: TensorRange,
    /// One entry per transformer block.
    pub layers: Vec<LayerLayout>,
    /// RMSNorm weights before the classifier, `(dim,)`.
    pub final_norm: TensorRange,
    /// Classifier, `(vocab_size, dim)`; the same range as the embedding when shared.
    pub classifier: TensorRange,
}

impl Layout {
    /// Where tensor `kind` of layer `layer` (ignored for the other kinds) is recorded.
    fn range_mut(&mut self, kind: TensorKind, layer: usize) -> &mut TensorRange {
        let l = &mut self.layers[layer];
        match kind {
            TensorKind::TokenEmbedding => &mut self.token_embedding,
            TensorKind::FinalNorm => &mut self.final_norm,
            TensorKind::Classifier => &mut self.classifier,
            TensorKind::AttnNorm => &mut l.attn_norm,
            TensorKind::Wq => &mut l.wq,
            TensorKind::Wk => &mut l.wk,
            TensorKind::Wv => &mut l.wv,
            TensorKind::Wo => &mut l.wo,
            TensorKind::FfnNorm => &mut l.ffn_norm,
            TensorKind::W1 => &mut l.w1,
            TensorKind::W2 => &mut l.w2,
            TensorKind::W3 => &mut l.w3,
        }
    }
}

/// A parsed and validated checkpoint: its bytes, format, hyperparameters and tensor layout.
pub(crate) struct Checkpoint {
    /// The file's name for error messages (`<memory>` for bytes given directly).
    pub name: String,
    /// The bytes of the whole file.
    pub storage: Storage,
    /// How the weights are stored.
    pub format: Format,
    /// The hyperparameters.
    pub config: Config,
    /// Where every tensor lives in `storage`.
    pub layout: Layout,
}

/// Largest value accepted for any header field. Keeps every size computation far from overflow
/// on 64-bit targets and rejects obviously corrupt headers early.
const MAX_FIELD: i64 = i32::MAX as i64;

impl Checkpoint {
    /// Parse and validate `storage` as a checkpoint; `name` is used in error messages.
    pub(crate) fn parse(name: &str, storage: Storage) -> Result<Checkpoint> {
        let bytes = storage.bytes();
        let bad = |problem: String| Error::checkpoint(name, problem);
        if cfg!(target_endian = "big") {
            return Err(bad("big-endian machines are not supported".into()));
        }
        if bytes.len() < LEGACY_HEADER_BYTES {
            return Err(bad(format!(
                "file is {} bytes, shorter than any checkpoint header",
                bytes.len()
            )));
        }
        let (format, config, body_start) = if read_u32(bytes, 0) == MAGIC {
            parse_versioned_header(bytes).map_err(bad)?
        } else {
            parse_legacy_header(bytes).map_err(bad)?
        };
        // Check the size in closed form first: a corrupt header must not make us build a
        // layout with billions of layers before noticing that the file is far too short.
        let expected_size = expected_file_size(format, &config, body_start).map_err(bad)?;
        if expected_size != bytes.len() as u64 {
            return Err(bad(format!(
                "file is {} bytes but its header implies {} bytes ({})",
                bytes.len(),
                expected_size,
                describe(format, &config)
            )));
        }
        let (layout, end) = compute_layout(format, &config, body_start).map_err(bad)?;
        debug_assert_eq!(end, expected_size);
        Ok(Checkpoint {
            name: name.to_string(),
            storage,
            format,
            config,
            layout,
        })
    }
}

/// A short description of a model's shape for error messages and `--help`-like output.
pub fn describe(format: Format, c: &Config) -> String {
    let fmt = match format {
        Format::Legacy => "legacy float32".to_string(),
        Format::Float32V1 => "version 1 float32".to_string(),
        Format::Int8V2 { group_size } => format!("version 2 int8, group size {group_size}"),
    };
    format!(
        "{fmt}, dim {}, hidden_dim {}, {} layers, {} heads, {} kv heads, vocab {}, seq_len {}",
        c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len
    )
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    read_u32(bytes, at) as i32
}

/// The seven header integers in file order.
const FIELD_NAMES: [&str; 7] = [
    "dim",
    "hidden_dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "seq_len",
];

fn parse_legacy_header(bytes: &[u8]) -> core::result::Result<(Format, Config, usize), String> {
    let mut fields = [0i64; 7];
    for (i, field) in fields.iter_mut().enumerate() {
        *field = read_i32(bytes, 4 * i) as i64;
    }
    // A negative vocab_size is how legacy files say "the classifier is stored separately".
    let shared_classifier = fields[5] > 0;
    fields[5] = fields[5].abs();
    let config = validate_fields(fields, shared_classifier)?;
    Ok((Format::Legacy, config, LEGACY_HEADER_BYTES))
}

fn parse_versioned_header(bytes: &[u8]) -> core::result::Result<(Format, Config, usize), String> {
    if bytes.len() < VERSIONED_HEADER_BYTES {
        return Err(format!(
            "file is {} bytes, shorter than the {VERSIONED_HEADER_BYTES}-byte version header",
            bytes.len()
        ));
    }
    let version = read_i32(bytes, 4);
    let mut fields = [0i64; 7];
    for (i, field) in fields.iter_mut().enumerate() {
        *field = read_i32(bytes, 8 + 4 * i) as i64;
    }
    let shared_classifier = match bytes[36] {
        0 => false,
        1 => true,
        other => {
            return Err(format!(
                "shared-classifier flag is {other}, expected 0 or 1"
            ))
        }
    };
    let config = validate_fields(fields, shared_classifier)?;
    let format = match version {
        1 => Format::Float32V1,
        2 => {
            let group_size = read_i32(bytes, 37);
            if group_size <= 0 {
                return Err(format!(
                    "group size is {group_size}, expected a positive number"
                ));
            }
            Format::Int8V2 {
                group_size: group_size as usize,
            }
        }
        other => return Err(format!("unsupported version {other} (expected 1 or 2)")),
    };
    Ok((format, config, VERSIONED_HEADER_BYTES))
}

fn validate_fields(
    fields: [i64; 7],
    shared_classifier: bool,
) -> core::result::Result<Config, String> {
    for (value, name) in fields.iter().zip(FIELD_NAMES) {
        if *value <= 0 || *value > MAX_FIELD {
            return Err(format!(
                "header field {name} is {value}, expected a positive number"
            ));
        }
    }
    let [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len] =
        fields.map(|v| v as usize);
    if dim % n_heads != 0 {
        return Err(format!("dim {dim} is not divisible by n_heads {n_heads}"));
    }
    if n_kv_heads > n_heads || n_heads % n_kv_heads != 0 {
        return Err(format!(
            "n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}"
        ));
    }
    let head_dim = dim / n_heads;
    if head_dim % 2 != 0 {
        return Err(format!(
            "head size {head_dim} (dim {dim} / n_heads {n_heads}) is odd; RoPE needs pairs"
        ));
    }
    Ok(Config {
        dim,
        hidden_dim,
        n_layers,
        n_heads,
        n_kv_heads,
        vocab_size,
        seq_len,
        shared_classifier,
    })
}

/// Hands out consecutive byte ranges, checking every size for overflow.
struct Cursor {
    at: u64,
}

impl Cursor {
    fn floats(&mut self, len: u64) -> core::result::Result<TensorRange, String> {
        let start = self.at;
        self.at = add(self.at, mul(len, 4)?)?;
        Ok(TensorRange {
            offset: start as usize,
            len: len as usize,
            scales: None,
        })
    }

    fn quantized(
        &mut self,
        len: u64,
        group_size: u64,
    ) -> core::result::Result<TensorRange, String> {
        let start = self.at;
        let scales = add(start, len)?;
        self.at = add(scales, mul(len / group_size, 4)?)?;
        Ok(TensorRange {
            offset: start as usize,
            len: len as usize,
            scales: Some(scales as usize),
        })
    }

    fn skip_floats(&mut self, len: u64) -> core::result::Result<(), String> {
        self.at = add(self.at, mul(len, 4)?)?;
        Ok(())
    }
}

fn mul(a: u64, b: u64) -> core::result::Result<u64, String> {
    a.checked_mul(b)
        .filter(|&v| v <= isize::MAX as u64)
        .ok_or_else(|| "header implies a size too large for this machine".to_string())
}

fn add(a: u64, b: u64) -> core::result::Result<u64, String> {
    a.checked_add(b)
        .filter(|&v| v <= isize::MAX as u64)
        .ok_or_else(|| "header implies a size too large for this machine".to_string())
}

/// The exact file size a header implies, computed without walking the layers.
fn expected_file_size(
    format: Format,
    c: &Config,
    body_start: usize,
) -> core::result::Result<u64, String> {
    let (dim, hidden, layers) = (c.dim as u64, c.hidden_dim as u64, c.n_layers as u64);
    let (vocab, kv_dim) = (c.vocab_size as u64, c.kv_dim() as u64);
    let embedding = mul(vocab, dim)?;
    let classifier = if c.shared_classifier { 0 } else { embedding };
    // Per layer: two norms, wq and wo (dim x dim), wk and wv (kv_dim x dim), w1, w2, w3.
    let matrices_per_layer = add(
        add(mul(2, mul(dim, dim)?)?, mul(2, mul(kv_dim, dim)?)?)?,
        mul(3, mul(hidden, dim)?)?,
    )?;
    let all_matrices = add(
        add(embedding, classifier)?,
        mul(layers, matrices_per_layer)?,
    )?;
    let norms = add(mul(layers, mul(2, dim)?)?, dim)?;
    let body = match format {
        Format::Legacy | Format::Float32V1 => {
            let mut floats = add(all_matrices, norms)?;
            if format == Format::Legacy {
                // The obsolete RoPE tables: two of (seq_len, head_dim / 2).
                floats = add(floats, mul(c.seq_len as u64, c.head_dim() as u64)?)?;
            }
            mul(floats, 4)?
        }
        Format::Int8V2 { group_size } => {
            let gs = group_size as u64;
            for (len, name) in [
                (embedding, "token embedding"),
                (mul(dim, dim)?, "wq/wo"),
                (mul(kv_dim, dim)?, "wk/wv"),
                (mul(hidden, dim)?, "w1/w2/w3"),
            ] {
                if len % gs != 0 {
                    return Err(format!(
                        "group size {group_size} does not divide the {len} values of {name}"
                    ));
                }
            }
            // int8 values plus one f32 scale per group; the norms stay f32.
            add(
                add(all_matrices, mul(all_matrices / gs, 4)?)?,
                mul(norms, 4)?,
            )?
        }
    };
    add(body_start as u64, body)
}

/// Lay out every tensor after the header, in the order [`tensor_order`] gives, and return the
/// layout and the total file size implied. Call only after [`expected_file_size`] has matched
/// the real file size.
fn compute_layout(
    format: Format,
    c: &Config,
    body_start: usize,
) -> core::result::Result<(Layout, u64), String> {
    let mut cur = Cursor {
        at: body_start as u64,
    };
    let mut layout = Layout {
        token_embedding: TensorRange::default(),
        layers: vec![LayerLayout::default(); c.n_layers],
        final_norm: TensorRange::default(),
        classifier: TensorRange::default(),
    };
    for entry in tensor_order(format, c) {
        match entry {
            FileEntry::LegacyRopeTables => {
                let table = mul(c.seq_len as u64, (c.head_dim() / 2) as u64)?;
                cur.skip_floats(mul(table, 2)?)?;
            }
            FileEntry::Tensor(kind, layer) => {
                let (rows, cols) = kind.shape(c);
                let len = mul(rows as u64, cols as u64)?;
                *layout.range_mut(kind, layer.unwrap_or(0)) = match format {
                    Format::Int8V2 { group_size } if kind.is_matrix() => {
                        cur.quantized(len, group_size as u64)?
                    }
                    _ => cur.floats(len)?,
                };
            }
        }
    }
    if c.shared_classifier {
        layout.classifier = layout.token_embedding;
    }
    Ok((layout, cur.at))
}
