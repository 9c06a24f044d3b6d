//! The hypervisor's side of a VM's memory: which host-physical bytes back each guest-physical
//! byte, and the two ways hardware can learn it:
//! - an EPT (nested page table): a 4-level radix table gPA -> hPA whose leaves are 4 KiB, 2 MiB or
//!   1 GiB (never larger than the configured host page size, and only where both addresses are
//!   aligned and the backing is contiguous over the leaf);
//! - Compromis segment registers (`compromis_types::Segment`: BASE, LIMIT, host base); a gPA
//!   inside one is translated by one add. RAM not covered by a register set is only reachable through the EPT
//!   (the counted fallback path).
//!
//! The backing is immutable once built and shared (behind an `Arc`) by every simulated scheme, so
//! all schemes agree on gPA -> hPA by construction.

use crate::radix::RadixTable;
use compromis_types::{Address, Gpa, Hpa, PageSize};
use compromis_types::{GuestLayout, Segment};
use thiserror::Error;

/// Backing errors.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BackingError {
    /// The runs do not cover guest RAM exactly once.
    #[error("backing runs do not cover guest RAM exactly once: {0}")]
    Coverage(String),
    /// A run or segment is not 4 KiB aligned.
    #[error("backing piece at {0} is not 4 KiB aligned")]
    Unaligned(Gpa),
    /// A segment register set that does not agree with the runs.
    #[error("segment [{base}, {limit}) disagrees with the backing runs")]
    Segment {
        /// BASE.
        base: Gpa,
        /// LIMIT.
        limit: Gpa,
    },
}

/// A contiguous piece of backing: `[gpa, gpa + len)` -> `[hpa, hpa + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First guest-physical byte.
    pub gpa: Gpa,
    /// Host-physical address of `gpa`.
    pub hpa: Hpa,
    /// Length in bytes.
    pub len: u64,
}

/// A bump allocator of hypervisor-private host frames (EPT and shadow table pages).
#[derive(Clone, Debug)]
pub struct HvFrames {
    next: u64,
}

impl HvFrames {
    /// Frames from `start` upwards.
    pub fn new(start: Hpa) -> HvFrames {
        HvFrames { next: start.raw() }
    }
    /// A fresh 4 KiB frame.
    pub fn alloc(&mut self) -> Hpa {
        let f = self.next;
        self.next += 4096;
        Hpa(f)
    }
}

/// Where hypervisor-private frames start in the simulated host (far above any VM's memory).
pub const HV_PRIVATE_BASE: Hpa = Hpa(0x7f00_0000_0000);

/// The gPA -> hPA backing of one VM.
#[derive(Clone, Debug)]
pub struct Backing {
    layout: GuestLayout,
    runs: Vec<Run>,
    segments: Vec<Segment>,
    ept: RadixTable,
    ept_leaves: [u64; 3],
}

impl Backing {
    /// Builds the backing from `runs` (which must cover guest RAM exactly once) and the segment
    /// register sets the hypervisor loads (each must lie inside one run). EPT leaves are at most
    /// `host_page`; EPT table pages come from `hv`.
    pub fn new(
        layout: GuestLayout,
        mut runs: Vec<Run>,
        segments: Vec<Segment>,
        host_page: PageSize,
        hv: &mut HvFrames,
    ) -> Result<Backing, BackingError> {
        runs.sort_by_key(|r| r.gpa);
        let mut covered = 0u64;
        for (i, r) in runs.iter().enumerate() {
            if !r.gpa.is_aligned(PageSize::Size4K) || r.hpa.raw() % 4096 != 0 || r.len % 4096 != 0 {
                return Err(BackingError::Unaligned(r.gpa));
            }
            if i > 0 && runs[i - 1].gpa.raw() + runs[i - 1].len > r.gpa.raw() {
                return Err(BackingError::Coverage(format!("runs overlap at {}", r.gpa)));
            }
            let inside = layout
                .ram
                .iter()
                .any(|ram| r.gpa >= ram.start && r.gpa.raw() + r.len <= ram.end().raw());
            if !inside {
                return Err(BackingError::Coverage(format!(
                    "run at {} (+{:#x}) is not inside RAM",
                    r.gpa, r.len
                )));
            }
            covered += r.len;
        }
        if covered != layout.ram_bytes() {
            return Err(BackingError::Coverage(format!(
                "{covered:#x} bytes backed, {:#x} bytes of RAM",
                layout.ram_bytes()
            )));
        }
        for s in &segments {
            // Each RAM part of a set (a set may span the MMIO hole, whose addresses trap before
            // the segment is looked at) lies inside one run with the set's OFFSET.
            let mut parts = 0;
            let ok = layout.ram.iter().all(|ram| {
                let (b, l) = (s.base.max(ram.start), s.limit.min(ram.end()));
                if b >= l {
                    return true;
                }
                parts += 1;
                let h = s.host_base.raw() + (b.raw() - s.base.raw());
                runs.iter().any(|r| {
                    b >= r.gpa
                        && l.raw() <= r.gpa.raw() + r.len
                        && h == r.hpa.raw() + (b.raw() - r.gpa.raw())
                })
            });
            if !ok || parts == 0 || s.limit <= s.base {
                return Err(BackingError::Segment {
                    base: s.base,
                    limit: s.limit,
                });
            }
        }
        let mut ept = RadixTable::new(4, hv.alloc().raw());
        let mut ept_leaves = [0u64; 3];
        let mut alloc = || hv.alloc().raw();
        for r in &runs {
            let mut off = 0;
            while off < r.len {
                let (g, h) = (r.gpa.raw() + off, r.hpa.raw() + off);
                let size = PageSize::ALL
                    .iter()
                    .rev()
                    .copied()
                    .find(|&p| {
                        p <= host_page && (g | h) & p.mask() == 0 && r.len - off >= p.bytes()
                    })
                    .unwrap_or(PageSize::Size4K);
                ept.map(g, h, size.leaf_level(), &mut alloc)
                    .map_err(|_| BackingError::Coverage(format!("gPA {g:#x} mapped twice")))?;
                ept_leaves[usize::from(size.leaf_level() - 1)] += 1;
                off += size.bytes();
            }
        }
        Ok(Backing {
            layout,
            runs,
            segments,
            ept,
            ept_leaves,
        })
    }

    /// A VM whose RAM is one contiguous host extent starting at `host_base` (the RAM ranges of
    /// the layout packed back to back), with one register set per RAM range.
    pub fn contiguous(
        layout: GuestLayout,
        host_base: Hpa,
        host_page: PageSize,
        hv: &mut HvFrames,
    ) -> Backing {
        let mut runs = Vec::new();
        let mut h = host_base.raw();
        for r in &layout.ram {
            runs.push(Run {
                gpa: r.start,
                hpa: Hpa(h),
                len: r.len,
            });
            h += r.len;
        }
        let segs = runs
            .iter()
            .map(|r| Segment {
                base: r.gpa,
                limit: Gpa(r.gpa.raw() + r.len),
                host_base: r.hpa,
            })
            .collect();
        // Runs are built from the layout, so they cover it exactly.
        Backing::new(layout, runs, segs, host_page, hv).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The guest-physical layout.
    pub fn layout(&self) -> &GuestLayout {
        &self.layout
    }
    /// The runs, in gPA order.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }
    /// The segment register sets.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// The EPT.
    #[inline]
    pub fn ept(&self) -> &RadixTable {
        &self.ept
    }
    /// EPT leaves of 4 KiB, 2 MiB and 1 GiB.
    pub fn ept_leaves(&self) -> [u64; 3] {
        self.ept_leaves
    }
    /// Segment translation of `gpa`, if a register set covers it.
    #[inline]
    pub fn segment(&self, gpa: Gpa) -> Option<Hpa> {
        self.segments.iter().find_map(|s| s.translate(gpa))
    }
    /// Reference translation of `gpa` (through the EPT), if it is RAM.
    #[inline]
    pub fn translate(&self, gpa: Gpa) -> Option<Hpa> {
        self.ept
            .lookup(gpa.raw())
            .map(|l| Hpa(l.translate(gpa.raw())))
    }
    /// The EPT leaf size backing `gpa`.
    pub fn ept_page(&self, gpa: Gpa) -> Option<PageSize> {
        self.ept
            .lookup(gpa.raw())
            .and_then(|l| PageSize::from_leaf_level(l.level))
    }
    /// Bytes of RAM covered by segment registers.
    pub fn segment_bytes(&self) -> u64 {
        // RAM bytes only: a set spanning the MMIO hole does not count the hole.
        self.segments
            .iter()
            .map(|s| {
                self.layout
                    .ram
                    .iter()
                    .map(|r| {
                        s.limit
                            .min(r.end())
                            .raw()
                            .saturating_sub(s.base.max(r.start).raw())
                    })
                    .sum::<u64>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_backing_with_hole() {
        let mut hv = HvFrames::new(HV_PRIVATE_BASE);
        let b = Backing::contiguous(
            GuestLayout::for_ram(5 << 30),
            Hpa(1 << 30),
            PageSize::Size1G,
            &mut hv,
        );
        assert_eq!(b.segments().len(), 2);
        // Low RAM: gPA 0 -> 1 GiB; high RAM: gPA 4 GiB -> 1 GiB + 0xF000_0000.
        assert_eq!(b.segment(Gpa(0x1234)), Some(Hpa((1 << 30) + 0x1234)));
        assert_eq!(b.segment(Gpa(1 << 32)), Some(Hpa((1 << 30) + 0xF000_0000)));
        assert_eq!(b.segments()[0].offset(), 1 << 30);
        assert_eq!(b.segment(Gpa(0xF800_0000)), None);
        for g in [
            0x1234u64,
            0xEFFF_F000,
            1 << 32,
            (1 << 32) + 0x4000_0000 + 77,
        ] {
            assert_eq!(b.translate(Gpa(g)), b.segment(Gpa(g)));
        }
        // 0xF000_0000 is not 1 GiB aligned, so the low range needs 2 MiB leaves at its end.
        let [_, two, one] = b.ept_leaves();
        assert!(one >= 3 && two > 0);
    }

    #[test]
    fn ept_leaves_follow_alignment() {
        let mut hv = HvFrames::new(HV_PRIVATE_BASE);
        let layout = GuestLayout::for_ram(8 << 20);
        // Host base only 4 KiB aligned: no 2 MiB leaf is possible.
        let b = Backing::contiguous(layout.clone(), Hpa(0x1000), PageSize::Size2M, &mut hv);
        assert_eq!(b.ept_leaves(), [2048, 0, 0]);
        let b = Backing::contiguous(layout, Hpa(0x20_0000), PageSize::Size2M, &mut hv);
        assert_eq!(b.ept_leaves(), [0, 4, 0]);
    }

    #[test]
    fn bad_runs_are_rejected() {
        let mut hv = HvFrames::new(HV_PRIVATE_BASE);
        let layout = GuestLayout::for_ram(8 << 20);
        let half = vec![Run {
            gpa: Gpa(0),
            hpa: Hpa(0),
            len: 4 << 20,
        }];
        assert!(matches!(
            Backing::new(layout.clone(), half, vec![], PageSize::Size4K, &mut hv),
            Err(BackingError::Coverage(_))
        ));
        let runs = vec![Run {
            gpa: Gpa(0),
            hpa: Hpa(0),
            len: 8 << 20,
        }];
        let bad_seg = vec![Segment {
            base: Gpa(0),
            limit: Gpa(4096),
            host_base: Hpa(8192),
        }];
        assert!(matches!(
            Backing::new(layout, runs, bad_seg, PageSize::Size4K, &mut hv),
            Err(BackingError::Segment { .. })
        ));
    }
}
