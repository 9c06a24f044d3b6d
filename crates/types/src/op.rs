//! The access stream: what a workload or a trace reader produces and every translation scheme
//! consumes, in order.

use crate::addr::Gva;
use serde::{Deserialize, Serialize};

/// A guest process identifier (also its address-space / PCID tag).
pub type Pid = u16;

/// The kind of a memory access.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum AccessKind {
    /// A data read.
    Load,
    /// A data write.
    Store,
    /// An instruction fetch (translated through the instruction TLB).
    Fetch,
}

/// One step of the stream seen by the simulated guest.
///
/// Memory regions are mapped with [`Op::Map`] before use; an access outside every mapped region
/// is demand-mapped at 2 MiB granularity (trace mode: the region is assumed to exist).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Op {
    /// A memory access by the current process. `instrs` is the number of instructions retired
    /// since the previous access, this one's instruction included (0 for the second and later
    /// access of one instruction).
    Access {
        /// The virtual address accessed.
        gva: Gva,
        /// Load, store or fetch.
        kind: AccessKind,
        /// Instructions retired since the previous access.
        instrs: u32,
        /// The address depends on the data of the previous load (pointer chasing: the access
        /// cannot start before that load completes). `false`: independent of earlier loads, free
        /// to overlap with them. Workloads know it; trace readers apply a stated rule.
        dep: bool,
    },
    /// The current process maps `[start, start + len)` (an mmap: the region becomes valid; pages
    /// are populated on first touch).
    Map {
        /// First byte, 4 KiB aligned.
        start: Gva,
        /// Length in bytes, a multiple of 4 KiB.
        len: u64,
    },
    /// The current process unmaps `[start, start + len)`: its page-table entries are cleared and
    /// its frames freed.
    Unmap {
        /// First byte, 4 KiB aligned.
        start: Gva,
        /// Length in bytes, a multiple of 4 KiB.
        len: u64,
    },
    /// The guest OS switches to process `pid` (a CR3 load). A process that did not exist is
    /// created with an empty address space.
    Switch {
        /// The process to run next.
        pid: Pid,
    },
}

impl Op {
    /// An independent load with one instruction.
    pub fn load(gva: u64) -> Op {
        Op::Access {
            gva: Gva(gva),
            kind: AccessKind::Load,
            instrs: 1,
            dep: false,
        }
    }
    /// A load with one instruction whose address depends on the previous load's data.
    pub fn load_dep(gva: u64) -> Op {
        Op::Access {
            gva: Gva(gva),
            kind: AccessKind::Load,
            instrs: 1,
            dep: true,
        }
    }
    /// A store with one instruction.
    pub fn store(gva: u64) -> Op {
        Op::Access {
            gva: Gva(gva),
            kind: AccessKind::Store,
            instrs: 1,
            dep: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn op_is_compact() {
        assert!(std::mem::size_of::<Op>() <= 24);
    }
}
