//! The fuzzers' source of randomness: a seeded SplitMix64 generator (every run is
//! reproducible from its seed) and values that tend to find bugs (boundaries, all-ones,
//! sign bits, page sizes).

/// A small deterministic generator (SplitMix64): the same seed gives the same inputs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

/// Values worth trying more often than chance would: edges of every width, sign bits,
/// page sizes and masks.
const INTERESTING: [u64; 30] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    0x10,
    0x1f,
    0x20,
    0x3f,
    0x40,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xfff,
    0x1000,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// An index into a collection of `len` items (0 when empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// One of `items` (`None` when empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let index = self.index(items.len());
        items.get(index)
    }

    /// A value drawn from a mix of interesting constants (also shifted and negated), small
    /// numbers, single bits and uniform bits.
    pub fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => {
                let base = self.pick(&INTERESTING).copied().unwrap_or(0);
                match self.below(4) {
                    0 => base.wrapping_neg(),
                    1 => base.wrapping_add(1),
                    2 => base.wrapping_sub(1),
                    _ => base,
                }
            }
            1 => self.below(0x40),
            2 => 1u64 << self.below(64),
            3 => self.next_u64() & 0xffff_ffff,
            4 => !(1u64 << self.below(64)),
            _ => self.next_u64(),
        }
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// Mixes a run seed with a session number into the session's own seed.
pub fn session_seed(seed: u64, session: u64) -> u64 {
    let mut mixer = Rng::new(seed ^ session.wrapping_mul(0xa076_1d64_78bd_642f));
    mixer.next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_values() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.value(), b.value());
        }
        assert_ne!(session_seed(7, 1), session_seed(7, 2));
    }

    #[test]
    fn below_stays_below() {
        let mut rng = Rng::new(1);
        for bound in 1..200 {
            assert!(rng.below(bound) < bound);
        }
        assert_eq!(rng.below(0), 0);
    }
}
