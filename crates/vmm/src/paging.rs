//! The guest's 4-level page tables, built by the VMM, and a software walk of them.
//!
//! Source: AMD64 Architecture Programmer's Manual vol. 2, §5.3 (long-mode page translation):
//! PML4 -> PDPT -> PD (PS=1: 2 MiB page) -> PT (4 KiB page); entry bit 0 present, bit 1
//! writable, bit 7 page size; bits 12-51 the next table's or the page's physical address.
//!
//! The guest identity-maps its RAM (`gVA = gPA` over `[0, ram)`) with 4 KiB or 2 MiB pages, and
//! maps it again at [`HIGH_BASE`] in the upper canonical half (where a kernel's direct map lives,
//! and where the guest runs: some hypervisors, e.g. PVM, treat the lower half as user space);
//! the tables are laid out in consecutive 4 KiB pages from a base gPA.

use compromis_types::{Address, Gpa, Gva, PageSize};
use thiserror::Error;

/// Entry bit: present.
pub const P: u64 = 1;
/// Entry bit: writable.
pub const RW: u64 = 1 << 1;
/// Entry bit (PDPT/PD): maps a large page.
pub const PS: u64 = 1 << 7;
/// Bits 12-51: physical address in an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const ENTRIES: u64 = 512;
/// PML4 slot of the upper-half alias of RAM.
const HIGH_PML4_INDEX: usize = 256;
/// Where the upper-half alias of RAM starts: gVA `HIGH_BASE + g` maps gPA `g` too.
pub const HIGH_BASE: u64 = 0xffff_8000_0000_0000;

/// Page-table construction errors.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PagingError {
    /// The RAM size is not a non-zero multiple of the guest page.
    #[error("guest RAM of {ram} bytes is not a non-zero multiple of the {page} guest page")]
    Unaligned {
        /// RAM bytes.
        ram: u64,
        /// Guest page size.
        page: PageSize,
    },
    /// 1 GiB guest pages are not offered; 4-level paging covers at most 512 GiB here.
    #[error("unsupported guest mapping: {0}")]
    Unsupported(String),
}

/// One 4 KiB table page: its gPA and 512 entries.
#[derive(Clone, Debug)]
pub struct TablePage {
    /// Where the page lives in guest memory.
    pub gpa: Gpa,
    /// The entries.
    pub entries: Vec<u64>,
}

/// The guest's page tables: CR3 and the table pages to write into guest memory.
#[derive(Clone, Debug)]
pub struct PageTables {
    /// The PML4's gPA (loaded into CR3).
    pub cr3: Gpa,
    /// Every table page, PML4 first.
    pub pages: Vec<TablePage>,
    /// The guest page size of the mapping.
    pub page: PageSize,
}

/// Bytes of tables needed to identity-map `ram` bytes with `page` pages.
pub fn tables_bytes(ram: u64, page: PageSize) -> u64 {
    let span = |level_bytes: u64| ram.div_ceil(level_bytes);
    let pdpts = span(512 << 30);
    let pds = span(1 << 30);
    let pts = if page == PageSize::Size4K {
        span(2 << 20)
    } else {
        0
    };
    (1 + pdpts + pds + pts) * 4096
}

impl PageTables {
    /// Identity-maps `[0, ram)` with `page` pages (4 KiB or 2 MiB), tables from `base` on.
    pub fn identity(ram: u64, page: PageSize, base: Gpa) -> Result<PageTables, PagingError> {
        if page == PageSize::Size1G {
            return Err(PagingError::Unsupported("1 GiB guest pages".into()));
        }
        if ram == 0 || !ram.is_multiple_of(page.bytes()) {
            return Err(PagingError::Unaligned { ram, page });
        }
        if ram > 512 << 30 {
            return Err(PagingError::Unsupported("more than 512 GiB of RAM".into()));
        }
        let mut next = base.raw();
        let mut alloc = || {
            let g = next;
            next += 4096;
            TablePage {
                gpa: Gpa(g),
                entries: vec![0; 512],
            }
        };
        let mut pml4 = alloc();
        let mut pdpt = alloc();
        pml4.entries[0] = pdpt.gpa.raw() | P | RW;
        // The same RAM again at the bottom of the upper canonical half (a kernel's direct map).
        pml4.entries[HIGH_PML4_INDEX] = pdpt.gpa.raw() | P | RW;
        let mut pages = Vec::new();
        let gib = ram.div_ceil(1 << 30);
        let mut pds = Vec::new();
        for g in 0..gib {
            let pd = alloc();
            pdpt.entries[usize_of(g)] = pd.gpa.raw() | P | RW;
            pds.push(pd);
        }
        let mut pts = Vec::new();
        let step = PageSize::Size2M.bytes();
        for (gi, pd) in (0u64..).zip(pds.iter_mut()) {
            for i in 0..ENTRIES {
                let addr = (gi << 30) + i * step;
                if addr >= ram {
                    break;
                }
                if page == PageSize::Size2M {
                    pd.entries[usize_of(i)] = addr | P | RW | PS;
                } else {
                    let mut pt = alloc();
                    for (j, e) in (0u64..).zip(pt.entries.iter_mut()) {
                        let a = addr + j * 4096;
                        if a < ram {
                            *e = a | P | RW;
                        }
                    }
                    pd.entries[usize_of(i)] = pt.gpa.raw() | P | RW;
                    pts.push(pt);
                }
            }
        }
        pages.push(pml4);
        pages.push(pdpt);
        pages.extend(pds);
        pages.extend(pts);
        Ok(PageTables {
            cr3: base,
            pages,
            page,
        })
    }

    /// Bytes the table pages occupy (from `cr3` on).
    pub fn bytes(&self) -> u64 {
        self.pages.len() as u64 * 4096
    }

    /// Reads the entry at `gpa` from the built pages (for the software walk).
    pub fn entry(&self, gpa: Gpa) -> Option<u64> {
        let idx = (gpa.raw().checked_sub(self.cr3.raw())?) / 4096;
        let page = self.pages.get(usize::try_from(idx).ok()?)?;
        let e = usize::try_from(gpa.page_offset(PageSize::Size4K) / 8).ok()?;
        page.entries.get(e).copied()
    }
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// A software 4-level walk of `gva` from `cr3`, reading entries with `read`: the gPA and the page
/// size that map it, or `None` at a non-present entry.
pub fn walk(read: impl Fn(Gpa) -> Option<u64>, cr3: Gpa, gva: Gva) -> Option<(Gpa, PageSize)> {
    let v = gva.raw();
    let mut table = cr3.raw() & ADDR_MASK;
    for level in (1..=4u32).rev() {
        let index = (v >> (12 + 9 * (level - 1))) & 0x1ff;
        let e = read(Gpa(table + index * 8))?;
        if e & P == 0 {
            return None;
        }
        let leaf = level == 1 || ((level == 2 || level == 3) && e & PS != 0);
        if leaf {
            let size = match level {
                1 => PageSize::Size4K,
                2 => PageSize::Size2M,
                _ => PageSize::Size1G,
            };
            let base = e & ADDR_MASK & !size.mask();
            return Some((Gpa(base | (v & size.mask())), size));
        }
        table = e & ADDR_MASK;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_bytes_match_the_builder() {
        for (ram, page) in [
            (64 << 20, PageSize::Size4K),
            (3 << 30, PageSize::Size4K),
            (3 << 30, PageSize::Size2M),
            ((1 << 30) + (6 << 20), PageSize::Size2M),
            ((1 << 30) + (4 << 10), PageSize::Size4K),
        ] {
            let t = PageTables::identity(ram, page, Gpa(0x10_0000)).unwrap();
            assert_eq!(t.bytes(), tables_bytes(ram, page), "{ram} {page:?}");
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(PageTables::identity(0, PageSize::Size4K, Gpa(0)).is_err());
        assert!(PageTables::identity(3 << 20, PageSize::Size2M, Gpa(0)).is_err());
        assert!(PageTables::identity(1 << 30, PageSize::Size1G, Gpa(0)).is_err());
    }

    proptest! {
        #[test]
        fn software_walk_finds_the_identity_map(
            mib in 2u64..3000,
            huge in any::<bool>(),
            probes in proptest::collection::vec(any::<u64>(), 32),
        ) {
            let page = if huge { PageSize::Size2M } else { PageSize::Size4K };
            let ram = (mib & !1) << 20;
            let t = PageTables::identity(ram, page, Gpa(0x10_0000)).unwrap();
            for p in probes {
                let v = p % ram;
                prop_assert_eq!(walk(|g| t.entry(g), t.cr3, Gva(v)), Some((Gpa(v), page)));
                prop_assert_eq!(
                    walk(|g| t.entry(g), t.cr3, Gva(HIGH_BASE + v)),
                    Some((Gpa(v), page))
                );
                // Beyond RAM nothing is mapped.
                let beyond = ram + p % (1 << 30);
                prop_assert_eq!(walk(|g| t.entry(g), t.cr3, Gva(beyond)), None);
            }
        }
    }
}
