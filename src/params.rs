//! Owned model weights: every tensor in one flat `f32` buffer, in checkpoint order.
//!
//! [`Params`] is what training updates and what `convert` writes: a [`Config`] plus one `Vec<f32>`
//! holding the tensors back to back in the order of a legacy llama2.c checkpoint (the order
//! `model.py` exports them):
//!
//! ```text
//! token_embedding (vocab, dim)
//! attn_norm[0..L] (dim)          wq[0..L] (dim, dim)       wk[0..L] (kv_dim, dim)
//! wv[0..L] (kv_dim, dim)         wo[0..L] (dim, dim)       ffn_norm[0..L] (dim)
//! w1[0..L] (hidden, dim)         w2[0..L] (dim, hidden)    w3[0..L] (hidden, dim)
//! final_norm (dim)               classifier (vocab, dim), only when not shared
//! ```
//!
//! [`tensor_table`] is that order (from [`crate::checkpoint::tensor_order`], where the order of
//! every file format is written once) with offsets into the buffer. Gradients and optimizer moments use the same
//! layout (a `Params` of zeros), so an optimizer step is one loop over flat slices, and a shared
//! classifier exists once and is counted once.
//!
//! This module owns no file format: reading is [`crate::checkpoint`]'s job and writing
//! [`crate::convert`]'s.

pub use crate::checkpoint::TensorKind;
use crate::checkpoint::{tensor_order, Config, FileEntry, Format};
use crate::error::{Error, Result};
#[allow(unused_imports)]
use crate::prelude::*;

/// One tensor of a model: what it is, its shape and where it sits in the flat buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// What the tensor is for.
    pub kind: TensorKind,
    /// The layer, for per-layer kinds.
    pub layer: Option<usize>,
    /// `(rows, cols)` of a matrix; `(len, 1)` for a vector (a norm's weights).
    pub shape: (usize, usize),
    /// False for the RMSNorm weight vectors, true for the matrices.
    pub is_matrix: bool,
    /// Index of the first value in the flat buffer.
    pub offset: usize,
}

impl TensorInfo {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.0 * self.shape.1
    }

    /// True for a tensor of no values (never for a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tensor's range in the flat buffer.
    pub fn range(&self) -> core::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }

    /// `model.py`'s full name, e.g. `layers.3.attention.wq.weight`.
    pub fn full_name(&self) -> String {
        match self.layer {
            Some(l) => format!("layers.{l}.{}", self.kind.name()),
            None => self.kind.name().to_string(),
        }
    }
}

/// Every tensor of a model of shape `c`, in checkpoint order, with offsets into a flat buffer.
/// Errors if the total does not fit in memory's address space.
pub fn tensor_table(c: &Config) -> Result<Vec<TensorInfo>> {
    let mut offset = 0usize;
    let mut table = Vec::new();
    for entry in tensor_order(Format::Legacy, c) {
        let FileEntry::Tensor(kind, layer) = entry else {
            continue; // the legacy file's obsolete RoPE tables are no weights
        };
        let (rows, cols) = kind.shape(c);
        let info = TensorInfo {
            kind,
            layer,
            shape: (rows, cols),
            is_matrix: kind.is_matrix(),
            offset,
        };
        offset = rows
            .checked_mul(cols)
            .and_then(|len| offset.checked_add(len))
            .ok_or_else(|| Error::input("model too large for this machine's address space"))?;
        table.push(info);
    }
    Ok(table)
}

/// A model's weights (or gradients, or optimizer moments) as owned, mutable `f32` tensors.
#[derive(Clone, Debug)]
pub struct Params {
    config: Config,
    table: Vec<TensorInfo>,
    data: Vec<f32>,
}

impl Params {
    /// All tensors of shape `config`, filled with zeros. Errors if the memory cannot be had.
    pub fn zeros(config: &Config) -> Result<Params> {
        let table = tensor_table(config)?;
        let total = table.last().map_or(0, |t| t.offset + t.len());
        let mut data = Vec::new();
        data.try_reserve_exact(total)
            .map_err(|_| Error::OutOfMemory {
                what: "model parameters".into(),
                bytes: total as u128 * 4,
            })?;
        data.resize(total, 0.0);
        Ok(Params {
            config: *config,
            table,
            data,
        })
    }

    /// A buffer of zeros with the same shape as `self` (for gradients and moments).
    pub fn zeros_like(&self) -> Result<Params> {
        Params::zeros(&self.config)
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every tensor in checkpoint order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.table
    }

    /// Every value, tensor after tensor.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Every value, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Number of values (parameters).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a model with no values (never for a valid config).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Where the tensor `kind` of `layer` (ignored for non-layer kinds) sits. A shared
    /// classifier is found as the token embedding.
    pub fn info(&self, kind: TensorKind, layer: usize) -> TensorInfo {
        let kind = match kind {
            TensorKind::Classifier if self.config.shared_classifier => TensorKind::TokenEmbedding,
            other => other,
        };
        let layer = kind.is_per_layer().then_some(layer);
        *self
            .table
            .iter()
            .find(|t| t.kind == kind && t.layer == layer)
            .expect("every kind of a valid layer is in the table")
    }

    /// The values of tensor `kind` of `layer` (ignored for non-layer kinds), row-major.
    pub fn get(&self, kind: TensorKind, layer: usize) -> &[f32] {
        &self.data[self.info(kind, layer).range()]
    }

    /// The values of tensor `kind` of `layer`, mutable.
    pub fn get_mut(&mut self, kind: TensorKind, layer: usize) -> &mut [f32] {
        let range = self.info(kind, layer).range();
        &mut self.data[range]
    }

    /// Each tensor with its values, in checkpoint order.
    pub fn iter(&self) -> impl Iterator<Item = (&TensorInfo, &[f32])> {
        self.table.iter().map(|t| (t, &self.data[t.range()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(shared: bool) -> Config {
        Config {
            dim: 8,
            hidden_dim: 12,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 1,
            vocab_size: 10,
            seq_len: 4,
            shared_classifier: shared,
        }
    }

    #[test]
    fn table_is_contiguous_and_in_checkpoint_order() {
        let table = tensor_table(&config(false)).unwrap();
        let mut next = 0;
        for t in &table {
            assert_eq!(t.offset, next);
            next += t.len();
        }
        // 80 embedding + per layer (8 + 64 + 32 + 32 + 64 + 8 + 96 + 96 + 96) + 8 + 80.
        assert_eq!(next, 80 + 2 * 496 + 8 + 80);
        assert_eq!(table[1].full_name(), "layers.0.attention_norm.weight");
        assert_eq!(table[3].kind, TensorKind::Wq);
        assert_eq!(table.last().unwrap().kind, TensorKind::Classifier);
        assert_eq!(tensor_table(&config(true)).unwrap().len(), table.len() - 1);
    }

    #[test]
    fn shared_classifier_is_the_embedding() {
        let mut p = Params::zeros(&config(true)).unwrap();
        p.get_mut(TensorKind::TokenEmbedding, 0)[3] = 2.5;
        assert_eq!(p.get(TensorKind::Classifier, 0)[3], 2.5);
        assert!(!p.info(TensorKind::FfnNorm, 1).is_matrix);
        assert!(p.info(TensorKind::W2, 1).is_matrix);
        assert_eq!(p.info(TensorKind::W2, 1).shape, (8, 12));
    }
}
