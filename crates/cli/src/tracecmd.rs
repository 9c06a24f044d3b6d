//! `compromis tracecmd` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `compromis tracecmd`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {}

/// Runs the subcommand.
pub fn run(_args: &TraceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
