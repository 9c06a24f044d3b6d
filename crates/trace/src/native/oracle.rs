//! The reader of main 17575de, kept verbatim (but for its name) as the oracle the current
//! reader is property-tested against: same records, same errors, same positions.

#![allow(clippy::pedantic, dead_code)]

use super::{
    BASES, BLOCK_RECORDS, DATA_SIZES, EXACT, KINDS, MAX_RECORD_BYTES, NATIVE_HEADER_BYTES,
    NATIVE_MAGIC, NATIVE_VERSION, SIZE_HIGH, get_varint, unzigzag,
};
use crate::error::{Location, TraceError};
use crate::rec::{Record, RecordKind};
use compromis_types::Gva;
use std::io::Read;

/// Zero bytes kept after a block payload so the decoder can always load 8 bytes at once.
const PAD: usize = 16;

/// What a tag says, looked up rather than branched on (the kind is unpredictable).
#[derive(Clone, Copy)]
struct TagInfo {
    /// The size, when not escaped.
    size: u32,
    /// A varint size follows.
    escape: bool,
    /// Prediction slot: 0 for instructions, 1 + base for data.
    slot: u8,
}

/// [`TagInfo`] of every tag byte.
// Every cast below is of a value at most 64 (sizes) or 4 (bases), so none can truncate.
#[allow(clippy::cast_possible_truncation)]
const TAGS: [TagInfo; 256] = {
    let mut t = [TagInfo {
        size: 0,
        escape: false,
        slot: 0,
    }; 256];
    let mut tag = 0;
    while tag < 256 {
        let info = if tag & 3 == 0 {
            let code = (tag >> 2) & 31;
            let size = if code < 28 {
                code
            } else if code < 31 {
                SIZE_HIGH[code - 28] as usize
            } else {
                0
            };
            TagInfo {
                size: size as u32,
                escape: code == 31,
                slot: 0,
            }
        } else {
            let code = (tag >> 2) & 7;
            let size = if code < 7 { DATA_SIZES[code] } else { 0 };
            TagInfo {
                size,
                escape: code == 7,
                slot: 1 + ((tag >> 5) & 3) as u8,
            }
        };
        t[tag] = info;
        tag += 1;
    }
    t
};

/// Decodes the record at `*pos` of a block payload whose first `len` bytes are the payload and
/// whose next [`PAD`] bytes are zero, and advances `*pos`. `pred` holds the predictions
/// (instruction, then the data bases). The kind selects its prediction through a table, so the
/// only branches are on rare escapes and on the delta length.
#[inline(always)]
fn decode_one(
    buf: &[u8],
    len: usize,
    pos: &mut usize,
    pred: &mut [u64; 1 + BASES],
) -> Result<Record, &'static str> {
    let mut p = *pos;
    if p >= len {
        return Err("Block ends in the middle of a record");
    }
    let tag = buf[p];
    p += 1;
    let info = TAGS[usize::from(tag)];
    let size = if info.escape {
        let (v, q) = get_varint(&buf[..len], p).ok_or("Bad record size")?;
        p = q;
        u32::try_from(v).map_err(|_| "Record size does not fit 32 bits")?
    } else {
        info.size
    };
    // p <= len here, so p + 8 <= len + PAD. Short deltas take predictable branches, which lets
    // the processor run ahead to the next record; longer ones decode from one 64-bit load.
    let b0 = buf[p];
    let (z, n) = if tag & EXACT != 0 {
        (0, 0)
    } else if b0 < 0x80 {
        (u64::from(b0), 1)
    } else if buf[p + 1] < 0x80 {
        (u64::from(b0 & 0x7f) | (u64::from(buf[p + 1]) << 7), 2)
    } else {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[p..p + 8]);
        let word = u64::from_le_bytes(w);
        let stop = !word & 0x8080_8080_8080_8080;
        if stop != 0 {
            let n = (stop.trailing_zeros() as usize + 1) / 8;
            let x = word & (stop ^ (stop - 1)) & 0x7f7f_7f7f_7f7f_7f7f;
            let mut v = 0u64;
            for i in 0..8 {
                v |= (x >> i) & (0x7f << (7 * i));
            }
            (v, n)
        } else {
            let (v, q) = get_varint(&buf[..len], p).ok_or("Bad address delta")?;
            (v, q - p)
        }
    };
    p += n;
    if p > len {
        return Err("Block ends in the middle of a record");
    }
    *pos = p;
    let slot = usize::from(info.slot);
    let addr = pred[slot].wrapping_add(unzigzag(z));
    // An instruction predicts the next one at its end; a data access becomes its base.
    let keep_size = u64::from(info.slot == 0).wrapping_neg();
    pred[slot] = addr.wrapping_add(u64::from(size) & keep_size);
    Ok(Record {
        kind: KINDS[usize::from(tag & 3)],
        addr: Gva(addr),
        size,
    })
}

/// Counts bytes read, for error offsets.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Streams [`Record`]s out of a native trace. Errors name the byte offset in the decompressed body.
pub struct OracleReader<R: Read> {
    body: Counting<zstd::Decoder<'static, std::io::BufReader<Counting<R>>>>,
    path: String,
    /// The current block's payload, its decoding position and state, records left in it.
    payload: Vec<u8>,
    payload_len: usize,
    pos: usize,
    left: usize,
    predict: [u64; 1 + BASES],
    /// Offset of the payload in the decompressed body.
    payload_at: u64,
    /// Records decoded ahead in a tight loop, and the next one to hand out.
    batch: Box<[Record; BATCH]>,
    batch_len: usize,
    batch_pos: usize,
    /// An error found while decoding ahead, reported after the records before it.
    pending: Option<TraceError>,
    total: u64,
    done: bool,
}

/// Records decoded per batch (small enough to stay in the L1 cache).
const BATCH: usize = 256;

impl<R: Read> std::fmt::Debug for OracleReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OracleReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<R: Read> OracleReader<R> {
    /// Checks the header of `input` (the whole file) and prepares to decode.
    pub fn new(mut input: R, path: &str) -> Result<OracleReader<R>, TraceError> {
        let mut header = [0u8; NATIVE_HEADER_BYTES];
        let got = crate::error::read_up_to(&mut input, &mut header, path)?;
        if header[..got.min(8)] != NATIVE_MAGIC[..got.min(8)] {
            return Err(TraceError::BadMagic {
                path: path.to_owned(),
                found: header[..got.min(8)].to_vec(),
                expected: NATIVE_MAGIC,
            });
        }
        if got < NATIVE_HEADER_BYTES {
            return Err(TraceError::Truncated {
                path: path.to_owned(),
                at: Location::Byte(got as u64),
                reason: "the 16-byte native header is incomplete",
            });
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version != NATIVE_VERSION {
            return Err(TraceError::Version {
                path: path.to_owned(),
                found: version,
                supported: NATIVE_VERSION,
            });
        }
        let file = Counting {
            inner: input,
            pos: NATIVE_HEADER_BYTES as u64,
        };
        let dec = zstd::Decoder::with_buffer(std::io::BufReader::new(file))
            .map_err(|source| TraceError::Io {
                path: path.to_owned(),
                at: Location::Byte(NATIVE_HEADER_BYTES as u64),
                source,
            })?
            .single_frame();
        Ok(OracleReader {
            body: Counting { inner: dec, pos: 0 },
            path: path.to_owned(),
            payload: Vec::new(),
            payload_len: 0,
            pos: 0,
            left: 0,
            predict: [0; 1 + BASES],
            payload_at: 0,
            batch: Box::new(
                [Record {
                    kind: RecordKind::Instr,
                    addr: Gva(0),
                    size: 0,
                }; BATCH],
            ),
            batch_len: 0,
            batch_pos: 0,
            pending: None,
            total: 0,
            done: false,
        })
    }

    fn io_err(&self, source: std::io::Error) -> TraceError {
        TraceError::Io {
            path: self.path.clone(),
            at: Location::Byte(self.body.pos),
            source,
        }
    }

    fn corrupt(&self, at: u64, reason: &'static str, bytes: &[u8]) -> TraceError {
        let text = bytes
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        TraceError::BadRecord {
            path: self.path.clone(),
            at: Location::Byte(at),
            reason,
            text,
        }
    }

    /// Reads a varint from the body; `Ok(None)` at a clean end of stream before its first byte.
    fn read_varint(&mut self) -> Result<Option<u64>, TraceError> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        let start = self.body.pos;
        loop {
            let mut b = [0u8; 1];
            match self.body.read(&mut b) {
                Ok(0) if shift == 0 => return Ok(None),
                Ok(0) => {
                    return Err(TraceError::Truncated {
                        path: self.path.clone(),
                        at: Location::Byte(start),
                        reason: "the stream ends inside a block header",
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            }
            if shift == 63 && b[0] > 1 || shift > 63 {
                return Err(self.corrupt(start, "Bad varint in a block header", &b));
            }
            v |= u64::from(b[0] & 0x7F) << shift;
            if b[0] < 0x80 {
                return Ok(Some(v));
            }
            shift += 7;
        }
    }

    /// After the end marker: the zstd frame must end there (which also checks its content
    /// checksum, when it has one) and the file must end with the frame.
    fn check_end(&mut self) -> Result<(), TraceError> {
        use std::io::BufRead;
        let at = self.body.pos;
        let mut extra = [0u8; 16];
        loop {
            match self.body.read(&mut extra) {
                Ok(0) => break,
                Ok(k) => {
                    return Err(self.corrupt(
                        at,
                        "Bytes after the end marker (offset in the decompressed body)",
                        &extra[..k],
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        let file = self.body.inner.get_mut();
        let left = match file.fill_buf() {
            Ok(b) => b.to_vec(),
            Err(source) => {
                return Err(TraceError::Io {
                    path: self.path.clone(),
                    at: Location::Byte(file.get_ref().pos),
                    source,
                });
            }
        };
        if !left.is_empty() {
            let at = file.get_ref().pos - left.len() as u64;
            return Err(self.corrupt(
                at,
                "Bytes after the compressed body (offset in the file)",
                &left,
            ));
        }
        Ok(())
    }

    /// Loads the next block; `Ok(false)` at the end marker.
    fn load_block(&mut self) -> Result<bool, TraceError> {
        if self.pos != self.payload_len {
            let bytes = self.payload[self.pos.min(self.payload_len)..self.payload_len].to_vec();
            return Err(self.corrupt(
                self.payload_at + self.pos as u64,
                "Block has bytes after its last record",
                &bytes,
            ));
        }
        let at = self.body.pos;
        let Some(n) = self.read_varint()? else {
            return Err(TraceError::Truncated {
                path: self.path.clone(),
                at: Location::Byte(at),
                reason: "the stream ends before the end marker",
            });
        };
        if n == 0 {
            let total = self.read_varint()?.ok_or_else(|| TraceError::Truncated {
                path: self.path.clone(),
                at: Location::Byte(self.body.pos),
                reason: "the end marker is incomplete",
            })?;
            if total != self.total {
                return Err(self.corrupt(at, "End marker's record count does not match", &[]));
            }
            self.check_end()?;
            return Ok(false);
        }
        if n > u64::from(BLOCK_RECORDS) {
            return Err(self.corrupt(at, "Block record count too large", &[]));
        }
        let len = self.read_varint()?.ok_or_else(|| TraceError::Truncated {
            path: self.path.clone(),
            at: Location::Byte(self.body.pos),
            reason: "the stream ends inside a block header",
        })?;
        if len < n || len > MAX_RECORD_BYTES * n {
            return Err(self.corrupt(at, "Block length does not fit its record count", &[]));
        }
        self.payload_at = self.body.pos;
        // Both bounded above (n <= 65536, len <= 16 n).
        let (n, len) = (
            usize::try_from(n).unwrap_or(0),
            usize::try_from(len).unwrap_or(0),
        );
        self.payload.resize(len + PAD, 0);
        self.payload[len..].fill(0);
        self.payload_len = len;
        let mut got = 0;
        while got < len {
            match self.body.read(&mut self.payload[got..len]) {
                Ok(0) => {
                    return Err(TraceError::Truncated {
                        path: self.path.clone(),
                        at: Location::Byte(self.body.pos),
                        reason: "the stream ends inside a block",
                    });
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        self.total += n as u64;
        self.left = n;
        self.pos = 0;
        self.predict = [0; 1 + BASES];
        Ok(true)
    }

    fn fail(&mut self, e: TraceError) -> Option<Result<Record, TraceError>> {
        self.done = true;
        self.left = 0;
        Some(Err(e))
    }

    /// The next records as a slice (up to 256 at a time), `None` at the end: the same stream as
    /// the iterator, without its per-record overhead, for consumers that take batches.
    pub fn next_batch(&mut self) -> Option<Result<&[Record], TraceError>> {
        let (start, end) = loop {
            if self.batch_pos < self.batch_len {
                let start = self.batch_pos;
                self.batch_pos = self.batch_len;
                break (start, self.batch_len);
            }
            if let Some(e) = self.pending.take() {
                return self.fail(e).map(|r| r.map(|_| &[][..]));
            }
            if self.left == 0 {
                if self.done {
                    return None;
                }
                match self.load_block() {
                    Ok(true) => {}
                    Ok(false) => {
                        self.done = true;
                        return None;
                    }
                    Err(e) => return self.fail(e).map(|r| r.map(|_| &[][..])),
                }
            }
            self.refill();
        };
        Some(Ok(&self.batch[start..end]))
    }

    /// Decodes up to [`BATCH`] records of the current block.
    fn refill(&mut self) {
        let n = self.left.min(BATCH);
        let mut pos = self.pos;
        let mut st = self.predict;
        let len = self.payload_len;
        let mut k = 0;
        while k < n {
            match decode_one(&self.payload, len, &mut pos, &mut st) {
                Ok(r) => self.batch[k] = r,
                Err(reason) => {
                    let bytes = self.payload[pos.min(len)..len].to_vec();
                    self.pending = Some(self.corrupt(self.payload_at + pos as u64, reason, &bytes));
                    break;
                }
            }
            k += 1;
        }
        self.left = if self.pending.is_some() {
            0
        } else {
            self.left - n
        };
        self.pos = pos;
        self.predict = st;
        self.batch_len = k;
        self.batch_pos = 0;
    }
}

impl<R: Read> Iterator for OracleReader<R> {
    type Item = Result<Record, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.batch_pos < self.batch_len {
                let r = self.batch[self.batch_pos];
                self.batch_pos += 1;
                return Some(Ok(r));
            }
            if let Some(e) = self.pending.take() {
                return self.fail(e);
            }
            if self.left == 0 {
                if self.done {
                    return None;
                }
                match self.load_block() {
                    Ok(true) => {}
                    Ok(false) => {
                        self.done = true;
                        return None;
                    }
                    Err(e) => return self.fail(e),
                }
            }
            self.refill();
        }
    }
}
