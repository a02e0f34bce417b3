//! The optimizer side of a training step: gradient norm and clipping, AdamW, and the
//! learning-rate schedule, each as PyTorch and llama2.c's `train.py` compute them.

use super::isa::widest;
use super::par::{for_each_block, for_each_zip3};
use crate::error::{Error, Result};
use crate::params::Params;

/// AdamW's hyperparameters other than the learning rate (`train.py`'s defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Decay rate of the first moment.
    pub beta1: f32,
    /// Decay rate of the second moment.
    pub beta2: f32,
    /// Added to the square root of the second moment.
    pub eps: f32,
    /// Decoupled weight decay, applied to the matrices only (not to the norm weights).
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> AdamWConfig {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// `torch.optim.AdamW`: its two moments (shaped like the parameters) and its step count.
#[derive(Clone, Debug)]
pub struct AdamW {
    m: Params,
    v: Params,
    step: u64,
}

impl AdamW {
    /// An optimizer at step 0 with zero moments for parameters shaped like `params`.
    pub fn new(params: &Params) -> Result<AdamW> {
        Ok(AdamW {
            m: params.zeros_like()?,
            v: params.zeros_like()?,
            step: 0,
        })
    }

    /// An optimizer restored from saved moments and step count. Errors if the shapes differ.
    pub fn from_parts(m: Params, v: Params, step: u64) -> Result<AdamW> {
        if m.config() != v.config() {
            return Err(Error::input("Adam moments have different shapes"));
        }
        Ok(AdamW { m, v, step })
    }

    /// The first moment (running mean of the gradients).
    pub fn m(&self) -> &Params {
        &self.m
    }

    /// The second moment (running mean of the squared gradients).
    pub fn v(&self) -> &Params {
        &self.v
    }

    /// The number of steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update of `params` with `grads` at learning rate `lr`, per parameter:
    /// ```text
    /// p *= 1 - lr * weight_decay            (matrices only)
    /// m = m + (1 - beta1) (g - m);          v = beta2 v + (1 - beta2) g^2
    /// p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    /// ```
    /// with `t` the step count after this step, in the order PyTorch evaluates them. Errors if
    /// the shapes differ.
    pub fn step(
        &mut self,
        params: &mut Params,
        grads: &Params,
        lr: f32,
        hyper: &AdamWConfig,
    ) -> Result<()> {
        if params.config() != self.m.config() || grads.config() != self.m.config() {
            return Err(Error::input(
                "optimizer, parameters and gradients differ in shape",
            ));
        }
        self.step += 1;
        let t = self.step as f64;
        // Computed in f64 as PyTorch does for its Python scalars, then used in f32.
        let step_size = (lr as f64 / (1.0 - (hyper.beta1 as f64).powf(t))) as f32;
        let bias2_sqrt = (1.0 - (hyper.beta2 as f64).powf(t)).sqrt() as f32;
        let decay = (1.0 - lr as f64 * hyper.weight_decay as f64) as f32;
        let (beta1, beta2, eps) = (hyper.beta1, hyper.beta2, hyper.eps);
        // The gradients' table is the parameters' (same shape), borrowed apart from them.
        let (m, v) = (self.m.data_mut(), self.v.data_mut());
        let p = params.data_mut();
        for info in grads.tensors() {
            let r = info.range();
            let decay = if info.is_matrix { decay } else { 1.0 };
            let g = &grads.data()[r.clone()];
            for_each_zip3(
                (&mut p[r.clone()], BLOCK),
                (&mut m[r.clone()], BLOCK),
                (&mut v[r], BLOCK),
                BLOCK * 8,
                |i, p, m, v| {
                    let g = &g[i * BLOCK..][..p.len()];
                    for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                        *p *= decay;
                        *m += (1.0 - beta1) * (g - *m);
                        *v = *v * beta2 + (1.0 - beta2) * g * g;
                        let denom = v.sqrt() / bias2_sqrt + eps;
                        *p -= step_size * *m / denom;
                    }
                },
            );
        }
        Ok(())
    }
}

/// Values per task of the elementwise loops.
const BLOCK: usize = 1 << 14;

/// The global L2 norm of all gradients (a shared classifier counted once), summed in `f64` in
/// a fixed order: block by block, each block's squares into eight partial sums (one chain of
/// adds would wait on each add in turn: 9.5 ms instead of 2.4 for stories15M's 15M values).
pub fn grad_norm(grads: &Params) -> f32 {
    let sum: f64 = grads.data().chunks(BLOCK).map(sum_of_squares).sum();
    sum.sqrt() as f32
}

widest! {
    /// `sum x^2` in `f64`: value `i` into partial sum `i mod 8`, in order, the sums then added
    /// by a fixed tree, then the last few values in order.
    fn sum_of_squares_of / sum_of_squares_body(x: &[f32], out: &mut f64) {
        let mut acc = [0.0f64; 8];
        let chunks = x.chunks_exact(8);
        let tail: f64 = chunks.remainder().iter().map(|&g| g as f64 * g as f64).sum();
        for c in chunks {
            for i in 0..8 {
                acc[i] += c[i] as f64 * c[i] as f64;
            }
        }
        *out = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
    }
}

fn sum_of_squares(x: &[f32]) -> f64 {
    let mut sum = 0.0;
    sum_of_squares_of(x, &mut sum);
    sum
}

/// Scales all gradients down so that their global norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`: by `max_norm / (norm + 1e-6)` when that is below 1);
/// `max_norm <= 0` clips nothing. Returns the norm before clipping.
pub fn clip_grads(grads: &mut Params, max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    if max_norm > 0.0 {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for_each_block((grads.data_mut(), BLOCK), BLOCK, |_, g| {
                g.iter_mut().for_each(|g| *g *= coef)
            });
        }
    }
    norm
}

/// `train.py`'s learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Peak learning rate (`--learning-rate`), reached at the end of the warmup.
    pub learning_rate: f32,
    /// Floor of the cosine decay (`--min-lr`).
    pub min_lr: f32,
    /// Steps of linear warmup from 0 (`--warmup-iters`).
    pub warmup_iters: usize,
    /// The step at which the decay reaches `min_lr` (`--lr-decay-iters`).
    pub lr_decay_iters: usize,
    /// False for a constant `learning_rate` (`--decay-lr false`).
    pub decay_lr: bool,
}

/// The learning rate of optimizer step `step` (0-based), as `train.py`'s `get_lr`: linear warmup
/// `learning_rate * step / warmup_iters`, then cosine decay to `min_lr` at `lr_decay_iters`,
/// then `min_lr`. Computed in `f64` like Python.
pub fn learning_rate(step: usize, s: &Schedule) -> f32 {
    if !s.decay_lr {
        return s.learning_rate;
    }
    let (lr, min_lr) = (s.learning_rate as f64, s.min_lr as f64);
    if step < s.warmup_iters {
        return (lr * step as f64 / s.warmup_iters as f64) as f32;
    }
    if step > s.lr_decay_iters {
        return s.min_lr;
    }
    // Here warmup_iters <= step <= lr_decay_iters; when the two are equal the decay has not
    // started (train.py divides 0 by 0 there).
    let span = (s.lr_decay_iters - s.warmup_iters) as f64;
    let ratio = if span == 0.0 {
        0.0
    } else {
        (step - s.warmup_iters) as f64 / span
    };
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
    (min_lr + coeff * (lr - min_lr)) as f32
}

#[cfg(test)]
mod tests {
    /// The blocked sum of squares against one in order, for lengths with and without a tail of
    /// fewer than eight values.
    #[test]
    fn sum_of_squares_matches_a_sum_in_order() {
        for len in (0..40).chain([1 << 14, 100_003]) {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5)
                .collect();
            let want: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            let got = super::sum_of_squares(&x);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1.0),
                "{len}: {got} vs {want}"
            );
        }
    }
}
