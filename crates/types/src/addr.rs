//! Address newtypes, modelled on rust-vmm `vm-memory`'s `GuestAddress`: a transparent `u64` with
//! named, checked operations. The three address spaces are distinct types.

use crate::size::PageSize;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Operations shared by every address space.
pub trait Address: Copy + Eq + Ord + fmt::Debug {
    /// Wraps a raw value.
    fn new(raw: u64) -> Self;
    /// The raw value.
    fn raw(self) -> u64;
    /// `self + bytes`, or `None` on overflow.
    #[inline]
    fn checked_add(self, bytes: u64) -> Option<Self> {
        self.raw().checked_add(bytes).map(Self::new)
    }
    /// `self - bytes`, or `None` on underflow.
    #[inline]
    fn checked_sub(self, bytes: u64) -> Option<Self> {
        self.raw().checked_sub(bytes).map(Self::new)
    }
    /// Rounds down to a multiple of `page`.
    #[inline]
    fn align_down(self, page: PageSize) -> Self {
        Self::new(self.raw() & !page.mask())
    }
    /// Rounds up to a multiple of `page`, or `None` on overflow.
    #[inline]
    fn align_up(self, page: PageSize) -> Option<Self> {
        self.raw()
            .checked_add(page.mask())
            .map(|v| Self::new(v & !page.mask()))
    }
    /// Whether the address is a multiple of `page`.
    #[inline]
    fn is_aligned(self, page: PageSize) -> bool {
        self.raw() & page.mask() == 0
    }
    /// Offset of the address inside its `page`.
    #[inline]
    fn page_offset(self, page: PageSize) -> u64 {
        self.raw() & page.mask()
    }
    /// Page number of the address for pages of `page` size.
    #[inline]
    fn page_number(self, page: PageSize) -> u64 {
        self.raw() >> page.shift()
    }
}

macro_rules! address {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl Address for $name {
            #[inline]
            fn new(raw: u64) -> Self {
                Self(raw)
            }
            #[inline]
            fn raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address!(
    /// A guest-virtual address: what a process inside the VM uses.
    Gva,
    "Gva"
);
address!(
    /// A guest-physical address: what the guest OS believes is physical memory.
    Gpa,
    "Gpa"
);
address!(
    /// A host-physical address: a real location in the machine's DRAM.
    Hpa,
    "Hpa"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alignment() {
        let a = Gpa(0x20_1234);
        assert_eq!(a.align_down(PageSize::Size4K), Gpa(0x20_1000));
        assert_eq!(a.align_down(PageSize::Size2M), Gpa(0x20_0000));
        assert_eq!(a.align_up(PageSize::Size2M), Some(Gpa(0x40_0000)));
        assert_eq!(Gpa(u64::MAX).align_up(PageSize::Size4K), None);
        assert!(Gpa(0x4000_0000).is_aligned(PageSize::Size1G));
        assert_eq!(a.page_offset(PageSize::Size4K), 0x234);
        assert_eq!(format!("{a:?}"), "Gpa(0x201234)");
    }

    proptest! {
        #[test]
        fn align_down_then_offset_recomposes(raw in any::<u64>(), p in 0usize..3) {
            let page = PageSize::ALL[p];
            let a = Hpa(raw);
            prop_assert_eq!(a.align_down(page).raw() + a.page_offset(page), raw);
            prop_assert_eq!(a.page_number(page) << page.shift(), a.align_down(page).raw());
        }
    }
}
