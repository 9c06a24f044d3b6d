//! The per-host memory manager used by the engine: `compromis_hostmem`'s [`HostMemory`], re-exported
//! under the names the engine uses. The memory of every host is managed by it; the scheduler only
//! keeps a summary beside it ([`crate::index`]).

pub use compromis_hostmem::{AllocError, CompactionPlan, Extent, HostMemory, Move, Policy, VmId};
