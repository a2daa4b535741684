//! A hasher for keys that are already hashes or small distinct integers:
//! file ids, and the xxh3 key hashes of the expiry index.

use std::hash::Hasher;

/// File ids are small distinct integers handed out in order: they are
/// their own hash (every read looks one up, so SipHash showed in profiles).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    /// Key hashes (the expiry index's sets) are xxh3 outputs, already
    /// well mixed: they are kept as they are.
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write_u32(&mut self, n: u32) {
        // Spread the id over the bits hashbrown uses for buckets and tags.
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
