//! Compression and format detection by magic bytes, and opening a trace file.

use crate::champsim::{ChampSimReader, ChampSimRecords};
use crate::error::{Location, TraceError, read_up_to};
use crate::lackey::LackeyReader;
use crate::native::{NATIVE_MAGIC, NativeReader};
use crate::{MemTraceFormat, ReadOptions, RecordSource};
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

/// Read buffer for trace files.
const BUF_BYTES: usize = 256 * 1024;
/// Bytes of decompressed content looked at to tell lackey text from ChampSim binary.
const SNIFF_BYTES: usize = 512;

/// A compression wrapper around a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a file.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The compression a file name asks for (`.gz`, `.xz`, `.zst`), for writing.
    pub fn from_name(path: &Path) -> Compression {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => Compression::Gzip,
            Some("xz") => Compression::Xz,
            Some("zst" | "zstd") => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

type DynRead = Box<dyn Read + Send>;

/// Reads up to `n` bytes and returns them with a reader that yields them again.
fn peek(mut r: DynRead, n: usize, path: &str) -> Result<(Vec<u8>, DynRead), TraceError> {
    let mut head = vec![0u8; n];
    let got = read_up_to(&mut r, &mut head, path)?;
    head.truncate(got);
    let again: DynRead = Box::new(Cursor::new(head.clone()).chain(r));
    Ok((head, again))
}

fn decompress(r: DynRead, c: Compression, path: &str) -> Result<DynRead, TraceError> {
    Ok(match c {
        Compression::None => r,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(r))),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(BufReader::new(r))),
        Compression::Zstd => Box::new(zstd::Decoder::new(r).map_err(|source| TraceError::Io {
            path: path.to_owned(),
            at: Location::Byte(0),
            source,
        })?),
    })
}

/// Whether decompressed content looks like lackey text rather than binary records.
/// Text is printable ASCII throughout, or opens with a complete printable line that is a lackey
/// record or valgrind's `==pid==` banner (so one garbage line near the start of a lackey file is
/// reported as a bad line of that file, not read as ChampSim).
fn looks_like_text(head: &[u8]) -> bool {
    let printable = |b: &u8| *b == b'\n' || *b == b'\r' || *b == b'\t' || (0x20..0x7f).contains(b);
    if head.iter().all(printable) {
        return true;
    }
    match memchr::memchr(b'\n', head) {
        Some(i) => {
            let first = &head[..i];
            first.iter().all(printable)
                && (first.starts_with(b"==")
                    || matches!(
                        crate::lackey::parse_line(first),
                        Ok(crate::lackey::Line::Record(_))
                    ))
        }
        None => false,
    }
}

fn name_says_native(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".ctrace"))
}

/// Opens a trace of any supported format as a stream of [`crate::Record`]s.
///
/// The native format is recognised by its magic number (or a `.ctrace` name, which then must carry
/// the magic); otherwise gzip, xz and zstd compression are detected by magic and the content is
/// native if it opens with the native magic, lackey text if its first 512 bytes are printable
/// ASCII, else ChampSim records.
/// `opts.format` overrides content detection.
pub fn open_records(path: &Path, opts: &ReadOptions) -> Result<Box<dyn RecordSource>, TraceError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
        path: name.clone(),
        at: Location::Byte(0),
        source,
    })?;
    if let Some(r) = open_mapped_champsim(&file, &name, opts, name_says_native(path)) {
        return Ok(r);
    }
    open_reader(Box::new(file), &name, opts, name_says_native(path))
}

/// A plain (uncompressed) ChampSim file read in place through a memory map: no copy out of the
/// kernel's page cache (a `read` copies every byte once more). `None` for anything else, and
/// whenever the file cannot be mapped (not a regular file, empty, a mapping refused): the
/// streaming path then reads it as before, with the same detection, records and errors.
fn open_mapped_champsim(
    file: &std::fs::File,
    name: &str,
    opts: &ReadOptions,
    native_hint: bool,
) -> Option<Box<dyn RecordSource>> {
    if native_hint || opts.format.is_some_and(|f| f != MemTraceFormat::ChampSim) {
        return None;
    }
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() == 0 {
        return None;
    }
    // SAFETY: the map is read-only and lives as long as the reader that reads it. Its bytes
    // change if another process writes the file while it is read (a `read` would then also see
    // a mix of old and new bytes); a file truncated under the reader would raise SIGBUS, as for
    // any program reading a mapped file (the same hazard as the `mmap` of every such tool).
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
    let _ = map.advise(memmap2::Advice::Sequential);
    let head = &map[..map.len().min(SNIFF_BYTES)];
    if head.starts_with(NATIVE_MAGIC) || Compression::detect(head) != Compression::None {
        return None;
    }
    if opts.format.is_none() && looks_like_text(head) {
        return None;
    }
    Some(Box::new(ChampSimRecords::new(ChampSimReader::mapped(
        map,
        name,
        opts.skip_bad_records,
    ))))
}

/// Opens a trace of any supported format from any byte stream, detecting its compression and
/// format like [`open_records`]; `name` names it in errors.
pub fn open_stream(
    input: Box<dyn Read + Send>,
    name: &str,
    opts: &ReadOptions,
) -> Result<Box<dyn RecordSource>, TraceError> {
    open_reader(input, name, opts, false)
}

fn open_reader(
    input: DynRead,
    name: &str,
    opts: &ReadOptions,
    native_hint: bool,
) -> Result<Box<dyn RecordSource>, TraceError> {
    let (head, input) = peek(input, 16, name)?;
    let native = match opts.format {
        Some(f) => f == MemTraceFormat::Native,
        None => head.starts_with(NATIVE_MAGIC) || native_hint,
    };
    if native {
        let input = if head.starts_with(NATIVE_MAGIC) {
            input
        } else {
            decompress(input, Compression::detect(&head), name)?
        };
        return Ok(Box::new(NativeReader::new(input, name)?));
    }
    let input = decompress(input, Compression::detect(&head), name)?;
    let (head, input) = peek(input, SNIFF_BYTES, name)?;
    let format = opts.format.unwrap_or(if head.starts_with(NATIVE_MAGIC) {
        // A compressed native trace (`trace.ctrace.gz`).
        MemTraceFormat::Native
    } else if looks_like_text(&head) {
        MemTraceFormat::Lackey
    } else {
        MemTraceFormat::ChampSim
    });
    let input = BufReader::with_capacity(BUF_BYTES, input);
    Ok(match format {
        MemTraceFormat::Lackey => Box::new(LackeyReader::new(input, name, opts.skip_bad_records)),
        MemTraceFormat::ChampSim => Box::new(ChampSimRecords::new(ChampSimReader::new(
            input,
            name,
            opts.skip_bad_records,
        ))),
        MemTraceFormat::Native => Box::new(NativeReader::new(input, name)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::detect(b"\xfd7zXZ\0"), Compression::Xz);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"I  10,1"), Compression::None);
        assert_eq!(Compression::detect(&[]), Compression::None);
    }

    #[test]
    fn text_sniffing() {
        assert!(looks_like_text(b"==1== x\nI  10,1\n"));
        assert!(looks_like_text(b""));
        assert!(!looks_like_text(&[0x00, 0x10, 0x40]));
    }

    #[test]
    fn gzip_of_a_native_trace_reads_as_native() {
        use crate::rec::{Record, RecordKind};
        use std::io::Write;
        let recs: Vec<Record> = (0..2000)
            .map(|i| Record::new(RecordKind::Load, 0x1000 + i * 64, 8))
            .collect();
        let mut w = crate::native::NativeWriter::new(Vec::new()).unwrap();
        for r in &recs {
            crate::RecordSink::write_record(&mut w, r).unwrap();
        }
        let native = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.trace.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&p).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(&native).unwrap();
        gz.finish().unwrap();
        let back: Vec<Record> = open_records(&p, &ReadOptions::default())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, recs);
    }
}
