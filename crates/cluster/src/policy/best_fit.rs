//! Contiguity-oblivious best-fit: the host whose free memory is the smallest that still fits
//! (ties: lowest host id); the packing most production schedulers approximate.

use super::PlacementPolicy;
use crate::index::{ClusterIndex, HostId, IndexNeeds};

/// Best-fit on free memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct BestFit;

impl PlacementPolicy for BestFit {
    fn name(&self) -> &'static str {
        "best-fit"
    }
    fn contiguity_aware(&self) -> bool {
        false
    }
    fn needs(&self) -> IndexNeeds {
        IndexNeeds {
            by_free_cores: true,
            ..IndexNeeds::TREES
        }
    }
    fn choose(&mut self, ix: &ClusterIndex, mem: u64, vcpus: u32) -> Option<HostId> {
        ix.best_by_free(mem, vcpus)
    }
}
