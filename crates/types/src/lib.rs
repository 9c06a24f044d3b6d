//! Shared vocabulary of Compromis.
//!
//! Every other crate speaks in these types:
//! - address newtypes for the three address spaces of a virtual machine ([`Gva`] guest-virtual,
//!   [`Gpa`] guest-physical, [`Hpa`] host-physical); mixing them does not compile;
//! - [`PageSize`] (4 KiB, 2 MiB, 1 GiB) and [`ByteSize`] (parsed from `4GiB`, `512M`, `4096`...);
//! - [`Cycles`];
//! - a VM's memory vocabulary shared by every layer: [`VmId`], [`GuestLayout`] (RAM around the MMIO
//!   hole), [`GpaRange`], host-physical [`Extent`]s and the segment register set [`Segment`];
//! - the access stream record [`Op`] that workloads and trace readers produce and the simulator
//!   consumes;
//! - [`hint`]: the host cache hint (a prefetch) the simulator's and the placement engine's speed
//!   aids share;
//! - [`cleanup`]: the temporary files and folders a signal handler removes before exiting;
//! - `fuzz` (feature `fuzz`): the mutation fuzzing the input readers' tests share.

mod addr;
pub mod cleanup;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod hint;
mod op;
mod size;
mod vm;

pub use addr::{Address, Gpa, Gva, Hpa};
pub use op::{AccessKind, Op, Pid};
pub use size::{ByteSize, Cycles, PageSize, SizeError};
pub use vm::{Extent, GpaRange, GuestLayout, HIGH_RAM_START, MMIO_HOLE_START, Segment, VmId};

/// The seed every command and library default uses unless told otherwise.
pub const DEFAULT_SEED: u64 = 42;
