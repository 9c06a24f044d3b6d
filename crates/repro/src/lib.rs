//! The reproduction report of Compromis: one call that regenerates the paper's claims.
//!
//! [`run`] computes every figure (nothing is typed in) and returns [`Results`]; [`write_report`]
//! writes them as `README.md` (tables inline, figures linked), SVG charts, one CSV per table and
//! `results.json`. The sections:
//!
//! 1. walk references per TLB miss: closed form, simulated with caches off, mean with caches on;
//! 2. overhead versus a perfect TLB and speedups per workload and page-size pair, plus
//!    multi-process runs where shadow paging's CR3 and page-table exits show;
//! 3. single-segment provisioning per VM trace and placement policy; 3b. the same under load
//!    (share against the fleet's peak utilisation, [`placement`]);
//! 4. fragmentation sensitivity on hosts aged to increasing fill;
//! 5. the paper's claims beside ours.
//!
//! The run is deterministic: the same [`Options`] give byte-identical files (no timestamps, no
//! durations, everything in a fixed order). The sections run at the same time and independent
//! configurations inside each run in parallel, all on one rayon pool; results are collected in a
//! fixed order. A [`Progress`] observer hears about each stage and each finished configuration.

mod anchors;
mod compute;
pub mod data;
mod fair;
mod figures;
mod measured;
mod passes;
pub mod placement;
mod render;

pub use anchors::{
    ANCHOR_MACHINE, ANCHORS, Anchor, AnchorRow, Role, TOLERANCE, WalkBreakdown, anchors_table,
    breakdown_table, run_anchors,
};
pub use compute::run;
pub use fair::{FairRow, Reading};
pub use figures::{
    FIGURES, TEXT_COLUMNS, TIDY_FILES, Tidy, TidyTable, figures, read_tidy, tidy_tables,
    write_figures,
};
pub use measured::{MEASURED_FILE, measured_section, write_measured};
pub use placement::UtilisationRow;
pub use render::{CSV_FILES, SVG_FILES, readme, write_report, write_report_with};

use compromis_cluster::TraceFormat;
use compromis_mmu::config::presets::Machine;
use serde::Serialize;
use std::path::PathBuf;
use thiserror::Error;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Smaller workloads and truncated traces (about a minute instead of about ten).
    pub quick: bool,
    /// Seed of every random choice (workloads, host ageing, synthetic VM trace, duration draws).
    pub seed: u64,
    /// Folder of the real VM traces (`azure-v1-rnn`, `google-2011`, `alibaba-2018`,
    /// `bitbrains-rnd`); traces missing from it are skipped, `None` skips them all.
    pub data_dir: Option<PathBuf>,
    /// An extra VM trace for the provisioning section, with its format.
    pub extra_trace: Option<(PathBuf, TraceFormat)>,
    /// The machine preset every simulation of the report runs on.
    pub machine: Machine,
    /// Run the sections one after another instead of at the same time (to time each alone);
    /// the results are the same either way.
    pub sequential: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quick: false,
            seed: 42,
            data_dir: None,
            extra_trace: None,
            machine: Machine::default_machine(),
            sequential: false,
        }
    }
}

/// Observer of the run's progress: stages of `total` configurations each. Stages may run at the
/// same time ([`Options::sequential`] off), so every call names its stage; the calls come from
/// any thread.
pub trait Progress: Sync {
    /// A stage starts.
    fn stage(&self, name: &str, total: u64);
    /// One configuration of stage `stage` finished.
    fn step(&self, stage: &str);
    /// Stage `stage` finished.
    fn finish(&self, stage: &str);
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str, _total: u64) {}
    fn step(&self, _stage: &str) {}
    fn finish(&self, _stage: &str) {}
}

/// Errors of the reproduction run.
#[derive(Debug, Error)]
pub enum ReproError {
    /// A simulation failed.
    #[error("simulation of {config} failed: {source}")]
    Experiment {
        /// The configuration.
        config: String,
        /// The cause.
        #[source]
        source: compromis_sim::ExperimentError,
    },
    /// A VM trace could not be opened.
    #[error("cannot read {format} trace {path}: {source}")]
    Trace {
        /// The trace.
        path: PathBuf,
        /// Its format.
        format: String,
        /// The cause.
        #[source]
        source: compromis_cluster::VmTraceError,
    },
    /// A placement replay failed.
    #[error("placement replay of {trace} under {policy} failed: {source}")]
    Placement {
        /// The trace.
        trace: String,
        /// The policy.
        policy: String,
        /// The cause.
        #[source]
        source: compromis_cluster::ReplayError,
    },
    /// A fleet description is invalid (a bug in the report's fleet table).
    #[error("fleet {fleet}: {message}")]
    Fleet {
        /// The fleet text.
        fleet: String,
        /// What is wrong.
        message: String,
    },
    /// Writing the report failed.
    #[error(transparent)]
    Report(#[from] compromis_report::ReportError),
    /// The machine preset is invalid (a bug in an embedded preset).
    #[error("machine model: {0}")]
    Machine(#[from] compromis_mmu::ConfigError),
    /// A report's CSV file (read back by `compromis plot`) is missing or malformed.
    #[error("{}{}: {message}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Data {
        /// The file.
        path: PathBuf,
        /// The line (1 is the header; 0 when the whole file is concerned).
        line: usize,
        /// What is wrong, with the value.
        message: String,
    },
    /// Creating the output folder failed.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The settings the run used (recorded in the report).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunConfig {
    /// The machine preset every simulation ran on.
    pub machine: String,
    /// Quick mode.
    pub quick: bool,
    /// Seed.
    pub seed: u64,
    /// Data footprint of each single-process workload run, bytes.
    pub footprint: u64,
    /// Accesses per workload run.
    pub accesses: u64,
    /// Accesses excluded from the statistics (warm-up).
    pub warmup: u64,
    /// Processes of the multi-process runs.
    pub mp_processes: u16,
    /// Scheduling quantum of the multi-process runs (accesses).
    pub mp_quantum: u64,
    /// Events replayed per real trace (`None`: the whole trace).
    pub trace_event_limit: Option<u64>,
    /// VMs of the synthetic placement trace.
    pub synthetic_vms: u64,
    /// Workload of the fragmentation section.
    pub frag_workload: String,
    /// Largest EPT leaves of the fragmentation section (one series each).
    pub frag_host_pages: Vec<String>,
    /// Host RAM of the fragmentation section as a multiple of the VM's RAM.
    pub frag_host_factor: u64,
}

/// One scheme at one guest/host page-size pair: walk references per TLB miss.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WalkRefRow {
    /// Scheme.
    pub scheme: String,
    /// Guest page size.
    pub guest: String,
    /// Host page size.
    pub host: String,
    /// Guest-dimension levels walked (`n`).
    pub n: u64,
    /// Host-dimension levels walked (`m`).
    pub m: u64,
    /// The closed form.
    pub closed_form: u64,
    /// Walks with caches off.
    pub walks_off: u64,
    /// References with caches off.
    pub refs_off: u64,
    /// `refs_off / walks_off`.
    pub caches_off: f64,
    /// True when `refs_off == closed_form * walks_off` (and there were walks).
    pub agrees: bool,
    /// Mean references per walk with the default caches (gups, from section 2); `None` when
    /// that run made no walk in its measured phase (the TLBs covered the footprint).
    pub caches_on: Option<f64>,
}

/// One scheme's figures in one run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SchemeFigures {
    /// Scheme.
    pub scheme: String,
    /// Total cycles of the measured phase.
    pub cycles: f64,
    /// Overhead versus the perfect-TLB run (`total / ideal - 1`).
    pub overhead: f64,
    /// Mean references per walk.
    pub refs_per_walk: f64,
    /// Mean walk latency, cycles.
    pub walk_latency: f64,
    /// Page walks.
    pub walks: u64,
    /// VM exits on guest page-table writes.
    pub exits_pt_write: u64,
    /// VM exits on CR3 loads.
    pub exits_cr3_load: u64,
    /// All VM exits.
    pub exits: u64,
    /// VM exits per 1,000 instructions (measured phase).
    pub exits_pki: f64,
    /// VM exits of the warm-up phase, populate included (under shadow paging: the guest's faults
    /// and the hidden faults that fill shadow entries as the guest zeroes its pages).
    pub warmup_exits: u64,
    /// Compromis fallback translations.
    pub fallback_translations: u64,
}

#[cfg(test)]
impl SchemeFigures {
    /// A run of `cycles` against an ideal of 100 cycles, with no exits: the unit tests' fixture.
    pub(crate) fn for_tests(scheme: &str, cycles: f64) -> SchemeFigures {
        SchemeFigures {
            scheme: scheme.into(),
            cycles,
            overhead: cycles / 100.0 - 1.0,
            refs_per_walk: 4.0,
            walk_latency: 30.0,
            walks: 10,
            exits_pt_write: 0,
            exits_cr3_load: 0,
            exits: 0,
            exits_pki: 0.0,
            warmup_exits: 0,
            fallback_translations: 0,
        }
    }
}

/// One workload run (section 2).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunRow {
    /// Workload.
    pub workload: String,
    /// Processes.
    pub processes: u16,
    /// Guest page size.
    pub guest: String,
    /// Host page size.
    pub host: String,
    /// Perfect-TLB cycles.
    pub ideal_cycles: f64,
    /// Native, EPT, shadow, Compromis in that order.
    pub schemes: Vec<SchemeFigures>,
    /// runtime(EPT) / runtime(Compromis).
    pub speedup_vs_ept: f64,
    /// runtime(shadow) / runtime(Compromis).
    pub speedup_vs_shadow: f64,
}

/// One trace under one placement policy (section 3).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProvisioningRow {
    /// Trace name.
    pub trace: String,
    /// Fleet.
    pub fleet: String,
    /// Policy.
    pub policy: String,
    /// Whether the policy looks at contiguity.
    pub contiguity_aware: bool,
    /// Events replayed.
    pub events: u64,
    /// VMs placed.
    pub placed: u64,
    /// VMs placed with one segment.
    pub single_segment: u64,
    /// `single_segment / placed`.
    pub share: f64,
    /// Arrivals refused.
    pub rejected: u64,
}

/// One aged host (section 4).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FragRow {
    /// Largest EPT leaf the host uses.
    pub host_page: String,
    /// Fill of the host by other VMs.
    pub fill: f64,
    /// Fallback when one extent is impossible.
    pub fallback: String,
    /// The outcome, or why the VM could not be provisioned.
    pub outcome: Result<FragOutcome, String>,
}

/// What an aged host gave the VM and what it cost.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FragOutcome {
    /// Host fragmentation before provisioning.
    pub host_fragmentation: f64,
    /// `one-extent`, `multi-segment` or `ept`.
    pub provisioning: String,
    /// Host extents backing the VM.
    pub host_extents: usize,
    /// Segment register sets.
    pub segments: usize,
    /// EPT leaves of 4 KiB, 2 MiB, 1 GiB.
    pub ept_leaves: [u64; 3],
    /// Compromis fallback translations (measured phase).
    pub fallback_translations: u64,
    /// EPT cycles.
    pub ept_cycles: f64,
    /// Compromis cycles.
    pub compromis_cycles: f64,
    /// runtime(EPT) / runtime(Compromis).
    pub speedup_vs_ept: f64,
}

/// One of the paper's claims beside our figure.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Claim {
    /// The claim as the paper states it.
    pub paper: String,
    /// Our figure.
    pub ours: String,
    /// Where our figure comes from and why it differs.
    pub explanation: String,
}

/// Everything the run computed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Results {
    /// Settings.
    pub config: RunConfig,
    /// Section 1.
    pub walk_refs: Vec<WalkRefRow>,
    /// Section 2, single-process runs.
    pub overheads: Vec<RunRow>,
    /// Section 2, multi-process runs.
    pub multiprocess: Vec<RunRow>,
    /// Section 2b: Compromis against EPT and shadow at every host page size and at the best one
    /// the VM's contiguity allows (from the single-process runs of section 2).
    pub fair: Vec<FairRow>,
    /// Section 3 (empty rows are impossible: the synthetic trace always runs).
    pub provisioning: Vec<ProvisioningRow>,
    /// Traces of section 3 that were looked for and not found.
    pub traces_missing: Vec<String>,
    /// Section 3b: single-segment share against peak utilisation ([`placement`]).
    pub utilisation: Vec<UtilisationRow>,
    /// Section 4.
    pub fragmentation: Vec<FragRow>,
    /// Section 5.
    pub claims: Vec<Claim>,
    /// Section 6: anchors, our figures beside figures measured on hardware.
    pub anchors: Vec<AnchorRow>,
}

impl Results {
    /// Rows of section 1 whose simulated caches-off value differs from the closed form.
    pub fn closed_form_mismatches(&self) -> Vec<&WalkRefRow> {
        self.walk_refs.iter().filter(|r| !r.agrees).collect()
    }

    /// The run (single- or multi-process) with the largest speedup of Compromis over EPT.
    pub fn best_vs_ept(&self) -> Option<&RunRow> {
        self.overheads
            .iter()
            .chain(&self.multiprocess)
            .max_by(|a, b| a.speedup_vs_ept.total_cmp(&b.speedup_vs_ept))
    }

    /// The run with the largest speedup of Compromis over shadow paging.
    pub fn best_vs_shadow(&self) -> Option<&RunRow> {
        self.overheads
            .iter()
            .chain(&self.multiprocess)
            .max_by(|a, b| a.speedup_vs_shadow.total_cmp(&b.speedup_vs_shadow))
    }

    /// The provisioning row with the largest single-segment share.
    pub fn best_share(&self) -> Option<&ProvisioningRow> {
        self.provisioning
            .iter()
            .max_by(|a, b| a.share.total_cmp(&b.share).then(a.placed.cmp(&b.placed)))
    }
}
