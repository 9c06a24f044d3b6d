//! Hypervisor memory manager of Compromis (VEE 2021), the second layer of the system: gives each
//! VM its memory as one contiguous host-physical range (a direct segment, loaded into the BASE /
//! LIMIT / OFFSET registers) and keeps that true while VMs come, go, grow and shrink.
//!
//! Used by the simulator, the cluster placement engine and `compromis hv`:
//! - [`HostMap`]: the host physical memory map (RAM ranges, reserved ranges, NUMA nodes);
//! - [`ExtentAllocator`]: free extents in ordered indexes, policies first/best/worst/next-fit,
//!   4 KiB / 2 MiB / 1 GiB alignment, O(log n) allocation and free;
//! - [`HostMemory`]: one host's VMs and their extents; create, destroy, grow (hotplug), shrink,
//!   compaction (plan / apply / check), fragmentation metrics;
//! - [`GuestLayout`] and [`HostMemory::provision`]: the guest-physical layout with the MMIO hole, the
//!   segment registers or the EPT fallback mapping of a VM;
//! - [`HostMemory::age`]: a deterministic, seeded way to fragment a host realistically;
//! - [`scenario`]: the `compromis hv` scenario language, run step by step into typed
//!   [`StepOutcome`]s with a [`MapSnapshot`] after each.
//!
//! It returns data and never prints, plots or writes files (`compromis_report::hv` does).
//!
//! See `docs/hostmem.md` for the design.
//!
//! ```
//! use compromis_hostmem::{Fallback, HostMemory, Policy, Provisioned, VmId};
//! use compromis_types::PageSize;
//! const G: u64 = 1 << 30;
//! let mut h = HostMemory::new(16 * G, Policy::FirstFit);
//! // 8 GiB of guest RAM spans the MMIO hole: one host range of 8.25 GiB whose 256 MiB behind
//! // the hole stay free, one register set.
//! let m = h.provision(VmId(1), 8 * G, PageSize::Size2M, Fallback::Refuse).unwrap();
//! assert_eq!(m.outcome(), Provisioned::OneExtent { segments: 1 });
//! assert_eq!(h.free_bytes(), 8 * G);
//! assert_eq!(h.destroy(VmId(1)), Ok(8 * G));
//! h.check().unwrap();
//! ```

mod age;
mod extent;
mod host;
mod layout;
mod map;
mod ordset;
pub mod scenario;
mod snapshot;
mod vmtable;
pub mod warm;

pub use age::{AgeConfig, AgeReport};
pub use compromis_types::{
    Extent, GpaRange, GuestLayout, HIGH_RAM_START, MMIO_HOLE_START, Segment, VmId,
};
pub use extent::{AllocError, ExtentAllocator, GRANULE, ParsePolicyError, Policy};
pub use host::{
    CompactionPlan, FragStats, GrowOutcome, HostMemory, InvariantError, MAX_WINDOWS, Move, Owner,
    VmExtents, VmMapping, VmRecord,
};
pub use layout::{
    Fallback, HOLE_BYTES, LOW_RAM, MAX_SEGMENTS, PageMapping, ParseFallbackError, Provisioned,
    VmMemory, one_set_span, pages_for, ram_pieces, register_sets, segments_for,
};
pub use map::{HostMap, NumaNode, Reserved};
pub use scenario::{Refusal, Scenario, ScenarioError, StepOutcome, StepReport};
pub use snapshot::MapSnapshot;
