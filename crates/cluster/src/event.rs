//! VM lifecycle events, the common output of every trace reader, and the reader error type.

use std::path::PathBuf;
use thiserror::Error;

/// A VM identifier, unique within one trace.
pub type VmKey = u64;

/// One VM lifecycle event. Times are whole seconds since the trace's own origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A VM asks to be placed.
    Arrival {
        /// The VM.
        vm: VmKey,
        /// When.
        time: u64,
        /// Memory it needs, in bytes (the engine rounds it up to the allocation granule).
        mem_bytes: u64,
        /// Virtual CPUs it needs (0: the trace does not constrain cores).
        vcpus: u32,
        /// True for a VM already running when the trace starts (placed before any other VM of the
        /// same time, counted apart in the metrics).
        initial: bool,
    },
    /// A VM ends and frees its memory.
    Departure {
        /// The VM.
        vm: VmKey,
        /// When.
        time: u64,
    },
    /// A VM's run ends implicitly: its task was scheduled again while running (Google 2011
    /// shards that are not consecutive: the end event lies in a shard not read). Replayed as a
    /// [`Event::Departure`] and counted ([`crate::PlacementReport::implicit_ends`]).
    ImplicitEnd {
        /// The VM.
        vm: VmKey,
        /// When.
        time: u64,
    },
    /// A running VM's memory changes.
    Resize {
        /// The VM.
        vm: VmKey,
        /// When.
        time: u64,
        /// New memory size in bytes.
        mem_bytes: u64,
    },
}

impl Event {
    /// The event's time in seconds.
    pub fn time(&self) -> u64 {
        match *self {
            Event::Arrival { time, .. }
            | Event::Departure { time, .. }
            | Event::ImplicitEnd { time, .. }
            | Event::Resize { time, .. } => time,
        }
    }

    /// The VM the event is about.
    pub fn vm(&self) -> VmKey {
        match *self {
            Event::Arrival { vm, .. }
            | Event::Departure { vm, .. }
            | Event::ImplicitEnd { vm, .. }
            | Event::Resize { vm, .. } => vm,
        }
    }
}

/// Why a trace could not be read. Row-level variants ([`VmTraceError::Row`]) are recoverable: the
/// reader goes on with the next row, so a caller may count them and continue (`--skip-bad-rows`).
#[derive(Debug, Error)]
pub enum VmTraceError {
    /// The file or folder could not be opened.
    #[error("cannot open {path}", path = path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A read failed in the middle of a file.
    #[error("read error in {path} after line {line}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The last line read successfully.
        line: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// One row is malformed or inconsistent.
    #[error("{path} line {line}: {reason}", path = path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong, naming the bad value.
        reason: String,
    },
    /// The trace as a whole is unusable (missing companion file, wrong layout...).
    #[error("{path}: {reason}", path = path.display())]
    Layout {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A format name that is not known.
    #[error(
        "unknown trace format '{0}': valid formats are azure, azure-rnn, google2011, alibaba2018, bitbrains (omit --trace for the synthetic generator)"
    )]
    UnknownFormat(String),
}

/// Longest row-error message kept whole; a longer one (a huge field copied into it) is cut.
const MAX_REASON: usize = 300;

/// `reason` cut to [`MAX_REASON`] bytes (at a character boundary) with the size it had.
fn shorten(reason: String) -> String {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &reason[..end], reason.len())
}

impl VmTraceError {
    /// True for errors after which the reader can continue with the next row.
    pub fn is_row_error(&self) -> bool {
        matches!(self, VmTraceError::Row { .. })
    }

    pub(crate) fn row(
        path: &std::path::Path,
        line: u64,
        reason: impl Into<String>,
    ) -> VmTraceError {
        VmTraceError::Row {
            path: path.to_path_buf(),
            line,
            reason: shorten(reason.into()),
        }
    }
}
