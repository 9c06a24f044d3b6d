//! The data-cache hierarchy: L1D, L2, LLC, then DRAM.
//!
//! Physically indexed, physically tagged; each level is a set-associative array of line numbers
//! (`hPA >> log2(line)`, set = line number modulo the number of sets) with true LRU. The hierarchy
//! is non-inclusive and write-allocate: an access (a load, a store, or a page-walk read of a
//! table entry) is looked up level by level; the first level that has the line serves it (its
//! load-to-use latency is the access's latency, and the line becomes most recently used there) and
//! the line is filled into every level above it. Levels below the one that hit are not touched, as
//! in hardware where an L1 hit never reaches the L2. Stores are timed as loads (no write-back
//! traffic is modelled). A level of size 0 is absent. Page-table entries and data compete for the
//! same lines, which is the point: a scheme whose walks touch more entries evicts more data.
//!
//! Consequence worth knowing (tested in `non_inclusive_anomaly`): because a hit in an upper level
//! does not refresh the line's recency below, *removing an upper level can lower the total
//! latency* of a stream (the level below then sees every access and keeps better recency). Removing
//! the last levels (LLC, or L2 and LLC, or all) never lowers it, and adding ways to a level never
//! gives that level more misses; both are property-tested.
//!
//! Layout (speed only, no result depends on it): a level is one flat array of `u64` words
//! ([`LineSets`]), its sets one after the other, in one of two layouts chosen by the size of the
//! level. A line needs no value and no last-use stamp, so a line costs 8 bytes and an access reads
//! and rewrites one short run of memory.
//!
//! - *Ordered* sets (the small levels, whose sets stay in the host's caches, and sets of more than
//!   16 ways): a set's ways are its line numbers kept in recency order, most recently used first.
//!   Lookup, LRU update and fill are one move-to-front pass over the set that stops at the hit
//!   ([`LineSets::touch`]). Move-to-front order is true LRU: the last way is the least recently
//!   used one, and empty ways (never used) sit after every used one.
//! - *Signed* sets (levels of at most 16 ways whose line numbers take more than
//!   [`SIGNED_MIN_TAG_BYTES`], such as Skylake-SP's 38.5 MiB, 11-way LLC: its 57,344 sets are read
//!   at random and miss the host's caches): a set is one block, its signature words (a byte per
//!   way, a hash of the way's line, 8 a word), its recency word (way numbers in nibbles, most
//!   recently used first, empty ways last), then its line numbers, which stay in their ways. A
//!   lookup compares 8 signatures at once (SWAR on a `u64`) and checks the candidates' line
//!   numbers; a hit moves a nibble in the recency word, a miss writes the least recently used way
//!   (the recency word's last nibble: an empty way while there is one), its signature and the
//!   recency word. A miss reads the block's first 16-24 bytes and writes one line number, where a
//!   move-to-front pass reads and rewrites the whole set (88 bytes for 11 ways). The same true LRU.

use crate::config::{CacheConfig, CacheLevel};
use compromis_types::{Address, Hpa};
use compromis_vmem::huge::HugeWords;
use serde::{Deserialize, Serialize};
use strength_reduce::StrengthReducedU64;

/// Where an access was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    /// First-level data cache.
    L1,
    /// Second-level cache.
    L2,
    /// Last-level cache.
    Llc,
    /// Main memory.
    Dram,
}

impl Level {
    /// Every level, nearest first.
    pub const ALL: [Level; 4] = [Level::L1, Level::L2, Level::Llc, Level::Dram];
    /// Column name.
    pub const fn name(self) -> &'static str {
        match self {
            Level::L1 => "l1d",
            Level::L2 => "l2",
            Level::Llc => "llc",
            Level::Dram => "dram",
        }
    }
}

/// Counters of a [`DataCaches`]: where accesses were served and the latency they cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Accesses served.
    pub accesses: u64,
    /// Served by the L1D.
    pub l1_hits: u64,
    /// Served by the L2.
    pub l2_hits: u64,
    /// Served by the LLC.
    pub llc_hits: u64,
    /// Missed every level (served by DRAM).
    pub misses: u64,
    /// Sum of the latencies returned, in cycles.
    pub cycles: u64,
}

impl CacheStats {
    /// Accesses served by `level`.
    pub fn hits(&self, level: Level) -> u64 {
        match level {
            Level::L1 => self.l1_hits,
            Level::L2 => self.l2_hits,
            Level::Llc => self.llc_hits,
            Level::Dram => self.misses,
        }
    }
    /// Accesses that looked past `level`: served by a level below it (`Dram`: 0).
    pub fn misses_at(&self, level: Level) -> u64 {
        Level::ALL
            .iter()
            .filter(|&&l| l > level)
            .map(|&l| self.hits(l))
            .sum()
    }
    /// Counters accumulated since `earlier` (a snapshot of the same caches).
    pub fn since(&self, earlier: &CacheStats) -> CacheStats {
        CacheStats {
            accesses: self.accesses - earlier.accesses,
            l1_hits: self.l1_hits - earlier.l1_hits,
            l2_hits: self.l2_hits - earlier.l2_hits,
            llc_hits: self.llc_hits - earlier.llc_hits,
            misses: self.misses - earlier.misses,
            cycles: self.cycles - earlier.cycles,
        }
    }
}

/// An unused way. Line numbers are below 2^58 (an address shifted right by at least one bit would
/// do), so no line has this number.
const EMPTY: u64 = u64::MAX;

/// Sets of at most this many ways keep a signature byte per way and a recency word (see
/// [`LineSets`]); larger sets keep their line numbers in recency order.
const SIGNED_WAYS: usize = 16;

/// A one in every byte.
const BYTE_ONES: u64 = 0x0101_0101_0101_0101;
/// The low seven bits of every byte.
const BYTE_LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
/// The high bit of every byte.
const BYTE_HIGH: u64 = 0x8080_8080_8080_8080;
/// A one in the low bit of every nibble.
const NIBBLE_ONES: u64 = 0x1111_1111_1111_1111;

/// The signature of `line` (below 256): the top byte of a multiplicative hash, so lines of one
/// set (which share their low bits when the set count is a power of two) differ in it.
#[inline(always)]
fn signature(line: u64) -> u64 {
    line.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56
}

/// The high bit of every zero byte of `x`, and no other bit (exact: no carry crosses a byte).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & BYTE_LOW7) + BYTE_LOW7) | x) & BYTE_HIGH
}

/// Signature words of a signed set of `ways` ways (8 signatures a word).
#[inline(always)]
const fn signature_words(ways: usize) -> usize {
    ways.div_ceil(8)
}

/// The high bit of each byte of signature word `j` that belongs to a way of a set of `ways`.
#[inline(always)]
const fn signature_mask(ways: usize, j: usize) -> u64 {
    let n = ways - 8 * j;
    if n >= 8 {
        BYTE_HIGH
    } else {
        BYTE_HIGH & ((1u64 << (8 * n)) - 1)
    }
}

/// The first `ways` nibbles of a word (`ways` at most 16).
#[inline(always)]
const fn nibbles(ways: usize) -> u64 {
    if ways >= 16 {
        u64::MAX
    } else {
        (1u64 << (4 * ways)) - 1
    }
}

/// The recency order of an empty set of `ways` ways: ways `ways - 1` down to 0 from the most
/// recent (nibble 0) to the least (nibble `ways - 1`). A fill takes the last nibble's way and puts
/// it first, so the used ways stay first, by recency, and the empty ways after them.
fn empty_order(ways: usize) -> u64 {
    (0..ways).fold(0, |o, p| o | (((ways - 1 - p) as u64) << (4 * p)))
}

/// The position (0 = most recent) of way `w` in `order`, whose nibbles `valid` marks (one bit
/// each): the nibble equal to `w`, found without a loop (as `setassoc.rs` does for TLB sets).
#[inline(always)]
fn position(order: u64, valid: u64, w: usize) -> u32 {
    let x = order ^ (w as u64).wrapping_mul(NIBBLE_ONES);
    // Bit 4p is set when nibble p differs from `w`.
    let differs = (x | x >> 1 | x >> 2 | x >> 3) & NIBBLE_ONES;
    (!differs & valid).trailing_zeros() / 4
}

/// `order` with the way `w` at position `p` moved to the front (most recent), the ways before it
/// one place back.
#[inline(always)]
fn to_front(order: u64, p: u32, w: usize) -> u64 {
    let shift = 4 * p;
    let before = order & ((1u64 << shift) - 1);
    let after = ((order >> shift) >> 4) << 4 << shift;
    after | (before << 4) | w as u64
}

/// Makes `line` the first (most recently used) line of `set`, the lines before it one way back;
/// if `set` did not hold it, its last line falls out. Returns whether it was held.
#[inline(always)]
fn move_to_front(set: &mut [u64], line: u64) -> bool {
    if set.first() == Some(&line) {
        return true;
    }
    let mut carry = line;
    for way in set.iter_mut() {
        let held = std::mem::replace(way, carry);
        if held == line {
            return true;
        }
        carry = held;
    }
    false
}

/// [`LineSets::touch`] of a signed set of `ways` ways (a constant where inlined with one): its
/// `head` (signature words, then the recency word) and its line numbers `tags`. The ways whose
/// signature byte is `line`'s are found by a SWAR compare of 8 bytes at once and checked by their
/// line number (about one false candidate in 256 per way); a hit moves its way's nibble to the
/// front of the order (no change when it is first already). A miss writes the line and its
/// signature into the order's last way (the least recently used, or an empty one) and puts that
/// way first. A miss reads only the head and writes one line number.
#[inline(always)]
fn touch_signed(head: &mut [u64], tags: &mut [u64], line: u64, ways: usize) -> bool {
    let Some((order_word, sigs)) = head.split_last_mut() else {
        unreachable!("a head has a recency word")
    };
    let order = *order_word;
    let sig = signature(line);
    let pattern = sig.wrapping_mul(BYTE_ONES);
    for (j, &s) in sigs.iter().enumerate() {
        let mut candidates = zero_bytes(s ^ pattern) & signature_mask(ways, j);
        while candidates != 0 {
            let w = 8 * j + (candidates.trailing_zeros() / 8) as usize;
            if tags[w] == line {
                let p = position(order, NIBBLE_ONES & nibbles(ways), w);
                *order_word = to_front(order, p, w);
                return true;
            }
            candidates &= candidates - 1;
        }
    }
    // The last valid nibble (those after it are 0); below 16.
    #[allow(clippy::cast_possible_truncation)]
    let victim = (order >> (4 * (ways - 1))) as usize;
    tags[victim] = line;
    let shift = 8 * (victim % 8);
    let s = &mut sigs[victim / 8];
    *s = (*s & !(0xff << shift)) | (sig << shift);
    *order_word = ((order << 4) & nibbles(ways)) | victim as u64;
    false
}

/// How a level's sets are laid out and looked up (chosen at construction: one jump per access
/// and level, taken the same way every time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// No sets: never hits.
    Absent,
    /// Line numbers in recency order, move to front, `N` ways known at compile time.
    Ordered8,
    Ordered11,
    Ordered12,
    Ordered16,
    /// Signed blocks ([`touch_signed`]), `N` ways known at compile time.
    Signed8,
    Signed11,
    Signed12,
    Signed16,
    /// Either layout, any number of ways (out of line).
    Any,
}

/// One cache level's tags: `sets` sets of `ways` line numbers with true LRU. A level with no sets
/// is absent: it never hits and holds nothing. Two layouts, chosen at construction:
///
/// - *ordered*: a set is its `ways` line numbers in recency order (most recently used first,
///   `EMPTY` ways last); an access is one move-to-front pass that stops at the hit.
/// - *signed* (at most `SIGNED_WAYS` ways): a set is one block of words, its signature words
///   (one byte per way, `signature` of the way's line, 8 a word), its recency word (way
///   numbers in nibbles, most recently used first, empty ways last, see `empty_order`), then
///   its `ways` line numbers, which stay in their ways (`touch_signed`).
#[derive(Clone, Debug)]
pub struct LineSets {
    /// `sets` blocks of `stride` words, set by set (huge pages where the kernel gives them: the
    /// LLC's blocks are megabytes read at random).
    words: HugeWords,
    ways: usize,
    /// Words per set: `head + ways`.
    stride: usize,
    /// Words before a set's line numbers: its signature words and its recency word (signed), or
    /// none (ordered).
    head: usize,
    pass: Pass,
    /// Line number -> set: `line % sets` by multiplications instead of a 64-bit `div`
    /// (14-90 cycles depending on the host; the LLC's 57,344 sets are not a power of two), a
    /// mask when `sets` is a power of two (the L1D's and L2's).
    index: StrengthReducedU64,
}

impl LineSets {
    /// `lines` lines in sets of `ways`, signed if `signed` and `ways` is at most 16, else
    /// ordered; absent when `lines` or `ways` is 0 or `ways` does not
    /// divide `lines` (a validated configuration has none of these but size 0).
    pub fn new(lines: usize, ways: usize, signed: bool) -> LineSets {
        if lines == 0 || ways == 0 || !lines.is_multiple_of(ways) {
            return LineSets::absent();
        }
        let sets = lines / ways;
        let signed = signed && ways <= SIGNED_WAYS;
        let head = if signed { signature_words(ways) + 1 } else { 0 };
        let pass = match (signed, ways) {
            (false, 8) => Pass::Ordered8,
            (false, 11) => Pass::Ordered11,
            (false, 12) => Pass::Ordered12,
            (false, 16) => Pass::Ordered16,
            (true, 8) => Pass::Signed8,
            (true, 11) => Pass::Signed11,
            (true, 12) => Pass::Signed12,
            (true, 16) => Pass::Signed16,
            _ => Pass::Any,
        };
        let stride = head + ways;
        let mut l = LineSets {
            words: HugeWords::new(sets * stride, EMPTY),
            ways,
            stride,
            head,
            pass,
            index: StrengthReducedU64::new(sets as u64),
        };
        l.empty_heads();
        l
    }

    /// A level that never hits.
    pub fn absent() -> LineSets {
        LineSets {
            words: HugeWords::new(0, EMPTY),
            ways: 0,
            stride: 0,
            head: 0,
            pass: Pass::Absent,
            index: StrengthReducedU64::new(1),
        }
    }

    /// Whether the sets are signed blocks.
    pub fn is_signed(&self) -> bool {
        self.head != 0
    }

    /// The first word of `line`'s set, whose block is `stride` words.
    #[inline(always)]
    fn set_start(&self, line: u64, stride: usize) -> usize {
        // The set index is below `sets`, which came from a usize.
        #[allow(clippy::cast_possible_truncation)]
        let set = (line % self.index) as usize;
        set * stride
    }

    /// Looks `line` up and makes it the most recently used line of its set; on a miss, fills it
    /// there and drops the set's least recently used line (or an empty way). Returns whether it
    /// hit.
    #[inline(always)]
    pub fn touch(&mut self, line: u64) -> bool {
        // The presets' associativities with their way count known at compile time: the passes
        // unroll, and a signed block's shape, masks and shifts are constants.
        match self.pass {
            Pass::Absent => false,
            Pass::Ordered8 => self.touch_ordered::<8>(line),
            Pass::Ordered11 => self.touch_ordered::<11>(line),
            Pass::Ordered12 => self.touch_ordered::<12>(line),
            Pass::Ordered16 => self.touch_ordered::<16>(line),
            Pass::Signed8 => self.touch_signed_fixed::<8, 2>(line),
            Pass::Signed11 => self.touch_signed_fixed::<11, 3>(line),
            Pass::Signed12 => self.touch_signed_fixed::<12, 3>(line),
            Pass::Signed16 => self.touch_signed_fixed::<16, 3>(line),
            Pass::Any => self.touch_any(line),
        }
    }

    /// [`LineSets::touch`] of an ordered set of `N` ways: one pass, each way, from the most
    /// recent, takes the line of the way before it, until the way that held `line` (a hit) or
    /// past the last way (a miss: the last line falls out).
    #[inline(always)]
    fn touch_ordered<const N: usize>(&mut self, line: u64) -> bool {
        let start = self.set_start(line, N);
        let Some(set) = self.words[start..].first_chunk_mut::<N>() else {
            unreachable!("a set of {N} ways")
        };
        move_to_front(set, line)
    }

    /// [`LineSets::touch`] of a signed set of `N` ways and a head of `H` words.
    #[inline(always)]
    fn touch_signed_fixed<const N: usize, const H: usize>(&mut self, line: u64) -> bool {
        debug_assert_eq!(H, signature_words(N) + 1);
        let start = self.set_start(line, H + N);
        let Some((head, rest)) = self.words[start..].split_first_chunk_mut::<H>() else {
            unreachable!("a head of {H} words")
        };
        let Some(tags) = rest.first_chunk_mut::<N>() else {
            unreachable!("a set of {N} ways")
        };
        // The block's other host lines (64 bytes: 8 words), asked for before the head is read: a
        // hit reads a line number, a miss writes one, and neither is known before the head is.
        let mut i = 7;
        while i < H + N - 1 {
            compromis_vmem::radix::prefetch(&tags[i - H]);
            i += 8;
        }
        compromis_vmem::radix::prefetch(&tags[N - 1]);
        touch_signed(head, tags, line, N)
    }

    /// [`LineSets::touch`] of a set of any number of ways, either layout.
    #[inline(never)]
    fn touch_any(&mut self, line: u64) -> bool {
        let start = self.set_start(line, self.stride);
        let block = &mut self.words[start..start + self.stride];
        if self.head == 0 {
            return move_to_front(block, line);
        }
        let (head, tags) = block.split_at_mut(self.head);
        touch_signed(head, tags, line, self.ways)
    }

    /// The line numbers of `line`'s set (in recency order if ordered).
    fn tags_of(&self, line: u64) -> &[u64] {
        if self.ways == 0 {
            return &[];
        }
        let start = self.set_start(line, self.stride) + self.head;
        &self.words[start..start + self.ways]
    }

    /// Whether `line` is held, without changing the order.
    pub fn contains(&self, line: u64) -> bool {
        self.tags_of(line).contains(&line)
    }

    /// The bytes of line numbers (8 a line; a signed set's head adds 2-3 words to its 8-16).
    fn tag_bytes(&self) -> usize {
        self.words.len() / self.stride.max(1) * self.ways * std::mem::size_of::<u64>()
    }

    /// Starts loading `line`'s set into the host's caches (a speed hint; no state changes): the
    /// first word of its block, and for a signed set the last word of its head (the words every
    /// access of the set reads; a hit reads one line number more, a miss writes one).
    #[inline(always)]
    pub fn prefetch(&self, line: u64) {
        if self.ways != 0 {
            let start = self.set_start(line, self.stride);
            compromis_vmem::radix::prefetch(&self.words[start]);
            if self.head != 0 {
                compromis_vmem::radix::prefetch(&self.words[start + self.head - 1]);
            }
        }
    }

    /// Empties every set.
    pub fn flush(&mut self) {
        self.words.fill(EMPTY);
        self.empty_heads();
    }

    /// Writes the head of every signed set as that of an empty set (signatures 0, the order of
    /// [`empty_order`]); the line numbers are left as they are.
    fn empty_heads(&mut self) {
        if self.head == 0 {
            return;
        }
        let (head, order) = (self.head, empty_order(self.ways));
        for set in self.words.chunks_exact_mut(self.stride) {
            set[..head - 1].fill(0);
            set[head - 1] = order;
        }
    }

    /// The lines held in `line`'s set, most recently used first (for tests and checks).
    pub fn set_of(&self, line: u64) -> impl Iterator<Item = u64> + '_ {
        let tags = self.tags_of(line);
        let order =
            (self.head != 0).then(|| self.words[self.set_start(line, self.stride) + self.head - 1]);
        (0..tags.len())
            .map(move |p| match order {
                // A nibble: below 16.
                #[allow(clippy::cast_possible_truncation)]
                Some(o) => tags[((o >> (4 * p)) & 0xf) as usize],
                None => tags[p],
            })
            .take_while(|&t| t != EMPTY)
    }
}

/// The L1D / L2 / LLC / DRAM hierarchy of one core.
#[derive(Clone, Debug)]
pub struct DataCaches {
    levels: [LineSets; 3],
    /// `log2(line)` per level.
    shifts: [u32; 3],
    /// Load-to-use latency per [`Level`] (index = level).
    latency: [u64; 4],
    /// No level is enabled (a translation-only model): every access goes to DRAM.
    dram_only: bool,
    /// Accesses served per [`Level`] (index = level); the latency of each is fixed, so these
    /// give every counter of [`CacheStats`].
    served: [u64; 4],
    /// Whether [`DataCaches::prefetch`] is worth its cost: a level below the L1D has more than
    /// [`PREFETCH_MIN_TAG_BYTES`] of tags.
    prefetched: bool,
}

/// The near hint prefetches the data caches' sets only when the tags of the L2 or the LLC take
/// more than this: a host core's L2 (1 MiB on this project's machines, 1-2 MiB on current
/// servers). Smaller tag arrays stay in the host's caches between accesses, and the near hint
/// that prefetches their sets costs more than the misses it saves (measured in
/// docs/performance.md 2j: with the model's default 1 MiB L2 and 2 MiB LLC, 128 KiB and 256 KiB
/// of tags, EPT ran the bench's trace 16% faster without it; with an 8 MiB LLC, 1 MiB of tags,
/// 10% faster; with a 16 MiB LLC the same; with Skylake-SP's 38.5 MiB LLC, 4.8 MB of tags, 16%
/// slower). Speed only: no simulated state depends on it.
pub const PREFETCH_MIN_TAG_BYTES: usize = 1 << 20;

/// A level of at most 16 ways is laid out in signed sets (see [`LineSets`]) when its
/// line numbers take more than this, as for [`PREFETCH_MIN_TAG_BYTES`]: its sets miss the host's
/// caches, and a signed set's miss reads one short head and writes one word where a
/// move-to-front pass reads and rewrites every way. Smaller levels stay in the host's caches,
/// where the move-to-front pass, which stops at the hit, takes fewer instructions (measured in
/// docs/performance.md 2m: signed L1D and L2 sets cost the EPT bench 7% more instructions in the
/// data caches and were slower). Speed only: no result depends on the layout.
pub const SIGNED_MIN_TAG_BYTES: usize = PREFETCH_MIN_TAG_BYTES;

fn build(c: &CacheLevel, signed_min_tag_bytes: usize) -> LineSets {
    if !c.is_enabled() {
        return LineSets::absent();
    }
    usize::try_from(c.lines()).map_or_else(
        |_| LineSets::absent(),
        |l| LineSets::new(l, c.ways, l.saturating_mul(8) > signed_min_tag_bytes),
    )
}

impl DataCaches {
    /// Caches shaped by `cfg`, which was validated beforehand ([`CacheConfig::validate`]); a level
    /// whose geometry is impossible anyway is left out rather than panicking.
    pub fn new(cfg: &CacheConfig) -> DataCaches {
        DataCaches::with_signed_min(cfg, SIGNED_MIN_TAG_BYTES)
    }

    /// [`DataCaches::new`] with signed sets for the levels (of at most [`SIGNED_WAYS`] ways) whose
    /// line numbers take more than `signed_min_tag_bytes` (0: every such level; tests).
    fn with_signed_min(cfg: &CacheConfig, signed_min_tag_bytes: usize) -> DataCaches {
        let b = |c| build(c, signed_min_tag_bytes);
        let levels = [b(&cfg.l1d), b(&cfg.l2), b(&cfg.llc)];
        let big = |l: &LineSets| l.ways != 0 && l.tag_bytes() > PREFETCH_MIN_TAG_BYTES;
        DataCaches {
            prefetched: big(&levels[1]) || big(&levels[2]),
            dram_only: levels.iter().all(|l| l.ways == 0),
            levels,
            shifts: [
                cfg.l1d.line.trailing_zeros(),
                cfg.l2.line.trailing_zeros(),
                cfg.llc.line.trailing_zeros(),
            ],
            latency: [
                cfg.l1d.latency,
                cfg.l2.latency,
                cfg.llc.latency,
                cfg.dram_latency,
            ],
            served: [0; 4],
        }
    }

    /// Serves one access (a load, a store, or a page-walk read of an entry): returns the level that
    /// had the line and the load-to-use latency in cycles; fills the line into every level above it.
    #[inline(always)]
    pub fn access(&mut self, hpa: Hpa) -> (Level, u64) {
        if self.dram_only {
            // What the loop of `access_levels` gives when no level holds anything, inlined at
            // the caller: a translation-only model's access is a few adds, not a call.
            self.served[3] += 1;
            return (Level::Dram, self.latency[3]);
        }
        self.access_levels(hpa)
    }

    /// [`DataCaches::access`] with at least one level present (out of line, as `access` was).
    #[inline(never)]
    fn access_levels(&mut self, hpa: Hpa) -> (Level, u64) {
        let a = hpa.raw();
        // Each level is looked up and, on a miss, filled in the same pass; the first hit stops
        // the search, so the line ends up in every level above the one that had it. Written out
        // level by level (not a loop): each level's choice of pass (by its ways) is then a branch
        // of its own, taken the same way on every access.
        let [l1, l2, llc] = &mut self.levels;
        let hit = if l1.touch(a >> self.shifts[0]) {
            0
        } else if l2.touch(a >> self.shifts[1]) {
            1
        } else if llc.touch(a >> self.shifts[2]) {
            2
        } else {
            3
        };
        // Counted by index, not by a `match` on the level (a jump through a table whose target
        // is the level that served the access: no host predicts it).
        self.served[hit] += 1;
        (Level::ALL[hit], self.latency[hit])
    }

    /// The level that holds `hpa`'s line now, without changing any state.
    pub fn probe(&self, hpa: Hpa) -> Level {
        let a = hpa.raw();
        (0..3)
            .find(|&i| self.levels[i].contains(a >> self.shifts[i]))
            .map_or(Level::Dram, |i| Level::ALL[i])
    }

    /// The load-to-use latency of a hit in `level`.
    pub fn latency(&self, level: Level) -> u64 {
        self.latency[level as usize]
    }

    /// Counters since construction.
    pub fn stats(&self) -> CacheStats {
        let [l1_hits, l2_hits, llc_hits, misses] = self.served;
        CacheStats {
            accesses: self.served.iter().sum(),
            l1_hits,
            l2_hits,
            llc_hits,
            misses,
            cycles: self
                .served
                .iter()
                .zip(self.latency)
                .map(|(n, l)| n * l)
                .sum(),
        }
    }

    /// Empties every level (counters are kept).
    pub fn flush(&mut self) {
        self.levels.iter_mut().for_each(LineSets::flush);
    }

    /// Whether [`DataCaches::prefetch`] is worth calling: an L2 or an LLC has more than
    /// [`PREFETCH_MIN_TAG_BYTES`] of tags, whose sets miss the host's caches. When not, the near
    /// hint, whose work is finding the addresses to prefetch, is not given at all.
    #[inline]
    pub fn prefetches(&self) -> bool {
        self.prefetched
    }

    /// Starts loading, into the host's caches, the sets an access of `hpa` will look at below the
    /// L1D (the L1D's few kilobytes of tags stay in the host's caches anyway). A speed hint for an
    /// access some steps ahead: no simulated state changes.
    #[inline]
    pub fn prefetch(&self, hpa: Hpa) {
        let a = hpa.raw();
        self.levels[1].prefetch(a >> self.shifts[1]);
        self.levels[2].prefetch(a >> self.shifts[2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_types::ByteSize;
    use proptest::prelude::*;

    /// One oracle level: its sets (each an LRU list of line numbers, most recent last), ways, line.
    type OracleLevel = (Vec<Vec<u64>>, usize, u64);

    /// Naive model: per level, `sets` LRU lists.
    struct Oracle {
        levels: Vec<Option<OracleLevel>>,
        latency: [u64; 4],
    }

    impl Oracle {
        fn new(cfg: &CacheConfig) -> Oracle {
            let lv = |c: &CacheLevel| {
                c.is_enabled().then(|| {
                    (
                        vec![Vec::new(); usize::try_from(c.sets()).unwrap()],
                        c.ways,
                        c.line,
                    )
                })
            };
            Oracle {
                levels: vec![lv(&cfg.l1d), lv(&cfg.l2), lv(&cfg.llc)],
                latency: [
                    cfg.l1d.latency,
                    cfg.l2.latency,
                    cfg.llc.latency,
                    cfg.dram_latency,
                ],
            }
        }
        fn access(&mut self, a: u64) -> (Level, u64) {
            let mut hit = 3;
            for (i, l) in self.levels.iter_mut().enumerate() {
                let Some((sets, _, line)) = l else { continue };
                let tag = a / *line;
                let n = sets.len() as u64;
                let set = &mut sets[usize::try_from(tag % n).unwrap()];
                if let Some(p) = set.iter().position(|&t| t == tag) {
                    set.remove(p);
                    set.push(tag);
                    hit = i;
                    break;
                }
            }
            for l in self.levels.iter_mut().take(hit) {
                let Some((sets, ways, line)) = l else {
                    continue;
                };
                let tag = a / *line;
                let n = sets.len() as u64;
                let set = &mut sets[usize::try_from(tag % n).unwrap()];
                if set.len() == *ways {
                    set.remove(0);
                }
                set.push(tag);
            }
            (Level::ALL[hit], self.latency[hit])
        }
    }

    /// One step of the [`LineSets`] proptest.
    #[derive(Clone, Debug)]
    enum SetOp {
        Touch(u64),
        Contains(u64),
        Flush,
    }

    /// 48 lines whose signatures take two values only: in a set, most of them share their
    /// signature byte with other lines held, so a hit or a miss checks false candidates.
    fn colliding() -> &'static [u64] {
        static LINES: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
        LINES.get_or_init(|| (0u64..).filter(|&l| signature(l) < 2).take(48).collect())
    }

    /// Touches, probes and flushes over 48 lines (any signatures) and 48 lines of colliding
    /// signatures.
    fn set_ops() -> impl Strategy<Value = Vec<SetOp>> {
        let colliding = |i: usize| colliding()[i];
        prop::collection::vec(
            prop_oneof![
                20 => (0u64..48).prop_map(SetOp::Touch),
                10 => (0usize..48).prop_map(move |i| SetOp::Touch(colliding(i))),
                4 => (0u64..48).prop_map(SetOp::Contains),
                2 => (0usize..48).prop_map(move |i| SetOp::Contains(colliding(i))),
                1 => Just(SetOp::Flush),
            ],
            0..400,
        )
    }

    proptest! {
        /// The strength-reduced set index (results depend on it) is the remainder, for any line and
        /// set count (small,
        /// odd, powers of two, odd multiples of powers of two, the default LLC's 57,344, huge).
        #[test]
        fn set_index_is_the_remainder(
            line in prop_oneof![any::<u64>(), 0u64..1 << 20, (u64::MAX - 1000)..=u64::MAX],
            sets in prop_oneof![1u64..100, Just(57_344u64), any::<u64>().prop_map(|s| s.max(1)),
                (1u64..1 << 20, 0u32..40).prop_map(|(o, k)| (o | 1) << k)],
        ) {
            prop_assert_eq!(line % StrengthReducedU64::new(sets), line % sets);
        }

        /// `LineSets` against a naive LRU: per set a `Vec` of lines, least recently used first;
        /// a hit moves the line to the end, a miss appends it and drops the first when the set is
        /// full. Sets 1..7 (powers of two or not) x ways 1..20 (the presets' 8, 11, 12 and 16 take
        /// the passes specialised by way count, the others the generic one), both layouts (signed
        /// sets of at most 16 ways, ordered sets; a signed set of 17..19 ways is ordered), and
        /// absent levels.
        #[test]
        fn line_sets_match_vec_lru(
            sets in 0u64..7,
            ways in prop_oneof![0usize..9, Just(11usize), Just(12usize), Just(16usize), 9usize..20],
            signed in any::<bool>(),
            ops in set_ops(),
        ) {
            let lines = usize::try_from(sets).unwrap() * ways;
            let mut c = LineSets::new(lines, ways, signed);
            prop_assert_eq!(c.is_signed(), signed && lines > 0 && ways <= SIGNED_WAYS);
            let present = lines > 0;
            let mut o: Vec<Vec<u64>> = vec![Vec::new(); usize::try_from(sets).unwrap()];
            for op in ops {
                match op {
                    SetOp::Touch(l) => {
                        let hit = c.touch(l);
                        if !present {
                            prop_assert!(!hit);
                            continue;
                        }
                        let set = &mut o[usize::try_from(l % sets).unwrap()];
                        let want = match set.iter().position(|&t| t == l) {
                            Some(p) => {
                                set.remove(p);
                                true
                            }
                            None => {
                                if set.len() == ways {
                                    set.remove(0);
                                }
                                false
                            }
                        };
                        set.push(l);
                        prop_assert_eq!(hit, want, "line {}", l);
                        // The whole recency order, not only the answer.
                        let got: Vec<u64> = c.set_of(l).collect();
                        let mut want_order = set.clone();
                        want_order.reverse();
                        prop_assert_eq!(got, want_order);
                    }
                    SetOp::Contains(l) => {
                        let want = present && o[usize::try_from(l % sets).unwrap()].contains(&l);
                        prop_assert_eq!(c.contains(l), want);
                        c.prefetch(l);
                    }
                    SetOp::Flush => {
                        c.flush();
                        o.iter_mut().for_each(Vec::clear);
                    }
                }
            }
        }
    }

    fn level(lines: u64, ways: usize, line: u64, latency: u64) -> CacheLevel {
        CacheLevel::new(ByteSize(lines * line), ways, line, latency)
    }

    /// A small random level: sets 1..4 (not only powers of two), ways 1..5, line 8..64, or absent.
    fn arb_level(latency: u64) -> impl Strategy<Value = CacheLevel> {
        prop_oneof![
            1 => Just(CacheLevel::OFF),
            4 => (1u64..5, 1usize..5, 3u32..7).prop_map(move |(sets, ways, sh)| level(sets * ways as u64, ways, 1 << sh, latency)),
        ]
    }

    fn arb_config() -> impl Strategy<Value = CacheConfig> {
        (arb_level(4), arb_level(14), arb_level(44)).prop_map(|(l1d, l2, llc)| CacheConfig {
            l1d,
            l2,
            llc,
            dram_latency: 200,
        })
    }

    /// Accesses over 40 lines of 64 B (any byte in them), so the tiny caches above hit often.
    fn stream() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec((0u64..40, 0u64..64).prop_map(|(l, o)| l * 64 + o), 0..500)
    }

    fn run(cfg: &CacheConfig, s: &[u64]) -> CacheStats {
        let mut c = DataCaches::new(cfg);
        for &a in s {
            c.access(Hpa(a));
        }
        c.stats().clone()
    }

    proptest! {
        #[test]
        fn matches_naive_oracle(cfg in arb_config(), signed in any::<bool>(), s in stream()) {
            prop_assert!(cfg.validate().is_ok());
            // Every level signed, or (the tiny levels here being small) every level ordered.
            let mut c = DataCaches::with_signed_min(&cfg, if signed { 0 } else { SIGNED_MIN_TAG_BYTES });
            prop_assert!(c.levels.iter().all(|l| l.is_signed() == (signed && l.ways != 0)));
            let mut o = Oracle::new(&cfg);
            let mut cycles = 0;
            for &a in &s {
                let got = c.access(Hpa(a));
                prop_assert_eq!(got, o.access(a), "address {:#x}", a);
                cycles += got.1;
            }
            let st = c.stats();
            prop_assert_eq!(st.cycles, cycles);
            prop_assert_eq!(st.accesses, s.len() as u64);
            prop_assert_eq!(st.l1_hits + st.l2_hits + st.llc_hits + st.misses, st.accesses);
        }

        /// LRU is a stack algorithm and a level's input stream depends only on the levels above it:
        /// with the same number of sets, more ways at one level never give that level more misses.
        #[test]
        fn more_ways_never_more_misses(
            cfg in arb_config(),
            which in 0usize..3,
            (sets, ways, sh) in (1u64..5, 1usize..5, 3u32..7),
            extra in 1usize..4,
            s in stream(),
        ) {
            // The level under test is always present.
            let mut cfg = cfg;
            let target = [&mut cfg.l1d, &mut cfg.l2, &mut cfg.llc].into_iter().nth(which).unwrap();
            if !target.is_enabled() {
                *target = level(sets * ways as u64, ways, 1 << sh, [4, 14, 44][which]);
            }
            let mut big = cfg.clone();
            let l = [&mut big.l1d, &mut big.l2, &mut big.llc].into_iter().nth(which).unwrap();
            let sets = l.sets();
            l.ways += extra;
            l.size = ByteSize(sets * l.ways as u64 * l.line);
            prop_assert_eq!(l.sets(), sets);
            prop_assert!(big.validate().is_ok());
            let level = Level::ALL[which];
            let (small, large) = (run(&cfg, &s), run(&big, &s));
            prop_assert!(large.misses_at(level) <= small.misses_at(level));
            // The levels above see the same stream.
            for above in Level::ALL.iter().filter(|&&a| a < level) {
                prop_assert_eq!(large.hits(*above), small.hits(*above));
            }
        }

        /// Removing the last levels (LLC; L2 and LLC; all three) never lowers the total latency:
        /// the levels above see the same stream and every access they miss now costs at least as much.
        #[test]
        fn removing_last_levels_never_fewer_cycles(cfg in arb_config(), from in 0usize..3, s in stream()) {
            let mut cut = cfg.clone();
            for (i, l) in [&mut cut.l1d, &mut cut.l2, &mut cut.llc].into_iter().enumerate() {
                if i >= from {
                    *l = CacheLevel::OFF;
                }
            }
            prop_assert!(run(&cut, &s).cycles >= run(&cfg, &s).cycles);
        }

        /// Every access costs at least the L1 latency and at most DRAM's; DRAM-only costs the most.
        #[test]
        fn dram_only_is_the_upper_bound(cfg in arb_config(), s in stream()) {
            let dram = run(&CacheConfig::dram_only(200), &s);
            prop_assert_eq!(dram.cycles, 200 * s.len() as u64);
            prop_assert!(run(&cfg, &s).cycles <= dram.cycles);
        }
    }

    fn tiny() -> CacheConfig {
        // L1: 1 set x 2 ways, L2: 1 set x 4 ways, LLC: 1 set x 8 ways; 64 B lines.
        CacheConfig {
            l1d: level(2, 2, 64, 4),
            l2: level(4, 4, 64, 14),
            llc: level(8, 8, 64, 44),
            dram_latency: 200,
        }
    }

    #[test]
    fn hand_computed_sequence() {
        let cfg = tiny();
        cfg.validate().unwrap();
        let mut c = DataCaches::new(&cfg);
        let (a, b, cc, d, e, f) = (0x0, 0x40, 0x80, 0xc0, 0x100, 0x140);
        let mut step = |addr: u64, want: Level| {
            let (got, lat) = c.access(Hpa(addr));
            assert_eq!(got, want, "access {addr:#x}");
            lat
        };
        // Cold: DRAM, then the same line (other byte) hits L1.
        assert_eq!(step(a, Level::Dram), 200);
        assert_eq!(step(a + 8, Level::L1), 4);
        // B, C fill L1 (2 ways): A is evicted from L1 but stays in L2.
        step(b, Level::Dram);
        step(cc, Level::Dram);
        // A: L1 miss, L2 hit (14); refilled into L1, evicting B. Then B: L2 hit.
        assert_eq!(step(a, Level::L2), 14);
        assert_eq!(step(b, Level::L2), 14);
        // L2 LRU order is now C, A, B. D, E, F miss everywhere; E evicts C and F evicts A from L2.
        step(d, Level::Dram);
        step(e, Level::Dram);
        step(f, Level::Dram);
        // A and C are gone from L1 and L2 but the 8-way LLC still has them.
        assert_eq!(step(a, Level::Llc), 44);
        assert_eq!(step(cc, Level::Llc), 44);
        let s = c.stats().clone();
        assert_eq!(
            s,
            CacheStats {
                accesses: 11,
                l1_hits: 1,
                l2_hits: 2,
                llc_hits: 2,
                misses: 6,
                cycles: 6 * 200 + 4 + 2 * 14 + 2 * 44
            }
        );
        assert_eq!(c.probe(Hpa(a)), Level::L1);
        assert_eq!(c.probe(Hpa(b)), Level::Llc);
        // `since` subtracts a snapshot.
        c.access(Hpa(a));
        assert_eq!(
            c.stats().since(&s),
            CacheStats {
                accesses: 1,
                l1_hits: 1,
                cycles: 4,
                ..CacheStats::default()
            }
        );
        c.flush();
        assert_eq!(c.access(Hpa(a)).0, Level::Dram);
    }

    /// Why "removing any level never lowers cycles" is not a property of a non-inclusive LRU
    /// hierarchy: an L1 hit does not refresh the line in the L2, so the L2 may evict it, while
    /// without the L1 the L2 sees every access and keeps it.
    #[test]
    fn non_inclusive_anomaly() {
        // L1 2 lines, L2 3 lines, LLC 8 lines, all fully associative.
        let with_l1 = CacheConfig {
            l1d: level(2, 2, 64, 4),
            l2: level(3, 3, 64, 14),
            llc: level(8, 8, 64, 44),
            dram_latency: 200,
        };
        let without_l1 = CacheConfig {
            l1d: CacheLevel::OFF,
            ..with_l1.clone()
        };
        let (x, y, z, w) = (0x0, 0x40, 0x80, 0xc0);
        let s = [x, y, x, z, w, x];
        // With L1: x y (DRAM), x (L1 hit, L2 not refreshed), z w (DRAM; L2 keeps y z w), x (LLC).
        let a = run(&with_l1, &s);
        assert_eq!(a.cycles, 200 + 200 + 4 + 200 + 200 + 44);
        // Without L1: x y (DRAM), x (L2), z w (DRAM; L2 keeps x z w), x (L2).
        let b = run(&without_l1, &s);
        assert_eq!(b.cycles, 200 + 200 + 14 + 200 + 200 + 14);
        assert!(b.cycles < a.cycles);
    }

    #[test]
    fn different_line_sizes_per_level() {
        // L1 with 32 B lines, L2 with 128 B lines: 0x0 and 0x40 share an L2 line, not an L1 line.
        let cfg = CacheConfig {
            l1d: level(4, 4, 32, 4),
            l2: level(4, 4, 128, 14),
            llc: CacheLevel::OFF,
            dram_latency: 200,
        };
        cfg.validate().unwrap();
        let mut c = DataCaches::new(&cfg);
        assert_eq!(c.access(Hpa(0x0)), (Level::Dram, 200));
        assert_eq!(c.access(Hpa(0x40)), (Level::L2, 14));
        assert_eq!(c.access(Hpa(0x5f)), (Level::L1, 4));
        assert_eq!(c.access(Hpa(0x80)), (Level::Dram, 200));
    }

    #[test]
    fn default_geometry() {
        let d = CacheConfig::default();
        assert_eq!((d.l1d.sets(), d.l2.sets(), d.llc.sets()), (64, 1024, 2048));
        let mut c = DataCaches::new(&d);
        // 128 KiB and 256 KiB of L2 and LLC tags: they stay in a host core's caches.
        assert!(!c.prefetches());
        assert!(c.levels.iter().all(|l| !l.is_signed()));
        assert!(!DataCaches::new(&CacheConfig::dram_only(200)).prefetches());
        assert_eq!(c.latency(Level::Llc), 44);
        // 64 sets x 8 ways: nine lines 4 KiB apart share an L1 set; the first is evicted to the L2.
        for i in 0..9u64 {
            assert_eq!(c.access(Hpa(i << 12)).0, Level::Dram);
        }
        assert_eq!(c.access(Hpa(0)).0, Level::L2);
        assert_eq!(c.access(Hpa(8 << 12)).0, Level::L1);
    }

    /// The sets are prefetched only when a level's tags outgrow a host core's caches (speed
    /// only): Skylake-SP's LLC (38.5 MiB, 11 ways: 4.8 MB of tags) or a 16 MiB L2.
    #[test]
    fn prefetched_levels() {
        let mut cfg = CacheConfig {
            llc: CacheLevel::new(ByteSize(38 * (1 << 20) + (1 << 19)), 11, 64, 54),
            ..CacheConfig::default()
        };
        cfg.validate().unwrap();
        let c = DataCaches::new(&cfg);
        assert!(c.prefetches());
        // Its sets are signed; the default L1D's and L2's (32 KiB, 1 MiB: 4 and 128 KiB of tags) are not.
        let signed: Vec<bool> = c.levels.iter().map(LineSets::is_signed).collect();
        assert_eq!(signed, [false, false, true]);
        // Exactly the threshold (an 8 MiB LLC of 64 B lines: 1 MiB of tags) is not enough.
        cfg.llc = CacheLevel::new(ByteSize::mib(8), 16, 64, 54);
        let c = DataCaches::new(&cfg);
        assert!(!c.prefetches() && !c.levels[2].is_signed());
        cfg.l2 = CacheLevel::new(ByteSize::mib(16), 16, 64, 14);
        cfg.llc = CacheLevel::OFF;
        let c = DataCaches::new(&cfg);
        assert!(c.prefetches() && c.levels[1].is_signed());
        // More than 16 ways: ordered whatever the size.
        cfg.l2 = CacheLevel::new(ByteSize::mib(20), 20, 64, 14);
        assert!(!DataCaches::new(&cfg).levels[1].is_signed());
        // A prefetch changes nothing the simulation sees.
        let before = c.clone();
        c.prefetch(Hpa(0x1234_5678));
        assert_eq!(c.stats(), before.stats());
        assert_eq!(c.probe(Hpa(0x1234_5678)), Level::Dram);
    }
}
