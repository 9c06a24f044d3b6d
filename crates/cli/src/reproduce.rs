//! `compromis reproduce`: regenerates the paper's claims as a report (thin glue over
//! `compromis_repro`).

use anyhow::{Context, Result};
use compromis_cluster::TraceFormat;
use compromis_mmu::config::presets::Machine;
use compromis_repro::{Options, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

/// Arguments of `compromis reproduce`.
#[derive(clap::Args, Debug)]
pub struct ReproduceArgs {
    /// Folder the report is written to (created if needed; written whole, atomically, at the
    /// end). An existing folder with files in it needs --force.
    #[arg(long, default_value = "reproduce-out")]
    pub out: PathBuf,
    /// Replace an existing --out folder that has files in it (all of its old files go).
    #[arg(long)]
    pub force: bool,
    /// Smaller workloads and truncated traces (about a minute).
    #[arg(long)]
    pub quick: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = compromis_types::DEFAULT_SEED)]
    pub seed: u64,
    /// An extra VM trace for the provisioning section.
    #[arg(long, requires = "trace_format")]
    pub trace: Option<PathBuf>,
    /// Format of --trace: azure, azure-rnn, google2011, alibaba2018, bitbrains.
    #[arg(long, requires = "trace")]
    pub trace_format: Option<TraceFormat>,
    /// Folder of the real VM traces (used only if it exists).
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    /// Only simulate the hardware anchors (on the preset closest to the measured machine) and
    /// print their table; writes nothing.
    #[arg(long, conflicts_with_all = ["trace", "trace_format"])]
    pub anchors: bool,
    /// Machine preset of every simulation (`compromis config --list`).
    #[arg(long, default_value_t = Machine::default_machine())]
    pub machine: Machine,
    /// Write the summary (files written, claims with our figures) to FILE instead of stdout.
    #[command(flatten)]
    pub file: crate::OutputFile,
    #[command(flatten)]
    pub figures: crate::plot::FigureOpts,
}

/// One indicatif bar per stage, on stderr.
struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: u64) {
        let pb =
            ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
        pb.set_prefix(name.to_owned());
        pb.enable_steady_tick(std::time::Duration::from_millis(250));
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(pb);
        }
    }
    fn step(&self) {
        if let Ok(b) = self.bar.lock()
            && let Some(pb) = b.as_ref()
        {
            pb.inc(1);
        }
    }
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(pb) = b.take()
        {
            pb.finish();
        }
    }
}

/// Runs the subcommand.
pub fn run(args: &ReproduceArgs) -> Result<ExitCode> {
    let extra_trace = match (&args.trace, &args.trace_format) {
        (Some(p), Some(format)) => {
            anyhow::ensure!(p.exists(), "--trace {} does not exist", p.display());
            Some((p.clone(), *format))
        }
        _ => None,
    };
    if !args.data.is_dir() {
        note!(
            "warning: data folder {} not found: the real VM traces are skipped (see `compromis data`)",
            args.data.display()
        );
    }
    let opts = Options {
        quick: args.quick,
        seed: args.seed,
        data_dir: args.data.is_dir().then(|| args.data.clone()),
        extra_trace,
        machine: args.machine,
    };
    let bars = Bars {
        bar: Mutex::new(None),
    };
    if args.anchors {
        let rows = compromis_repro::run_anchors(args.quick, args.seed, &bars)
            .context("anchor runs failed")?;
        args.file.deliver(&format!(
            "{}\nThe mean walk of each run, part by part (cycles and references per walk):\n{}",
            compromis_repro::anchors_table(&rows).to_text(),
            compromis_repro::breakdown_table(&rows).to_text()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    // The destination first: a folder in the way or an unwritable place fails before the run.
    let staged = compromis_report::StagedDir::prepare(&args.out, args.force)?;
    let results = compromis_repro::run(&opts, &bars).context("reproduction run failed")?;
    let mut files = compromis_repro::write_report_with(
        &results,
        staged.path(),
        args.figures.figure_width,
        &args.figures.formats(),
    )
    .with_context(|| format!("cannot write the report to {}", args.out.display()))?;
    files.push(compromis_repro::write_measured(
        staged.path(),
        args.quick,
        args.seed,
    )?);
    let files: Vec<PathBuf> = files.iter().map(|f| staged.final_path(f)).collect();
    staged.commit()?;
    let mut text = String::new();
    for f in &files {
        text += &format!("wrote {}\n", f.display());
    }
    for c in &results.claims {
        text += &format!("{}\n  ours: {}\n", c.paper, c.ours);
    }
    args.file
        .deliver(&text)
        .context("cannot write the summary")?;
    if !results.closed_form_mismatches().is_empty() {
        note!(
            "warning: simulated walk references differ from the closed form (see section 1 of the report)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
