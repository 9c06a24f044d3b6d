//! The experiment builder: what a user asks for, with every default set here and only here.
//!
//! The CLI (`compromis sim`, `compromis record`) and the reproduction report describe an
//! experiment as an [`ExperimentRequest`] whose optional fields are left unset when the user did
//! not choose them; [`ExperimentRequest::build`] validates the request, sizes the VM, and fills
//! every default (accesses, warm-up, VM memory, host memory) once. Nobody else re-derives them.

use crate::engine::SimConfig;
use crate::vm::{HostState, VmSpec};
use crate::{Experiment, ExperimentError};
use compromis_hostmem::Fallback;
use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_types::{ByteSize, PageSize};
use compromis_vmem::GuestConfig;
use compromis_workload::{WorkloadKind, WorkloadSpec};
use serde::Serialize;
use std::path::PathBuf;

pub use compromis_types::DEFAULT_SEED;

/// VM memory for a trace or a recorded program (its footprint is not known in advance).
pub const TRACE_VM_MEMORY: ByteSize = ByteSize::gib(4);

/// Host memory of an aged host, as a multiple of the VM's memory, unless given.
pub const AGED_HOST_FACTOR: u64 = 8;

/// Default fraction of an aged host used by other VMs.
pub const DEFAULT_HOST_FILL: f64 = 0.8;

/// Default fallback of an aged host when one extent is impossible.
pub const DEFAULT_FALLBACK: Fallback = Fallback::Segments(8);

/// What the accesses come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A synthetic workload; unset fields take [`WorkloadSpec::default`]'s values.
    Workload {
        /// The workload.
        kind: WorkloadKind,
        /// Data footprint (all processes together).
        footprint: Option<ByteSize>,
        /// Memory accesses.
        accesses: Option<u64>,
        /// Processes.
        processes: Option<u16>,
        /// Accesses between two context switches.
        quantum: Option<u64>,
    },
    /// A memory trace file (format detected from its content).
    Trace {
        /// The file.
        path: PathBuf,
        /// Count and skip records that do not parse.
        skip_bad_records: bool,
    },
    /// A stream the caller supplies (a program being recorded), named for the output.
    Stream {
        /// Name in the output.
        name: String,
    },
}

/// The host the VM is provisioned from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum HostRequest {
    /// Free memory: the VM gets one extent.
    Fresh,
    /// Fragmented by a seeded history of other VMs.
    Aged {
        /// Host RAM (default: [`AGED_HOST_FACTOR`] x the VM's memory).
        memory: Option<ByteSize>,
        /// Fraction used by other VMs, in `[0, 1)`.
        fill: f64,
        /// What the memory manager does when one extent is impossible.
        fallback: Fallback,
    },
}

/// An experiment as asked for. `Default` is `compromis sim` with no flags.
#[derive(Clone, Debug)]
pub struct ExperimentRequest {
    /// The accesses.
    pub source: Source,
    /// The machine model (default: the default machine preset,
    /// [`compromis_mmu::config::presets::DEFAULT_MACHINE`]).
    pub machine: MachineConfig,
    /// Schemes to simulate, in output order.
    pub schemes: Vec<SchemeKind>,
    /// Guest paging levels, page size and frame policy (its seed is overwritten by `seed`).
    pub guest: GuestConfig,
    /// Largest EPT leaf the host maps the VM with.
    pub host_page: PageSize,
    /// VM memory (default: [`default_ram`] of the workload's footprint; [`TRACE_VM_MEMORY`] for
    /// traces and streams).
    pub vm_memory: Option<ByteSize>,
    /// The host.
    pub host: HostRequest,
    /// Accesses excluded from the statistics (default: a tenth of a workload's accesses; 0 for
    /// traces and streams).
    pub warmup: Option<u64>,
    /// Populate a workload's regions when mapped.
    pub populate: bool,
    /// Check every translation against the reference composition.
    pub verify: bool,
    /// Seed of every random choice (workload, guest frames, host history).
    pub seed: u64,
}

impl Default for ExperimentRequest {
    fn default() -> Self {
        ExperimentRequest {
            source: Source::Workload {
                kind: WorkloadKind::Gups,
                footprint: None,
                accesses: None,
                processes: None,
                quantum: None,
            },
            machine: compromis_mmu::config::presets::default_config(),
            schemes: SchemeKind::ALL.to_vec(),
            guest: GuestConfig::default(),
            host_page: PageSize::Size4K,
            vm_memory: None,
            host: HostRequest::Fresh,
            warmup: None,
            populate: true,
            verify: false,
            seed: DEFAULT_SEED,
        }
    }
}

/// What a planned experiment reads, with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A synthetic workload.
    Workload(WorkloadSpec),
    /// A trace file.
    Trace {
        /// The file.
        path: PathBuf,
        /// Count and skip records that do not parse.
        skip_bad_records: bool,
    },
    /// A stream the caller supplies.
    Stream {
        /// Name in the output.
        name: String,
    },
}

/// A validated experiment with every default filled in, and what it reads.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The experiment.
    pub experiment: Experiment,
    /// What it reads.
    pub input: Input,
}

impl Plan {
    /// Accesses the run will make, when known in advance (workloads).
    pub fn accesses(&self) -> Option<u64> {
        match &self.input {
            Input::Workload(w) => Some(w.accesses),
            _ => None,
        }
    }
    /// The workload, when the input is one.
    pub fn workload(&self) -> Option<&WorkloadSpec> {
        match &self.input {
            Input::Workload(w) => Some(w),
            _ => None,
        }
    }
}

/// Default VM size for a workload mapping `mapped` bytes: the footprint plus 12.5% and 256 MiB
/// for page tables and the guest kernel, rounded up to 1 GiB.
pub fn default_ram(mapped: u64) -> ByteSize {
    let want = mapped + mapped / 8 + (256 << 20);
    ByteSize(want.div_ceil(1 << 30) * (1 << 30))
}

/// Whether a workload fits in a VM of `ram` bytes. Guest page tables take ~0.2% of mapped
/// memory; 1/64 of RAM is kept for them and the guest kernel.
pub fn check_fits(w: &WorkloadSpec, ram: ByteSize) -> Result<(), ExperimentError> {
    let mapped = compromis_workload::mapped_bytes(w);
    if mapped > ram.bytes() - ram.bytes() / 64 {
        return Err(ExperimentError::FootprintTooLarge {
            footprint: ByteSize(mapped),
            ram,
        });
    }
    Ok(())
}

impl ExperimentRequest {
    /// Validates the request and fills every default.
    pub fn build(&self) -> Result<Plan, ExperimentError> {
        let input = match &self.source {
            Source::Workload {
                kind,
                footprint,
                accesses,
                processes,
                quantum,
            } => {
                let d = WorkloadSpec::default();
                let spec = WorkloadSpec {
                    kind: *kind,
                    footprint: footprint.unwrap_or(d.footprint),
                    accesses: accesses.unwrap_or(d.accesses),
                    processes: processes.unwrap_or(d.processes),
                    quantum: quantum.unwrap_or(d.quantum),
                    seed: self.seed,
                };
                spec.validate()?;
                Input::Workload(spec)
            }
            Source::Trace {
                path,
                skip_bad_records,
            } => Input::Trace {
                path: path.clone(),
                skip_bad_records: *skip_bad_records,
            },
            Source::Stream { name } => Input::Stream { name: name.clone() },
        };
        let workload = match &input {
            Input::Workload(w) => Some(w),
            _ => None,
        };
        let ram = match (&workload, self.vm_memory) {
            (_, Some(r)) => r,
            (Some(w), None) => default_ram(compromis_workload::mapped_bytes(w)),
            (None, None) => TRACE_VM_MEMORY,
        };
        // Checked before anything is allocated: simulator state grows with the simulated memory.
        let cap = max_simulated_bytes();
        if let Some(w) = workload
            && w.footprint.bytes() > cap
        {
            return Err(ExperimentError::TooLarge {
                what: "footprint",
                size: w.footprint,
                cap: ByteSize(cap),
            });
        }
        if ram.bytes() > cap {
            return Err(ExperimentError::TooLarge {
                what: "VM memory",
                size: ram,
                cap: ByteSize(cap),
            });
        }
        let warmup = match (&workload, self.warmup) {
            (Some(w), Some(n)) if n >= w.accesses => {
                return Err(ExperimentError::Warmup {
                    warmup: n,
                    accesses: w.accesses,
                });
            }
            (_, Some(n)) => n,
            (Some(w), None) => w.accesses / 10,
            (None, None) => 0,
        };
        let host = match self.host {
            HostRequest::Fresh => HostState::Fresh,
            HostRequest::Aged {
                memory,
                fill,
                fallback,
            } => {
                if !(0.0..1.0).contains(&fill) {
                    return Err(ExperimentError::HostFill(fill));
                }
                let host =
                    memory.map_or(ram.bytes().saturating_mul(AGED_HOST_FACTOR), |m| m.bytes());
                if host < ram.bytes() {
                    return Err(ExperimentError::HostTooSmall {
                        host: ByteSize(host),
                        ram,
                    });
                }
                HostState::Aged {
                    host,
                    fill,
                    seed: self.seed,
                    fallback,
                }
            }
        };
        if let Some(w) = workload {
            check_fits(w, ram)?;
        }
        let experiment = Experiment {
            sim: SimConfig {
                machine: self.machine.clone(),
                guest: GuestConfig {
                    seed: self.seed,
                    ..self.guest
                },
                schemes: self.schemes.clone(),
                warmup,
                verify: self.verify,
                populate: self.populate,
                baseline: true,
            },
            vm: VmSpec {
                ram,
                host_page: self.host_page,
                host,
            },
        };
        Ok(Plan { experiment, input })
    }
}

/// The largest footprint or VM memory simulated: 16 times the machine's physical memory
/// (`MemTotal` of `/proc/meminfo`; 1 TiB where it cannot be read), at most 64 TiB. The simulator
/// keeps about 1/64 of the simulated memory as state (measured: 256 MB for a 16 GiB footprint).
pub fn max_simulated_bytes() -> u64 {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib.saturating_mul(1024))
    });
    physical
        .map_or(1 << 40, |p| p.saturating_mul(16))
        .min(64 << 40)
        // Whole GiB, so the cap reads well in messages.
        & !((1 << 30) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_set_once_here() {
        let p = ExperimentRequest::default().build().unwrap();
        let w = p.workload().cloned().unwrap();
        assert_eq!(w.accesses, WorkloadSpec::default().accesses);
        assert_eq!(p.experiment.sim.warmup, w.accesses / 10);
        assert_eq!(
            p.experiment.vm.ram,
            default_ram(compromis_workload::mapped_bytes(&w))
        );
        assert_eq!(p.experiment.sim.guest.seed, DEFAULT_SEED);
        // The default machine is the default preset, not the model's base values.
        assert_eq!(
            p.experiment.sim.machine,
            compromis_mmu::config::presets::Machine::default_machine()
                .config()
                .unwrap()
        );
        let t = ExperimentRequest {
            source: Source::Stream { name: "x".into() },
            ..ExperimentRequest::default()
        }
        .build()
        .unwrap();
        assert_eq!(t.experiment.sim.warmup, 0);
        assert_eq!(t.experiment.vm.ram, TRACE_VM_MEMORY);
    }

    #[test]
    fn invalid_requests_are_typed_errors() {
        let bad = |r: ExperimentRequest| r.build().unwrap_err();
        let warm = ExperimentRequest {
            warmup: Some(5_000_000),
            ..ExperimentRequest::default()
        };
        assert!(matches!(bad(warm), ExperimentError::Warmup { .. }));
        let fill = ExperimentRequest {
            host: HostRequest::Aged {
                memory: None,
                fill: 1.0,
                fallback: Fallback::Ept,
            },
            ..ExperimentRequest::default()
        };
        assert!(matches!(bad(fill), ExperimentError::HostFill(_)));
        let small = ExperimentRequest {
            host: HostRequest::Aged {
                memory: Some(ByteSize::gib(1)),
                fill: 0.5,
                fallback: Fallback::Ept,
            },
            ..ExperimentRequest::default()
        };
        assert!(matches!(bad(small), ExperimentError::HostTooSmall { .. }));
        let big = ExperimentRequest {
            vm_memory: Some(ByteSize::gib(1)),
            source: Source::Workload {
                kind: WorkloadKind::Gups,
                footprint: Some(ByteSize::gib(2)),
                accesses: None,
                processes: None,
                quantum: None,
            },
            ..ExperimentRequest::default()
        };
        assert!(matches!(
            bad(big),
            ExperimentError::FootprintTooLarge { .. }
        ));
    }
}
