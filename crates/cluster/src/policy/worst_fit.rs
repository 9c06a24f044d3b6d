//! Contiguity-oblivious worst-fit: the host with the most free memory (load spreading; ties:
//! highest host id).

use super::PlacementPolicy;
use crate::index::{ClusterIndex, HostId, IndexNeeds};

/// Worst-fit on free memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorstFit;

impl PlacementPolicy for WorstFit {
    fn name(&self) -> &'static str {
        "worst-fit"
    }
    fn contiguity_aware(&self) -> bool {
        false
    }
    fn needs(&self) -> IndexNeeds {
        IndexNeeds {
            most_free: true,
            ..IndexNeeds::TREES
        }
    }
    fn choose(&mut self, ix: &ClusterIndex, mem: u64, vcpus: u32) -> Option<HostId> {
        ix.worst_by_free(mem, vcpus)
    }
}
