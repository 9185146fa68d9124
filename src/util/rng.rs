//! A small, platform-independent random stream: SplitMix64. Shuffles seed it by hashing the
//! parts that name them (seed, source, stream, epoch, ...), so every order can be rebuilt from
//! those parts alone, which is what makes resume exact without saving RNGs; model
//! initialisation seeds it directly.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A stream named by `parts` (order matters).
    pub fn keyed(parts: &[u64]) -> Self {
        let mut bytes = Vec::with_capacity(parts.len() * 8);
        for p in parts {
            bytes.extend_from_slice(&p.to_le_bytes());
        }
        SplitMix64(xxhash_rust::xxh3::xxh3_64(&bytes))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift (bias below 2^-32 for our sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in (0, 1].
    pub fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal pair (Box-Muller).
    pub fn next_normal_pair(&mut self) -> (f64, f64) {
        let r = (-2.0 * self.next_unit().ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * self.next_unit();
        (r * theta.cos(), r * theta.sin())
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A stable 64-bit key for a name (used in shuffle keys so they do not depend on order).
pub fn name_key(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}
