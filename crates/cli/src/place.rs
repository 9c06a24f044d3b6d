//! `compromis place`: replays a VM trace (or the synthetic generator) on a fleet under placement
//! policies and prints the single-segment share and the other metrics. Thin glue over
//! `compromis_cluster`.

use anyhow::{Context, Result};
use compromis_cluster::trace::DurationRule;
use compromis_cluster::{
    EventStream, Fallback, Fleet, PlacementReport, PolicyKind, SimOptions, SyntheticConfig,
    SyntheticTrace, TraceFormat, TraceOptions, open_trace, simulate_observed,
};
use compromis_report::Format;
use compromis_types::ByteSize;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;

/// Fleet used with the synthetic generator when `--hosts` is not given.
const DEFAULT_SYNTHETIC_FLEET: &str = compromis_cluster::fleet::DEFAULT_SYNTHETIC_FLEET;
/// Fleet used with a trace when `--hosts` is not given.
const DEFAULT_TRACE_FLEET: &str = "20000x192GiB/24c";

/// Arguments of `compromis place`.
#[derive(clap::Args, Debug)]
pub struct PlaceArgs {
    /// VM trace file or folder; without it the built-in synthetic generator runs.
    #[arg(long, value_name = "FILE|DIR")]
    trace: Option<PathBuf>,
    /// Trace format: azure, azure-rnn, google2011, alibaba2018, bitbrains.
    #[arg(long)]
    format: Option<String>,
    /// Fleet, e.g. 20000x192GiB/24c or 100x192GiB/48c,10x1TiB/96c/16GiBr [default: 20000x192GiB/24c
    /// for a trace, the synthetic default fleet otherwise].
    #[arg(long)]
    hosts: Option<String>,
    /// Placement policy: first-fit, best-fit, worst-fit, random, contig-first-fit, segment-best-fit, frag-aware.
    #[arg(long, default_value = "contig-first-fit")]
    policy: String,
    /// When no single extent is available: reject, compact, segments:K.
    #[arg(long, default_value = "segments:8")]
    fallback: String,
    /// Seed of every random choice (synthetic trace, duration draws, random policy).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run several policies on the same trace in parallel, side by side (comma-separated).
    #[arg(long, value_delimiter = ',')]
    compare: Vec<String>,
    /// Count and skip malformed rows instead of failing.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Output: table, json, csv.
    #[arg(long, default_value = "table")]
    output: String,
    /// Write single_segment_share.svg and fragmentation.svg into this folder.
    #[arg(long, value_name = "DIR")]
    svg: Option<PathBuf>,
    /// Number of VMs of the synthetic trace.
    #[arg(long, default_value_t = 20_000)]
    vms: u64,
    /// Memory a normalized 1.0 stands for (google2011, alibaba2018) [default: the largest host].
    #[arg(long)]
    norm_mem: Option<String>,
    /// Lifetime inside an azure-rnn duration bin: lower, mid, uniform.
    #[arg(long, default_value = "uniform")]
    duration_rule: String,
    /// Trace seconds between samples of the time series.
    #[arg(long, default_value_t = 3600)]
    sample_interval: u64,
    /// Extent choice inside a host: first-fit, best-fit, worst-fit, next-fit.
    #[arg(long, default_value = "best-fit")]
    extent_policy: String,
}

/// Runs the subcommand.
pub fn run(args: &PlaceArgs) -> Result<ExitCode> {
    let fleet_text = args.hosts.clone().unwrap_or_else(|| {
        if args.trace.is_some() {
            DEFAULT_TRACE_FLEET
        } else {
            DEFAULT_SYNTHETIC_FLEET
        }
        .to_owned()
    });
    let fleet: Fleet = fleet_text.parse().context("bad --hosts")?;
    let fallback: Fallback = args.fallback.parse().context("bad --fallback")?;
    let policies: Vec<PolicyKind> = if args.compare.is_empty() {
        vec![args.policy.parse().context("bad --policy")?]
    } else {
        args.compare
            .iter()
            .map(|p| p.parse::<PolicyKind>())
            .collect::<Result<_, _>>()
            .context("bad --compare")?
    };
    let output: Format = args
        .output
        .parse()
        .map_err(anyhow::Error::msg)
        .context("bad --output")?;
    let opts = SimOptions {
        seed: args.seed,
        sample_interval: args.sample_interval.max(1),
        skip_bad_rows: args.skip_bad_rows,
        extent_policy: args.extent_policy.parse().context("bad --extent-policy")?,
        ..SimOptions::default()
    };
    let norm_mem = match &args.norm_mem {
        Some(s) => s
            .parse::<ByteSize>()
            .with_context(|| format!("bad --norm-mem '{s}'"))?
            .bytes(),
        None => fleet
            .groups
            .iter()
            .map(|g| g.1.mem_bytes)
            .max()
            .unwrap_or(0),
    };
    let topts = TraceOptions {
        seed: args.seed,
        norm_mem_bytes: norm_mem,
        duration_rule: args
            .duration_rule
            .parse::<DurationRule>()
            .map_err(anyhow::Error::msg)
            .context("bad --duration-rule")?,
    };
    let format = match (&args.trace, &args.format) {
        (Some(_), Some(f)) => Some(f.parse::<TraceFormat>()?),
        (Some(t), None) => anyhow::bail!(
            "--format is required with --trace {} (azure, azure-rnn, google2011, alibaba2018, bitbrains)",
            t.display()
        ),
        (None, Some(_)) => anyhow::bail!("--format needs --trace"),
        (None, None) => None,
    };
    let open = || -> Result<EventStream> {
        match (&args.trace, format) {
            (Some(path), Some(f)) => open_trace(path, f, &topts)
                .with_context(|| format!("cannot read {} trace {}", f, path.display())),
            _ => Ok(Box::new(SyntheticTrace::new(SyntheticConfig {
                vms: args.vms,
                seed: args.seed,
                ..SyntheticConfig::default()
            })?)),
        }
    };
    // Open once up front so a bad path or layout fails before any thread starts.
    drop(open()?);

    let multi = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} {prefix:>18} {human_pos} events, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let reports: Vec<PlacementReport> = policies
        .par_iter()
        .map(|p| {
            let bar = multi.add(
                ProgressBar::new_spinner()
                    .with_style(style.clone())
                    .with_prefix(p.name()),
            );
            let events = open()?;
            let r = simulate_observed(events, &fleet, p, &fallback, &opts, &|n| {
                bar.set_position(n)
            })
            .with_context(|| format!("replay under {p} failed"));
            bar.finish_and_clear();
            r
        })
        .collect::<Result<_>>()?;
    crate::emit(&compromis_report::place::render(&reports, output)?)?;
    if let Some(dir) = &args.svg {
        let files = compromis_report::place::write_svgs(&reports, dir)?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
