//! The one random number generator of the crate: llama2.c's xorshift*, so that a seed gives the
//! sampler `run.c`'s coins. Made-up weights ([`crate::convert::FloatTensors::random`]) and the
//! tests' random inputs draw from it too.

/// llama2.c's xorshift* generator.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator starting from `seed` (as `run.c` seeds it: a seed of 0 gives only zeros).
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    /// A random float in `[0, 1)` with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / 16_777_216.0
    }

    /// A random float in `[-1, 1)`.
    pub fn symmetric(&mut self) -> f32 {
        self.next_f32() * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_matches_llama2c_sequence() {
        // Printed by llama2.c's random_u32 / random_f32 compiled with gcc.
        let mut rng = Rng::new(42);
        let first: Vec<u32> = (0..4).map(|_| rng.next_u32()).collect();
        assert_eq!(first, [1456360119, 3359763283, 3393612768, 4054632243]);
        let mut rng = Rng::new(133742);
        let coins: Vec<u32> = (0..3).map(|_| rng.next_f32().to_bits()).collect();
        assert_eq!(coins, [0x3f34d003, 0x3f1f67c4, 0x3f09db83]); // 0.706299, 0.622677, 0.538506
    }
}
