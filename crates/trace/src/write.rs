//! Writing trace files atomically (temporary file in the same directory, renamed on success), and
//! teeing a record stream into a file as it is read.

use crate::champsim::ChampSimWriter;
use crate::detect::Compression;
use crate::error::TraceError;
use crate::lackey::LackeyWriter;
use crate::native::NativeWriter;
use crate::rec::Record;
use crate::{MemTraceFormat, RecordSink, RecordSource};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A compressor chosen by the output file name.
enum Compressed {
    Plain(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    Xz(xz2::write::XzEncoder<BufWriter<File>>),
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

impl Compressed {
    fn new(file: File, c: Compression) -> std::io::Result<Compressed> {
        let out = BufWriter::with_capacity(1 << 18, file);
        Ok(match c {
            Compression::None => Compressed::Plain(out),
            Compression::Gzip => Compressed::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            Compression::Xz => Compressed::Xz(xz2::write::XzEncoder::new(out, 6)),
            Compression::Zstd => Compressed::Zstd(zstd::Encoder::new(out, 3)?),
        })
    }

    fn finish(self) -> std::io::Result<BufWriter<File>> {
        match self {
            Compressed::Plain(w) => Ok(w),
            Compressed::Gzip(w) => w.finish(),
            Compressed::Xz(w) => w.finish(),
            Compressed::Zstd(w) => w.finish(),
        }
    }
}

impl Write for Compressed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressed::Plain(w) => w.write(buf),
            Compressed::Gzip(w) => w.write(buf),
            Compressed::Xz(w) => w.write(buf),
            Compressed::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressed::Plain(w) => w.flush(),
            Compressed::Gzip(w) => w.flush(),
            Compressed::Xz(w) => w.flush(),
            Compressed::Zstd(w) => w.flush(),
        }
    }
}

enum Sink {
    Lackey(LackeyWriter<Compressed>),
    ChampSim(ChampSimWriter<Compressed>),
    Native(NativeWriter<BufWriter<File>>),
}

/// What a finished [`TraceFileWriter`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Records given to the writer.
    pub records: u64,
    /// Records the format could not represent and that were left out (ChampSim only).
    pub dropped: u64,
}

/// Writes a trace file in any format: to a temporary file next to `path`, renamed over `path` by
/// [`TraceFileWriter::finish`]. Dropped without `finish`, it leaves nothing behind.
///
/// Lackey and ChampSim output is compressed when the name ends in `.gz`, `.xz` or `.zst`; the
/// native format is always zstd-compressed inside.
pub struct TraceFileWriter {
    sink: Sink,
    tmp: tempfile::TempPath,
    /// Removed by a signal handler if the process is stopped before `finish`.
    _registered: compromis_types::cleanup::Registered,
    path: PathBuf,
    records: u64,
}

impl TraceFileWriter {
    /// Starts writing `path` in `format`.
    pub fn create(path: &Path, format: MemTraceFormat) -> Result<TraceFileWriter, TraceError> {
        let name = path.display().to_string();
        let werr = |source| TraceError::Write {
            path: name.clone(),
            source,
        };
        check_output_file(path).map_err(werr)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let (file, tmp) = tempfile::Builder::new()
            .prefix(".compromis-trace-")
            .tempfile_in(dir)
            .map_err(werr)?
            .into_parts();
        let sink = match format {
            MemTraceFormat::Native => Sink::Native(
                NativeWriter::new(BufWriter::with_capacity(1 << 18, file)).map_err(werr)?,
            ),
            MemTraceFormat::Lackey => Sink::Lackey(LackeyWriter::new(
                Compressed::new(file, Compression::from_name(path)).map_err(werr)?,
            )),
            MemTraceFormat::ChampSim => Sink::ChampSim(ChampSimWriter::new(
                Compressed::new(file, Compression::from_name(path)).map_err(werr)?,
            )),
        };
        let registered = compromis_types::cleanup::Registered::new(&tmp);
        Ok(TraceFileWriter {
            sink,
            tmp,
            _registered: registered,
            path: path.to_owned(),
            records: 0,
        })
    }

    /// Writes one record.
    #[inline]
    pub fn write(&mut self, r: &Record) -> Result<(), TraceError> {
        self.records += 1;
        let res = match &mut self.sink {
            Sink::Lackey(w) => w.write_record(r),
            Sink::ChampSim(w) => w.write_record(r),
            Sink::Native(w) => w.write_record(r),
        };
        res.map_err(|source| TraceError::Write {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// Writes records packed in words ([`crate::native::packed`]), in order: for a native
    /// file they go to the encoder as they are; other formats get them one by one. A word that
    /// is not a packed record is an error.
    pub fn write_words(&mut self, words: &[u64]) -> Result<(), TraceError> {
        let path = &self.path;
        let werr = |source| TraceError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Sink::Native(w) = &mut self.sink {
            self.records += words.len() as u64;
            return w.write_words(words).map_err(werr);
        }
        for &word in words {
            let r = crate::native::packed::unpack(word).map_err(|w| TraceError::Write {
                path: self.path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a packed record: {w:#018x}"),
                ),
            })?;
            self.write(&r)?;
        }
        Ok(())
    }

    /// Finishes the stream, syncs the file and renames it to its final name.
    pub fn finish(self) -> Result<WriteSummary, TraceError> {
        let werr = |source| TraceError::Write {
            path: self.path.display().to_string(),
            source,
        };
        let mut dropped = 0;
        let out = match self.sink {
            Sink::Lackey(w) => w.into_inner().and_then(Compressed::finish),
            Sink::ChampSim(w) => {
                dropped = w.dropped();
                w.into_inner().and_then(Compressed::finish)
            }
            Sink::Native(w) => w.finish(),
        }
        .map_err(werr)?;
        let file = out.into_inner().map_err(|e| werr(e.into_error()))?;
        // Temporary files are created private (0600); a trace is an ordinary output file.
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(werr)?;
        }
        file.sync_all().map_err(werr)?;
        self.tmp.persist(&self.path).map_err(|e| werr(e.error))?;
        Ok(WriteSummary {
            records: self.records,
            dropped,
        })
    }
}

/// Checks, before any work, that `path` can be written as a file: not a folder, and not an
/// existing read-only file (refused even where the user could override it, as root can: a
/// read-only file is one its owner asked not to be replaced).
pub fn check_output_file(path: &Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::new(
            ErrorKind::IsADirectory,
            "it is a folder; give a file name",
        )),
        Ok(m) if m.permissions().readonly() => Err(Error::new(
            ErrorKind::PermissionDenied,
            "it is read-only; not replaced (make it writable or choose another name)",
        )),
        _ => Ok(()),
    }
}

/// A record stream that also writes every record it yields to a [`TraceFileWriter`], finishing
/// the file when the stream ends cleanly (an error or an early drop discards it).
pub struct TeeSource<S> {
    src: S,
    out: Option<TraceFileWriter>,
    summary: std::sync::Arc<std::sync::Mutex<Option<WriteSummary>>>,
}

impl<S: RecordSource> TeeSource<S> {
    /// Tees `src` into `out`.
    pub fn new(src: S, out: TraceFileWriter) -> TeeSource<S> {
        TeeSource {
            src,
            out: Some(out),
            summary: Default::default(),
        }
    }

    /// A handle that holds the summary once the stream has ended and the file is written.
    pub fn summary_handle(&self) -> std::sync::Arc<std::sync::Mutex<Option<WriteSummary>>> {
        self.summary.clone()
    }
}

impl<S: RecordSource> Iterator for TeeSource<S> {
    type Item = Result<Record, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.src.next() {
            Some(Ok(r)) => {
                if let Some(out) = self.out.as_mut()
                    && let Err(e) = out.write(&r)
                {
                    self.out = None;
                    return Some(Err(e));
                }
                Some(Ok(r))
            }
            Some(Err(e)) => {
                self.out = None;
                Some(Err(e))
            }
            None => {
                let out = self.out.take()?;
                match out.finish() {
                    Ok(s) => {
                        if let Ok(mut g) = self.summary.lock() {
                            *g = Some(s);
                        }
                        None
                    }
                    Err(e) => Some(Err(e)),
                }
            }
        }
    }
}

impl<S: RecordSource> RecordSource for TeeSource<S> {
    fn skipped(&self) -> u64 {
        self.src.skipped()
    }
}

/// Copies every record of `src` to a new file `out` in `format`; stops at the first error.
pub fn convert(
    src: &mut dyn RecordSource,
    out: &Path,
    format: MemTraceFormat,
) -> Result<WriteSummary, TraceError> {
    let mut w = TraceFileWriter::create(out, format)?;
    for r in src {
        w.write(&r?)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(e: &TraceError) -> String {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(c) = src {
            s += &format!(": {c}");
            src = c.source();
        }
        s
    }

    #[test]
    fn folders_and_read_only_files_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let e = TraceFileWriter::create(dir.path(), MemTraceFormat::Native)
            .err()
            .unwrap();
        assert!(chain(&e).contains("folder"), "{e:?}");
        let ro = dir.path().join("ro.ctrace");
        std::fs::write(&ro, b"keep").unwrap();
        let mut perm = std::fs::metadata(&ro).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&ro, perm).unwrap();
        let e = TraceFileWriter::create(&ro, MemTraceFormat::Native)
            .err()
            .unwrap();
        assert!(chain(&e).contains("read-only"), "{e:?}");
        assert_eq!(std::fs::read(&ro).unwrap(), b"keep");
        // Nothing else was left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
