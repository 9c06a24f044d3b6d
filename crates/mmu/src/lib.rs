//! Timing side of address translation in a virtual machine: what it costs to find out what
//! `compromis-vmem` says maps to what. It decides no mapping and drives no simulation (the engine
//! is `compromis-sim`'s).
//!
//! - [`setassoc`]: the set-associative LRU array behind every TLB and cache;
//! - [`tlb`]: L1 data/instruction TLBs, the second-level TLB, page-walk caches;
//! - [`schemes`]: one file per translation scheme (native, EPT, shadow paging, Compromis), each a
//!   [`scheme::Walker`] wrapped by [`scheme::Mmu`] into a [`scheme::Scheme`];
//! - [`cache`] and [`mem`]: the data caches every walk reference and data access goes through;
//! - [`pagecache`]: the perfect-TLB baseline's memory of whole-page translations (speed only);
//! - [`seen`]: the pages given a prefetch hint recently (speed only);
//! - [`stats`]: per-scheme counters (subtractable for warm-up);
//! - [`timing`]: memory-level parallelism (accesses overlapped up to the fill buffers, walks up
//!   to the page walkers, dependent accesses in a chain);
//! - [`config`]: the machine model (sizes, latencies, costs; TOML).

pub mod cache;
pub mod config;
pub mod mem;
pub mod pagecache;
pub mod scheme;
pub mod schemes;
pub mod seen;
pub mod setassoc;
pub mod stats;
pub mod timing;
pub mod tlb;

pub use cache::{DataCaches, Level};
pub use config::{ConfigError, Geometry, MachineConfig};
pub use scheme::{Scheme, SchemeKind};
pub use schemes::perfect_tlb;
pub use stats::{ExitCause, Stats};
