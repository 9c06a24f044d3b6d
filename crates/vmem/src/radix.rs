//! An x86-64-style radix page table (4 or 5 levels, 512 entries of 8 bytes per table page).
//!
//! The table is generic over what it maps: the guest table maps gVA -> gPA with table pages in
//! guest-physical frames, the EPT maps gPA -> hPA with table pages in host frames, the shadow
//! table maps gVA -> hPA. Addresses are therefore raw `u64` *inside* this module only; the typed
//! wrappers ([`crate::guest`], [`crate::backing`]) give them their address space.
//!
//! Table pages live in an arena; an entry stores either the arena index of the next table (plus
//! present bit) or the leaf's target frame (plus present and leaf bits). Every table page has a
//! physical base address so that a walk can report the exact address of each entry it reads —
//! the addresses the cycle model sends through the data caches.

/// Entry bit: present.
const PRESENT: u64 = 1;
/// Entry bit: leaf (a page, not a table pointer).
const LEAF: u64 = 2;
/// Entries per table page.
pub const ENTRIES: usize = 512;

/// Starts loading the host cache line of `r` (a hint, no architectural effect). Used to hide the
/// simulator's own cache misses on the simulated machine's tables.
#[inline]
pub fn prefetch(r: &u64) {
    compromis_types::hint::prefetch_line(std::ptr::from_ref(r).cast());
}

/// Number of the level (1 = PT ... 5 = PML5) at which an index is taken.
#[inline]
fn index(va: u64, level: u8) -> usize {
    // 9 bits per level above the 12-bit page offset; the mask keeps the value below 512.
    ((va >> (12 + 9 * (u32::from(level) - 1))) & 0x1ff) as usize
}

/// Bytes of a leaf at `level` (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB).
#[inline]
fn leaf_bytes(level: u8) -> u64 {
    1u64 << (12 + 9 * (u32::from(level) - 1))
}

/// What [`RadixTable::map`] reports when the entry `e` (present) at `level` is in the way:
/// either a leaf or a table of smaller pages already covers part of the range.
fn existing(e: u64, level: u8) -> Leaf {
    if e & LEAF != 0 {
        Leaf {
            target: e & !0xfff,
            level,
        }
    } else {
        Leaf {
            target: 0,
            level: level - 1,
        }
    }
}

/// A leaf found by a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Base address of the target frame.
    pub target: u64,
    /// Level of the leaf: 1 (4 KiB), 2 (2 MiB), 3 (1 GiB).
    pub level: u8,
}

impl Leaf {
    /// Bytes covered by the leaf.
    #[inline]
    pub fn bytes(&self) -> u64 {
        1u64 << (12 + 9 * (u32::from(self.level) - 1))
    }
    /// The target address of `va` through this leaf.
    #[inline]
    pub fn translate(&self, va: u64) -> u64 {
        self.target | (va & (self.bytes() - 1))
    }
}

/// The entries a walk read, top level first.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkPath {
    /// Address of each entry read (`table base + 8 * index`), top level first.
    pub entry_addrs: [u64; 5],
    /// How many entries were read.
    pub len: u8,
    /// The leaf, if the walk found one.
    pub leaf: Option<Leaf>,
}

impl WalkPath {
    /// Address of the last entry read (the leaf, when the walk found one).
    #[inline]
    pub fn last_entry(&self) -> Option<u64> {
        let i = usize::from(self.len).checked_sub(1)?;
        self.entry_addrs.get(i).copied()
    }
}

/// The end of a walk without its path ([`RadixTable::last_two`]): the address of the entry read
/// just before the last one (`None` when the walk reads one entry only, or when not known), the
/// address of the last entry, and the leaf, if the walk found one.
pub type LastTwo = (Option<u64>, u64, Option<Leaf>);

/// A walk of one page planned ahead ([`RadixTable::plan_walk`]): where the walk stops (the last
/// entry it reads), found while its entry was prefetched, and read by
/// [`RadixTable::finish_last`] while the table has the version the plan was made at. The
/// default plan is of no page (never finished).
#[derive(Clone, Copy, Debug)]
pub struct PlannedWalk {
    /// The 4 KiB page number planned (`va >> 12`).
    page: u64,
    /// The table's version when planned.
    version: u64,
    /// Arena position of the last entry the walk reads (`node * ENTRIES + index`).
    last: usize,
    /// Its level.
    level: u8,
    /// Address of the entry the walk reads just before the last one (the one that points to the
    /// last entry's table page), [`NO_ENTRY`] when the last entry is the root's.
    above: u64,
}

/// [`PlannedWalk`]'s `above` when the walk reads one entry only.
const NO_ENTRY: u64 = u64::MAX;

impl Default for PlannedWalk {
    fn default() -> PlannedWalk {
        PlannedWalk {
            page: u64::MAX,
            version: 0,
            last: 0,
            level: 0,
            above: NO_ENTRY,
        }
    }
}

/// What a mapping change wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writes {
    /// Page-table entries written (links to new tables and leaves).
    pub entries: u32,
    /// Table pages allocated.
    pub new_tables: u32,
}

impl std::ops::AddAssign for Writes {
    fn add_assign(&mut self, o: Writes) {
        self.entries += o.entries;
        self.new_tables += o.new_tables;
    }
}

/// A radix page table. Two tables are equal when they have the same levels, table pages (in
/// arena order, at the same bases) and entries.
#[derive(Clone, Debug)]
pub struct RadixTable {
    /// Changes whenever an entry is written, to a value no table held before (a clone keeps
    /// its original's until either is changed: the same entries): what a [`LeafTables`] memo
    /// checks. Not part of a table's value (equality ignores it).
    version: u64,
    levels: u8,
    /// Physical base address of each table page, by arena index.
    bases: Vec<u64>,
    /// The entries of every table page, table `t` at `t * ENTRIES..(t + 1) * ENTRIES` (one flat
    /// array: a walk step is a single load).
    entries: Vec<u64>,
}

impl PartialEq for RadixTable {
    fn eq(&self, o: &RadixTable) -> bool {
        self.levels == o.levels && self.bases == o.bases && self.entries == o.entries
    }
}

impl Eq for RadixTable {}

/// A source of table versions: each write to any table takes a value never taken before.
static VERSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[inline]
fn fresh_version() -> u64 {
    VERSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Slots of a [`LeafTables`] memo.
const LEAF_SLOTS: usize = 64;

/// A walker's memo of the level-1 table pages of the 2 MiB regions it walked lately (by region,
/// direct-mapped), for [`RadixTable::last_two_memo`]: a walk of a remembered region reads its
/// leaf entry only, not the three or four entries above it (a chain of dependent loads). Valid
/// for one table version (see [`RadixTable`]'s `version`); a write to the table, or a walk of
/// another table, forgets it all. Speed only: the answers are [`RadixTable::last_entry`]'s.
#[derive(Clone, Debug)]
pub struct LeafTables {
    version: u64,
    /// `(va >> 21, arena index of its level-1 table)`; `u64::MAX`: empty.
    slots: [(u64, usize); LEAF_SLOTS],
}

impl Default for LeafTables {
    fn default() -> LeafTables {
        LeafTables {
            version: 0,
            slots: [(u64::MAX, 0); LEAF_SLOTS],
        }
    }
}

impl RadixTable {
    /// An empty table of `levels` levels (4 or 5) whose root page is at `root_base`.
    pub fn new(levels: u8, root_base: u64) -> RadixTable {
        assert!(
            levels == 4 || levels == 5,
            "radix tables have 4 or 5 levels"
        );
        RadixTable {
            version: fresh_version(),
            levels,
            bases: vec![root_base],
            entries: vec![0; ENTRIES],
        }
    }

    /// Number of levels.
    #[inline]
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Base address of the root table page (what CR3 / EPTP holds).
    #[inline]
    pub fn root(&self) -> u64 {
        self.bases[0]
    }

    /// Number of table pages.
    pub fn table_pages(&self) -> usize {
        self.bases.len()
    }

    #[inline]
    fn entry(&self, node: usize, i: usize) -> u64 {
        self.entries[node * ENTRIES + i]
    }

    #[inline]
    fn set_entry(&mut self, node: usize, i: usize, v: u64) {
        self.version = fresh_version();
        self.entries[node * ENTRIES + i] = v;
    }

    fn push_table(&mut self, base: u64) -> usize {
        let idx = self.bases.len();
        self.bases.push(base);
        // Large tables on huge pages: a walk of a random address then misses no host TLB.
        crate::huge::reserve_huge(&mut self.entries, ENTRIES);
        self.entries.resize(self.entries.len() + ENTRIES, 0);
        idx
    }

    /// Walks the table for `va`, recording every entry read.
    #[inline]
    pub fn walk(&self, va: u64) -> WalkPath {
        let mut path = WalkPath::default();
        let mut node = 0usize;
        let mut level = self.levels;
        loop {
            let i = index(va, level);
            path.entry_addrs[usize::from(path.len)] = self.bases[node] + 8 * i as u64;
            path.len += 1;
            let e = self.entry(node, i);
            if e & PRESENT == 0 {
                return path;
            }
            if e & LEAF != 0 {
                path.leaf = Some(Leaf {
                    target: e & !0xfff,
                    level,
                });
                return path;
            }
            // Non-leaf entries hold an arena index that was a usize when stored.
            node = usize::try_from(e >> 12).unwrap_or(usize::MAX);
            level -= 1;
        }
    }

    /// What a hint needs of a walk for `va`: the address of the last entry read and the leaf,
    /// as [`RadixTable::walk`]'s `last_entry()` and `leaf`, without recording the path.
    #[inline]
    pub fn last_entry(&self, va: u64) -> (u64, Option<Leaf>) {
        let (node, level, e) = self.last_node(va);
        self.entry_at(node, level, va, e)
    }

    /// Where a walk for `va` stops: the table page (arena index), its level and the entry read
    /// there (absent, or a leaf).
    #[inline(always)]
    fn last_node(&self, va: u64) -> (usize, u8, u64) {
        let mut node = 0usize;
        let mut level = self.levels;
        loop {
            let e = self.entry(node, index(va, level));
            if e & PRESENT == 0 || e & LEAF != 0 {
                return (node, level, e);
            }
            node = usize::try_from(e >> 12).unwrap_or(usize::MAX);
            level -= 1;
        }
    }

    /// The host address of `va`'s entry `e` in table page `node` at `level`, and the leaf it
    /// holds, if it is present (an entry where a walk stops: absent or a leaf).
    #[inline(always)]
    fn entry_at(&self, node: usize, level: u8, va: u64, e: u64) -> (u64, Option<Leaf>) {
        let addr = self.bases[node] + 8 * index(va, level) as u64;
        let leaf = (e & PRESENT != 0).then_some(Leaf {
            target: e & !0xfff,
            level,
        });
        (addr, leaf)
    }

    /// [`RadixTable::last_entry`] with, first, the address of the entry read just before the
    /// last one (`None` when the walk reads one entry only): the last two entries of
    /// [`RadixTable::walk`]'s path, from one descent that records nothing else.
    #[inline]
    pub fn last_two(&self, va: u64) -> LastTwo {
        let (node, level, e, above) = self.last_node_above(va);
        let (last, leaf) = self.entry_at(node, level, va, e);
        let above = (above != usize::MAX).then(|| self.entry_addr(above));
        (above, last, leaf)
    }

    /// [`RadixTable::last_node`] and the arena position of the entry read before the last one
    /// (`usize::MAX` when none).
    #[inline(always)]
    fn last_node_above(&self, va: u64) -> (usize, u8, u64, usize) {
        let mut node = 0usize;
        let mut level = self.levels;
        let mut above = usize::MAX;
        loop {
            let i = node * ENTRIES + index(va, level);
            let e = self.entries[i];
            if e & PRESENT == 0 || e & LEAF != 0 {
                return (node, level, e, above);
            }
            above = i;
            node = usize::try_from(e >> 12).unwrap_or(usize::MAX);
            level -= 1;
        }
    }

    /// [`RadixTable::last_two`], remembering in `memo` the level-1 table of `va`'s 2 MiB region:
    /// when it is remembered (and the table did not change since), only the leaf entry is read.
    /// Same answers as `last_two`, but for the entry above the last, given only when this call
    /// descended (`None` for a remembered region: a caller that needs it walks again; the memo
    /// stays two words a slot, and a walk of a remembered region reads one entry).
    #[inline]
    pub fn last_two_memo(&self, va: u64, memo: &mut LeafTables) -> LastTwo {
        if memo.version != self.version {
            *memo = LeafTables {
                version: self.version,
                ..LeafTables::default()
            };
        }
        let region = va >> 21;
        // Below LEAF_SLOTS.
        #[allow(clippy::cast_possible_truncation)]
        let slot = (region % LEAF_SLOTS as u64) as usize;
        let (tag, node) = memo.slots[slot];
        if tag == region {
            // A level-1 entry is a leaf or absent (as `last_entry` finds it).
            let (last, leaf) = self.entry_at(node, 1, va, self.entry(node, index(va, 1)));
            return (None, last, leaf);
        }
        let (node, level, e, above) = self.last_node_above(va);
        if level == 1 {
            memo.slots[slot] = (region, node);
        }
        let (last, leaf) = self.entry_at(node, level, va, e);
        (
            (above != usize::MAX).then(|| self.entry_addr(above)),
            last,
            leaf,
        )
    }

    /// The leaf mapping `va`, if any (no path recorded).
    #[inline]
    pub fn lookup(&self, va: u64) -> Option<Leaf> {
        let mut node = 0usize;
        let mut level = self.levels;
        loop {
            let e = self.entry(node, index(va, level));
            if e & PRESENT == 0 {
                return None;
            }
            if e & LEAF != 0 {
                return Some(Leaf {
                    target: e & !0xfff,
                    level,
                });
            }
            node = usize::try_from(e >> 12).unwrap_or(usize::MAX);
            level -= 1;
        }
    }

    /// Asks the CPU to start loading the leaf entry for `va` into its caches (the upper levels of
    /// a table are few and stay cached; the leaf level is where a simulated random access misses
    /// in the host's caches). A hint only: nothing is read or changed.
    #[inline]
    pub fn prefetch_leaf(&self, va: u64) {
        let mut node = 0usize;
        let mut level = self.levels;
        loop {
            let i = node * ENTRIES + index(va, level);
            let Some(&e) = self.entries.get(i) else {
                return;
            };
            if level == 1 || e & PRESENT == 0 || e & LEAF != 0 {
                prefetch(&self.entries[i]);
                return;
            }
            let next = usize::try_from(e >> 12).unwrap_or(usize::MAX);
            if level == 2 {
                // The PT's entry is the one that misses: prefetch it instead of reading it.
                if let Some(e) = self.entries.get(next * ENTRIES + index(va, 1)) {
                    prefetch(e);
                }
                return;
            }
            node = next;
            level -= 1;
        }
    }

    /// Maps the page of `level` containing `va` to `target` (aligned to the page), creating
    /// tables with `alloc_table` (returns the base of a fresh table page). Fails with the existing
    /// leaf if something is already mapped over the range.
    pub fn map(
        &mut self,
        va: u64,
        target: u64,
        level: u8,
        alloc_table: &mut dyn FnMut() -> u64,
    ) -> Result<Writes, Leaf> {
        debug_assert!((1..=3).contains(&level));
        let before = self.bases.len();
        let node = self.descend(va, level, alloc_table)?;
        // Each new table page was linked by one entry.
        let new_tables = u32::try_from(self.bases.len() - before).unwrap_or(u32::MAX);
        let i = index(va, level);
        let e = self.entry(node, i);
        if e & PRESENT != 0 {
            return Err(existing(e, level));
        }
        self.set_entry(node, i, (target & !0xfff) | PRESENT | LEAF);
        Ok(Writes {
            entries: new_tables + 1,
            new_tables,
        })
    }

    /// Maps the contiguous run `[va, va + len)` -> `[target, target + len)` (both 4 KiB aligned,
    /// `len` a multiple of 4 KiB) with the largest leaves that fit: at each position the highest
    /// level up to `max_level` (1 to 3) whose page size divides both addresses and does not
    /// overrun the run, else a 4 KiB leaf. Adds the leaves made per level to `leaves` (4 KiB,
    /// 2 MiB, 1 GiB).
    ///
    /// The result is exactly that of calling [`RadixTable::map`] once per leaf in address order
    /// (the same entries, the same table pages allocated in the same order from `alloc_table`,
    /// so each table page gets the same base address), but it walks down from the root once
    /// per table page it fills, not once per leaf: mapping 4 GiB with 4 KiB leaves walks 2,048
    /// times instead of 1,048,576, and fills each leaf table in one loop. On a conflict it
    /// stops at the first leaf that `map` would refuse, with that leaf's address and `map`'s
    /// error (the leaves before it are mapped and counted, as with the per-leaf calls).
    pub fn map_run(
        &mut self,
        va: u64,
        target: u64,
        len: u64,
        max_level: u8,
        leaves: &mut [u64; 3],
        alloc_table: &mut dyn FnMut() -> u64,
    ) -> Result<(), (u64, Leaf)> {
        debug_assert!((1..=3).contains(&max_level));
        debug_assert!((va | target | len) & 0xfff == 0);
        self.version = fresh_version();
        let mut off = 0u64;
        while off < len {
            let (g, h) = (va + off, target + off);
            let left = len - off;
            let level = (2..=max_level)
                .rev()
                .find(|&l| {
                    let bytes = leaf_bytes(l);
                    (g | h) & (bytes - 1) == 0 && left >= bytes
                })
                .unwrap_or(1);
            // The leaves after this one in its table page are of the same level while the run
            // lasts: a larger leaf needs an address aligned to the whole table page's span,
            // which only the table's first entry has; and both addresses stay aligned to this
            // level's size. So `map` would walk down to this table page for each of them and
            // find the path there already made: the first walk does for all of them.
            let node = self.descend(g, level, alloc_table).map_err(|e| (g, e))?;
            let size = leaf_bytes(level);
            let first = index(g, level);
            let n = (ENTRIES - first).min(usize::try_from(left / size).unwrap_or(usize::MAX));
            let slots = &mut self.entries[node * ENTRIES + first..node * ENTRIES + first + n];
            let mut frame = h & !0xfff;
            for (k, slot) in slots.iter_mut().enumerate() {
                if *slot & PRESENT != 0 {
                    leaves[usize::from(level - 1)] += k as u64;
                    return Err((g + k as u64 * size, existing(*slot, level)));
                }
                *slot = frame | PRESENT | LEAF;
                frame += size;
            }
            leaves[usize::from(level - 1)] += n as u64;
            off += n as u64 * size;
        }
        Ok(())
    }

    /// The table page at `level` on the path of `va`, creating the missing tables above it as
    /// [`RadixTable::map`] does (same order, same allocations); `map`'s error if a leaf above
    /// `level` covers `va`.
    fn descend(
        &mut self,
        va: u64,
        level: u8,
        alloc_table: &mut dyn FnMut() -> u64,
    ) -> Result<usize, Leaf> {
        let mut node = 0usize;
        let mut l = self.levels;
        while l > level {
            let i = index(va, l);
            let e = self.entry(node, i);
            if e & PRESENT == 0 {
                let base = alloc_table();
                let idx = self.push_table(base);
                self.set_entry(node, i, ((idx as u64) << 12) | PRESENT);
                node = idx;
            } else if e & LEAF != 0 {
                return Err(Leaf {
                    target: e & !0xfff,
                    level: l,
                });
            } else {
                node = usize::try_from(e >> 12).unwrap_or(usize::MAX);
            }
            l -= 1;
        }
        Ok(node)
    }

    /// Room for `tables` more table pages without moving the entries again (capacity only:
    /// nothing is allocated in the table's address space and no result changes).
    pub fn reserve_tables(&mut self, tables: usize) {
        self.bases.reserve(tables);
        crate::huge::reserve_huge(&mut self.entries, tables.saturating_mul(ENTRIES));
    }

    /// Clears the leaf mapping `va`; returns it. Table pages are kept (as Linux mostly does).
    pub fn unmap(&mut self, va: u64) -> Option<Leaf> {
        let mut node = 0usize;
        let mut l = self.levels;
        loop {
            let i = index(va, l);
            let e = self.entry(node, i);
            if e & PRESENT == 0 {
                return None;
            }
            if e & LEAF != 0 {
                self.set_entry(node, i, 0);
                return Some(Leaf {
                    target: e & !0xfff,
                    level: l,
                });
            }
            node = usize::try_from(e >> 12).unwrap_or(usize::MAX);
            l -= 1;
        }
    }

    /// The table's version now: it changes at every write to the table (see the field), so a
    /// [`PlannedWalk`] or anything else derived from the entries stays right while it is equal.
    #[inline(always)]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The first part of [`RadixTable::last_entry`] for `va`, for a walk planned ahead (a speed
    /// hint's work, reused later): the walk descends to the table page of its last entry and
    /// prefetches that entry (at the leaf level, the one a random address misses in the host's
    /// caches) without reading it, as [`RadixTable::prefetch_leaf`] does.
    /// [`RadixTable::finish_last`] reads it later. No state changes.
    #[inline]
    pub fn plan_walk(&self, va: u64) -> PlannedWalk {
        // The level count known at compile time: the descent unrolls, each level's index a
        // constant shift (speed only: the same descent).
        match self.levels {
            4 => self.plan_walk_at::<4>(va),
            _ => self.plan_walk_at::<0>(va),
        }
    }

    /// [`RadixTable::plan_walk`] of a table of `L` levels (0: of its own level count).
    #[inline(always)]
    fn plan_walk_at<const L: u8>(&self, va: u64) -> PlannedWalk {
        debug_assert!(L == 0 || L == self.levels, "a table of {L} levels");
        let mut node = 0usize;
        let mut level = if L == 0 { self.levels } else { L };
        // Arena position of the entry read before (none yet).
        let mut above = usize::MAX;
        loop {
            let i = node * ENTRIES + index(va, level);
            let e = if level == 1 {
                prefetch(&self.entries[i]);
                0
            } else {
                self.entries[i]
            };
            if level == 1 || e & PRESENT == 0 || e & LEAF != 0 {
                return PlannedWalk {
                    page: va >> 12,
                    version: self.version,
                    last: i,
                    level,
                    above: if above == usize::MAX {
                        NO_ENTRY
                    } else {
                        self.entry_addr(above)
                    },
                };
            }
            above = i;
            node = usize::try_from(e >> 12).unwrap_or(usize::MAX);
            level -= 1;
        }
    }

    /// The address of the entry at arena position `i` (`node * ENTRIES + index`).
    #[inline(always)]
    fn entry_addr(&self, i: usize) -> u64 {
        self.bases[i / ENTRIES] + 8 * (i % ENTRIES) as u64
    }

    /// [`RadixTable::finish_last`] with, first, the address of the entry read just before the
    /// last one (`None` when the walk reads one entry only): the last two entries of
    /// [`RadixTable::walk`]'s path, read from `plan` without a descent. `None` as
    /// `finish_last`'s when the plan is not for `va`'s page at this version.
    #[inline(always)]
    pub fn finish_two(&self, plan: &PlannedWalk, va: u64) -> Option<LastTwo> {
        let (last, leaf) = self.finish_last(plan, va)?;
        Some(((plan.above != NO_ENTRY).then_some(plan.above), last, leaf))
    }

    /// [`RadixTable::last_entry`]`(va)` from `plan`, made by [`RadixTable::plan_walk`] for `va`'s
    /// page at this table's present version: the last entry is the only one read. `None` when
    /// the plan is for another page or the table was written since (then nothing is known:
    /// walk again).
    #[inline(always)]
    pub fn finish_last(&self, plan: &PlannedWalk, va: u64) -> Option<(u64, Option<Leaf>)> {
        if plan.page != va >> 12 || plan.version != self.version {
            return None;
        }
        let node = plan.last / ENTRIES;
        let e = self.entries[plan.last];
        Some(self.entry_at(node, plan.level, va, e))
    }

    /// Calls `f(va_base, leaf)` for every leaf, in address order.
    pub fn for_each_leaf(&self, mut f: impl FnMut(u64, Leaf)) {
        self.visit(0, self.levels, 0, &mut f);
    }

    fn visit(&self, node: usize, level: u8, va: u64, f: &mut impl FnMut(u64, Leaf)) {
        for (i, &e) in self.entries[node * ENTRIES..(node + 1) * ENTRIES]
            .iter()
            .enumerate()
        {
            if e & PRESENT == 0 {
                continue;
            }
            let base = va | ((i as u64) << (12 + 9 * (u32::from(level) - 1)));
            if e & LEAF != 0 {
                f(
                    base,
                    Leaf {
                        target: e & !0xfff,
                        level,
                    },
                );
            } else {
                let child = usize::try_from(e >> 12).unwrap_or(usize::MAX);
                self.visit(child, level - 1, base, f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn bump() -> impl FnMut() -> u64 + Clone {
        let mut next = 0x1000_0000u64;
        move || {
            next += 0x1000;
            next
        }
    }

    #[test]
    fn walk_records_entries_and_leaf() {
        let mut t = RadixTable::new(4, 0x1000);
        let mut a = bump();
        let w = t.map(0x7fff_1234_5000, 0xabc_d000, 1, &mut a).unwrap();
        assert_eq!(
            w,
            Writes {
                entries: 4,
                new_tables: 3
            }
        );
        let p = t.walk(0x7fff_1234_5678);
        assert_eq!(p.len, 4);
        assert_eq!(
            p.entry_addrs[0],
            0x1000 + 8 * index(0x7fff_1234_5678, 4) as u64
        );
        assert_eq!(p.leaf.unwrap().translate(0x7fff_1234_5678), 0xabc_d678);
        // A 2 MiB leaf is found after 3 reads.
        t.map(0x4000_0000, 0x20_0000, 2, &mut a).unwrap();
        let p = t.walk(0x4001_2345);
        assert_eq!(p.len, 3);
        assert_eq!(p.last_entry(), Some(p.entry_addrs[2]));
        assert_eq!(p.leaf.unwrap().translate(0x4001_2345), 0x21_2345);
        // An unmapped address: the walk stops at the first empty entry, which is the last read.
        let p = t.walk(0x1234_5000_0000);
        assert_eq!((p.len, p.leaf), (1, None));
        assert_eq!(p.last_entry(), Some(p.entry_addrs[0]));
        assert_eq!(WalkPath::default().last_entry(), None);
        assert!(t.map(0x4000_1000, 0x9000, 1, &mut a).is_err());
        assert_eq!(t.unmap(0x4000_0000).map(|l| l.level), Some(2));
        assert_eq!(t.lookup(0x4000_0000), None);
    }

    /// What [`RadixTable::map_run`] replaces: one [`RadixTable::map`] per leaf, in address
    /// order (the loop `Backing::new` ran before it).
    fn map_run_per_leaf(
        t: &mut RadixTable,
        (va, target, len, max_level): (u64, u64, u64, u8),
        leaves: &mut [u64; 3],
        alloc: &mut dyn FnMut() -> u64,
    ) -> Result<(), (u64, Leaf)> {
        let mut off = 0;
        while off < len {
            let (g, h) = (va + off, target + off);
            let level = (1..=max_level)
                .rev()
                .find(|&l| (g | h) & (leaf_bytes(l) - 1) == 0 && len - off >= leaf_bytes(l))
                .unwrap_or(1);
            t.map(g, h, level, alloc).map_err(|e| (g, e))?;
            leaves[usize::from(level - 1)] += 1;
            off += leaf_bytes(level);
        }
        Ok(())
    }

    /// A run of up to a few thousand leaves: addresses aligned to 4 KiB, 2 MiB or 1 GiB plus a
    /// few 4 KiB or 2 MiB steps (so runs start on and off every boundary, and neighbour or
    /// overlap each other), a length of 1 GiB pages, 2 MiB pages and 4 KiB pages.
    fn run_strategy() -> impl Strategy<Value = (u64, u64, u64, u8)> {
        let addr = (0u64..6, 0u64..4, 0u64..3, 0u64..600).prop_map(|(gib, mib2, k4, mid)| {
            (gib << 30) + (mid << 21) * u64::from(mib2 == 3) + (mib2 << 21) + (k4 << 12)
        });
        (addr.clone(), addr, 0u64..3, 0u64..700, 1u64..1100, 1u8..=3).prop_map(
            |(va, target, gib, mib2, k4, max_level)| {
                // With unaligned addresses every leaf is 4 KiB: keep such runs short.
                let len = if (va | target) & 0x1f_ffff != 0 {
                    k4 << 12
                } else {
                    (gib << 30) + (mib2 << 21) + (k4 << 12)
                };
                (va, target, len, max_level)
            },
        )
    }

    #[test]
    fn map_run_maps_a_run_with_the_largest_leaves() {
        let mut t = RadixTable::new(4, 0x1000);
        let mut a = bump();
        let mut leaves = [0; 3];
        // 2 MiB-aligned on both sides from 1 GiB - 4 KiB on: 4 KiB, then 2 MiB leaves, 1 GiB,
        // then 2 MiB and 4 KiB at the tail.
        let (va, len) = ((1 << 30) - 4096, 4096 + (1 << 30) + (4 << 20) + 8192);
        t.map_run(va, va, len, 3, &mut leaves, &mut a).unwrap();
        assert_eq!(leaves, [3, 2, 1]);
        assert_eq!(t.lookup(1 << 30).map(|l| l.level), Some(3));
        assert_eq!(t.lookup(va).map(|l| l.translate(va + 5)), Some(va + 5));
        // At most 2 MiB: 512 + 2 leaves instead.
        let mut u = RadixTable::new(4, 0x1000);
        let mut leaves = [0; 3];
        u.map_run(va, va, len, 2, &mut leaves, &mut bump()).unwrap();
        assert_eq!(leaves, [3, 514, 0]);
        // Overlapping a mapped leaf stops at it, after mapping what comes before.
        let mut leaves = [0; 3];
        let e = u.map_run(va - 8192, 0, 16384, 1, &mut leaves, &mut bump());
        assert_eq!(e.map_err(|(g, l)| (g, l.level)), Err((va, 1)));
        assert_eq!(leaves, [2, 0, 0]);
    }

    proptest! {
        /// `last_two` answers the last two entries of `walk`'s path and its leaf, and
        /// `last_two_memo` the same (the entry above only when it descends), through maps and
        /// unmaps of 4 KiB,
        /// 2 MiB and 1 GiB pages (which change the tables the memo remembers), on 4- and
        /// 5-level tables, with one memo throughout, also across two tables (a clone changed
        /// apart from its original).
        #[test]
        fn last_two_memo_is_last_two(
            five in any::<bool>(),
            steps in prop::collection::vec((0u8..6, 0u64..96, 1u8..=3), 0..300),
        ) {
            let levels = if five { 5 } else { 4 };
            let mut t = RadixTable::new(levels, 0x1000);
            let mut a = bump();
            let mut other = t.clone();
            let mut memo = LeafTables::default();
            for (op, page, level) in steps {
                // Pages in a few 2 MiB regions of a few 1 GiB regions, and one far away.
                let va = ((page % 8) << 21) + ((page / 8 % 4) << 30) + ((page / 32) << 39)
                    + (page % 3) * 4096;
                match op {
                    0 | 1 => {
                        let aligned = va & !(leaf_bytes(level) - 1);
                        let _ = t.map(aligned, page << 30, level, &mut a);
                    }
                    2 => {
                        t.unmap(va);
                    }
                    3 => std::mem::swap(&mut t, &mut other),
                    _ => {}
                }
                for probe in [va, va ^ (1 << 21), va + 4096] {
                    // `last_two` (and its memo form, remembered or not): the walk's last two
                    // entries and its leaf.
                    let walk = t.walk(probe);
                    let n = usize::from(walk.len);
                    let want = (
                        n.checked_sub(2).map(|k| walk.entry_addrs[k]),
                        walk.entry_addrs[n - 1],
                        walk.leaf,
                    );
                    prop_assert_eq!(t.last_two(probe), want);
                    // The memo's: the entry above only when it descended (not remembered).
                    let (above, last, leaf) = t.last_two_memo(probe, &mut memo);
                    prop_assert_eq!((last, leaf), (want.1, want.2));
                    prop_assert!(above.is_none() || above == want.0);
                }
            }
        }
    }

    proptest! {
        /// `map_run` is `map` leaf by leaf: same result (or the same first refused leaf), same
        /// tables at the same bases in the same arena order, same entries, same allocations,
        /// same leaf counts; on 4- and 5-level tables, over tables that already hold mappings
        /// (runs that overlap them, or each other, fail as `map` does).
        #[test]
        fn map_run_is_map_per_leaf(
            five in any::<bool>(),
            before in prop::collection::vec((0u64..4096, 1u8..=3), 0..20),
            runs in prop::collection::vec(run_strategy(), 1..6),
        ) {
            let levels = if five { 5 } else { 4 };
            let mut fast = RadixTable::new(levels, 0x1000);
            let mut fa = bump();
            for &(page, level) in &before {
                let va = (page * 0x9_1357_3000) & !(leaf_bytes(level) - 1) & 0xffff_ffff_ffff;
                let _ = fast.map(va, page << 30, level, &mut fa);
            }
            // The same table and allocator on both sides from here.
            let (mut slow, mut sa) = (fast.clone(), fa.clone());
            for run in runs {
                let (mut fl, mut sl) = ([0; 3], [0; 3]);
                let f = fast.map_run(run.0, run.1, run.2, run.3, &mut fl, &mut fa);
                let s = map_run_per_leaf(&mut slow, run, &mut sl, &mut sa);
                prop_assert_eq!(f, s);
                prop_assert_eq!(fl, sl);
                prop_assert_eq!(fa(), sa());
                prop_assert!(fast == slow, "tables differ after run {:x?}", run);
            }
        }

        /// The table agrees with a map from page number to frame.
        #[test]
        fn matches_btreemap(ops in prop::collection::vec((0u64..4096, any::<bool>()), 0..300)) {
            let mut t = RadixTable::new(4, 0);
            let mut oracle = BTreeMap::new();
            let mut a = bump();
            for (page, unmap) in ops {
                // Spread pages over the whole 48-bit space.
                let va = (page * 0x9_1357_3000) & 0xffff_ffff_f000;
                if unmap {
                    prop_assert_eq!(t.unmap(va).map(|l| l.target), oracle.remove(&va));
                } else if let std::collections::btree_map::Entry::Vacant(e) = oracle.entry(va) {
                    let target = page << 12;
                    t.map(va, target, 1, &mut a).unwrap();
                    e.insert(target);
                }
            }
            for (&va, &target) in &oracle {
                prop_assert_eq!(t.lookup(va + 7).map(|l| l.translate(va + 7)), Some(target + 7));
            }
            // `last_entry` is the walk's last entry and leaf, mapped or not.
            for page in 0u64..64 {
                let va = (page * 0x9_1357_3000) & 0xffff_ffff_f000;
                for va in [va, va ^ 0x1000] {
                    let w = t.walk(va);
                    prop_assert_eq!(t.last_entry(va), (w.last_entry().unwrap(), w.leaf));
                }
            }
            let mut n = 0;
            t.for_each_leaf(|_, _| n += 1);
            prop_assert_eq!(n, oracle.len());
        }
    }
}
