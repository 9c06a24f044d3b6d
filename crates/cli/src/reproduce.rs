//! `compromis reproduce`: regenerates the paper's claims as a report (thin glue over
//! `compromis_repro`).

use anyhow::{Context, Result};
use compromis_cluster::TraceFormat;
use compromis_mmu::config::presets::Machine;
use compromis_repro::{Options, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

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
    /// Print each section's wall time and the process CPU time on stderr when it ends, and the
    /// whole run's (nothing is written to the report).
    #[arg(long)]
    pub timings: bool,
    /// Run the sections one after another instead of at the same time (same results; with
    /// --timings, each section's time alone).
    #[arg(long)]
    pub sequential: bool,
}

/// Process CPU time (user + system, every thread) so far, seconds, from `/proc/self/stat`
/// (Linux counts it in ticks of 1/100 s there); 0 where that file is missing.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) close with ')'; utime and stime
    // are fields 14 and 15, the 12th and 13th after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// A stage's bar and when it started (wall clock, process CPU).
struct StageBar {
    bar: ProgressBar,
    start: Instant,
    cpu: f64,
}

/// One indicatif bar per stage, on stderr (stages run at the same time, so several bars at once);
/// with `--timings`, a line per stage on stderr when it ends.
struct Bars {
    multi: MultiProgress,
    stages: Mutex<HashMap<String, StageBar>>,
    timings: Option<(Instant, f64)>,
}

impl Bars {
    fn new(timings: bool) -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr()),
            stages: Mutex::new(HashMap::new()),
            timings: timings.then(|| (Instant::now(), cpu_seconds())),
        }
    }

    /// With `--timings`, a line on stderr (above the bars).
    fn timing(&self, line: &str) {
        if self.timings.is_some() {
            self.multi.suspend(|| note!("timing: {line}"));
        }
    }

    /// With `--timings`, the whole run's line.
    fn total(&self, what: &str) {
        if let Some((t0, cpu0)) = self.timings {
            let wall = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            self.timing(&format!(
                "{what:<21} {wall:7.1} s wall, {cpu:7.1} s CPU ({:.0}% of one core)",
                100.0 * cpu / wall.max(1e-9)
            ));
        }
    }
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: u64) {
        let pb = self.multi.add(
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
        );
        pb.set_prefix(name.to_owned());
        pb.enable_steady_tick(std::time::Duration::from_millis(250));
        if let Ok(mut b) = self.stages.lock() {
            b.insert(
                name.to_owned(),
                StageBar {
                    bar: pb,
                    start: Instant::now(),
                    cpu: if self.timings.is_some() {
                        cpu_seconds()
                    } else {
                        0.0
                    },
                },
            );
        }
    }
    fn step(&self, stage: &str) {
        if let Ok(b) = self.stages.lock()
            && let Some(s) = b.get(stage)
        {
            s.bar.inc(1);
        }
    }
    fn finish(&self, stage: &str) {
        let done = self.stages.lock().ok().and_then(|mut b| b.remove(stage));
        if let Some(s) = done {
            s.bar.finish();
            if let Some((t0, _)) = self.timings {
                let from = s.start.duration_since(t0).as_secs_f64();
                let wall = s.start.elapsed().as_secs_f64();
                let cpu = cpu_seconds() - s.cpu;
                self.timing(&format!(
                    "{stage:<21} {wall:7.1} s wall ({from:.1} s to {:.1} s), {cpu:7.1} s process CPU meanwhile",
                    from + wall
                ));
            }
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
        sequential: args.sequential,
    };
    let bars = Bars::new(args.timings);
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
    bars.total("sections");
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
    bars.total("total with the report");
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
