//! The machine model: every size and latency of the translation structures, caches and VM exits.
//!
//! One TOML file covers it all (`compromis config --defaults` prints the defaults with a source on
//! each value). Unknown keys and impossible values are errors, found by [`MachineConfig::validate`]
//! before any simulation starts.

use crate::setassoc::{GeometryError, SetAssoc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a configuration is unusable.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A TLB / PWC geometry is impossible.
    #[error("invalid geometry: {0}")]
    Geometry(#[from] GeometryError),
    /// A cache whose size is not ways x sets x line, or whose line is not a power of two.
    #[error("cache {name}: {reason}")]
    Cache {
        /// Which cache.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other impossible value.
    #[error("{key}: {reason}")]
    Value {
        /// The TOML key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The TOML did not parse or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
}

/// Entries and associativity of a TLB-like structure (`entries = 0` disables it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geometry {
    /// Number of entries (0 = absent).
    pub entries: usize,
    /// Associativity (`entries` for fully associative).
    pub ways: usize,
}

impl Geometry {
    /// `entries` entries, `ways` ways.
    pub const fn new(entries: usize, ways: usize) -> Geometry {
        Geometry { entries, ways }
    }
    /// An absent structure.
    pub const OFF: Geometry = Geometry { entries: 0, ways: 0 };
    /// Builds the structure.
    pub fn build(&self, name: &str) -> Result<SetAssoc, GeometryError> {
        SetAssoc::new(name, self.entries, self.ways)
    }
}

/// TLBs (guest-virtual -> final physical).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlbConfig {
    /// L1 data TLB, 4 KiB pages.
    pub l1d_4k: Geometry,
    /// L1 data TLB, 2 MiB pages.
    pub l1d_2m: Geometry,
    /// L1 data TLB, 1 GiB pages.
    pub l1d_1g: Geometry,
    /// L1 instruction TLB, 4 KiB pages.
    pub l1i_4k: Geometry,
    /// L1 instruction TLB, 2 MiB pages.
    pub l1i_2m: Geometry,
    /// Second-level (unified) TLB for 4 KiB and 2 MiB pages.
    pub stlb: Geometry,
    /// Second-level TLB for 1 GiB pages.
    pub stlb_1g: Geometry,
    /// Tagged TLBs (PCID/VPID): a CR3 load does not flush. When false every CR3 load flushes the
    /// TLBs and page-walk caches.
    pub tagged: bool,
}

impl Default for TlbConfig {
    fn default() -> Self {
        TlbConfig {
            l1d_4k: Geometry::new(64, 4),
            l1d_2m: Geometry::new(32, 4),
            l1d_1g: Geometry::new(4, 4),
            l1i_4k: Geometry::new(128, 8),
            l1i_2m: Geometry::new(8, 8),
            stlb: Geometry::new(1536, 12),
            stlb_1g: Geometry::new(16, 4),
            tagged: true,
        }
    }
}

/// Page-walk caches (Intel paging-structure caches) for the upper levels of the guest walk, and
/// the structures that speed up the host (EPT) dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalkCacheConfig {
    /// Caches level-4 entries (PML4E), keyed by VA bits 47:39. Level-5 entries with 5-level
    /// paging are cached here too.
    pub pml4: Geometry,
    /// Caches level-3 entries (PDPTE), keyed by VA bits 47:30.
    pub pdpt: Geometry,
    /// Caches level-2 entries (PDE), keyed by VA bits 47:21.
    pub pd: Geometry,
    /// Nested TLB: gPA page -> hPA page, for the gPAs met during a guest walk under EPT.
    pub nested_tlb: Geometry,
    /// Host page-walk cache for EPT level-4 entries, keyed by gPA bits.
    pub host_pml4: Geometry,
    /// Host page-walk cache for EPT level-3 entries.
    pub host_pdpt: Geometry,
    /// Host page-walk cache for EPT level-2 entries.
    pub host_pd: Geometry,
}

impl Default for WalkCacheConfig {
    fn default() -> Self {
        WalkCacheConfig {
            pml4: Geometry::new(2, 2),
            pdpt: Geometry::new(4, 4),
            pd: Geometry::new(32, 4),
            nested_tlb: Geometry::new(32, 4),
            host_pml4: Geometry::new(2, 2),
            host_pdpt: Geometry::new(4, 4),
            host_pd: Geometry::new(32, 4),
        }
    }
}

/// The machine model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MachineConfig {
    /// TLBs.
    pub tlb: TlbConfig,
    /// Page-walk caches, nested TLB, host walk caches.
    pub walk_caches: WalkCacheConfig,
}

impl MachineConfig {
    /// Every TLB-like structure disabled: each access walks, and walks see no caching.
    pub fn no_caches() -> MachineConfig {
        let off = Geometry::OFF;
        MachineConfig {
            tlb: TlbConfig {
                l1d_4k: off,
                l1d_2m: off,
                l1d_1g: off,
                l1i_4k: off,
                l1i_2m: off,
                stlb: off,
                stlb_1g: off,
                tagged: true,
            },
            walk_caches: WalkCacheConfig {
                pml4: off,
                pdpt: off,
                pd: off,
                nested_tlb: off,
                host_pml4: off,
                host_pdpt: off,
                host_pd: off,
            },
        }
    }

    /// Checks every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.tlb;
        let w = &self.walk_caches;
        for (name, g) in [
            ("tlb.l1d_4k", t.l1d_4k),
            ("tlb.l1d_2m", t.l1d_2m),
            ("tlb.l1d_1g", t.l1d_1g),
            ("tlb.l1i_4k", t.l1i_4k),
            ("tlb.l1i_2m", t.l1i_2m),
            ("tlb.stlb", t.stlb),
            ("tlb.stlb_1g", t.stlb_1g),
            ("walk_caches.pml4", w.pml4),
            ("walk_caches.pdpt", w.pdpt),
            ("walk_caches.pd", w.pd),
            ("walk_caches.nested_tlb", w.nested_tlb),
            ("walk_caches.host_pml4", w.host_pml4),
            ("walk_caches.host_pdpt", w.host_pdpt),
            ("walk_caches.host_pd", w.host_pd),
        ] {
            g.build(name)?;
        }
        Ok(())
    }
}
