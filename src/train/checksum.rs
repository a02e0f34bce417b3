//! A 64-bit checksum of a byte stream, to notice a corrupt state file or changed training data.
//!
//! Not cryptographic, and not meant to resist anyone: it mixes 8 bytes at a time (FxHash's
//! rotate-xor-multiply step) and folds in the total length, which is enough to tell a truncated,
//! bit-flipped or edited file from the one that was written.

/// A running checksum: feed bytes with [`Checksum::update`], read it with [`Checksum::finish`].
#[derive(Clone, Debug)]
pub struct Checksum {
    hash: u64,
    len: u64,
    /// Bytes of an incomplete 8-byte word carried over between updates.
    pending: [u8; 8],
    pending_len: usize,
}

const MULTIPLIER: u64 = 0x517c_c1b7_2722_0a95;

impl Default for Checksum {
    fn default() -> Checksum {
        Checksum::new()
    }
}

impl Checksum {
    /// The checksum of nothing yet.
    pub fn new() -> Checksum {
        Checksum {
            hash: 0,
            len: 0,
            pending: [0; 8],
            pending_len: 0,
        }
    }

    fn mix(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(MULTIPLIER);
    }

    /// Add `bytes`; splitting a stream into updates differently gives the same checksum.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.pending_len > 0 {
            let take = bytes.len().min(8 - self.pending_len);
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().expect("chunks of 8")));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The checksum of everything added so far.
    pub fn finish(&self) -> u64 {
        let mut last = self.clone();
        let mut tail = [0u8; 8];
        tail[..last.pending_len].copy_from_slice(&last.pending[..last.pending_len]);
        last.mix(u64::from_le_bytes(tail));
        last.mix(last.len);
        last.hash
    }
}

/// The checksum of one buffer.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut sum = Checksum::new();
    sum.update(bytes);
    sum.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_updates_agree_and_changes_show() {
        let bytes: Vec<u8> = (0..100u32).map(|i| (i * 37 % 251) as u8).collect();
        let whole = checksum(&bytes);
        for cut in [0, 1, 7, 8, 9, 50, 99, 100] {
            let mut sum = Checksum::new();
            sum.update(&bytes[..cut]);
            sum.update(&bytes[cut..]);
            assert_eq!(sum.finish(), whole, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[42] ^= 1;
        assert_ne!(checksum(&flipped), whole);
        assert_ne!(checksum(&bytes[..99]), whole);
        // A trailing zero byte changes the length, so the checksum too.
        let mut longer = bytes.clone();
        longer.push(0);
        assert_ne!(checksum(&longer), whole);
    }
}
