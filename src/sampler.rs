//! Choosing the next token from the logits: greedy, multinomial, or top-p (nucleus) sampling,
//! with llama2.c's random number generator ([`crate::rng`]) so that a seed gives the same tokens
//! as `run.c`.

use crate::error::{Error, Result};
use crate::kernels;
#[allow(unused_imports)]
use crate::prelude::*;
pub use crate::rng::Rng;
use crate::top_k::{Candidate, TopK};

/// Turns logits into a token id.
#[derive(Clone, Debug)]
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: Rng,
    /// Candidates of top-p sampling, reused between calls: (probability, token id).
    candidates: Vec<(f32, u32)>,
    /// The most likely tokens of the last call, when asked for ([`Sampler::with_top_k`]).
    watch: TopK,
}

impl Sampler {
    /// A sampler with `run.c`'s rules: temperature 0 means greedy argmax; otherwise the logits
    /// are divided by the temperature and softmaxed, then sampled from the top-p nucleus when
    /// `0 < top_p < 1`, or from the whole distribution otherwise.
    ///
    /// Errors if the temperature is negative or not a number, or `top_p` is outside `[0, 1]`.
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Result<Sampler> {
        if !(temperature >= 0.0 && temperature.is_finite()) {
            return Err(Error::input(format!(
                "temperature must be a finite number >= 0, got {temperature}"
            )));
        }
        if !(0.0..=1.0).contains(&top_p) {
            return Err(Error::input(format!(
                "top-p must be between 0 and 1, got {top_p}"
            )));
        }
        Ok(Sampler {
            temperature,
            top_p,
            rng: Rng::new(seed),
            candidates: Vec::new(),
            watch: TopK::default(),
        })
    }

    /// Also keep, at every [`Sampler::sample`], the `k` most likely tokens and their
    /// probabilities after temperature (see [`crate::top_k`]); read them with
    /// [`Sampler::top_k`]. Does not change which tokens are sampled.
    pub fn with_top_k(mut self, k: usize) -> Sampler {
        self.watch = TopK::new(k);
        self
    }

    /// The candidates kept by the last [`Sampler::sample`], most likely first (empty unless
    /// asked for with [`Sampler::with_top_k`]).
    pub fn top_k(&self) -> &[Candidate] {
        self.watch.candidates()
    }

    /// The temperature.
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// The top-p threshold.
    pub fn top_p(&self) -> f32 {
        self.top_p
    }

    /// Choose a token: an index into `logits`, which are overwritten (with probabilities, when
    /// sampling). Any logits give an index, NaNs included; an empty slice gives 0.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        if self.watch.k() > 0 {
            self.watch.record(logits, self.temperature);
        }
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        for logit in logits.iter_mut() {
            *logit /= self.temperature;
        }
        kernels::softmax(logits);
        let coin = self.rng.next_f32();
        if self.top_p <= 0.0 || self.top_p >= 1.0 {
            sample_multinomial(logits, coin)
        } else {
            sample_top_p(logits, self.top_p, coin, &mut self.candidates)
        }
    }
}

/// Index of the largest value; the first one on ties (0 for an empty slice).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate().skip(1) {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// Sample an index from `probabilities` (summing to 1) with `coin` in `[0, 1)`; the last index
/// if rounding leaves the coin above the total, 0 for an empty slice.
pub fn sample_multinomial(probabilities: &[f32], coin: f32) -> u32 {
    let mut cdf = 0.0f32;
    for (i, &p) in probabilities.iter().enumerate() {
        cdf += p;
        if coin < cdf {
            return i as u32;
        }
    }
    probabilities.len().saturating_sub(1) as u32 // rounding left the coin above the last sum
}

/// Top-p sampling as `run.c` does it: drop tokens below `(1 - top_p) / (n - 1)` (they cannot be
/// in the nucleus), sort the rest by descending probability (stable, like glibc's merge sort),
/// keep the shortest prefix whose probability exceeds `top_p`, and sample within it.
pub fn sample_top_p(
    probabilities: &[f32],
    top_p: f32,
    coin: f32,
    candidates: &mut Vec<(f32, u32)>,
) -> u32 {
    let n = probabilities.len();
    let cutoff = (1.0 - top_p) / (n as f32 - 1.0);
    candidates.clear();
    candidates.extend(
        probabilities
            .iter()
            .enumerate()
            .filter(|(_, &p)| p >= cutoff)
            .map(|(i, &p)| (p, i as u32)),
    );
    if candidates.is_empty() {
        // Only possible with a one-token vocabulary or NaN probabilities.
        return argmax(probabilities);
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));

    let mut cumulative = 0.0f32;
    let mut last = candidates.len() - 1;
    for (i, &(p, _)) in candidates.iter().enumerate() {
        cumulative += p;
        if cumulative > top_p {
            last = i;
            break;
        }
    }
    let r = coin * cumulative;
    let mut cdf = 0.0f32;
    for &(p, id) in &candidates[..=last] {
        cdf += p;
        if r < cdf {
            return id;
        }
    }
    candidates[last].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let probs = [0.1, 0.5, 0.05, 0.35];
        let mut c = Vec::new();
        // Nucleus for p=0.8 is {1, 3} (0.5 + 0.35 > 0.8); coin 0 picks the most likely.
        assert_eq!(sample_top_p(&probs, 0.8, 0.0, &mut c), 1);
        assert_eq!(sample_top_p(&probs, 0.8, 0.99, &mut c), 3);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(Sampler::new(-1.0, 0.9, 1).is_err());
        assert!(Sampler::new(f32::NAN, 0.9, 1).is_err());
        assert!(Sampler::new(1.0, 1.5, 1).is_err());
        assert!(Sampler::new(1.0, -0.1, 1).is_err());
        assert!(Sampler::new(0.0, 0.0, 1).is_ok());
    }
}
