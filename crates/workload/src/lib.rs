//! Synthetic, seeded workloads producing access streams for the translation simulator.
//!
//! A workload is described by a [`WorkloadSpec`] (kind, data footprint, number of accesses,
//! processes, scheduling quantum, seed) and turned into a stream of [`compromis_types::Op`] by
//! [`build`]. The stream is deterministic (same spec, same stream), uses constant memory per op
//! (no allocation per op) and contains exactly `spec.accesses` [`Op::Access`] items, plus the
//! [`Op::Map`] / [`Op::Unmap`] / [`Op::Switch`] ops that frame them.
//!
//! Workloads (see `docs/workloads.md` for layouts, instruction counts and sources):
//! - `gups`: HPCC RandomAccess, random read-modify-write of 8-byte words;
//! - `stream`: STREAM triad `a[i] = b[i] + s*c[i]`;
//! - `pointer-chase`: a linked list forming one random cycle over 64-byte nodes;
//! - `kv-zipf`: zipfian lookups in an open-addressing hash table;
//! - `bfs`: graph500-like breadth-first search over a Kronecker (R-MAT) graph in CSR form;
//! - `churn`: an allocator-heavy program that maps, touches and unmaps regions.
//!
//! With `processes > 1`, each process runs its own instance (its share of the footprint, its own
//! derived seed) and the stream switches round-robin every `quantum` accesses.

mod bfs;
mod chase;
mod churn;
mod feistel;
mod gups;
mod kv;
pub mod layout;
mod stream;

#[cfg(test)]
mod oracle;

use compromis_types::{ByteSize, Op, Pid};
use layout::{MAX_PROCESS_FOOTPRINT, OpBuf};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// The synthetic workloads.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Random read-modify-write of 8-byte words over the footprint (HPCC RandomAccess).
    Gups,
    /// STREAM triad over three arrays.
    Stream,
    /// A random cyclic permutation of 64-byte nodes, followed node to node.
    PointerChase,
    /// Zipfian lookups in an open-addressing hash table.
    KvZipf,
    /// Graph500-like breadth-first search over a Kronecker graph.
    Bfs,
    /// Repeated map / touch / unmap of regions with a long-lived heap.
    Churn,
}

impl WorkloadKind {
    /// Every workload, in documentation order.
    pub const ALL: [WorkloadKind; 6] = [
        WorkloadKind::Gups,
        WorkloadKind::Stream,
        WorkloadKind::PointerChase,
        WorkloadKind::KvZipf,
        WorkloadKind::Bfs,
        WorkloadKind::Churn,
    ];

    /// The name used on the command line and in output.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Gups => "gups",
            WorkloadKind::Stream => "stream",
            WorkloadKind::PointerChase => "pointer-chase",
            WorkloadKind::KvZipf => "kv-zipf",
            WorkloadKind::Bfs => "bfs",
            WorkloadKind::Churn => "churn",
        }
    }

    /// The comma-separated list of valid names.
    pub fn valid_names() -> String {
        Self::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The smallest per-process data footprint this workload accepts, in bytes.
    pub fn min_footprint(self) -> u64 {
        match self {
            WorkloadKind::Gups => gups::MIN_FOOTPRINT,
            WorkloadKind::Stream => stream::MIN_FOOTPRINT,
            WorkloadKind::PointerChase => chase::MIN_FOOTPRINT,
            WorkloadKind::KvZipf => kv::MIN_FOOTPRINT,
            WorkloadKind::Bfs => bfs::MIN_FOOTPRINT,
            WorkloadKind::Churn => churn::MIN_FOOTPRINT,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkloadKind {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, WorkloadError> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .ok_or_else(|| WorkloadError::UnknownWorkload {
                name: s.to_owned(),
                valid: Self::valid_names(),
            })
    }
}

/// Everything that determines a workload's stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Which workload.
    pub kind: WorkloadKind,
    /// Total data footprint across all processes (split evenly between them).
    pub footprint: ByteSize,
    /// Exact number of [`Op::Access`] items in the stream.
    pub accesses: u64,
    /// Number of processes (1 = no context switches).
    pub processes: u16,
    /// Accesses between two context switches when `processes > 1`.
    pub quantum: u64,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            kind: WorkloadKind::Gups,
            footprint: ByteSize::gib(1),
            accesses: 2_000_000,
            processes: 1,
            quantum: 100_000,
            seed: 42,
        }
    }
}

impl WorkloadSpec {
    /// The data footprint of each process.
    pub fn per_process_footprint(&self) -> ByteSize {
        ByteSize(self.footprint.bytes() / u64::from(self.processes.max(1)))
    }

    /// Checks the spec; [`build`] calls this first.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if self.footprint.bytes() == 0 {
            return Err(WorkloadError::ZeroFootprint);
        }
        if self.accesses == 0 {
            return Err(WorkloadError::ZeroAccesses);
        }
        if self.processes == 0 {
            return Err(WorkloadError::ZeroProcesses);
        }
        if self.processes > 1 && self.quantum == 0 {
            return Err(WorkloadError::ZeroQuantum);
        }
        let per = self.per_process_footprint();
        let min = self.kind.min_footprint();
        if per.bytes() < min {
            return Err(WorkloadError::FootprintTooSmall {
                workload: self.kind.name(),
                footprint: self.footprint,
                processes: self.processes,
                per_process: per,
                min: ByteSize(min),
            });
        }
        if per.bytes() > MAX_PROCESS_FOOTPRINT {
            return Err(WorkloadError::FootprintTooLarge {
                per_process: per,
                max: ByteSize(MAX_PROCESS_FOOTPRINT),
            });
        }
        Ok(())
    }
}

/// Why a workload spec was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WorkloadError {
    /// The name is not a workload.
    #[error("unknown workload '{name}': valid values are {valid}")]
    UnknownWorkload {
        /// The name given.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// `footprint` is 0.
    #[error("footprint must be greater than zero")]
    ZeroFootprint,
    /// `accesses` is 0.
    #[error("number of accesses must be greater than zero")]
    ZeroAccesses,
    /// `processes` is 0.
    #[error("number of processes must be at least 1")]
    ZeroProcesses,
    /// `quantum` is 0 with several processes.
    #[error("scheduling quantum must be greater than zero when there are several processes")]
    ZeroQuantum,
    /// The per-process footprint is below the workload's minimum.
    #[error(
        "footprint {footprint} is too small for workload '{workload}' with {processes} process(es): \
         each process gets {per_process}, the minimum is {min}"
    )]
    FootprintTooSmall {
        /// The workload name.
        workload: &'static str,
        /// The total footprint asked for.
        footprint: ByteSize,
        /// The number of processes.
        processes: u16,
        /// The footprint of each process.
        per_process: ByteSize,
        /// The minimum per-process footprint of this workload.
        min: ByteSize,
    },
    /// The per-process footprint does not fit the modelled user address space.
    #[error("footprint per process {per_process} is too large: the maximum is {max}")]
    FootprintTooLarge {
        /// The footprint of each process.
        per_process: ByteSize,
        /// The largest per-process footprint supported.
        max: ByteSize,
    },
}

/// One process's generator: each call to `step` appends at least one op (and at most
/// [`layout::BUF_CAP`]); the first call appends the process's initial `Op::Map`s.
pub(crate) trait Proc: Send {
    fn step(&mut self, buf: &mut OpBuf);
}

/// Seed of process `pid`, derived from the spec's seed.
pub fn process_seed(seed: u64, pid: Pid) -> u64 {
    layout::mix64(seed ^ layout::mix64(0x9e37_79b9_7f4a_7c15 ^ u64::from(pid)))
}

/// Round-robin scheduler over lazily created per-process generators.
struct Driver<G, F> {
    make: F,
    /// Boxed so that many not-yet-started processes cost a pointer each.
    procs: Vec<Option<Box<(G, OpBuf)>>>,
    cur: usize,
    remaining: u64,
    slice_left: u64,
    quantum: u64,
}

impl<G: Proc, F: Fn(Pid) -> G> Driver<G, F> {
    fn new(spec: &WorkloadSpec, make: F) -> Self {
        let n = usize::from(spec.processes);
        let quantum = if n > 1 { spec.quantum } else { u64::MAX };
        Driver {
            make,
            procs: (0..n).map(|_| None).collect(),
            cur: 0,
            remaining: spec.accesses,
            slice_left: quantum,
            quantum,
        }
    }
}

impl<G: Proc, F: Fn(Pid) -> G> Iterator for Driver<G, F> {
    type Item = Op;

    #[inline]
    fn next(&mut self) -> Option<Op> {
        if self.remaining == 0 {
            return None;
        }
        if self.slice_left == 0 {
            self.cur = (self.cur + 1) % self.procs.len();
            self.slice_left = self.quantum;
            // `procs.len()` comes from a u16, so the index fits.
            let pid = Pid::try_from(self.cur).unwrap_or(Pid::MAX);
            return Some(Op::Switch { pid });
        }
        let cur = self.cur;
        let slot = &mut self.procs[cur];
        let (g, buf) = &mut **match slot {
            Some(p) => p,
            None => {
                let pid = Pid::try_from(cur).unwrap_or(Pid::MAX);
                slot.insert(Box::new(((self.make)(pid), OpBuf::default())))
            }
        };
        let op = loop {
            if let Some(op) = buf.pop() {
                break op;
            }
            g.step(buf);
        };
        if let Op::Access { .. } = op {
            self.remaining -= 1;
            self.slice_left -= 1;
        }
        Some(op)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // At least the remaining accesses (plus maps, unmaps and switches).
        (usize::try_from(self.remaining).unwrap_or(usize::MAX), None)
    }
}

fn boxed<G, F>(spec: &WorkloadSpec, make: F) -> Box<dyn Iterator<Item = Op> + Send>
where
    G: Proc + 'static,
    F: Fn(Pid) -> G + Send + 'static,
{
    Box::new(Driver::new(spec, make))
}

/// The op stream of `spec`: exactly `spec.accesses` [`Op::Access`] items in total, plus the
/// [`Op::Map`], [`Op::Unmap`] and [`Op::Switch`] ops that frame them.
pub fn build(spec: &WorkloadSpec) -> Result<Box<dyn Iterator<Item = Op> + Send>, WorkloadError> {
    spec.validate()?;
    let fp = spec.per_process_footprint().bytes();
    let seed = spec.seed;
    let procs = spec.processes;
    Ok(match spec.kind {
        WorkloadKind::Gups => boxed(spec, move |pid| {
            gups::Gups::new(fp, process_seed(seed, pid))
        }),
        WorkloadKind::Stream => boxed(spec, move |pid| {
            stream::Stream::new(fp, process_seed(seed, pid))
        }),
        WorkloadKind::PointerChase => boxed(spec, move |pid| {
            chase::Chase::new(fp, process_seed(seed, pid))
        }),
        WorkloadKind::KvZipf => boxed(spec, move |pid| {
            kv::KvZipf::new(fp, process_seed(seed, pid))
        }),
        WorkloadKind::Bfs => boxed(spec, move |pid| {
            bfs::Bfs::new(fp, procs, process_seed(seed, pid))
        }),
        WorkloadKind::Churn => boxed(spec, move |pid| {
            churn::Churn::new(fp, process_seed(seed, pid))
        }),
    })
}

/// Total guest memory the workload maps at most at once, all processes together (code regions
/// included), so the caller can check it fits in the VM. 0 for an invalid spec ([`build`] says
/// why).
pub fn mapped_bytes(spec: &WorkloadSpec) -> u64 {
    if spec.validate().is_err() {
        return 0;
    }
    let fp = spec.per_process_footprint().bytes();
    let per = match spec.kind {
        WorkloadKind::Gups => gups::mapped(fp),
        WorkloadKind::Stream => stream::mapped(fp),
        WorkloadKind::PointerChase => chase::mapped(fp),
        WorkloadKind::KvZipf => kv::mapped(fp),
        WorkloadKind::Bfs => bfs::mapped(fp),
        WorkloadKind::Churn => churn::mapped(fp),
    };
    per.saturating_mul(u64::from(spec.processes))
}
