//! `compromis hv`: runs a hypervisor memory-manager scenario (a file, or the built-in demo) and
//! prints the host memory map after each step; `--svg` draws the map over time. Thin glue over
//! `compromis_hostmem::scenario`.

use anyhow::Context;
use compromis_hostmem::{Scenario, StepReport, scenario::DEMO};
use compromis_report::figure::write_figure;
use compromis_report::hv;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `compromis hv`.
#[derive(clap::Args, Debug)]
pub struct HvArgs {
    /// Scenario file (see docs/hostmem.md for the format); the built-in demo when omitted.
    pub scenario: Option<PathBuf>,
    /// Draw the host memory map over time into this folder (`hostmap.svg`, and the other
    /// --figure-format formats).
    #[arg(long, value_name = "DIR", alias = "figures")]
    pub svg: Option<PathBuf>,
    /// Replace an existing --svg folder that has files in it (the folder is written whole, into
    /// a hidden folder beside it renamed into place at the end).
    #[arg(long, requires = "svg")]
    pub force: bool,
    #[command(flatten)]
    pub figures: crate::plot::FigureOpts,
    /// Width of the text bar in columns.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=1000))]
    pub width: u16,
    /// Print only the steps and their outcomes (no map).
    #[arg(long)]
    pub quiet: bool,
    /// Print the built-in demo scenario and exit.
    #[arg(long)]
    pub print_demo: bool,
    /// Results file (`-o`): the steps, maps and summary go there instead of stdout.
    #[command(flatten)]
    pub file: crate::OutputFile,
}

/// The largest scenario file read (16 MiB: a million steps; real ones are a few KiB).
pub const MAX_SCENARIO_BYTES: u64 = 16 << 20;

/// Reads a scenario file of at most [`MAX_SCENARIO_BYTES`] (checked while reading, so
/// `/dev/zero` fails at once instead of filling memory).
fn read_capped(p: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(p)?;
    let mut bytes = Vec::new();
    f.take(MAX_SCENARIO_BYTES + 1).read_to_end(&mut bytes)?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_SCENARIO_BYTES,
        "larger than {} MiB, the cap on a scenario file",
        MAX_SCENARIO_BYTES >> 20
    );
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "not UTF-8 text (byte {} is invalid)",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Runs the subcommand.
pub fn run(args: &HvArgs) -> anyhow::Result<ExitCode> {
    if args.print_demo {
        crate::emit(DEMO)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (text, name) = match &args.scenario {
        Some(p) => (
            read_capped(p).with_context(|| format!("cannot read scenario {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (DEMO.to_owned(), "<demo>".to_owned()),
    };
    args.file.check()?;
    let scenario = Scenario::parse(&text, &name)?;
    // The --svg folder is checked (and staged) before the run.
    let staged = match &args.svg {
        Some(dir) => Some(crate::plot::stage_dir(dir, args.force)?),
        None => None,
    };
    let mut steps: Vec<StepReport> = Vec::new();
    let mut io: anyhow::Result<()> = Ok(());
    let to_file = args.file.output_file.is_some();
    let mut kept = String::new();
    // Each step's copy of the host map is kept only when it is drawn (--svg).
    scenario.run_each(args.svg.is_some(), |r, h| {
        steps.push(r.clone());
        if io.is_err() || crate::stdout_closed() {
            return;
        }
        let map = (!args.quiet).then_some((h, usize::from(args.width)));
        let text = hv::step(&name, r, map);
        if to_file {
            kept += &text;
        } else {
            io = crate::emit(&text);
        }
    })?;
    io.context("cannot write to stdout")?;
    kept += &hv::summary(&steps);
    if to_file {
        args.file.deliver(&kept)?;
    } else {
        crate::emit(&hv::summary(&steps)).context("cannot write to stdout")?;
    }
    if let Some(staged) = staged {
        let svg = hv::map_svg_at(&steps, args.figures.figure_width)?;
        let files = write_figure(staged.path(), "hostmap", &svg, &args.figures.formats())?;
        let files: Vec<PathBuf> = files.iter().map(|f| staged.final_path(f)).collect();
        staged.commit()?;
        for p in files {
            note!("wrote {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
