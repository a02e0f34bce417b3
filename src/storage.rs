//! The bytes behind a model: a memory-mapped file, a static slice, or an owned buffer.
//!
//! Weights are never copied out of here; [`Storage::f32s`] and [`Storage::i8s`] hand out borrowed
//! views. The only `unsafe` in this module is the mapping itself and the reinterpretation of
//! aligned bytes as `f32`, both explained where they happen.

#[allow(unused_imports)]
use crate::prelude::*;
#[cfg(feature = "std")]
use std::fs::File;
#[cfg(feature = "std")]
use std::path::Path;

#[cfg(feature = "std")]
use memmap2::Mmap;

#[cfg(feature = "std")]
use crate::error::{Error, Result};

/// Bytes of a checkpoint, aligned to at least 4 bytes.
pub struct Storage {
    inner: Inner,
}

enum Inner {
    #[cfg(feature = "std")]
    Mapped(Mmap),
    Static(&'static [u8]),
    Owned(Vec<u8>),
    /// A copy made because the bytes given to us were not 4-byte aligned; `usize` is the length in
    /// bytes (the last word may be partly padding).
    Realigned(Vec<u32>, usize),
}

impl Storage {
    /// Memory-map a file read-only.
    #[cfg(feature = "std")]
    pub fn map(path: &Path) -> Result<Storage> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::io(
                path,
                std::io::Error::other("is a directory, not a file"),
            ));
        }
        if meta.len() == 0 {
            // Mapping an empty file fails on some systems; an empty buffer says the same thing.
            return Ok(Storage::from_vec(Vec::new()));
        }
        // SAFETY: the map is read-only and we never hand out a mutable view. Like every reader of
        // a memory map we rely on the file not being truncated or rewritten while it is mapped;
        // that is documented in `Model::open`.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Storage {
            inner: Inner::Mapped(map),
        })
    }

    /// Use bytes that live for the whole program, such as `include_bytes!`. They are copied only
    /// if they are not 4-byte aligned.
    pub fn from_static(bytes: &'static [u8]) -> Storage {
        if is_aligned(bytes) {
            Storage {
                inner: Inner::Static(bytes),
            }
        } else {
            Storage::realigned(bytes)
        }
    }

    /// Take ownership of bytes already in memory. They are copied only if not 4-byte aligned.
    pub fn from_vec(bytes: Vec<u8>) -> Storage {
        if is_aligned(&bytes) {
            Storage {
                inner: Inner::Owned(bytes),
            }
        } else {
            Storage::realigned(&bytes)
        }
    }

    fn realigned(bytes: &[u8]) -> Storage {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(4)) {
            let mut le = [0u8; 4];
            le[..chunk.len()].copy_from_slice(chunk);
            *word = u32::from_ne_bytes(le);
        }
        Storage {
            inner: Inner::Realigned(words, bytes.len()),
        }
    }

    /// All the bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.inner {
            #[cfg(feature = "std")]
            Inner::Mapped(map) => map,
            Inner::Static(bytes) => bytes,
            Inner::Owned(bytes) => bytes,
            Inner::Realigned(words, len) => {
                // SAFETY: a `[u32]` is valid as `[u8]` of four times the length; `len` is at most
                // that many bytes (it was the length of the source we copied from).
                let all = unsafe {
                    core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 4)
                };
                &all[..*len]
            }
        }
    }

    /// Borrow `len` little-endian `f32` starting at byte `offset`. Callers pass ranges that the
    /// checkpoint validation proved to be in bounds and 4-byte aligned; anything else panics,
    /// which would be a bug in this crate, not bad input.
    pub fn f32s(&self, offset: usize, len: usize) -> &[f32] {
        let bytes = &self.bytes()[offset..offset + len * 4];
        // SAFETY: every bit pattern is a valid f32, and `align_to` only puts correctly aligned
        // elements in the middle slice; we check that nothing was left over at either end.
        let (head, floats, tail) = unsafe { bytes.align_to::<f32>() };
        assert!(head.is_empty() && tail.is_empty(), "misaligned f32 tensor");
        floats
    }

    /// Borrow `len` `i8` starting at byte `offset`.
    pub fn i8s(&self, offset: usize, len: usize) -> &[i8] {
        let bytes = &self.bytes()[offset..offset + len];
        // SAFETY: i8 and u8 have the same size, alignment and validity.
        unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
    }

    /// True when the `f32` at byte `offset` can be borrowed in place.
    pub fn is_f32_aligned(&self, offset: usize) -> bool {
        (self.bytes().as_ptr() as usize + offset).is_multiple_of(core::mem::align_of::<f32>())
    }

    /// Copy `len` little-endian `f32` starting at any byte `offset`.
    pub fn read_f32s(&self, offset: usize, len: usize) -> Vec<f32> {
        self.bytes()[offset..offset + len * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

fn is_aligned(bytes: &[u8]) -> bool {
    (bytes.as_ptr() as usize).is_multiple_of(core::mem::align_of::<f32>())
}
