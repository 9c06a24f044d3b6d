//! `compromis hv` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `compromis hv`.
#[derive(clap::Args, Debug)]
pub struct HvArgs {}

/// Runs the subcommand.
pub fn run(_args: &HvArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
