//! Contiguity-oblivious first-fit: the lowest-numbered host with enough free memory and cores
//! (the classic bin-packing heuristic, e.g. OpenStack's filter scheduler without weighers).

use super::PlacementPolicy;
use crate::index::{ClusterIndex, HostId, IndexNeeds};

/// First-fit on free memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstFit;

impl PlacementPolicy for FirstFit {
    fn name(&self) -> &'static str {
        "first-fit"
    }
    fn contiguity_aware(&self) -> bool {
        false
    }
    fn needs(&self) -> IndexNeeds {
        IndexNeeds::TREES
    }
    fn choose(&mut self, ix: &ClusterIndex, mem: u64, vcpus: u32) -> Option<HostId> {
        ix.first_by_free(0, mem, vcpus)
    }
}
