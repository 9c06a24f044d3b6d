//! The vocabulary of a VM's memory shared by every layer: VM ids, the guest-physical layout with
//! the MMIO hole, host-physical extents and the Compromis segment register set.
//!
//! Guest-physical layout (as Xen HVM): RAM below the MMIO hole is `[0, 0xF000_0000)`; the hole runs
//! to 4 GiB; RAM beyond 3.75 GiB continues at `[4 GiB, 4 GiB + rest)`.

use crate::{Address, Gpa, Hpa};
use serde::Serialize;
use std::fmt;

/// A VM identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VmId(pub u64);

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vm{}", self.0)
    }
}

/// A contiguous range of host-physical memory `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Extent {
    /// First byte.
    pub start: Hpa,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// `[start, start + len)`.
    pub const fn new(start: u64, len: u64) -> Extent {
        Extent {
            start: Hpa(start),
            len,
        }
    }
    /// One past the last byte (saturating at `u64::MAX` for a malformed extent).
    #[inline]
    pub fn end(&self) -> Hpa {
        Hpa(self.start.raw().saturating_add(self.len))
    }
    /// Whether `hpa` lies inside the extent.
    #[inline]
    pub fn contains(&self, hpa: Hpa) -> bool {
        self.start <= hpa && hpa < self.end()
    }
    /// Whether the two extents share at least one byte.
    #[inline]
    pub fn overlaps(&self, other: &Extent) -> bool {
        self.start < other.end() && other.start < self.end()
    }
}

impl fmt::Display for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.raw(), self.end().raw())
    }
}

/// First byte of the MMIO hole: guest RAM below it is `[0, MMIO_HOLE_START)`.
pub const MMIO_HOLE_START: Gpa = Gpa(0xF000_0000);
/// Where guest RAM above the hole starts (4 GiB).
pub const HIGH_RAM_START: Gpa = Gpa(1 << 32);

/// A guest-physical range `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GpaRange {
    /// First byte.
    pub start: Gpa,
    /// Length in bytes.
    pub len: u64,
}

impl GpaRange {
    /// One past the last byte.
    pub fn end(&self) -> Gpa {
        Gpa(self.start.raw().saturating_add(self.len))
    }
    /// Whether `gpa` is inside.
    pub fn contains(&self, gpa: Gpa) -> bool {
        self.start <= gpa && gpa < self.end()
    }
}

/// A VM's guest-physical RAM ranges, in address order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuestLayout {
    /// RAM ranges (one below the MMIO hole, one above 4 GiB when RAM exceeds 3.75 GiB).
    pub ram: Vec<GpaRange>,
}

impl GuestLayout {
    /// The layout of a VM with `ram` bytes.
    pub fn for_ram(ram: u64) -> GuestLayout {
        let low = ram.min(MMIO_HOLE_START.raw());
        let mut v = Vec::new();
        if low > 0 {
            v.push(GpaRange {
                start: Gpa(0),
                len: low,
            });
        }
        if ram > low {
            v.push(GpaRange {
                start: HIGH_RAM_START,
                len: ram - low,
            });
        }
        GuestLayout { ram: v }
    }
    /// Total RAM bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram.iter().map(|r| r.len).sum()
    }
    /// Whether `gpa` is guest RAM (false in the MMIO hole and beyond RAM).
    pub fn is_ram(&self, gpa: Gpa) -> bool {
        self.ram.iter().any(|r| r.contains(gpa))
    }
}

/// One register set: gPAs in `[base, limit)` become `host_base + (gpa - base)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// BASE.
    pub base: Gpa,
    /// LIMIT (exclusive).
    pub limit: Gpa,
    /// The host-physical address of `base`.
    pub host_base: Hpa,
}

impl Segment {
    /// OFFSET = host_base - BASE, modulo 2^64 (the hardware adds it with wrap-around).
    pub fn offset(&self) -> u64 {
        self.host_base.raw().wrapping_sub(self.base.raw())
    }
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.limit.raw().saturating_sub(self.base.raw())
    }
    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The host extent the segment maps to.
    pub fn host_extent(&self) -> Extent {
        Extent {
            start: self.host_base,
            len: self.len(),
        }
    }
    /// `gpa + OFFSET` when `BASE <= gpa < LIMIT`.
    #[inline]
    pub fn translate(&self, gpa: Gpa) -> Option<Hpa> {
        (self.base <= gpa && gpa < self.limit).then(|| Hpa(gpa.raw().wrapping_add(self.offset())))
    }
}
