//! The guest OS model: processes with their own radix page tables, mapped regions (VMAs), demand
//! paging on first touch with 4 KiB or transparent 2 MiB pages, unmapping, and context switches.
//!
//! Page-table pages are allocated from the guest's own frames, so every entry a walk reads has a
//! guest-physical address (which EPT, shadow paging and Compromis must each translate).

use crate::frames::{FramePolicy, GuestFrames};
use crate::radix::{Leaf, RadixTable, Writes};
use compromis_types::GuestLayout;
use compromis_types::{Address, Gpa, Gva, PageSize, Pid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Guest OS errors.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// Guest RAM is exhausted.
    #[error(
        "guest out of memory at {gva}: the workload maps more than the VM's RAM (free: {free} bytes)"
    )]
    OutOfMemory {
        /// The faulting address.
        gva: Gva,
        /// Bytes still free.
        free: u64,
    },
    /// A Map/Unmap that is not page aligned or wraps around.
    #[error(
        "bad region [{start}, +{len:#x}): start and length must be 4 KiB aligned and non-empty"
    )]
    BadRegion {
        /// Start.
        start: Gva,
        /// Length.
        len: u64,
    },
    /// An address beyond the virtual address width.
    #[error("address {gva} is beyond the {bits}-bit virtual address space")]
    NonCanonical {
        /// The address.
        gva: Gva,
        /// Width in bits.
        bits: u32,
    },
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
}

/// Guest OS parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestConfig {
    /// Paging levels: 4 or 5.
    pub levels: u8,
    /// Preferred page size for data: 4 KiB, or 2 MiB (THP: used where the 2 MiB-aligned region is
    /// inside a mapped region and a free 2 MiB frame exists).
    pub page: PageSize,
    /// Frame allocation policy.
    pub frames: FramePolicy,
    /// Seed of the scattered policy.
    pub seed: u64,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            levels: 4,
            page: PageSize::Size4K,
            frames: FramePolicy::Contiguous,
            seed: 0,
        }
    }
}

/// A page fault the guest handled.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// Base of the virtual page now mapped.
    pub page: Gva,
    /// The new leaf.
    pub leaf: Leaf,
    /// Entries written and tables allocated.
    pub writes: Writes,
}

/// A page removed by an unmap.
#[derive(Clone, Copy, Debug)]
pub struct Unmapped {
    /// Base of the virtual page.
    pub page: Gva,
    /// The leaf that was removed.
    pub leaf: Leaf,
}

#[derive(Clone, Debug)]
struct Process {
    pid: Pid,
    table: RadixTable,
    /// Mapped regions: start -> end (exclusive), non-overlapping.
    vmas: BTreeMap<u64, u64>,
}

/// Counters of the guest OS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestCounters {
    /// Page faults handled (first touch).
    pub faults: u64,
    /// Faults that wanted a 2 MiB page and got 4 KiB (no free block or conflict).
    pub thp_fallbacks: u64,
    /// 2 MiB pages split by a partial unmap.
    pub splits: u64,
    /// Processes created.
    pub processes: u64,
}

/// The guest OS.
#[derive(Clone, Debug)]
pub struct GuestOs {
    cfg: GuestConfig,
    layout: GuestLayout,
    frames: GuestFrames,
    procs: Vec<Process>,
    by_pid: BTreeMap<Pid, usize>,
    cur: usize,
    counters: GuestCounters,
}

impl GuestOs {
    /// A booted guest with process 0 running.
    pub fn new(cfg: GuestConfig, layout: GuestLayout) -> Result<GuestOs, GuestError> {
        if cfg.levels != 4 && cfg.levels != 5 {
            return Err(GuestError::Config(format!(
                "guest paging levels must be 4 or 5, not {}",
                cfg.levels
            )));
        }
        if cfg.page == PageSize::Size1G {
            return Err(GuestError::Config("guest pages are 4k or 2m".into()));
        }
        let frames = GuestFrames::new(&layout, cfg.frames, cfg.seed);
        let mut os = GuestOs {
            cfg,
            layout,
            frames,
            procs: Vec::new(),
            by_pid: BTreeMap::new(),
            cur: 0,
            counters: GuestCounters::default(),
        };
        os.cur = os.create(0)?;
        Ok(os)
    }

    fn create(&mut self, pid: Pid) -> Result<usize, GuestError> {
        let root = self.frames.alloc_4k().ok_or(GuestError::OutOfMemory {
            gva: Gva(0),
            free: 0,
        })?;
        let idx = self.procs.len();
        self.procs.push(Process {
            pid,
            table: RadixTable::new(self.cfg.levels, root.raw()),
            vmas: BTreeMap::new(),
        });
        self.by_pid.insert(pid, idx);
        self.counters.processes += 1;
        Ok(idx)
    }

    /// The configuration.
    pub fn config(&self) -> &GuestConfig {
        &self.cfg
    }
    /// The guest-physical layout.
    pub fn layout(&self) -> &GuestLayout {
        &self.layout
    }
    /// Counters.
    pub fn counters(&self) -> GuestCounters {
        self.counters
    }
    /// The running process.
    pub fn current_pid(&self) -> Pid {
        self.procs[self.cur].pid
    }
    /// The running process's page table.
    #[inline]
    pub fn table(&self) -> &RadixTable {
        &self.procs[self.cur].table
    }
    /// The guest CR3 of the running process.
    pub fn cr3(&self) -> Gpa {
        Gpa(self.table().root())
    }
    /// Guest-physical translation of `gva` in the running process (the reference for tests).
    #[inline]
    pub fn translate(&self, gva: Gva) -> Option<Gpa> {
        self.table()
            .lookup(gva.raw())
            .map(|l| Gpa(l.translate(gva.raw())))
    }

    fn va_bits(&self) -> u32 {
        if self.cfg.levels == 5 { 57 } else { 48 }
    }

    fn check_region(&self, start: Gva, len: u64) -> Result<u64, GuestError> {
        let end = start.raw().checked_add(len);
        match end {
            Some(end)
                if len > 0
                    && start.is_aligned(PageSize::Size4K)
                    && len.is_multiple_of(4096)
                    && end <= 1u64 << self.va_bits() =>
            {
                Ok(end)
            }
            _ => Err(GuestError::BadRegion { start, len }),
        }
    }

    /// Switches to `pid` (a CR3 load), creating it if new. Returns whether it was created.
    pub fn switch(&mut self, pid: Pid) -> Result<bool, GuestError> {
        if let Some(&i) = self.by_pid.get(&pid) {
            self.cur = i;
            return Ok(false);
        }
        self.cur = self.create(pid)?;
        Ok(true)
    }

    /// Maps the region `[start, start + len)` in the running process (no page is populated).
    /// Overlapping regions are merged.
    pub fn map(&mut self, start: Gva, len: u64) -> Result<(), GuestError> {
        let end = self.check_region(start, len)?;
        let vmas = &mut self.procs[self.cur].vmas;
        let (mut s, mut e) = (start.raw(), end);
        let overlapping: Vec<(u64, u64)> = vmas
            .range(..=e)
            .filter(|&(_, &ve)| ve >= s)
            .map(|(&a, &b)| (a, b))
            .collect();
        for (a, b) in overlapping {
            vmas.remove(&a);
            s = s.min(a);
            e = e.max(b);
        }
        vmas.insert(s, e);
        Ok(())
    }

    fn vma_of(&self, va: u64) -> Option<(u64, u64)> {
        self.procs[self.cur]
            .vmas
            .range(..=va)
            .next_back()
            .filter(|&(_, &e)| va < e)
            .map(|(&s, &e)| (s, e))
    }

    /// Handles a page fault at `gva` in the running process: maps a frame (and any missing
    /// table) for it. An address outside every mapped region is mapped on demand with its 2 MiB
    /// region (trace mode: the program's region is assumed to exist).
    pub fn fault(&mut self, gva: Gva) -> Result<Fault, GuestError> {
        let bits = self.va_bits();
        if gva.raw() >> bits != 0 {
            return Err(GuestError::NonCanonical { gva, bits });
        }
        let (vs, ve) = match self.vma_of(gva.raw()) {
            Some(v) => v,
            None => {
                let s = gva.align_down(PageSize::Size2M);
                self.map(s, PageSize::Size2M.bytes())?;
                self.vma_of(gva.raw())
                    .unwrap_or((s.raw(), s.raw() + PageSize::Size2M.bytes()))
            }
        };
        // Worst case: the page plus one table page per level.
        if self.frames.free_bytes() < self.cfg.page.bytes() + 4096 * u64::from(self.cfg.levels) {
            return Err(GuestError::OutOfMemory {
                gva,
                free: self.frames.free_bytes(),
            });
        }
        self.counters.faults += 1;
        if self.cfg.page == PageSize::Size2M {
            let b = gva.align_down(PageSize::Size2M).raw();
            if b >= vs
                && b + PageSize::Size2M.bytes() <= ve
                && let Some(frame) = self.frames.alloc_2m()
            {
                match self.map_leaf(b, frame.raw(), 2) {
                    Ok(writes) => {
                        return Ok(Fault {
                            page: Gva(b),
                            leaf: Leaf {
                                target: frame.raw(),
                                level: 2,
                            },
                            writes,
                        });
                    }
                    Err(_) => self.frames.free(frame, PageSize::Size2M),
                }
            }
            self.counters.thp_fallbacks += 1;
        }
        let page = gva.align_down(PageSize::Size4K);
        let frame = self
            .frames
            .alloc_4k()
            .ok_or(GuestError::OutOfMemory { gva, free: 0 })?;
        let writes = self.map_leaf(page.raw(), frame.raw(), 1).map_err(|_| {
            GuestError::Config(format!("fault at {gva} on a page that is already mapped"))
        })?;
        Ok(Fault {
            page,
            leaf: Leaf {
                target: frame.raw(),
                level: 1,
            },
            writes,
        })
    }

    fn map_leaf(&mut self, va: u64, target: u64, level: u8) -> Result<Writes, Leaf> {
        let frames = &mut self.frames;
        let mut alloc = || frames.alloc_4k().map_or(u64::MAX, |g| g.raw());
        self.procs[self.cur]
            .table
            .map(va, target, level, &mut alloc)
    }

    /// Unmaps `[start, start + len)` in the running process: clears its leaves (splitting a
    /// 2 MiB page that is only partly inside), frees their frames and appends the removed pages to
    /// `out`. Returns the entries written.
    pub fn unmap(
        &mut self,
        start: Gva,
        len: u64,
        out: &mut Vec<Unmapped>,
    ) -> Result<Writes, GuestError> {
        let end = self.check_region(start, len)?;
        // Remove the range from the VMAs.
        let vmas = &mut self.procs[self.cur].vmas;
        let hit: Vec<(u64, u64)> = vmas
            .range(..end)
            .filter(|&(_, &e)| e > start.raw())
            .map(|(&a, &b)| (a, b))
            .collect();
        for (a, b) in hit {
            vmas.remove(&a);
            if a < start.raw() {
                vmas.insert(a, start.raw());
            }
            if b > end {
                vmas.insert(end, b);
            }
        }
        let mut writes = Writes::default();
        let mut va = start.raw();
        while va < end {
            let Some(leaf) = self.procs[self.cur].table.lookup(va) else {
                va += 4096;
                continue;
            };
            let base = va & !(leaf.bytes() - 1);
            if base >= start.raw() && base + leaf.bytes() <= end {
                self.procs[self.cur].table.unmap(va);
                writes.entries += 1;
                let size = PageSize::from_leaf_level(leaf.level).unwrap_or(PageSize::Size4K);
                self.frames.free(Gpa(leaf.target), size);
                out.push(Unmapped {
                    page: Gva(base),
                    leaf,
                });
                va = base + leaf.bytes();
            } else {
                // Split the huge page into 4 KiB pages, then go on.
                self.procs[self.cur].table.unmap(va);
                out.push(Unmapped {
                    page: Gva(base),
                    leaf,
                });
                writes.entries += 1;
                self.counters.splits += 1;
                for i in 0..512u64 {
                    let w = self
                        .map_leaf(base + (i << 12), leaf.target + (i << 12), 1)
                        .map_err(|_| GuestError::Config("split of a 2 MiB page failed".into()))?;
                    writes += w;
                }
            }
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(page: PageSize) -> GuestOs {
        GuestOs::new(
            GuestConfig {
                page,
                ..GuestConfig::default()
            },
            GuestLayout::for_ram(64 << 20),
        )
        .unwrap()
    }

    #[test]
    fn demand_paging_4k() {
        let mut g = os(PageSize::Size4K);
        g.map(Gva(0x40_0000), 0x10_0000).unwrap();
        assert_eq!(g.translate(Gva(0x40_0123)), None);
        let f = g.fault(Gva(0x40_0123)).unwrap();
        assert_eq!(f.leaf.level, 1);
        assert_eq!(f.writes.entries, 4);
        assert_eq!(
            g.translate(Gva(0x40_0123)),
            Some(Gpa(f.leaf.target + 0x123))
        );
        // A second page in the same PT writes one entry.
        assert_eq!(g.fault(Gva(0x40_1000)).unwrap().writes.entries, 1);
    }

    #[test]
    fn thp_only_inside_region() {
        let mut g = os(PageSize::Size2M);
        g.map(Gva(0x20_0000), 0x30_0000).unwrap(); // [2M, 5M): one full 2 MiB region
        assert_eq!(g.fault(Gva(0x20_0010)).unwrap().leaf.level, 2);
        assert_eq!(g.fault(Gva(0x40_0010)).unwrap().leaf.level, 1);
        assert_eq!(g.counters().thp_fallbacks, 1);
    }

    #[test]
    fn unmap_splits_and_frees() {
        let mut g = os(PageSize::Size2M);
        g.map(Gva(0x20_0000), 0x20_0000).unwrap();
        g.fault(Gva(0x20_0000)).unwrap();
        let free = g.frames.free_bytes();
        let mut out = Vec::new();
        g.unmap(Gva(0x20_0000), 0x1000, &mut out).unwrap();
        assert_eq!(g.translate(Gva(0x20_0000)), None);
        assert!(g.translate(Gva(0x20_1000)).is_some());
        assert_eq!(g.counters().splits, 1);
        // The split needed one PT page; the unmapped 4 KiB frame came back.
        assert_eq!(g.frames.free_bytes(), free - 4096 + 4096);
        out.clear();
        g.unmap(Gva(0x20_0000), 0x20_0000, &mut out).unwrap();
        assert_eq!(out.len(), 511);
    }

    #[test]
    fn processes_have_separate_tables() {
        let mut g = os(PageSize::Size4K);
        g.fault(Gva(0x1000)).unwrap();
        let a = g.translate(Gva(0x1000));
        assert!(g.switch(3).unwrap());
        assert_eq!(g.translate(Gva(0x1000)), None);
        g.fault(Gva(0x1000)).unwrap();
        assert_ne!(g.translate(Gva(0x1000)), a);
        assert!(!g.switch(0).unwrap());
        assert_eq!(g.translate(Gva(0x1000)), a);
    }

    #[test]
    fn out_of_memory_is_an_error() {
        let mut g = GuestOs::new(GuestConfig::default(), GuestLayout::for_ram(4 << 20)).unwrap();
        let mut err = None;
        for i in 0..2000u64 {
            if let Err(e) = g.fault(Gva(i << 12)) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(GuestError::OutOfMemory { .. })));
    }
}
