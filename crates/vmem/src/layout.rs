//! The guest-physical layout of a VM: RAM below the MMIO hole, the hole, RAM above 4 GiB.
//!
//! Xen HVM and QEMU/KVM place guest RAM at [0, 0xF000_0000) and leave [0xF000_0000, 4 GiB) for
//! device MMIO, PCI config space and firmware; RAM beyond that goes above 4 GiB. (Xen
//! `HVM_BELOW_4G_RAM_END`; QEMU's below-4G split is similar.)

use compromis_types::{Address, Gpa};

/// Start of the MMIO hole.
pub const MMIO_HOLE_START: u64 = 0xF000_0000;
/// End of the MMIO hole (4 GiB).
pub const MMIO_HOLE_END: u64 = 1 << 32;

/// A range of guest-physical addresses `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GpaRange {
    /// First byte.
    pub start: Gpa,
    /// Length in bytes.
    pub len: u64,
}

impl GpaRange {
    /// One past the last byte.
    pub fn end(&self) -> Gpa {
        Gpa(self.start.raw() + self.len)
    }
    /// Whether `gpa` is inside.
    #[inline]
    pub fn contains(&self, gpa: Gpa) -> bool {
        gpa >= self.start && gpa.raw() - self.start.raw() < self.len
    }
}

/// The RAM ranges of a VM in guest-physical space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// RAM ranges in address order (one or two).
    pub ram: Vec<GpaRange>,
}

impl GuestLayout {
    /// The layout of a VM with `ram` bytes of memory.
    pub fn for_ram(ram: u64) -> GuestLayout {
        let low = ram.min(MMIO_HOLE_START);
        let mut v = vec![GpaRange {
            start: Gpa(0),
            len: low,
        }];
        if ram > low {
            v.push(GpaRange {
                start: Gpa(MMIO_HOLE_END),
                len: ram - low,
            });
        }
        GuestLayout { ram: v }
    }
    /// Total RAM bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram.iter().map(|r| r.len).sum()
    }
    /// Whether `gpa` is RAM.
    pub fn is_ram(&self, gpa: Gpa) -> bool {
        self.ram.iter().any(|r| r.contains(gpa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn hole_only_above_3_75_gib() {
        assert_eq!(
            GuestLayout::for_ram(1 << 30).ram,
            vec![GpaRange {
                start: Gpa(0),
                len: 1 << 30
            }]
        );
        let l = GuestLayout::for_ram(8 << 30);
        assert_eq!(l.ram.len(), 2);
        assert_eq!(l.ram[0].end(), Gpa(MMIO_HOLE_START));
        assert_eq!(l.ram[1].start, Gpa(MMIO_HOLE_END));
        assert_eq!(l.ram_bytes(), 8 << 30);
        assert!(!l.is_ram(Gpa(0xF800_0000)));
        assert!(l.is_ram(Gpa(MMIO_HOLE_END + 5)));
    }
}
