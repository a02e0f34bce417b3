//! # llama2
//!
//! Run Llama-2-architecture language models on the CPU, in pure Rust: a port of Andrej
//! Karpathy's [llama2.c](https://github.com/karpathy/llama2.c) that reads the same checkpoint
//! and tokenizer files and, for the same settings, produces the same text.
//!
//! * [`Model`] loads a checkpoint (llama2.c legacy, version 1 float32, or version 2 int8) from a
//!   path (memory-mapped), from bytes already in memory, or from `include_bytes!`, and runs the
//!   forward pass; a [`State`] holds one sequence's KV cache.
//!   It computes in [`Arithmetic::Fast`] (deterministic, not `run.c`'s last bits) unless asked
//!   for [`Arithmetic::Exact`] ([`Model::open_with`], [`Model::with_arithmetic`]), which gives
//!   llama2.c's bits.
//! * [`Tokenizer`] encodes text into token ids and decodes them back, loaded from a path or bytes.
//! * [`Sampler`] picks the next token (greedy, multinomial or top-p).
//! * [`Generator`] is an iterator of [`Token`]s; [`Generator::text`] turns it into an iterator
//!   of UTF-8 text chunks. [`Chat`] runs a Llama 2 chat turn by turn with a callback, and
//!   [`evaluate`] scores a text.
//! * Looking inside: [`inspect`] lists a checkpoint's tensors with their sizes and statistics,
//!   [`Sampler::with_top_k`] keeps the most likely next tokens at every step, [`attention`]
//!   draws every head's attention weights, and [`svg`] draws charts such as a loss curve.
//!
//! ```
//! use llama2::{Generator, Model, Sampler, Tokenizer};
//!
//! # fn main() -> llama2::Result<()> {
//! let model = Model::open("tests/models/stories260K.bin")?;
//! let tokenizer = Tokenizer::open("tests/models/tok512.bin", model.config().vocab_size)?;
//! let sampler = Sampler::new(0.8, 0.9, 42)?; // temperature, top-p, seed
//! let mut story = String::new();
//! for chunk in Generator::new(&model, &tokenizer, sampler, b"Once upon a time", 64)?.text() {
//!     story.push_str(&chunk?); // or print it as it comes
//! }
//! assert!(story.starts_with("Once upon a time"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Errors, threads, memory
//!
//! Every fallible call returns [`Result`], whose [`Error`] says in one line what was wrong and
//! with which file. The library never prints, never exits the process and does not panic on any
//! input: corrupt files, out-of-range ids and parameters are errors, and memory for a KV cache
//! that cannot be had is [`Error::OutOfMemory`] rather than an abort.
//!
//! With the `parallel` feature (the default) large matrix products run on rayon's thread pool;
//! without it the crate uses no threads at all. Without the `std` feature (also a default) the
//! crate is `#![no_std]` with `alloc` and depends on nothing: models and tokenizers come from
//! bytes ([`Model::from_static`], [`Tokenizer::from_bytes`]), and the maths the C library would
//! give comes from [`math`]. See the README's "Small devices" section.
//!
//! A model opened with [`Model::open`] reads its weights straight from a memory map of the
//! file, which must therefore not be truncated or rewritten while the model is alive.
//!
//! The modules [`kernels`] and [`quant`] hold the arithmetic of the forward pass; the module
//! documentation of [`kernels`] shows how a step of the model reaches the loop that computes it.
//! They are public for reading, testing and benchmarking, but their functions expect slices of
//! matching shapes (and panic otherwise): the stable API is the rest of the crate.

#![warn(missing_docs)]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod prelude;

#[cfg(feature = "std")]
pub mod attention;
#[cfg(feature = "std")]
pub mod bpe;
#[cfg(feature = "capi")]
pub mod capi;
pub mod checkpoint;
#[cfg(feature = "std")]
pub mod convert;
#[cfg(feature = "std")]
pub mod corpus;
pub mod error;
#[doc(hidden)]
pub mod fast;
#[cfg(feature = "std")]
pub mod gemm;
pub mod generate;
#[cfg(feature = "std")]
pub mod inspect;
pub mod kernels;
pub mod math;
pub mod model;
pub mod params;
mod platform;
#[cfg(feature = "std")]
pub mod pretokenize;
pub mod quant;
pub mod reference;
pub mod rng;
pub mod sampler;
pub(crate) mod storage;
#[cfg(feature = "std")]
pub mod svg;
pub mod text;
pub mod tokenizer;
pub mod top_k;
#[cfg(feature = "std")]
pub mod train;

pub use checkpoint::{Config, Format};
pub use error::{Error, Result};
pub use generate::{evaluate, Chat, Evaluation, Generator};
pub use model::{Arithmetic, Logits, Model, State};
pub use params::{Params, TensorKind};
pub use sampler::Sampler;
pub use text::{Text, Token, Utf8Assembler};
pub use tokenizer::Tokenizer;

/// The README's code must compile and run too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
