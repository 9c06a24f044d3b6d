//! `compromis sweep`: runs a sweep spec (`compromis_sweep`), one shard of it, writes a Slurm
//! job-array script for it, or merges shard folders. The points run in-process: this file
//! implements `compromis_sweep::Executor` by parsing a point's arguments with the `sim` or `place`
//! parser and calling the libraries.

use anyhow::{Context, Result};
use clap::Parser;
use compromis_sweep::slurm::{SlurmOptions, script};
use compromis_sweep::{Command, Executor, Point, PointOutput, RunOptions, Shard, Spec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `compromis sweep`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SweepArgs {
    /// `merge`: combine shard folders.
    #[command(subcommand)]
    action: Option<SweepAction>,
    /// The sweep spec (TOML; see docs/sweep.md and examples/).
    #[arg(required = true, value_name = "SPEC")]
    spec: Option<PathBuf>,
    /// Output folder [default: the spec's name without .toml, plus `.sweep`, beside it].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Points run at once [default: the number of CPUs].
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Run only shard I of N (points whose index is I modulo N), e.g. 0/4.
    #[arg(long, value_name = "I/N", conflicts_with = "slurm")]
    shard: Option<Shard>,
    /// Write DIR/sweep.sbatch, a Slurm job array with one task per shard, instead of running.
    #[arg(long)]
    slurm: bool,
    /// Shards (array tasks) of --slurm [default: one per point, at most 100].
    #[arg(long, requires = "slurm")]
    shards: Option<usize>,
    /// Extra #SBATCH line of --slurm (e.g. --sbatch=--partition=short). Repeatable.
    #[arg(
        long,
        requires = "slurm",
        value_name = "OPTION",
        allow_hyphen_values = true
    )]
    sbatch: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
enum SweepAction {
    /// Combine the point folders of shard outputs into the table a local run gives.
    Merge(MergeArgs),
}

/// Arguments of `compromis sweep merge`.
#[derive(clap::Args, Debug)]
struct MergeArgs {
    /// Sweep output folders (of the same spec).
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Where table.csv and table.parquet go [default: the first DIR].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Parser, Debug)]
#[command(name = "compromis sim", no_binary_name = true)]
struct SimPoint {
    #[command(flatten)]
    args: crate::sim::SimArgs,
}

#[derive(Parser, Debug)]
#[command(name = "compromis place", no_binary_name = true)]
struct PlacePoint {
    #[command(flatten)]
    args: crate::place::PlaceArgs,
}

/// Runs points in-process through `compromis_sim` and `compromis_cluster`.
struct InProcess(Command);

fn parse_err(e: clap::Error) -> String {
    e.render().to_string().trim_end().to_owned()
}

impl InProcess {
    fn sim_request(point: &Point) -> Result<compromis_sim::ExperimentRequest, String> {
        let a = SimPoint::try_parse_from(&point.args)
            .map_err(parse_err)?
            .args;
        let mut req = crate::sim::request(&a).map_err(|e| format!("{e:#}"))?;
        if let Some(mut m) = point.machine_config().map_err(|e| e.to_string())? {
            if a.opts.untagged_tlb {
                m.tlb.tagged = false;
            }
            req.machine = m;
        }
        Ok(req)
    }
}

impl Executor for InProcess {
    fn check(&self, point: &Point) -> Result<(), String> {
        match self.0 {
            Command::Sim => {
                Self::sim_request(point)?
                    .build()
                    .map_err(|e| e.to_string())?;
            }
            Command::Place => {
                PlacePoint::try_parse_from(&point.args).map_err(parse_err)?;
            }
        }
        Ok(())
    }

    fn run(&self, point: &Point) -> Result<PointOutput, String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        match self.0 {
            Command::Sim => {
                let plan = Self::sim_request(point)?.build().map_err(|e| err(&e))?;
                let o = compromis_sim::run(&plan, &|_| {}).map_err(|e| err(&e))?;
                Ok(PointOutput {
                    rows: compromis_sim::table::csv_rows(&o),
                    machine: serde_json::to_value(&plan.experiment.sim.machine).ok(),
                    resolved: Some(serde_json::json!({
                        "workload": plan.workload(),
                        "warmup": plan.experiment.sim.warmup,
                        "vm": o.vm,
                    })),
                })
            }
            Command::Place => {
                let a = PlacePoint::try_parse_from(&point.args)
                    .map_err(parse_err)?
                    .args;
                let reports = crate::place::request(&a)
                    .run(&|_, _| {})
                    .map_err(|e| err(&e))?;
                let text = compromis_report::place::csv(&reports);
                let mut r = csv::Reader::from_reader(text.as_bytes());
                let mut rows = compromis_report::Table::new(
                    r.headers().map_err(|e| err(&e))?.iter().map(str::to_owned),
                );
                for rec in r.records() {
                    rows.push(rec.map_err(|e| err(&e))?.iter().map(str::to_owned));
                }
                Ok(PointOutput {
                    rows,
                    machine: None,
                    resolved: None,
                })
            }
        }
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
}

/// Runs the subcommand.
pub fn run(args: &SweepArgs) -> Result<ExitCode> {
    if let Some(SweepAction::Merge(m)) = &args.action {
        let out = m.out.clone().unwrap_or_else(|| m.dirs[0].clone());
        let table = compromis_sweep::write_table(&m.dirs, &out)?;
        note!("wrote {} and table.parquet", table.display());
        return Ok(ExitCode::SUCCESS);
    }
    let spec_path = args.spec.as_deref().context("missing SPEC")?;
    let spec = Spec::load(spec_path)?;
    let out = match &args.out {
        Some(o) => o.clone(),
        None => spec_path.with_extension("sweep"),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if args.slurm {
        let exec = InProcess(spec.command);
        for p in &spec.points {
            exec.check(p)
                .map_err(|e| anyhow::anyhow!("point {} ({}): {e}", p.id, p.label()))?;
        }
        compromis_sweep::run::prepare(&spec, &out)?;
        let shards = args
            .shards
            .unwrap_or(spec.points.len().min(100))
            .clamp(1, spec.points.len().max(1));
        let text = script(
            &std::env::current_exe().context("cannot find the compromis executable")?,
            &absolute(spec_path)?,
            &absolute(&out)?,
            &SlurmOptions {
                shards,
                jobs,
                sbatch: args.sbatch.clone(),
            },
        );
        let path = out.join("sweep.sbatch");
        compromis_report::write_atomic(&path, text.as_bytes())?;
        note!(
            "wrote {} ({} points in {shards} array tasks); submit it with `sbatch {}`, then \
             `compromis sweep merge {}` if no task wrote the table",
            path.display(),
            spec.points.len(),
            path.display(),
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let summary = compromis_sweep::run(
        &spec,
        &InProcess(spec.command),
        &RunOptions {
            out: out.clone(),
            jobs,
            shard: args.shard,
            progress: true,
        },
    )?;
    let what = match args.shard {
        Some(s) => format!(
            "shard {}/{}: {} of {} points",
            s.index, s.count, summary.selected, summary.total
        ),
        None => format!("{} points", summary.total),
    };
    note!(
        "sweep {}: {what}, {} run, {} already finished (skipped), {} failed",
        spec_path.display(),
        summary.ran,
        summary.skipped,
        summary.failed.len()
    );
    for (id, label, message) in &summary.failed {
        note!("error: point {id} ({label}): {message}");
    }
    match &summary.table {
        Some(t) => note!("wrote {} and table.parquet", t.display()),
        None => note!(
            "table not written yet: other shards' points are missing in {} (or run `compromis sweep merge DIR...`)",
            out.display()
        ),
    }
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
