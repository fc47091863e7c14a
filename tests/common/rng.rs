//! A small seeded random generator (SplitMix64) so randomized tests can be replayed: each
//! prints its seed, and `NEXUS_TEST_SEED=<n>` runs it again with the same choices.

use std::time::{SystemTime, UNIX_EPOCH};

/// The variable that fixes the seed of every randomized test.
pub const SEED_VAR: &str = "NEXUS_TEST_SEED";

/// SplitMix64: tiny, fast, and good enough to pick gaps and delays.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator that yields the same sequence for the same seed.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// A number in `0..=max`.
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }
}

/// A well-spread value for `(seed, a, b)`, for choices that must not depend on the order in
/// which threads ask (e.g. per mock connection and per idle period).
pub fn hash3(seed: u64, a: u64, b: u64) -> u64 {
    mix(mix(seed ^ mix(a.wrapping_add(0x632B_E59B_D9B4_E019))) ^ b)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `NEXUS_TEST_SEED` when set, else one from the clock; printed either way (the test
/// harness shows it when the test fails) with how to replay it.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_VAR) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={value:?} is not a u64")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5EED),
    };
    eprintln!("{test}: seed {seed} (replay with {SEED_VAR}={seed})");
    seed
}
