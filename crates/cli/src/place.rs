//! `compromis place`: replays a VM trace (or the synthetic generator) on a fleet under placement
//! policies and prints the single-segment share and the other metrics. Thin glue over
//! `compromis_cluster`.

use anyhow::Result;
use compromis_cluster::trace::DurationRule;
use compromis_cluster::{
    Fallback, Fleet, PlaceRequest, PlaceSource, PlacementReport, PolicyKind, TraceFormat,
};
use compromis_hostmem::Policy as ExtentPolicy;
use compromis_report::Format;
use compromis_types::ByteSize;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `compromis place`.
#[derive(clap::Args, Debug)]
pub struct PlaceArgs {
    /// VM trace file or folder; without it the built-in synthetic generator runs.
    #[arg(long, value_name = "FILE|DIR", requires = "trace_format")]
    trace: Option<PathBuf>,
    /// Trace format: azure, azure-rnn, google2011, alibaba2018, bitbrains.
    #[arg(long, alias = "format", requires = "trace")]
    trace_format: Option<TraceFormat>,
    /// Fleet, e.g. 20000x192GiB/24c or 100x192GiB/48c,10x1TiB/96c/16GiBr [default: 20000x192GiB/24c
    /// for a trace, the synthetic default fleet otherwise].
    #[arg(long)]
    hosts: Option<Fleet>,
    /// Placement policy: first-fit, best-fit, worst-fit, random, contig-first-fit, segment-best-fit, frag-aware.
    #[arg(long, default_value = "contig-first-fit")]
    policy: PolicyKind,
    /// When no single extent is available: refuse (or reject), segments:K, ept, compact. Every
    /// fallback but refuse ends in EPT paging over the host's free memory (counted as "paged").
    #[arg(long, default_value = "segments:8")]
    fallback: Fallback,
    /// Size the fleet so that the trace's peak memory demand is this share (0 < U <= 1) of it; the
    /// host kind comes from --hosts (one group, its count is replaced) or the default fleet.
    #[arg(long, value_name = "U")]
    target_utilization: Option<f64>,
    /// Seed of every random choice (synthetic trace, duration draws, random policy).
    #[arg(long, default_value_t = compromis_types::DEFAULT_SEED)]
    seed: u64,
    /// Run several policies on the same trace in parallel, side by side (comma-separated).
    #[arg(long, value_delimiter = ',')]
    compare: Vec<PolicyKind>,
    /// Count and skip malformed rows instead of failing.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Output: table, json, csv.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Write the figures single_segment_share and fragmentation into this folder (formats:
    /// --figure-format).
    #[arg(long, value_name = "DIR", alias = "figures")]
    svg: Option<PathBuf>,
    /// Replace an existing --svg folder that has files in it (the folder is written whole, into
    /// a hidden folder beside it renamed into place at the end).
    #[arg(long, requires = "svg")]
    force: bool,
    #[command(flatten)]
    figures: crate::plot::FigureOpts,
    /// Number of VMs of the synthetic trace (at least 1).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    vms: u64,
    /// Memory a normalized 1.0 stands for (google2011, alibaba2018) [default: the largest host].
    #[arg(long)]
    norm_mem: Option<ByteSize>,
    /// Lifetime inside an azure-rnn duration bin: lower, mid, uniform.
    #[arg(long, default_value = "uniform")]
    duration_rule: DurationRule,
    /// Trace seconds between samples of the time series.
    #[arg(long, default_value_t = 3600)]
    sample_interval: u64,
    /// Extent choice inside a host: first-fit, best-fit, worst-fit, next-fit.
    #[arg(long, default_value = "best-fit")]
    extent_policy: ExtentPolicy,
    /// Results file (`-o`).
    #[command(flatten)]
    file: crate::OutputFile,
}

/// The placement study these arguments describe.
pub fn request(args: &PlaceArgs) -> PlaceRequest {
    PlaceRequest {
        source: match (&args.trace, args.trace_format) {
            (Some(path), Some(format)) => PlaceSource::Trace {
                path: path.clone(),
                format,
            },
            _ => PlaceSource::Synthetic { vms: args.vms },
        },
        fleet: args.hosts.clone(),
        policies: if args.compare.is_empty() {
            vec![args.policy]
        } else {
            args.compare.clone()
        },
        fallback: args.fallback,
        seed: args.seed,
        sample_interval: args.sample_interval,
        skip_bad_rows: args.skip_bad_rows,
        extent_policy: args.extent_policy,
        norm_mem: args.norm_mem.map(ByteSize::bytes),
        duration_rule: args.duration_rule,
        target_utilization: args.target_utilization,
    }
}

/// Runs the subcommand.
pub fn run(args: &PlaceArgs) -> Result<ExitCode> {
    args.file.check()?;
    let output = args.output;
    let req = request(args);
    // The --svg folder is checked (and staged) before the run.
    let staged = match &args.svg {
        Some(dir) => Some(crate::plot::stage_dir(dir, args.force)?),
        None => None,
    };
    let multi = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} {prefix:>18} {human_pos} events, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bars: Vec<ProgressBar> = req
        .policies
        .iter()
        .map(|p| {
            multi.add(
                ProgressBar::new_spinner()
                    .with_style(style.clone())
                    .with_prefix(p.name()),
            )
        })
        .collect();
    let reports: Vec<PlacementReport> = req.run(&|i, n| bars[i].set_position(n))?;
    for b in &bars {
        b.finish_and_clear();
    }
    if let Some(n) = reports.first().map(|r| r.implicit_ends).filter(|&n| n > 0) {
        note!(
            "note: {n} tasks were scheduled again while running (their end event lies in a shard \
             that was not read): each is replayed as the end of its previous run (implicit_ends \
             in --output json)"
        );
    }
    let prov = compromis_sweep::provenance::Provenance::of_process();
    let text = match output {
        // Each report object gets the `provenance` object (the document stays an array).
        Format::Json => {
            let v: serde_json::Value =
                serde_json::from_str(&compromis_report::place::json(&reports)?)?;
            let v: Vec<serde_json::Value> = match v {
                serde_json::Value::Array(a) => a.into_iter().map(|r| prov.attach_json(r)).collect(),
                other => vec![other],
            };
            serde_json::to_string_pretty(&v)? + "\n"
        }
        Format::Csv => prov.attach_csv(&compromis_report::place::csv(&reports))?,
        Format::Table => compromis_report::place::render(&reports, output)?,
    };
    args.file.deliver(&text)?;
    if let Some(staged) = staged {
        let files = compromis_report::place::write_figures(
            &reports,
            staged.path(),
            args.figures.figure_width,
            &args.figures.formats(),
        )?;
        let files: Vec<PathBuf> = files.iter().map(|f| staged.final_path(f)).collect();
        staged.commit()?;
        for f in files {
            note!("wrote {}", f.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
