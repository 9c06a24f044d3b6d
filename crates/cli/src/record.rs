//! `compromis record` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `compromis record`.
#[derive(clap::Args, Debug)]
pub struct RecordArgs {}

/// Runs the subcommand.
pub fn run(_args: &RecordArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
