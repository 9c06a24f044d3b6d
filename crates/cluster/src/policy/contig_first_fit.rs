//! Contiguity-aware first-fit (the paper's scheduler, VEE 2021 section 5): the lowest-numbered
//! host that has one free extent as large as the VM's whole memory.

use super::PlacementPolicy;
use crate::index::{ClusterIndex, HostId, IndexNeeds};

/// First host with a sufficient extent.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContigFirstFit;

impl PlacementPolicy for ContigFirstFit {
    fn name(&self) -> &'static str {
        "contig-first-fit"
    }
    fn contiguity_aware(&self) -> bool {
        true
    }
    fn needs(&self) -> IndexNeeds {
        IndexNeeds::TREES
    }
    fn choose(&mut self, ix: &ClusterIndex, mem: u64, vcpus: u32) -> Option<HostId> {
        ix.first_by_extent(0, mem, vcpus)
    }
}
