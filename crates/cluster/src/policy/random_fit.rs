//! Contiguity-oblivious random fit: a seeded uniformly random starting host, then the first host
//! from there (wrapping around) with enough free memory and cores.

use super::PlacementPolicy;
use crate::index::{ClusterIndex, HostId, IndexNeeds};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random-start first-fit.
#[derive(Clone, Debug)]
pub struct RandomFit {
    rng: ChaCha8Rng,
}

impl RandomFit {
    /// Seeded policy.
    pub fn new(seed: u64) -> RandomFit {
        RandomFit {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl PlacementPolicy for RandomFit {
    fn name(&self) -> &'static str {
        "random"
    }
    fn contiguity_aware(&self) -> bool {
        false
    }
    fn needs(&self) -> IndexNeeds {
        IndexNeeds::TREES
    }
    fn choose(&mut self, ix: &ClusterIndex, mem: u64, vcpus: u32) -> Option<HostId> {
        if ix.is_empty() {
            return None;
        }
        let start = self.rng.gen_range(0..ix.len());
        ix.first_by_free(start, mem, vcpus)
            .or_else(|| ix.first_by_free(0, mem, vcpus))
    }
}
