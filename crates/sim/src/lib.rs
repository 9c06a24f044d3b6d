//! Experiments: one command's worth of simulation.
//!
//! Builds a VM (guest-physical layout with the MMIO hole, the hypervisor's backing of it), runs a
//! synthetic workload or a trace through every selected translation scheme and the perfect-TLB
//! baseline ([`engine`]), and derives the figures users read: miss rates, references per walk,
//! exits, cycles, overheads and speedups. The CLI and the reproduction report both call this
//! crate.

use compromis_hostmem::{Fallback, HostMemory, Policy, VmId, VmMemory};
use compromis_mmu::{MachineConfig, SchemeKind, Stats};
use compromis_types::{ByteSize, Hpa, Op, PageSize};
use compromis_vmem::{Backing, GuestLayout, HV_PRIVATE_BASE, HvFrames, Run, Segment};
use compromis_workload::{WorkloadError, WorkloadSpec};
use serde::Serialize;
use std::sync::Arc;
use thiserror::Error;

pub mod engine;
pub mod table;

pub use engine::{
    Baseline, BaselineResult, EngineError, RunKind, RunResult, SchemeResult, SchemeRun, SimConfig,
    SimResults, simulate,
};

/// Experiment errors.
#[derive(Debug, Error)]
pub enum ExperimentError {
    /// The simulation failed.
    #[error(transparent)]
    Sim(#[from] EngineError),
    /// The workload spec is invalid.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The workload does not fit in the VM.
    #[error(
        "footprint {footprint} does not fit in the VM's {ram} of memory (page tables need room too); raise --vm-memory or lower --footprint"
    )]
    FootprintTooLarge {
        /// What the workload maps.
        footprint: ByteSize,
        /// The VM's RAM.
        ram: ByteSize,
    },
    /// The VM cannot be built.
    #[error("vm: {0}")]
    Vm(String),
}

/// What the hypervisor does when the VM cannot get one host extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HostFallback {
    /// A segment table of at most `k` register sets; RAM beyond them is refused.
    Segments(usize),
    /// EPT pages from whatever free memory remains; Compromis then takes its fallback path.
    Ept,
}

/// Where the VM's memory comes from on the host.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum HostState {
    /// A host with free memory: the VM gets one extent.
    Fresh,
    /// An aged host: `host` bytes of RAM, filled to `fill` (0..1) by a seeded history of other
    /// VMs arriving and leaving, then our VM is provisioned with `fallback` if one extent is
    /// impossible.
    Aged {
        /// Host RAM in bytes.
        host: u64,
        /// Fraction of host memory used by other VMs.
        fill: f64,
        /// Seed of the history.
        seed: u64,
        /// Fallback when one extent is impossible.
        fallback: HostFallback,
    },
}

/// The VM to build.
#[derive(Clone, Debug, Serialize)]
pub struct VmSpec {
    /// Guest RAM.
    pub ram: ByteSize,
    /// Largest EPT leaf the host uses (host THP / hugetlbfs).
    pub host_page: PageSize,
    /// Host memory state.
    pub host: HostState,
}

/// What the hypervisor gave the VM.
#[derive(Clone, Debug, Serialize)]
pub struct VmInfo {
    /// Guest RAM in bytes.
    pub ram: u64,
    /// Guest RAM ranges `(start, len)` (two when the MMIO hole splits RAM).
    pub ram_ranges: Vec<(u64, u64)>,
    /// Host extents backing the VM.
    pub host_extents: usize,
    /// Segment register sets loaded on VM entry.
    pub segments: usize,
    /// RAM bytes covered by segments.
    pub segment_bytes: u64,
    /// EPT leaves of 4 KiB, 2 MiB, 1 GiB.
    pub ept_leaves: [u64; 3],
    /// How the memory manager provisioned the VM (`one-extent`, `multi-segment`, `ept`).
    pub provisioning: String,
    /// Host fragmentation (1 - largest free / free) just before the VM was provisioned.
    pub host_fragmentation: f64,
}

/// Where a fresh VM's host memory starts (above the hypervisor's own memory; 1 GiB aligned).
pub const FRESH_HOST_BASE: Hpa = Hpa(4 << 30);

/// Default VM size for a workload mapping `mapped` bytes: the footprint plus 12.5% and 256 MiB
/// for page tables and the guest kernel, rounded up to 1 GiB.
pub fn default_ram(mapped: u64) -> ByteSize {
    let want = mapped + mapped / 8 + (256 << 20);
    ByteSize(want.div_ceil(1 << 30) * (1 << 30))
}

/// Builds the VM's backing.
pub fn build_vm(spec: &VmSpec) -> Result<(Arc<Backing>, VmInfo), ExperimentError> {
    if spec.ram.bytes() == 0 || !spec.ram.bytes().is_multiple_of(4096) {
        return Err(ExperimentError::Vm(format!(
            "VM memory {} must be a non-zero multiple of 4 KiB",
            spec.ram
        )));
    }
    let layout = GuestLayout::for_ram(spec.ram.bytes());
    let mut hv = HvFrames::new(HV_PRIVATE_BASE);
    let (backing, host_extents, provisioning, host_fragmentation) = match spec.host {
        HostState::Fresh => (
            Backing::contiguous(layout, FRESH_HOST_BASE, spec.host_page, &mut hv),
            1,
            "one-extent".to_owned(),
            0.0,
        ),
        HostState::Aged {
            host,
            fill,
            seed,
            fallback,
        } => {
            let mut h = HostMemory::new(host, Policy::FirstFit);
            h.age(seed, fill);
            let frag = h.fragmentation();
            let fb = match fallback {
                HostFallback::Segments(k) => Fallback::Segments(k),
                HostFallback::Ept => Fallback::Ept,
            };
            let m = h
                .provision(VmId(0), spec.ram.bytes(), spec.host_page, fb)
                .map_err(|e| {
                    ExperimentError::Vm(format!("the aged host cannot provision the VM: {e}"))
                })?;
            let how = if m.pages.is_empty() && m.host_extents.len() == 1 {
                "one-extent"
            } else if m.pages.is_empty() {
                "multi-segment"
            } else {
                "ept"
            };
            let backing = backing_of(&m, spec.host_page, &mut hv)?;
            (backing, m.host_extents.len(), how.to_owned(), frag)
        }
    };
    let info = VmInfo {
        ram: spec.ram.bytes(),
        ram_ranges: backing
            .layout()
            .ram
            .iter()
            .map(|r| (r.start.0, r.len))
            .collect(),
        host_extents,
        segments: backing.segments().len(),
        segment_bytes: backing.segment_bytes(),
        ept_leaves: backing.ept_leaves(),
        provisioning,
        host_fragmentation,
    };
    Ok((Arc::new(backing), info))
}

/// The simulator's view of what the memory manager provisioned: segments become register sets
/// (and runs), EPT-only pages become runs (adjacent contiguous pages merged).
fn backing_of(
    m: &VmMemory,
    host_page: PageSize,
    hv: &mut HvFrames,
) -> Result<Backing, ExperimentError> {
    let mut runs: Vec<Run> = m
        .segments
        .iter()
        .map(|s| Run {
            gpa: s.base,
            hpa: s.host_base,
            len: s.limit.0 - s.base.0,
        })
        .collect();
    let mut pages = m.pages.clone();
    pages.sort_by_key(|p| p.gpa);
    for p in pages {
        match runs.last_mut() {
            Some(r) if r.gpa.0 + r.len == p.gpa.0 && r.hpa.0 + r.len == p.hpa.0 => {
                r.len += p.size.bytes()
            }
            _ => runs.push(Run {
                gpa: p.gpa,
                hpa: p.hpa,
                len: p.size.bytes(),
            }),
        }
    }
    let segments = m
        .segments
        .iter()
        .map(|s| Segment {
            base: s.base,
            limit: s.limit,
            host_base: s.host_base,
        })
        .collect();
    let layout = GuestLayout::for_ram(m.layout.ram_bytes());
    Backing::new(layout, runs, segments, host_page, hv)
        .map_err(|e| ExperimentError::Vm(e.to_string()))
}

/// An experiment: the simulation settings and the VM.
#[derive(Clone, Debug)]
pub struct Experiment {
    /// Simulation settings (machine model, guest OS, schemes, warm-up). The perfect-TLB
    /// baseline is always run (the cycle model needs it), whatever `sim.baseline` says.
    pub sim: SimConfig,
    /// The VM.
    pub vm: VmSpec,
}

/// The cycle model's account of one scheme's measured phase.
///
/// `total = base + data + translation`, `translation = stlb + walks + exits + faults`;
/// `ideal` is `base` plus the data-access cycles of the same stream with a perfect TLB.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CycleAccount {
    /// Instructions x base CPI.
    pub base: f64,
    /// The program's data accesses through the caches (with this scheme's page-table entries
    /// competing for them).
    pub data: f64,
    /// Second-level TLB hits x their latency.
    pub stlb: f64,
    /// Page-walk cycles.
    pub walks: f64,
    /// VM exits x their cost by cause.
    pub exits: f64,
    /// Guest page faults x the guest's handling cost.
    pub faults: f64,
    /// `stlb + walks + exits + faults`.
    pub translation: f64,
    /// `base + data + translation`.
    pub total: f64,
    /// Cycles of the same stream with a perfect TLB.
    pub ideal: f64,
    /// `total / ideal - 1`.
    pub overhead: f64,
    /// Mean cycles per page walk.
    pub walk_latency: f64,
}

impl CycleAccount {
    /// The account of `s`, with costs from `m` and the ideal run's counters.
    #[allow(clippy::cast_precision_loss)] // counters stay far below 2^53
    pub fn of(s: &Stats, ideal: &Stats, m: &MachineConfig) -> CycleAccount {
        let f = |x: u64| x as f64;
        let base = f(s.instructions) * m.core.base_cpi;
        let e = &m.exits;
        let exits = f(s.exits.pt_write) * f(e.pt_write)
            + f(s.exits.cr3_load) * f(e.cr3_load)
            + f(s.exits.page_fault) * f(e.page_fault)
            + f(s.exits.invlpg) * f(e.invlpg);
        let stlb = f(s.stlb_hits) * f(m.latency.stlb_hit);
        let walks = f(s.walk_cycles);
        let faults = f(s.page_faults) * f(e.guest_page_fault);
        let translation = stlb + walks + exits + faults;
        let data = f(s.data_cycles);
        let total = base + data + translation;
        let ideal = f(ideal.instructions) * m.core.base_cpi + f(ideal.data_cycles);
        CycleAccount {
            base,
            data,
            stlb,
            walks,
            exits,
            faults,
            translation,
            total,
            ideal,
            overhead: if ideal > 0.0 {
                total / ideal - 1.0
            } else {
                0.0
            },
            walk_latency: if s.walks > 0 { walks / f(s.walks) } else { 0.0 },
        }
    }
}

/// Derived figures of one scheme's measured phase.
#[derive(Clone, Debug, Serialize)]
pub struct Derived {
    /// L1 TLB miss rate.
    pub l1_miss_rate: f64,
    /// Second-level TLB misses per 1000 instructions.
    pub stlb_mpki: f64,
    /// Mean memory references per walk.
    pub refs_per_walk: f64,
    /// Mean guest-dimension references per walk.
    pub guest_refs_per_walk: f64,
    /// Mean host-dimension references per walk.
    pub host_refs_per_walk: f64,
    /// VM exits per 1000 instructions.
    pub exits_pki: f64,
}

impl Derived {
    /// From counters.
    pub fn of(s: &Stats) -> Derived {
        use compromis_mmu::stats::ratio;
        Derived {
            l1_miss_rate: ratio(s.l1_misses, s.l1_hits + s.l1_misses),
            stlb_mpki: 1000.0 * ratio(s.stlb_misses, s.instructions),
            refs_per_walk: s.refs_per_walk(),
            guest_refs_per_walk: ratio(s.walk_refs_guest, s.walks),
            host_refs_per_walk: ratio(s.walk_refs_host, s.walks),
            exits_pki: 1000.0 * ratio(s.exits.total(), s.instructions),
        }
    }
}

/// One scheme's outcome (`K` = [`Baseline`] for the perfect-TLB run).
#[derive(Clone, Debug, Serialize)]
pub struct SchemeOutcome<K = SchemeKind> {
    /// Raw counters.
    #[serde(flatten)]
    pub result: RunResult<K>,
    /// Derived figures of the measured phase.
    pub derived: Derived,
    /// The cycle model's account of the measured phase.
    pub cycles: CycleAccount,
}

/// The outcome of an experiment.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Name of the workload or trace.
    pub source: String,
    /// The VM.
    pub vm: VmInfo,
    /// Per scheme, in the order asked.
    pub schemes: Vec<SchemeOutcome>,
    /// The perfect-TLB baseline run.
    pub ideal: SchemeOutcome<Baseline>,
}

impl Outcome {
    /// The outcome of `kind`, if it was simulated.
    pub fn scheme(&self, kind: SchemeKind) -> Option<&SchemeOutcome> {
        self.schemes.iter().find(|s| s.result.scheme == kind)
    }

    /// Speedup of `a` over `b`: runtime(b) / runtime(a).
    pub fn speedup(&self, a: SchemeKind, b: SchemeKind) -> Option<f64> {
        let (a, b) = (self.scheme(a)?, self.scheme(b)?);
        (a.cycles.total > 0.0).then(|| b.cycles.total / a.cycles.total)
    }
}

/// Runs `source` (named `name`) through the experiment.
pub fn run_source<I, E>(
    exp: &Experiment,
    name: &str,
    source: I,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, ExperimentError>
where
    I: IntoIterator<Item = Result<Op, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let (backing, vm) = build_vm(&exp.vm)?;
    let mut sim = exp.sim.clone();
    sim.baseline = true;
    let results = simulate(&sim, &backing, source, progress)?;
    let ideal_result = results.baseline.ok_or(EngineError::NoBaseline)?;
    let m = &exp.sim.machine;
    let ideal_stats = ideal_result.measured.clone();
    fn outcome<K>(r: RunResult<K>, ideal: &Stats, m: &MachineConfig) -> SchemeOutcome<K> {
        SchemeOutcome {
            derived: Derived::of(&r.measured),
            cycles: CycleAccount::of(&r.measured, ideal, m),
            result: r,
        }
    }
    let schemes = results
        .schemes
        .into_iter()
        .map(|r| outcome(r, &ideal_stats, m))
        .collect();
    let ideal = outcome(ideal_result, &ideal_stats, m);
    Ok(Outcome {
        source: name.to_owned(),
        vm,
        schemes,
        ideal,
    })
}

/// Runs a synthetic workload. The VM must hold the workload's footprint.
pub fn run_workload(
    exp: &Experiment,
    spec: &WorkloadSpec,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, ExperimentError> {
    spec.validate()?;
    let mapped = compromis_workload::mapped_bytes(spec);
    // Guest page tables take ~0.2% of mapped memory; keep 1/64 of RAM for them and the kernel.
    let ram = exp.vm.ram.bytes();
    if mapped > ram - ram / 64 {
        return Err(ExperimentError::FootprintTooLarge {
            footprint: ByteSize(mapped),
            ram: exp.vm.ram,
        });
    }
    let ops = compromis_workload::build(spec)?;
    run_source(
        exp,
        spec.kind.name(),
        ops.map(Ok::<_, std::convert::Infallible>),
        progress,
    )
}
