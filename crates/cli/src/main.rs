//! The `compromis` command: parses arguments, calls the libraries, prints.
//!
//! Every subcommand lives in its own module with an `Args` struct (clap derive) and a `run`
//! function. Errors are printed with their causes (`{:#}`) and exit with status 2.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// `eprintln!` that never panics: a failed write to stderr (`2>/dev/full`, closed pipe) is
/// ignored, since there is nowhere left to report it.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::note_text(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod config;
mod data;
mod hv;
mod kvm;
mod place;
mod plot;
mod record;
mod record_qemu;
mod reproduce;
mod signals;
mod sim;
mod sweep;
mod tracecmd;

/// Compromis: memory virtualization with one host-physical segment per VM (VEE 2021).
#[derive(Parser, Debug)]
#[command(name = "compromis", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Simulate address translation of a workload or trace under several schemes.
    Sim(sim::SimArgs),
    /// Run a program under QEMU (or valgrind lackey) and simulate its memory accesses as they arrive.
    Record(record::RecordArgs),
    /// Inspect or convert memory traces.
    Trace(tracecmd::TraceArgs),
    /// Print or check the machine-model configuration file.
    Config(config::ConfigArgs),
    /// Run a hypervisor memory-manager scenario and print the host memory map.
    Hv(hv::HvArgs),
    /// Replay a VM trace on a cluster under placement policies.
    Place(place::PlaceArgs),
    /// Regenerate the paper's claims as a report with figures.
    Reproduce(reproduce::ReproduceArgs),
    /// Redraw a reproduce report's figures from its tidy CSVs (no simulation).
    Plot(plot::PlotArgs),
    /// List the VM-trace families, where to get them and their layout; `data check DIR` validates a folder.
    Data(data::DataArgs),
    /// Run gups and pointer-chase in a real VM on /dev/kvm with Compromis-provisioned RAM.
    Kvm(kvm::KvmArgs),
    /// Run a sweep spec (a grid of sim or place configurations and seeds), resumably, locally,
    /// as one shard, or as a Slurm job array; `sweep merge` combines shard folders.
    Sweep(sweep::SweepArgs),
}

/// Where a command's results go: stdout, or `-o/--output-file FILE`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputFile {
    /// Write the results to FILE instead of stdout (through a temporary file renamed over FILE,
    /// so a failed run leaves no half-written file).
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    pub output_file: Option<std::path::PathBuf>,
}

impl OutputFile {
    /// Checks, before the work, that the results file can be written: not a folder, and not a
    /// read-only file (which is never replaced).
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(p) = &self.output_file {
            compromis_trace::check_output_file(p)
                .map_err(|e| anyhow::anyhow!("cannot write the results to {}: {e}", p.display()))?;
        }
        Ok(())
    }

    /// Writes the results to the file (atomically) or to stdout.
    pub fn deliver(&self, text: &str) -> anyhow::Result<()> {
        self.check()?;
        match &self.output_file {
            Some(p) => Ok(compromis_report::write_atomic(p, text.as_bytes())?),
            None => emit(text).map_err(|e| e.context("cannot write to stdout")),
        }
    }
}

/// Writes `text` to stdout. A closed pipe (`compromis ... | head`) ends the output quietly instead
/// of panicking as `print!` does.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        Err(_) => {
            STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stdout was found closed by [`emit`] (`| head`): what is left to print can be skipped.
pub(crate) fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Writes `text` to stderr, ignoring write errors (see `note!`).
pub(crate) fn note_text(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = signals::install() {
        note!("warning: cannot install the signal handlers: {e}");
    }
    let result = match &cli.command {
        Command::Sim(a) => sim::run(a),
        Command::Record(a) => match record_qemu::run_if_qemu(a) {
            Ok(Some(code)) => Ok(code),
            Ok(None) => record::run(a),
            Err(e) => Err(e),
        },
        Command::Trace(a) => tracecmd::run(a),
        Command::Config(a) => config::run(a),
        Command::Hv(a) => hv::run(a),
        Command::Place(a) => place::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::Kvm(a) => kvm::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Data(a) => data::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            note!("error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes joined by ": ", each cause once: a cause whose text the message
/// already holds (an error that prints its source itself) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.is_empty() {
            text = c;
        } else if !text.contains(&c) {
            text += ": ";
            text += &c;
        }
    }
    text
}
