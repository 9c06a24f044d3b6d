//! ChampSim binary traces: a flat array of 64-byte `input_instr` records, little endian
//! (ChampSim `inc/trace_instruction.h`):
//!
//! | offset | field |
//! | --- | --- |
//! | 0 | `ip: u64` |
//! | 8 | `is_branch: u8` |
//! | 9 | `branch_taken: u8` |
//! | 10 | `destination_registers: [u8; 2]` |
//! | 12 | `source_registers: [u8; 4]` |
//! | 16 | `destination_memory: [u64; 2]` |
//! | 32 | `source_memory: [u64; 4]` |
//!
//! A memory slot of 0 is empty. Converted to [`Record`]s, an instruction is an
//! [`RecordKind::Instr`] of its ip (size 0: unknown), then one load per non-zero source memory
//! address, then one store per non-zero destination memory address.

use crate::error::{Location, TraceError};
use crate::rec::{Record, RecordKind};
use crate::{RecordSink, RecordSource};
use compromis_types::{Gva, Op};
use std::io::{Read, Write};

/// Size of one ChampSim record.
pub const CHAMPSIM_RECORD_BYTES: usize = 64;

/// One ChampSim `input_instr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChampSimInstr {
    /// Instruction pointer.
    pub ip: Gva,
    /// Non-zero for a branch.
    pub is_branch: u8,
    /// Non-zero for a taken branch.
    pub branch_taken: u8,
    /// Destination register numbers (0 = none).
    pub destination_registers: [u8; 2],
    /// Source register numbers (0 = none).
    pub source_registers: [u8; 4],
    /// Stored addresses (0 = none).
    pub destination_memory: [Gva; 2],
    /// Loaded addresses (0 = none).
    pub source_memory: [Gva; 4],
}

#[inline]
fn u64_at(b: &[u8; CHAMPSIM_RECORD_BYTES], off: usize) -> Gva {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    Gva(u64::from_le_bytes(a))
}

/// Appends the ops of the record `b` (instruction pointer not 0), as
/// `ChampSimInstr::records` gives them: the fetch, the loads, the stores; returns how many.
#[inline(always)]
fn push_ops(b: &[u8; CHAMPSIM_RECORD_BYTES], out: &mut Vec<Op>) -> usize {
    let op = |kind, addr| {
        Record {
            kind,
            addr,
            size: 0,
        }
        .ops()
        .0
    };
    out.push(op(RecordKind::Instr, u64_at(b, 0)));
    let mut n = 1;
    for (kind, off) in [
        (RecordKind::Load, 32),
        (RecordKind::Load, 40),
        (RecordKind::Load, 48),
        (RecordKind::Load, 56),
        (RecordKind::Store, 16),
        (RecordKind::Store, 24),
    ] {
        let addr = u64_at(b, off);
        if addr.0 != 0 {
            out.push(op(kind, addr));
            n += 1;
        }
    }
    n
}

impl ChampSimInstr {
    /// Decodes a 64-byte record.
    #[inline]
    pub fn from_bytes(b: &[u8; CHAMPSIM_RECORD_BYTES]) -> ChampSimInstr {
        ChampSimInstr {
            ip: u64_at(b, 0),
            is_branch: b[8],
            branch_taken: b[9],
            destination_registers: [b[10], b[11]],
            source_registers: [b[12], b[13], b[14], b[15]],
            destination_memory: [u64_at(b, 16), u64_at(b, 24)],
            source_memory: [u64_at(b, 32), u64_at(b, 40), u64_at(b, 48), u64_at(b, 56)],
        }
    }

    /// Encodes the record.
    pub fn to_bytes(&self) -> [u8; CHAMPSIM_RECORD_BYTES] {
        let mut b = [0u8; CHAMPSIM_RECORD_BYTES];
        b[0..8].copy_from_slice(&self.ip.0.to_le_bytes());
        b[8] = self.is_branch;
        b[9] = self.branch_taken;
        b[10..12].copy_from_slice(&self.destination_registers);
        b[12..16].copy_from_slice(&self.source_registers);
        for (i, a) in self.destination_memory.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.0.to_le_bytes());
        }
        for (i, a) in self.source_memory.iter().enumerate() {
            b[32 + 8 * i..40 + 8 * i].copy_from_slice(&a.0.to_le_bytes());
        }
        b
    }

    /// The records of this instruction: the fetch, the loads, the stores.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let fetch = std::iter::once(Record {
            kind: RecordKind::Instr,
            addr: self.ip,
            size: 0,
        });
        let loads = self
            .source_memory
            .iter()
            .filter(|a| a.0 != 0)
            .map(|&addr| Record {
                kind: RecordKind::Load,
                addr,
                size: 0,
            });
        let stores = self
            .destination_memory
            .iter()
            .filter(|a| a.0 != 0)
            .map(|&addr| Record {
                kind: RecordKind::Store,
                addr,
                size: 0,
            });
        fetch.chain(loads).chain(stores)
    }
}

/// Bytes the reader asks its input for at once (4,096 records: 256 KiB, as large as the buffer
/// of the `BufReader` trace files are opened through, which then hands its file's bytes over
/// without copying them through its own buffer).
const READ_BYTES: usize = 4096 * CHAMPSIM_RECORD_BYTES;

/// How far ahead of the record it decodes [`ChampSimReader::decode_buffered`] asks for the
/// input's bytes (a page: the host's prefetcher stops at page boundaries, and a mapped trace's
/// next page is another fault-around's worth of cold page cache). A hint only: beyond the input
/// or on a page not mapped yet it does nothing.
const PREFETCH_BYTES: usize = 4096;

/// Streams [`ChampSimInstr`]s out of a (decompressed) ChampSim trace.
///
/// Reads its input in blocks of [`READ_BYTES`] (one `read` call gives many records, not one call
/// per record) and decodes each record from a slice of the block. Reads happen only when the
/// next record is not complete in the block, so an I/O error comes out after every record that
/// preceded it, as with a record-by-record reader.
pub struct ChampSimReader<R> {
    input: R,
    path: String,
    /// Byte offset of the next record in the input.
    offset: u64,
    skip_bad: bool,
    skipped: u64,
    done: bool,
    buf: Bytes,
    /// Next unread byte of `buf`.
    pos: usize,
    /// End of the bytes read into `buf`.
    end: usize,
    /// Mapped input: the bytes before this offset were given back ([`RELEASE_BYTES`]).
    released: usize,
}

/// Mapped input is given back to the kernel behind the reader in steps of this many bytes
/// (a multiple of every page size).
const RELEASE_BYTES: usize = 4 << 20;

/// Where a [`ChampSimReader`]'s bytes are: a block it reads into, or the whole input mapped.
enum Bytes {
    Block(Box<[u8]>),
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Block(b) => b,
            Bytes::Mapped(m) => m,
        }
    }
}

impl ChampSimReader<std::io::Empty> {
    /// Reads the mapped bytes of a whole trace in place (no copy), naming it `path` in errors;
    /// records and errors as [`ChampSimReader::new`] on the same bytes.
    pub fn mapped(map: memmap2::Mmap, path: &str, skip_bad_records: bool) -> Self {
        let end = map.len();
        ChampSimReader {
            end,
            buf: Bytes::Mapped(map),
            ..ChampSimReader::new(std::io::empty(), path, skip_bad_records)
        }
    }
}

impl<R: Read> ChampSimReader<R> {
    /// Reads `input`, naming it `path` in errors. With `skip_bad_records`, a truncated last
    /// record is counted as skipped instead of being an error.
    pub fn new(input: R, path: &str, skip_bad_records: bool) -> ChampSimReader<R> {
        ChampSimReader {
            input,
            path: path.to_owned(),
            offset: 0,
            skip_bad: skip_bad_records,
            skipped: 0,
            done: false,
            buf: Bytes::Block(vec![0; READ_BYTES].into_boxed_slice()),
            pos: 0,
            end: 0,
            released: 0,
        }
    }

    /// Records that could not be read (a truncated last record).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Mapped input: drops this process's page-table entries for the bytes already read, a
    /// [`RELEASE_BYTES`] window at a time (`madvise(MADV_DONTNEED)`). A mapped page costs its
    /// entry's removal once, here or when the map is dropped: here it is paid as the reader goes
    /// (on the reader's thread, while the simulation runs) instead of all at once after the last
    /// record, when the whole run waits for it. The file and its page
    /// cache are untouched, and a released byte would read the same again (the map is a shared,
    /// read-only map of the file). Failure changes nothing.
    fn release_read(&mut self) {
        let Bytes::Mapped(map) = &self.buf else {
            return;
        };
        let upto = self.pos / RELEASE_BYTES * RELEASE_BYTES;
        if upto > self.released {
            // SAFETY: `MADV_DONTNEED` on a shared read-only file map only drops page-table
            // entries: the bytes stay those of the file (a later read faults them in again from
            // the page cache), so no borrow of the map can see them change; and nothing borrows
            // the released range (`&mut self`, and the reader never goes back).
            #[allow(unsafe_code)]
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.released,
                    upto - self.released,
                )
            };
            self.released = upto;
        }
    }

    /// Reads until the block holds a whole record or the input ends; `Err` on an I/O error.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.end - self.pos >= CHAMPSIM_RECORD_BYTES {
            return Ok(());
        }
        // Mapped: every byte of the input is there already.
        let Bytes::Block(buf) = &mut self.buf else {
            return Ok(());
        };
        buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        while self.end < CHAMPSIM_RECORD_BYTES {
            match self.input.read(&mut buf[self.end..]) {
                Ok(0) => break,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> ChampSimReader<R> {
    /// The bytes of the next record (see [`Iterator::next`]).
    #[inline]
    fn next_bytes(&mut self) -> Option<Result<&[u8; CHAMPSIM_RECORD_BYTES], TraceError>> {
        if self.done {
            return None;
        }
        if let Err(source) = self.fill() {
            self.done = true;
            return Some(Err(TraceError::Io {
                path: self.path.clone(),
                at: Location::Byte(self.offset + (self.end - self.pos) as u64),
                source,
            }));
        }
        let got = self.end - self.pos;
        if got < CHAMPSIM_RECORD_BYTES {
            self.done = true;
            if got == 0 {
                return None;
            }
            if self.skip_bad {
                self.skipped += 1;
                return None;
            }
            return Some(Err(TraceError::Truncated {
                path: self.path.clone(),
                at: Location::Byte(self.offset),
                reason: "the last 64-byte ChampSim record is incomplete",
            }));
        }
        let at = self.pos;
        // No program runs code at address 0: a record with instruction pointer 0 is zero-filled
        // input (/dev/zero, a preallocated file), which would otherwise read as endless valid
        // records.
        if self.buf[at..at + 8] == [0u8; 8] {
            self.done = true;
            return Some(Err(TraceError::NotATrace {
                path: self.path.clone(),
                at: Location::Byte(self.offset),
                reason: "a ChampSim record with instruction pointer 0",
            }));
        }
        self.pos += CHAMPSIM_RECORD_BYTES;
        self.offset += CHAMPSIM_RECORD_BYTES as u64;
        self.buf[at..self.end]
            .first_chunk::<CHAMPSIM_RECORD_BYTES>()
            .map(Ok)
    }
}

impl<R: Read> ChampSimReader<R> {
    /// Appends the ops of up to `max` whole records that are in the buffer now (nothing is
    /// read), as `next_bytes` record by record and `ChampSimRecords::read_ops` would give them,
    /// stopping before a record with instruction pointer 0 (left for `next_bytes`, which
    /// reports it). Returns the ops appended and the records consumed.
    #[inline]
    fn decode_buffered(&mut self, max: usize, out: &mut Vec<Op>) -> (usize, usize) {
        if self.done {
            return (0, 0);
        }
        let whole = ((self.end - self.pos) / CHAMPSIM_RECORD_BYTES).min(max);
        let bytes = &self.buf[self.pos..self.pos + whole * CHAMPSIM_RECORD_BYTES];
        out.reserve(whole * 7);
        let before = out.len();
        let mut records = 0;
        for b in bytes.chunks_exact(CHAMPSIM_RECORD_BYTES) {
            compromis_types::hint::prefetch_line(b.as_ptr().wrapping_add(PREFETCH_BYTES));
            match b.first_chunk::<CHAMPSIM_RECORD_BYTES>() {
                Some(b) if u64_at(b, 0).0 != 0 => push_ops(b, out),
                _ => break,
            };
            records += 1;
        }
        self.pos += records * CHAMPSIM_RECORD_BYTES;
        self.offset += (records * CHAMPSIM_RECORD_BYTES) as u64;
        (out.len() - before, records)
    }
}

impl<R: Read> Iterator for ChampSimReader<R> {
    type Item = Result<ChampSimInstr, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.next_bytes().map(|b| b.map(ChampSimInstr::from_bytes))
    }
}

/// A ChampSim trace seen as [`Record`]s.
pub struct ChampSimRecords<R> {
    inner: ChampSimReader<R>,
    pending: [Record; 7],
    len: u8,
    pos: u8,
}

impl<R: Read> ChampSimRecords<R> {
    /// Wraps a ChampSim reader.
    pub fn new(inner: ChampSimReader<R>) -> ChampSimRecords<R> {
        let blank = Record {
            kind: RecordKind::Instr,
            addr: Gva(0),
            size: 0,
        };
        ChampSimRecords {
            inner,
            pending: [blank; 7],
            len: 0,
            pos: 0,
        }
    }
}

impl<R: Read> Iterator for ChampSimRecords<R> {
    type Item = Result<Record, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos < self.len {
            let r = self.pending[usize::from(self.pos)];
            self.pos += 1;
            return Some(Ok(r));
        }
        let instr = match self.inner.next()? {
            Ok(i) => i,
            Err(e) => return Some(Err(e)),
        };
        // As `instr.records()`: the fetch, the loads, the stores (written in place).
        let fetch = Record {
            kind: RecordKind::Instr,
            addr: instr.ip,
            size: 0,
        };
        self.pending[0] = fetch;
        let mut len: u8 = 1;
        let data = instr
            .source_memory
            .iter()
            .map(|&a| (RecordKind::Load, a))
            .chain(
                instr
                    .destination_memory
                    .iter()
                    .map(|&a| (RecordKind::Store, a)),
            );
        for (kind, addr) in data {
            if addr.0 != 0 {
                self.pending[usize::from(len)] = Record {
                    kind,
                    addr,
                    size: 0,
                };
                len += 1;
            }
        }
        self.len = len;
        self.pos = 1;
        Some(Ok(fetch))
    }
}

impl<R: Read + Send> RecordSource for ChampSimRecords<R> {
    fn skipped(&self) -> u64 {
        self.inner.skipped()
    }

    /// As the default (the ops of the records [`Iterator::next`] gives), decoding the addresses
    /// of each instruction straight from the read buffer into ops.
    fn read_ops(&mut self, out: &mut Vec<Op>, max: usize) -> (usize, Option<TraceError>) {
        self.inner.release_read();
        let mut n = 0;
        while n < max {
            // Whole records already in the buffer (mapped: the rest of the file), decoded in one
            // loop; the first record with instruction pointer 0 stops it, for `next_bytes` to
            // report.
            if self.pos >= self.len && max - n >= 7 {
                let (done, records) = self.inner.decode_buffered((max - n) / 7, out);
                n += done;
                if records > 0 {
                    continue;
                }
            }
            // The rest of an instruction already decoded, and what does not fit whole.
            if self.pos < self.len || max - n < 7 {
                match self.next() {
                    Some(Ok(r)) => out.push(r.ops().0),
                    Some(Err(e)) => return (n, Some(e)),
                    None => return (n, None),
                }
                n += 1;
                continue;
            }
            // No whole record in the buffer: read on (or end, or the record's error).
            match self.inner.next_bytes() {
                Some(Ok(b)) => n += push_ops(b, out),
                Some(Err(e)) => return (n, Some(e)),
                None => return (n, None),
            }
        }
        (n, None)
    }
}

/// Writes [`Record`]s as ChampSim `input_instr`s.
///
/// Each [`RecordKind::Instr`] starts an instruction; its loads fill `source_memory`, its stores
/// `destination_memory` and a modify both. What ChampSim cannot hold is dropped and counted
/// ([`ChampSimWriter::dropped`]): data records before the first instruction, a fifth load or third
/// store of one instruction, and accesses to address 0 (0 means "no access" in ChampSim). Sizes are
/// lost; registers and branch flags are written as 0.
pub struct ChampSimWriter<W: Write> {
    out: W,
    current: Option<ChampSimInstr>,
    dropped: u64,
}

impl<W: Write> ChampSimWriter<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> ChampSimWriter<W> {
        ChampSimWriter {
            out,
            current: None,
            dropped: 0,
        }
    }

    /// Writes one whole instruction record (for callers that have ChampSim instructions).
    pub fn write_instr(&mut self, i: &ChampSimInstr) -> std::io::Result<()> {
        self.out.write_all(&i.to_bytes())
    }

    /// Records dropped so far because ChampSim cannot represent them.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn flush_current(&mut self) -> std::io::Result<()> {
        if let Some(i) = self.current.take() {
            self.write_instr(&i)?;
        }
        Ok(())
    }

    /// Writes the last instruction, flushes and returns the inner writer.
    pub fn into_inner(mut self) -> std::io::Result<W> {
        self.flush_current()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn put(slots: &mut [Gva], addr: Gva) -> bool {
    match slots.iter_mut().find(|s| s.0 == 0) {
        Some(s) => {
            *s = addr;
            true
        }
        None => false,
    }
}

impl<W: Write + Send> RecordSink for ChampSimWriter<W> {
    fn write_record(&mut self, r: &Record) -> std::io::Result<()> {
        if r.kind == RecordKind::Instr {
            self.flush_current()?;
            self.current = Some(ChampSimInstr {
                ip: r.addr,
                ..ChampSimInstr::default()
            });
            return Ok(());
        }
        let Some(cur) = self.current.as_mut() else {
            self.dropped += 1;
            return Ok(());
        };
        if r.addr.0 == 0 {
            self.dropped += 1;
            return Ok(());
        }
        let ok = match r.kind {
            RecordKind::Load => put(&mut cur.source_memory, r.addr),
            RecordKind::Store => put(&mut cur.destination_memory, r.addr),
            RecordKind::Modify => {
                let room = cur.source_memory.iter().any(|a| a.0 == 0)
                    && cur.destination_memory.iter().any(|a| a.0 == 0);
                room && put(&mut cur.source_memory, r.addr)
                    && put(&mut cur.destination_memory, r.addr)
            }
            RecordKind::Instr => unreachable!("handled above"),
        };
        if !ok {
            self.dropped += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChampSimInstr {
        ChampSimInstr {
            ip: Gva(0x401000),
            is_branch: 1,
            branch_taken: 0,
            destination_registers: [3, 0],
            source_registers: [1, 2, 0, 0],
            destination_memory: [Gva(0x7000), Gva(0)],
            source_memory: [Gva(0x8000), Gva(0), Gva(0x9000), Gva(0)],
        }
    }

    #[test]
    fn layout_matches_champsim() {
        let b = sample().to_bytes();
        assert_eq!(&b[0..8], &0x401000u64.to_le_bytes());
        assert_eq!(b[8], 1);
        assert_eq!(b[10], 3);
        assert_eq!(&b[12..16], &[1, 2, 0, 0]);
        assert_eq!(&b[16..24], &0x7000u64.to_le_bytes());
        assert_eq!(&b[32..40], &0x8000u64.to_le_bytes());
        assert_eq!(&b[48..56], &0x9000u64.to_le_bytes());
        assert_eq!(ChampSimInstr::from_bytes(&b), sample());
    }

    #[test]
    fn records_are_fetch_loads_stores() {
        let v: Vec<_> = sample().records().collect();
        assert_eq!(
            v,
            vec![
                Record::new(RecordKind::Instr, 0x401000, 0),
                Record::new(RecordKind::Load, 0x8000, 0),
                Record::new(RecordKind::Load, 0x9000, 0),
                Record::new(RecordKind::Store, 0x7000, 0),
            ]
        );
    }

    #[test]
    fn truncated_record_is_an_error_with_offset() {
        let mut bytes = sample().to_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        let v: Vec<_> = ChampSimReader::new(&bytes[..], "x.champsim", false).collect();
        assert_eq!(v.len(), 2);
        let e = v[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("x.champsim") && e.contains("byte 64"), "{e}");
        let mut r = ChampSimReader::new(&bytes[..], "x", true);
        assert_eq!(r.by_ref().count(), 1);
        assert_eq!(r.skipped(), 1);
    }

    /// Hands out `data` in pieces of the given sizes (cycled), then fails at `fail_at` if set.
    struct Chunky<D> {
        data: D,
        sizes: Vec<usize>,
        n: usize,
        at: usize,
        fail_at: Option<usize>,
    }

    impl<D: AsRef<[u8]>> Read for Chunky<D> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let data = self.data.as_ref();
            let limit = self.fail_at.unwrap_or(data.len()).min(data.len());
            if self.at == limit && self.fail_at.is_some() {
                return Err(std::io::Error::other("disk on fire"));
            }
            let k = self.sizes[self.n % self.sizes.len()]
                .min(out.len())
                .min(limit - self.at);
            self.n += 1;
            out[..k].copy_from_slice(&data[self.at..self.at + k]);
            self.at += k;
            Ok(k)
        }
    }

    proptest::proptest! {
        /// The block reader gives what a record-by-record oracle gives: every whole record before
        /// the end (or the I/O error), then the same error at the same byte, whatever sizes the
        /// input's reads return.
        #[test]
        fn block_reader_matches_a_record_by_record_oracle(
            ips in proptest::collection::vec(1u64..u64::MAX, 0..40),
            loads in proptest::collection::vec(0u64..4, 40),
            tail in 0usize..64,
            sizes in proptest::collection::vec(1usize..300, 1..5),
            fail in proptest::option::of(0usize..3000),
        ) {
            let mut bytes = Vec::new();
            for (i, &ip) in ips.iter().enumerate() {
                let mut r = sample();
                r.ip = Gva(ip);
                r.source_memory[1] = Gva(loads[i] * 0x1000);
                bytes.extend_from_slice(&r.to_bytes());
            }
            bytes.extend(std::iter::repeat_n(7u8, tail));
            let fail_at = fail.filter(|&f| f <= bytes.len());
            // The oracle: whole records up to the end or the failure point, then the error.
            let avail = fail_at.unwrap_or(bytes.len());
            let whole = avail / CHAMPSIM_RECORD_BYTES;
            let mut want: Vec<Result<ChampSimInstr, String>> = bytes
                .chunks_exact(CHAMPSIM_RECORD_BYTES)
                .take(whole)
                .map(|c| Ok(ChampSimInstr::from_bytes(c.try_into().unwrap())))
                .collect();
            if let Some(f) = fail_at {
                want.push(Err(format!("byte {f}")));
            } else if tail > 0 {
                want.push(Err(format!("byte {}", whole * CHAMPSIM_RECORD_BYTES)));
            }
            let input = Chunky { data: &bytes, sizes, n: 0, at: 0, fail_at };
            let got: Vec<Result<ChampSimInstr, String>> = ChampSimReader::new(input, "t", false)
                .map(|r| r.map_err(|e| e.to_string()))
                .collect();
            proptest::prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                match (g, w) {
                    (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                    (Err(e), Err(at)) => proptest::prop_assert!(e.contains(at.as_str()), "{} vs {}", e, at),
                    _ => proptest::prop_assert!(false, "{:?} vs {:?}", g, w),
                }
            }
            // Records: the same as each instruction's `records()`.
            let input = Chunky { data: &bytes, sizes: vec![64], n: 0, at: 0, fail_at: None };
            let recs: Vec<Record> = ChampSimRecords::new(ChampSimReader::new(input, "t", true))
                .map(|r| r.unwrap())
                .collect();
            let oracle: Vec<Record> = want
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .take(if fail_at.is_some() { 0 } else { usize::MAX })
                .flat_map(|i| i.records().collect::<Vec<_>>())
                .collect();
            if fail_at.is_none() {
                proptest::prop_assert_eq!(recs, oracle);
            }
        }
    }

    #[test]
    fn writer_groups_and_drops_what_does_not_fit() {
        let mut w = ChampSimWriter::new(Vec::new());
        let recs = [
            Record::new(RecordKind::Load, 0x10, 8), // before any instruction: dropped
            Record::new(RecordKind::Instr, 0x400, 3),
            Record::new(RecordKind::Modify, 0x20, 8),
            Record::new(RecordKind::Load, 0x30, 8),
            Record::new(RecordKind::Store, 0x40, 8),
            Record::new(RecordKind::Store, 0x50, 8), // third destination: dropped
            Record::new(RecordKind::Load, 0, 8),     // address 0: dropped
            Record::new(RecordKind::Instr, 0x404, 2),
        ];
        for r in &recs {
            w.write_record(r).unwrap();
        }
        assert_eq!(w.dropped(), 3);
        let out = w.into_inner().unwrap();
        assert_eq!(out.len(), 128);
        let back: Vec<_> = ChampSimRecords::new(ChampSimReader::new(&out[..], "t", false))
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            back,
            vec![
                Record::new(RecordKind::Instr, 0x400, 0),
                Record::new(RecordKind::Load, 0x20, 0),
                Record::new(RecordKind::Load, 0x30, 0),
                Record::new(RecordKind::Store, 0x20, 0),
                Record::new(RecordKind::Store, 0x40, 0),
                Record::new(RecordKind::Instr, 0x404, 0),
            ]
        );
    }

    /// Every op of `r` and the error that ended it, op by op (the oracle).
    /// The proptests' instruction: `ip` 0 stays 0 (a zero-filled record, an error unless
    /// skipped), another `ip` is a code address; `mem` holds 4 sources then 2 destinations.
    fn test_instr(ip: u64, mem: &[u64]) -> ChampSimInstr {
        ChampSimInstr {
            ip: Gva(if ip == 0 { 0 } else { 0x40_0000 + ip * 4 }),
            destination_memory: [Gva(mem[4]), Gva(mem[5])],
            source_memory: [Gva(mem[0]), Gva(mem[1]), Gva(mem[2]), Gva(mem[3])],
            ..ChampSimInstr::default()
        }
    }

    fn ops_one_by_one(mut r: crate::OpReader) -> (Vec<Op>, Option<String>) {
        let mut ops = Vec::new();
        for x in r.by_ref() {
            match x {
                Ok(op) => ops.push(op),
                Err(e) => return (ops, Some(e.to_string())),
            }
        }
        (ops, None)
    }

    #[test]
    fn a_mapped_file_read_past_release_windows_reads_as_the_stream() {
        // 170,000 instructions (10.9 MB: two release windows behind the reader before the end)
        // and a truncated tail, read through the map in batches of 8,191 ops.
        let mut bytes = Vec::new();
        for i in 0..170_000u64 {
            let x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mem: Vec<u64> = (0..6)
                .map(|k| match (x >> (2 * k)) & 3 {
                    0 => 0,
                    _ => (x >> (3 * k)) & ((1 << 47) - 1) | 0x1000,
                })
                .collect();
            bytes.extend_from_slice(&test_instr(1 + i % 5000, &mem).to_bytes());
        }
        bytes.extend([0x91u8; 10]);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        let name = file.path().display().to_string();
        let want = ops_one_by_one(crate::OpReader::from_records(Box::new(
            ChampSimRecords::new(ChampSimReader::new(
                std::io::Cursor::new(bytes.clone()),
                &name,
                false,
            )),
        )));
        assert!(want.1.is_some() && want.0.len() > 170_000);
        // SAFETY: a private temporary file, not written while mapped.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(file.as_file()) }.unwrap();
        let mut mapped = ChampSimRecords::new(ChampSimReader::mapped(map, &name, false));
        let (mut ops, mut error) = (Vec::new(), None);
        loop {
            let (n, e) = RecordSource::read_ops(&mut mapped, &mut ops, 8191);
            if let Some(e) = e {
                error = Some(e.to_string());
                break;
            }
            if n < 8191 {
                break;
            }
        }
        assert_eq!((ops, error), want);
        assert_eq!(mapped.inner.released, 2 * RELEASE_BYTES);
    }

    /// Every op of `r` and the error that ended it, read with `read_ops` in batches of the
    /// given sizes (cycled).
    fn ops_in_batches(mut r: crate::OpReader, sizes: &[usize]) -> (Vec<Op>, Option<String>) {
        let mut ops = Vec::new();
        for (i, &max) in sizes.iter().cycle().enumerate() {
            let before = ops.len();
            if let Err(e) = r.read_ops(&mut ops, max) {
                return (ops, Some(e.to_string()));
            }
            assert!(ops.len() - before <= max, "more than asked");
            if ops.len() - before < max || i > 100_000 {
                return (ops, None);
            }
        }
        unreachable!()
    }

    proptest::proptest! {
        /// A file read through a memory map (`ChampSimReader::mapped`, and `open_records` on a
        /// plain file) gives the ops and the error (truncated tail, ip 0) that the streaming
        /// reader gives on the same bytes, in any batch sizes, skipping bad records or not.
        #[test]
        fn mapped_file_reads_as_the_stream(
            instrs in proptest::collection::vec(
                (0u64..8, proptest::collection::vec(
                    proptest::prop_oneof![proptest::strategy::Just(0u64), 1u64..1 << 47], 6)), 0..40),
            tail in proptest::prop_oneof![proptest::strategy::Just(0usize), 1usize..64],
            sizes in proptest::collection::vec(1usize..20, 1..4),
            skip in proptest::bool::ANY,
        ) {
            use proptest::prelude::*;
            let mut bytes = Vec::new();
            for (ip, mem) in &instrs {
                bytes.extend_from_slice(&test_instr(*ip, mem).to_bytes());
            }
            bytes.extend(std::iter::repeat_n(0x91u8, tail));
            let mut file = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut file, &bytes).unwrap();
            let name = file.path().display().to_string();
            let streamed = || {
                crate::OpReader::from_records(Box::new(ChampSimRecords::new(ChampSimReader::new(
                    std::io::Cursor::new(bytes.clone()), &name, skip,
                ))))
            };
            let want = ops_one_by_one(streamed());
            if !bytes.is_empty() {
                // SAFETY: a private temporary file, not written while mapped.
                #[allow(unsafe_code)]
                let map = unsafe { memmap2::Mmap::map(file.as_file()) }.unwrap();
                let mapped = crate::OpReader::from_records(Box::new(ChampSimRecords::new(
                    ChampSimReader::mapped(map, &name, skip),
                )));
                prop_assert_eq!(ops_in_batches(mapped, &sizes), want.clone());
            }
            // Through detection: the same as the stream of the same bytes, format detected.
            let opts = crate::ReadOptions { skip_bad_records: skip, format: None };
            let opened = |r: Result<Box<dyn crate::RecordSource>, crate::TraceError>| {
                r.map(|r| ops_one_by_one(crate::OpReader::from_records(r))).map_err(|e| e.to_string())
            };
            prop_assert_eq!(
                opened(crate::open_records(file.path(), &opts)),
                opened(crate::open_stream(Box::new(std::io::Cursor::new(bytes.clone())), &name, &opts))
            );
        }

        /// Batches of ops (`OpReader::read_ops`, the ChampSim decoder's own `read_ops`, and the
        /// default one of other formats) are the ops `next` gives, in any batch sizes, up to the
        /// same error: truncated tails, I/O errors at any byte, records with ip 0, empty input.
        #[test]
        fn batches_of_ops_are_the_ops_one_by_one(
            instrs in proptest::collection::vec(
                (0u64..4, proptest::collection::vec(
                    proptest::prop_oneof![proptest::strategy::Just(0u64), 1u64..1 << 47], 6)), 0..60),
            tail in proptest::prop_oneof![proptest::strategy::Just(0usize), 1usize..64],
            sizes in proptest::collection::vec(1usize..20, 1..4),
            big in proptest::bool::ANY,
            fail in proptest::option::of(0usize..4000),
            skip in proptest::bool::ANY,
        ) {
            use proptest::prelude::*;
            let mut bytes = Vec::new();
            let mut text = String::new();
            for (ip, mem) in &instrs {
                let i = test_instr(*ip, mem);
                bytes.extend_from_slice(&i.to_bytes());
                text.push_str(&format!("I  {:x},4\n", i.ip.0));
                for (k, a) in ["L", "M", "S", "L", "S", "M"].iter().zip(mem) {
                    if *a != 0 {
                        text.push_str(&format!(" {k} {a:x},8\n"));
                    }
                }
            }
            bytes.extend(std::iter::repeat_n(7u8, tail));
            let fail_at = fail.filter(|&f| f <= bytes.len());
            let sizes: Vec<usize> = if big { sizes.iter().map(|s| s * 1000 + 7).collect() } else { sizes };
            let champsim = || {
                let input = Chunky {
                    data: bytes.clone(),
                    sizes: vec![100, 64, 1 << 20],
                    n: 0,
                    at: 0,
                    fail_at,
                };
                crate::OpReader::from_records(Box::new(ChampSimRecords::new(ChampSimReader::new(
                    input, "t", skip,
                ))))
            };
            prop_assert_eq!(ops_in_batches(champsim(), &sizes), ops_one_by_one(champsim()));
            let lackey = || {
                crate::OpReader::from_records(Box::new(crate::lackey::LackeyReader::new(
                    std::io::Cursor::new(text.clone().into_bytes()), "t", skip)))
            };
            prop_assert_eq!(ops_in_batches(lackey(), &sizes), ops_one_by_one(lackey()));
        }
    }
}
