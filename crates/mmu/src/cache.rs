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
//! Layout (speed only, no result depends on it): a level is one flat array of `u64` line numbers,
//! one set's ways contiguous and kept in recency order, most recently used first ([`LineSets`]).
//! A line needs no value and the order replaces last-use stamps, so a line costs 8 bytes (the
//! 38.5 MiB LLC of the default machine is 4.8 MB of simulator memory, not 14.4 MB of keys, values
//! and stamps), and an access reads and rewrites one short run of memory: lookup, LRU update and
//! fill are one pass over the set (see [`LineSets::touch`]). Move-to-front order is true LRU: the
//! last way is the least recently used one, and empty ways (never used) sit after every used one.

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

/// One cache level's tags: `sets` sets of `ways` line numbers, each set in recency order (most
/// recently used first, [`EMPTY`] ways last). A level with no sets is absent: it never hits and
/// holds nothing.
#[derive(Clone, Debug)]
pub struct LineSets {
    /// `sets * ways` line numbers, set by set (huge pages where the kernel gives them: the LLC's
    /// tags are megabytes read at random).
    tags: HugeWords,
    ways: usize,
    /// Line number -> set (see [`SetIndex`]).
    index: SetIndex,
}

/// Line number -> set, `line % sets`: a mask when `sets` is a power of two (the L1D's and L2's),
/// else multiplications instead of a 64-bit `div` (14-90 cycles depending on the host; the LLC's
/// 57,344 sets are not a power of two). The mask is kept apart from the strength-reduced divisor
/// (which also masks a power of two, after reading its three words): one word and one branch
/// taken the same way at every access of a level.
#[derive(Clone, Debug)]
struct SetIndex {
    /// `sets - 1` when `sets` is a power of two.
    mask: Option<u64>,
    divisor: StrengthReducedU64,
}

impl SetIndex {
    fn new(sets: u64) -> SetIndex {
        SetIndex {
            mask: sets.is_power_of_two().then(|| sets - 1),
            divisor: StrengthReducedU64::new(sets),
        }
    }

    /// `line % sets`.
    #[inline(always)]
    fn of(&self, line: u64) -> u64 {
        match self.mask {
            Some(m) => line & m,
            None => line % self.divisor,
        }
    }
}

impl LineSets {
    /// `lines` lines in sets of `ways`; absent when `lines` or `ways` is 0 or `ways` does not
    /// divide `lines` (a validated configuration has none of these but size 0).
    pub fn new(lines: usize, ways: usize) -> LineSets {
        if lines == 0 || ways == 0 || !lines.is_multiple_of(ways) {
            return LineSets::absent();
        }
        let sets = (lines / ways) as u64;
        LineSets {
            tags: HugeWords::new(lines, EMPTY),
            ways,
            index: SetIndex::new(sets),
        }
    }

    /// A level that never hits.
    pub fn absent() -> LineSets {
        LineSets {
            tags: HugeWords::new(0, EMPTY),
            ways: 0,
            index: SetIndex::new(1),
        }
    }

    /// The ways of `line`'s set.
    #[inline(always)]
    fn set_range(&self, line: u64) -> std::ops::Range<usize> {
        // The set index is below `sets`, which came from a usize.
        #[allow(clippy::cast_possible_truncation)]
        let set = self.index.of(line) as usize;
        let start = set * self.ways;
        start..start + self.ways
    }

    /// Looks `line` up and makes it the most recently used line of its set; on a miss, fills it
    /// there and drops the set's least recently used line (or an empty way). Returns whether it
    /// hit. One pass: each way, from the most recent, takes the line of the way before it, until
    /// the way that held `line` (a hit) or past the last way (a miss: the last line falls out).
    #[inline(always)]
    pub fn touch(&mut self, line: u64) -> bool {
        // The presets' associativities with their way count known at compile time: the pass
        // unrolls into one load, store, compare and branch per way, no loop counter.
        match self.ways {
            0 => false,
            8 => self.touch_fixed::<8>(line),
            11 => self.touch_fixed::<11>(line),
            12 => self.touch_fixed::<12>(line),
            16 => self.touch_fixed::<16>(line),
            _ => self.touch_any(line),
        }
    }

    /// [`LineSets::touch`] of a level known to have `N` ways (its pass chosen at compile time),
    /// or of any level when `N` is 0 (the pass chosen by its ways).
    #[inline(always)]
    fn touch_shaped<const N: usize>(&mut self, line: u64) -> bool {
        if N == 0 {
            return self.touch(line);
        }
        debug_assert_eq!(self.ways, N, "a level of {N} ways");
        self.touch_fixed::<N>(line)
    }

    /// [`LineSets::touch`] of a set of `N` ways.
    #[inline(always)]
    fn touch_fixed<const N: usize>(&mut self, line: u64) -> bool {
        // The set index is below `sets`, which came from a usize; `ways` is `N`.
        #[allow(clippy::cast_possible_truncation)]
        let set = self.index.of(line) as usize;
        // The sets as arrays of `N`: one bound check, against the number of sets.
        move_to_front(&mut self.tags.as_chunks_mut::<N>().0[set], line)
    }

    /// [`LineSets::touch`] of a set of any number of ways.
    #[inline(never)]
    fn touch_any(&mut self, line: u64) -> bool {
        let r = self.set_range(line);
        move_to_front(&mut self.tags[r], line)
    }

    /// Whether `line` is held, without changing the order.
    pub fn contains(&self, line: u64) -> bool {
        self.ways != 0 && self.tags[self.set_range(line)].contains(&line)
    }

    /// The bytes of tags: what the level costs the host's caches.
    fn tag_bytes(&self) -> usize {
        self.tags.len() * std::mem::size_of::<u64>()
    }

    /// Starts loading `line`'s set into the host's caches (a speed hint; no state changes).
    #[inline(always)]
    pub fn prefetch(&self, line: u64) {
        if self.ways != 0 {
            let r = self.set_range(line);
            compromis_vmem::radix::prefetch(&self.tags[r.start]);
        }
    }

    /// Empties every set.
    pub fn flush(&mut self) {
        self.tags.fill(EMPTY);
    }

    /// The lines held in `line`'s set, most recently used first (for tests and checks).
    pub fn set_of(&self, line: u64) -> impl Iterator<Item = u64> + '_ {
        let r = if self.ways == 0 {
            0..0
        } else {
            self.set_range(line)
        };
        self.tags[r].iter().copied().take_while(|&t| t != EMPTY)
    }
}

/// The ways of the L1D, L2 and LLC, when they are those of a preset (Skylake-SP: 8, 16, 11;
/// Zen 3: 8, 8, 16; the model default: 8, 16, 16): [`DataCaches::access_levels`] then takes
/// each level's pass known at compile time. Speed only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    W8x16x11,
    W8x8x16,
    W8x16x16,
    /// Any other (each level's pass chosen by its ways).
    Any,
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
    /// The three levels' ways when they are one of the presets' shapes (see [`Shape`]).
    shape: Shape,
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

fn build(c: &CacheLevel) -> LineSets {
    if !c.is_enabled() {
        return LineSets::absent();
    }
    usize::try_from(c.lines()).map_or_else(|_| LineSets::absent(), |l| LineSets::new(l, c.ways))
}

impl DataCaches {
    /// Caches shaped by `cfg`, which was validated beforehand ([`CacheConfig::validate`]); a level
    /// whose geometry is impossible anyway is left out rather than panicking.
    pub fn new(cfg: &CacheConfig) -> DataCaches {
        let levels = [build(&cfg.l1d), build(&cfg.l2), build(&cfg.llc)];
        let big = |l: &LineSets| l.ways != 0 && l.tag_bytes() > PREFETCH_MIN_TAG_BYTES;
        DataCaches {
            prefetched: big(&levels[1]) || big(&levels[2]),
            dram_only: levels.iter().all(|l| l.ways == 0),
            shape: match (levels[0].ways, levels[1].ways, levels[2].ways) {
                (8, 16, 11) => Shape::W8x16x11,
                (8, 8, 16) => Shape::W8x8x16,
                (8, 16, 16) => Shape::W8x16x16,
                _ => Shape::Any,
            },
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
        // One choice per access of the three levels' passes when their ways are a preset's
        // (Skylake-SP's, Zen 3's, the model default's), instead of one per level and access (a
        // jump through a table each).
        match self.shape {
            Shape::W8x16x11 => self.access_shaped::<8, 16, 11>(hpa),
            Shape::W8x8x16 => self.access_shaped::<8, 8, 16>(hpa),
            Shape::W8x16x16 => self.access_shaped::<8, 16, 16>(hpa),
            Shape::Any => self.access_shaped::<0, 0, 0>(hpa),
        }
    }

    /// [`DataCaches::access_levels`] of levels of `A`, `B` and `C` ways (0: any).
    #[inline(always)]
    fn access_shaped<const A: usize, const B: usize, const C: usize>(
        &mut self,
        hpa: Hpa,
    ) -> (Level, u64) {
        let a = hpa.raw();
        // Each level is looked up and, on a miss, filled in the same pass; the first hit stops
        // the search, so the line ends up in every level above the one that had it. Written out
        // level by level (not a loop): each level's choice of pass (by its ways) is then a branch
        // of its own, taken the same way on every access.
        let [l1, l2, llc] = &mut self.levels;
        let hit = if l1.touch_shaped::<A>(a >> self.shifts[0]) {
            0
        } else if l2.touch_shaped::<B>(a >> self.shifts[1]) {
            1
        } else if llc.touch_shaped::<C>(a >> self.shifts[2]) {
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

    fn set_ops() -> impl Strategy<Value = Vec<SetOp>> {
        prop::collection::vec(
            prop_oneof![
                20 => (0u64..48).prop_map(SetOp::Touch),
                4 => (0u64..48).prop_map(SetOp::Contains),
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
            prop_assert_eq!(SetIndex::new(sets).of(line), line % sets);
        }

        /// `LineSets` against a naive LRU: per set a `Vec` of lines, least recently used first;
        /// a hit moves the line to the end, a miss appends it and drops the first when the set is
        /// full. Sets 1..7 (powers of two or not) x ways 1..20 (the presets' 8, 11, 12 and 16, which
        /// take the unrolled passes, among them), and absent levels.
        #[test]
        fn line_sets_match_vec_lru(
            sets in 0u64..7,
            ways in prop_oneof![0usize..9, Just(11usize), Just(12usize), Just(16usize), 9usize..20],
            ops in set_ops(),
        ) {
            let lines = usize::try_from(sets).unwrap() * ways;
            let mut c = LineSets::new(lines, ways);
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
        fn matches_naive_oracle(cfg in arb_config(), s in stream()) {
            prop_assert!(cfg.validate().is_ok());
            let mut c = DataCaches::new(&cfg);
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

        /// The presets' shapes (ways 8/16/11, 8/8/16, 8/16/16), whose passes are chosen once per
        /// access, against the naive model: 1-3 sets per level (powers of two or not), lines of
        /// 64 or 128 bytes, accesses over 160 lines so that every level evicts.
        #[test]
        fn shaped_hierarchies_match_naive_oracle(
            shape in 0usize..3,
            sets in [1u64..4, 1u64..4, 1u64..4],
            sh in [6u32..8, 6u32..8, 6u32..8],
            s in prop::collection::vec((0u64..160, 0u64..128).prop_map(|(l, o)| l * 64 + o), 0..800),
        ) {
            let ways = [[8, 16, 11], [8, 8, 16], [8, 16, 16]][shape];
            let lv = |i: usize| level(sets[i] * ways[i] as u64, ways[i], 1 << sh[i], [4, 14, 44][i]);
            let cfg = CacheConfig { l1d: lv(0), l2: lv(1), llc: lv(2), dram_latency: 200 };
            prop_assert!(cfg.validate().is_ok());
            let mut c = DataCaches::new(&cfg);
            prop_assert_eq!(c.shape, [Shape::W8x16x11, Shape::W8x8x16, Shape::W8x16x16][shape]);
            let mut o = Oracle::new(&cfg);
            for &a in &s {
                prop_assert_eq!(c.access(Hpa(a)), o.access(a), "address {:#x}", a);
            }
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
        // Exactly the threshold (an 8 MiB LLC of 64 B lines: 1 MiB of tags) is not enough.
        cfg.llc = CacheLevel::new(ByteSize::mib(8), 16, 64, 54);
        assert!(!DataCaches::new(&cfg).prefetches());
        cfg.l2 = CacheLevel::new(ByteSize::mib(16), 16, 64, 14);
        cfg.llc = CacheLevel::OFF;
        let c = DataCaches::new(&cfg);
        assert!(c.prefetches());
        // A prefetch changes nothing the simulation sees.
        let before = c.clone();
        c.prefetch(Hpa(0x1234_5678));
        assert_eq!(c.stats(), before.stats());
        assert_eq!(c.probe(Hpa(0x1234_5678)), Level::Dram);
    }
}
