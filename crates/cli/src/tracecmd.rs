//! `compromis trace`: inspect and convert memory traces (glue over `compromis-trace`).

use anyhow::{Context, bail};
use compromis_report::Format as OutputFormat;
use compromis_trace::{
    MemTraceFormat, ReadOptions, RecordSource, StatsBuilder, TraceFileWriter, TraceStats,
    open_records,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `compromis trace`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// What to do with the trace.
    #[command(subcommand)]
    pub command: TraceCommand,
}

/// The `compromis trace` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TraceCommand {
    /// Count records, instructions, loads, stores, pages touched and the address range.
    Inspect(InspectArgs),
    /// Convert a trace to another format (lackey text, ChampSim, native).
    Convert(ConvertArgs),
}

/// Options shared by the readers.
#[derive(clap::Args, Debug)]
pub struct InputOptions {
    /// Input trace format: lackey, champsim or native (default: detected from the content).
    #[arg(long, alias = "from", value_name = "FORMAT")]
    pub trace_format: Option<MemTraceFormat>,
    /// Skip records that do not parse and report how many, instead of stopping with an error.
    #[arg(long)]
    pub skip_bad_records: bool,
}

impl InputOptions {
    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            skip_bad_records: self.skip_bad_records,
            format: self.trace_format,
        }
    }
}

/// Arguments of `compromis trace inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The trace file (any supported format, plain or gzip/xz/zstd-compressed).
    pub file: PathBuf,
    /// Output format: table or json.
    #[arg(long, alias = "format", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Input options.
    #[command(flatten)]
    pub input: InputOptions,
    /// Results file (`-o`).
    #[command(flatten)]
    pub results: crate::OutputFile,
}

/// Arguments of `compromis trace convert`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// The input trace.
    pub input: PathBuf,
    /// The output file (written to a temporary file, then renamed). A `.gz`, `.xz` or `.zst`
    /// suffix compresses lackey and ChampSim output.
    pub output: PathBuf,
    /// Output format: lackey, champsim or native (default: from the output name: `.ctrace` is
    /// native, `.champsim`/`.champsimtrace` ChampSim, `.lackey`/`.txt` lackey).
    #[arg(long, value_name = "FORMAT")]
    pub to: Option<MemTraceFormat>,
    /// Input options.
    #[command(flatten)]
    pub input_opts: InputOptions,
}

/// Runs the subcommand.
pub fn run(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        TraceCommand::Inspect(a) => inspect(a),
        TraceCommand::Convert(a) => convert(a),
    }
}

/// A spinner on stderr for long reads (hidden when stderr is not a terminal).
fn spinner(what: &str) -> indicatif::ProgressBar {
    let pb =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {human_pos} records ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    pb.set_message(what.to_owned());
    pb
}

const TICK: u64 = 1 << 20;

fn open(path: &Path, opts: &InputOptions) -> anyhow::Result<Box<dyn RecordSource>> {
    Ok(open_records(path, &opts.read_options())?)
}

fn inspect(a: &InspectArgs) -> anyhow::Result<ExitCode> {
    let mut src = open(&a.file, &a.input)?;
    let pb = spinner("reading");
    let mut b = StatsBuilder::default();
    let mut n = 0u64;
    for r in &mut src {
        b.add(&r?);
        n += 1;
        if n.is_multiple_of(TICK) {
            pb.set_position(n);
        }
    }
    pb.finish_and_clear();
    let s = b.finish(src.skipped());
    match a.output {
        OutputFormat::Json => {
            #[derive(serde::Serialize)]
            struct Out<'a> {
                file: String,
                #[serde(flatten)]
                stats: &'a TraceStats,
            }
            let out = Out {
                file: a.file.display().to_string(),
                stats: &s,
            };
            a.results
                .deliver(&(serde_json::to_string_pretty(&out)? + "\n"))?;
        }
        OutputFormat::Table => a.results.deliver(&table(&a.file, &s))?,
        OutputFormat::Csv => a.results.deliver(&csv(&a.file, &s).to_csv()?)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The statistics as a CSV table: one header line of names, one line of values (bytes and
/// addresses as plain numbers).
fn csv(file: &Path, s: &TraceStats) -> compromis_report::Table {
    use compromis_types::Address as _;
    let addr = |a: Option<compromis_types::Gva>| a.map_or(String::new(), |g| g.raw().to_string());
    let cols: Vec<(&str, String)> = vec![
        ("file", file.display().to_string()),
        ("records", s.records.to_string()),
        ("instructions", s.instructions.to_string()),
        ("fetches", s.fetches.to_string()),
        ("loads", s.loads.to_string()),
        ("stores", s.stores.to_string()),
        ("modifies", s.modifies.to_string()),
        ("accesses", s.accesses.to_string()),
        ("skipped", s.skipped.to_string()),
        ("pages_4k", s.pages_4k.to_string()),
        ("pages_2m", s.pages_2m.to_string()),
        ("footprint_bytes", s.footprint_bytes.to_string()),
        ("min_addr", addr(s.min_addr)),
        ("max_addr", addr(s.max_addr)),
    ];
    let mut t = compromis_report::Table::new(cols.iter().map(|c| c.0));
    t.push(cols.into_iter().map(|c| c.1));
    t
}

fn table(file: &Path, s: &TraceStats) -> String {
    let addr = |a: Option<compromis_types::Gva>| a.map_or("-".to_owned(), |g| format!("{g}"));
    let rows: Vec<(&str, String)> = vec![
        ("file", file.display().to_string()),
        ("records", s.records.to_string()),
        ("instructions", s.instructions.to_string()),
        ("fetches", s.fetches.to_string()),
        ("loads", s.loads.to_string()),
        ("stores", s.stores.to_string()),
        ("modifies", s.modifies.to_string()),
        ("accesses", s.accesses.to_string()),
        ("skipped", s.skipped.to_string()),
        ("pages_4k", s.pages_4k.to_string()),
        ("pages_2m", s.pages_2m.to_string()),
        (
            "footprint",
            format!(
                "{} bytes ({:.1} MiB)",
                s.footprint_bytes,
                mib(s.footprint_bytes)
            ),
        ),
        ("min_addr", addr(s.min_addr)),
        ("max_addr", addr(s.max_addr)),
    ];
    rows.iter().map(|(k, v)| format!("{k:<13} {v}\n")).collect()
}

// Display only: a byte count shown in MiB with one decimal.
#[allow(clippy::cast_precision_loss)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The output format a file name asks for.
fn format_from_name(path: &Path) -> Option<MemTraceFormat> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let name = ["gz", "xz", "zst", "zstd"]
        .iter()
        .find_map(|c| name.strip_suffix(&format!(".{c}")))
        .unwrap_or(&name)
        .to_owned();
    if name.ends_with(".ctrace") {
        Some(MemTraceFormat::Native)
    } else if name.ends_with(".champsim") || name.ends_with(".champsimtrace") {
        Some(MemTraceFormat::ChampSim)
    } else if name.ends_with(".lackey") || name.ends_with(".txt") {
        Some(MemTraceFormat::Lackey)
    } else {
        None
    }
}

fn convert(a: &ConvertArgs) -> anyhow::Result<ExitCode> {
    let to = match a.to.or_else(|| format_from_name(&a.output)) {
        Some(f) => f,
        None => bail!(
            "cannot tell the output format from {}: pass --to lackey|champsim|native",
            a.output.display()
        ),
    };
    let mut src = open(&a.input, &a.input_opts)?;
    let mut w = TraceFileWriter::create(&a.output, to)?;
    let pb = spinner("converting");
    let mut n = 0u64;
    for r in &mut src {
        w.write(&r?)?;
        n += 1;
        if n.is_multiple_of(TICK) {
            pb.set_position(n);
        }
    }
    pb.finish_and_clear();
    let summary = w
        .finish()
        .with_context(|| format!("writing {}", a.output.display()))?;
    crate::emit(&format!(
        "wrote {} records to {} ({to}); skipped {} bad input records; dropped {} records {to} cannot represent\n",
        summary.records - summary.dropped,
        a.output.display(),
        src.skipped(),
        summary.dropped,
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_format_from_name() {
        assert_eq!(
            format_from_name(Path::new("a/x.ctrace")),
            Some(MemTraceFormat::Native)
        );
        assert_eq!(
            format_from_name(Path::new("x.champsim.xz")),
            Some(MemTraceFormat::ChampSim)
        );
        assert_eq!(
            format_from_name(Path::new("x.lackey.gz")),
            Some(MemTraceFormat::Lackey)
        );
        assert_eq!(format_from_name(Path::new("x.bin")), None);
    }
}
