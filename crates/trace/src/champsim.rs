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
use compromis_types::Gva;
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

/// Bytes the reader asks its input for at once (1,024 records).
const READ_BYTES: usize = 1024 * CHAMPSIM_RECORD_BYTES;

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
    buf: Box<[u8]>,
    /// Next unread byte of `buf`.
    pos: usize,
    /// End of the bytes read into `buf`.
    end: usize,
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
            buf: vec![0; READ_BYTES].into_boxed_slice(),
            pos: 0,
            end: 0,
        }
    }

    /// Records that could not be read (a truncated last record).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Reads until the block holds a whole record or the input ends; `Err` on an I/O error.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.end - self.pos >= CHAMPSIM_RECORD_BYTES {
            return Ok(());
        }
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        while self.end < CHAMPSIM_RECORD_BYTES {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChampSimReader<R> {
    type Item = Result<ChampSimInstr, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
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
        let Some(b) = self.buf[self.pos..self.end]
            .first_chunk::<CHAMPSIM_RECORD_BYTES>()
            .copied()
        else {
            unreachable!("a whole record is buffered (checked above)")
        };
        // No program runs code at address 0: a record with instruction pointer 0 is zero-filled
        // input (/dev/zero, a preallocated file), which would otherwise read as endless valid
        // records.
        if b[..8] == [0u8; 8] {
            self.done = true;
            return Some(Err(TraceError::NotATrace {
                path: self.path.clone(),
                at: Location::Byte(self.offset),
                reason: "a ChampSim record with instruction pointer 0",
            }));
        }
        self.pos += CHAMPSIM_RECORD_BYTES;
        self.offset += CHAMPSIM_RECORD_BYTES as u64;
        Some(Ok(ChampSimInstr::from_bytes(&b)))
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
    struct Chunky<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        n: usize,
        at: usize,
        fail_at: Option<usize>,
    }

    impl Read for Chunky<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let limit = self.fail_at.unwrap_or(self.data.len()).min(self.data.len());
            if self.at == limit && self.fail_at.is_some() {
                return Err(std::io::Error::other("disk on fire"));
            }
            let k = self.sizes[self.n % self.sizes.len()]
                .min(out.len())
                .min(limit - self.at);
            self.n += 1;
            out[..k].copy_from_slice(&self.data[self.at..self.at + k]);
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
}
