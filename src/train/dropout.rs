//! Dropout masks that are a pure function of their coordinates, so a run can be resumed and
//! repeated exactly.
//!
//! No random generator carries state from one step to the next: whether value `i` of dropout
//! site `site` is kept is decided by hashing `(seed, site, i)`, where the seed is derived from
//! the run's seed, the optimizer step and the micro-step ([`Dropout::for_step`]). The backward
//! pass recomputes the same masks instead of storing them, and the result does not depend on
//! which thread looks at which value.

/// Dropout for one forward/backward pass: values are zeroed with probability `p` and the others
/// scaled by `1 / (1 - p)` (inverted dropout, as `torch.nn.Dropout` does). `p = 0` turns it off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing a value, in `[0, 1)`.
    pub p: f32,
    /// Decides every mask of the pass; see [`Dropout::for_step`].
    pub seed: u64,
}

impl Dropout {
    /// No dropout.
    pub const OFF: Dropout = Dropout { p: 0.0, seed: 0 };

    /// The dropout of micro-step `micro_step` of optimizer step `step` of a run seeded with
    /// `run_seed`: every pass of a run gets its own masks, and the same ones when repeated.
    pub fn for_step(p: f32, run_seed: u64, step: u64, micro_step: u64) -> Dropout {
        let seed = mix(mix(mix(run_seed) ^ step) ^ micro_step.wrapping_add(0x5851_f42d));
        Dropout { p, seed }
    }

    /// True when `p` is a probability below 1.
    pub(crate) fn is_valid(&self) -> bool {
        (0.0..1.0).contains(&self.p)
    }

    /// The mask of dropout site `site` (each place of the model that drops values has its own).
    pub(crate) fn mask(&self, site: u64) -> Mask {
        if self.p <= 0.0 {
            return Mask::OFF;
        }
        Mask {
            key: mix(self.seed ^ mix(site.wrapping_add(1))),
            // A value is dropped when its 32-bit hash is below p * 2^32.
            threshold: (self.p as f64 * 4_294_967_296.0) as u64,
            keep_scale: 1.0 / (1.0 - self.p),
        }
    }
}

/// The mask of one dropout site: for each index, 0 (dropped) or `1 / (1 - p)` (kept).
#[derive(Clone, Copy, Debug)]
pub struct Mask {
    key: u64,
    threshold: u64,
    keep_scale: f32,
}

impl Mask {
    /// Keeps every value unscaled.
    pub const OFF: Mask = Mask {
        key: 0,
        threshold: 0,
        keep_scale: 1.0,
    };

    /// True for the mask that keeps everything.
    pub fn is_off(&self) -> bool {
        self.threshold == 0
    }

    /// The factor value `i` is multiplied by.
    #[inline]
    pub fn scale(&self, i: usize) -> f32 {
        if self.threshold == 0 {
            return 1.0;
        }
        let bits = mix(self.key ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 32;
        if bits < self.threshold {
            0.0
        } else {
            self.keep_scale
        }
    }
}

/// SplitMix64's finalizer: a bijection of `u64` whose output bits all depend on all input bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_about_p_and_scales_the_rest() {
        let mask = Dropout::for_step(0.25, 7, 3, 1).mask(5);
        let n = 200_000;
        let kept: Vec<f32> = (0..n).map(|i| mask.scale(i)).collect();
        let dropped = kept.iter().filter(|&&s| s == 0.0).count() as f64 / n as f64;
        assert!((dropped - 0.25).abs() < 0.005, "dropped {dropped}");
        assert!(kept.iter().all(|&s| s == 0.0 || s == 1.0 / 0.75));
        // A pure function: the same coordinates give the same mask, others a different one.
        assert!((0..n).all(|i| mask.scale(i) == kept[i]));
        let other = Dropout::for_step(0.25, 7, 4, 1).mask(5);
        assert!((0..1000).any(|i| other.scale(i) != kept[i]));
        assert_eq!(Dropout::OFF.mask(5).scale(9), 1.0);
    }
}
