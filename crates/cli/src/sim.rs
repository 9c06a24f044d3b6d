//! `compromis sim`: simulate a synthetic workload or a trace under several translation schemes.

use anyhow::Result;
use compromis_hostmem::Fallback;
use compromis_mmu::SchemeKind;
use compromis_mmu::config::presets::{self, Machine};
use compromis_report::Format;
use compromis_sim::{ExperimentRequest, HostRequest, Outcome, Source};
use compromis_types::{ByteSize, Op, PageSize};
use compromis_vmem::{FramePolicy, GuestConfig};
use compromis_workload::WorkloadKind;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `compromis sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Synthetic workload: gups, stream, pointer-chase, kv-zipf, bfs, churn.
    #[arg(long, default_value = "gups")]
    pub workload: WorkloadKind,
    /// Simulate a memory trace instead (lackey text, ChampSim, or native format; compression detected).
    #[arg(long, conflicts_with_all = ["footprint", "accesses", "processes", "quantum"])]
    pub trace: Option<PathBuf>,
    /// Data footprint of the workload (all processes together), e.g. 1GiB, 512M.
    #[arg(long)]
    pub footprint: Option<ByteSize>,
    /// Number of memory accesses the workload makes.
    #[arg(long)]
    pub accesses: Option<u64>,
    /// Processes the workload runs as (the guest switches between them).
    #[arg(long)]
    pub processes: Option<u16>,
    /// Accesses between two context switches (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub quantum: Option<u64>,
    /// Count malformed trace records instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad_records: bool,
    /// Run once per host page size (4k, 2m, 1g; --host-pages is ignored) and print Compromis
    /// against EPT and shadow paging at each, and against EPT at the best host page the VM's
    /// contiguity allows. Speedups are runtime ratios, with the overhead ratio beside them.
    #[arg(long)]
    pub compare_host_pages: bool,
    /// Simulation options.
    #[command(flatten)]
    pub opts: SimOptions,
}

/// Host memory state of `--host-state`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStateArg {
    /// The VM gets one extent of a host with free memory.
    Fresh,
    /// A host fragmented by a seeded history of other VMs.
    Aged,
}

/// Options shared by every command that simulates (`sim`, `record`).
#[derive(clap::Args, Debug, Clone)]
pub struct SimOptions {
    /// Schemes to simulate, comma-separated: native, ept, shadow, compromis.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "native,ept,shadow,compromis"
    )]
    pub schemes: Vec<SchemeKind>,
    /// Guest page size for data: 4k, or 2m (transparent huge pages where a region allows).
    #[arg(long, default_value = "4k", value_parser = parse_guest_page)]
    pub guest_pages: PageSize,
    /// Largest page the host maps the VM with (EPT leaf size): 4k, 2m, 1g.
    #[arg(long, default_value = "4k")]
    pub host_pages: PageSize,
    /// Guest paging levels: 4 or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub guest_levels: u8,
    /// Guest frame allocation: contiguous (freshly booted guest) or scattered (aged guest).
    #[arg(long, default_value = "contiguous")]
    pub guest_frames: FramePolicy,
    /// VM memory (default: the footprint + 12.5% + 256 MiB rounded up to 1 GiB; 4 GiB for traces).
    #[arg(long)]
    pub vm_memory: Option<ByteSize>,
    /// Host memory state: fresh (the VM gets one extent) or aged (fragmented by a seeded history
    /// of other VMs; the memory manager then falls back as --host-fallback says).
    #[arg(long, value_enum, default_value_t = HostStateArg::Fresh)]
    pub host_state: HostStateArg,
    /// Host RAM of an aged host (default: 8 x the VM's memory).
    #[arg(long)]
    pub host_memory: Option<ByteSize>,
    /// Fraction of an aged host's memory used by other VMs (at least 0, below 1).
    #[arg(long, default_value_t = compromis_sim::DEFAULT_HOST_FILL, value_parser = parse_fill)]
    pub host_fill: f64,
    /// What the memory manager does when one extent is impossible: `refuse`, `segments:K` (at
    /// most K segment register sets), `ept` (EPT pages from the free memory left) or `compact`.
    #[arg(long, default_value_t = compromis_sim::DEFAULT_FALLBACK)]
    pub host_fallback: Fallback,
    /// Accesses excluded from the statistics (their page faults are reported apart). Default:
    /// a tenth of a workload's accesses; 0 for traces and `record`.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Do not populate a workload's regions when it maps them: pages are then faulted in on first
    /// touch, inside the measured phase (by default every page is faulted in at map time, as a
    /// benchmark that initializes its memory first, and counted in the warm-up phase).
    #[arg(long)]
    pub no_populate: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = compromis_sim::DEFAULT_SEED)]
    pub seed: u64,
    /// Untagged TLBs: every context switch flushes the TLBs and walk caches (no PCID/VPID).
    #[arg(long)]
    pub untagged_tlb: bool,
    /// Machine preset (`compromis config --list` lists them). With --config, the preset is
    /// read first and the file's keys replace the preset's.
    #[arg(long, default_value_t = Machine::default_machine())]
    pub machine: Machine,
    /// Machine-model file (TOML; `compromis config --defaults` prints one): its keys replace those
    /// of the --machine preset (the default preset when --machine is not given).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How shadow paging syncs its tables: oos (out of sync, as KVM and Xen) or eager (every
    /// guest page-table write trapped). Overrides the machine model's `exits.shadow_sync`.
    #[arg(long)]
    pub shadow_sync: Option<compromis_vmem::SyncMode>,
    /// Output format: table, json, csv.
    #[arg(long, alias = "format", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Check every translation against the reference composition (slower).
    #[arg(long)]
    pub verify: bool,
    /// Results file (`-o`).
    #[command(flatten)]
    pub file: crate::OutputFile,
}

fn parse_guest_page(s: &str) -> Result<PageSize, String> {
    match s.parse::<PageSize>() {
        Ok(PageSize::Size1G) => Err("guest pages are 4k or 2m".into()),
        Ok(p) => Ok(p),
        Err(e) => Err(e.to_string()),
    }
}

impl SimOptions {
    /// The machine as printed: the preset, and the file read over it.
    pub fn machine_label(&self) -> String {
        match &self.config {
            Some(p) => format!("{} with {}", self.machine, p.display()),
            None => self.machine.to_string(),
        }
    }

    /// The experiment request these options describe, reading `source`.
    pub fn request(&self, source: Source) -> Result<ExperimentRequest> {
        let mut machine = presets::resolve(self.machine, self.config.as_deref())?;
        if self.untagged_tlb {
            machine.tlb.tagged = false;
        }
        if let Some(m) = self.shadow_sync {
            machine.exits.shadow_sync = m;
        }
        Ok(ExperimentRequest {
            source,
            machine,
            schemes: self.schemes.clone(),
            guest: GuestConfig {
                levels: self.guest_levels,
                page: self.guest_pages,
                frames: self.guest_frames,
                seed: self.seed,
            },
            host_page: self.host_pages,
            vm_memory: self.vm_memory,
            host: match self.host_state {
                HostStateArg::Fresh => HostRequest::Fresh,
                HostStateArg::Aged => HostRequest::Aged {
                    memory: self.host_memory,
                    fill: self.host_fill,
                    fallback: self.host_fallback,
                },
            },
            warmup: self.warmup,
            populate: !self.no_populate,
            verify: self.verify,
            seed: self.seed,
        })
    }
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    let pb = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {human_pos}/{human_len} ops ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {human_pos} ops ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    // Shown only when stderr is a terminal, and only once the run lasts over a second.
    pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    pb
}

/// Runs a simulation with a progress bar (on a terminal, once the run lasts over a second).
fn with_progress<T>(
    total: Option<u64>,
    f: impl FnOnce(&(dyn Fn(u64) + Sync)) -> Result<T>,
) -> Result<T> {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let pb = progress_bar(total);
    let start = std::time::Instant::now();
    let shown = AtomicBool::new(false);
    let outcome = f(&|done| {
        if !shown.load(Relaxed) && start.elapsed().as_secs_f64() > 1.0 {
            shown.store(true, Relaxed);
            pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        pb.set_position(done);
    });
    pb.finish_and_clear();
    outcome
}

/// Runs a simulation with a progress bar and prints the outcome.
fn run_with_progress(
    opts: &SimOptions,
    total: Option<u64>,
    f: impl FnOnce(&(dyn Fn(u64) + Sync)) -> Result<Outcome>,
) -> Result<ExitCode> {
    let o = with_progress(total, f)?;
    if o.skipped_records > 0 {
        note!(
            "skipped {} bad records of {} (--skip-bad-records)",
            o.skipped_records,
            o.source
        );
    }
    print_outcome(&o, opts)?;
    Ok(ExitCode::SUCCESS)
}

/// Simulates an op stream named `name` (a program being recorded) with `opts`, with a progress
/// spinner; the caller prints.
pub fn simulate_stream<I, E>(opts: &SimOptions, name: &str, source: I) -> Result<Outcome>
where
    I: IntoIterator<Item = std::result::Result<Op, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let plan = opts
        .request(Source::Stream {
            name: name.to_owned(),
        })?
        .build()?;
    with_progress(None, |progress| {
        Ok(compromis_sim::run_source(
            &plan.experiment,
            name,
            source,
            progress,
        )?)
    })
}

/// Prints an outcome as `opts` ask (format, file); a table names the machine.
pub fn print_outcome(o: &Outcome, opts: &SimOptions) -> Result<()> {
    opts.file.deliver(&render_outcome(
        o,
        opts.output,
        Some(&opts.machine_label()),
    )?)
}

/// An outcome in `format`; a table names `machine` (the preset and any file over it). JSON and
/// CSV carry the provenance (version, git commit, command line): JSON as a `provenance` object,
/// CSV as trailing columns (see docs/sweep.md).
pub fn render_outcome(o: &Outcome, format: Format, machine: Option<&str>) -> Result<String> {
    let prov = compromis_sweep::provenance::Provenance::of_process();
    Ok(match format {
        Format::Table => {
            let ranges: Vec<String> =
                o.vm.ram_ranges
                    .iter()
                    .map(|(s, l)| format!("[{s:#x}, +{})", ByteSize(*l)))
                    .collect();
            format!(
                "{}{}: VM {} RAM {}, provisioned {} (host fragmentation {:.2}): {} host extent(s), {} segment register set(s) covering {}, EPT leaves 4k/2m/1g = {}/{}/{}\n\n{}\n{}\n{}",
                o.source,
                machine
                    .map(|m| format!(" on machine {m}"))
                    .unwrap_or_default(),
                ByteSize(o.vm.ram),
                ranges.join(" "),
                o.vm.provisioning,
                o.vm.host_fragmentation,
                o.vm.host_extents,
                o.vm.segments,
                ByteSize(o.vm.segment_bytes),
                o.vm.ept_leaves[0],
                o.vm.ept_leaves[1],
                o.vm.ept_leaves[2],
                compromis_sim::table::results(o).to_text(),
                compromis_sim::table::cycles(o)
                    .with_title("Cycle model (millions of cycles)")
                    .to_text(),
                compromis_sim::table::walk_histogram(o)
                    .with_title("Walks by memory references")
                    .to_text(),
            )
        }
        Format::Json => {
            serde_json::to_string_pretty(&prov.attach_json(serde_json::to_value(o)?))? + "\n"
        }
        Format::Csv => prov.attach_csv(&compromis_sim::table::csv_rows(o).to_csv()?)?,
    })
}

/// An op source error carried through the simulator.
#[derive(Debug)]
struct SourceError(anyhow::Error);
impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}
impl std::error::Error for SourceError {}

/// Simulates an op stream named `name` with `opts` (`record --tracer qemu`); the caller prints.
pub fn run_source(
    opts: &SimOptions,
    name: &str,
    source: Box<dyn Iterator<Item = anyhow::Result<Op>> + Send>,
) -> Result<Outcome> {
    simulate_stream(opts, name, source.map(|r| r.map_err(SourceError)))
}

/// The experiment request of `compromis sim` with these arguments.
pub fn request(args: &SimArgs) -> Result<ExperimentRequest> {
    let source = match &args.trace {
        Some(path) => Source::Trace {
            path: path.clone(),
            skip_bad_records: args.skip_bad_records,
        },
        None => Source::Workload {
            kind: args.workload,
            footprint: args.footprint,
            accesses: args.accesses,
            processes: args.processes,
            quantum: args.quantum,
        },
    };
    args.opts.request(source)
}

/// `--host-fill`: a fraction in `[0, 1)`, checked even when the host is fresh (where it is not
/// used), so a wrong value is never silently accepted.
fn parse_fill(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction at least 0 and below 1"))
    }
}

/// Runs the subcommand.
pub fn run(args: &SimArgs) -> Result<ExitCode> {
    args.opts.file.check()?;
    let request = request(args)?;
    if args.compare_host_pages {
        return compare_host_pages(&args.opts, &request);
    }
    let plan = request.build()?;
    run_with_progress(&args.opts, plan.accesses(), |progress| {
        Ok(compromis_sim::run(&plan, progress)?)
    })
}

/// `sim --compare-host-pages`: one run per host page size, then the comparison.
fn compare_host_pages(opts: &SimOptions, request: &ExperimentRequest) -> Result<ExitCode> {
    use compromis_sim::compare::{HOST_PAGES, HostPageComparison, run_host_pages};
    // Validate once up front so a bad request fails before any run.
    let plan = request.build()?;
    let total = plan
        .accesses()
        .map(|n| n.saturating_mul(HOST_PAGES.len() as u64));
    let outcomes = with_progress(total, |progress| Ok(run_host_pages(request, progress)?))?;
    let cmp = HostPageComparison::of(request.guest.page, &outcomes);
    let prov = compromis_sweep::provenance::Provenance::of_process();
    let text = match opts.output {
        Format::Table => {
            let mut s = format!(
                "{}: guest pages {}, machine {}: Compromis against EPT and shadow paging at each host page size\n\n",
                cmp.source,
                cmp.guest_page,
                opts.machine_label(),
            );
            s += &cmp.table().to_text();
            if let Some(best) = cmp.best() {
                s += &format!(
                    "\nBest host page this VM's contiguity allows: {} (EPT leaves 4k/2m/1g = {}/{}/{}). \
                     Speedups: runtime(other) / runtime(compromis); in parentheses the overhead reading, \
                     overhead(other) / overhead(compromis), overhead = cycles / ideal - 1. \
                     The paper's \"370% faster\" is 4.7x in the runtime reading, or EPT's overhead 4.7x Compromis's in the overhead reading.\n",
                    best.host_page, best.ept_leaves[0], best.ept_leaves[1], best.ept_leaves[2]
                );
            }
            s
        }
        Format::Json => {
            serde_json::to_string_pretty(&prov.attach_json(serde_json::to_value(&cmp)?))? + "\n"
        }
        Format::Csv => prov.attach_csv(&cmp.table().to_csv()?)?,
    };
    opts.file.deliver(&text)?;
    Ok(ExitCode::SUCCESS)
}
