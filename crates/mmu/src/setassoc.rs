//! A set-associative, true-LRU lookup structure: the building block of every TLB, page-walk cache
//! and nested TLB in the simulator (the data caches keep only line numbers, in
//! [`crate::cache::LineSets`]).
//!
//! Keys are `u64` tags (already including any page-number / ASID packing the caller wants); the set
//! index is `key % sets`. Each entry carries a `u64` value. A structure with 0 entries is disabled:
//! every lookup misses and inserts are dropped. The hot path (`lookup`, `insert`) does not allocate.
//!
//! Layout and speed: keys and values are two flat arrays (structure of arrays, one set is `ways`
//! consecutive keys), so a lookup scans one short run of keys. The recency order of a set of at
//! most 16 ways (every TLB and walk cache of the presets) is one word per set, the way numbers in
//! nibbles from the most to the least recently used: the victim of a miss is read from the word,
//! with no scan, and a whole 1,536-entry STLB's order is 1 KiB. Larger sets keep a last-use stamp
//! per way instead. Two shortcuts change no result: a structure that holds nothing answers a miss
//! without looking (a TLB array of huge pages that the run never uses costs one compare), and the
//! way used last is checked before the set is scanned (a key lives in one way only, so a match
//! there is the hit; that way is the most recently used of its set, so a hit there changes no
//! order).

use thiserror::Error;

/// Why a geometry is impossible.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GeometryError {
    /// `ways` is zero while `entries` is not.
    #[error("{name}: ways must be at least 1 (got 0)")]
    ZeroWays {
        /// The structure's name.
        name: String,
    },
    /// `entries` is not a multiple of `ways`.
    #[error("{name}: {entries} entries is not a multiple of {ways} ways")]
    NotMultiple {
        /// The structure's name.
        name: String,
        /// Entries requested.
        entries: usize,
        /// Ways requested.
        ways: usize,
    },
}

impl GeometryError {
    /// The structure's name (its TOML key in a machine model).
    pub fn name(&self) -> &str {
        match self {
            GeometryError::ZeroWays { name } | GeometryError::NotMultiple { name, .. } => name,
        }
    }
}

const EMPTY: u64 = u64::MAX;

/// Sets of at most this many ways keep their recency order in one word (see [`SetAssoc`]).
const ORDER_WAYS: usize = 16;

/// A one in the low bit of every nibble.
const NIBBLE_ONES: u64 = 0x1111_1111_1111_1111;

/// The recency order of an empty set of `ways` ways: ways `ways - 1` down to 0 from the most
/// recent (nibble 0) to the least (nibble `ways - 1`). Orders keep the used ways first, by
/// recency, then the empty ways by decreasing number, so the victim of a miss is the lowest empty
/// way while there is one (what the stamps, 0 for an empty way, give), else the least recently
/// used way.
fn empty_order(ways: usize) -> u64 {
    (0..ways).fold(0, |o, p| o | (((ways - 1 - p) as u64) << (4 * p)))
}

/// The position (0 = most recent) of way `w` in `order`, whose nibbles `valid` marks (one bit
/// each): the nibble equal to `w`, found without a loop.
#[inline(always)]
fn position(order: u64, valid: u64, w: usize) -> u32 {
    let x = order ^ (w as u64).wrapping_mul(NIBBLE_ONES);
    // Bit 4p is set when nibble p differs from `w`.
    let differs = (x | x >> 1 | x >> 2 | x >> 3) & NIBBLE_ONES;
    (!differs & valid).trailing_zeros() / 4
}

/// `order` with the way at position `p` moved to the front (most recent), the ways before it one
/// place back.
#[inline(always)]
fn to_front(order: u64, p: u32) -> u64 {
    let shift = 4 * p;
    let w = (order >> shift) & 0xf;
    let before = order & ((1u64 << shift) - 1);
    let after = ((order >> shift) >> 4) << 4 << shift;
    after | (before << 4) | w
}

/// A set-associative LRU array of `(key, value)` pairs.
///
/// True LRU, by a recency order per set for sets of at most [`ORDER_WAYS`] ways, else by
/// last-use stamps: each way records the tick of its last use, an empty way has stamp 0 (older
/// than any use), so the victim is the first way with the smallest stamp. Both give the same
/// victims.
#[derive(Clone, Debug)]
pub struct SetAssoc {
    sets: usize,
    /// `sets - 1` when `sets` is a power of two (the set index is then a mask, not a division).
    mask: Option<u64>,
    /// `mask`'s value, 0 without one (read by the `_w` methods, which need one).
    set_mask: u64,
    ways: usize,
    /// `sets * ways` keys; `EMPTY` marks an unused way.
    keys: Box<[u64]>,
    vals: Box<[u64]>,
    /// Sets of at most [`ORDER_WAYS`] ways: each set's recency order (see [`empty_order`]),
    /// else empty.
    order: Box<[u64]>,
    /// The low bit of each of the first `ways` nibbles (an order's valid nibbles).
    valid: u64,
    /// Every bit of the first `ways` nibbles.
    full: u64,
    /// The shift of the last valid nibble, `4 * (ways - 1)` (ordered sets).
    top: u32,
    /// Larger sets: last-use tick of each way (0 = empty), else empty.
    stamps: Box<[u64]>,
    clock: u64,
    /// Ways in use (not `EMPTY`).
    live: usize,
    /// Index of the way used last (a hint: checked before the set is scanned). When it holds a
    /// key, that way is the most recently used of its set.
    last: usize,
    /// With stamps: the victim the last missed lookup found while scanning its set, for the
    /// fill that usually follows (a TLB miss, then a walk, then the fill): valid for `victim.key`
    /// while the clock is `victim.clock` (no stamp changed since) and no entry was removed.
    victim: Victim,
}

/// See [`SetAssoc`]'s `victim` field.
#[derive(Clone, Copy, Debug)]
struct Victim {
    key: u64,
    clock: u64,
    way: usize,
}

impl Victim {
    const NONE: Victim = Victim {
        key: EMPTY,
        clock: 0,
        way: 0,
    };
}

impl SetAssoc {
    /// A structure of `entries` entries, `ways`-way associative (`entries == ways`: fully
    /// associative). `entries == 0` gives a disabled structure.
    pub fn new(name: &str, entries: usize, ways: usize) -> Result<SetAssoc, GeometryError> {
        if entries == 0 {
            return Ok(SetAssoc::disabled());
        }
        if ways == 0 {
            return Err(GeometryError::ZeroWays {
                name: name.to_owned(),
            });
        }
        if !entries.is_multiple_of(ways) {
            return Err(GeometryError::NotMultiple {
                name: name.to_owned(),
                entries,
                ways,
            });
        }
        let sets = entries / ways;
        let ordered = ways <= ORDER_WAYS;
        Ok(SetAssoc {
            sets,
            mask: sets.is_power_of_two().then(|| sets as u64 - 1),
            set_mask: if sets.is_power_of_two() {
                sets as u64 - 1
            } else {
                0
            },
            ways,
            keys: vec![EMPTY; entries].into_boxed_slice(),
            vals: vec![0; entries].into_boxed_slice(),
            order: if ordered {
                vec![empty_order(ways); sets].into_boxed_slice()
            } else {
                Box::new([])
            },
            valid: (0..ways.min(ORDER_WAYS)).fold(0, |v, p| v | (1 << (4 * p))),
            full: (0..ways.min(ORDER_WAYS)).fold(0, |v, p| v | (0xf << (4 * p))),
            // Below 64.
            #[allow(clippy::cast_possible_truncation)]
            top: 4 * (ways.min(ORDER_WAYS) - 1) as u32,
            stamps: vec![0; if ordered { 0 } else { entries }].into_boxed_slice(),
            clock: 0,
            live: 0,
            last: 0,
            victim: Victim::NONE,
        })
    }

    /// A structure that never hits.
    pub fn disabled() -> SetAssoc {
        SetAssoc {
            sets: 0,
            mask: None,
            set_mask: 0,
            ways: 0,
            keys: Box::new([]),
            vals: Box::new([]),
            order: Box::new([]),
            valid: 0,
            full: 0,
            top: 0,
            stamps: Box::new([]),
            clock: 0,
            live: 0,
            last: 0,
            victim: Victim::NONE,
        }
    }

    /// Whether the structure holds no entries at all.
    #[inline]
    pub fn is_disabled(&self) -> bool {
        self.sets == 0
    }

    /// How many entries the structure holds.
    #[inline]
    pub fn len(&self) -> usize {
        self.live
    }

    /// Its associativity (0 when disabled).
    #[inline]
    pub fn ways(&self) -> usize {
        self.ways
    }

    /// Whether the structure holds no entry (every lookup misses).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Whether sets keep a recency order (else stamps).
    #[inline(always)]
    fn ordered(&self) -> bool {
        self.ways <= ORDER_WAYS
    }

    /// The set `key` falls in.
    #[inline]
    fn set_of(&self, key: u64) -> usize {
        // The set index is below `sets`, a usize.
        #[allow(clippy::cast_possible_truncation)]
        match self.mask {
            Some(m) => (key & m) as usize,
            None => (key % self.sets as u64) as usize,
        }
    }

    #[inline]
    fn set_start(&self, key: u64) -> usize {
        self.set_of(key) * self.ways
    }

    /// The way holding `key` in the set starting at `start`: the way used last first, then the set.
    #[inline]
    fn find(&self, start: usize, key: u64) -> Option<usize> {
        if self.keys.get(self.last) == Some(&key) {
            return Some(self.last);
        }
        self.keys[start..start + self.ways]
            .iter()
            .position(|&k| k == key)
            .map(|w| start + w)
    }

    /// Makes way `i` of set `set` the most recently used. The way used last already is: the
    /// order of every set stays the same.
    #[inline]
    fn use_way(&mut self, set: usize, i: usize) {
        if i != self.last {
            if self.ordered() {
                let o = self.order[set];
                self.order[set] = to_front(o, position(o, self.valid, i - set * self.ways));
            } else {
                self.clock += 1;
                self.stamps[i] = self.clock;
            }
        }
        self.last = i;
    }

    /// Looks `key` up; on a hit returns its value and makes it most recently used.
    #[inline(always)]
    pub fn lookup(&mut self, key: u64) -> Option<u64> {
        if self.live == 0 {
            return None;
        }
        // The way used last, checked here (repeated fetches from one code page hit it, with
        // no call); the set is scanned out of line.
        let last = self.last;
        if self.keys[last] == key {
            return Some(self.vals[last]);
        }
        self.lookup_held(key)
    }

    /// [`SetAssoc::lookup`] when the way used last holds `key` (its hit, the same LRU update:
    /// none, that way being the most recent of its set); `None`, with nothing changed, otherwise.
    #[inline(always)]
    pub fn lookup_last(&mut self, key: u64) -> Option<u64> {
        let last = self.last;
        if self.live == 0 || self.keys[last] != key {
            return None;
        }
        Some(self.vals[last])
    }

    /// [`SetAssoc::lookup`] of a structure that holds entries, its way used last not holding
    /// `key`. On a miss with stamps, the way a [`SetAssoc::fill`] of `key` would evict is found
    /// and remembered (a set with an order reads its victim from the order word at the fill).
    #[inline(never)]
    fn lookup_held(&mut self, key: u64) -> Option<u64> {
        let set = self.set_of(key);
        if let Some(i) = self.scan(set, key) {
            self.use_way(set, i);
            return Some(self.vals[i]);
        }
        if !self.ordered() {
            self.victim = Victim {
                key,
                clock: self.clock,
                way: self.victim_way(set),
            };
        }
        None
    }

    /// The least recently used way of `set` (an empty way first, the lowest): the one a fill
    /// evicts. Sets with an order only.
    #[inline(always)]
    fn order_victim(&self, set: usize) -> usize {
        // The last valid nibble; below 16.
        #[allow(clippy::cast_possible_truncation)]
        let w = (self.order[set] >> self.top) as usize;
        set * self.ways + w
    }

    /// The least recently used way of `set` (an empty way, the lowest, first): the one a fill
    /// evicts. From the order word, or the first way with the oldest stamp.
    #[inline(always)]
    fn victim_way(&self, set: usize) -> usize {
        if self.ordered() {
            return self.order_victim(set);
        }
        let start = set * self.ways;
        let stamps = &self.stamps[start..start + self.ways];
        let mut victim = 0;
        let mut oldest = u64::MAX;
        for (w, &s) in stamps.iter().enumerate() {
            if s < oldest {
                oldest = s;
                victim = w;
            }
        }
        start + victim
    }

    /// One scan of `key`'s set `set`: the way that holds it, if any. A miss leaves the victim to
    /// the caller that needs one ([`SetAssoc::victim_way`]): a TLB lookup that misses does not
    /// (its fill reads the order word then).
    #[inline(always)]
    fn scan(&self, set: usize, key: u64) -> Option<usize> {
        let start = set * self.ways;
        // The usual associativities with their way count known at compile time: the loops
        // unroll into compares and conditional moves, no branch per way.
        match self.ways {
            4 => return self.scan_fixed::<4>(set, key),
            8 => return self.scan_fixed::<8>(set, key),
            12 => return self.scan_fixed::<12>(set, key),
            16 => return self.scan_fixed::<16>(set, key),
            _ => {}
        }
        let keys = &self.keys[start..start + self.ways];
        keys.iter().position(|&k| k == key).map(|w| start + w)
    }

    /// [`SetAssoc::scan`] of a set of `N` ways, whole (no early exit: most scans of a TLB miss
    /// read every way anyway), branch-free: the first way holding `key`.
    #[inline(always)]
    fn scan_fixed<const N: usize>(&self, set: usize, key: u64) -> Option<usize> {
        let start = set * N;
        let Some(keys) = self.keys[start..].first_chunk::<N>() else {
            unreachable!("a set of {N} ways")
        };
        let mut hit = N;
        for w in (0..N).rev() {
            hit = if keys[w] == key { w } else { hit };
        }
        (hit < N).then_some(start + hit)
    }

    /// Looks `key` up without changing the LRU order.
    #[inline]
    pub fn probe(&self, key: u64) -> Option<u64> {
        if self.live == 0 {
            return None;
        }
        self.find(self.set_start(key), key).map(|i| self.vals[i])
    }

    /// Starts loading `key`'s set (its first and last way's keys) into the host's caches, for a
    /// [`SetAssoc::probe`] or lookup soon after (a speed hint; no state changes).
    #[inline]
    pub fn prefetch(&self, key: u64) {
        if self.live != 0 {
            let start = self.set_start(key);
            compromis_vmem::radix::prefetch(&self.keys[start]);
            compromis_vmem::radix::prefetch(&self.keys[start + self.ways - 1]);
        }
    }

    /// Inserts or refreshes `key` as most recently used; returns the evicted `(key, value)`, if any.
    #[inline]
    pub fn insert(&mut self, key: u64, val: u64) -> Option<(u64, u64)> {
        if self.sets == 0 {
            return None;
        }
        let set = self.set_of(key);
        if let Some(i) = self.find(set * self.ways, key) {
            self.use_way(set, i);
            self.vals[i] = val;
            return None;
        }
        self.fill_at(set, key, val)
    }

    /// Inserts `key`, known to be absent (it just missed), as most recently used; returns the
    /// evicted `(key, value)`, if any. Cheaper than [`SetAssoc::insert`]: no search for the key.
    /// Inlined: a set with a recency order takes its victim from the order word and shifts it
    /// (a few instructions, where a call cost about 70 per fill); sets with stamps take the
    /// out-of-line [`SetAssoc::fill_at`].
    #[inline(always)]
    pub fn fill(&mut self, key: u64, val: u64) -> Option<(u64, u64)> {
        debug_assert!(
            self.sets == 0 || self.probe(key).is_none(),
            "fill of a present key"
        );
        if self.sets == 0 {
            return None;
        }
        let set = self.set_of(key);
        if !self.ordered() {
            return self.fill_at(set, key, val);
        }
        self.place(set, self.order_victim(set), key, val)
    }

    /// Looks `key` up and, on a miss, inserts it (value 0): one scan of the set instead of a
    /// lookup followed by a fill. Returns whether it hit. This is how caches that allocate on miss
    /// (the page-walk caches) are accessed.
    #[inline(always)]
    pub fn touch(&mut self, key: u64) -> bool {
        // A disabled level (a data cache of size 0) costs one compare at the caller.
        if self.sets == 0 {
            return false;
        }
        self.touch_enabled(key)
    }

    /// [`SetAssoc::touch`] of an enabled structure.
    #[inline]
    fn touch_enabled(&mut self, key: u64) -> bool {
        if self.keys[self.last] == key {
            return true;
        }
        let set = self.set_of(key);
        if let Some(i) = self.scan(set, key) {
            self.use_way(set, i);
            return true;
        }
        self.place(set, self.victim_way(set), key, 0);
        false
    }

    #[inline(never)]
    fn fill_at(&mut self, set: usize, key: u64, val: u64) -> Option<(u64, u64)> {
        debug_assert_ne!(key, EMPTY, "u64::MAX is reserved");
        let i = if !self.ordered() && self.victim.key == key && self.victim.clock == self.clock {
            // The lookup that just missed `key` found the victim, and no stamp changed since.
            self.victim.way
        } else {
            self.victim_way(set)
        };
        self.place(set, i, key, val)
    }

    /// Puts `key` in way `i` of set `set` (its victim) as the most recently used; returns the
    /// evicted `(key, value)`, if any.
    #[inline(always)]
    fn place(&mut self, set: usize, i: usize, key: u64, val: u64) -> Option<(u64, u64)> {
        debug_assert_ne!(key, EMPTY, "u64::MAX is reserved");
        let evicted = (self.keys[i] != EMPTY).then(|| (self.keys[i], self.vals[i]));
        if evicted.is_none() {
            self.live += 1;
        }
        self.keys[i] = key;
        self.vals[i] = val;
        if self.ordered() {
            // The victim is the last of the order: the others move one place back.
            let o = self.order[set];
            let w = (i - set * self.ways) as u64;
            debug_assert_eq!(o >> self.top, w);
            self.order[set] = ((o << 4) & self.full) | w;
        } else {
            self.clock += 1;
            self.stamps[i] = self.clock;
        }
        self.last = i;
        evicted
    }

    /// Whether the methods with the way count known at compile time ([`SetAssoc::lookup_w`],
    /// [`SetAssoc::fill_w`], [`SetAssoc::touch_w`]) serve this structure with `W == w`: an
    /// enabled structure of `w` ways (at most [`ORDER_WAYS`]: a recency word per set) and a
    /// power-of-two number of sets. Asked once per run (or per structure), not per access.
    pub fn has_shape(&self, w: usize) -> bool {
        self.sets != 0 && self.ways == w && w <= ORDER_WAYS && self.mask.is_some()
    }

    /// The ways of `key`'s set, `W` of them (a structure of that shape, [`SetAssoc::has_shape`]):
    /// the set index and the start of its keys, the keys.
    #[inline(always)]
    fn row_w<const W: usize>(&self, key: u64) -> (usize, usize, &[u64; W]) {
        debug_assert!(self.has_shape(W), "a structure of {W} ways");
        // Below `sets`, a usize.
        #[allow(clippy::cast_possible_truncation)]
        let set = (key & self.set_mask) as usize;
        let start = set * W;
        let Some(keys) = self.keys[start..].first_chunk::<W>() else {
            unreachable!("a set of {W} ways")
        };
        (set, start, keys)
    }

    /// The first of `W` keys equal to `key` (`W` when none), branch-free.
    #[inline(always)]
    fn scan_row<const W: usize>(keys: &[u64; W], key: u64) -> usize {
        let mut hit = W;
        for w in (0..W).rev() {
            hit = if keys[w] == key { w } else { hit };
        }
        hit
    }

    /// Way `w` of set `set` (starting at `start`) becomes the most recently used, its set
    /// having a recency word (`W` ways at most [`ORDER_WAYS`]).
    #[inline(always)]
    fn use_way_w<const W: usize>(&mut self, set: usize, start: usize, w: usize) {
        let i = start + w;
        if i != self.last {
            let o = self.order[set];
            self.order[set] = to_front(o, position(o, self.valid, w));
            self.last = i;
        }
    }

    /// [`SetAssoc::lookup`] of a structure of `W` ways ([`SetAssoc::has_shape`]), inlined: the
    /// set index a mask, the scan unrolled, no call. Same result, same state after.
    #[inline(always)]
    pub fn lookup_w<const W: usize>(&mut self, key: u64) -> Option<u64> {
        // An empty structure's keys are all `EMPTY`, which no key is: the scan misses.
        let (set, start, keys) = self.row_w::<W>(key);
        let w = Self::scan_row(keys, key);
        if w == W {
            return None;
        }
        self.use_way_w::<W>(set, start, w);
        Some(self.vals[start + w])
    }

    /// [`SetAssoc::fill`] of a structure of `W` ways ([`SetAssoc::has_shape`]): `key`, known to
    /// be absent, goes to its set's least recently used way. Same result, same state after.
    #[inline(always)]
    pub fn fill_w<const W: usize>(&mut self, key: u64, val: u64) -> Option<(u64, u64)> {
        debug_assert!(self.has_shape(W), "a structure of {W} ways");
        debug_assert!(self.probe(key).is_none(), "fill of a present key");
        // Below `sets`, a usize.
        #[allow(clippy::cast_possible_truncation)]
        let set = (key & self.set_mask) as usize;
        self.place_w::<W>(set, key, val)
    }

    /// Puts `key` in the least recently used way of `set` (the last nibble of its order) as
    /// the most recently used; returns the evicted entry, if any.
    #[inline(always)]
    fn place_w<const W: usize>(&mut self, set: usize, key: u64, val: u64) -> Option<(u64, u64)> {
        debug_assert_ne!(key, EMPTY, "u64::MAX is reserved");
        let o = self.order[set];
        // The last valid nibble (the others are 0); below 16.
        #[allow(clippy::cast_possible_truncation)]
        let w = (o >> (4 * (W - 1))) as usize;
        let i = set * W + w;
        let old = self.keys[i];
        let evicted = (old != EMPTY).then(|| (old, self.vals[i]));
        self.live += usize::from(old == EMPTY);
        self.keys[i] = key;
        self.vals[i] = val;
        // The victim is the last of the order: the others move one place back.
        let full = if W == 16 {
            u64::MAX
        } else {
            (1u64 << (4 * W)) - 1
        };
        self.order[set] = ((o << 4) & full) | w as u64;
        self.last = i;
        evicted
    }

    /// [`SetAssoc::touch`] of a structure of `W` ways ([`SetAssoc::has_shape`]), inlined. Same
    /// result, same state after.
    #[inline(always)]
    pub fn touch_w<const W: usize>(&mut self, key: u64) -> bool {
        let (set, start, keys) = self.row_w::<W>(key);
        let w = Self::scan_row(keys, key);
        if w == W {
            self.place_w::<W>(set, key, 0);
            return false;
        }
        self.use_way_w::<W>(set, start, w);
        true
    }

    /// Removes `key`; returns whether it was present.
    pub fn invalidate(&mut self, key: u64) -> bool {
        if self.live == 0 {
            return false;
        }
        let set = self.set_of(key);
        let start = set * self.ways;
        match self.find(start, key) {
            Some(i) => {
                self.keys[i] = EMPTY;
                self.live -= 1;
                if self.ordered() {
                    // The used ways in their order, then the empty ones by decreasing number.
                    let o = self.order[set];
                    let mut order = 0;
                    let used = (0..self.ways)
                        .map(|q| ((o >> (4 * q)) & 0xf) as usize)
                        .filter(|&w| self.keys[start + w] != EMPTY);
                    let empty = (0..self.ways)
                        .rev()
                        .filter(|&w| self.keys[start + w] == EMPTY);
                    for (p, w) in used.chain(empty).enumerate() {
                        order |= (w as u64) << (4 * p);
                    }
                    self.order[set] = order;
                } else {
                    self.stamps[i] = 0;
                    self.victim = Victim::NONE;
                }
                true
            }
            None => false,
        }
    }

    /// The keys held, in no particular order (for tests and checks).
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys.iter().copied().filter(|&k| k != EMPTY)
    }

    /// Removes every entry.
    pub fn flush(&mut self) {
        if self.live > 0 {
            self.keys.fill(EMPTY);
            self.stamps.fill(0);
            if self.ordered() {
                self.order.fill(empty_order(self.ways));
            }
            self.live = 0;
        }
        self.victim = Victim::NONE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Naive oracle: `sets` independent fully-associative LRU lists.
    struct Oracle {
        sets: Vec<Vec<(u64, u64)>>, // most recent last
        ways: usize,
    }
    impl Oracle {
        fn new(entries: usize, ways: usize) -> Self {
            Oracle {
                sets: vec![Vec::new(); entries / ways],
                ways,
            }
        }
        fn set(&mut self, key: u64) -> &mut Vec<(u64, u64)> {
            let n = self.sets.len() as u64;
            &mut self.sets[usize::try_from(key % n).unwrap()]
        }
        fn lookup(&mut self, key: u64) -> Option<u64> {
            let s = self.set(key);
            let i = s.iter().position(|e| e.0 == key)?;
            let e = s.remove(i);
            s.push(e);
            Some(e.1)
        }
        fn insert(&mut self, key: u64, val: u64) -> Option<(u64, u64)> {
            let ways = self.ways;
            let s = self.set(key);
            if let Some(i) = s.iter().position(|e| e.0 == key) {
                s.remove(i);
                s.push((key, val));
                return None;
            }
            let ev = (s.len() == ways).then(|| s.remove(0));
            s.push((key, val));
            ev
        }
        fn invalidate(&mut self, key: u64) -> bool {
            let s = self.set(key);
            let before = s.len();
            s.retain(|e| e.0 != key);
            s.len() != before
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Lookup(u64),
        Touch(u64),
        Insert(u64, u64),
        Invalidate(u64),
        /// A TLB's miss: a lookup, then on a miss a fill of the same key.
        LookupFill(u64, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u64..64).prop_map(Step::Lookup),
            3 => (0u64..64).prop_map(Step::Touch),
            4 => (0u64..64, any::<u64>()).prop_map(|(k, v)| Step::Insert(k, v)),
            1 => (0u64..64).prop_map(Step::Invalidate),
            4 => (0u64..64, any::<u64>()).prop_map(|(k, v)| Step::LookupFill(k, v)),
        ]
    }

    proptest! {
        #[test]
        fn matches_lru_oracle(
            (sets, ways) in (1usize..5, prop_oneof![1usize..9, Just(12usize), Just(16usize), Just(17usize), Just(20usize)]),
            steps in prop::collection::vec(step(), 0..400),
        ) {
            let mut sa = SetAssoc::new("t", sets * ways, ways).unwrap();
            let mut or = Oracle::new(sets * ways, ways);
            for s in steps {
                match s {
                    Step::Lookup(k) => prop_assert_eq!(sa.lookup(k), or.lookup(k)),
                    Step::Touch(k) => {
                        let hit = or.lookup(k).is_some();
                        if !hit {
                            or.insert(k, 0);
                        }
                        prop_assert_eq!(sa.touch(k), hit);
                    }
                    Step::Insert(k, v) => {
                        // `fill` is `insert` for a key known to be absent.
                        let got = if sa.probe(k).is_none() { sa.fill(k, v) } else { sa.insert(k, v) };
                        prop_assert_eq!(got, or.insert(k, v));
                    }
                    Step::Invalidate(k) => prop_assert_eq!(sa.invalidate(k), or.invalidate(k)),
                    Step::LookupFill(k, v) => {
                        let got = sa.lookup(k);
                        prop_assert_eq!(got, or.lookup(k));
                        if got.is_none() {
                            prop_assert_eq!(sa.fill(k, v), or.insert(k, v));
                        }
                    }
                }
                let held: usize = or.sets.iter().map(Vec::len).sum();
                prop_assert_eq!(sa.len(), held);
                // The side-effect-free probe agrees with the oracle's contents.
                for k in 0..64 {
                    let n = or.sets.len() as u64;
                    let want = or.sets[usize::try_from(k % n).unwrap()]
                        .iter()
                        .find(|e| e.0 == k)
                        .map(|e| e.1);
                    prop_assert_eq!(sa.probe(k), want);
                }
            }
        }

        /// The methods with the way count known at compile time (`lookup_w`, `fill_w`,
        /// `touch_w`) are the generic ones: same answers and the same state (keys, values,
        /// orders, counts, the way used last) after every step, for every shape they serve,
        /// between generic inserts, invalidations and flushes.
        #[test]
        fn fixed_shape_is_generic(
            (sets, ways) in (prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
                             prop_oneof![Just(1usize), Just(2), Just(4), Just(8), Just(12), Just(16)]),
            steps in prop::collection::vec((step(), 0u8..40), 0..400),
        ) {
            fn lookup_w(sa: &mut SetAssoc, k: u64) -> Option<u64> {
                match sa.ways {
                    1 => sa.lookup_w::<1>(k),
                    2 => sa.lookup_w::<2>(k),
                    4 => sa.lookup_w::<4>(k),
                    8 => sa.lookup_w::<8>(k),
                    12 => sa.lookup_w::<12>(k),
                    _ => sa.lookup_w::<16>(k),
                }
            }
            fn fill_w(sa: &mut SetAssoc, k: u64, v: u64) -> Option<(u64, u64)> {
                match sa.ways {
                    1 => sa.fill_w::<1>(k, v),
                    2 => sa.fill_w::<2>(k, v),
                    4 => sa.fill_w::<4>(k, v),
                    8 => sa.fill_w::<8>(k, v),
                    12 => sa.fill_w::<12>(k, v),
                    _ => sa.fill_w::<16>(k, v),
                }
            }
            fn touch_w(sa: &mut SetAssoc, k: u64) -> bool {
                match sa.ways {
                    1 => sa.touch_w::<1>(k),
                    2 => sa.touch_w::<2>(k),
                    4 => sa.touch_w::<4>(k),
                    8 => sa.touch_w::<8>(k),
                    12 => sa.touch_w::<12>(k),
                    _ => sa.touch_w::<16>(k),
                }
            }
            let mut fixed = SetAssoc::new("f", sets * ways, ways).unwrap();
            prop_assert!(fixed.has_shape(ways));
            let mut generic = fixed.clone();
            for (s, flush) in steps {
                match s {
                    Step::Lookup(k) => prop_assert_eq!(lookup_w(&mut fixed, k), generic.lookup(k)),
                    Step::Touch(k) => prop_assert_eq!(touch_w(&mut fixed, k), generic.touch(k)),
                    Step::Insert(k, v) => {
                        let got = if fixed.probe(k).is_none() { fill_w(&mut fixed, k, v) } else { fixed.insert(k, v) };
                        prop_assert_eq!(got, generic.insert(k, v));
                    }
                    Step::Invalidate(k) => prop_assert_eq!(fixed.invalidate(k), generic.invalidate(k)),
                    Step::LookupFill(k, v) => {
                        let got = lookup_w(&mut fixed, k);
                        prop_assert_eq!(got, generic.lookup(k));
                        if got.is_none() {
                            prop_assert_eq!(fill_w(&mut fixed, k, v), generic.fill(k, v));
                        }
                    }
                }
                if flush == 0 {
                    fixed.flush();
                    generic.flush();
                }
                prop_assert_eq!(format!("{fixed:?}"), format!("{generic:?}"));
            }
        }

        /// LRU is a stack algorithm: with the same number of sets, more ways never miss more.
        #[test]
        fn more_ways_never_more_misses(
            sets in 1usize..4, ways in 1usize..6, extra in 1usize..4,
            keys in prop::collection::vec(0u64..48, 0..600),
        ) {
            let mut small = SetAssoc::new("s", sets * ways, ways).unwrap();
            let mut big = SetAssoc::new("b", sets * (ways + extra), ways + extra).unwrap();
            let (mut ms, mut mb) = (0, 0);
            for k in keys {
                if small.lookup(k).is_none() { ms += 1; small.insert(k, k); }
                if big.lookup(k).is_none() { mb += 1; big.insert(k, k); }
            }
            prop_assert!(mb <= ms);
        }
    }

    #[test]
    fn geometry_errors() {
        assert!(matches!(
            SetAssoc::new("x", 8, 0),
            Err(GeometryError::ZeroWays { .. })
        ));
        assert!(matches!(
            SetAssoc::new("x", 10, 4),
            Err(GeometryError::NotMultiple { .. })
        ));
        let mut d = SetAssoc::new("x", 0, 0).unwrap();
        assert!(d.is_disabled());
        assert_eq!(d.insert(1, 1), None);
        assert_eq!(d.lookup(1), None);
    }

    #[test]
    fn lru_eviction_order() {
        let mut sa = SetAssoc::new("t", 2, 2).unwrap();
        sa.insert(1, 10);
        sa.insert(2, 20);
        assert_eq!(sa.lookup(1), Some(10));
        assert_eq!(sa.insert(3, 30), Some((2, 20)));
        assert_eq!(sa.probe(2), None);
    }
}
