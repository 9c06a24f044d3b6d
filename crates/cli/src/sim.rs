//! `compromis sim` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `compromis sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {}

/// Runs the subcommand.
pub fn run(_args: &SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
