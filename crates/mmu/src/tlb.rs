//! The translation structures every scheme shares: L1 data and instruction TLBs (separate arrays
//! per page size, as on Intel cores), the second-level TLB (4 KiB and 2 MiB entries in one array,
//! 1 GiB in its own), and the guest-dimension page-walk caches (Intel paging-structure caches for
//! PML4E/PML5E, PDPTE and PDE entries). Entries are tagged with the process's address-space id
//! (PCID) so a context switch need not flush when tags are enabled.

use crate::config::MachineConfig;
use crate::setassoc::SetAssoc;
use crate::stats::Stats;
use compromis_types::{AccessKind, PageSize};

/// Key of a TLB entry: page number, page-size class and address-space id, packed so that the
/// low bits (the set index) are the page number's.
#[inline]
fn tlb_key(va: u64, size: PageSize, asid: u16) -> u64 {
    (va >> size.shift()) | (u64::from(size.leaf_level()) << 45) | (u64::from(asid & 0x7fff) << 47)
}

/// Whether a second-level TLB key (see [`tlb_key`]) is of a 2 MiB entry.
#[inline]
fn is_2m_key(key: u64) -> bool {
    (key >> 45) & 3 == u64::from(PageSize::Size2M.leaf_level())
}

/// Key of a page-walk-cache entry for the entry at `level` (4 = PML4E ...).
#[inline]
fn pwc_key(va: u64, level: u8, asid: u16) -> u64 {
    // Bits of the VA above the table indexed by `level - 1`: VA >> (12 + 9 * (level - 1)).
    // PML5E and PML4E entries share one cache: the level keeps their keys apart.
    (va >> (12 + 9 * (u32::from(level) - 1)))
        | (u64::from(level) << 44)
        | (u64::from(asid & 0x7fff) << 47)
}

/// [`SetAssoc::lookup`] of `t`, or, for `W` other than 0, [`SetAssoc::lookup_w`] (`t` of that
/// shape): the same result and state.
#[inline(always)]
fn lookup_as<const W: usize>(t: &mut SetAssoc, key: u64) -> Option<u64> {
    if W == 0 {
        t.lookup(key)
    } else {
        t.lookup_w::<W>(key)
    }
}

/// [`SetAssoc::fill`] of `t`, or, for `W` other than 0, [`SetAssoc::fill_w`] (`t` of that
/// shape): the same result and state.
#[inline(always)]
fn fill_as<const W: usize>(t: &mut SetAssoc, key: u64, val: u64) -> Option<(u64, u64)> {
    if W == 0 {
        t.fill(key, val)
    } else {
        t.fill_w::<W>(key, val)
    }
}

/// Where a TLB lookup hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbHit {
    /// Base of the final physical page.
    pub frame: u64,
    /// Its size.
    pub size: PageSize,
    /// Hit in L1 (true) or the second level (false).
    pub l1: bool,
}

/// TLBs of one core.
#[derive(Clone, Debug)]
pub struct Tlbs {
    l1d: [SetAssoc; 3],
    l1i: [SetAssoc; 2],
    stlb: SetAssoc,
    /// How many 2 MiB entries `stlb` holds: with none (a run on 4 KiB pages), a lookup looks for
    /// the 4 KiB entry only.
    stlb_2m: usize,
    stlb_1g: SetAssoc,
    /// Whether entries are tagged (PCID/VPID); untagged TLBs are flushed on a CR3 load.
    pub tagged: bool,
    /// See [`Tlbs::shape`].
    shape: [usize; 3],
}

impl Tlbs {
    /// TLBs sized by `cfg` (already validated).
    pub fn new(cfg: &MachineConfig) -> Tlbs {
        let t = &cfg.tlb;
        let b = |g: crate::config::Geometry, n: &str| {
            g.build(n).unwrap_or_else(|_| SetAssoc::disabled())
        };
        let l1d4 = b(t.l1d_4k, "l1d_4k");
        let l1i4 = b(t.l1i_4k, "l1i_4k");
        let stlb = b(t.stlb, "stlb");
        let shape = [&l1d4, &l1i4, &stlb].map(|t| {
            let w = t.ways();
            if t.has_shape(w) { w } else { 0 }
        });
        Tlbs {
            l1d: [l1d4, b(t.l1d_2m, "l1d_2m"), b(t.l1d_1g, "l1d_1g")],
            l1i: [l1i4, b(t.l1i_2m, "l1i_2m")],
            stlb,
            stlb_2m: 0,
            stlb_1g: b(t.stlb_1g, "stlb_1g"),
            tagged: t.tagged,
            shape,
        }
    }

    /// The way counts of the L1 DTLB's and ITLB's 4 KiB arrays and of the second level, each
    /// when [`SetAssoc::has_shape`] of it (else 0): the `D`, `I` and `S` a caller may give
    /// [`Tlbs::lookup_s`] and [`Tlbs::fill_s`] (chosen once per run of accesses).
    #[inline]
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// [`Tlbs::lookup`] of a fetch whose 4 KiB translation is in the L1 ITLB's way used last
    /// (fetches from one code page, one after another): the hit `lookup` gives, counted the same,
    /// without the call; `None` when that way does not hold it (then call `lookup`, which looks
    /// at the same way first: nothing was changed).
    #[inline(always)]
    pub fn fetch_repeat(&mut self, va: u64, asid: u16, stats: &mut Stats) -> Option<u64> {
        let frame = self.l1i[0].lookup_last(tlb_key(va, PageSize::Size4K, asid))?;
        stats.l1_hits += 1;
        Some(frame + (va & (PageSize::Size4K.bytes() - 1)))
    }

    /// Looks `va` up; counts L1/second-level hits and misses in `stats`.
    ///
    /// The 4 KiB key is the same in the L1 array and the second level, and is looked up first in
    /// both; the huge-page arrays only when they hold entries (a run on 4 KiB pages looks at two
    /// arrays, as the order below would: an empty array cannot hit).
    #[inline]
    pub fn lookup(
        &mut self,
        va: u64,
        asid: u16,
        kind: AccessKind,
        stats: &mut Stats,
    ) -> Option<TlbHit> {
        self.lookup_s::<0, 0, 0>(va, asid, kind, stats)
    }

    /// [`Tlbs::lookup`] with the way counts of the L1 DTLB's and ITLB's 4 KiB arrays and of the
    /// second level known at compile time (`D`, `I`, `S`: [`Tlbs::shape`]'s, or 0 for the
    /// generic path): the same result, counts and state.
    #[inline(always)]
    pub fn lookup_s<const D: usize, const I: usize, const S: usize>(
        &mut self,
        va: u64,
        asid: u16,
        kind: AccessKind,
        stats: &mut Stats,
    ) -> Option<TlbHit> {
        debug_assert!(
            (D == 0 || D == self.shape[0])
                && (I == 0 || I == self.shape[1])
                && (S == 0 || S == self.shape[2])
        );
        let k4 = tlb_key(va, PageSize::Size4K, asid);
        let fetch = kind == AccessKind::Fetch;
        let l1: &mut [SetAssoc] = if fetch { &mut self.l1i } else { &mut self.l1d };
        let [first, huge @ ..] = l1 else {
            unreachable!("L1 arrays for 4 KiB pages")
        };
        let l1_hit = if fetch {
            lookup_as::<I>(first, k4)
        } else {
            lookup_as::<D>(first, k4)
        };
        if let Some(frame) = l1_hit {
            stats.l1_hits += 1;
            return Some(TlbHit {
                frame,
                size: PageSize::Size4K,
                l1: true,
            });
        }
        for (i, t) in huge.iter_mut().enumerate() {
            if t.is_empty() {
                continue;
            }
            let size = PageSize::ALL[i + 1];
            if let Some(frame) = t.lookup(tlb_key(va, size, asid)) {
                stats.l1_hits += 1;
                return Some(TlbHit {
                    frame,
                    size,
                    l1: true,
                });
            }
        }
        stats.l1_misses += 1;
        let hit = if let Some(f) = lookup_as::<S>(&mut self.stlb, k4) {
            Some((f, PageSize::Size4K))
        } else if self.stlb_2m == 0 && self.stlb_1g.is_empty() {
            // No huge-page entry anywhere in the second level (a run on 4 KiB pages): the
            // searches below cannot hit.
            None
        } else {
            self.lookup_stlb_huge(va, asid)
        };
        match hit {
            Some((frame, size)) => {
                stats.stlb_hits += 1;
                self.fill_l1::<D, I>(tlb_key(va, size, asid), kind, frame, size);
                Some(TlbHit {
                    frame,
                    size,
                    l1: false,
                })
            }
            None => {
                stats.stlb_misses += 1;
                None
            }
        }
    }

    /// The second level's lookup of `va` in 2 MiB entries (when it holds any), then in the
    /// 1 GiB array, after its 4 KiB key missed.
    #[inline(never)]
    fn lookup_stlb_huge(&mut self, va: u64, asid: u16) -> Option<(u64, PageSize)> {
        if self.stlb_2m != 0
            && let Some(f) = self.stlb.lookup(tlb_key(va, PageSize::Size2M, asid))
        {
            return Some((f, PageSize::Size2M));
        }
        self.stlb_1g
            .lookup(tlb_key(va, PageSize::Size1G, asid))
            .map(|f| (f, PageSize::Size1G))
    }

    /// Whether the second level holds a translation of `va`, and its frame and size: a
    /// side-effect-free [`Tlbs::lookup`] (no LRU update, no statistics) for speed hints, which
    /// skip the walk hints of an access that will not walk. The L1 arrays are not looked at: an
    /// entry they hold is nearly always in the second level too (a miss here only means a hint
    /// given for nothing).
    #[inline]
    pub fn probe(&self, va: u64, asid: u16) -> Option<(u64, PageSize)> {
        let sizes: &[PageSize] = if self.stlb_2m == 0 {
            &[PageSize::Size4K]
        } else {
            &[PageSize::Size4K, PageSize::Size2M]
        };
        sizes
            .iter()
            .find_map(|&size| self.stlb.probe(tlb_key(va, size, asid)).map(|f| (f, size)))
            .or_else(|| {
                self.stlb_1g
                    .probe(tlb_key(va, PageSize::Size1G, asid))
                    .map(|f| (f, PageSize::Size1G))
            })
    }

    /// Starts loading the second-level sets [`Tlbs::probe`] of `va` reads into the host's caches
    /// (a speed hint; no state changes).
    #[inline]
    pub fn prefetch(&self, va: u64, asid: u16) {
        self.stlb.prefetch(tlb_key(va, PageSize::Size4K, asid));
        if self.stlb_2m != 0 {
            self.stlb.prefetch(tlb_key(va, PageSize::Size2M, asid));
        }
    }

    /// Fills the L1 array of `size` (for `kind`) with `key`, the TLB key of that size.
    /// `D` and `I`: as [`Tlbs::lookup_s`]'s.
    #[inline(always)]
    fn fill_l1<const D: usize, const I: usize>(
        &mut self,
        key: u64,
        kind: AccessKind,
        frame: u64,
        size: PageSize,
    ) {
        let i = usize::from(size.leaf_level() - 1);
        if kind == AccessKind::Fetch {
            if size == PageSize::Size4K {
                fill_as::<I>(&mut self.l1i[0], key, frame);
            } else if let Some(t) = self.l1i.get_mut(i) {
                // No 1 GiB ITLB array: such fetches are served by the second level.
                t.fill(key, frame);
            }
        } else if size == PageSize::Size4K {
            fill_as::<D>(&mut self.l1d[0], key, frame);
        } else {
            self.l1d[i].fill(key, frame);
        }
    }

    /// Installs a translation after a walk.
    #[inline]
    pub fn fill(&mut self, va: u64, asid: u16, kind: AccessKind, frame: u64, size: PageSize) {
        self.fill_s::<0, 0, 0>(va, asid, kind, frame, size);
    }

    /// [`Tlbs::fill`] with way counts known at compile time (as [`Tlbs::lookup_s`]'s): the same
    /// state after.
    #[inline(always)]
    pub fn fill_s<const D: usize, const I: usize, const S: usize>(
        &mut self,
        va: u64,
        asid: u16,
        kind: AccessKind,
        frame: u64,
        size: PageSize,
    ) {
        let key = tlb_key(va, size, asid);
        if size == PageSize::Size1G {
            self.stlb_1g.fill(key, frame);
        } else {
            if size == PageSize::Size2M {
                self.stlb_2m += 1;
            }
            if let Some((old, _)) = fill_as::<S>(&mut self.stlb, key, frame)
                && is_2m_key(old)
            {
                self.stlb_2m -= 1;
            }
        }
        self.fill_l1::<D, I>(key, kind, frame, size);
    }

    /// Removes every translation inside `[start, start + len)` (an INVLPG of a page of `len`
    /// bytes). A 2 MiB guest page may be held as 512 splintered 4 KiB entries (when the host maps
    /// it with 4 KiB pages), so every entry size is swept over the whole range.
    pub fn invalidate_range(&mut self, start: u64, len: u64, asid: u16) {
        for size in PageSize::ALL {
            let i = usize::from(size.leaf_level() - 1);
            let mut va = start & !size.mask();
            while va < start + len {
                let k = tlb_key(va, size, asid);
                self.l1d[i].invalidate(k);
                if let Some(t) = self.l1i.get_mut(i) {
                    t.invalidate(k);
                }
                if size == PageSize::Size1G {
                    self.stlb_1g.invalidate(k);
                } else if self.stlb.invalidate(k) && size == PageSize::Size2M {
                    self.stlb_2m -= 1;
                }
                va += size.bytes();
            }
        }
    }

    /// Removes every translation.
    pub fn flush(&mut self) {
        self.l1d
            .iter_mut()
            .chain(self.l1i.iter_mut())
            .for_each(SetAssoc::flush);
        self.stlb.flush();
        self.stlb_2m = 0;
        self.stlb_1g.flush();
    }
}

/// Paging-structure caches for one radix dimension, keyed by the address bits above each level.
#[derive(Clone, Debug)]
pub struct WalkCaches {
    /// Index 0: PDE cache (level 2), 1: PDPTE (level 3), 2: PML4E/PML5E (levels 4 and 5).
    caches: [SetAssoc; 3],
    /// Per cache (same index): its way count when [`SetAssoc::touch_w`] serves it (2 or 4 ways
    /// and a power-of-two number of sets, [`SetAssoc::has_shape`]: every preset's PML4E cache of
    /// 2 ways, PDPTE and PDE caches of 4), else 0 (the generic [`SetAssoc::touch`]).
    shapes: [u8; 3],
    /// `shapes` is every preset's, `[4, 4, 2]` (PDE and PDPTE caches of 4 ways, PML4E cache of
    /// 2): a 4-level walk to a 4 KiB leaf then probes them with each level's key and pass known
    /// at compile time ([`WalkCaches::skip`]).
    preset: bool,
}

impl WalkCaches {
    /// From three geometries: PML4E, PDPTE, PDE caches.
    pub fn new(pml4: &SetAssoc, pdpt: &SetAssoc, pd: &SetAssoc) -> WalkCaches {
        let shape = |c: &SetAssoc| match () {
            () if c.has_shape(4) => 4,
            () if c.has_shape(2) => 2,
            () => 0,
        };
        let shapes = [shape(pd), shape(pdpt), shape(pml4)];
        WalkCaches {
            caches: [pd.clone(), pdpt.clone(), pml4.clone()],
            preset: shapes == [4, 4, 2],
            shapes,
        }
    }

    /// [`SetAssoc::touch`] of cache `i` (0 = PDE, 1 = PDPTE, 2 = PML4E), by its fixed-shape
    /// path when it has one (same answer, same state after).
    #[inline(always)]
    fn touch_at(&mut self, i: usize, key: u64) -> bool {
        match self.shapes[i] {
            4 => self.caches[i].touch_w::<4>(key),
            2 => self.caches[i].touch_w::<2>(key),
            _ => self.caches[i].touch(key),
        }
    }

    #[cfg(test)]
    fn cache(&mut self, level: u8) -> &mut SetAssoc {
        &mut self.caches[usize::from(level.clamp(2, 4) - 2)]
    }

    /// Given a walk of `levels` levels ending at a leaf of `leaf_level`, returns how many of the
    /// walk's entry reads a cache hit lets the walker skip (0 = start at the root), and refills
    /// the caches with the non-leaf entries the walk will read.
    ///
    /// The deepest level's probe is inlined at the walk (it hits for nearly every walk of a
    /// working set larger than the TLBs: the PDE cache covers 64 MiB with the default
    /// geometry); the levels above it are probed out of line.
    #[inline(always)]
    pub fn skip(&mut self, va: u64, asid: u16, levels: u8, leaf_level: u8) -> u8 {
        // The deepest non-leaf entry is at `leaf_level + 1`; try it first. A miss allocates the
        // entry (the walk is about to read it); the first hit ends the search.
        let first = leaf_level + 1;
        if first > levels {
            return 0;
        }
        if self.preset && levels == 4 && first == 2 {
            // Nearly every walk: the presets' caches, a 4-level walk to a 4 KiB leaf.
            if self.caches[0].touch_w::<4>(pwc_key(va, 2, asid)) {
                return 3;
            }
            return self.skip_preset_above(va, asid);
        }
        let key = pwc_key(va, first, asid);
        if self.touch_at(usize::from(first.clamp(2, 4) - 2), key) {
            return levels - first + 1;
        }
        self.skip_from(va, asid, levels, first + 1)
    }

    /// [`WalkCaches::skip`] of the presets' caches on a 4-level walk to a 4 KiB leaf, after a
    /// PDE-cache miss: the PDPTE cache, then the PML4E cache.
    #[inline(never)]
    fn skip_preset_above(&mut self, va: u64, asid: u16) -> u8 {
        if self.caches[1].touch_w::<4>(pwc_key(va, 3, asid)) {
            return 2;
        }
        u8::from(self.caches[2].touch_w::<2>(pwc_key(va, 4, asid)))
    }

    /// [`WalkCaches::skip`] from `level` up, after a miss below it.
    #[inline(never)]
    fn skip_from(&mut self, va: u64, asid: u16, levels: u8, level: u8) -> u8 {
        for level in level..=levels {
            if self.touch_at(usize::from(level.clamp(2, 4) - 2), pwc_key(va, level, asid)) {
                return levels - level + 1;
            }
        }
        0
    }

    /// Removes every entry.
    pub fn flush(&mut self) {
        self.caches.iter_mut().for_each(SetAssoc::flush);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MachineConfig;

    #[test]
    fn pwc_skips_after_first_walk() {
        let g = |e, w| SetAssoc::new("x", e, w).unwrap();
        let mut w = WalkCaches::new(&g(2, 2), &g(4, 4), &g(32, 4));
        assert_eq!(w.skip(0x7000_1234_5000, 1, 4, 1), 0);
        // Same 2 MiB region: the PDE cache hits, only the PTE is read.
        assert_eq!(w.skip(0x7000_1234_6000, 1, 4, 1), 3);
        // Same 1 GiB region, other 2 MiB: the PDPTE cache hits.
        assert_eq!(w.skip(0x7000_1260_0000, 1, 4, 1), 2);
        // Other address space: nothing.
        assert_eq!(w.skip(0x7000_1234_6000, 2, 4, 1), 0);
        // A 2 MiB leaf is read after a PDPTE hit.
        assert_eq!(w.skip(0x7000_1234_6000, 1, 4, 2), 2);
    }

    /// [`WalkCaches::skip`] written plainly: every level from the deepest non-leaf one up, the
    /// first hit ends the search.
    fn skip_plain(w: &mut WalkCaches, va: u64, asid: u16, levels: u8, leaf_level: u8) -> u8 {
        for level in (leaf_level + 1)..=levels {
            if w.cache(level).touch(pwc_key(va, level, asid)) {
                return levels - level + 1;
            }
        }
        0
    }

    proptest::proptest! {
        /// `skip` (its deepest probe inlined, the others out of line) is the plain loop over the
        /// levels: same answers, same cache contents and order after every walk, for 4- and
        /// 5-level walks to 4 KiB, 2 MiB and 1 GiB leaves, with caches small enough to evict.
        #[test]
        fn skip_is_the_plain_loop(
            // The presets' shapes ([4, 4, 2]: their own path) one time in four.
            geometries in proptest::prop_oneof![
                3 => proptest::array::uniform3(0usize..6),
                1 => proptest::strategy::Just([0usize, 1, 2]),
            ],
            steps in proptest::collection::vec((0u64..64, 0u8..3, proptest::bool::ANY, 0u16..2), 0..300),
        ) {
            // (entries, ways, the shape `touch_at` takes): 4 and 2 ways over a power-of-two
            // number of sets take `touch_w`, the others (3 sets, 1 way) the generic `touch`.
            const G: [(usize, usize, u8); 6] =
                [(8, 4, 4), (4, 4, 4), (2, 2, 2), (4, 2, 2), (6, 2, 0), (2, 1, 0)];
            let g = |i: usize| SetAssoc::new("x", G[i].0, G[i].1).unwrap();
            let [pd, pdpt, pml4] = geometries;
            let mut fast = WalkCaches::new(&g(pml4), &g(pdpt), &g(pd));
            proptest::prop_assert_eq!(fast.shapes, [G[pd].2, G[pdpt].2, G[pml4].2]);
            let mut plain = fast.clone();
            for (page, leaf, five, asid) in steps {
                // Addresses in a few 2 MiB, 1 GiB and 512 GiB regions.
                let va = (page % 4) * (1 << 21) + (page / 4 % 4) * (1 << 30) + (page / 16) * (1 << 39);
                let levels = if five { 5 } else { 4 };
                proptest::prop_assert_eq!(
                    fast.skip(va, asid, levels, leaf + 1),
                    skip_plain(&mut plain, va, asid, levels, leaf + 1)
                );
                proptest::prop_assert_eq!(format!("{fast:?}"), format!("{plain:?}"));
            }
        }
    }

    proptest::proptest! {
        /// The count of 2 MiB second-level entries (which lets a lookup skip their probe) stays
        /// the number of such keys the array holds, through fills, evictions, invalidations and
        /// flushes; and lookups agree with the entries held.
        #[test]
        fn stlb_2m_count_tracks_the_array(
            steps in proptest::collection::vec((0u8..8, 0u64..64, proptest::bool::ANY), 0..300),
        ) {
            // A small second level, so that fills evict.
            let mut cfg = MachineConfig::default();
            cfg.tlb.stlb = crate::config::Geometry { entries: 8, ways: 2 };
            let mut t = Tlbs::new(&cfg);
            let mut s = Stats::default();
            for (op, page, huge) in steps {
                let size = if huge { PageSize::Size2M } else { PageSize::Size4K };
                // Pages spread over 64 x 2 MiB, several 4 KiB pages per 2 MiB region.
                let va = 0x7f00_0000_0000 + page * (2 << 20) + (page % 4) * 4096;
                match op {
                    0..=3 => {
                        if t.lookup(va, 1, AccessKind::Load, &mut s).is_none() {
                            t.fill(va, 1, AccessKind::Load, 0x4000_0000 + page * (2 << 20), size);
                        }
                    }
                    4..=5 => t.invalidate_range(va & !size.mask(), size.bytes(), 1),
                    6 => {
                        let hit = t.lookup(va, 1, AccessKind::Load, &mut s);
                        if let Some(h) = hit {
                            proptest::prop_assert!(h.frame >= 0x4000_0000);
                        }
                    }
                    _ => {
                        if page % 16 == 0 {
                            t.flush();
                        }
                    }
                }
                let held = t.stlb.keys().filter(|&k| is_2m_key(k)).count();
                proptest::prop_assert_eq!(t.stlb_2m, held);
            }
        }
    }

    proptest::proptest! {
        /// A fetch tried first with `fetch_repeat` (then `lookup` if it says `None`) gives what
        /// `lookup` alone gives, counts the same, and leaves the TLBs in the same state (every
        /// key, value, stamp, clock and hint), through fetches and loads of a few pages of every
        /// size, fills, invalidations and flushes.
        #[test]
        fn fetch_repeat_is_the_lookup_hit(
            steps in proptest::collection::vec((0u8..8, 0u64..12, 0u8..3, 0u16..2), 0..300),
        ) {
            let mut cfg = MachineConfig::default();
            // Small arrays: fills evict, and the state compared after each step is short.
            cfg.tlb.l1i_4k = crate::config::Geometry { entries: 4, ways: 2 };
            cfg.tlb.l1d_4k = crate::config::Geometry { entries: 4, ways: 2 };
            cfg.tlb.stlb = crate::config::Geometry { entries: 8, ways: 2 };
            let (mut fast, mut plain) = (Tlbs::new(&cfg), Tlbs::new(&cfg));
            let (mut s1, mut s2) = (Stats::default(), Stats::default());
            for (op, page, sz, asid) in steps {
                let size = PageSize::ALL[usize::from(sz)];
                let va = 0x7f00_0000_0000 + (page % 4) * (1 << 30) + (page / 4) * 4096 + u64::from(op) * 8;
                match op {
                    0..=3 => {
                        let a = fast
                            .fetch_repeat(va, asid, &mut s1)
                            .or_else(|| {
                                fast.lookup(va, asid, AccessKind::Fetch, &mut s1)
                                    .map(|h| h.frame + (va & (h.size.bytes() - 1)))
                            });
                        let b = plain
                            .lookup(va, asid, AccessKind::Fetch, &mut s2)
                            .map(|h| h.frame + (va & (h.size.bytes() - 1)));
                        proptest::prop_assert_eq!(a, b);
                        if a.is_none() {
                            let frame = 0x4000_0000 + page * (1 << 30);
                            fast.fill(va, asid, AccessKind::Fetch, frame, size);
                            plain.fill(va, asid, AccessKind::Fetch, frame, size);
                        }
                    }
                    4 | 5 => {
                        let a = fast.lookup(va, asid, AccessKind::Load, &mut s1);
                        proptest::prop_assert_eq!(a, plain.lookup(va, asid, AccessKind::Load, &mut s2));
                        if a.is_none() {
                            let frame = 0x4000_0000 + page * (1 << 30);
                            fast.fill(va, asid, AccessKind::Load, frame, size);
                            plain.fill(va, asid, AccessKind::Load, frame, size);
                        }
                    }
                    6 => {
                        fast.invalidate_range(va & !size.mask(), size.bytes(), asid);
                        plain.invalidate_range(va & !size.mask(), size.bytes(), asid);
                    }
                    _ => {
                        if page % 4 == 0 {
                            fast.flush();
                            plain.flush();
                        }
                    }
                }
                proptest::prop_assert_eq!(&s1, &s2);
                proptest::prop_assert_eq!(format!("{fast:?}"), format!("{plain:?}"));
            }
        }
    }

    proptest::proptest! {
        /// `lookup_s` and `fill_s` with the way counts of the TLBs' shape (Skylake-SP's 4, 8 and
        /// 12 ways, Ice Lake-SP's 16-way second level) are `lookup` and `fill`: same answers, same
        /// counts, same state after every step, through fetches and loads of pages of every
        /// size, fills that evict, invalidations and flushes.
        #[test]
        fn shaped_lookups_are_the_generic(
            sixteen in proptest::bool::ANY,
            steps in proptest::collection::vec((0u8..8, 0u64..96, 0u8..3, 0u16..2), 0..300),
        ) {
            let mut cfg = MachineConfig::default();
            let g = |entries, ways| crate::config::Geometry { entries, ways };
            // Small arrays of the presets' associativities: fills evict.
            cfg.tlb.l1d_4k = g(8, 4);
            cfg.tlb.l1i_4k = g(16, 8);
            cfg.tlb.stlb = if sixteen { g(32, 16) } else { g(24, 12) };
            let (mut fast, mut plain) = (Tlbs::new(&cfg), Tlbs::new(&cfg));
            proptest::prop_assert_eq!(fast.shape(), [4, 8, if sixteen { 16 } else { 12 }]);
            let (mut s1, mut s2) = (Stats::default(), Stats::default());
            for (op, page, sz, asid) in steps {
                let size = PageSize::ALL[usize::from(sz)];
                let va = 0x7f00_0000_0000 + (page % 4) * (1 << 30) + (page / 4) * 4096;
                let kind = [AccessKind::Load, AccessKind::Store, AccessKind::Fetch][usize::from(op % 3)];
                match op {
                    0..=5 => {
                        let a = if sixteen {
                            fast.lookup_s::<4, 8, 16>(va, asid, kind, &mut s1)
                        } else {
                            fast.lookup_s::<4, 8, 12>(va, asid, kind, &mut s1)
                        };
                        proptest::prop_assert_eq!(a, plain.lookup(va, asid, kind, &mut s2));
                        if a.is_none() {
                            let frame = 0x4000_0000 + page * (1 << 30);
                            if sixteen {
                                fast.fill_s::<4, 8, 16>(va, asid, kind, frame, size);
                            } else {
                                fast.fill_s::<4, 8, 12>(va, asid, kind, frame, size);
                            }
                            plain.fill(va, asid, kind, frame, size);
                        }
                    }
                    6 => {
                        fast.invalidate_range(va & !size.mask(), size.bytes(), asid);
                        plain.invalidate_range(va & !size.mask(), size.bytes(), asid);
                    }
                    _ => {
                        if page % 8 == 0 {
                            fast.flush();
                            plain.flush();
                        }
                    }
                }
                proptest::prop_assert_eq!(&s1, &s2);
                proptest::prop_assert_eq!(format!("{fast:?}"), format!("{plain:?}"));
            }
        }
    }

    proptest::proptest! {
        /// `probe` answers what a `lookup` would with empty L1 arrays (a second-level hit's
        /// frame and size, or a miss), and changes nothing: a TLB probed before every step behaves exactly as one never
        /// probed (same answers, same statistics, same entries).
        #[test]
        fn probe_is_a_lookup_without_effects(
            steps in proptest::collection::vec((0u8..8, 0u64..48, 0u8..3, 0u16..3), 0..300),
        ) {
            let mut cfg = MachineConfig::default();
            cfg.tlb.stlb = crate::config::Geometry { entries: 8, ways: 2 };
            cfg.tlb.l1d_4k = crate::config::Geometry { entries: 4, ways: 2 };
            let (mut probed, mut plain) = (Tlbs::new(&cfg), Tlbs::new(&cfg));
            let (mut s1, mut s2) = (Stats::default(), Stats::default());
            for (op, page, sz, asid) in steps {
                let size = PageSize::ALL[usize::from(sz)];
                let va = 0x7f00_0000_0000 + page * (1 << 30) / 8 + (page % 4) * 4096;
                let kind = if op == 7 { AccessKind::Fetch } else { AccessKind::Load };
                let p = probed.probe(va, asid);
                // The oracle: a lookup in a copy without the L1 arrays' entries.
                let mut oracle = probed.clone();
                oracle.l1d.iter_mut().chain(oracle.l1i.iter_mut()).for_each(SetAssoc::flush);
                let want = oracle
                    .lookup(va, asid, AccessKind::Load, &mut Stats::default())
                    .map(|h| (h.frame, h.size));
                proptest::prop_assert_eq!(p, want);
                match op {
                    0..=4 | 7 => {
                        let a = probed.lookup(va, asid, kind, &mut s1);
                        let b = plain.lookup(va, asid, kind, &mut s2);
                        proptest::prop_assert_eq!(a, b);
                        if a.is_none() {
                            let frame = 0x4000_0000 + page * (1 << 30);
                            probed.fill(va, asid, kind, frame, size);
                            plain.fill(va, asid, kind, frame, size);
                        }
                    }
                    5 => {
                        probed.invalidate_range(va & !size.mask(), size.bytes(), asid);
                        plain.invalidate_range(va & !size.mask(), size.bytes(), asid);
                    }
                    _ => {
                        if page % 8 == 0 {
                            probed.flush();
                            plain.flush();
                        }
                    }
                }
                proptest::prop_assert_eq!(&s1, &s2);
                proptest::prop_assert_eq!(
                    probed.stlb.keys().collect::<Vec<_>>(),
                    plain.stlb.keys().collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn tlb_hit_miss_and_invalidate() {
        let mut t = Tlbs::new(&MachineConfig::default());
        let mut s = Stats::default();
        assert!(t.lookup(0x1234_5678, 1, AccessKind::Load, &mut s).is_none());
        t.fill(
            0x1234_5678,
            1,
            AccessKind::Load,
            0xaa20_0000,
            PageSize::Size2M,
        );
        let h = t.lookup(0x1230_0000, 1, AccessKind::Load, &mut s).unwrap();
        assert_eq!(
            (h.frame, h.size, h.l1),
            (0xaa20_0000, PageSize::Size2M, true)
        );
        // The instruction side misses L1 but hits the unified second level.
        let h = t.lookup(0x1230_0000, 1, AccessKind::Fetch, &mut s).unwrap();
        assert!(!h.l1);
        assert!(t.lookup(0x1230_0000, 2, AccessKind::Load, &mut s).is_none());
        t.invalidate_range(0x1230_0000, 4096, 1);
        assert!(t.lookup(0x1230_0000, 1, AccessKind::Load, &mut s).is_none());
        assert_eq!((s.l1_hits, s.stlb_hits, s.stlb_misses), (1, 1, 3));
        // A 2 MiB page held as splintered 4 KiB entries: invalidating the 2 MiB range drops them all.
        for i in 0..4u64 {
            t.fill(
                0x4000_0000 + i * 0x8_0000,
                1,
                AccessKind::Load,
                0x9000_0000 + i * 0x8_0000,
                PageSize::Size4K,
            );
        }
        t.invalidate_range(0x4000_0000, 2 << 20, 1);
        for i in 0..4u64 {
            assert!(
                t.lookup(0x4000_0000 + i * 0x8_0000, 1, AccessKind::Load, &mut s)
                    .is_none()
            );
        }
    }
}
