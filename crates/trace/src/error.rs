//! The error type of every reader and writer.
//!
//! Input errors name the file and where the problem is: the line for text traces, the byte offset
//! for binary ones (in the decompressed stream when the file is compressed).

use std::fmt;

/// Where in a file an error was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A 1-based line number of a text trace.
    Line(u64),
    /// A byte offset, counted in the decompressed stream for compressed files.
    Byte(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Byte(n) => write!(f, "byte {n}"),
        }
    }
}

/// An error reading or writing a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read, or its compressed stream is damaged or truncated.
    #[error("Cannot read {path} at {at}")]
    Io {
        /// The trace's path (or stream name).
        path: String,
        /// How far reading got.
        at: Location,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record that does not parse (garbage line, bad address, bad size...).
    #[error("{path}, {at}: {reason}: {text:?}")]
    BadRecord {
        /// The trace's path.
        path: String,
        /// The line or byte offset of the record.
        at: Location,
        /// What is wrong.
        reason: &'static str,
        /// The offending text (truncated to 80 characters), or a hex dump for binary input.
        text: String,
    },
    /// Input that cannot be a trace at all (zero bytes where a record must be: `/dev/zero`, a
    /// zero-filled or preallocated file); it stops the read even with `--skip-bad-records`.
    #[error(
        "{path}, {at}: {reason}: not a trace (this stops the read even with --skip-bad-records)"
    )]
    NotATrace {
        /// The trace's path.
        path: String,
        /// Where.
        at: Location,
        /// What was found.
        reason: &'static str,
    },
    /// The trace holds no record at all.
    #[error("{path} holds no memory-access record (an empty trace)")]
    Empty {
        /// The file.
        path: String,
    },
    /// The file ends in the middle of a record or before its end marker.
    #[error("{path} is truncated at {at}: {reason}")]
    Truncated {
        /// The trace's path.
        path: String,
        /// Where the data ran out.
        at: Location,
        /// What was being read.
        reason: &'static str,
    },
    /// The file does not start with the expected magic number.
    #[error("{path} has a wrong magic number {found:02x?} at byte 0, expected {expected:?}")]
    BadMagic {
        /// The trace's path.
        path: String,
        /// The bytes found.
        found: Vec<u8>,
        /// The bytes expected.
        expected: &'static [u8],
    },
    /// A native trace written by an incompatible version.
    #[error("{path} is native trace version {found}, this build reads version {supported}")]
    Version {
        /// The trace's path.
        path: String,
        /// The version in the header.
        found: u16,
        /// The version this build supports.
        supported: u16,
    },
    /// The output could not be written.
    #[error("Cannot write {path}")]
    Write {
        /// The output path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Nothing in the file looks like a supported trace format.
    #[error("Cannot tell the format of {path}: {reason} (pass a format: lackey, champsim, native)")]
    UnknownFormat {
        /// The trace's path.
        path: String,
        /// Why detection failed.
        reason: &'static str,
    },
}

impl TraceError {
    /// Whether reading may continue after this error (one bad record, the stream is intact).
    pub fn is_record_error(&self) -> bool {
        matches!(self, TraceError::BadRecord { .. })
    }
}

/// Text of a bad line for an error message: lossy UTF-8, at most 80 characters.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    s.into_owned()
}

/// Fills `buf` from `r` as far as the input goes (short only at end of input, retrying on
/// interruption); returns how many bytes were read.
pub(crate) fn read_up_to(
    r: &mut dyn std::io::Read,
    buf: &mut [u8],
    path: &str,
) -> Result<usize, TraceError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(TraceError::Io {
                    path: path.to_owned(),
                    at: Location::Byte(got as u64),
                    source,
                });
            }
        }
    }
    Ok(got)
}
