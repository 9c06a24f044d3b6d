//! Experiments: one command's worth of simulation, and the engine that runs it.
//!
//! [`ExperimentRequest::build`] validates a request and sets every default once (accesses, warm-up,
//! VM memory, host); [`run`] provisions the VM through `compromis-hostmem` (one conversion,
//! [`backing_of`]), runs the workload or trace through every scheme and the perfect-TLB baseline
//! ([`engine`]) and derives cycles, overheads and speedups. The CLI, `repro` and `vmm` call it.

use compromis_hostmem::{AllocError, Fallback};
use compromis_mmu::{MachineConfig, SchemeKind, Stats};
use compromis_types::{ByteSize, Op, PageSize};
use compromis_vmem::BackingError;
use compromis_workload::{WorkloadError, WorkloadSpec};
use serde::Serialize;
use thiserror::Error;

pub mod compare;
pub mod engine;
mod request;
pub mod table;
mod vm;

pub use request::{
    AGED_HOST_FACTOR, DEFAULT_FALLBACK, DEFAULT_HOST_FILL, DEFAULT_SEED, ExperimentRequest,
    HostRequest, Input, Plan, Source, TRACE_VM_MEMORY, check_fits, default_ram,
};
pub use vm::{FRESH_HOST_BASE, HostState, VmInfo, VmSpec, backing_of, build_vm, is_refused};

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
    /// The VM's memory size is not a non-zero multiple of the host page.
    #[error("VM memory {ram} must be a non-zero multiple of the host page ({align})")]
    VmMemory {
        /// The VM's RAM.
        ram: ByteSize,
        /// The host page size.
        align: PageSize,
    },
    /// The memory manager cannot provision the VM.
    #[error("the host cannot provision the VM's {ram} (fallback {fallback})")]
    Provision {
        /// The VM's RAM.
        ram: ByteSize,
        /// The fallback that was allowed.
        fallback: Fallback,
        /// Why.
        #[source]
        source: AllocError,
    },
    /// The provisioned memory does not make a valid backing (a bug in the memory manager).
    #[error("the provisioned memory is not a valid backing")]
    Backing(#[from] BackingError),
    /// A size beyond what the simulator can hold in this machine's memory.
    #[error(
        "{what} {size} is more than {cap}, the most this machine can simulate (16 x its physical \
         memory: the simulator keeps about 1/64 of the simulated memory as page tables and \
         allocator state)"
    )]
    TooLarge {
        /// Which size (`--footprint`, `--vm-memory`).
        what: &'static str,
        /// The size asked for.
        size: compromis_types::ByteSize,
        /// The cap (16 x physical memory, at most 64 TiB).
        cap: compromis_types::ByteSize,
    },
    /// The warm-up leaves nothing to measure.
    #[error("--warmup {warmup} must be below the number of accesses ({accesses})")]
    Warmup {
        /// Warm-up accesses asked.
        warmup: u64,
        /// Accesses of the workload.
        accesses: u64,
    },
    /// The host fill is outside `[0, 1)`.
    #[error("--host-fill must be at least 0 and below 1, not {0}")]
    HostFill(f64),
    /// The aged host is smaller than the VM.
    #[error("--host-memory {host} is smaller than the VM ({ram})")]
    HostTooSmall {
        /// Host RAM.
        host: ByteSize,
        /// The VM's RAM.
        ram: ByteSize,
    },
    /// [`run`] was given a stream input, which only its owner can feed ([`run_source`]).
    #[error("the stream '{0}' must be run with run_source")]
    NoStream(String),
    /// A trace file cannot be opened.
    #[error(transparent)]
    Trace(#[from] compromis_trace::TraceError),
    /// A record of a trace file asks the guest what it cannot do (an address beyond the
    /// address space, more memory than the VM has): named by file and line or record number.
    #[error("{path}, {at}: {source} (--skip-bad-records skips such records)")]
    TraceContent {
        /// The trace file.
        path: String,
        /// `line N` or `record N`.
        at: String,
        /// What the guest said.
        source: compromis_vmem::GuestError,
    },
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

/// The one definition of overhead, word for word the same in docs/machine-model.md (tested).
pub const OVERHEAD_DEFINITION: &str = "Overhead = total / ideal - 1, where total is a scheme's cycles and ideal the cycles of the same stream behind a perfect TLB (no STLB hit, page walk or VM exit; the same data caches and the same memory-level parallelism), guest page faults included in both. So guest page faults are not overhead; STLB hits, page walks, VM exits and the cache lines that page-table entries take from data are.";

/// The cycle model's account of one scheme's measured phase.
///
/// **Overhead**: see [`OVERHEAD_DEFINITION`] (`overhead = total / ideal - 1`, guest page faults
/// in `total` and in `ideal`).
///
/// `total = base + memory + exits + faults`: `memory` is the memory timeline (STLB hits, walks and
/// data accesses, overlapped as far as memory-level parallelism allows; `memory = stlb + walks +
/// data - overlap`). `translation = stlb + walks + exits`, each at its full (serial) latency.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CycleAccount {
    /// Instructions x base CPI.
    pub base: f64,
    /// The program's data accesses through the caches (with this scheme's page-table entries
    /// competing for them), at their full latency.
    pub data: f64,
    /// Second-level TLB hits x their latency.
    pub stlb: f64,
    /// Page-walk cycles (references, walk-cache hits, the fixed cost per walk).
    pub walks: f64,
    /// Cycles of `stlb + walks + data` hidden by overlapping independent accesses.
    pub overlap: f64,
    /// The memory timeline: `stlb + walks + data - overlap`.
    pub memory: f64,
    /// VM exits x their cost by cause, plus the out-of-sync shadow entries reconciled.
    pub exits: f64,
    /// Guest page faults: the guest's handling plus the zeroing of the new pages.
    pub faults: f64,
    /// `stlb + walks + exits`.
    pub translation: f64,
    /// `base + memory + exits + faults`.
    pub total: f64,
    /// The same account's total for the perfect-TLB run.
    pub ideal: f64,
    /// `total / ideal - 1`.
    pub overhead: f64,
    /// Mean cycles per page walk.
    pub walk_latency: f64,
}

impl CycleAccount {
    /// The account of `s`, with costs from `m` and the perfect-TLB run's counters `ideal`.
    #[allow(clippy::cast_precision_loss)] // counters stay far below 2^53
    pub fn of(s: &Stats, ideal: &Stats, m: &MachineConfig) -> CycleAccount {
        let f = |x: u64| x as f64;
        let base = |s: &Stats| f(s.instructions) * m.core.base_cpi;
        let e = &m.exits;
        let faults =
            |s: &Stats| f(s.page_faults) * f(e.guest_page_fault) + f(s.zeroed_4k) * f(e.zero_4k);
        let exits = f(s.exits.pt_write) * f(e.pt_write)
            + f(s.exits.cr3_load) * f(e.cr3_load)
            + f(s.exits.page_fault) * f(e.page_fault)
            + f(s.exits.invlpg) * f(e.invlpg)
            + f(s.exits.unsync) * f(e.unsync)
            + f(s.resynced) * f(e.resync_entry);
        let stlb = f(s.stlb_hits) * f(m.latency.stlb_hit);
        let walks = f(s.walk_cycles);
        let data = f(s.data_cycles);
        let memory = f(s.mem_cycles);
        let total = base(s) + memory + exits + faults(s);
        // The perfect-TLB run has no STLB hit, walk or exit.
        let ideal = base(ideal) + f(ideal.mem_cycles) + faults(ideal);
        CycleAccount {
            base: base(s),
            data,
            stlb,
            walks,
            overlap: stlb + walks + data - memory,
            memory,
            exits,
            faults: faults(s),
            translation: stlb + walks + exits,
            total,
            ideal,
            overhead: overhead(total, ideal),
            walk_latency: if s.walks > 0 { walks / f(s.walks) } else { 0.0 },
        }
    }
}

/// Translation overhead of a run of `total` cycles over its perfect-TLB run of `ideal` cycles:
/// `total / ideal - 1` ([`OVERHEAD_DEFINITION`]), 0 without an ideal run.
pub fn overhead(total: f64, ideal: f64) -> f64 {
    if ideal > 0.0 {
        total / ideal - 1.0
    } else {
        0.0
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
    /// Every scheme's speedup over shadow paging, beside shadow's exit rate (when shadow ran).
    pub over_shadow: Option<OverShadow>,
    /// Bad trace records skipped (`--skip-bad-records`): records that did not decode, and
    /// accesses the guest refused (beyond the address space, out of memory). Absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_records: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Speedups over shadow paging, and what they rest on: shadow's VM exits.
#[derive(Clone, Debug, Serialize)]
pub struct OverShadow {
    /// How the shadow tables were kept in sync (`exits.shadow_sync`).
    pub sync: compromis_vmem::SyncMode,
    /// Shadow paging's VM exits per 1,000 instructions.
    pub shadow_exits_pki: f64,
    /// Runtime of shadow / runtime of each scheme.
    pub speedup: std::collections::BTreeMap<SchemeKind, f64>,
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
    run_source_skipping(exp, name, source, progress, false)
}

/// [`run_source`]; with `skip_bad`, accesses the guest refuses are skipped and counted in
/// [`Outcome::skipped_records`] (see [`engine::simulate_skipping`]).
pub fn run_source_skipping<I, E>(
    exp: &Experiment,
    name: &str,
    source: I,
    progress: &(dyn Fn(u64) + Sync),
    skip_bad: bool,
) -> Result<Outcome, ExperimentError>
where
    I: IntoIterator<Item = Result<Op, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    run_chunks_skipping(
        exp,
        name,
        &mut engine::IterChunks(source.into_iter()),
        progress,
        skip_bad,
    )
}

/// A trace's ops, read in chunks (each format's decoder fills the engine's chunk directly).
impl engine::OpChunks for compromis_trace::OpReader {
    fn read_ops(&mut self, buf: &mut Vec<Op>, max: usize) -> Result<(), EngineError> {
        compromis_trace::OpReader::read_ops(self, buf, max)
            .map_err(|e| EngineError::Source(Box::new(e)))
    }
}

/// [`run_source_skipping`] of a stream read in chunks.
pub fn run_chunks_skipping(
    exp: &Experiment,
    name: &str,
    source: &mut dyn engine::OpChunks,
    progress: &(dyn Fn(u64) + Sync),
    skip_bad: bool,
) -> Result<Outcome, ExperimentError> {
    let (backing, vm) = build_vm(&exp.vm)?;
    let mut sim = exp.sim.clone();
    sim.baseline = true;
    let results = engine::simulate_chunks(&sim, &backing, source, progress, skip_bad)?;
    let ideal = results.baseline.ok_or(EngineError::NoBaseline)?;
    let mut o = outcome_of(&exp.sim.machine, name, vm, results.schemes, ideal);
    o.skipped_records = results.skipped;
    Ok(o)
}

/// The [`Outcome`] of scheme runs `schemes` and their perfect-TLB run `ideal` over the same
/// stream (named `name`) in VM `vm`, costed on machine `m`: the cycle model's account of each,
/// and the speedups over shadow paging. [`run_source`] uses it on one simulation's runs; a
/// caller that proved a run the same in several configurations (for example the baseline,
/// which never looks at the host's page size) may simulate it once and pass it to each.
pub fn outcome_of(
    m: &MachineConfig,
    name: &str,
    vm: VmInfo,
    schemes: Vec<SchemeResult>,
    ideal: BaselineResult,
) -> Outcome {
    let ideal_stats = ideal.measured.clone();
    fn outcome<K>(r: RunResult<K>, ideal: &Stats, m: &MachineConfig) -> SchemeOutcome<K> {
        SchemeOutcome {
            derived: Derived::of(&r.measured),
            cycles: CycleAccount::of(&r.measured, ideal, m),
            result: r,
        }
    }
    let schemes = schemes
        .into_iter()
        .map(|r| outcome(r, &ideal_stats, m))
        .collect();
    let ideal = outcome(ideal, &ideal_stats, m);
    let mut o = Outcome {
        source: name.to_owned(),
        vm,
        schemes,
        ideal,
        over_shadow: None,
        skipped_records: 0,
    };
    o.over_shadow = o.scheme(SchemeKind::Shadow).map(|sh| OverShadow {
        sync: m.exits.shadow_sync,
        shadow_exits_pki: sh.derived.exits_pki,
        speedup: o
            .schemes
            .iter()
            .filter_map(|s| {
                let k = s.result.scheme;
                o.speedup(k, SchemeKind::Shadow).map(|x| (k, x))
            })
            .collect(),
    });
    o
}

/// Runs a planned experiment whose input is a workload or a trace file. A stream
/// ([`Input::Stream`], a program being recorded) is run with [`run_source`] by the caller that
/// owns it.
pub fn run(plan: &Plan, progress: &(dyn Fn(u64) + Sync)) -> Result<Outcome, ExperimentError> {
    match &plan.input {
        Input::Workload(spec) => run_workload(&plan.experiment, spec, progress),
        Input::Trace {
            path,
            skip_bad_records,
        } => {
            let opts = compromis_trace::ReadOptions {
                skip_bad_records: *skip_bad_records,
                format: None,
            };
            let mut reader = compromis_trace::open_ops(path, &opts)?;
            let name = path.display().to_string();
            match run_chunks_skipping(
                &plan.experiment,
                &name,
                &mut reader,
                progress,
                *skip_bad_records,
            ) {
                Ok(mut o) => {
                    o.skipped_records += reader.skipped();
                    Ok(o)
                }
                Err(ExperimentError::Sim(EngineError::BadOp { index, source })) => {
                    Err(ExperimentError::TraceContent {
                        at: compromis_trace::locate_op(path, &opts, index)
                            .unwrap_or_else(|_| format!("access #{}", index + 1)),
                        path: name,
                        source,
                    })
                }
                Err(e) => Err(e),
            }
        }
        Input::Stream { name } => Err(ExperimentError::NoStream(name.clone())),
    }
}

/// Runs a synthetic workload. The VM must hold the workload's footprint.
pub fn run_workload(
    exp: &Experiment,
    spec: &WorkloadSpec,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, ExperimentError> {
    spec.validate()?;
    request::check_fits(spec, exp.vm.ram)?;
    let ops = compromis_workload::build(spec)?;
    run_source(
        exp,
        spec.kind.name(),
        ops.map(Ok::<_, std::convert::Infallible>),
        progress,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn overhead_is_defined_word_for_word_as_in_the_docs() {
        let docs = include_str!("../../../docs/machine-model.md");
        let flat = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat(docs).contains(super::OVERHEAD_DEFINITION),
            "docs/machine-model.md must state: {}",
            super::OVERHEAD_DEFINITION
        );
    }
}
