//! `compromis place` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `compromis place`.
#[derive(clap::Args, Debug)]
pub struct PlaceArgs {}

/// Runs the subcommand.
pub fn run(_args: &PlaceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
