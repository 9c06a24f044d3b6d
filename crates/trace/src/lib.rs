//! Memory traces of real programs for the Compromis simulator.
//!
//! Readers, all streaming in constant memory and all iterators of `Result<Record, TraceError>`:
//! - valgrind lackey text ([`lackey`]), plain or gzip/xz/zstd-compressed;
//! - ChampSim binary traces ([`champsim`]), plain, `.xz` or `.gz`;
//! - the native compact format ([`native`]): a versioned header, delta/varint-encoded records,
//!   zstd-compressed (specified in `docs/traces.md`).
//!
//! MemTraceFormat and compression are detected from magic bytes ([`open_records`], [`open_ops`]); the
//! simulator consumes [`compromis_types::Op`]s through [`OpReader`]. Writers for the three
//! formats back `compromis trace convert` ([`TraceFileWriter`]), [`TraceStats`] backs
//! `compromis trace inspect`, and [`valgrind`] runs a program under lackey (following exec and
//! child processes) and streams its trace through a socket for `compromis record`; [`process`]
//! attributes every record to the process that wrote it and [`record`] chooses what is simulated
//! and saved, and reports what was traced; [`qemu`] does the same under QEMU user-mode
//! emulation with our TCG plugin (binary records, hundreds of times faster).

pub mod champsim;
mod detect;
mod error;
pub mod lackey;
pub mod native;
pub mod process;
pub mod program_output;
pub mod qemu;
mod rec;
pub mod record;
mod stats;
pub mod supervise;
#[allow(unsafe_code)]
mod sys;
pub mod valgrind;
mod write;

pub use champsim::{ChampSimInstr, ChampSimReader, ChampSimRecords, ChampSimWriter};
pub use detect::{Compression, open_records, open_stream};
pub use error::{Location, TraceError};
pub use lackey::{LackeyReader, LackeyWriter};
pub use native::{NativeReader, NativeWriter};
pub use program_output::ProgramOutput;
pub use rec::{LackeyRecord, Record, RecordKind};
pub use stats::{StatsBuilder, TraceStats};
pub use write::{TeeSource, TraceFileWriter, WriteSummary, check_output_file, convert};

use compromis_types::Op;
use std::io::BufRead;
use std::path::Path;
use std::str::FromStr;

/// A trace file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemTraceFormat {
    /// valgrind lackey text.
    Lackey,
    /// ChampSim 64-byte `input_instr` records.
    ChampSim,
    /// The native compact format.
    Native,
}

impl MemTraceFormat {
    /// Every format, with the name [`FromStr`] accepts.
    pub const ALL: [(MemTraceFormat, &'static str); 3] = [
        (MemTraceFormat::Lackey, "lackey"),
        (MemTraceFormat::ChampSim, "champsim"),
        (MemTraceFormat::Native, "native"),
    ];

    /// The name of the format.
    pub fn name(self) -> &'static str {
        match self {
            MemTraceFormat::Lackey => "lackey",
            MemTraceFormat::ChampSim => "champsim",
            MemTraceFormat::Native => "native",
        }
    }
}

impl std::fmt::Display for MemTraceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown format name.
#[derive(Debug, thiserror::Error)]
#[error("Unknown trace format {0:?}; valid formats: lackey, champsim, native")]
pub struct UnknownFormat(pub String);

impl FromStr for MemTraceFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<MemTraceFormat, UnknownFormat> {
        MemTraceFormat::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|&(f, _)| f)
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

/// How to read a trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Count and skip records that do not parse instead of stopping with an error. Damage to
    /// the stream itself (a truncated compressed file, a corrupt native block) still stops it.
    pub skip_bad_records: bool,
    /// The format; `None` detects it from the content (and the file name as a hint).
    pub format: Option<MemTraceFormat>,
}

/// A stream of [`Record`]s that knows how many bad records it skipped.
pub trait RecordSource: Iterator<Item = Result<Record, TraceError>> + Send {
    /// Bad records skipped so far (always 0 unless [`ReadOptions::skip_bad_records`]).
    fn skipped(&self) -> u64;
    /// Where the last record returned was read, for formats that say better than its number
    /// (a text trace's line); `None` by default.
    fn location(&self) -> Option<Location> {
        None
    }
    /// Reads up to `max` records and appends their ops ([`Record::ops`]) to `out`; returns how
    /// many records it read and the error that stopped it, if any (the records before it are
    /// read and their ops appended). Ends early only at the end of the stream or an error.
    /// The default calls [`Iterator::next`]; a format may decode faster in batches.
    fn read_ops(&mut self, out: &mut Vec<Op>, max: usize) -> (usize, Option<TraceError>) {
        for n in 0..max {
            match self.next() {
                Some(Ok(r)) => {
                    let (a, b) = r.ops();
                    out.push(a);
                    out.extend(b);
                }
                Some(Err(e)) => return (n, Some(e)),
                None => return (n, None),
            }
        }
        (max, None)
    }
}

impl RecordSource for Box<dyn RecordSource> {
    fn skipped(&self) -> u64 {
        (**self).skipped()
    }
    fn location(&self) -> Option<Location> {
        (**self).location()
    }
    fn read_ops(&mut self, out: &mut Vec<Op>, max: usize) -> (usize, Option<TraceError>) {
        (**self).read_ops(out, max)
    }
}

/// Something records can be written to, one at a time.
pub trait RecordSink: Send {
    /// Writes one record.
    fn write_record(&mut self, r: &Record) -> std::io::Result<()>;
}

/// The simulator's view of a trace: [`Op`]s, in order.
///
/// An instruction record is a fetch retiring one instruction; a load or store is an access
/// retiring none; a modify is a load then a store. No `Map` ops are produced: the simulator
/// demand-maps the regions a trace touches.
pub struct OpReader {
    src: Box<dyn RecordSource>,
    pending: Option<Op>,
    /// With a name: a source that ends before its first record is an [`TraceError::Empty`].
    empty_is_error: Option<String>,
    /// Records returned so far.
    records: u64,
}

impl std::fmt::Debug for OpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpReader")
            .field("skipped", &self.skipped())
            .finish_non_exhaustive()
    }
}

impl OpReader {
    /// The ops of any record stream.
    pub fn from_records(src: Box<dyn RecordSource>) -> OpReader {
        OpReader {
            src,
            pending: None,
            empty_is_error: None,
            records: 0,
        }
    }

    /// Bad records skipped so far.
    pub fn skipped(&self) -> u64 {
        self.src.skipped()
    }

    /// Appends the next ops to `out`, up to `max` of them (fewer only at the end of the
    /// stream): the same ops [`Iterator::next`] gives, in batches (a format's decoder fills
    /// `out` directly). An error is returned after the ops before it are appended.
    pub fn read_ops(&mut self, out: &mut Vec<Op>, max: usize) -> Result<(), TraceError> {
        let end = out.len() + max;
        if max > 0
            && let Some(op) = self.pending.take()
        {
            out.push(op);
        }
        // Whole records while two ops surely fit (a record gives one or two), then op by op.
        while end - out.len() >= 2 {
            let records = (end - out.len()) / 2;
            let (n, err) = self.src.read_ops(out, records);
            self.records += n as u64;
            if n > 0 || err.is_some() {
                self.empty_is_error = None;
            }
            if let Some(e) = err {
                return Err(e);
            }
            if n < records {
                return match self.empty_is_error.take() {
                    Some(path) => Err(TraceError::Empty { path }),
                    None => Ok(()),
                };
            }
        }
        while out.len() < end {
            match self.next() {
                Some(Ok(op)) => out.push(op),
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(())
    }

    /// Where the record of the last op returned was read: its line in a text trace, else its
    /// 1-based number among the file's records (bad records skipped included).
    pub fn location(&self) -> String {
        match self.src.location() {
            Some(at) => at.to_string(),
            None => format!("record {}", self.records + self.src.skipped()),
        }
    }
}

/// Where the record that became op number `op` (0-based, in the order [`open_ops`] returns
/// them) lies in the trace at `path`: `"line N"` or `"record N"`. The simulator's errors about
/// trace content (an address beyond the address space, the guest out of memory) are located so,
/// by reading the trace again up to that op (on the error path only).
pub fn locate_op(path: &Path, opts: &ReadOptions, op: u64) -> Result<String, TraceError> {
    let mut r = open_ops(path, opts)?;
    for _ in 0..=op {
        match r.next() {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(r.location())
}

impl Iterator for OpReader {
    type Item = Result<Op, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(op) = self.pending.take() {
            return Some(Ok(op));
        }
        match self.src.next() {
            Some(Ok(r)) => {
                self.empty_is_error = None;
                self.records += 1;
                let (a, b) = r.ops();
                self.pending = b;
                Some(Ok(a))
            }
            Some(Err(e)) => {
                self.empty_is_error = None;
                Some(Err(e))
            }
            None => self
                .empty_is_error
                .take()
                .map(|path| Err(TraceError::Empty { path })),
        }
    }
}

/// Opens any supported trace as simulator ops (format and compression detected by magic bytes,
/// not only by name).
pub fn open_ops(path: &Path, opts: &ReadOptions) -> Result<OpReader, TraceError> {
    let mut r = OpReader::from_records(open_records(path, opts)?);
    r.empty_is_error = Some(path.display().to_string());
    Ok(r)
}

/// Lackey text from any byte stream as simulator ops (`record` uses it on valgrind's pipe).
/// `name` names the stream in errors; `opts.format` is ignored.
pub fn lackey_ops<R: BufRead + Send + 'static>(
    input: R,
    name: &str,
    opts: &ReadOptions,
) -> OpReader {
    OpReader::from_records(Box::new(LackeyReader::new(
        input,
        name,
        opts.skip_bad_records,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_types::{AccessKind, Gva};

    #[test]
    fn format_names_round_trip_and_errors_list_values() {
        for (f, n) in MemTraceFormat::ALL {
            assert_eq!(n.parse::<MemTraceFormat>().unwrap(), f);
            assert_eq!(f.to_string(), n);
        }
        let e = "csv".parse::<MemTraceFormat>().unwrap_err().to_string();
        assert!(e.contains("lackey, champsim, native"), "{e}");
    }

    #[test]
    fn lackey_ops_follow_the_contract() {
        let text = "I  400,3\n L 10,8\n S 20,8\n M 30,4\n";
        let ops: Vec<Op> = lackey_ops(text.as_bytes(), "t", &ReadOptions::default())
            .map(Result::unwrap)
            .collect();
        let a = |g, kind, instrs| Op::Access {
            gva: Gva(g),
            kind,
            instrs,
            dep: kind == AccessKind::Load,
        };
        assert_eq!(
            ops,
            vec![
                a(0x400, AccessKind::Fetch, 1),
                a(0x10, AccessKind::Load, 0),
                a(0x20, AccessKind::Store, 0),
                a(0x30, AccessKind::Load, 0),
                a(0x30, AccessKind::Store, 0),
            ]
        );
    }

    #[test]
    fn op_reader_is_send() {
        fn is_send<T: Send>() {}
        is_send::<OpReader>();
    }
}
