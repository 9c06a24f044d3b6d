//! The native compact trace format (`.ctrace`): lackey-style records with instruction boundaries
//! and access sizes, delta and varint encoded, zstd-compressed. Specified in `docs/traces.md`.
//!
//! ```text
//! header (16 bytes, not compressed)
//!   0  magic   "CMPTRACE"
//!   8  version u16 LE (1)
//!   10 flags   u16 LE (0, reserved)
//!   12 reserved u32 LE (0)
//! body: one zstd frame (with a content checksum since this build; older files have none)
//!   holding blocks; nothing may follow the frame
//!   block      = varint n (1..=65536 records), varint len (payload bytes), payload
//!   end marker = varint 0, varint total record count
//! record (in a payload; the predictions restart at 0 in every block)
//!   tag byte: bits 0-1 kind (0 instr, 1 load, 2 store, 3 modify)
//!     instr: bits 2-6 size code (0..=27 the size; 28 = 32, 29 = 48, 30 = 64 bytes;
//!                                31 = a varint size follows)
//!     data:  bits 2-4 size code (0..=6: 1, 2, 4, 8, 16, 32, 64 bytes; 7 = a varint size follows)
//!            bits 5-6 base: which of the 4 data bases predicts the address
//!     bit 7 set: the address equals its prediction (no delta follows)
//!   [varint size]
//!   [varint zigzag(addr - prediction)]: an instruction is predicted at the end of the previous
//!   instruction (ip + size), a data access at its base, which then becomes the address.
//! ```

use crate::RecordSink;
use crate::rec::{Record, RecordKind};
use compromis_types::Gva;
use std::io::Write;

/// The magic number opening every native trace.
pub const NATIVE_MAGIC: &[u8; 8] = b"CMPTRACE";
/// The version this build writes and reads.
pub const NATIVE_VERSION: u16 = 1;
/// Header length in bytes.
pub const NATIVE_HEADER_BYTES: usize = 16;
/// Most records in one block.
pub const BLOCK_RECORDS: u32 = 1 << 16;
/// Most bytes one record takes (tag, 5-byte size, 10-byte delta).
const MAX_RECORD_BYTES: u64 = 16;
/// Instruction size code meaning "a varint size follows".
const SIZE_ESCAPE: u8 = 31;
/// Sizes of the instruction codes above the direct range (28, 29, 30).
const SIZE_HIGH: [u32; 3] = [32, 48, 64];
/// Data size code meaning "a varint size follows".
const DATA_ESCAPE: u8 = 7;
/// Sizes of the data size codes 0..=6.
const DATA_SIZES: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Tag bit: the address equals its prediction.
const EXACT: u8 = 0x80;
/// Data bases (recent data addresses, one per access stream: stack, heap, globals...).
const BASES: usize = 4;
/// A data access farther than this (zigzag delta) from every base starts a new stream in the
/// least recently used base.
const NEW_STREAM: u64 = 1 << 20;

/// The instruction size code of a size, `SIZE_ESCAPE` if it needs a varint.
#[inline]
fn size_code(size: u32) -> u8 {
    SIZE_CODES
        .get(size as usize)
        .copied()
        .unwrap_or(SIZE_ESCAPE)
}

/// [`size_code`] of the sizes 0..=64, looked up rather than branched on.
// Every cast is of a value below 28.
#[allow(clippy::cast_possible_truncation)]
const SIZE_CODES: [u8; 65] = {
    let mut t = [SIZE_ESCAPE; 65];
    let mut s = 0;
    while s < 28 {
        t[s] = s as u8;
        s += 1;
    }
    t[32] = 28;
    t[48] = 29;
    t[64] = 30;
    t
};

/// The data size code of a size, `DATA_ESCAPE` if it needs a varint.
#[inline]
fn data_size_code(size: u32) -> u8 {
    match size {
        1 => 0,
        2 => 1,
        4 => 2,
        8 => 3,
        16 => 4,
        32 => 5,
        64 => 6,
        _ => DATA_ESCAPE,
    }
}

#[inline]
fn zigzag(v: i64) -> u64 {
    // Bit reinterpretation is the point of zigzag coding.
    #[allow(clippy::cast_sign_loss)]
    let r = ((v << 1) ^ (v >> 63)) as u64;
    r
}

#[inline]
fn unzigzag(v: u64) -> u64 {
    (v >> 1) ^ (v & 1).wrapping_neg()
}

#[inline]
// Each pushed value is masked or bounded below 0x80 first, so the casts cannot truncate.
#[allow(clippy::cast_possible_truncation)]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v & 0x7F) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes a varint at `pos`; returns the value and the next position.
#[inline(always)]
fn get_varint(buf: &[u8], pos: usize) -> Option<(u64, usize)> {
    let b = *buf.get(pos)?;
    if b < 0x80 {
        return Some((u64::from(b), pos + 1));
    }
    let mut v = u64::from(b & 0x7F);
    let mut shift = 7;
    let mut p = pos + 1;
    loop {
        let b = *buf.get(p)?;
        p += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Some((v, p));
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

const KINDS: [RecordKind; 4] = [
    RecordKind::Instr,
    RecordKind::Load,
    RecordKind::Store,
    RecordKind::Modify,
];

fn kind_code(k: RecordKind) -> u8 {
    match k {
        RecordKind::Instr => 0,
        RecordKind::Load => 1,
        RecordKind::Store => 2,
        RecordKind::Modify => 3,
    }
}

/// A record packed in one 64-bit word, the form the QEMU plugin stream expands to
/// ([`crate::qemu::QemuReader::next_words`]) and [`NativeWriter::write_words`] takes:
/// bits 62-63 the kind (0 instruction, 1 load, 2 store; 3 is not a packed kind), bits 56-61 the
/// size of an instruction or the log2 of the size of a data access (below 32), bits 0-55 the
/// address.
pub mod packed {
    use crate::rec::{Record, RecordKind};

    /// The address bits of a packed word.
    pub const ADDR_MASK: u64 = (1 << 56) - 1;

    /// Packs an instruction fetch (`size` below 64) or a load or store of `1 << log2_size`
    /// bytes (`log2_size` below 32); `None` for what has no packed form (a modify, a size out
    /// of range, an address above 56 bits).
    pub fn pack(kind: RecordKind, addr: u64, size_field: u32) -> Option<u64> {
        let k = match kind {
            RecordKind::Instr if size_field < 64 => 0,
            RecordKind::Load if size_field < 32 => 1,
            RecordKind::Store if size_field < 32 => 2,
            _ => return None,
        };
        (addr <= ADDR_MASK).then_some((k << 62) | (u64::from(size_field) << 56) | addr)
    }

    /// The record a packed word stands for; `Err(word)` for a word that is not one.
    #[inline(always)]
    pub fn unpack(w: u64) -> Result<Record, u64> {
        // 6 bits: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let field = ((w >> 56) & 0x3f) as u32;
        let addr = w & ADDR_MASK;
        match w >> 62 {
            0 => Ok(Record::new(RecordKind::Instr, addr, field)),
            1 if field < 32 => Ok(Record::new(RecordKind::Load, addr, 1 << field)),
            2 if field < 32 => Ok(Record::new(RecordKind::Store, addr, 1 << field)),
            _ => Err(w),
        }
    }
}

/// Bytes the records of one batch of the reader span at most, plus the bytes read past the
/// last: each record takes at most 21 bytes (tag, 10-byte size, 10-byte delta) and the decoder
/// loads 8 bytes at once. A power of two: the decoder indexes its [`Window`] modulo `WINDOW`,
/// which needs no bounds check.
const WINDOW: usize = 8192;
const _: () = assert!(reader::BATCH * 21 + 16 <= WINDOW);
/// What the decoder sees of a payload: [`WINDOW`] bytes from a batch's first record, and the
/// 16 more a load near the end may touch.
type Window = [u8; WINDOW + 16];
/// Zero bytes kept after a block payload, so that a [`Window`] at any position of the payload
/// is in it.
const PAD: usize = WINDOW + 16;

/// What a tag says, looked up rather than branched on (the kind is unpredictable).
#[derive(Clone, Copy)]
#[repr(align(8))]
struct TagInfo {
    /// The size, when not escaped (at most 64).
    size: u8,
    /// A varint size follows: 32 (or'ed into a count of trailing zeros, it sends the record to
    /// the slow path), else 0.
    escape: u8,
    /// Prediction slot: 0 for instructions, 1 + base for data.
    slot: u8,
    /// The record's kind.
    kind: RecordKind,
    /// How far the prediction moves on after the address: an instruction's size when not
    /// escaped, 0 for data.
    step: u8,
}

/// [`TagInfo`] of every tag byte.
// Every cast below is of a value at most 64 (sizes) or 4 (bases), so none can truncate.
#[allow(clippy::cast_possible_truncation)]
const TAGS: [TagInfo; 256] = {
    let mut t = [TagInfo {
        size: 0,
        escape: 0,
        slot: 0,
        kind: RecordKind::Instr,
        step: 0,
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
                size: size as u8,
                escape: if code == 31 { 32 } else { 0 },
                slot: 0,
                kind: RecordKind::Instr,
                step: size as u8,
            }
        } else {
            let code = (tag >> 2) & 7;
            let size = if code < 7 { DATA_SIZES[code] } else { 0 };
            TagInfo {
                size: size as u8,
                escape: if code == 7 { 32 } else { 0 },
                slot: 1 + ((tag >> 5) & 3) as u8,
                kind: KINDS[tag & 3],
                step: 0,
            }
        };
        t[tag] = info;
        tag += 1;
    }
    t
};

/// Decodes the record at `*pos` of a [`Window`] of a block payload whose first `len` bytes
/// (from the window's start) are the payload and whose next bytes are zero into `out`, and
/// returns the position after it, which must stay below `WINDOW - 24` (a batch's records are
/// in the window). `pred` holds the predictions (instruction, then the data bases).
///
/// Without a branch on the data: the tag and the next 7 bytes come from one 64-bit load, the
/// record's length from the first "stop" among the tag's exact bit and the stop bits of three
/// delta bytes, the delta masked from the same word (0 for an exact record). Only an escaped
/// size or a delta of more than 3 bytes (both rare: a size above 64, an address more than
/// 2^20 from its prediction) take a branch, to [`decode_slow`], the same decoder with branches.
/// The faster of the two on streams whose record shapes a branch predictor cannot learn.
#[inline(always)]
fn decode_branchless(
    buf: &Window,
    len: usize,
    p: usize,
    pred: &mut [u64; 1 + BASES],
    out: &mut Record,
) -> Result<usize, &'static str> {
    // A test rather than a mask (as in `decode_slow`): a predicted branch is not on the chain
    // from one record's position to the next.
    let Some(&w) = buf.get(p..p + 8).and_then(|b| <&[u8; 8]>::try_from(b).ok()) else {
        return decode_slow(buf, len, p, pred, out);
    };
    let w = u64::from_le_bytes(w);
    let info = TAGS[(w & 0xff) as usize];
    // Stop bits: the tag's exact bit (bit 7, set), then delta bytes 1-3 (bits 15, 23, 31,
    // clear), then a sentinel (bit 39): 7, 15, 23, 31 or 39 trailing zeros.
    let stops = ((w ^ 0x8080_8000) & 0x8080_8080) | (1 << 39);
    let tz = stops.trailing_zeros();
    // An escape (32) makes any count 39 or more; without one, only the sentinel's is.
    if tz | u32::from(info.escape) >= 39 {
        return decode_slow(buf, len, p, pred, out);
    }
    // The delta's bytes (1 to tz / 8), their stop bits cleared, packed into 7-bit groups.
    let n = (tz >> 3) as usize;
    let x = w & DELTA_BITS[tz as usize];
    let z = ((x >> 8) & 0x7f) | ((x >> 9) & 0x3f80) | ((x >> 10) & 0x1f_c000);
    let d = unzigzag(z);
    let q = p + 1 + n;
    if q > len {
        return Err("Block ends in the middle of a record");
    }
    let size = u32::from(info.size);
    let slot = usize::from(info.slot);
    let addr = pred[slot].wrapping_add(d);
    // An instruction predicts the next one at its end; a data access becomes its base.
    pred[slot] = addr.wrapping_add(u64::from(info.step));
    out.kind = info.kind;
    out.addr = Gva(addr);
    out.size = size;
    Ok(q)
}

/// The value bits of a delta of 0 to 3 bytes after the tag byte (a word's bytes 1-3), by the
/// count of trailing zeros of [`decode_branchless`]'s stop bits (7, 15, 23 or 31; the table
/// covers every count a `u64` can have, so that indexing it needs no test).
const DELTA_BITS: [u64; 65] = {
    let mut t = [0; 65];
    t[15] = 0x7f00;
    t[23] = 0x7f_7f00;
    t[31] = 0x7f7f_7f00;
    t
};

/// [`decode_branchy`] out of line: what [`decode_branchless`] leaves (escaped sizes, deltas of
/// more than 3 bytes, every error).
#[inline(never)]
#[cold]
fn decode_slow(
    buf: &Window,
    len: usize,
    p: usize,
    pred: &mut [u64; 1 + BASES],
    out: &mut Record,
) -> Result<usize, &'static str> {
    decode_branchy(buf, len, p, pred, out)
}

/// [`decode_branchless`] with branches on the escape, the exact bit and the delta's length:
/// the faster of the two on streams whose record shapes repeat (a branch predictor learns them;
/// a real program's loops), and the reference for every record and error.
#[inline(always)]
fn decode_branchy(
    buf: &Window,
    len: usize,
    mut p: usize,
    pred: &mut [u64; 1 + BASES],
    out: &mut Record,
) -> Result<usize, &'static str> {
    // Every index is taken modulo WINDOW (positions are below it, so this changes none), which
    // proves it in bounds without a test.
    let at = |p: usize| p & (WINDOW - 1);
    // get_varint reads at most 10 bytes, all in the window: bounding it there reads as `len`.
    let bounded = &buf[..len.min(buf.len())];
    // No test of p < len: p <= len, and at p == len the tag is the PAD's 0 (an instruction of
    // size 0 with a delta of one byte, also 0), so the test below after the delta fails with
    // this same error.
    let tag = buf[at(p)];
    p += 1;
    let info = TAGS[usize::from(tag)];
    let (size, step) = if info.escape != 0 {
        let (v, q) = get_varint(bounded, p).ok_or("Bad record size")?;
        p = q;
        let size = u32::try_from(v).map_err(|_| "Record size does not fit 32 bits")?;
        (size, if info.slot == 0 { size } else { 0 })
    } else {
        (u32::from(info.size), u32::from(info.step))
    };
    // p <= len here, so the 8 bytes from p are in the payload or its PAD. Short deltas take
    // predictable branches, which lets the processor run ahead to the next record; longer ones
    // decode from one 64-bit load.
    let (d, n) = if tag & EXACT != 0 {
        (0, 0)
    } else {
        let (z, n) = decode_delta(buf, bounded, p)?;
        (unzigzag(z), n)
    };
    p += n;
    if p > len {
        return Err("Block ends in the middle of a record");
    }
    let slot = usize::from(info.slot);
    let addr = pred[slot].wrapping_add(d);
    // An instruction predicts the next one at its end; a data access becomes its base.
    pred[slot] = addr.wrapping_add(u64::from(step));
    // Field by field: three stores (a whole `Record` is built in a register first).
    out.kind = info.kind;
    out.addr = Gva(addr);
    out.size = size;
    Ok(p)
}

/// The zigzag delta at `p` (below `WINDOW - 24`) of a [`Window`] and its length in bytes;
/// `bounded` is the window up to the payload's end.
#[inline(always)]
fn decode_delta(buf: &Window, bounded: &[u8], p: usize) -> Result<(u64, usize), &'static str> {
    let i = p & (WINDOW - 1);
    Ok(if buf[i] < 0x80 {
        (u64::from(buf[i]), 1)
    } else if buf[i + 1] < 0x80 {
        (u64::from(buf[i] & 0x7f) | (u64::from(buf[i + 1]) << 7), 2)
    } else {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[i..i + 8]);
        let word = u64::from_le_bytes(w);
        let stop = !word & 0x8080_8080_8080_8080;
        if stop != 0 {
            let n = (stop.trailing_zeros() as usize + 1) / 8;
            let x = word & (stop ^ (stop - 1)) & 0x7f7f_7f7f_7f7f_7f7f;
            // The 7-bit groups packed: pairs, then quadruples, then all 8.
            let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
            let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
            let v = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
            (v, n)
        } else {
            let (v, q) = get_varint(bounded, p).ok_or("Bad address delta")?;
            (v, q - p)
        }
    })
}

/// Writes [`Record`]s in the native format.
///
/// Records are collected into batches of about [`BLOCK_RECORDS`]; each full batch goes to a
/// worker thread that encodes and compresses it, so the caller (a recorder reading a tracer's
/// pipe, a converter reading a file) only copies records. The worker handles batches in order,
/// one at a time, and cuts blocks by its own count: the file is byte for byte what a single
/// thread would write, however the records were handed over ([`RecordSink::write_record`] one
/// at a time, or [`NativeWriter::write_words`] in packed slices).
pub struct NativeWriter<W: Write + Send + 'static> {
    /// The batch being collected.
    pending: Batch,
    /// Full batches to the worker; `None` once finished (or after the worker failed).
    to_worker: Option<std::sync::mpsc::SyncSender<Batch>>,
    /// Emptied batches back from the worker, reused.
    recycled: std::sync::mpsc::Receiver<Batch>,
    worker: Option<std::thread::JoinHandle<std::io::Result<W>>>,
    /// Set when the writer is dropped unfinished: the worker stops without finishing the stream.
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    total: u64,
}

/// Records handed to the worker: as records, or packed in words (see [`packed`]).
enum Batch {
    Records(Vec<Record>),
    Words(Vec<u64>),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Records(v) => v.len(),
            Batch::Words(v) => v.len(),
        }
    }
}

/// Most bytes one record's encoding takes in the block buffer (tag, 5-byte size, 10-byte delta).
const RECORD_BYTES_MAX: usize = 16;

/// The encoder state of one stream: what the worker thread of a [`NativeWriter`] runs.
struct BlockEncoder<W: Write> {
    enc: zstd::Encoder<'static, W>,
    /// The block's payload so far: `block[..len]` (sized for a full block of the longest
    /// records, so that writing a record needs no growth).
    block: Box<[u8]>,
    len: usize,
    n: u32,
    predict: Predict,
    total: u64,
}

/// The predictions of a block (reset at every block). Copied into a local for a batch, so that
/// the compiler keeps it in registers (stores into the byte buffer could otherwise alias it).
#[derive(Clone, Copy, Default)]
struct Predict {
    ip_next: u64,
    bases: [u64; BASES],
    /// When each base was last used (for replacing the least recently used one).
    used: [u64; BASES],
    clock: u64,
}

/// Writes `v` as a varint at `buf[*len..]` (room checked by the caller's sizing).
#[inline(always)]
// Each written value is masked or bounded below 0x80 first, so the casts cannot truncate.
#[allow(clippy::cast_possible_truncation)]
fn put_varint_at(buf: &mut [u8], len: &mut usize, mut v: u64) {
    let mut l = *len;
    while v >= 0x80 {
        buf[l] = (v & 0x7F) as u8 | 0x80;
        v >>= 7;
        l += 1;
    }
    buf[l] = v as u8;
    *len = l + 1;
}

impl Predict {
    /// Encodes an instruction fetch at `buf[*len..]`.
    #[inline(always)]
    fn put_instr(&mut self, buf: &mut [u8], len: &mut usize, addr: u64, size: u32) {
        // Reinterpreting the wrapped difference as signed is the intent (small negative deltas).
        #[allow(clippy::cast_possible_wrap)]
        let z = zigzag(addr.wrapping_sub(self.ip_next) as i64);
        self.ip_next = addr.wrapping_add(u64::from(size));
        let sc = size_code(size);
        let exact = if z == 0 { EXACT } else { 0 };
        buf[*len] = (sc << 2) | exact;
        *len += 1;
        if sc == SIZE_ESCAPE {
            put_varint_at(buf, len, u64::from(size));
        }
        if z != 0 {
            put_varint_at(buf, len, z);
        }
    }

    /// Encodes a data access of kind `code` (1 load, 2 store, 3 modify) at `buf[*len..]`.
    #[inline(always)]
    fn put_data(&mut self, buf: &mut [u8], len: &mut usize, code: u8, addr: u64, size: u32) {
        // Reinterpreting the wrapped difference as signed is the intent (small negative deltas).
        #[allow(clippy::cast_possible_wrap)]
        let zz = |d: u64| zigzag(d as i64);
        let d = [
            zz(addr.wrapping_sub(self.bases[0])),
            zz(addr.wrapping_sub(self.bases[1])),
            zz(addr.wrapping_sub(self.bases[2])),
            zz(addr.wrapping_sub(self.bases[3])),
        ];
        // The nearest base (the first of equals).
        let mut best = 0;
        for i in 1..BASES {
            if d[i] < d[best] {
                best = i;
            }
        }
        if d[best] >= NEW_STREAM {
            // A new stream: the least recently used base (the first of equals).
            best = 0;
            for i in 1..BASES {
                if self.used[i] < self.used[best] {
                    best = i;
                }
            }
        }
        let z = d[best];
        self.bases[best] = addr;
        self.clock += 1;
        self.used[best] = self.clock;
        let sc = data_size_code(size);
        // best < 4: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let base = best as u8;
        let exact = if z == 0 { EXACT } else { 0 };
        buf[*len] = code | (sc << 2) | (base << 5) | exact;
        *len += 1;
        if sc == DATA_ESCAPE {
            put_varint_at(buf, len, u64::from(size));
        }
        if z != 0 {
            put_varint_at(buf, len, z);
        }
    }
}

impl<W: Write> BlockEncoder<W> {
    fn new(enc: zstd::Encoder<'static, W>) -> BlockEncoder<W> {
        BlockEncoder {
            enc,
            block: vec![0u8; BLOCK_RECORDS as usize * RECORD_BYTES_MAX].into_boxed_slice(),
            len: 0,
            n: 0,
            predict: Predict::default(),
            total: 0,
        }
    }

    fn flush_block(&mut self) -> std::io::Result<()> {
        if self.n == 0 {
            return Ok(());
        }
        let mut head = Vec::with_capacity(12);
        put_varint(&mut head, u64::from(self.n));
        put_varint(&mut head, self.len as u64);
        self.enc.write_all(&head)?;
        self.enc.write_all(&self.block[..self.len])?;
        self.len = 0;
        self.n = 0;
        self.predict = Predict::default();
        Ok(())
    }

    /// Writes the last block and the end marker, finishes the zstd stream and returns `out`.
    fn finish(mut self) -> std::io::Result<W> {
        self.flush_block()?;
        let mut end = Vec::with_capacity(12);
        put_varint(&mut end, 0);
        put_varint(&mut end, self.total);
        self.enc.write_all(&end)?;
        self.enc.finish()
    }

    /// Counts `k` records just encoded and ends the block when it is full.
    #[inline(always)]
    fn count(&mut self, k: u32) -> std::io::Result<()> {
        self.n += k;
        self.total += u64::from(k);
        if self.n == BLOCK_RECORDS {
            self.flush_block()?;
        }
        Ok(())
    }

    /// The records left before the block is full.
    #[inline(always)]
    fn room(&self) -> usize {
        (BLOCK_RECORDS - self.n) as usize
    }

    fn encode_records(&mut self, mut records: &[Record]) -> std::io::Result<()> {
        while !records.is_empty() {
            let (now, rest) = records.split_at(records.len().min(self.room()));
            let (mut p, mut len, buf) = (self.predict, self.len, &mut self.block[..]);
            for r in now {
                match r.kind {
                    RecordKind::Instr => p.put_instr(buf, &mut len, r.addr.0, r.size),
                    k => p.put_data(buf, &mut len, kind_code(k), r.addr.0, r.size),
                }
            }
            (self.predict, self.len) = (p, len);
            // now.len() <= room <= BLOCK_RECORDS: the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation)]
            self.count(now.len() as u32)?;
            records = rest;
        }
        Ok(())
    }

    /// Encodes packed records ([`packed`]); an invalid word is an `InvalidData` error.
    fn encode_words(&mut self, mut words: &[u64]) -> std::io::Result<()> {
        while !words.is_empty() {
            let (now, rest) = words.split_at(words.len().min(self.room()));
            let mut k = 0u32;
            let (mut p, mut len, buf) = (self.predict, self.len, &mut self.block[..]);
            for &w in now {
                // 6 bits and 2 bits: the casts cannot truncate.
                #[allow(clippy::cast_possible_truncation)]
                let (field, code) = (((w >> 56) & 0x3f) as u32, (w >> 62) as u8);
                let addr = w & packed::ADDR_MASK;
                if code == 0 {
                    p.put_instr(buf, &mut len, addr, field);
                } else if code < 3 && field < 32 {
                    p.put_data(buf, &mut len, code, addr, 1 << field);
                } else {
                    (self.predict, self.len) = (p, len);
                    self.count(k)?;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not a packed record: {w:#018x}"),
                    ));
                }
                k += 1;
            }
            (self.predict, self.len) = (p, len);
            self.count(k)?;
            words = rest;
        }
        Ok(())
    }
}

/// Batches waiting for the worker at most (bounds memory: a batch of records is 1 MiB).
const QUEUED_BLOCKS: usize = 2;

/// The zstd level of the native body.
const ZSTD_LEVEL: i32 = 1;

impl<W: Write + Send + 'static> NativeWriter<W> {
    /// Writes the header to `out` and starts the compressed body (zstd) and its worker.
    pub fn new(mut out: W) -> std::io::Result<NativeWriter<W>> {
        let mut header = [0u8; NATIVE_HEADER_BYTES];
        header[..8].copy_from_slice(NATIVE_MAGIC);
        header[8..10].copy_from_slice(&NATIVE_VERSION.to_le_bytes());
        out.write_all(&header)?;
        let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL)?;
        // A content checksum at the end of the frame: a flipped bit in the body is an error.
        enc.include_checksum(true)?;
        let mut state = BlockEncoder::new(enc);
        let (to_worker, batches) = std::sync::mpsc::sync_channel::<Batch>(QUEUED_BLOCKS);
        let (give_back, recycled) = std::sync::mpsc::channel();
        let abandoned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = abandoned.clone();
        let worker = std::thread::Builder::new()
            .name("ctrace-writer".into())
            .spawn(move || {
                for mut batch in batches {
                    match &mut batch {
                        Batch::Records(v) => {
                            state.encode_records(v)?;
                            v.clear();
                        }
                        Batch::Words(v) => {
                            state.encode_words(v)?;
                            v.clear();
                        }
                    }
                    // The writer may be gone already (an error elsewhere): nothing to give back to.
                    let _ = give_back.send(batch);
                }
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    return Err(std::io::Error::other("native writer dropped unfinished"));
                }
                state.finish()
            })?;
        Ok(NativeWriter {
            pending: Batch::Records(Vec::new()),
            to_worker: Some(to_worker),
            recycled,
            worker: Some(worker),
            abandoned,
            total: 0,
        })
    }

    /// The worker's result once it has stopped (its error, if it failed).
    fn join(&mut self) -> std::io::Result<W> {
        self.to_worker = None;
        match self.worker.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("native writer thread panicked"))),
            None => Err(std::io::Error::other("native writer already finished")),
        }
    }

    /// An emptied batch back from the worker, or a new one.
    fn fresh(&mut self, words: bool) -> Batch {
        match self.recycled.try_recv() {
            Ok(b @ Batch::Words(_)) if words => b,
            Ok(b @ Batch::Records(_)) if !words => b,
            _ if words => Batch::Words(Vec::with_capacity(2 * BLOCK_RECORDS as usize)),
            _ => Batch::Records(Vec::with_capacity(BLOCK_RECORDS as usize)),
        }
    }

    /// Hands the collected batch to the worker (if it holds any record).
    fn send_block(&mut self) -> std::io::Result<()> {
        if self.pending.len() == 0 {
            return Ok(());
        }
        if self.to_worker.is_none() {
            return Err(std::io::Error::other("native writer already finished"));
        }
        let words = matches!(self.pending, Batch::Words(_));
        let next = self.fresh(words);
        let full = std::mem::replace(&mut self.pending, next);
        let sent = self
            .to_worker
            .as_ref()
            .is_some_and(|tx| tx.send(full).is_ok());
        if !sent {
            // The worker stopped: it failed; its error says why.
            return self
                .join()
                .and_then(|_| Err(std::io::Error::other("native writer thread stopped early")));
        }
        Ok(())
    }

    /// Writes records packed in words ([`packed`]), in order: the fast path of a recorder whose
    /// stream already holds them in that form (the QEMU plugin stream). A word that is not a
    /// packed record makes the worker fail with an `InvalidData` error (from a later call or
    /// [`NativeWriter::finish`]).
    pub fn write_words(&mut self, words: &[u64]) -> std::io::Result<()> {
        if !matches!(self.pending, Batch::Words(_)) {
            self.send_block()?;
            self.pending = self.fresh(true);
        }
        if let Batch::Words(v) = &mut self.pending {
            v.extend_from_slice(words);
            self.total += words.len() as u64;
            if v.len() >= BLOCK_RECORDS as usize {
                self.send_block()?;
            }
        }
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.total
    }

    /// Writes the last block and the end marker, finishes the zstd stream and returns `out`.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.send_block()?;
        self.join()
    }
}

impl<W: Write + Send + 'static> Drop for NativeWriter<W> {
    fn drop(&mut self) {
        if self.worker.is_some() {
            // Unfinished (an error, or the caller gave up): the worker drops the stream unfinished.
            self.abandoned
                .store(true, std::sync::atomic::Ordering::Release);
            self.to_worker = None;
        }
    }
}

impl<W: Write + Send + 'static> RecordSink for NativeWriter<W> {
    #[inline]
    fn write_record(&mut self, r: &Record) -> std::io::Result<()> {
        if let Batch::Records(v) = &mut self.pending {
            v.push(*r);
            self.total += 1;
            if v.len() == BLOCK_RECORDS as usize {
                self.send_block()?;
            }
            return Ok(());
        }
        self.send_block()?;
        self.pending = self.fresh(false);
        self.write_record(r)
    }
}

mod reader;
pub use reader::NativeReader;

#[cfg(test)]
mod oracle;

#[cfg(test)]
mod tests {
    use super::reader::BATCH;
    use super::*;
    use crate::error::TraceError;

    fn encode(recs: &[Record]) -> Vec<u8> {
        let mut w = NativeWriter::new(Vec::new()).unwrap();
        for r in recs {
            w.write_record(r).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn varint_and_zigzag() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX, 1 << 63] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(get_varint(&b, 0), Some((v, b.len())));
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            #[allow(clippy::cast_sign_loss)]
            let raw = v as u64;
            assert_eq!(unzigzag(zigzag(v)), raw);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(get_varint(&[0xFF; 11], 0), None);
    }

    #[test]
    fn round_trip_across_blocks() {
        let mut recs = Vec::new();
        for i in 0..(u64::from(BLOCK_RECORDS) + 10) {
            recs.push(Record::new(RecordKind::Instr, 0x400000 + 3 * i, 3));
            recs.push(Record::new(RecordKind::Load, 0x7fff_0000 - 8 * (i % 7), 8));
        }
        for size in [27, 28, 31, 32, 33, 48, 64, 65] {
            recs.push(Record::new(RecordKind::Load, 0x1000, size));
        }
        recs.push(Record::new(RecordKind::Modify, u64::MAX, 4096));
        recs.push(Record::new(RecordKind::Store, 0, u32::MAX));
        let bytes = encode(&recs);
        let back: Vec<_> = NativeReader::new(&bytes[..], "t")
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, recs);
        // Sequential code and a small stack window: about two bytes a record before zstd.
        assert!(
            bytes.len() < recs.len(),
            "{} bytes for {} records",
            bytes.len(),
            recs.len()
        );
    }

    fn arb_record() -> impl proptest::strategy::Strategy<Value = Record> {
        use proptest::prelude::*;
        // Addresses near each other (short deltas), anywhere (up to 10-byte deltas), and at the
        // extremes; sizes in the direct codes and escaped.
        let addr = prop_oneof![
            0x40_0000u64..0x40_1000,
            any::<u64>(),
            Just(0u64),
            Just(u64::MAX),
            (0u32..64).prop_map(|b| 1u64 << b),
        ];
        let size = prop_oneof![1u32..9, 0u32..100, any::<u32>()];
        (0usize..4, addr, size).prop_map(|(k, a, s)| Record::new(KINDS[k], a, s))
    }

    proptest::proptest! {
        /// Every record survives writing and reading, through the iterator and the batches
        /// (the decoder's one-load delta path against the writer's varints).
        #[test]
        fn any_records_round_trip(recs in proptest::collection::vec(arb_record(), 0..600)) {
            let bytes = encode(&recs);
            let back: Vec<_> = NativeReader::new(&bytes[..], "t")
                .unwrap()
                .map(Result::unwrap)
                .collect();
            proptest::prop_assert_eq!(&back, &recs);
            let mut r = NativeReader::new(&bytes[..], "t").unwrap();
            let mut batched = Vec::new();
            while let Some(b) = r.next_batch() {
                batched.extend_from_slice(b.unwrap());
            }
            proptest::prop_assert_eq!(&batched, &recs);
        }
    }

    /// A packed word: any kind, size field and address, valid or not.
    fn arb_word() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        let addr = prop_oneof![0x40_0000u64..0x40_1000, 0..=packed::ADDR_MASK];
        (0u64..3, 0u64..32, addr).prop_map(|(k, f, a)| (k << 62) | (f << 56) | a)
    }

    proptest::proptest! {
        /// Packed words written in slices (any split) make the file their records make one by
        /// one, and read back as those records.
        #[test]
        fn packed_words_write_the_file_of_their_records(
            words in proptest::collection::vec(arb_word(), 0..3000),
            cut in 0usize..3000,
        ) {
            let recs: Vec<Record> = words.iter().map(|&w| packed::unpack(w).unwrap()).collect();
            for (r, &word) in recs.iter().zip(&words) {
                let field = match r.kind {
                    RecordKind::Instr => r.size,
                    _ => r.size.trailing_zeros(),
                };
                proptest::prop_assert_eq!(packed::pack(r.kind, r.addr.0, field), Some(word));
            }
            let mut w = NativeWriter::new(Vec::new()).unwrap();
            let (a, b) = words.split_at(cut.min(words.len()));
            w.write_words(a).unwrap();
            w.write_words(b).unwrap();
            proptest::prop_assert_eq!(w.records(), words.len() as u64);
            let bytes = w.finish().unwrap();
            proptest::prop_assert_eq!(&bytes, &encode(&recs));
        }
    }

    proptest::proptest! {
        /// The branch-free decoder and the decoder with branches agree on any bytes: records,
        /// positions, predictions and errors, record after record.
        #[test]
        fn branchless_decodes_as_branchy(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u8>(),
                    proptest::strategy::Just(0x80u8),
                    proptest::strategy::Just(0xffu8),
                    proptest::strategy::Just(0u8),
                    0x80u8..0x84,
                ],
                0..400,
            ),
            cut in 0usize..400,
            pred in proptest::prelude::any::<[u64; 1 + BASES]>(),
        ) {
            let mut win = Box::new([0u8; WINDOW + 16]);
            let len = cut.min(bytes.len());
            win[..len].copy_from_slice(&bytes[..len]);
            let (mut pa, mut pb) = (pred, pred);
            let (mut p, mut q) = (0, 0);
            let blank = Record::new(RecordKind::Instr, 0, 0);
            for _ in 0..=len {
                let (mut ra, mut rb) = (blank, blank);
                let a = decode_branchless(&win, len, p, &mut pa, &mut ra);
                let b = decode_branchy(&win, len, q, &mut pb, &mut rb);
                proptest::prop_assert_eq!(a, b);
                proptest::prop_assert_eq!(pa, pb);
                proptest::prop_assert_eq!(ra, rb);
                match a {
                    Ok(next) => (p, q) = (next, next),
                    Err(_) => break,
                }
            }
        }
    }

    /// Mixing one-by-one records and packed words keeps their order; a word that is not a
    /// packed record is an error, not a panic.
    #[test]
    fn mixed_and_invalid_words() {
        let r1 = Record::new(RecordKind::Modify, 0x1234, 4);
        let w2 = packed::pack(RecordKind::Load, 0x2000, 3).unwrap();
        let r3 = Record::new(RecordKind::Instr, 0x40_0000, 5);
        let mut w = NativeWriter::new(Vec::new()).unwrap();
        w.write_record(&r1).unwrap();
        w.write_words(&[w2]).unwrap();
        w.write_record(&r3).unwrap();
        let bytes = w.finish().unwrap();
        let want = [r1, packed::unpack(w2).unwrap(), r3];
        assert_eq!(bytes, encode(&want));
        assert_eq!(packed::pack(RecordKind::Modify, 0, 2), None);
        assert_eq!(packed::pack(RecordKind::Load, 1 << 56, 2), None);
        assert_eq!(packed::unpack(3 << 62), Err(3 << 62));
        let mut w = NativeWriter::new(Vec::new()).unwrap();
        w.write_words(&[w2, 3 << 62]).unwrap();
        let e = w.finish().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    /// A writer that fails once `room` bytes are written.
    struct Full {
        room: usize,
    }
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room < buf.len() {
                return Err(std::io::Error::other("disk full"));
            }
            self.room -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The worker thread's write error reaches the caller (from a later write or from
    /// `finish`), and a writer dropped unfinished neither hangs nor panics.
    #[test]
    fn write_errors_of_the_worker_are_reported() {
        let recs: Vec<Record> = (0..(3 * u64::from(BLOCK_RECORDS)))
            .map(|i| Record::new(RecordKind::Load, i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 8))
            .collect();
        let mut w = NativeWriter::new(Full { room: 4096 }).unwrap();
        let mut failed = recs.iter().any(|r| w.write_record(r).is_err());
        if !failed {
            failed = w.finish().is_err();
        }
        assert!(failed, "a full disk must be an error");
        let mut w = NativeWriter::new(Vec::new()).unwrap();
        for r in &recs {
            w.write_record(r).unwrap();
        }
        drop(w);
    }

    #[test]
    fn batches_match_the_iterator() {
        let recs: Vec<_> = (0..1000u64)
            .map(|i| Record::new(RecordKind::ALL[(i % 4) as usize], i * 4099, 8))
            .collect();
        let bytes = encode(&recs);
        let mut r = NativeReader::new(&bytes[..], "t").unwrap();
        let mut got = Vec::new();
        while let Some(b) = r.next_batch() {
            let b = b.unwrap();
            assert!(!b.is_empty() && b.len() <= BATCH);
            got.extend_from_slice(b);
        }
        assert_eq!(got, recs);
        assert!(r.next().is_none());
    }

    #[test]
    fn interleaved_streams_keep_small_deltas() {
        // An instruction, a stack access and a heap access, each stream moving by 8 bytes: with
        // one base per stream every delta fits one byte (tag + delta), so about 5 bytes for 3
        // records; a single "previous data address" would need 5-byte deltas.
        let mut recs = Vec::new();
        for i in 0..3000u64 {
            recs.push(Record::new(RecordKind::Instr, 0x40_1000 + 4 * i, 4));
            recs.push(Record::new(RecordKind::Store, 0x7ffd_0000_0000 - 8 * i, 8));
            recs.push(Record::new(RecordKind::Load, 0x5555_0000 + 8 * i, 8));
        }
        let bytes = encode(&recs);
        let body = zstd::decode_all(&bytes[NATIVE_HEADER_BYTES..]).unwrap();
        assert!(
            body.len() < 2 * recs.len(),
            "{} bytes for {} records",
            body.len(),
            recs.len()
        );
        let back: Vec<_> = NativeReader::new(&bytes[..], "t")
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, recs);
    }

    #[test]
    fn empty_trace() {
        let bytes = encode(&[]);
        assert_eq!(NativeReader::new(&bytes[..], "t").unwrap().count(), 0);
    }

    #[test]
    fn wrong_magic_and_version() {
        let e = NativeReader::new(&b"CMPTRACX\x01\0\0\0\0\0\0\0"[..], "a.ctrace").unwrap_err();
        assert!(matches!(e, TraceError::BadMagic { .. }), "{e}");
        assert!(e.to_string().contains("a.ctrace"));
        let mut bytes = encode(&[]);
        bytes[8] = 9;
        let e = NativeReader::new(&bytes[..], "t").unwrap_err();
        assert!(matches!(e, TraceError::Version { found: 9, .. }), "{e}");
    }

    #[test]
    fn truncation_is_an_error() {
        let recs: Vec<_> = (0..5000)
            .map(|i| Record::new(RecordKind::Load, i * 4099, 8))
            .collect();
        let bytes = encode(&recs);
        for cut in [NATIVE_HEADER_BYTES + 1, bytes.len() / 2, bytes.len() - 1] {
            let res: Result<Vec<_>, _> = match NativeReader::new(&bytes[..cut], "t") {
                Ok(r) => r.collect(),
                Err(e) => Err(e),
            };
            assert!(res.is_err(), "cut at {cut} read fine");
        }
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Record>, TraceError> {
        NativeReader::new(bytes, "t.ctrace")?.collect()
    }

    fn sample() -> Vec<Record> {
        (0..3000)
            .map(|i| {
                if i % 3 == 0 {
                    Record::new(RecordKind::Instr, 0x40_0000 + i * 5, 4)
                } else {
                    Record::new(RecordKind::Store, 0x7f00_0000 + i * 4099, 8)
                }
            })
            .collect()
    }

    #[test]
    fn bit_flips_in_the_body_never_change_records_silently() {
        let recs = sample();
        let bytes = encode(&recs);
        let body = bytes.len() - NATIVE_HEADER_BYTES;
        let mut errors = 0;
        for k in 0..97 {
            let at = NATIVE_HEADER_BYTES + k * body / 97;
            for bit in [0u8, 3, 7] {
                let mut bad = bytes.clone();
                bad[at] ^= 1 << bit;
                match read_all(&bad) {
                    Err(_) => errors += 1,
                    Ok(back) => assert_eq!(back, recs, "flip of bit {bit} at byte {at} read fine"),
                }
            }
        }
        // Nearly every flip is detected (the checksum covers the whole content).
        assert!(errors > 250, "{errors} flips detected");
        // The last bytes are the checksum itself.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        assert!(read_all(&bad).is_err());
    }

    #[test]
    fn files_without_checksum_still_read() {
        let recs = sample();
        let bytes = encode(&recs);
        let plain = zstd::decode_all(&bytes[NATIVE_HEADER_BYTES..]).unwrap();
        let mut old = bytes[..NATIVE_HEADER_BYTES].to_vec();
        old.extend(zstd::encode_all(&plain[..], 3).unwrap());
        assert_eq!(read_all(&old).unwrap(), recs);
    }

    #[test]
    fn bytes_after_the_end_are_errors() {
        let recs = sample();
        let bytes = encode(&recs);
        // After the zstd frame, in the file.
        let mut tail = bytes.clone();
        tail.extend_from_slice(b"junk");
        let e = read_all(&tail).unwrap_err().to_string();
        assert!(
            e.contains("t.ctrace")
                && e.contains(&format!("byte {}", bytes.len()))
                && e.contains("after the compressed body"),
            "{e}"
        );
        // After the end marker, inside the compressed body.
        let mut plain = zstd::decode_all(&bytes[NATIVE_HEADER_BYTES..]).unwrap();
        let end = plain.len();
        plain.extend_from_slice(&[0, 0, 7]);
        let mut inner = bytes[..NATIVE_HEADER_BYTES].to_vec();
        inner.extend(zstd::encode_all(&plain[..], 3).unwrap());
        let e = read_all(&inner).unwrap_err().to_string();
        assert!(
            e.contains("t.ctrace")
                && e.contains(&format!("byte {end}"))
                && e.contains("after the end marker"),
            "{e}"
        );
        // A second zstd frame appended is trailing bytes too.
        let mut two = bytes.clone();
        two.extend(zstd::encode_all(&b"more"[..], 3).unwrap());
        assert!(read_all(&two).is_err());
    }
}
