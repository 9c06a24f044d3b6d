//! Reading native traces: the block layer (zstd decompression, block headers, the end marker)
//! runs on a second thread, pipelined with the record decoder on the caller's.
//!
//! The caller's thread keeps the input `R` (no `Send` or `'static` needed): it reads it in the
//! 8 KiB pieces a `BufReader` would and hands them over; the block thread runs the zstd
//! decoder over exactly those pieces, cuts the body into blocks and hands back each block's
//! payload in a recycled buffer. The zstd decoder therefore sees the same input pieces and the
//! same read calls as a single-threaded reader, so every record, every error and every error
//! position is the same (property-tested against main's single-threaded reader, kept in
//! `oracle.rs`). With a single processor, or if no thread can be started, the same block layer
//! runs inline on the caller's thread.

use super::{BASES, BLOCK_RECORDS, MAX_RECORD_BYTES, NATIVE_HEADER_BYTES, NATIVE_MAGIC};
use super::{NATIVE_VERSION, PAD, WINDOW, Window, decode_branchless, decode_branchy};
use crate::RecordSource;
use crate::error::{Location, TraceError};
use crate::rec::{Record, RecordKind};
use compromis_types::{Gva, Op};
use std::io::{BufRead, Read};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};

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

/// The compressed input under the zstd decoder: buffered, and knowing how many file bytes it
/// has read (for the offsets of errors after the compressed body).
trait Compressed: BufRead {
    /// File bytes read from the input so far (the header's included).
    fn file_pos(&self) -> u64;
    /// File bytes the zstd decoder has taken so far (those read, less those still buffered).
    fn consumed(&self) -> u64;
}

impl<R: Read> Compressed for std::io::BufReader<Counting<R>> {
    fn file_pos(&self) -> u64 {
        self.get_ref().pos
    }

    fn consumed(&self) -> u64 {
        self.get_ref().pos - self.buffer().len() as u64
    }
}

/// The size of a `BufReader`'s buffer, and of each read of the input.
const PIECE: usize = 8 * 1024;
/// Input reads per message to the block thread.
const PIECES_PER_GROUP: usize = 8;
/// Input groups sent ahead of the block thread's needs at most.
const GROUPS_AHEAD: usize = 4;
/// Blocks waiting for the caller at most (a few, to ride out the scheduling of a loaded machine).
const BLOCKS_AHEAD: usize = 4;

/// Consecutive results of reads of the input, the bytes read concatenated in `data`.
#[derive(Default)]
struct Group {
    data: Vec<u8>,
    /// Per read: its end in `data`, or the error it returned.
    reads: Vec<Result<usize, std::io::Error>>,
}

/// The compressed input on the block thread: the caller's reads, piece by piece, served the
/// way a `BufReader` serves what its reads return.
struct Piped {
    from_caller: Receiver<Group>,
    /// Emptied groups back to the caller (which counts them to stay [`GROUPS_AHEAD`] ahead).
    give_back: Sender<Group>,
    /// Asks the caller for input when none is queued.
    need: SyncSender<Msg>,
    group: Group,
    /// The next read of `group` to serve, and where the current piece starts and ends.
    next: usize,
    start: usize,
    end: usize,
    /// File bytes received so far.
    pos: u64,
    /// The caller sends nothing more: every further read is an end of file.
    closed: bool,
}

impl Piped {
    /// The next read's result; `Ok(false)` at the end of the input.
    fn advance(&mut self) -> std::io::Result<bool> {
        loop {
            if let Some(r) = self.group.reads.get_mut(self.next) {
                self.next += 1;
                return match r {
                    Ok(end) => {
                        self.start = self.end;
                        self.end = *end;
                        self.pos += (self.end - self.start) as u64;
                        Ok(self.end > self.start)
                    }
                    Err(e) => {
                        let e = std::mem::replace(e, std::io::Error::other("read twice"));
                        Err(e)
                    }
                };
            }
            if self.closed {
                return Ok(false);
            }
            let empty = std::mem::take(&mut self.group);
            if !empty.reads.is_empty() {
                let _ = self.give_back.send(empty);
            }
            (self.next, self.start, self.end) = (0, 0, 0);
            self.group = match self.from_caller.try_recv() {
                Ok(g) => g,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    continue;
                }
                Err(TryRecvError::Empty) => {
                    // The caller reads only when asked or ahead of time; ask, then wait.
                    if self.need.send(Msg::NeedInput).is_err() {
                        self.closed = true;
                        continue;
                    }
                    if let Ok(g) = self.from_caller.recv() {
                        g
                    } else {
                        self.closed = true;
                        continue;
                    }
                }
            };
        }
    }
}

impl Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Piped {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.start == self.end {
            // As a BufReader: one read of the input when the buffer is empty.
            self.advance()?;
        }
        Ok(&self.group.data[self.start..self.end])
    }

    fn consume(&mut self, amt: usize) {
        self.start = (self.start + amt).min(self.end);
    }
}

impl Compressed for Piped {
    fn file_pos(&self) -> u64 {
        self.pos
    }

    fn consumed(&self) -> u64 {
        self.pos - (self.end - self.start) as u64
    }
}

/// The block layer of a native trace: the zstd body, cut into blocks.
struct Blocks<B: Compressed> {
    body: Counting<zstd::Decoder<'static, B>>,
    path: String,
    /// Records in the blocks so far (checked against the end marker).
    total: u64,
    /// [`Compressed::consumed`] after the last block.
    consumed: u64,
}

/// What the block layer found next.
enum Loaded {
    /// A block of `n` records whose payload (`len` bytes, then [`PAD`] zero bytes) is in the
    /// buffer, at offset `at` of the decompressed body; about `packed` bytes of the file held it
    /// compressed (what the zstd decoder took meanwhile).
    Block {
        n: usize,
        len: usize,
        at: u64,
        packed: u64,
    },
    /// The end marker, checked, and nothing after it.
    End,
}

/// A message of the block thread to the caller.
enum Msg {
    Block {
        payload: Vec<u8>,
        n: usize,
        len: usize,
        at: u64,
        packed: u64,
    },
    End,
    Err(TraceError),
    /// The block thread has used all the input it was given.
    NeedInput,
}

fn corrupt(path: &str, at: u64, reason: &'static str, bytes: &[u8]) -> TraceError {
    let text = bytes
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    TraceError::BadRecord {
        path: path.to_owned(),
        at: Location::Byte(at),
        reason,
        text,
    }
}

impl<B: Compressed> Blocks<B> {
    fn io_err(&self, source: std::io::Error) -> TraceError {
        TraceError::Io {
            path: self.path.clone(),
            at: Location::Byte(self.body.pos),
            source,
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
                return Err(corrupt(
                    &self.path,
                    start,
                    "Bad varint in a block header",
                    &b,
                ));
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
        let at = self.body.pos;
        let mut extra = [0u8; 16];
        loop {
            match self.body.read(&mut extra) {
                Ok(0) => break,
                Ok(k) => {
                    return Err(corrupt(
                        &self.path,
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
                    at: Location::Byte(file.file_pos()),
                    source,
                });
            }
        };
        if !left.is_empty() {
            let at = file.file_pos() - left.len() as u64;
            return Err(corrupt(
                &self.path,
                at,
                "Bytes after the compressed body (offset in the file)",
                &left,
            ));
        }
        Ok(())
    }

    /// Reads the next block's payload into `payload`.
    fn load(&mut self, payload: &mut Vec<u8>) -> Result<Loaded, TraceError> {
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
                return Err(corrupt(
                    &self.path,
                    at,
                    "End marker's record count does not match",
                    &[],
                ));
            }
            self.check_end()?;
            return Ok(Loaded::End);
        }
        if n > u64::from(BLOCK_RECORDS) {
            return Err(corrupt(&self.path, at, "Block record count too large", &[]));
        }
        let len = self.read_varint()?.ok_or_else(|| TraceError::Truncated {
            path: self.path.clone(),
            at: Location::Byte(self.body.pos),
            reason: "the stream ends inside a block header",
        })?;
        if len < n || len > MAX_RECORD_BYTES * n {
            return Err(corrupt(
                &self.path,
                at,
                "Block length does not fit its record count",
                &[],
            ));
        }
        let payload_at = self.body.pos;
        // Both bounded above (n <= 65536, len <= 16 n).
        let (n, len) = (
            usize::try_from(n).unwrap_or(0),
            usize::try_from(len).unwrap_or(0),
        );
        payload.resize(len + PAD, 0);
        payload[len..].fill(0);
        let mut got = 0;
        while got < len {
            match self.body.read(&mut payload[got..len]) {
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
        let consumed = self.body.inner.get_ref().consumed();
        let packed = consumed.saturating_sub(self.consumed);
        self.consumed = consumed;
        Ok(Loaded::Block {
            n,
            len,
            at: payload_at,
            packed,
        })
    }

    /// The block thread: blocks to the caller until the end, an error, or the caller is gone.
    fn run(mut self, to_caller: &SyncSender<Msg>, recycled: &Receiver<Vec<u8>>) {
        loop {
            let mut payload = recycled.try_recv().unwrap_or_default();
            let (msg, last) = match self.load(&mut payload) {
                Ok(Loaded::Block { n, len, at, packed }) => (
                    Msg::Block {
                        payload,
                        n,
                        len,
                        at,
                        packed,
                    },
                    false,
                ),
                Ok(Loaded::End) => (Msg::End, true),
                Err(e) => (Msg::Err(e), true),
            };
            if to_caller.send(msg).is_err() || last {
                return;
            }
        }
    }
}

/// Where the caller's blocks come from.
enum Source<R: Read> {
    /// The block layer on this thread (when no thread could be started).
    Inline(Box<Blocks<std::io::BufReader<Counting<R>>>>),
    /// The block layer on its own thread, fed with the input from this one.
    Threaded(Box<Feeder<R>>),
}

/// The caller's end of the block thread.
struct Feeder<R> {
    input: R,
    /// Input to the block thread; `None` once the input has ended (or failed).
    to_blocks: Option<Sender<Group>>,
    /// Emptied groups back from the block thread.
    returned: Receiver<Group>,
    /// Groups sent and not returned, and returned ones to reuse.
    in_flight: usize,
    spare: Vec<Group>,
    from_blocks: Receiver<Msg>,
    /// Payload buffers back to the block thread.
    recycle: Sender<Vec<u8>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl<R: Read> Feeder<R> {
    /// Reads up to [`PIECES_PER_GROUP`] pieces of the input and sends them to the block thread.
    fn send_group(&mut self) {
        let Some(tx) = &self.to_blocks else {
            return;
        };
        let mut g = self.spare.pop().unwrap_or_default();
        g.data.clear();
        g.reads.clear();
        g.data.reserve(PIECE * PIECES_PER_GROUP);
        let mut ended = false;
        while g.reads.len() < PIECES_PER_GROUP {
            let start = g.data.len();
            g.data.resize(start + PIECE, 0);
            match self.input.read(&mut g.data[start..]) {
                Ok(k) => {
                    g.data.truncate(start + k);
                    g.reads.push(Ok(start + k));
                    if k == 0 {
                        ended = true;
                        break;
                    }
                }
                Err(e) => {
                    g.data.truncate(start);
                    let interrupted = e.kind() == std::io::ErrorKind::Interrupted;
                    g.reads.push(Err(e));
                    if !interrupted {
                        ended = true;
                        break;
                    }
                }
            }
        }
        if tx.send(g).is_ok() {
            self.in_flight += 1;
        }
        if ended {
            self.to_blocks = None;
        }
    }

    fn take_returned(&mut self) {
        while let Ok(g) = self.returned.try_recv() {
            self.in_flight -= 1;
            self.spare.push(g);
        }
    }

    /// Keeps the block thread's input [`GROUPS_AHEAD`] groups ahead.
    fn feed_ahead(&mut self) {
        self.take_returned();
        while self.to_blocks.is_some() && self.in_flight < GROUPS_AHEAD {
            self.send_group();
        }
    }

    /// The block thread's next block (its payload, records, length, offset and compressed
    /// size), `None` at the end marker.
    #[allow(clippy::type_complexity)]
    fn next_block(
        &mut self,
        path: &str,
    ) -> Result<Option<(Vec<u8>, usize, usize, u64, u64)>, TraceError> {
        self.feed_ahead();
        loop {
            match self.from_blocks.recv() {
                Ok(Msg::NeedInput) => {
                    self.take_returned();
                    self.send_group();
                }
                Ok(Msg::Block {
                    payload,
                    n,
                    len,
                    at,
                    packed,
                }) => return Ok(Some((payload, n, len, at, packed))),
                Ok(Msg::End) => return Ok(None),
                Ok(Msg::Err(e)) => return Err(e),
                Err(_) => {
                    return Err(TraceError::Io {
                        path: path.to_owned(),
                        at: Location::Byte(0),
                        source: std::io::Error::other("the trace's block thread stopped"),
                    });
                }
            }
        }
    }
}

impl<R> Drop for Feeder<R> {
    fn drop(&mut self) {
        // Closing both channels makes the block thread stop at its next send or read.
        self.to_blocks = None;
        let (_, rx) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.from_blocks, rx));
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}

/// Streams [`Record`]s out of a native trace. Errors name the byte offset in the decompressed body.
///
/// Decompression runs on a second thread (see the module's documentation); records and errors
/// are those of a single-threaded reader, in the same order.
pub struct NativeReader<R: Read> {
    source: Source<R>,
    path: String,
    /// The current block's payload, its decoding position and state, records left in it.
    payload: Vec<u8>,
    payload_len: usize,
    pos: usize,
    left: usize,
    predict: [u64; 1 + BASES],
    /// Offset of the payload in the decompressed body.
    payload_at: u64,
    /// Records decoded ahead in a tight loop, at the end of `batch`, and the next one to hand
    /// out (`BATCH` when none is left): the iterator's one test is also the bounds check.
    batch: Box<[Record; BATCH]>,
    batch_pos: usize,
    /// An error found while decoding ahead, reported after the records before it.
    pending: Option<TraceError>,
    done: bool,
    /// Which record decoder the blocks use, and the current block's.
    decoder: Decoder,
    branchless: bool,
    /// Compressed and plain sizes of the last blocks (each block's added to half the sums).
    packed: u64,
    plain: u64,
}

/// The record decoders ([`decode_branchy`], [`decode_branchless`]) give the same records and
/// errors; which is faster depends on the stream. With branches, a processor runs ahead on
/// every record its branch predictor guesses right, and loses about as long as a record takes
/// on each it guesses wrong; without, each record waits for the previous one's length. Real
/// programs repeat themselves: their record shapes are learned and the branches win (a QEMU
/// trace of `sort` decodes 1.5x faster with them). Random record shapes (the bench's synthetic
/// stream) are not, and there the branch-free decoder wins. Both kinds of stream show in how
/// well zstd packed them: repeats compress, randomness does not. So a block is decoded without
/// branches when the last blocks took more than a quarter of their size compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decoder {
    /// Chosen per block by compression ratio.
    Auto,
    /// Tests: always one of them.
    #[cfg_attr(not(test), allow(dead_code))]
    Branchy,
    #[cfg_attr(not(test), allow(dead_code))]
    Branchless,
}

/// [`Decoder::Auto`] picks [`decode_branchless`] when the compressed size times this exceeds
/// the plain size.
const BRANCHLESS_RATIO: u64 = 4;

/// Records decoded per batch (small enough to stay in the L1 cache).
pub(super) const BATCH: usize = 256;

impl<R: Read> std::fmt::Debug for NativeReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<R: Read> NativeReader<R> {
    /// Checks the header of `input` (the whole file) and prepares to decode.
    pub fn new(input: R, path: &str) -> Result<NativeReader<R>, TraceError> {
        Self::open(input, path, true)
    }

    /// [`NativeReader::new`], with the block layer on the caller's thread unless `threaded`.
    fn open(mut input: R, path: &str, threaded: bool) -> Result<NativeReader<R>, TraceError> {
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
        let two_cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) > 1;
        let source = match Self::threaded(input, path, threaded && two_cpus) {
            Ok(source) => source?,
            Err(input) => Self::inline(input, path)?,
        };
        Ok(NativeReader {
            source,
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
            batch_pos: BATCH,
            pending: None,
            done: false,
            decoder: Decoder::Auto,
            branchless: false,
            packed: 0,
            plain: 0,
        })
    }

    /// The reader with its record decoder fixed (tests: each decoder on every input).
    #[cfg(test)]
    fn with_decoder(mut self, decoder: Decoder) -> Self {
        self.decoder = decoder;
        self
    }

    fn decoder<B: Compressed>(
        input: B,
        path: &str,
    ) -> Result<zstd::Decoder<'static, B>, TraceError> {
        Ok(zstd::Decoder::with_buffer(input)
            .map_err(|source| TraceError::Io {
                path: path.to_owned(),
                at: Location::Byte(NATIVE_HEADER_BYTES as u64),
                source,
            })?
            .single_frame())
    }

    fn inline(input: R, path: &str) -> Result<Source<R>, TraceError> {
        let file = Counting {
            inner: input,
            pos: NATIVE_HEADER_BYTES as u64,
        };
        let dec = Self::decoder(std::io::BufReader::with_capacity(PIECE, file), path)?;
        Ok(Source::Inline(Box::new(Blocks {
            body: Counting { inner: dec, pos: 0 },
            path: path.to_owned(),
            total: 0,
            consumed: NATIVE_HEADER_BYTES as u64,
        })))
    }

    /// The block layer on its own thread; `Err(input)` if the thread cannot start (or is not
    /// `wanted`).
    fn threaded(input: R, path: &str, wanted: bool) -> Result<Result<Source<R>, TraceError>, R> {
        if !wanted {
            return Err(input);
        }
        let (to_blocks, from_caller) = std::sync::mpsc::channel();
        let (give_back, returned) = std::sync::mpsc::channel();
        let (to_caller, from_blocks) = std::sync::mpsc::sync_channel(BLOCKS_AHEAD);
        let (recycle, recycled) = std::sync::mpsc::channel();
        let piped = Piped {
            from_caller,
            give_back,
            need: to_caller.clone(),
            group: Group::default(),
            next: 0,
            start: 0,
            end: 0,
            pos: NATIVE_HEADER_BYTES as u64,
            closed: false,
        };
        let dec = match Self::decoder(piped, path) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let blocks = Blocks {
            body: Counting { inner: dec, pos: 0 },
            path: path.to_owned(),
            total: 0,
            consumed: NATIVE_HEADER_BYTES as u64,
        };
        let worker = std::thread::Builder::new()
            .name("ctrace-reader".into())
            .spawn(move || blocks.run(&to_caller, &recycled));
        match worker {
            Ok(h) => Ok(Ok(Source::Threaded(Box::new(Feeder {
                input,
                to_blocks: Some(to_blocks),
                returned,
                in_flight: 0,
                spare: Vec::new(),
                from_blocks,
                recycle,
                worker: Some(h),
            })))),
            Err(_) => Err(input),
        }
    }

    /// Loads the next block; `Ok(false)` at the end marker.
    fn load_block(&mut self) -> Result<bool, TraceError> {
        if self.pos != self.payload_len {
            let bytes = &self.payload[self.pos.min(self.payload_len)..self.payload_len];
            return Err(corrupt(
                &self.path,
                self.payload_at + self.pos as u64,
                "Block has bytes after its last record",
                bytes,
            ));
        }
        let (n, len, at, packed) = match &mut self.source {
            Source::Inline(blocks) => match blocks.load(&mut self.payload)? {
                Loaded::Block { n, len, at, packed } => (n, len, at, packed),
                Loaded::End => return Ok(false),
            },
            Source::Threaded(feeder) => match feeder.next_block(&self.path)? {
                Some((payload, n, len, at, packed)) => {
                    let old = std::mem::replace(&mut self.payload, payload);
                    if old.capacity() > 0 {
                        let _ = feeder.recycle.send(old);
                    }
                    (n, len, at, packed)
                }
                None => return Ok(false),
            },
        };
        // Compressed and plain sizes of the last blocks, older ones weighing less.
        self.packed = self.packed / 2 + packed;
        self.plain = self.plain / 2 + len as u64;
        self.branchless = match self.decoder {
            Decoder::Auto => self.packed * BRANCHLESS_RATIO > self.plain,
            Decoder::Branchy => false,
            Decoder::Branchless => true,
        };
        self.payload_len = len;
        self.payload_at = at;
        self.left = n;
        self.pos = 0;
        self.predict = [0; 1 + BASES];
        Ok(true)
    }

    fn fail<T>(&mut self, e: TraceError) -> Option<Result<T, TraceError>> {
        self.done = true;
        self.left = 0;
        Some(Err(e))
    }

    /// Refills the used-up batch: the pending error, the next records of this block or the
    /// next block, or the end (`None`). An error ends the stream. Shared by the iterator and
    /// [`Self::next_batch`]; runs once per batch, so kept out of their inlined fast path.
    #[inline(never)]
    fn advance(&mut self) -> Option<Result<(), TraceError>> {
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
        Some(Ok(()))
    }

    /// The next records as a slice (up to 256 at a time), `None` at the end: the same stream as
    /// the iterator, without its per-record overhead, for consumers that take batches.
    pub fn next_batch(&mut self) -> Option<Result<&[Record], TraceError>> {
        let start = loop {
            if self.batch_pos < BATCH {
                let start = self.batch_pos;
                self.batch_pos = BATCH;
                break start;
            }
            if let Err(e) = self.advance()? {
                return Some(Err(e));
            }
        };
        Some(Ok(&self.batch[start..]))
    }

    /// Decodes up to [`BATCH`] records of the current block into the end of the batch.
    fn refill(&mut self) {
        let n = self.left.min(BATCH);
        let base = self.pos;
        let len = self.payload_len;
        // The batch's records are in the window from `base` (WINDOW is larger than what they
        // span), and the window in the payload (PAD is larger than it).
        let win = self
            .payload
            .get(base..base + WINDOW + 16)
            .and_then(|w| <&Window>::try_from(w).ok());
        let mut st = self.predict;
        let slots = &mut self.batch[BATCH - n..];
        let (k, pos, failed) = match win {
            Some(win) if self.branchless => {
                decode_batch(win, len - base, slots, &mut st, decode_branchless)
            }
            Some(win) => decode_batch(win, len - base, slots, &mut st, decode_branchy),
            None => (0, 0, Some("Block ends in the middle of a record")),
        };
        let pos = base + pos;
        if let Some(reason) = failed {
            let bytes = &self.payload[pos.min(len)..len];
            self.pending = Some(corrupt(
                &self.path,
                self.payload_at + pos as u64,
                reason,
                bytes,
            ));
        }
        self.left = if self.pending.is_some() {
            0
        } else {
            self.left - n
        };
        if k < n {
            // Stopped by an error: the records before it move to the end.
            self.batch.copy_within(BATCH - n..BATCH - n + k, BATCH - k);
        }
        self.pos = pos;
        self.predict = st;
        self.batch_pos = BATCH - k;
    }
}

/// Decodes records into `slots` with `decode` from position 0 of `win` (`len` bytes of
/// payload): how many it decoded, the position after them, and the error that stopped it.
#[inline(always)]
fn decode_batch<F>(
    win: &Window,
    len: usize,
    slots: &mut [Record],
    st: &mut [u64; 1 + BASES],
    decode: F,
) -> (usize, usize, Option<&'static str>)
where
    F: Fn(&Window, usize, usize, &mut [u64; 1 + BASES], &mut Record) -> Result<usize, &'static str>,
{
    let mut pos = 0;
    let n = slots.len();
    for (k, slot) in slots.iter_mut().enumerate() {
        match decode(win, len, pos, st, slot) {
            Ok(q) => pos = q,
            Err(reason) => return (k, pos, Some(reason)),
        }
    }
    (n, pos, None)
}

impl<R: Read> Iterator for NativeReader<R> {
    type Item = Result<Record, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(&r) = self.batch.get(self.batch_pos) {
                self.batch_pos += 1;
                return Some(Ok(r));
            }
            if let Err(e) = self.advance()? {
                return Some(Err(e));
            }
        }
    }
}

impl<R: Read + Send> RecordSource for NativeReader<R> {
    fn skipped(&self) -> u64 {
        0
    }

    /// As the default (the ops of the records [`Iterator::next`] gives), a batch of decoded
    /// records at a time: the simulator's path.
    fn read_ops(&mut self, out: &mut Vec<Op>, max: usize) -> (usize, Option<TraceError>) {
        let mut n = 0;
        while n < max {
            if self.batch_pos == BATCH {
                match self.advance() {
                    Some(Ok(())) => continue,
                    Some(Err(e)) => return (n, Some(e)),
                    None => return (n, None),
                }
            }
            let take = (BATCH - self.batch_pos).min(max - n);
            let records = &self.batch[self.batch_pos..self.batch_pos + take];
            out.reserve(2 * take);
            for r in records {
                let (a, b) = r.ops();
                out.push(a);
                out.extend(b);
            }
            self.batch_pos += take;
            n += take;
        }
        (max, None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::oracle::OracleReader;
    use super::*;
    use crate::RecordSink;
    use crate::native::NativeWriter;
    use proptest::prelude::*;

    /// An input that returns reads of the given sizes in turn, an `Interrupted` error every so
    /// often, and an error for good once `fail_at` bytes are read.
    #[derive(Clone)]
    struct Chunky {
        data: std::sync::Arc<Vec<u8>>,
        pos: usize,
        sizes: Vec<usize>,
        calls: usize,
        interrupt_every: usize,
        fail_at: Option<usize>,
    }

    impl Read for Chunky {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.interrupt_every > 0 && self.calls.is_multiple_of(self.interrupt_every) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            if self.fail_at.is_some_and(|f| self.pos >= f) {
                return Err(std::io::Error::other("disk on fire"));
            }
            let size = self.sizes[self.calls % self.sizes.len()].max(1);
            let end = (self.pos + size.min(buf.len())).min(self.data.len());
            let end = self.fail_at.map_or(end, |f| end.min(f.max(self.pos)));
            let n = end - self.pos;
            buf[..n].copy_from_slice(&self.data[self.pos..end]);
            self.pos = end;
            Ok(n)
        }
    }

    /// Everything a reader yields, errors as their full debug text.
    fn items<I: Iterator<Item = Result<Record, TraceError>>>(r: I) -> Vec<Result<Record, String>> {
        r.map(|x| x.map_err(|e| format!("{e} / {e:?}"))).collect()
    }

    fn batches<F>(mut next: F) -> Vec<Result<Vec<Record>, String>>
    where
        F: FnMut() -> Option<Result<Vec<Record>, TraceError>>,
    {
        std::iter::from_fn(|| next().map(|b| b.map_err(|e| format!("{e} / {e:?}")))).collect()
    }

    /// The new reader (its block layer on a second thread, or inline) and main's give the same
    /// records, errors and positions, through the iterator and through batches.
    fn same_as_oracle(input: &Chunky) -> Result<(), TestCaseError> {
        let old = OracleReader::new(input.clone(), "p.ctrace").map(items);
        let old_batches = OracleReader::new(input.clone(), "p.ctrace")
            .ok()
            .map(|mut b| batches(|| b.next_batch().map(|r| r.map(<[Record]>::to_vec))));
        let modes = [
            (true, Decoder::Auto),
            (false, Decoder::Auto),
            (true, Decoder::Branchy),
            (false, Decoder::Branchless),
        ];
        for (threaded, decoder) in modes {
            let open = || {
                NativeReader::open(input.clone(), "p.ctrace", threaded)
                    .map(|r| r.with_decoder(decoder))
            };
            let new = open().map(items);
            match (&new, &old) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "threaded {} {:?}", threaded, decoder),
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                _ => prop_assert!(
                    false,
                    "one opened, one failed: {:?} {:?}",
                    new.is_ok(),
                    old.is_ok()
                ),
            }
            let new_batches = open()
                .ok()
                .map(|mut a| batches(|| a.next_batch().map(|r| r.map(<[Record]>::to_vec))));
            prop_assert_eq!(
                &new_batches,
                &old_batches,
                "threaded {} {:?}",
                threaded,
                decoder
            );
        }
        Ok(())
    }

    fn encode(recs: &[Record]) -> Vec<u8> {
        let mut w = NativeWriter::new(Vec::new()).unwrap();
        for r in recs {
            w.write_record(r).unwrap();
        }
        w.finish().unwrap()
    }

    /// `n` records from `seed`: runs of nearby addresses and far jumps, all kinds and sizes.
    fn records(seed: u64, n: usize) -> Vec<Record> {
        let mut x = seed | 1;
        let mut ip = 0x40_0000u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let kind = RecordKind::ALL[(x % 4) as usize];
                let addr = match (x >> 8) % 8 {
                    0 => x.rotate_left(17),
                    1..=4 => {
                        ip += (x >> 20) % 8;
                        ip
                    }
                    _ => 0x7fff_0000 + (x >> 24) % 512,
                };
                let size = [1, 2, 4, 8, 3, 64, 100, 4096][((x >> 32) % 8) as usize];
                Record::new(kind, addr, size)
            })
            .collect()
    }

    /// How an input is damaged.
    #[derive(Clone, Debug)]
    enum Damage {
        None,
        /// Bytes of the decompressed body replaced (then compressed again).
        Body(Vec<(prop::sample::Index, u8)>),
        /// Bytes of the file replaced.
        File(Vec<(prop::sample::Index, u8)>),
        /// The file cut.
        Cut(prop::sample::Index),
        /// Bytes appended to the file.
        Tail(Vec<u8>),
        /// A body of random bytes in a valid zstd frame.
        Random(Vec<u8>),
        /// One block of random payload bytes (its record count fitting its length), then a
        /// valid end marker: the record decoder on anything.
        Payload(prop::sample::Index, Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        let flips = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6);
        prop_oneof![
            Just(Damage::None),
            flips.clone().prop_map(Damage::Body),
            flips.prop_map(Damage::File),
            any::<prop::sample::Index>().prop_map(Damage::Cut),
            prop::collection::vec(any::<u8>(), 1..40).prop_map(Damage::Tail),
            prop::collection::vec(any::<u8>(), 0..600).prop_map(Damage::Random),
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(
                    prop_oneof![any::<u8>(), Just(0x80u8), Just(0xffu8), Just(0u8)],
                    1..300
                )
            )
                .prop_map(|(n, p)| Damage::Payload(n, p)),
        ]
    }

    fn damaged(file: &[u8], d: &Damage) -> Vec<u8> {
        let mut f = file.to_vec();
        match d {
            Damage::None => {}
            Damage::Body(flips) => {
                let mut body = zstd::decode_all(&file[NATIVE_HEADER_BYTES..]).unwrap();
                for (i, b) in flips {
                    let i = i.index(body.len());
                    body[i] = *b;
                }
                f.truncate(NATIVE_HEADER_BYTES);
                f.extend(zstd::encode_all(&body[..], 1).unwrap());
            }
            Damage::File(flips) => {
                for (i, b) in flips {
                    let i = i.index(f.len());
                    f[i] = *b;
                }
            }
            Damage::Cut(at) => f.truncate(at.index(f.len() + 1)),
            Damage::Tail(t) => f.extend_from_slice(t),
            Damage::Random(body) => {
                f.truncate(NATIVE_HEADER_BYTES);
                f.extend(zstd::encode_all(&body[..], 1).unwrap());
            }
            Damage::Payload(n, payload) => {
                let len = payload.len();
                let n = (1 + n.index(len)).max(len.div_ceil(16)) as u64;
                let mut body = Vec::new();
                super::super::put_varint(&mut body, n);
                super::super::put_varint(&mut body, len as u64);
                body.extend_from_slice(payload);
                body.push(0);
                super::super::put_varint(&mut body, n);
                f.truncate(NATIVE_HEADER_BYTES);
                f.extend(zstd::encode_all(&body[..], 1).unwrap());
            }
        }
        f
    }

    fn input(
        data: Vec<u8>,
        sizes: Vec<usize>,
        interrupt_every: usize,
        fail: Option<prop::sample::Index>,
    ) -> Chunky {
        let fail_at = fail.map(|i| i.index(data.len() + 1));
        Chunky {
            data: std::sync::Arc::new(data),
            pos: 0,
            sizes,
            calls: 0,
            interrupt_every,
            fail_at,
        }
    }

    fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
        prop_oneof![
            Just(vec![usize::MAX]),
            prop::collection::vec(1usize..20_000, 1..5),
            prop::collection::vec(1usize..40, 1..5),
        ]
    }

    proptest! {
        /// Small traces (one block), damaged in every way, read in any pieces, with interrupted
        /// and failing reads.
        #[test]
        fn small_traces_read_as_mains_reader(
            seed in any::<u64>(),
            n in 0usize..2000,
            d in damage(),
            sizes in read_sizes(),
            interrupt_every in prop_oneof![Just(0usize), 2usize..9],
            fail in proptest::option::weighted(0.15, any::<prop::sample::Index>()),
        ) {
            let file = damaged(&encode(&records(seed, n)), &d);
            same_as_oracle(&input(file, sizes, interrupt_every, fail))?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Traces of several blocks, some of them larger compressed than what is sent ahead
        /// (the block thread then asks for input), damaged and read in any pieces.
        #[test]
        fn large_traces_read_as_mains_reader(
            seed in any::<u64>(),
            blocks in 1usize..4,
            d in damage(),
            sizes in read_sizes(),
            fail in proptest::option::weighted(0.2, any::<prop::sample::Index>()),
        ) {
            let n = blocks * BLOCK_RECORDS as usize + (seed % 1000) as usize;
            let file = damaged(&encode(&records(seed, n)), &d);
            same_as_oracle(&input(file, sizes, 0, fail))?;
        }
    }

    proptest! {
        /// `read_ops` in batches of any size gives the ops of the iterator's records, up to the
        /// same error, on damaged traces too.
        #[test]
        fn read_ops_are_the_ops_of_the_records(
            seed in any::<u64>(),
            n in 0usize..1500,
            d in damage(),
            sizes in prop::collection::vec(1usize..600, 1..4),
        ) {
            let file = damaged(&encode(&records(seed, n)), &d);
            let Ok(r) = NativeReader::new(&file[..], "p.ctrace") else {
                return Ok(());
            };
            let (mut want, mut want_err) = (Vec::new(), None);
            for x in r {
                match x {
                    Ok(rec) => {
                        let (a, b) = rec.ops();
                        want.push(a);
                        want.extend(b);
                    }
                    Err(e) => {
                        want_err = Some(format!("{e} / {e:?}"));
                        break;
                    }
                }
            }
            let mut r = NativeReader::new(&file[..], "p.ctrace").unwrap();
            let (mut got, mut got_err) = (Vec::new(), None);
            for &max in sizes.iter().cycle() {
                let (k, e) = r.read_ops(&mut got, max);
                prop_assert!(k <= max);
                if let Some(e) = e {
                    got_err = Some(format!("{e} / {e:?}"));
                    break;
                }
                if k < max {
                    break;
                }
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(got_err, want_err);
        }
    }

    /// The decoder follows how well zstd packed the blocks: branch-free on random record shapes
    /// (the bench's synthetic stream), with branches on a loop's repeated shapes.
    #[test]
    fn auto_decoder_follows_the_compression_ratio() {
        let n = 3 * BLOCK_RECORDS as usize;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut ip = 0x40_1000u64;
        let random: Vec<Record> = (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 2 == 0 {
                    let size = 1 + (x % 7) as u32;
                    ip += u64::from(size);
                    Record::new(RecordKind::Instr, ip, size)
                } else {
                    Record::new(RecordKind::Load, 0x7f00_0000 + (x % 4096) * 8, 8)
                }
            })
            .collect();
        let looped: Vec<Record> = (0..n as u64)
            .map(|i| match i % 4 {
                0 => Record::new(RecordKind::Instr, 0x40_1000 + (i % 40), 3),
                1 => Record::new(RecordKind::Load, 0x7f00_0000 + (i % 400) * 8, 8),
                2 => Record::new(RecordKind::Instr, 0x40_2000, 5),
                _ => Record::new(RecordKind::Store, 0x60_0000, 4),
            })
            .collect();
        for (recs, want) in [(random, true), (looped, false)] {
            let file = encode(&recs);
            for threaded in [true, false] {
                let mut r = NativeReader::open(&file[..], "t", threaded).unwrap();
                let mut got = Vec::new();
                while let Some(b) = r.next_batch() {
                    assert!(b.is_ok());
                    got.push(r.branchless);
                }
                // From the second block on (the first one's size includes the frame's start).
                let from = BLOCK_RECORDS as usize / BATCH;
                assert!(got[from..].iter().all(|&b| b == want), "{want} {threaded}");
            }
        }
    }

    /// A reader dropped early (its block thread waiting to send) neither hangs nor panics.
    #[test]
    fn dropped_early() {
        let file = encode(&records(7, 3 * BLOCK_RECORDS as usize));
        let mut r = NativeReader::new(&file[..], "t").unwrap();
        assert!(r.next().unwrap().is_ok());
        drop(r);
        let r = NativeReader::new(&file[..], "t").unwrap();
        drop(r);
    }
}
