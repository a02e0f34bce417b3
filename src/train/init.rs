//! A new model's weights, drawn as llama2.c's `model.py` draws them.

use crate::error::Result;
use crate::params::{Params, TensorKind};
use crate::sampler::Rng;
use crate::Config;

/// Weights for a new model of shape `config`: every matrix normal(0, 0.02), except `wo` and
/// `w3` with standard deviation `0.02 / sqrt(2 * n_layers)` (`model.py`'s scaled init of the
/// residual projections), and every RMSNorm weight 1. The values are drawn in checkpoint order
/// from one generator seeded with `seed`, so the same seed gives the same model.
pub fn init_params(config: &Config, seed: u64) -> Result<Params> {
    let mut params = Params::zeros(config)?;
    let residual_std = 0.02 / (2.0 * config.n_layers as f64).sqrt();
    // xorshift never leaves the state 0: start from a nonzero state for every seed.
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15 | 1);
    let tensors = params.tensors().to_vec();
    for info in tensors {
        let values = &mut params.data_mut()[info.range()];
        if !info.is_matrix {
            values.fill(1.0);
            continue;
        }
        let std = match info.kind {
            TensorKind::Wo | TensorKind::W3 => residual_std,
            _ => 0.02,
        };
        for v in values {
            *v = (standard_normal(&mut rng) * std) as f32;
        }
    }
    Ok(params)
}

/// A standard normal sample by the Box-Muller transform of two uniform ones.
pub fn standard_normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.next_f32() as f64; // in (0, 1], so the log is finite
    let u2 = rng.next_f32() as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
