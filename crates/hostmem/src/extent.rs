//! Host-physical extents and the extent allocator.
//!
//! Models the hypervisor half of Compromis (VEE 2021, section "hypervisor"): each VM's memory is one
//! contiguous range of host-physical memory, so the allocator deals in *extents* (start, length)
//! rather than pages. Free extents are kept in three ordered indexes, in the spirit of rust-vmm
//! `vm-allocator`'s `AllocPolicy`. Each index is an `OrdSet`: a sorted vector while it holds
//! at most a few hundred extents (a placement host holds tens, where a binary search and a short
//! `memmove` beat a B-tree several times over and a steady replay allocates nothing), a B-tree
//! beyond (an aged 1 TiB host holds ten thousand):
//! - by address (`start -> len`): coalescing on free, `alloc_at`, next-fit, the ownership check;
//! - by `(len, start)`: best-fit and worst-fit in O(log n);
//! - by power-of-two size class, each class ordered by address: first-fit and next-fit first probe
//!   the next 8 free extents in address order (exact when one fits), then look at the
//!   lowest-addressed member of each non-empty class that can hold the request (at most 64
//!   classes), so they cost O(64 log n) plus a scan of the request's own size class.
//!
//! All lengths and RAM ranges are multiples of 4 KiB; an allocation's start is aligned to the
//! requested [`PageSize`].

use crate::ordset::OrdSet;
use compromis_types::{Address, ByteSize, Extent, Hpa, PageSize, VmId};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Free extents first-fit and next-fit examine in address order before searching by size class.
const FIRST_FIT_PROBE: usize = 8;

/// The allocation granule: every length and range boundary is a multiple of 4 KiB.
pub const GRANULE: u64 = PageSize::Size4K.bytes();

/// Which free extent an allocation takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Policy {
    /// The lowest-addressed free extent that fits.
    FirstFit,
    /// The smallest free extent that fits (ties: lowest address).
    BestFit,
    /// The largest free extent (ties: highest address).
    WorstFit,
    /// Like first-fit, but the search starts where the previous allocation ended and wraps around.
    NextFit,
}

impl Policy {
    /// Every policy, in a fixed order.
    pub const ALL: [Policy; 4] = [
        Policy::FirstFit,
        Policy::BestFit,
        Policy::WorstFit,
        Policy::NextFit,
    ];

    /// The name used on command lines and in scenario files.
    pub const fn name(self) -> &'static str {
        match self {
            Policy::FirstFit => "first-fit",
            Policy::BestFit => "best-fit",
            Policy::WorstFit => "worst-fit",
            Policy::NextFit => "next-fit",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is not one of [`Policy::ALL`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error(
    "unknown allocation policy '{0}': valid values are first-fit, best-fit, worst-fit, next-fit"
)]
pub struct ParsePolicyError(pub String);

impl FromStr for Policy {
    type Err = ParsePolicyError;
    fn from_str(s: &str) -> Result<Policy, ParsePolicyError> {
        let t = s.trim().to_ascii_lowercase().replace('_', "-");
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == t || p.name().replace('-', "") == t)
            .ok_or_else(|| ParsePolicyError(s.to_owned()))
    }
}

/// Why an allocator or host-memory operation was refused. The state is unchanged after any error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// A zero-byte request.
    #[error("zero-size request")]
    ZeroSize,
    /// A value that must be a multiple of an alignment is not.
    #[error("unaligned {what} {value:#x}: must be a multiple of {align:#x}")]
    Unaligned {
        /// What was unaligned (`length`, `start`...).
        what: &'static str,
        /// The bad value.
        value: u64,
        /// The required alignment in bytes.
        align: u64,
    },
    /// The request exceeds the host's whole capacity.
    #[error("request of {} exceeds the host capacity of {}", ByteSize(*len), ByteSize(*capacity))]
    TooLarge {
        /// Requested bytes.
        len: u64,
        /// Host RAM bytes.
        capacity: u64,
    },
    /// No free extent can hold the request.
    #[error("no free extent of {} (largest free extent: {})", ByteSize(*len), ByteSize(*largest))]
    NoExtent {
        /// Requested bytes.
        len: u64,
        /// The largest free extent at the time.
        largest: u64,
    },
    /// Even `max_extents` extents cannot hold the request.
    #[error("{} do not fit in {max_extents} free extent(s) (they hold {})", ByteSize(*len), ByteSize(*coverable))]
    TooFragmented {
        /// Requested bytes.
        len: u64,
        /// The extent limit.
        max_extents: usize,
        /// What the `max_extents` largest free extents hold.
        coverable: u64,
    },
    /// Not enough free memory in total.
    #[error("{} requested but only {} free", ByteSize(*len), ByteSize(*free))]
    OutOfMemory {
        /// Requested bytes.
        len: u64,
        /// Free bytes.
        free: u64,
    },
    /// The range is not (entirely) allocated: part of it is free or outside RAM.
    #[error("extent {0} is not allocated")]
    NotAllocated(Extent),
    /// The range is not (entirely) free.
    #[error("extent {0} is not free")]
    NotFree(Extent),
    /// A RAM or reserved range is malformed (empty, unaligned, overflowing or overlapping).
    #[error("bad memory range {ext}: {reason}")]
    BadRange {
        /// The range.
        ext: Extent,
        /// Why it was refused.
        reason: &'static str,
    },
    /// No VM with this id.
    #[error("unknown VM {0}")]
    UnknownVm(VmId),
    /// A VM with this id already exists.
    #[error("VM {0} already exists")]
    VmExists(VmId),
    /// `max_extents` (or a segment count) of zero.
    #[error("the extent limit must be at least 1")]
    ZeroExtents,
    /// A shrink that would leave the VM with no memory or release more than it has.
    #[error("cannot shrink {vm} by {}: it has {}", ByteSize(*by), ByteSize(*size))]
    ShrinkTooLarge {
        /// The VM.
        vm: VmId,
        /// Requested reduction.
        by: u64,
        /// Its current size.
        size: u64,
    },
    /// A compaction move that does not match the current state.
    #[error("compaction move {index} is invalid: {reason}")]
    BadMove {
        /// Index in the plan.
        index: usize,
        /// Why.
        reason: String,
    },
}

#[inline]
fn class_of(len: u64) -> usize {
    // floor(log2(len)) for len >= 1; 63 - leading_zeros is at most 63.
    (63 - len.max(1).leading_zeros()) as usize
}

/// Aligned start if `need` bytes aligned to `align` fit in the free extent `(start, len)`.
#[inline]
fn fit(start: u64, len: u64, need: u64, align: PageSize) -> Option<u64> {
    let a = Hpa(start).align_up(align)?.raw();
    let end = a.checked_add(need)?;
    (end <= start + len).then_some(a)
}

/// An extent allocator over one or more RAM ranges. See the module documentation for the indexes.
///
/// The allocator does not record who owns what: an allocated byte is any byte of a RAM range that is
/// not free. `free` accepts any allocated range (a whole allocation or a piece of it, e.g. the tail
/// released by a shrink) and refuses, with the state unchanged, a range any byte of which is free or
/// outside RAM.
#[derive(Clone, Debug)]
pub struct ExtentAllocator {
    /// RAM ranges `(start, end)` (end exclusive), sorted by start; touching ranges are merged.
    ranges: Vec<(u64, u64)>,
    capacity: u64,
    /// Free extents `(start, len)`, sorted by start.
    by_addr: OrdSet,
    /// Free extents `(len, start)`, sorted.
    by_len: OrdSet,
    /// Free extents `(start, len)` per size class `floor(log2(len))`, each sorted by start. Built
    /// (64 classes) on the first first-fit or next-fit allocation and kept from then on; empty
    /// before, when first-fit searches scan `by_addr` (same answer): best-fit users such as the
    /// placement engine never pay for it.
    classes: Vec<OrdSet>,
    /// Bit `c` set when `classes[c]` is non-empty.
    nonempty: u64,
    free: u64,
    /// Next-fit: where the previous allocation ended.
    cursor: u64,
}

impl ExtentAllocator {
    /// One RAM range `[0, capacity)`; `capacity` is rounded down to a multiple of 4 KiB.
    pub fn new(capacity: u64) -> Self {
        let cap = capacity & !(GRANULE - 1);
        let ranges: &[Extent] = if cap == 0 {
            &[]
        } else {
            &[Extent::new(0, cap)]
        };
        match Self::with_ranges(ranges) {
            Ok(a) => a,
            Err(_) => Self::empty(),
        }
    }

    fn empty() -> Self {
        ExtentAllocator {
            ranges: Vec::new(),
            capacity: 0,
            by_addr: OrdSet::default(),
            by_len: OrdSet::default(),
            classes: Vec::new(),
            nonempty: 0,
            free: 0,
            cursor: 0,
        }
    }

    /// An allocator whose RAM is the given ranges, all free. Ranges must be non-empty, 4 KiB
    /// aligned, not overflow and not overlap; touching ranges are merged.
    pub fn with_ranges(ranges: &[Extent]) -> Result<Self, AllocError> {
        let mut sorted = ranges.to_vec();
        sorted.sort();
        let mut a = Self::empty();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for r in sorted {
            if r.len == 0 {
                return Err(AllocError::BadRange {
                    ext: r,
                    reason: "empty range",
                });
            }
            if !r.start.raw().is_multiple_of(GRANULE) || !r.len.is_multiple_of(GRANULE) {
                return Err(AllocError::BadRange {
                    ext: r,
                    reason: "not 4 KiB aligned",
                });
            }
            let Some(end) = r.start.raw().checked_add(r.len) else {
                return Err(AllocError::BadRange {
                    ext: r,
                    reason: "end overflows 64 bits",
                });
            };
            match merged.last_mut() {
                Some((_, e)) if *e > r.start.raw() => {
                    return Err(AllocError::BadRange {
                        ext: r,
                        reason: "overlaps another RAM range",
                    });
                }
                Some((_, e)) if *e == r.start.raw() => *e = end,
                _ => merged.push((r.start.raw(), end)),
            }
        }
        for (s, e) in merged {
            a.ranges.push((s, e));
            a.capacity += e - s;
            a.insert_free(s, e - s);
        }
        Ok(a)
    }

    fn insert_free(&mut self, start: u64, len: u64) {
        self.by_addr.insert((start, len));
        self.by_len.insert((len, start));
        if !self.classes.is_empty() {
            let c = class_of(len);
            self.classes[c].insert((start, len));
            self.nonempty |= 1 << c;
        }
        self.free += len;
    }

    fn remove_free(&mut self, start: u64, len: u64) {
        self.by_addr.remove((start, len));
        self.by_len.remove((len, start));
        if !self.classes.is_empty() {
            let c = class_of(len);
            self.classes[c].remove((start, len));
            if self.classes[c].is_empty() {
                self.nonempty &= !(1 << c);
            }
        }
        self.free -= len;
    }

    /// Replaces the free extent `old` by `new` (both `(start, len)`), where `new` keeps `old`'s
    /// place in address order: the address index is rewritten in place and the length index
    /// moves one entry (the same state as `remove_free(old)` then `insert_free(new)`).
    fn change_free(&mut self, old: (u64, u64), new: (u64, u64)) {
        self.by_addr.replace_in_place(old, new);
        self.by_len.replace((old.1, old.0), (new.1, new.0));
        if !self.classes.is_empty() {
            let (co, cn) = (class_of(old.1), class_of(new.1));
            if co == cn {
                self.classes[co].replace_in_place(old, new);
            } else {
                self.classes[co].remove(old);
                if self.classes[co].is_empty() {
                    self.nonempty &= !(1 << co);
                }
                self.classes[cn].insert(new);
                self.nonempty |= 1 << cn;
            }
        }
        self.free = self.free - old.1 + new.1;
    }

    /// Builds the size-class index from `by_addr` (first-fit and next-fit use it from then on).
    fn build_classes(&mut self) {
        let mut classes = vec![OrdSet::default(); 64];
        let mut nonempty = 0u64;
        for (s, l) in self.by_addr.iter() {
            let c = class_of(l);
            classes[c].insert((s, l));
            nonempty |= 1 << c;
        }
        self.classes = classes;
        self.nonempty = nonempty;
    }

    /// The last free extent starting at or before `s`.
    #[inline]
    fn at_or_before(&self, s: u64) -> Option<(u64, u64)> {
        self.by_addr.at_or_before((s, u64::MAX))
    }

    /// The RAM range `(start, end)` holding `s`, if any.
    #[inline]
    fn range_of(&self, s: u64) -> Option<(u64, u64)> {
        let i = self.ranges.partition_point(|&(rs, _)| rs <= s);
        i.checked_sub(1).map(|i| self.ranges[i])
    }

    /// Total RAM bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
    /// Free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free
    }
    /// Allocated bytes (`capacity - free`).
    pub fn used_bytes(&self) -> u64 {
        self.capacity - self.free
    }
    /// Starts loading the free-extent indexes' first cache lines (see [`crate::warm`]).
    #[inline]
    pub fn prefetch(&self) {
        crate::warm::prefetch_slice(&self.ranges, 1);
        self.by_addr.prefetch(2);
        self.by_len.prefetch(2);
    }
    /// Length of the largest free extent (0 when none).
    pub fn largest_free(&self) -> u64 {
        self.by_len.last().map_or(0, |(l, _)| l)
    }
    /// Number of free extents.
    pub fn free_extent_count(&self) -> usize {
        self.by_addr.len()
    }
    /// Free extents in address order.
    pub fn free_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.by_addr.iter().map(|(s, l)| Extent::new(s, l))
    }
    /// Free extents, largest first (ties: highest address first).
    pub fn free_extents_by_len(&self) -> impl Iterator<Item = Extent> + '_ {
        self.by_len.iter().rev().map(|(l, s)| Extent::new(s, l))
    }
    /// RAM ranges in address order (touching ranges merged).
    pub fn ranges(&self) -> impl Iterator<Item = Extent> + '_ {
        self.ranges.iter().map(|&(s, e)| Extent::new(s, e - s))
    }
    /// The free extent starting exactly at `hpa`, if any.
    pub fn free_at(&self, hpa: Hpa) -> Option<Extent> {
        self.at_or_before(hpa.raw())
            .filter(|&(s, _)| s == hpa.raw())
            .map(|(s, l)| Extent::new(s, l))
    }
    /// The free extent containing `hpa`, if any.
    pub fn free_containing(&self, hpa: Hpa) -> Option<Extent> {
        let (s, l) = self.at_or_before(hpa.raw())?;
        (hpa.raw() < s + l).then(|| Extent::new(s, l))
    }
    /// Whether every byte of `ext` is free.
    pub fn is_free(&self, ext: Extent) -> bool {
        ext.len > 0
            && self.free_containing(ext.start).is_some_and(|f| {
                f.end() >= ext.end() && ext.start.raw().checked_add(ext.len).is_some()
            })
    }
    /// Whether every byte of `ext` is RAM and allocated.
    pub fn is_allocated(&self, ext: Extent) -> bool {
        self.check_allocated(ext).is_ok()
    }
    /// The largest number of bytes a single aligned allocation could get now.
    pub fn largest_aligned_free(&self, align: PageSize) -> u64 {
        // Usable bytes never exceed the length: stop once no longer extent remains.
        let mut best = 0;
        for (l, s) in self.by_len.iter().rev() {
            if l <= best {
                break;
            }
            best = best.max(aligned_usable(s, l, align));
        }
        best
    }

    fn validate_len(len: u64) -> Result<(), AllocError> {
        if len == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !len.is_multiple_of(GRANULE) {
            return Err(AllocError::Unaligned {
                what: "length",
                value: len,
                align: GRANULE,
            });
        }
        Ok(())
    }

    fn validate_ext(ext: Extent) -> Result<u64, AllocError> {
        Self::validate_len(ext.len)?;
        if !ext.start.raw().is_multiple_of(GRANULE) {
            return Err(AllocError::Unaligned {
                what: "start",
                value: ext.start.raw(),
                align: GRANULE,
            });
        }
        ext.start
            .raw()
            .checked_add(ext.len)
            .ok_or(AllocError::BadRange {
                ext,
                reason: "end overflows 64 bits",
            })
    }

    /// Allocates `len` bytes (a multiple of 4 KiB) starting at a multiple of `align`.
    pub fn alloc(
        &mut self,
        len: u64,
        align: PageSize,
        policy: Policy,
    ) -> Result<Extent, AllocError> {
        Self::validate_len(len)?;
        if len > self.capacity {
            return Err(AllocError::TooLarge {
                len,
                capacity: self.capacity,
            });
        }
        if self.classes.is_empty() && matches!(policy, Policy::FirstFit | Policy::NextFit) {
            self.build_classes();
        }
        let Some((fs, fl, a)) = self.search(len, align, policy) else {
            return Err(AllocError::NoExtent {
                len,
                largest: self.largest_free(),
            });
        };
        self.carve(fs, fl, a, len);
        self.cursor = a + len;
        Ok(Extent::new(a, len))
    }

    /// Where `alloc` would put the request now, without allocating (no validation: `None` for a
    /// zero or oversized request).
    pub fn find(&self, len: u64, align: PageSize, policy: Policy) -> Option<Extent> {
        if len == 0 {
            return None;
        }
        self.search(len, align, policy)
            .map(|(_, _, a)| Extent::new(a, len))
    }

    fn search(&self, len: u64, align: PageSize, policy: Policy) -> Option<(u64, u64, u64)> {
        match policy {
            Policy::FirstFit => self.first_fit(len, align, 0),
            Policy::BestFit => self.best_fit(len, align),
            Policy::WorstFit => self.worst_fit(len, align),
            Policy::NextFit => self
                .first_fit(len, align, self.cursor)
                .or_else(|| self.first_fit(len, align, 0)),
        }
    }

    /// Returns `(free extent start, its length, aligned allocation start)`.
    fn first_fit(&self, len: u64, align: PageSize, from: u64) -> Option<(u64, u64, u64)> {
        // Fast path: the first few free extents in address order (exact if one fits).
        let mut probed = 0;
        for (s, l) in self.by_addr.from((from, 0)).take(FIRST_FIT_PROBE) {
            if let Some(a) = fit(s, l, len, align) {
                return Some((s, l, a));
            }
            probed += 1;
        }
        if probed < FIRST_FIT_PROBE {
            return None; // every free extent from `from` on was examined
        }
        if self.classes.is_empty() {
            // No size-class index yet: the rest in address order.
            return self
                .by_addr
                .from((from, 0))
                .skip(FIRST_FIT_PROBE)
                .find_map(|(s, l)| fit(s, l, len, align).map(|a| (s, l, a)));
        }
        // Then the lowest-addressed fitting member of every large-enough size class.
        let mut best: Option<(u64, u64, u64)> = None;
        let mut bits = self.nonempty & (u64::MAX << class_of(len));
        while bits != 0 {
            let class = &self.classes[bits.trailing_zeros() as usize];
            bits &= bits - 1;
            for (s, l) in class.from((from, 0)) {
                if best.is_some_and(|(bs, _, _)| s >= bs) {
                    break;
                }
                if let Some(a) = fit(s, l, len, align) {
                    best = Some((s, l, a));
                    break;
                }
            }
        }
        best
    }

    fn best_fit(&self, len: u64, align: PageSize) -> Option<(u64, u64, u64)> {
        self.by_len
            .from((len, 0))
            .find_map(|(l, s)| fit(s, l, len, align).map(|a| (s, l, a)))
    }

    fn worst_fit(&self, len: u64, align: PageSize) -> Option<(u64, u64, u64)> {
        self.by_len
            .iter()
            .rev()
            .take_while(|&(l, _)| l >= len)
            .find_map(|(l, s)| fit(s, l, len, align).map(|a| (s, l, a)))
    }

    /// Takes `[a, a + len)` out of the free extent `[fs, fs + fl)`.
    fn carve(&mut self, fs: u64, fl: u64, a: u64, len: u64) {
        debug_assert_eq!(self.free_at(Hpa(fs)).map(|f| f.len), Some(fl));
        let tail = fs + fl - (a + len);
        // The head (if any) keeps the free extent's place in address order, else the tail does.
        match (a > fs, tail > 0) {
            (true, true) => {
                self.change_free((fs, fl), (fs, a - fs));
                self.insert_free(a + len, tail);
            }
            (true, false) => self.change_free((fs, fl), (fs, a - fs)),
            (false, true) => self.change_free((fs, fl), (a + len, tail)),
            (false, false) => self.remove_free(fs, fl),
        }
    }

    /// Claims a specific free range (e.g. to grow an allocation in place).
    pub fn alloc_at(&mut self, ext: Extent) -> Result<(), AllocError> {
        let end = Self::validate_ext(ext)?;
        let s = ext.start.raw();
        match self.at_or_before(s) {
            Some((fs, fl)) if fs + fl >= end => {
                self.carve(fs, fl, s, ext.len);
                Ok(())
            }
            _ => Err(AllocError::NotFree(ext)),
        }
    }

    /// The free neighbours of an allocated `ext` (predecessor, successor), or `NotAllocated`.
    #[allow(clippy::type_complexity)] // reason: two optional (start, len) pairs, local use only
    fn check_allocated(
        &self,
        ext: Extent,
    ) -> Result<(Option<(u64, u64)>, Option<(u64, u64)>), AllocError> {
        let end = Self::validate_ext(ext)?;
        let s = ext.start.raw();
        let in_ram = self.range_of(s).is_some_and(|(_, re)| re >= end);
        let (pred, succ) = self.by_addr.around((s, u64::MAX));
        let pred_overlaps = pred.is_some_and(|(fs, fl)| fs + fl > s);
        let succ_overlaps = succ.is_some_and(|(fs, _)| fs < end);
        if !in_ram || pred_overlaps || succ_overlaps {
            return Err(AllocError::NotAllocated(ext));
        }
        Ok((pred, succ))
    }

    /// Returns an allocated range to the free pool, coalescing with free neighbours.
    pub fn free(&mut self, ext: Extent) -> Result<(), AllocError> {
        let (pred, succ) = self.check_allocated(ext)?;
        let s = ext.start.raw();
        let e = s + ext.len;
        // The merged extent takes the place of the free neighbour it grows (nothing lies between).
        let pred = pred.filter(|&(ps, pl)| ps + pl == s);
        let succ = succ.filter(|&(ns, _)| ns == e);
        match (pred, succ) {
            (Some((ps, pl)), Some((ns, nl))) => {
                self.remove_free(ns, nl);
                self.change_free((ps, pl), (ps, pl + ext.len + nl));
            }
            (Some((ps, pl)), None) => self.change_free((ps, pl), (ps, pl + ext.len)),
            (None, Some((ns, nl))) => self.change_free((ns, nl), (s, ext.len + nl)),
            (None, None) => self.insert_free(s, ext.len),
        }
        Ok(())
    }

    /// Checks the allocator's internal indexes against each other (used by [`crate::HostMemory::check`]).
    pub fn check_indexes(&self) -> Result<(), String> {
        let built = !self.classes.is_empty();
        if built && self.classes.len() != 64 {
            return Err("the size-class index is half built".into());
        }
        let mut total = 0u64;
        let mut prev_end: Option<u64> = None;
        if !self.ranges.is_sorted_by(|a, b| a.1 < b.0) {
            return Err("RAM ranges are not sorted apart".into());
        }
        for (s, l) in self.by_addr.iter() {
            if l == 0 {
                return Err(format!("empty free extent at {s:#x}"));
            }
            if prev_end == Some(s) {
                return Err(format!(
                    "free extents touching at {s:#x} were not coalesced"
                ));
            }
            if prev_end.is_some_and(|p| p > s) {
                return Err(format!("free extents overlap at {s:#x}"));
            }
            if !self.by_len.contains((l, s)) {
                return Err(format!(
                    "free extent at {s:#x} missing from the length index"
                ));
            }
            if built && !self.classes[class_of(l)].contains((s, l)) {
                return Err(format!("free extent at {s:#x} missing from its size class"));
            }
            let in_ram = self.range_of(s).is_some_and(|(_, re)| re >= s + l);
            if !in_ram {
                return Err(format!("free extent at {s:#x} is not inside one RAM range"));
            }
            total += l;
            prev_end = Some(s + l);
        }
        let class_count: usize = self.classes.iter().map(OrdSet::len).sum();
        let bits = self
            .classes
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_empty())
            .fold(0u64, |b, (i, _)| b | 1 << i);
        if bits != self.nonempty {
            return Err("non-empty class mask is stale".into());
        }
        if self.by_len.len() != self.by_addr.len() || (built && class_count != self.by_addr.len()) {
            return Err("free-extent indexes differ in size".into());
        }
        if total != self.free {
            return Err(format!(
                "free counter {:#x} differs from the sum {total:#x}",
                self.free
            ));
        }
        let cap: u64 = self.ranges.iter().map(|&(s, e)| e - s).sum();
        if cap != self.capacity {
            return Err("capacity differs from the RAM ranges".into());
        }
        Ok(())
    }
}

/// Equal when the RAM, the free extents and the next-fit cursor are (whether the size-class
/// index, derived from the free extents, is built yet does not matter).
impl PartialEq for ExtentAllocator {
    fn eq(&self, o: &Self) -> bool {
        self.ranges == o.ranges
            && self.capacity == o.capacity
            && self.by_addr == o.by_addr
            && self.free == o.free
            && self.cursor == o.cursor
    }
}

impl Eq for ExtentAllocator {}

/// Bytes of `(start, len)` usable for an allocation aligned to `align` whose length is a multiple
/// of `align`.
pub(crate) fn aligned_usable(start: u64, len: u64, align: PageSize) -> u64 {
    match Hpa(start).align_up(align) {
        Some(a) if a.raw() < start + len => (start + len - a.raw()) & !align.mask(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    const M: u64 = 1 << 20;

    proptest! {
        /// The size-class index is built lazily: before it exists first-fit and next-fit scan the
        /// address index. Both ways give the same answer on a fragmented allocator, and an
        /// allocator with the index equals one without it.
        #[test]
        fn lazy_size_classes_change_no_answer(
            ops in prop::collection::vec((1u64..64, any::<bool>()), 1..120),
            asks in prop::collection::vec((1u64..256, 0usize..3), 1..20),
        ) {
            let mut a = ExtentAllocator::new(4096 * M);
            let mut held = Vec::new();
            for (units, free) in ops {
                if free && !held.is_empty() {
                    let e = held.swap_remove(usize::try_from(units).unwrap_or(0) % held.len());
                    a.free(e).unwrap();
                } else if let Ok(e) = a.alloc(units * 4 * M, PageSize::Size2M, Policy::BestFit) {
                    held.push(e);
                }
            }
            prop_assert!(a.classes.is_empty());
            let mut b = a.clone();
            b.build_classes();
            b.check_indexes().unwrap();
            prop_assert_eq!(&a, &b);
            for (units, al) in asks {
                let align = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G][al];
                for pol in [Policy::FirstFit, Policy::NextFit] {
                    prop_assert_eq!(a.find(units * M, align, pol), b.find(units * M, align, pol));
                }
            }
        }
    }

    /// Free extents at 0 (4M), 8M (2M), 16M (8M), 32M (3M), 40M (16M): built from a 64 MiB
    /// allocator by claiming the gaps.
    fn hand_map() -> ExtentAllocator {
        let mut a = ExtentAllocator::new(64 * M);
        for (s, l) in [(4, 4), (10, 6), (24, 8), (35, 5), (56, 8)] {
            a.alloc_at(Extent::new(s * M, l * M)).unwrap();
        }
        let free: Vec<_> = a
            .free_extents()
            .map(|e| (e.start.raw() / M, e.len / M))
            .collect();
        assert_eq!(free, vec![(0, 4), (8, 2), (16, 8), (32, 3), (40, 16)]);
        a
    }

    #[test]
    fn each_policy_picks_its_extent() {
        // Request 3 MiB, 4 KiB aligned.
        let cases = [
            (Policy::FirstFit, 0),  // lowest address that fits: [0,4M)
            (Policy::BestFit, 32),  // smallest that fits: the 3M one at 32M
            (Policy::WorstFit, 40), // largest: 16M at 40M
            (Policy::NextFit, 0),   // fresh cursor = 0: like first-fit
        ];
        for (p, want) in cases {
            let mut a = hand_map();
            let e = a.alloc(3 * M, PageSize::Size4K, p).unwrap();
            assert_eq!(e, Extent::new(want * M, 3 * M), "{p}");
        }
    }

    #[test]
    fn next_fit_continues_after_previous() {
        let mut a = hand_map();
        // First 2M goes to [0,2M) (first-fit from cursor 0), cursor = 2M.
        assert_eq!(
            a.alloc(2 * M, PageSize::Size4K, Policy::NextFit)
                .unwrap()
                .start,
            Hpa(0)
        );
        // Next 3M: from cursor 2M: [2M,4M) is free but only 2M; 8M has 2M; 16M has 8M -> 16M.
        assert_eq!(
            a.alloc(3 * M, PageSize::Size4K, Policy::NextFit)
                .unwrap()
                .start,
            Hpa(16 * M)
        );
        // Next 9M: from 19M: only 40M fits.
        assert_eq!(
            a.alloc(9 * M, PageSize::Size4K, Policy::NextFit)
                .unwrap()
                .start,
            Hpa(40 * M)
        );
        // Next 2M: from 49M: 49M..56M is free (7M) -> 49M.
        assert_eq!(
            a.alloc(2 * M, PageSize::Size4K, Policy::NextFit)
                .unwrap()
                .start,
            Hpa(49 * M)
        );
        // Next 6M: from 51M: [51M,56M) only 5M; wraps: 0 has 2M left, 8M 2M, 19M 5M, 32M 3M -> none.
        assert!(matches!(
            a.alloc(6 * M, PageSize::Size4K, Policy::NextFit),
            Err(AllocError::NoExtent { .. })
        ));
    }

    #[test]
    fn alignment_is_honoured() {
        let mut a = hand_map();
        // 2M aligned 2M: first-fit: [0,4M) holds it at 0.
        let e = a.alloc(2 * M, PageSize::Size2M, Policy::FirstFit).unwrap();
        assert_eq!(e.start, Hpa(0));
        // 3M with 2M alignment, best-fit: 32M (3M, aligned) fits exactly.
        let e = a.alloc(3 * M, PageSize::Size2M, Policy::BestFit).unwrap();
        assert_eq!(e.start, Hpa(32 * M));
        // 1G alignment: only address 0 is 1G aligned, and it is taken.
        assert!(a.alloc(4096, PageSize::Size1G, Policy::FirstFit).is_err());
    }

    #[test]
    fn free_coalesces_and_rejects_bad_ranges() {
        let mut a = hand_map();
        let before = a.clone();
        // Partly free range.
        assert_eq!(
            a.free(Extent::new(3 * M, 2 * M)),
            Err(AllocError::NotAllocated(Extent::new(3 * M, 2 * M)))
        );
        // Outside RAM.
        assert!(a.free(Extent::new(64 * M, M)).is_err());
        assert!(a.free(Extent::new(4 * M, 0)).is_err());
        assert!(a.free(Extent::new(4 * M + 1, 4096)).is_err());
        assert_eq!(a, before);
        // Free [4M,8M) joins [0,4M) and [8M,10M).
        a.free(Extent::new(4 * M, 4 * M)).unwrap();
        assert_eq!(a.free_extents().next(), Some(Extent::new(0, 10 * M)));
        assert_eq!(a.free_extent_count(), 4);
        a.check_indexes().unwrap();
    }

    #[test]
    fn bad_requests_leave_state_unchanged() {
        let mut a = hand_map();
        let before = a.clone();
        assert_eq!(
            a.alloc(0, PageSize::Size4K, Policy::FirstFit),
            Err(AllocError::ZeroSize)
        );
        assert!(matches!(
            a.alloc(100, PageSize::Size4K, Policy::FirstFit),
            Err(AllocError::Unaligned { .. })
        ));
        assert!(matches!(
            a.alloc(128 * M, PageSize::Size4K, Policy::FirstFit),
            Err(AllocError::TooLarge { .. })
        ));
        assert_eq!(
            a.alloc(17 * M, PageSize::Size4K, Policy::NextFit),
            Err(AllocError::NoExtent {
                len: 17 * M,
                largest: 16 * M
            })
        );
        assert!(matches!(
            a.alloc_at(Extent::new(3 * M, 2 * M)),
            Err(AllocError::NotFree(_))
        ));
        assert_eq!(a, before);
    }

    #[test]
    fn ranges_validated_and_merged() {
        let a = ExtentAllocator::with_ranges(&[Extent::new(8 * M, 8 * M), Extent::new(0, 8 * M)])
            .unwrap();
        assert_eq!(a.ranges().collect::<Vec<_>>(), vec![Extent::new(0, 16 * M)]);
        assert!(
            ExtentAllocator::with_ranges(&[Extent::new(0, 8 * M), Extent::new(4 * M, 8 * M)])
                .is_err()
        );
        assert!(ExtentAllocator::with_ranges(&[Extent::new(0, 0)]).is_err());
        assert!(ExtentAllocator::with_ranges(&[Extent::new(u64::MAX - 4095, 8192)]).is_err());
        // Two ranges with a hole: a free that spans the hole is refused.
        let mut b =
            ExtentAllocator::with_ranges(&[Extent::new(0, 4 * M), Extent::new(8 * M, 4 * M)])
                .unwrap();
        b.alloc_at(Extent::new(0, 4 * M)).unwrap();
        b.alloc_at(Extent::new(8 * M, 4 * M)).unwrap();
        assert!(b.free(Extent::new(0, 12 * M)).is_err());
        b.free(Extent::new(0, 4 * M)).unwrap();
        assert_eq!(b.free_extent_count(), 1);
    }

    #[test]
    fn policy_parse() {
        for p in Policy::ALL {
            assert_eq!(p.to_string().parse::<Policy>(), Ok(p));
        }
        assert_eq!("BestFit".parse::<Policy>(), Ok(Policy::BestFit));
        let e = "fastest".parse::<Policy>().unwrap_err().to_string();
        assert!(
            e.contains("first-fit, best-fit, worst-fit, next-fit"),
            "{e}"
        );
    }
}
