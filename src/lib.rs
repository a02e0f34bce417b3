//! # llama2
//!
//! Run Llama-2-architecture language models on the CPU, in pure Rust: a port of Andrej
//! Karpathy's [llama2.c](https://github.com/karpathy/llama2.c) that reads the same checkpoint
//! and tokenizer files and, for the same settings, produces the same text.
//!
//! * [`Model`] memory-maps a checkpoint (llama2.c legacy, version 1 float32, or version 2 int8)
//!   and runs the forward pass; a [`State`] holds one sequence's KV cache.
//! * [`Tokenizer`] encodes text into token ids and decodes them back.
//! * [`Sampler`] picks the next token (greedy, multinomial or top-p).
//! * [`Generator`], [`Chat`] and [`evaluate`] are the loops that tie them together.
//!
//! ```no_run
//! use llama2::{Generator, Model, Sampler, Tokenizer};
//!
//! # fn main() -> llama2::Result<()> {
//! let model = Model::open("stories15M.bin")?;
//! let tokenizer = Tokenizer::open("tokenizer.bin", model.config().vocab_size)?;
//! let sampler = Sampler::new(0.8, 0.9, 42)?;
//! for token in Generator::new(&model, &tokenizer, sampler, b"Once upon a time", 100)? {
//!     print!("{}", String::from_utf8_lossy(token?.printable()));
//! }
//! # Ok(())
//! # }
//! ```

pub mod checkpoint;
pub mod convert;
pub mod error;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod storage;
pub mod tokenizer;

pub use checkpoint::{Config, Format};
pub use error::{Error, Result};
pub use generate::{evaluate, Chat, Evaluation, Generator, Token};
pub use model::{Model, State};
pub use sampler::Sampler;
pub use tokenizer::Tokenizer;
