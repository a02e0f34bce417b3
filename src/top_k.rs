//! The most likely next tokens and their probabilities: what the sampler chose from.
//!
//! [`TopK`] watches the logits a [`Sampler`](crate::Sampler) is given (see
//! [`Sampler::with_top_k`](crate::Sampler::with_top_k)) and keeps the `k` most likely tokens with
//! their probabilities after temperature, `softmax(logits / T)`. At temperature 0 the sampler
//! takes the argmax, which has no distribution of its own; the probabilities shown are then
//! those of temperature 1, `softmax(logits)`, whose most likely token is that argmax.
//!
//! Watching only reads the logits, so it cannot change the token sampled; a sampler not asked to
//! watch does no work for it.

use crate::error::Result;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::text::escape_piece;
use crate::tokenizer::Tokenizer;

/// One candidate next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// The token id.
    pub id: u32,
    /// Its probability after temperature.
    pub probability: f32,
}

/// The `k` most likely tokens of the last logits seen, most likely first.
#[derive(Clone, Debug, Default)]
pub struct TopK {
    k: usize,
    candidates: Vec<Candidate>,
    /// Token ids, reused between calls to find the largest logits.
    order: Vec<u32>,
}

impl TopK {
    /// Keep the `k` most likely tokens (0: watch nothing).
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            ..TopK::default()
        }
    }

    /// How many tokens are kept.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The candidates of the last [`TopK::record`], most likely first (ties: lower id first,
    /// as [`argmax`](crate::sampler::argmax) breaks them).
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Find the `k` largest `logits` and their probabilities under `softmax(logits / T)`,
    /// with `T = temperature`, or 1 when `temperature` is 0.
    pub fn record(&mut self, logits: &[f32], temperature: f32) {
        self.candidates.clear();
        let k = self.k.min(logits.len());
        if k == 0 {
            return;
        }
        let t = if temperature > 0.0 { temperature } else { 1.0 } as f64;
        // The ranking is the logits' (dividing by T > 0 keeps the order): largest first, then
        // lowest id. Partition out the k best, then sort just those.
        let before = |a: &u32, b: &u32| {
            let (la, lb) = (logits[*a as usize], logits[*b as usize]);
            lb.total_cmp(&la).then(a.cmp(b))
        };
        self.order.clear();
        self.order.extend(0..logits.len() as u32);
        if k < logits.len() {
            self.order.select_nth_unstable_by(k - 1, before);
        }
        let best = &mut self.order[..k];
        best.sort_unstable_by(before);

        // softmax in f64, shifted by the largest logit so that no exponential overflows.
        let max = logits[best[0] as usize] as f64;
        let sum: f64 = logits.iter().map(|&l| ((l as f64 - max) / t).exp()).sum();
        self.candidates.extend(best.iter().map(|&id| Candidate {
            id,
            probability: (((logits[id as usize] as f64 - max) / t).exp() / sum) as f32,
        }));
    }
}

/// One line describing a sampled position: its index in the sequence, the token chosen, and the
/// candidates with their probabilities, each token written as its readable, quoted piece after
/// `prev` (the token before it), e.g. `#5 " there" <- " there" 0.8312 | "," 0.0534`.
pub fn describe(
    tokenizer: &Tokenizer,
    position: usize,
    prev: u32,
    chosen: u32,
    candidates: &[Candidate],
) -> Result<String> {
    let piece = |id| -> Result<String> { Ok(escape_piece(tokenizer.decode(prev, id)?)) };
    let mut line = format!("#{position} {} <-", piece(chosen)?);
    for (i, c) in candidates.iter().enumerate() {
        let separator = if i == 0 { " " } else { " | " };
        line.push_str(separator);
        line.push_str(&format!("{} {:.6}", piece(c.id)?, c.probability));
    }
    Ok(line)
}
