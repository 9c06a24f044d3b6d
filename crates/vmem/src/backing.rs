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
use std::sync::OnceLock;
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
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// An upper bound on the EPT table pages that mapping `runs` with leaves of at most
/// `host_page` creates below the root (a capacity hint: it changes no result). A run maps with
/// 4 KiB leaves only where its guest and host addresses are not both 2 MiB aligned (all of it
/// when they differ modulo 2 MiB, else at most 2 MiB at each end), and likewise with 2 MiB
/// leaves; each 4 KiB leaf table spans 2 MiB, each 2 MiB leaf table 1 GiB, each upper table
/// 512 GiB, and a run's ends may fall in two more of each.
fn tables_needed(runs: &[Run], host_page: PageSize) -> usize {
    let below = |r: &Run, p: PageSize| {
        if host_page < p || (r.gpa.raw() ^ r.hpa.raw()) & p.mask() != 0 {
            r.len
        } else {
            r.len.min(2 * p.bytes())
        }
    };
    let tables: u64 = runs
        .iter()
        .map(|r| {
            (below(r, PageSize::Size2M) >> 21)
                + (below(r, PageSize::Size1G) >> 30)
                + (r.len >> 39)
                + 6
        })
        .sum();
    usize::try_from(tables).unwrap_or(usize::MAX)
}

/// Where hypervisor-private frames start in the simulated host (far above any VM's memory).
pub const HV_PRIVATE_BASE: Hpa = Hpa(0x7f00_0000_0000);

/// Up to this many runs, [`Backing::translate`] scans the runs instead of looking the EPT up
/// (a VM on a fresh host has one run per RAM range, so one or two).
const SCAN_RUNS: usize = 4;

/// The gPA -> hPA backing of one VM.
///
/// The EPT of a backing made by [`Backing::lazy`] is built the first time it is asked for
/// ([`Backing::ept`], [`Backing::ept_page`], or [`Backing::translate`] of a backing of more
/// than [`SCAN_RUNS`] runs), from the runs and the hypervisor frames the backing was given: the
/// same table, entry for entry and frame for frame, that [`Backing::new`] builds at once. A run
/// whose schemes never walk the EPT (native and the perfect-TLB baseline on a fresh host) never
/// builds it: for the default trace VM that is 2,048 table pages (8 MiB of fresh memory the
/// kernel zeroes) and ~20 M instructions before the first access.
#[derive(Clone, Debug)]
pub struct Backing {
    layout: GuestLayout,
    runs: Vec<Run>,
    segments: Vec<Segment>,
    ept: OnceLock<RadixTable>,
    /// What the EPT is built with: leaves of at most this size ...
    host_page: PageSize,
    /// ... and table pages from these frames on.
    frames: HvFrames,
    ept_leaves: [u64; 3],
}

/// The EPT of `runs` (sorted, not overlapping): leaves of at most `host_page`, the largest
/// the alignment of both addresses allows at each point; tables allocated from `hv` as
/// leaf-by-leaf `map` calls would. Also the leaves made per size.
fn build_ept(
    runs: &[Run],
    host_page: PageSize,
    hv: &mut HvFrames,
) -> Result<(RadixTable, [u64; 3]), BackingError> {
    let mut ept = RadixTable::new(4, hv.alloc().raw());
    // Room for every table page at once: the entries are not copied as the table grows.
    ept.reserve_tables(tables_needed(runs, host_page));
    let mut ept_leaves = [0u64; 3];
    let mut alloc = || hv.alloc().raw();
    for r in runs {
        ept.map_run(
            r.gpa.raw(),
            r.hpa.raw(),
            r.len,
            host_page.leaf_level(),
            &mut ept_leaves,
            &mut alloc,
        )
        .map_err(|(g, _)| BackingError::Coverage(format!("gPA {g:#x} mapped twice")))?;
    }
    Ok((ept, ept_leaves))
}

/// The EPT leaves of 4 KiB, 2 MiB and 1 GiB that [`build_ept`] makes for `runs`, counted
/// without building anything: at each point the leaf is the largest of at most `host_page`
/// that both addresses are aligned to and the rest of the run holds, and leaves of one size
/// follow each other up to the next boundary of the size above it (where a larger leaf may
/// start) or to the end of the run; so the count goes a batch of equal leaves at a time.
fn leaf_counts(runs: &[Run], host_page: PageSize) -> [u64; 3] {
    let mut leaves = [0u64; 3];
    for r in runs {
        let (mut g, mut h, mut left) = (r.gpa.raw(), r.hpa.raw(), r.len);
        while left > 0 {
            let i = PageSize::ALL
                .iter()
                .rposition(|&p| p <= host_page && (g | h) & p.mask() == 0 && left >= p.bytes())
                .unwrap_or(0);
            let size = PageSize::ALL[i].bytes();
            let mut n = left / size;
            // The size above, if it may fit somewhere further in this run (both addresses
            // are aligned to it at the same points, or never).
            let up = PageSize::ALL
                .get(i + 1)
                .filter(|&&p| p <= host_page && (g ^ h) & p.mask() == 0);
            if let Some(&up) = up {
                // Bytes to its next boundary (0 when `g` is on one: then a leaf of that size
                // does not fit in the rest of the run, nor does one later).
                let to_boundary = up.bytes().wrapping_sub(g & up.mask()) & up.mask();
                if to_boundary > 0 {
                    n = n.min(to_boundary / size);
                }
            }
            // At least one leaf: `size` fits here, and a boundary is a multiple of it.
            let n = n.max(1);
            leaves[i] += n;
            g += n * size;
            h += n * size;
            left -= n * size;
        }
    }
    leaves
}

impl Backing {
    /// Builds the backing from `runs` (which must cover guest RAM exactly once) and the segment
    /// register sets the hypervisor loads (each must lie inside one run). EPT leaves are at most
    /// `host_page`; EPT table pages come from `hv`.
    pub fn new(
        layout: GuestLayout,
        runs: Vec<Run>,
        segments: Vec<Segment>,
        host_page: PageSize,
        hv: &mut HvFrames,
    ) -> Result<Backing, BackingError> {
        let mut b = Backing::lazy(layout, runs, segments, host_page, hv.clone())?;
        let (ept, leaves) = build_ept(&b.runs, host_page, hv)?;
        debug_assert_eq!(leaves, b.ept_leaves);
        b.ept_leaves = leaves;
        b.ept = OnceLock::from(ept);
        Ok(b)
    }

    /// [`Backing::new`], with the EPT built only when first asked for (see [`Backing`]), its
    /// table pages from `hv` on. The runs are checked here as [`Backing::new`] checks them.
    pub fn lazy(
        layout: GuestLayout,
        mut runs: Vec<Run>,
        segments: Vec<Segment>,
        host_page: PageSize,
        hv: HvFrames,
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
        // The runs are sorted and do not overlap: the EPT's build cannot fail later.
        let ept_leaves = leaf_counts(&runs, host_page);
        Ok(Backing {
            layout,
            runs,
            segments,
            ept: OnceLock::new(),
            host_page,
            frames: hv,
            ept_leaves,
        })
    }

    /// Builds the EPT of a [`Backing::lazy`] backing (once, on the first thread that needs it).
    #[cold]
    #[inline(never)]
    fn build(&self) -> RadixTable {
        match build_ept(&self.runs, self.host_page, &mut self.frames.clone()) {
            Ok((ept, _)) => ept,
            // `lazy` checked that the runs do not overlap, the only way a run maps twice.
            Err(e) => unreachable!("{e}"),
        }
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
    /// The EPT (built now if it was not yet, see [`Backing`]).
    #[inline]
    pub fn ept(&self) -> &RadixTable {
        self.ept.get_or_init(|| self.build())
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
    /// Reference translation of `gpa` (what the EPT gives), if it is RAM. With at most
    /// [`SCAN_RUNS`] runs, from the runs themselves (the EPT maps each run onto its host range,
    /// and nothing else); else through the EPT.
    #[inline]
    pub fn translate(&self, gpa: Gpa) -> Option<Hpa> {
        let g = gpa.raw();
        if self.runs.len() <= SCAN_RUNS {
            return self
                .runs
                .iter()
                .find(|r| g.wrapping_sub(r.gpa.raw()) < r.len)
                .map(|r| Hpa(r.hpa.raw() + (g - r.gpa.raw())));
        }
        self.ept().lookup(g).map(|l| Hpa(l.translate(g)))
    }
    /// The EPT leaf size backing `gpa`.
    pub fn ept_page(&self, gpa: Gpa) -> Option<PageSize> {
        self.ept()
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
    use proptest::prop_assume;

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

    /// The EPT as `Backing::new` built it before `RadixTable::map_run`: one `map` per leaf, the
    /// largest leaf of at most `host_page` that the alignment of both addresses and the rest
    /// of the run allow; with the root from `hv` first.
    fn ept_per_leaf(
        runs: &[Run],
        host_page: PageSize,
        hv: &mut HvFrames,
    ) -> (RadixTable, [u64; 3]) {
        let mut ept = RadixTable::new(4, hv.alloc().raw());
        let mut leaves = [0u64; 3];
        let mut alloc = || hv.alloc().raw();
        for r in runs {
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
                ept.map(g, h, size.leaf_level(), &mut alloc).unwrap();
                leaves[usize::from(size.leaf_level() - 1)] += 1;
                off += size.bytes();
            }
        }
        (ept, leaves)
    }

    /// `Backing::new`'s EPT is the per-leaf build's, table for table and entry for entry, with
    /// the same leaf counts and the hypervisor's frame cursor in the same place.
    fn assert_ept_is_per_leaf(layout: GuestLayout, runs: Vec<Run>, host_page: PageSize) {
        let mut hv = HvFrames::new(HV_PRIVATE_BASE);
        let b = Backing::new(layout, runs.clone(), vec![], host_page, &mut hv).unwrap();
        let mut runs = runs;
        runs.sort_by_key(|r| r.gpa);
        let mut hv_oracle = HvFrames::new(HV_PRIVATE_BASE);
        let (ept, leaves) = ept_per_leaf(&runs, host_page, &mut hv_oracle);
        assert!(
            b.ept() == &ept,
            "EPT tables differ ({host_page}, runs {runs:x?})"
        );
        assert_eq!(b.ept_leaves(), leaves);
        assert_eq!(hv, hv_oracle);
        // The lazy backing: its leaves counted without a build, then the same EPT when asked.
        let lazy = Backing::lazy(
            b.layout().clone(),
            runs.clone(),
            vec![],
            host_page,
            HvFrames::new(HV_PRIVATE_BASE),
        )
        .unwrap();
        assert_eq!(lazy.ept_leaves(), leaves, "{host_page}, runs {runs:x?}");
        assert!(lazy.ept.get().is_none(), "built before it was asked for");
        // Translations: from the runs (a few) or the EPT (many), as the EPT gives them; at
        // each run's ends, inside it, and just outside RAM.
        let mut probes = vec![0, u64::MAX, 0xF000_0000, 1 << 32];
        for r in &runs {
            let (g, e) = (r.gpa.raw(), r.gpa.raw() + r.len);
            probes.extend([g, g + 0x123, e - 1, e, e + 4096, g.wrapping_sub(1)]);
            probes.push(g + ((r.len / 3) & !7));
        }
        for g in probes {
            let want = ept.lookup(g).map(|l| Hpa(l.translate(g)));
            assert_eq!(lazy.translate(Gpa(g)), want, "gPA {g:#x}");
            assert_eq!(b.translate(Gpa(g)), want, "gPA {g:#x}");
        }
        assert!(
            lazy.ept() == &ept,
            "lazy EPT differs ({host_page}, runs {runs:x?})"
        );
    }

    #[test]
    fn trace_vm_ept_is_the_per_leaf_build() {
        // What `sim --trace` builds by default: 4 GiB of RAM (3.75 GiB below the MMIO hole,
        // 256 MiB above it) in one host extent from 4 GiB, 4 KiB host pages: 1,048,576 leaves.
        let layout = GuestLayout::for_ram(4 << 30);
        let mut h = 4u64 << 30;
        let runs = layout
            .ram
            .iter()
            .map(|r| {
                let run = Run {
                    gpa: r.start,
                    hpa: Hpa(h),
                    len: r.len,
                };
                h += r.len;
                run
            })
            .collect();
        assert_ept_is_per_leaf(layout, runs, PageSize::Size4K);
    }

    /// Runs covering `layout` (cut at `cuts`, fractions of each RAM range in 1/1024, snapped to
    /// `snap` bytes) with host addresses from `hosts` (GiB, 2 MiB and 4 KiB steps; the 4 KiB
    /// steps only on runs of at most 16 MiB, so that a test maps a few thousand leaves).
    fn runs_for(
        layout: &GuestLayout,
        cuts: &[u64],
        snap: u64,
        hosts: &[(u64, u64, u64)],
    ) -> Vec<Run> {
        let mut runs = Vec::new();
        for ram in &layout.ram {
            let mut points: Vec<u64> = cuts
                .iter()
                .map(|c| (ram.len * c / 1024) / snap * snap)
                .filter(|&p| p > 0 && p < ram.len)
                .collect();
            points.push(0);
            points.push(ram.len);
            points.sort_unstable();
            points.dedup();
            for w in points.windows(2) {
                let (gib, mib2, k4) = hosts[runs.len() % hosts.len()];
                let len = w[1] - w[0];
                let k4 = if len <= 16 << 20 { k4 } else { 0 };
                runs.push(Run {
                    gpa: Gpa(ram.start.raw() + w[0]),
                    hpa: Hpa((gib << 30) + (mib2 << 21) + (k4 << 12)),
                    len,
                });
            }
        }
        // In any order: `Backing::new` sorts them.
        runs.reverse();
        runs
    }

    proptest::proptest! {
        /// Small VMs at every host page size: runs of any 4 KiB multiple at any host alignment.
        #[test]
        fn ept_is_the_per_leaf_build(
            pages in 1u64..12_000,
            host in 0usize..3,
            cuts in proptest::collection::vec(0u64..1024, 0..5),
            hosts in proptest::collection::vec((0u64..8, 0u64..512, 0u64..4), 1..6),
        ) {
            let layout = GuestLayout::for_ram(pages << 12);
            let runs = runs_for(&layout, &cuts, 4096, &hosts);
            assert_ept_is_per_leaf(layout, runs, PageSize::ALL[host]);
        }

        /// VMs across the MMIO hole (RAM below 3.75 GiB and from 4 GiB on) with 2 MiB or 1 GiB
        /// host pages, runs cut at 2 MiB or 4 KiB boundaries.
        #[test]
        fn ept_across_the_mmio_hole_is_the_per_leaf_build(
            above in 1u64..1500,
            one_gib in proptest::prelude::any::<bool>(),
            snap_4k in proptest::prelude::any::<bool>(),
            cuts in proptest::collection::vec(0u64..1024, 0..5),
            hosts in proptest::collection::vec((0u64..8, 0u64..512, 0u64..4), 1..6),
        ) {
            let layout = GuestLayout::for_ram(0xF000_0000 + (above << 21));
            prop_assume!(layout.ram.len() == 2);
            let snap = if snap_4k { 4096 } else { 2 << 20 };
            let runs = runs_for(&layout, &cuts, snap, &hosts);
            // A run cut off 2 MiB and longer than 16 MiB would be all 4 KiB leaves.
            prop_assume!(runs.iter().all(|r| r.len <= 16 << 20 || r.len % (2 << 20) == 0));
            let page = if one_gib { PageSize::Size1G } else { PageSize::Size2M };
            assert_ept_is_per_leaf(layout, runs, page);
        }
    }

    /// The leaves the per-leaf build makes for one run, counted one leaf at a time.
    fn leaves_one_by_one(r: &Run, host_page: PageSize) -> [u64; 3] {
        let mut leaves = [0u64; 3];
        let mut off = 0;
        while off < r.len {
            let (g, h) = (r.gpa.raw() + off, r.hpa.raw() + off);
            let i = PageSize::ALL
                .iter()
                .rposition(|&p| {
                    p <= host_page && (g | h) & p.mask() == 0 && r.len - off >= p.bytes()
                })
                .unwrap_or(0);
            leaves[i] += 1;
            off += PageSize::ALL[i].bytes();
        }
        leaves
    }

    proptest::proptest! {
        /// `leaf_counts` (a batch of equal leaves at a time) counts what placing one leaf at a
        /// time counts: runs starting on and off every boundary, host addresses at the same
        /// offset as the guest's within 2 MiB or 1 GiB (where larger leaves fit) or not.
        #[test]
        fn leaf_counts_are_the_per_leaf_counts(
            host in 0usize..3,
            g in (0u64..4, 0u64..512, 0u64..512),
            h in (0u64..4, 0u64..512, 0u64..512),
            same in 0usize..3,
            len in (0u64..3, 0u64..1100, 0u64..1100),
        ) {
            let host_page = PageSize::ALL[host];
            let gpa = (g.0 << 30) + (g.1 << 21) + (g.2 << 12);
            let mut hpa = (h.0 << 30) + (h.1 << 21) + (h.2 << 12);
            // 0: unrelated; 1: the same offset within 2 MiB; 2: within 1 GiB.
            if same > 0 {
                let m = PageSize::ALL[same].mask();
                hpa = (hpa & !m) | (gpa & m);
            }
            // Lengths of 4 KiB leaves only stay small (the oracle places each leaf).
            let gigs = if host_page == PageSize::Size4K { 0 } else { len.0 };
            let len = (gigs << 30) + (len.1 << 21) + ((len.2 + 1) << 12);
            let run = Run { gpa: Gpa(gpa), hpa: Hpa(hpa), len };
            proptest::prop_assert_eq!(
                leaf_counts(&[run], host_page),
                leaves_one_by_one(&run, host_page),
                "{:x?} at most {}", run, host_page
            );
        }
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
