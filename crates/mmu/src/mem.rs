//! The timing of memory references: every page-walk reference and every data access of a scheme
//! goes through that scheme's data-cache hierarchy, and hits in walk caches (page-walk caches,
//! nested TLB, segment registers) cost their configured latency. References of one walk are
//! dependent (each needs the previous entry), so a walk's latency is the sum of its references'.

use crate::cache::{DataCaches, Level};
use crate::config::{LatencyConfig, MachineConfig};
use crate::stats::Stats;
use compromis_types::Hpa;

/// A structure that answered part of a walk without a memory reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortcut {
    /// A guest-dimension or host page-walk-cache hit.
    Pwc,
    /// A nested-TLB hit.
    NestedTlb,
    /// A segment-register translation (one compare and one add).
    Segment,
}

/// One scheme's memory system.
#[derive(Clone, Debug)]
pub struct Mem {
    caches: DataCaches,
    lat: LatencyConfig,
}

#[inline]
fn level_index(l: Level) -> usize {
    match l {
        Level::L1 => 0,
        Level::L2 => 1,
        Level::Llc => 2,
        Level::Dram => 3,
    }
}

impl Mem {
    /// From a validated configuration.
    pub fn new(cfg: &MachineConfig) -> Mem {
        Mem {
            caches: DataCaches::new(&cfg.cache),
            lat: cfg.latency.clone(),
        }
    }

    /// A page-walk reference reading the entry at `hpa`.
    #[inline]
    pub fn walk_ref(&mut self, hpa: Hpa, stats: &mut Stats) {
        let (level, cycles) = self.caches.access(hpa);
        stats.walk_cycles += cycles;
        stats.walk_ref_levels[level_index(level)] += 1;
    }

    /// A host-dimension (EPT) page-walk reference: as [`Mem::walk_ref`], also counted in the
    /// host share (`walk_cycles_host`, `walk_ref_levels_host`).
    #[inline]
    pub fn host_walk_ref(&mut self, hpa: Hpa, stats: &mut Stats) {
        let (level, cycles) = self.caches.access(hpa);
        stats.walk_cycles += cycles;
        stats.walk_ref_levels[level_index(level)] += 1;
        stats.walk_cycles_host += cycles;
        stats.walk_ref_levels_host[level_index(level)] += 1;
    }

    /// Part of a walk answered by `what`.
    #[inline]
    pub fn shortcut(&mut self, what: Shortcut, stats: &mut Stats) {
        stats.walk_cycles += self.shortcut_cycles(what);
    }

    /// Part of the host (EPT) dimension of a walk answered by `what`: as [`Mem::shortcut`], also
    /// counted in `walk_cycles_host`.
    #[inline]
    pub fn host_shortcut(&mut self, what: Shortcut, stats: &mut Stats) {
        let c = self.shortcut_cycles(what);
        stats.walk_cycles += c;
        stats.walk_cycles_host += c;
    }

    #[inline]
    fn shortcut_cycles(&self, what: Shortcut) -> u64 {
        match what {
            Shortcut::Pwc => self.lat.pwc_hit,
            Shortcut::NestedTlb => self.lat.ntlb_hit,
            Shortcut::Segment => self.lat.segment,
        }
    }

    /// Whether [`Mem::prefetch`] does anything (the data caches have a level it prefetches).
    #[inline]
    pub fn prefetches(&self) -> bool {
        self.caches.prefetches()
    }

    /// Speed hint for a coming access of `hpa` (see [`DataCaches::prefetch`]); no state changes.
    #[inline]
    pub fn prefetch(&self, hpa: Hpa) {
        self.caches.prefetch(hpa);
    }

    /// The program's own access of `hpa`.
    #[inline]
    pub fn data(&mut self, hpa: Hpa, stats: &mut Stats) {
        let (level, cycles) = self.caches.access(hpa);
        stats.data_cycles += cycles;
        stats.data_levels[level_index(level)] += 1;
    }
}
