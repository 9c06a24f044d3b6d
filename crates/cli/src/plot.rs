//! `compromis plot DIR`: redraws the figures of a `compromis reproduce` report from its tidy CSVs
//! (no simulation), and the figure options shared by reproduce, place, hv and plot. Thin glue
//! over `compromis_repro::{read_tidy, write_figures}` and `compromis_report::figure`.

use anyhow::Context;
use compromis_report::figure::{FigureFormat, formats_or_svg};
use compromis_report::theme::Width;
use std::path::PathBuf;
use std::process::ExitCode;

/// Figure options of every command that draws figures.
#[derive(clap::Args, Debug, Clone)]
pub struct FigureOpts {
    /// Figure file formats: svg, pdf, png (repeatable or comma-separated) [default: svg].
    #[arg(long = "figure-format", value_name = "FORMAT", value_delimiter = ',')]
    pub figure_format: Vec<FigureFormat>,
    /// Figure width: column (3.33 in) or page (7 in); text is at least 7 pt at that width.
    #[arg(long = "figure-width", value_name = "WIDTH", default_value = "page")]
    pub figure_width: Width,
}

impl FigureOpts {
    /// The formats asked for (SVG when none).
    pub fn formats(&self) -> Vec<FigureFormat> {
        formats_or_svg(&self.figure_format)
    }
}

/// Stages a figure folder (`place --svg`, `hv --svg`): its parent folders are created, then
/// [`compromis_report::StagedDir`] checks it (an existing folder with files in it needs `force`)
/// and the figures are written into a hidden folder beside it, renamed into place whole.
pub fn stage_dir(
    dir: &std::path::Path,
    force: bool,
) -> anyhow::Result<compromis_report::StagedDir> {
    use anyhow::Context as _;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create folder {}", parent.display()))?;
    }
    Ok(compromis_report::StagedDir::prepare(dir, force)?)
}

/// Arguments of `compromis plot`.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// Report folder written by `compromis reproduce` (its tidy CSVs are read).
    pub dir: PathBuf,
    /// Folder the figures are written to [default: DIR].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub figures: FigureOpts,
}

/// Runs the subcommand.
pub fn run(args: &PlotArgs) -> anyhow::Result<ExitCode> {
    let tidy = compromis_repro::read_tidy(&args.dir)
        .with_context(|| format!("cannot read the report in {}", args.dir.display()))?;
    let out = args.out.as_ref().unwrap_or(&args.dir);
    let files = compromis_repro::write_figures(
        &tidy,
        out,
        args.figures.figure_width,
        &args.figures.formats(),
    )?;
    let mut text = String::new();
    for f in files {
        text += &format!("wrote {}\n", f.display());
    }
    crate::emit(&text).context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
