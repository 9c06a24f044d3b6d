//! `churn`: an allocator-heavy program (or a stream of short-lived processes): regions are
//! mapped, touched page by page, used, and unmapped again while a long-lived heap stays mapped,
//! so the guest writes page-table entries constantly (demand-paging fills after every map,
//! clears after every unmap).
//!
//! Model (our design, after glibc malloc's behaviour for large blocks: requests above
//! `M_MMAP_THRESHOLD`, 128 KiB by default and adaptive up to 32 MiB, are served by `mmap` and
//! returned by `munmap`):
//! - a long-lived heap of a quarter of the footprint at `0x5555_0000_0000`;
//! - `slots` live-region slots (the rest of the footprint / 2 MiB, between 1 and 64), each slot
//!   a 2 MiB-aligned window below `0x7f00_0000_0000`; a region occupies one slot;
//! - region sizes log-uniform over 16 KiB .. 2 MiB in 4 KiB pages (capped by the slot size on
//!   small footprints), seeded;
//! - each cycle: if every slot is live, or with probability 1/2 when some are, a random live
//!   region is freed (Fetch at `free` (40), then `Op::Unmap`); then a region is allocated in the
//!   lowest free slot (Fetch at `malloc` (40), `Op::Map`), initialised with one Store per 4 KiB
//!   page (a Fetch per 4 pages (2); each Store counts 64 instructions: the 64 cache-line stores
//!   of a vectorised memset of the page), then used: `max(8, pages)` iterations of a Fetch (6),
//!   a Load of a random heap word (1) and a Load or Store (1) of a random word of a random live
//!   region.
//! - the first access after a Map or Unmap also counts [`SYSCALL_INSTRS`] (1,000) guest-kernel
//!   instructions for the system call.

use crate::Proc;
use crate::layout::{CODE_LEN, HEAP_BASE, HUGE, OpBuf, PAGE, Region, below, data_len, place_down};
use compromis_types::AccessKind;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Heap of 4 KiB and one region of 4 KiB at least (fp/4 >= 4 KiB and 3fp/4 >= 4 KiB).
pub const MIN_FOOTPRINT: u64 = 4 * PAGE;
/// Instructions of an mmap/munmap system call in the guest kernel.
pub const SYSCALL_INSTRS: u32 = 1_000;
/// Most live regions.
pub const MAX_SLOTS: u64 = 64;
/// Smallest region requested (pages).
const MIN_PAGES: u64 = 4;

const MALLOC_PC: u64 = 0x6000;
const FREE_PC: u64 = 0x6200;
const TOUCH_PC: u64 = 0x6400;
const WORK_PC: u64 = 0x6600;

/// The heap, the slot windows and the largest region length for a footprint.
fn plan(fp: u64) -> (Region, Vec<Region>) {
    let heap = Region {
        start: HEAP_BASE,
        len: data_len(fp / 4),
    };
    let pool = fp - heap.len;
    let slots = (pool / HUGE).clamp(1, MAX_SLOTS);
    let slot_len = data_len(pool / slots).min(HUGE);
    let n = usize::try_from(slots).unwrap_or(1);
    (heap, place_down(&vec![slot_len; n]))
}

/// Bytes mapped by one process at most.
pub fn mapped(fp: u64) -> u64 {
    let (heap, slots) = plan(fp);
    CODE_LEN + heap.len + slots.iter().map(|s| s.len).sum::<u64>()
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Start,
    Cycle,
    Touch { slot: usize, page: u64 },
    Work { left: u64 },
}

/// One allocator-heavy process.
pub struct Churn {
    heap: Region,
    slots: Vec<Region>,
    /// Live length of each slot (0 = free).
    live: Vec<u64>,
    nlive: usize,
    rng: ChaCha8Rng,
    phase: Phase,
    /// Instructions owed to the next access (system calls).
    owed: u32,
}

impl Churn {
    /// A process over a `fp`-byte footprint (at least [`MIN_FOOTPRINT`]).
    pub fn new(fp: u64, seed: u64) -> Self {
        let (heap, slots) = plan(fp);
        let n = slots.len();
        Churn {
            heap,
            slots,
            live: vec![0; n],
            nlive: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            phase: Phase::Start,
            owed: 0,
        }
    }

    /// Pages of the next region: log-uniform over [MIN_PAGES, max] (max = slot size).
    fn draw_pages(&mut self) -> u64 {
        let max = self.slots[0].len / PAGE;
        let lo = MIN_PAGES.min(max);
        // log2 bounds in 1/256 steps, integer only: pick an exponent, then a value in its octave.
        let lo_bits = 63 - lo.leading_zeros();
        let hi_bits = 63 - max.leading_zeros();
        let b = self.rng.gen_range(lo_bits..=hi_bits);
        let v = (1u64 << b) + below(self.rng.next_u64(), 1u64 << b);
        v.clamp(lo, max)
    }

    #[inline]
    fn access(
        &mut self,
        buf: &mut OpBuf,
        gva: compromis_types::Gva,
        kind: AccessKind,
        instrs: u32,
    ) {
        buf.access(gva, kind, instrs + self.owed);
        self.owed = 0;
    }

    #[inline]
    fn fetch(&mut self, buf: &mut OpBuf, pc: u64, instrs: u32) {
        self.access(buf, Region::code().at(pc), AccessKind::Fetch, instrs);
    }

    fn live_region(&self, slot: usize) -> Region {
        Region {
            start: self.slots[slot].start,
            len: self.live[slot],
        }
    }

    /// The index of the `k`-th live slot.
    fn nth_live(&self, k: usize) -> usize {
        self.live
            .iter()
            .enumerate()
            .filter(|(_, l)| **l > 0)
            .nth(k)
            .map_or(0, |(i, _)| i)
    }
}

impl Proc for Churn {
    fn step(&mut self, buf: &mut OpBuf) {
        match self.phase {
            Phase::Start => {
                buf.push(Region::code().map());
                buf.push(self.heap.map());
                self.phase = Phase::Cycle;
            }
            Phase::Cycle => {
                if self.nlive == self.slots.len() || (self.nlive > 0 && self.rng.gen_bool(0.5)) {
                    let k = self.rng.gen_range(0..self.nlive);
                    let victim = self.nth_live(k);
                    self.fetch(buf, FREE_PC, 40);
                    buf.push(self.live_region(victim).unmap());
                    self.owed += SYSCALL_INSTRS;
                    self.live[victim] = 0;
                    self.nlive -= 1;
                }
                let slot = self.live.iter().position(|&l| l == 0).unwrap_or(0);
                let pages = self.draw_pages();
                self.live[slot] = pages * PAGE;
                self.nlive += 1;
                self.fetch(buf, MALLOC_PC, 40);
                buf.push(self.live_region(slot).map());
                self.owed += SYSCALL_INSTRS;
                self.phase = Phase::Touch { slot, page: 0 };
            }
            Phase::Touch { slot, mut page } => {
                let r = self.live_region(slot);
                let pages = r.len / PAGE;
                let mut n = 0;
                while page < pages && n < 4 {
                    if n == 0 {
                        self.fetch(buf, TOUCH_PC, 2);
                    }
                    self.access(buf, r.at(page * PAGE), AccessKind::Store, 64);
                    page += 1;
                    n += 1;
                }
                self.phase = if page < pages {
                    Phase::Touch { slot, page }
                } else {
                    Phase::Work { left: pages.max(8) }
                };
            }
            Phase::Work { mut left } => {
                while left > 0 && buf.room() >= 3 {
                    let h = self
                        .heap
                        .at(below(self.rng.next_u64(), self.heap.len / 8) * 8);
                    let k = below(self.rng.next_u64(), self.nlive as u64);
                    let r = self.live_region(self.nth_live(usize::try_from(k).unwrap_or(0)));
                    let bits = self.rng.next_u64();
                    let a = r.at(below(bits, r.len / 8) * 8);
                    let kind = if bits & 1 == 0 {
                        AccessKind::Load
                    } else {
                        AccessKind::Store
                    };
                    self.fetch(buf, WORK_PC, 6);
                    self.access(buf, h, AccessKind::Load, 1);
                    self.access(buf, a, kind, 1);
                    left -= 1;
                }
                if left == 0 {
                    self.phase = Phase::Cycle;
                } else {
                    self.phase = Phase::Work { left };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_small_and_large() {
        let (heap, slots) = plan(16 << 10);
        assert_eq!(heap.len, 4 << 10);
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].len, 12 << 10);
        let (heap, slots) = plan(1 << 30);
        assert_eq!(heap.len, 256 << 20);
        assert_eq!(slots.len(), 64);
        assert!(slots.iter().all(|s| s.len == HUGE));
        assert_eq!(mapped(1 << 30), CODE_LEN + (256 << 20) + (128 << 20));
    }

    #[test]
    fn sizes_are_log_uniform_in_range() {
        let mut c = Churn::new(1 << 30, 9);
        let mut octaves = [0u32; 10];
        for _ in 0..10_000 {
            let p = c.draw_pages();
            assert!((MIN_PAGES..=512).contains(&p));
            octaves[(63 - p.leading_zeros()) as usize] += 1;
        }
        // Octaves 2 (4..8 pages) to 9 (512 pages, only the value 512): 8 exponents drawn
        // uniformly, each ~1250 times; octave 9 also collects nothing else.
        for (o, &c) in octaves.iter().enumerate().skip(2).take(7) {
            assert!((1000..1500).contains(&c), "octave {o}: {c}");
        }
    }
}
