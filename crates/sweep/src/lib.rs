//! Parameter sweeps of `compromis sim` and `compromis place` (issue 14): a TOML spec names a
//! command, fixed flags, lists of values for any flag or machine-model key (cross product) and
//! seeds ([`spec`]); the points run in parallel, each finished point written at once to its own
//! folder so a rerun resumes ([`run`]); a shard of the points runs alone (`--shard I/N`) and a
//! Slurm job array runs them all ([`slurm`]); the results form one tidy table, CSV and Parquet,
//! one row per point and scheme or policy ([`table`]). [`provenance`] is what every result file
//! of the tool records about how it was made (version, git commit, arguments, input checksums).
//!
//! The library never parses a command's flags itself: the `compromis` binary implements
//! [`run::Executor`] with the command's own argument parser and library calls, so a sweep accepts
//! exactly the flags the command does.

use thiserror::Error;

pub mod provenance;
pub mod run;
pub mod slurm;
pub mod spec;
pub mod table;

pub use run::{Executor, PointOutput, RunOptions, RunSummary, Shard, run, write_table};
pub use spec::{Command, Point, Spec};

/// Sweep errors.
#[derive(Debug, Error)]
pub enum SweepError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The spec (or a sweep folder's `sweep.json`) is invalid.
    #[error("{path}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Spec {
        /// The file.
        path: String,
        /// The line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A point's arguments are invalid or its run failed.
    #[error("point {id}: {message}")]
    Point {
        /// The point's id (and values).
        id: String,
        /// What went wrong.
        message: String,
    },
    /// Folders that do not belong together, or a table with missing points.
    #[error("{0}")]
    Mismatch(String),
    /// Writing an output file failed.
    #[error(transparent)]
    Report(#[from] compromis_report::ReportError),
    /// CSV.
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    /// JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Parquet.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}
