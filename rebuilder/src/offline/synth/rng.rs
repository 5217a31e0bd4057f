//! The generator's random numbers: a seeded splitmix64, so the same configuration always
//! yields the same capture.

/// splitmix64: tiny, fast, good enough to drive a test-traffic generator deterministically.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; `0` yields `0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi` (`hi < lo` yields `lo`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// `true` with probability `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    /// Appends `n` bytes drawn from `alphabet`.
    pub fn fill_from(&mut self, out: &mut Vec<u8>, n: usize, alphabet: &[u8]) {
        let mut left = n;
        while left > 0 {
            let mut word = self.next_u64();
            for _ in 0..left.min(8) {
                out.push(alphabet[(word & 0xff) as usize % alphabet.len()]);
                word >>= 8;
            }
            left -= left.min(8);
        }
    }
}
