//! A direct-mapped software cache of whole-page translations, for the perfect-TLB baseline.
//!
//! The baseline translates every access at no simulated cost, but the simulator still has to
//! find the answer: a guest-table lookup and a backing (EPT) lookup, two dependent radix walks
//! per access. This cache remembers, per 4 KiB page of a process, the host page the two gave, so
//! that a repeated page costs one load. It is a speed device of the simulator only: it changes
//! no simulated state and no statistic, and every answer equals the lookup it replaces.
//!
//! Why that holds: entries are tagged with the page number and the process (pid), and are only
//! filled with a translation that exists. A process's translations change only while it runs,
//! through its own page faults (which add a translation for a page that had none, so never for a
//! cached page) and unmaps (which remove translations: [`PageCache::invalidate`] drops every
//! entry). The backing is immutable during a run.

use compromis_types::{Gva, Hpa, Pid};

/// log2 of the number of entries (2^16 entries of 16 bytes: 1 MiB).
const BITS: u32 = 16;
/// Generation numbers live in the low 12 bits of a page-aligned frame.
const GEN_MASK: u64 = 0xfff;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// `vpn | pid << 46` of the page held (the generation tells whether it is live).
    tag: u64,
    /// Host page base | generation.
    frame: u64,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct PageCache {
    entries: Box<[Entry]>,
    /// Current generation, 1..=GEN_MASK; entries of other generations are empty.
    generation: u64,
}

impl Default for PageCache {
    fn default() -> Self {
        PageCache::new()
    }
}

impl PageCache {
    /// An empty cache.
    pub fn new() -> PageCache {
        PageCache {
            entries: vec![Entry::default(); 1 << BITS].into_boxed_slice(),
            generation: 1,
        }
    }

    #[inline]
    fn slot(vpn: u64, pid: Pid) -> (usize, u64) {
        // Page numbers of a 57-bit address space fit in 45 bits; the pid goes above them.
        let tag = vpn | (u64::from(pid) << 46);
        let idx = (vpn ^ (u64::from(pid) << 7)) & ((1 << BITS) - 1);
        (idx as usize, tag)
    }

    /// The host address of `va` in process `pid`, if its page is held.
    #[inline]
    pub fn get(&self, va: Gva, pid: Pid) -> Option<Hpa> {
        let (i, tag) = PageCache::slot(va.0 >> 12, pid);
        let e = self.entries[i];
        (e.tag == tag && e.frame & GEN_MASK == self.generation)
            .then_some(Hpa((e.frame & !GEN_MASK) | (va.0 & 0xfff)))
    }

    /// Speed hint: starts loading the slot of `va` in process `pid` (a random page's slot misses
    /// in the host's caches). Nothing is read or changed.
    #[inline]
    pub fn prefetch(&self, va: Gva, pid: Pid) {
        let (i, _) = PageCache::slot(va.0 >> 12, pid);
        if let Some(e) = self.entries.get(i) {
            compromis_vmem::radix::prefetch(&e.tag);
        }
    }

    /// Remembers that `va` of process `pid` translates to `hpa`.
    #[inline]
    pub fn put(&mut self, va: Gva, pid: Pid, hpa: Hpa) {
        let (i, tag) = PageCache::slot(va.0 >> 12, pid);
        self.entries[i] = Entry {
            tag,
            frame: (hpa.0 & !GEN_MASK) | self.generation,
        };
    }

    /// Forgets every translation (constant time, except once every 4,095 calls).
    pub fn invalidate(&mut self) {
        self.generation += 1;
        if self.generation > GEN_MASK {
            self.entries.fill(Entry::default());
            self.generation = 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Clone, Debug)]
    enum Step {
        Put { page: u64, pid: Pid, frame: u64 },
        Get { page: u64, pid: Pid, off: u64 },
        Invalidate,
    }

    fn step() -> impl Strategy<Value = Step> {
        // Pages and pids drawn from small sets so that slots collide and entries are reused;
        // page numbers up to 2^45 (57-bit addresses).
        let page = prop_oneof![0u64..300, (0u64..300).prop_map(|p| p << 16), 0u64..1 << 45];
        prop_oneof![
            (page.clone(), 0u16..4, 0u64..1 << 40).prop_map(|(page, pid, frame)| Step::Put {
                page,
                pid,
                frame
            }),
            (page, 0u16..4, 0u64..4096).prop_map(|(page, pid, off)| Step::Get { page, pid, off }),
            Just(Step::Invalidate),
        ]
    }

    proptest! {
        /// Whatever the cache answers is what the naive oracle (a map of everything put since the
        /// last invalidation) holds for that page.
        #[test]
        fn answers_agree_with_a_map(steps in prop::collection::vec(step(), 1..400)) {
            let mut c = PageCache::new();
            let mut oracle: HashMap<(u64, Pid), u64> = HashMap::new();
            for s in steps {
                match s {
                    Step::Put { page, pid, frame } => {
                        c.put(Gva(page << 12), pid, Hpa(frame << 12));
                        oracle.insert((page, pid), frame << 12);
                        // What was just put is held (a direct-mapped cache may drop it later).
                        prop_assert_eq!(c.get(Gva(page << 12), pid), Some(Hpa(frame << 12)));
                    }
                    Step::Get { page, pid, off } => {
                        if let Some(Hpa(h)) = c.get(Gva((page << 12) | off), pid) {
                            prop_assert_eq!(Some(&(h & !0xfff)), oracle.get(&(page, pid)));
                            prop_assert_eq!(h & 0xfff, off);
                        }
                    }
                    Step::Invalidate => {
                        c.invalidate();
                        oracle.clear();
                    }
                }
            }
        }
    }

    #[test]
    fn a_put_is_found_until_invalidated_even_across_generation_wraps() {
        let mut c = PageCache::new();
        for round in 0..3 * GEN_MASK {
            c.put(Gva(0x1234_5000), 7, Hpa(0xabc_d000 + (round << 12)));
            assert_eq!(
                c.get(Gva(0x1234_5678), 7),
                Some(Hpa(0xabc_d678 + (round << 12)))
            );
            assert_eq!(c.get(Gva(0x1234_5678), 8), None, "another process");
            c.invalidate();
            assert_eq!(c.get(Gva(0x1234_5678), 7), None);
        }
    }
}
