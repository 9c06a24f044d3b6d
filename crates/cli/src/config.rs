//! `compromis config`: list the machine presets, print a resolved machine-model file, or check one.

use anyhow::Context;
use compromis_mmu::config::presets::{self, Machine};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `compromis config`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["defaults", "check", "list"])))]
pub struct ConfigArgs {
    /// Print the machine-model file of --machine (default: the default preset) with every key,
    /// each with its meaning and source, to stdout.
    #[arg(long)]
    pub defaults: bool,
    /// Parse and validate FILE over the --machine preset; prints "FILE: ok" or the first problem
    /// (exit status 2).
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,
    /// List the machine presets: name and a one-line description (the default is marked).
    #[arg(long)]
    pub list: bool,
    /// Machine preset for --defaults and --check.
    #[arg(long, default_value_t = Machine::default_machine())]
    pub machine: Machine,
}

/// Runs the subcommand.
pub fn run(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    if args.list {
        let width = presets::names().iter().map(|n| n.len()).max().unwrap_or(0);
        for p in &presets::PRESETS {
            let mark = if p.name == presets::DEFAULT_MACHINE {
                " (default)"
            } else {
                ""
            };
            text += &format!("{:width$}  {}{mark}\n", p.name, p.description);
        }
    } else if let Some(path) = &args.check {
        presets::resolve(args.machine, Some(path)).context("invalid machine configuration")?;
        text = format!("{}: ok\n", path.display());
    } else if args.defaults {
        text = presets::resolved_toml(args.machine);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
