//! `compromis hv`: runs a hypervisor memory-manager scenario (a file, or the built-in demo) and
//! prints the host memory map after each step; `--svg` draws the map over time. Thin glue over
//! `compromis_hostmem::scenario`.

use anyhow::Context;
use compromis_hostmem::{Frame, Scenario, render_svg, scenario::DEMO};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `compromis hv`.
#[derive(clap::Args, Debug)]
pub struct HvArgs {
    /// Scenario file (see docs/hostmem.md for the format); the built-in demo when omitted.
    pub scenario: Option<PathBuf>,
    /// Draw the host memory map over time into this folder (`hostmap.svg`).
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
    /// Width of the text bar in columns.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=1000))]
    pub width: u16,
    /// Print only the steps and their outcomes (no map).
    #[arg(long)]
    pub quiet: bool,
    /// Print the built-in demo scenario and exit.
    #[arg(long)]
    pub print_demo: bool,
}

/// Writes `data` to a temporary file beside `path`, then renames it over `path`.
fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("the output path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Runs the subcommand.
pub fn run(args: &HvArgs) -> anyhow::Result<ExitCode> {
    if args.print_demo {
        crate::emit(DEMO)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (text, name) = match &args.scenario {
        Some(p) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read scenario {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (DEMO.to_owned(), "<demo>".to_owned()),
    };
    let scenario = Scenario::parse(&text, &name)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut frames: Vec<Frame> = Vec::new();
    let (mut copied, mut steps, mut refused) = (0u64, 0usize, 0usize);
    let mut io: std::io::Result<()> = Ok(());
    scenario.run_with(|r, h| {
        steps += 1;
        refused += usize::from(!r.ok);
        copied += r.bytes_copied;
        frames.push(r.frame.clone());
        if io.is_err() {
            return;
        }
        let mut text = format!(
            "== {name}:{}: {}\n{}{}\n",
            r.line,
            r.text,
            if r.ok { "" } else { "! " },
            r.outcome
        );
        if !args.quiet {
            text.push_str(&compromis_hostmem::text_bar(h, usize::from(args.width)));
            text.push('\n');
            text.push_str(&compromis_hostmem::table(h));
        }
        text.push('\n');
        io = out.write_all(text.as_bytes());
    })?;
    io.context("cannot write to stdout")?;
    writeln!(
        out,
        "{steps} steps, {refused} refused, {} copied by relocation and compaction",
        compromis_types::ByteSize(copied)
    )?;
    if let Some(dir) = &args.svg {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
        let p = &dir.join("hostmap.svg");
        write_atomic(p, render_svg(&frames).as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
