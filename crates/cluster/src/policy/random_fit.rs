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
    /// The next start, drawn one call ahead (for [`PlacementPolicy::next_hint`]), with the host
    /// count it was drawn for. A policy serves one fleet, so the starts are the same sequence
    /// as when each is drawn in its own call.
    next: Option<(usize, usize)>,
}

impl RandomFit {
    /// Seeded policy.
    pub fn new(seed: u64) -> RandomFit {
        RandomFit {
            rng: ChaCha8Rng::seed_from_u64(seed),
            next: None,
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
        let n = ix.len();
        let start = match self.next.take() {
            Some((len, start)) if len == n => start,
            _ => self.rng.gen_range(0..n),
        };
        self.next = Some((n, self.rng.gen_range(0..n)));
        ix.first_by_free(start, mem, vcpus)
            .or_else(|| ix.first_by_free(0, mem, vcpus))
    }
    fn next_hint(&self) -> Option<HostId> {
        self.next.and_then(|(_, s)| HostId::try_from(s).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The starts drawn one call ahead are the sequence drawn one per call, and the hint is the
    /// next call's start: on a fleet where every host fits, each choice is its start.
    #[test]
    fn starts_drawn_ahead_are_the_same_sequence() {
        let ix = ClusterIndex::with_needs((0..37).map(|_| (64, 4)), IndexNeeds::TREES);
        let mut pol = RandomFit::new(9);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        assert_eq!(pol.next_hint(), None);
        for _ in 0..200 {
            let want = rng.gen_range(0..ix.len());
            assert_eq!(pol.choose(&ix, 1, 1), Some(HostId::try_from(want).unwrap()));
            let hint = pol.next_hint().unwrap();
            assert_eq!(
                hint,
                HostId::try_from(rng.clone().gen_range(0..ix.len())).unwrap()
            );
        }
    }
}
