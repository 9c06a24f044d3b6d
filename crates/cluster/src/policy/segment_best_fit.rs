//! Segment best-fit: the host whose smallest sufficient free extent is the smallest of the fleet
//! (ties: lowest host id), i.e. best-fit over every free extent of the cluster.

use super::PlacementPolicy;
use crate::index::{ClusterIndex, HostId, IndexNeeds};

/// Best-fit over extents.
#[derive(Clone, Copy, Debug, Default)]
pub struct SegmentBestFit;

impl PlacementPolicy for SegmentBestFit {
    fn name(&self) -> &'static str {
        "segment-best-fit"
    }
    fn contiguity_aware(&self) -> bool {
        true
    }
    fn needs(&self) -> IndexNeeds {
        IndexNeeds {
            extents: true,
            ..IndexNeeds::TREES
        }
    }
    fn choose(&mut self, ix: &ClusterIndex, mem: u64, vcpus: u32) -> Option<HostId> {
        ix.smallest_extent(mem, u64::MAX, vcpus).map(|(_, h)| h)
    }
}
