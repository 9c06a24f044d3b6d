//! [`SeenPages`]: which pages were given a prefetch hint recently, so that the hints of pages the
//! translation structures keep (a hot working set) are not given again and again. Speed only: a
//! hint changes no simulated state, so neither does skipping one.
//!
//! A direct-mapped table of page numbers (one slot per hash of the page, the last page hashed
//! there wins): a few kilobytes that stay in the host's caches, one multiply, one load and one
//! compare per question. A page comes back as seen until another page takes its slot, so a page
//! reused within about the table's size of distinct pages is hinted once; with the table at
//! [`SeenPages::SLOTS`] slots, below the default second-level TLB's 1,536 entries, such a page is
//! most likely still held by the TLBs, and its walk entries are in the host's caches anyway.

/// Recently hinted pages (see the module docs).
#[derive(Clone, Debug)]
pub struct SeenPages {
    slots: [u64; SeenPages::SLOTS],
}

impl Default for SeenPages {
    fn default() -> SeenPages {
        SeenPages {
            slots: [u64::MAX; SeenPages::SLOTS],
        }
    }
}

impl SeenPages {
    /// Slots in the table.
    pub const SLOTS: usize = 1024;

    /// The slot of `page` (Fibonacci hashing: contiguous pages and strided pages both spread).
    #[inline(always)]
    fn slot(page: u64) -> usize {
        // The top 10 bits of a u64 fit any usize.
        #[allow(clippy::cast_possible_truncation)]
        let s = (page.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize;
        s
    }

    /// Whether `page` is in its slot now; if not, puts it there (it is being hinted). Page
    /// `u64::MAX` is never seen (the empty slot's value).
    #[inline(always)]
    pub fn check_insert(&mut self, page: u64) -> bool {
        let s = &mut self.slots[SeenPages::slot(page)];
        if *s == page && page != u64::MAX {
            return true;
        }
        *s = page;
        false
    }
}

/// The host frame a hint last found for a page, in a direct-mapped table like [`SeenPages`]'s:
/// a page hinted again soon (a hot working set) gets its data-cache sets prefetched from here,
/// without a TLB probe or a table walk of the simulator's own. Interior mutability (`Cell`), as
/// hints are given through `&self`. A stale frame (the page was remapped since) only makes a hint
/// useless: no simulated state depends on it.
#[derive(Clone, Debug)]
pub struct FrameMemo {
    /// `[page, host frame base]` per slot; page `u64::MAX` when empty.
    slots: Box<[std::cell::Cell<[u64; 2]>]>,
}

impl Default for FrameMemo {
    fn default() -> FrameMemo {
        FrameMemo {
            slots: (0..SeenPages::SLOTS)
                .map(|_| std::cell::Cell::new([u64::MAX, 0]))
                .collect(),
        }
    }
}

impl FrameMemo {
    /// The frame remembered for `page` (4 KiB page number), if its slot holds it.
    #[inline(always)]
    pub fn get(&self, page: u64) -> Option<u64> {
        let [p, f] = self.slots[SeenPages::slot(page)].get();
        (p == page && page != u64::MAX).then_some(f)
    }

    /// Remembers `frame` for `page`, replacing what its slot held.
    #[inline(always)]
    pub fn put(&self, page: u64, frame: u64) {
        self.slots[SeenPages::slot(page)].set([page, frame]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The naive model: the whole history of pages asked about; a page is seen when the last page
    /// asked about with its slot was that page.
    fn oracle(history: &[u64], page: u64) -> bool {
        page != u64::MAX
            && history
                .iter()
                .rev()
                .find(|&&p| SeenPages::slot(p) == SeenPages::slot(page))
                == Some(&page)
    }

    #[test]
    fn slots_cover_the_table() {
        assert!((0..1_000_000u64).all(|p| SeenPages::slot(p) < SeenPages::SLOTS));
        // 256 contiguous pages (the bench trace's hot region) take distinct slots but few.
        let mut used: Vec<usize> = (0x1_0000..0x1_0100u64).map(SeenPages::slot).collect();
        used.sort_unstable();
        used.dedup();
        assert!(used.len() > 200, "{}", used.len());
    }

    proptest! {
        /// Each question answered as a map of the last `put` per slot would: the frame of the
        /// last `put` whose page shares the slot, when that page is the one asked about.
        #[test]
        fn memo_matches_history_oracle(
            ops in prop::collection::vec(
                (prop_oneof![0u64..40, 0u64..5000, any::<u64>(), Just(u64::MAX)], any::<u64>(), any::<bool>()),
                1..400)
        ) {
            let memo = FrameMemo::default();
            let mut history: Vec<(u64, u64)> = Vec::new();
            for (page, frame, put) in ops {
                if put {
                    memo.put(page, frame);
                    history.push((page, frame));
                } else {
                    let want = history
                        .iter()
                        .rev()
                        .find(|(p, _)| SeenPages::slot(*p) == SeenPages::slot(page))
                        .filter(|(p, _)| *p == page && page != u64::MAX)
                        .map(|(_, f)| *f);
                    prop_assert_eq!(memo.get(page), want, "page {}", page);
                }
            }
        }

        #[test]
        fn matches_history_oracle(
            pages in prop::collection::vec(
                prop_oneof![0u64..40, 0u64..5000, any::<u64>(), Just(u64::MAX)], 1..400)
        ) {
            let mut seen = SeenPages::default();
            let mut history = Vec::new();
            for p in pages {
                prop_assert_eq!(seen.check_insert(p), oracle(&history, p), "page {}", p);
                history.push(p);
            }
        }
    }
}
