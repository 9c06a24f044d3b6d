//! Fragmentation-aware placement (our design). Score, in order:
//! 1. an extent of exactly the VM's size anywhere in the fleet (leaves no sliver behind);
//! 2. otherwise the host whose *largest* free extent is the smallest one that fits (ties: lowest
//!    host id). Hosts with the biggest holes are kept intact for the biggest VMs; a host whose
//!    largest hole barely fits is filled first. Inside the host the memory manager's best-fit
//!    takes the tightest extent.

use super::PlacementPolicy;
use crate::index::{ClusterIndex, HostId, IndexNeeds};

/// Exact fit, then best-fit on each host's largest extent.
#[derive(Clone, Copy, Debug, Default)]
pub struct FragAware;

impl PlacementPolicy for FragAware {
    fn name(&self) -> &'static str {
        "frag-aware"
    }
    fn contiguity_aware(&self) -> bool {
        true
    }
    fn needs(&self) -> IndexNeeds {
        IndexNeeds {
            extents: true,
            by_largest: true,
            ..IndexNeeds::TREES
        }
    }
    fn choose(&mut self, ix: &ClusterIndex, mem: u64, vcpus: u32) -> Option<HostId> {
        ix.smallest_extent(mem, mem, vcpus)
            .map(|(_, h)| h)
            .or_else(|| ix.best_by_largest(mem, vcpus))
    }
}
