//! Datacenter scheduler of Compromis (VEE 2021, section 5): replays VM traces on a fleet of hosts
//! under placement policies and returns the share of VMs given a single memory segment as data
//! ([`PlacementReport`]); it never prints, plots or writes files (`compromis_report::place` does).
//!
//! Each host's memory is managed by the hypervisor memory manager (`compromis_hostmem`); the
//! policies are contiguity-oblivious or contiguity-aware.
//!
//! - [`trace`]: streaming readers (Azure vmtable V1/V2, Azure-rnn, Google 2011, Alibaba 2018,
//!   Bitbrains) and a synthetic generator calibrated on Azure;
//! - [`fleet`]: hosts and heterogeneous fleets (`20000x192GiB/24c`);
//! - [`policy`]: the placement policies, one per file, and the fallbacks;
//! - [`engine`]: the event engine ([`simulate`]) and the independent checker;
//! - [`compare`]: a placement study ([`PlaceRequest`]): defaults, several policies in parallel;
//! - [`metrics`]: the report of a run and its time series;
//! - [`sizing`]: a fleet sized so the trace's peak demand is a target utilisation.
//!
//! ```
//! use compromis_cluster::{simulate, Fallback, Fleet, PolicyKind, SyntheticConfig, SyntheticTrace};
//! let trace = SyntheticTrace::new(SyntheticConfig { vms: 200, ..SyntheticConfig::default() }).unwrap();
//! let fleet: Fleet = "10x192GiB/48c".parse().unwrap();
//! let rep = simulate(trace, &fleet, &PolicyKind::ContigFirstFit, &Fallback::Segments(8), 1).unwrap();
//! assert_eq!(rep.arrivals, 200);
//! assert!(rep.single_segment_share() > 0.5);
//! ```

pub mod compare;
pub mod engine;
pub mod event;
pub mod fleet;
pub mod hm;
pub mod index;
pub mod metrics;
pub mod policy;
pub mod sizing;
pub mod trace;

pub use compare::{DEFAULT_TRACE_FLEET, PlaceError, PlaceRequest, PlaceSource};
pub use compromis_hostmem::Fallback;
pub use engine::{
    Cluster, Placed, ReplayError, ReplayOptions, simulate, simulate_observed, simulate_with,
};
pub use event::{Event, VmKey, VmTraceError};
pub use fleet::{Fleet, FleetError, HostSpec, VM_GRANULE};
pub use metrics::{PlacementReport, RejectReason, Sample};
pub use policy::{PlacementPolicy, PolicyKind};
pub use trace::{
    EventStream, SyntheticConfig, SyntheticTrace, TraceFormat, TraceOptions, open_trace,
};
