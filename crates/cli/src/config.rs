//! `compromis config`: print the default machine-model file, or check one.

use anyhow::Context;
use compromis_mmu::MachineConfig;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `compromis config`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["defaults", "check"])))]
pub struct ConfigArgs {
    /// Print the default machine-model file (every key, with its meaning and source) to stdout.
    #[arg(long)]
    pub defaults: bool,
    /// Parse and validate FILE; prints "FILE: ok" or the first problem (exit status 2).
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,
}

/// Runs the subcommand.
pub fn run(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if let Some(path) = &args.check {
        MachineConfig::load(path).context("invalid machine configuration")?;
        writeln!(out, "{}: ok", path.display())?;
    } else if args.defaults {
        out.write_all(MachineConfig::defaults_toml().as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
