//! Pretokenizing a corpus for training, in llama2.c's format.
//!
//! The output is what llama2.c's `tinystories.py pretokenize` writes: raw little-endian `u16`
//! token ids with no header, each document as BOS followed by its tokens (no EOS). Documents
//! come from [`crate::corpus`] (trimmed, empty ones skipped) and are encoded as
//! [`Tokenizer::encode`] does with BOS, which gives SentencePiece's ids. One difference from
//! `tinystories.py`: a story that is empty after trimming is skipped, where it writes a lone
//! BOS.
//!
//! Documents are encoded in parallel a batch at a time and written in input order, so the
//! output does not depend on the number of threads. This module does not read `.bin` files
//! back; training does.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::corpus::{self, CorpusStats};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The largest vocabulary whose ids fit the format's `u16`.
pub const MAX_VOCAB: usize = 1 << 16;

/// What a pretokenization wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PretokenizeStats {
    /// The documents read, and those skipped.
    pub corpus: CorpusStats,
    /// Token ids written, a BOS per document included.
    pub tokens: u64,
}

impl PretokenizeStats {
    /// Text tokens (BOS not counted) per byte of text: how well the vocabulary compresses.
    pub fn tokens_per_byte(&self) -> f64 {
        let text_tokens = self.tokens.saturating_sub(self.corpus.documents);
        text_tokens as f64 / self.corpus.bytes.max(1) as f64
    }
}

/// Encode one document as it goes into a pretokenized file: BOS, then its tokens.
pub fn encode_document(tokenizer: &Tokenizer, document: &str) -> Result<Vec<u16>> {
    let ids = tokenizer.encode(document.as_bytes(), true, false)?;
    // The vocabulary was checked to fit u16, and encode only makes ids of the vocabulary.
    Ok(ids.into_iter().map(|id| id as u16).collect())
}

/// Encode every document of `inputs` and write the ids to `out`; `on_batch` is called after
/// each batch with the totals so far (for progress reports).
pub fn pretokenize(
    tokenizer: &Tokenizer,
    inputs: &[PathBuf],
    out: &mut impl Write,
    out_name: &Path,
    mut on_batch: impl FnMut(&PretokenizeStats),
) -> Result<PretokenizeStats> {
    if tokenizer.vocab_size() > MAX_VOCAB {
        return Err(Error::input(format!(
            "the tokenizer has {} tokens; pretokenized files hold u16 ids, so at most {MAX_VOCAB}",
            tokenizer.vocab_size()
        )));
    }
    let mut stats = PretokenizeStats::default();
    let mut bytes = Vec::new();
    let corpus = corpus::read_documents(inputs, |documents| {
        let encoded = corpus::map_in_order(documents, |d| encode_document(tokenizer, d));
        bytes.clear();
        for ids in encoded {
            let ids = ids?;
            stats.tokens += ids.len() as u64;
            stats.corpus.documents += 1;
            bytes.extend(ids.iter().flat_map(|id| id.to_le_bytes()));
        }
        stats.corpus.bytes += documents.iter().map(|d| d.len() as u64).sum::<u64>();
        out.write_all(&bytes).map_err(|e| Error::io(out_name, e))?;
        on_batch(&stats);
        Ok(())
    })?;
    stats.corpus = corpus;
    if stats.corpus.documents == 0 {
        return Err(Error::input(format!(
            "no documents in the input ({} empty and {} non-UTF-8 skipped)",
            corpus.skipped_empty, corpus.skipped_invalid
        )));
    }
    Ok(stats)
}

/// [`pretokenize`] into the file `out`, which is written under a temporary name and renamed
/// into place at the end, so a failed run leaves no half-written output.
pub fn pretokenize_to_file(
    tokenizer: &Tokenizer,
    inputs: &[PathBuf],
    out: &Path,
    on_batch: impl FnMut(&PretokenizeStats),
) -> Result<PretokenizeStats> {
    let mut temporary = out.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let result = (|| {
        let file = File::create(&temporary).map_err(|e| Error::io(out, e))?;
        let mut writer = BufWriter::new(file);
        let stats = pretokenize(tokenizer, inputs, &mut writer, out, on_batch)?;
        writer.flush().map_err(|e| Error::io(out, e))?;
        std::fs::rename(&temporary, out).map_err(|e| Error::io(out, e))?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}
