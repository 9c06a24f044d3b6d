//! Streaming VM trace readers. Every reader yields time-ordered [`Event`]s as an iterator of
//! `Result<Event, VmTraceError>`; row errors name the file and line and the reader continues after
//! them, so a caller may skip and count bad rows.
//!
//! Formats and their rules are documented in `docs/placement.md`.

mod alibaba;
mod azure;
mod azure_rnn;
mod bitbrains;
mod google;
mod merge;
mod prefetch;
pub mod synthetic;

pub use alibaba::AlibabaReader;
pub use azure::{AzureReader, bucket_value};
pub use azure_rnn::{AzureRnnReader, DurationRule};
pub use bitbrains::BitbrainsReader;
pub use google::GoogleReader;
pub use merge::{DepartureMerger, VmTraceRecord};
pub use prefetch::Prefetch;
pub use synthetic::{SyntheticConfig, SyntheticTrace};

use crate::event::{Event, VmTraceError};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A boxed stream of events.
pub type EventStream = Box<dyn Iterator<Item = Result<Event, VmTraceError>> + Send>;

/// The trace formats `compromis place --format` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    /// Azure Public Dataset `vmtable` CSV (V1 exact GB or V2 buckets), plain or gzip.
    Azure,
    /// Azure V1 re-encoded as flavor + duration streams (Bergsma et al.).
    AzureRnn,
    /// Google cluster-data 2011 `task_events` (a file or a folder of shards).
    Google2011,
    /// Alibaba cluster-trace-v2018 `container_meta`.
    Alibaba2018,
    /// Bitbrains GWA-T-12 folder of per-VM files.
    Bitbrains,
}

impl TraceFormat {
    /// Every format.
    pub const ALL: [TraceFormat; 5] = [
        TraceFormat::Azure,
        TraceFormat::AzureRnn,
        TraceFormat::Google2011,
        TraceFormat::Alibaba2018,
        TraceFormat::Bitbrains,
    ];

    /// The command-line name.
    pub const fn name(self) -> &'static str {
        match self {
            TraceFormat::Azure => "azure",
            TraceFormat::AzureRnn => "azure-rnn",
            TraceFormat::Google2011 => "google2011",
            TraceFormat::Alibaba2018 => "alibaba2018",
            TraceFormat::Bitbrains => "bitbrains",
        }
    }
}

impl fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TraceFormat {
    type Err = VmTraceError;
    fn from_str(s: &str) -> Result<Self, VmTraceError> {
        let t = s.trim().to_ascii_lowercase();
        TraceFormat::ALL
            .into_iter()
            .find(|f| f.name() == t)
            .ok_or_else(|| VmTraceError::UnknownFormat(s.to_owned()))
    }
}

/// Reader settings shared by the formats.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Seed of every random choice a reader makes (duration draws inside a bin).
    pub seed: u64,
    /// Bytes that a normalized memory of 1.0 stands for (Google 2011, Alibaba 2018).
    pub norm_mem_bytes: u64,
    /// How a lifetime is taken inside an `azure-rnn` duration bin.
    pub duration_rule: DurationRule,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            seed: compromis_types::DEFAULT_SEED,
            norm_mem_bytes: 192 << 30,
            duration_rule: DurationRule::Uniform,
        }
    }
}

/// Opens a trace of the given format as a stream of events.
pub fn open_trace(
    path: &Path,
    format: TraceFormat,
    opts: &TraceOptions,
) -> Result<EventStream, VmTraceError> {
    if opts.norm_mem_bytes == 0
        && matches!(format, TraceFormat::Google2011 | TraceFormat::Alibaba2018)
    {
        return Err(VmTraceError::Layout {
            path: path.to_path_buf(),
            reason: "the normalized memory (--norm-mem) is 0: every VM would be 0 bytes; give \
                     the memory a normalized 1.0 stands for, e.g. 192GiB"
                .into(),
        });
    }
    let inner: EventStream = match format {
        TraceFormat::Azure => Box::new(AzureReader::open(path)?),
        TraceFormat::AzureRnn => {
            Box::new(AzureRnnReader::open(path, opts.duration_rule, opts.seed)?)
        }
        TraceFormat::Google2011 => Box::new(GoogleReader::open(path, opts.norm_mem_bytes)?),
        TraceFormat::Alibaba2018 => Box::new(AlibabaReader::open(path, opts.norm_mem_bytes)?),
        TraceFormat::Bitbrains => Box::new(BitbrainsReader::open(path)?),
    };
    Ok(Box::new(NonEmpty {
        inner,
        path: path.to_path_buf(),
        seen: false,
    }))
}

/// Ends a stream that yielded nothing (an empty or header-only trace) with an error instead of
/// an empty replay with all-zero results.
struct NonEmpty {
    inner: EventStream,
    path: PathBuf,
    seen: bool,
}

impl Iterator for NonEmpty {
    type Item = Result<Event, VmTraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.inner.next() {
            None if !self.seen => {
                self.seen = true;
                Some(Err(VmTraceError::Layout {
                    path: self.path.clone(),
                    reason: "the trace has no VM (empty, or a header only)".into(),
                }))
            }
            Some(Ok(e)) => {
                self.seen = true;
                Some(Ok(e))
            }
            other => other,
        }
    }
}

/// Opens a text file, transparently decompressing gzip (detected by its magic bytes `1f 8b`).
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead + Send>, VmTraceError> {
    let open_err = |source| VmTraceError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 2];
    let n = read_fully(&mut f, &mut magic).map_err(open_err)?;
    let f = File::open(path).map_err(open_err)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(f),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
    }
}

fn read_fully(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The longest line a VM-trace reader accepts (1 MiB; real rows are under 1 KiB).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads a text file line by line, keeping the line number for errors.
pub(crate) struct Lines {
    pub(crate) path: PathBuf,
    inner: Box<dyn BufRead + Send>,
    pub(crate) line: u64,
    buf: String,
}

impl Lines {
    pub(crate) fn open(path: &Path) -> Result<Lines, VmTraceError> {
        Ok(Lines {
            path: path.to_path_buf(),
            inner: open_text(path)?,
            line: 0,
            buf: String::new(),
        })
    }

    /// The next line without its line terminator, or `None` at the end. A line longer than
    /// [`MAX_LINE_BYTES`] is an error (found after reading at most that much, so a file without
    /// line breaks such as `/dev/zero` fails fast instead of filling memory).
    pub(crate) fn next_line(&mut self) -> Option<Result<&str, VmTraceError>> {
        self.buf.clear();
        let cap = MAX_LINE_BYTES as u64 + 1;
        match (&mut self.inner).take(cap).read_line(&mut self.buf) {
            Ok(0) => None,
            Ok(n) if n as u64 == cap && !self.buf.ends_with('\n') => {
                self.line += 1;
                Some(Err(VmTraceError::Layout {
                    path: self.path.clone(),
                    reason: format!(
                        "line {} is longer than {} bytes, the cap on a trace line (is this a \
                         text trace?)",
                        self.line, MAX_LINE_BYTES
                    ),
                }))
            }
            Ok(_) => {
                self.line += 1;
                Some(Ok(self.buf.trim_end_matches(['\n', '\r'])))
            }
            Err(source) => Some(Err(VmTraceError::Io {
                path: self.path.clone(),
                line: self.line,
                source,
            })),
        }
    }
}

/// Lists the regular files of a folder in name order (deterministic).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, VmTraceError> {
    let rd = std::fs::read_dir(dir).map_err(|source| VmTraceError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|source| VmTraceError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = e.path();
        if p.is_file() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The files to read for `path`: the file itself, or the regular files of a folder in name order;
/// an empty folder is an error naming `what` was expected in it.
pub(crate) fn files_of(path: &Path, what: &str) -> Result<Vec<PathBuf>, VmTraceError> {
    let files = if path.is_dir() {
        list_dir(path)?
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(VmTraceError::Layout {
            path: path.to_path_buf(),
            reason: format!("no {what} in the folder"),
        });
    }
    Ok(files)
}

/// Parses a non-negative decimal number of seconds (or other unit) from a field.
pub(crate) fn parse_u64(field: &str, column: &str) -> Result<u64, String> {
    let f = field.trim();
    if f.starts_with('-') {
        return Err(format!("negative {column} '{f}'"));
    }
    f.parse::<u64>().or_else(|_| {
        f.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0 && *x < 1.8e19)
            .map(f64_to_u64)
            .ok_or_else(|| format!("bad {column} '{f}': not a non-negative number"))
    })
}

/// Parses a non-negative finite float.
pub(crate) fn parse_f64(field: &str, column: &str) -> Result<f64, String> {
    let f = field.trim();
    match f.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Ok(_) if f.starts_with('-') => Err(format!("negative {column} '{f}'")),
        _ => Err(format!("bad {column} '{f}': not a non-negative number")),
    }
}

/// Rounds a non-negative finite float to the nearest integer, saturating.
pub(crate) fn f64_to_u64(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= 1.8e19 {
        u64::MAX
    } else {
        // Truncation after round() of a value checked to be within u64 range: exact.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "range checked above"
        )]
        let v = x.round() as u64;
        v
    }
}

/// GB (as the traces write them; we read 1 GB as 1 GiB) to bytes, rounded to whole MiB.
pub(crate) fn gb_to_bytes(gb: f64, column: &str, raw: &str) -> Result<u64, String> {
    let mib = gb * 1024.0;
    if mib >= 1.8e19 {
        return Err(too_large(column, raw));
    }
    f64_to_u64(mib)
        .checked_mul(1 << 20)
        .ok_or_else(|| too_large(column, raw))
}

/// Kibibytes to bytes, an error naming the column and value on overflow.
pub(crate) fn kb_to_bytes(kb: f64, column: &str, raw: &str) -> Result<u64, String> {
    if kb >= 1.8e19 {
        return Err(too_large(column, raw));
    }
    f64_to_u64(kb)
        .checked_mul(1024)
        .ok_or_else(|| too_large(column, raw))
}

fn too_large(column: &str, raw: &str) -> String {
    format!(
        "{column} '{}' too large: the size in bytes does not fit in 64 bits",
        raw.trim()
    )
}

/// Splits on a delimiter, giving a helpful error when a column is missing.
pub(crate) fn field<'a>(fields: &[&'a str], idx: usize, name: &str) -> Result<&'a str, String> {
    fields.get(idx).copied().ok_or_else(|| {
        format!(
            "missing column {name} (column {} of the row; the row has {})",
            idx + 1,
            fields.len()
        )
    })
}
