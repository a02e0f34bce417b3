//! Training: the backward pass of the Llama 2 transformer, written by hand, and AdamW.
//!
//! The maths of a training step, as llama2.c's `model.py` and `train.py` do it in PyTorch:
//!
//! * [`init_params`] draws a new model's weights; [`Workspace`] holds the activations of one
//!   micro-batch of `B` sequences of `T` tokens, allocated once.
//! * [`forward_backward`] computes the mean next-token cross-entropy of a micro-batch and adds
//!   its gradient into a [`crate::Params`] of gradients (scaled, for gradient accumulation); [`loss`]
//!   is the forward pass alone. [`Dropout`] masks are a pure function of a seed and the step.
//! * [`grad_norm`] and [`clip_grads`] measure and clip the global gradient norm, [`AdamW`]
//!   updates the weights as `torch.optim.AdamW` does, and [`learning_rate`] is `train.py`'s
//!   warmup-then-cosine schedule.
//!
//! A step of training, with `accum` micro-batches:
//!
//! ```
//! use llama2::train::{self, AdamW, AdamWConfig, Dropout, Workspace};
//! # fn main() -> llama2::Result<()> {
//! let config = llama2::Config {
//!     dim: 16, hidden_dim: 48, n_layers: 2, n_heads: 4, n_kv_heads: 2,
//!     vocab_size: 32, seq_len: 8, shared_classifier: true,
//! };
//! let mut params = train::init_params(&config, 1)?;
//! let mut grads = params.zeros_like()?;
//! let mut adam = AdamW::new(&params)?;
//! let mut ws = Workspace::new(&config, 2, 8)?; // B = 2, T = 8
//! let (inputs, targets) = ([3u16; 16], [4u16; 16]);
//! let accum = 2;
//! for micro in 0..accum {
//!     let dropout = Dropout::for_step(0.1, 42, 0, micro);
//!     let loss = train::forward_backward(&params, &mut grads, &mut ws, &inputs, &targets,
//!                                        dropout, 1.0 / accum as f32)?;
//!     assert!(loss > 0.0);
//! }
//! let norm_before = train::clip_grads(&mut grads, 1.0);
//! adam.step(&mut params, &grads, 1e-3, &AdamWConfig::default())?;
//! grads.data_mut().fill(0.0);
//! # let _ = norm_before; Ok(()) }
//! ```
//!
//! Around the arithmetic, the training loop of `llama2 train`: [`run`] reads
//! [`TrainOptions`] (train.py's flags, [`options`]), cuts token files into windows ([`data`]),
//! logs, evaluates, and saves `model.bin` and the full training state ([`state`]).
//!
//! The arithmetic itself: every operation's forward and backward pass sit side by
//! side in `ops`, the matrix products ([`crate::gemm`]) behind `linear`, the order of the operations
//! in `model`. All results are the same for any number of threads: work is split over outputs,
//! and no sum depends on which thread finishes first.

pub mod checksum;
pub mod data;
mod dropout;
mod init;
mod isa;
mod linear;
mod model;
pub mod ops;
mod optim;
pub mod options;
mod par;
mod session;
pub mod state;
mod vector;

pub use dropout::{Dropout, Mask};
pub use init::{init_params, standard_normal};
pub use linear::{linear_backward, linear_forward, Precision};
pub use model::{forward_backward, loss, Workspace};
pub use optim::{clip_grads, grad_norm, learning_rate, AdamW, AdamWConfig, Schedule};
pub use options::{Settings, TrainOptions};
pub use session::{run, LogRow, Progress, RunInfo, Summary, LOG_HEADER};

#[cfg(test)]
mod tests;
