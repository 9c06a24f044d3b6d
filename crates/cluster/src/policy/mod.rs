//! Placement policies: one trait, one implementation per file, chosen by a typed [`PolicyKind`].
//!
//! A policy only picks a host; the host's memory manager picks the extent(s). Contiguity-oblivious
//! policies (today's schedulers) look at free memory only; contiguity-aware ones return only a
//! host that has one free extent as large as the whole VM. What happens when the chosen host (or
//! no host) offers one extent is the memory manager's
//! [`compromis_hostmem::Fallback`], applied by the engine.

mod best_fit;
mod contig_first_fit;
mod first_fit;
mod frag_aware;
mod random_fit;
mod segment_best_fit;
mod worst_fit;

pub use best_fit::BestFit;
pub use contig_first_fit::ContigFirstFit;
pub use first_fit::FirstFit;
pub use frag_aware::FragAware;
pub use random_fit::RandomFit;
pub use segment_best_fit::SegmentBestFit;
pub use worst_fit::WorstFit;

use crate::index::{ClusterIndex, HostId, IndexNeeds};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A placement policy.
pub trait PlacementPolicy: Send {
    /// The policy's command-line name.
    fn name(&self) -> &'static str;
    /// True when [`PlacementPolicy::choose`] returns only hosts with one sufficient free extent.
    fn contiguity_aware(&self) -> bool;
    /// The ordered indexes [`PlacementPolicy::choose`] reads (the engine keeps only those).
    fn needs(&self) -> IndexNeeds {
        IndexNeeds::ALL
    }
    /// Picks a host for a VM of `mem` bytes (already rounded to the granule) and `vcpus` cores,
    /// or `None` when no host qualifies.
    fn choose(&mut self, ix: &ClusterIndex, mem: u64, vcpus: u32) -> Option<HostId>;
    /// A host the next [`PlacementPolicy::choose`] will look at first, when the policy knows it
    /// ahead (random-fit's next start): the engine starts loading that host's state early. A
    /// hint only: it never changes a result.
    fn next_hint(&self) -> Option<HostId> {
        None
    }
}

/// The policies, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    /// Lowest-numbered host with enough free memory (contiguity-oblivious).
    FirstFit,
    /// Host with the least sufficient free memory (contiguity-oblivious).
    BestFit,
    /// Host with the most free memory (contiguity-oblivious).
    WorstFit,
    /// Seeded random start, then first host with enough free memory (contiguity-oblivious).
    Random,
    /// Lowest-numbered host with one free extent as large as the VM.
    ContigFirstFit,
    /// Host whose smallest sufficient free extent is smallest.
    SegmentBestFit,
    /// Fragmentation-aware score: exact-fit extent first, else the host whose largest extent is the
    /// smallest sufficient one (keeps the biggest holes of the fleet for the biggest VMs).
    FragAware,
}

impl PolicyKind {
    /// Every policy.
    pub const ALL: [PolicyKind; 7] = [
        PolicyKind::FirstFit,
        PolicyKind::BestFit,
        PolicyKind::WorstFit,
        PolicyKind::Random,
        PolicyKind::ContigFirstFit,
        PolicyKind::SegmentBestFit,
        PolicyKind::FragAware,
    ];

    /// Command-line name.
    pub const fn name(self) -> &'static str {
        match self {
            PolicyKind::FirstFit => "first-fit",
            PolicyKind::BestFit => "best-fit",
            PolicyKind::WorstFit => "worst-fit",
            PolicyKind::Random => "random",
            PolicyKind::ContigFirstFit => "contig-first-fit",
            PolicyKind::SegmentBestFit => "segment-best-fit",
            PolicyKind::FragAware => "frag-aware",
        }
    }

    /// Builds the policy; `seed` drives any random choice.
    pub fn build(self, seed: u64) -> Box<dyn PlacementPolicy> {
        match self {
            PolicyKind::FirstFit => Box::new(FirstFit),
            PolicyKind::BestFit => Box::new(BestFit),
            PolicyKind::WorstFit => Box::new(WorstFit),
            PolicyKind::Random => Box::new(RandomFit::new(seed)),
            PolicyKind::ContigFirstFit => Box::new(ContigFirstFit),
            PolicyKind::SegmentBestFit => Box::new(SegmentBestFit),
            PolicyKind::FragAware => Box::new(FragAware),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown placement policy name.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown policy.
    #[error(
        "unknown placement policy '{0}': valid values are first-fit, best-fit, worst-fit, random, contig-first-fit, segment-best-fit, frag-aware"
    )]
    Policy(String),
}

impl FromStr for PolicyKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = s.trim().to_ascii_lowercase().replace('_', "-");
        PolicyKind::ALL
            .into_iter()
            .find(|p| p.name() == t)
            .ok_or_else(|| ParseError::Policy(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in PolicyKind::ALL {
            assert_eq!(p.name().parse::<PolicyKind>().unwrap(), p);
            assert_eq!(p.build(0).name(), p.name());
        }
        assert!(
            "nope"
                .parse::<PolicyKind>()
                .unwrap_err()
                .to_string()
                .contains("segment-best-fit")
        );
    }
}
