//! `compromis config` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `compromis config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {}

/// Runs the subcommand.
pub fn run(_args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
