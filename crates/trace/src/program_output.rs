//! Where a recorded program's standard output and error go, so they stay apart from the results
//! `compromis record` prints on stdout.

use std::path::PathBuf;
use std::process::Stdio;

/// Destination of a recorded program's stdout and stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProgramOutput {
    /// The recorder's own stdout and stderr.
    #[default]
    Inherit,
    /// Both to the recorder's stderr (its stdout carries the results).
    Stderr,
    /// Both to a file (created or truncated).
    File(PathBuf),
}

impl ProgramOutput {
    /// The program's stdout and stderr.
    pub fn stdio(&self) -> std::io::Result<(Stdio, Stdio)> {
        Ok(match self {
            ProgramOutput::Inherit => (Stdio::inherit(), Stdio::inherit()),
            ProgramOutput::Stderr => (
                Stdio::from(std::io::stderr()),
                Stdio::from(std::io::stderr()),
            ),
            ProgramOutput::File(p) => {
                let f = std::fs::File::create(p)?;
                (Stdio::from(f.try_clone()?), Stdio::from(f))
            }
        })
    }
}
