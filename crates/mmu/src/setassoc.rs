//! A set-associative, true-LRU lookup structure: the building block of every TLB, page-walk cache
//! and nested TLB in the simulator (the data caches keep only line numbers, in
//! [`crate::cache::LineSets`]).
//!
//! Keys are `u64` tags (already including any page-number / ASID packing the caller wants); the set
//! index is `key % sets`. Each entry carries a `u64` value. A structure with 0 entries is disabled:
//! every lookup misses and inserts are dropped. The hot path (`lookup`, `insert`) does not allocate.
//!
//! Layout and speed: keys, values and last-use stamps are three flat arrays (structure of arrays,
//! one set is `ways` consecutive keys), so a lookup scans one short run of keys. Two shortcuts
//! change no result: a structure that holds nothing answers a miss without looking (a TLB array
//! of huge pages that the run never uses costs one compare), and the way used last is checked
//! before the set is scanned (a key lives in one way only, so a match there is the hit).

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

/// A set-associative LRU array of `(key, value)` pairs.
///
/// True LRU by last-use stamps: each way records the tick of its last use, an empty way has stamp
/// 0 (older than any use), so the victim is always the way with the smallest stamp.
#[derive(Clone, Debug)]
pub struct SetAssoc {
    sets: usize,
    /// `sets - 1` when `sets` is a power of two (the set index is then a mask, not a division).
    mask: Option<u64>,
    ways: usize,
    /// `sets * ways` keys; `EMPTY` marks an unused way.
    keys: Box<[u64]>,
    vals: Box<[u64]>,
    /// Last-use tick of each way (0 = empty).
    stamps: Box<[u64]>,
    clock: u64,
    /// Ways in use (not `EMPTY`).
    live: usize,
    /// Index of the way used last (a hint: checked before the set is scanned).
    last: usize,
    /// The victim the last missed lookup found while scanning its set, for the fill that
    /// usually follows (a TLB miss, then a walk, then the fill): valid for `victim.key` while
    /// the clock is `victim.clock` (no stamp changed since) and no entry was removed.
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
        Ok(SetAssoc {
            sets,
            mask: sets.is_power_of_two().then(|| sets as u64 - 1),
            ways,
            keys: vec![EMPTY; entries].into_boxed_slice(),
            vals: vec![0; entries].into_boxed_slice(),
            stamps: vec![0; entries].into_boxed_slice(),
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
            ways: 0,
            keys: Box::new([]),
            vals: Box::new([]),
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

    /// Whether the structure holds no entry (every lookup misses).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    #[inline]
    fn set_start(&self, key: u64) -> usize {
        // The set index is below `sets`, a usize.
        #[allow(clippy::cast_possible_truncation)]
        let set = match self.mask {
            Some(m) => (key & m) as usize,
            None => (key % self.sets as u64) as usize,
        };
        set * self.ways
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

    /// Makes way `i` the most recently used. A way that already is (its stamp is the clock) keeps
    /// its stamp: the order of every set stays the same, and the set scan is skipped next time.
    #[inline]
    fn use_way(&mut self, i: usize) {
        if self.stamps[i] != self.clock {
            self.clock += 1;
            self.stamps[i] = self.clock;
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
            self.use_way(last);
            return Some(self.vals[last]);
        }
        self.lookup_held(key)
    }

    /// [`SetAssoc::lookup`] when the way used last holds `key` (its hit, the same LRU update);
    /// `None`, with nothing changed, otherwise.
    #[inline(always)]
    pub fn lookup_last(&mut self, key: u64) -> Option<u64> {
        let last = self.last;
        if self.live == 0 || self.keys[last] != key {
            return None;
        }
        self.use_way(last);
        Some(self.vals[last])
    }

    /// [`SetAssoc::lookup`] of a structure that holds entries, its way used last not holding
    /// `key`. On a miss, the same scan of the set finds the way a [`SetAssoc::fill`] of `key`
    /// would evict, and remembers it.
    #[inline(never)]
    fn lookup_held(&mut self, key: u64) -> Option<u64> {
        match self.scan(key) {
            Ok(i) => {
                self.use_way(i);
                Some(self.vals[i])
            }
            Err(way) => {
                self.victim = Victim {
                    key,
                    clock: self.clock,
                    way,
                };
                None
            }
        }
    }

    /// One scan of `key`'s set: `Ok` with the way that holds it, or `Err` with the least recently
    /// used way (the one a fill of `key` evicts; an empty way, stamp 0, first).
    #[inline(always)]
    fn scan(&self, key: u64) -> Result<usize, usize> {
        let start = self.set_start(key);
        // The usual associativities with their way count known at compile time: the loops
        // unroll into compares and conditional moves, no branch per way.
        match self.ways {
            4 => return self.scan_fixed::<4>(start, key),
            8 => return self.scan_fixed::<8>(start, key),
            12 => return self.scan_fixed::<12>(start, key),
            16 => return self.scan_fixed::<16>(start, key),
            _ => {}
        }
        let keys = &self.keys[start..start + self.ways];
        let stamps = &self.stamps[start..start + self.ways];
        let mut victim = 0;
        let mut oldest = u64::MAX;
        for (w, (&k, &s)) in keys.iter().zip(stamps).enumerate() {
            if k == key {
                return Ok(start + w);
            }
            if s < oldest {
                oldest = s;
                victim = w;
            }
        }
        Err(start + victim)
    }

    /// [`SetAssoc::scan`] of a set of `N` ways, whole (no early exit: most scans of a TLB miss
    /// read every way anyway), branch-free: the first way holding `key`, else the first way of
    /// the smallest stamp, as the loop of [`SetAssoc::scan`] finds them.
    #[inline(always)]
    fn scan_fixed<const N: usize>(&self, start: usize, key: u64) -> Result<usize, usize> {
        let (Some(keys), Some(stamps)) = (
            self.keys[start..].first_chunk::<N>(),
            self.stamps[start..].first_chunk::<N>(),
        ) else {
            unreachable!("a set of {N} ways")
        };
        let mut hit = N;
        for w in (0..N).rev() {
            hit = if keys[w] == key { w } else { hit };
        }
        if hit < N {
            return Ok(start + hit);
        }
        let mut victim = 0;
        let mut oldest = u64::MAX;
        for (w, &s) in stamps.iter().enumerate() {
            let older = s < oldest;
            oldest = if older { s } else { oldest };
            victim = if older { w } else { victim };
        }
        Err(start + victim)
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
        let start = self.set_start(key);
        if let Some(i) = self.find(start, key) {
            self.use_way(i);
            self.vals[i] = val;
            return None;
        }
        self.fill_at(start, key, val)
    }

    /// Inserts `key`, known to be absent (it just missed), as most recently used; returns the
    /// evicted `(key, value)`, if any. Cheaper than [`SetAssoc::insert`]: no search for the key.
    #[inline]
    pub fn fill(&mut self, key: u64, val: u64) -> Option<(u64, u64)> {
        debug_assert!(
            self.sets == 0 || self.probe(key).is_none(),
            "fill of a present key"
        );
        if self.sets == 0 {
            return None;
        }
        self.fill_at(self.set_start(key), key, val)
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
            self.use_way(self.last);
            return true;
        }
        let i = match self.scan(key) {
            Ok(i) => {
                self.use_way(i);
                return true;
            }
            Err(i) => i,
        };
        if self.keys[i] == EMPTY {
            self.live += 1;
        }
        self.clock += 1;
        self.keys[i] = key;
        self.vals[i] = 0;
        self.stamps[i] = self.clock;
        self.last = i;
        false
    }

    #[inline]
    fn fill_at(&mut self, start: usize, key: u64, val: u64) -> Option<(u64, u64)> {
        debug_assert_ne!(key, EMPTY, "u64::MAX is reserved");
        let i = if self.victim.key == key && self.victim.clock == self.clock {
            // The lookup that just missed `key` found the victim, and no stamp changed since.
            self.victim.way
        } else {
            let stamps = &self.stamps[start..start + self.ways];
            let mut victim = 0;
            let mut oldest = stamps[0];
            for (w, &s) in stamps.iter().enumerate() {
                if s < oldest {
                    oldest = s;
                    victim = w;
                }
            }
            start + victim
        };
        let evicted = (self.keys[i] != EMPTY).then(|| (self.keys[i], self.vals[i]));
        if evicted.is_none() {
            self.live += 1;
        }
        self.clock += 1;
        self.keys[i] = key;
        self.vals[i] = val;
        self.stamps[i] = self.clock;
        self.last = i;
        evicted
    }

    /// Removes `key`; returns whether it was present.
    pub fn invalidate(&mut self, key: u64) -> bool {
        if self.live == 0 {
            return false;
        }
        match self.find(self.set_start(key), key) {
            Some(i) => {
                self.keys[i] = EMPTY;
                self.stamps[i] = 0;
                self.live -= 1;
                self.victim = Victim::NONE;
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
            (sets, ways) in (1usize..5, prop_oneof![1usize..9, Just(12usize), Just(16usize)]),
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
