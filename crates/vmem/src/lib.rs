//! Functional memory model of a virtual machine: *what maps to what*, with no caches and no
//! timing (those live in `compromis-mmu`).
//!
//! - [`radix`]: x86-64 radix page tables (4 or 5 levels) whose table pages have physical
//!   addresses, so a walk reports the address of every entry it reads;
//! - the guest-physical layout (RAM below the MMIO hole, the hole, RAM above 4 GiB) and the
//!   segment register set are shared vocabulary (`compromis-types`), re-exported here;
//! - [`frames`] and [`guest`]: the guest OS (processes, demand paging, THP, unmap, CR3 switches);
//! - [`backing`]: the hypervisor's gPA -> hPA mapping, as an EPT and as Compromis segment
//!   registers;
//! - [`huge`]: word arrays advised for transparent huge pages (speed only);
//! - [`shadow`]: the hypervisor's shadow tables (gVA -> hPA) and their sync with the guest's,
//!   reporting the traps each guest event causes.

pub mod backing;
pub mod frames;
pub mod guest;
pub mod huge;
pub mod radix;
pub mod shadow;

pub use backing::{Backing, BackingError, HV_PRIVATE_BASE, HvFrames, Run};
pub use compromis_types::{GpaRange, GuestLayout, HIGH_RAM_START, MMIO_HOLE_START, Segment};
pub use frames::FramePolicy;
pub use guest::{Fault, GuestConfig, GuestCounters, GuestError, GuestOs, Unmapped};
pub use radix::{LastTwo, Leaf, LeafTables, PlannedWalk, RadixTable, WalkPath, Writes};
pub use shadow::{ShadowSync, ShadowTables, SyncMode, Traps};
