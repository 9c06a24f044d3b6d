//! Shadow paging, the functional side: the hypervisor's per-process shadow tables (gVA -> hPA
//! directly) and how it keeps them in sync with the guest's tables. (Adams & Agesen, ASPLOS 2006;
//! Bhargava et al., ASPLOS 2008; KVM `arch/x86/kvm/mmu/paging_tmpl.h`.)
//!
//! Guest page-table pages are write-protected, so every guest page-table write traps, and so do
//! guest CR3 loads (the shadow root changes), INVLPG, and guest page faults (intercepted, then
//! reflected to the guest). The hypervisor syncs eagerly on the faulting write (as KVM does when
//! it emulates a write to a shadowed page table) and lazily otherwise: a shadow miss on a page the
//! guest maps (e.g. after a huge page was split) is a hidden page fault that fills the shadow
//! entry. A shadow leaf is the smaller of the guest page and the host mapping.
//!
//! Every operation returns a [`ShadowSync`]: the traps the guest event caused and the shadow
//! entries written and removed. What a trap costs is the timing model's business
//! (`compromis-mmu`'s shadow walker charges each as a VM exit).

use crate::backing::{Backing, HV_PRIVATE_BASE, HvFrames};
use crate::guest::{Fault, GuestOs, Unmapped};
use crate::radix::{Leaf, RadixTable, WalkPath, Writes};
use compromis_types::{Address, Gpa, Gva, Hpa, PageSize, Pid};
use std::collections::BTreeMap;

/// Traps into the hypervisor, by cause (each one a VM exit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traps {
    /// Guest writes to write-protected guest page-table pages (one per entry written).
    pub pt_write: u64,
    /// Guest CR3 loads (context switch, or a full TLB flush instead of per-page INVLPG).
    pub cr3_load: u64,
    /// Guest page faults, intercepted then reflected to the guest.
    pub reflected_fault: u64,
    /// Shadow misses on pages the guest maps, filled by the hypervisor (hidden page faults).
    pub hidden_fault: u64,
    /// Guest INVLPG instructions.
    pub invlpg: u64,
}

/// What the hypervisor did for one guest event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowSync {
    /// The traps the event caused.
    pub traps: Traps,
    /// Shadow leaves written (a guest page larger than its host mapping takes several).
    pub synced: u64,
    /// Shadow leaves removed.
    pub removed: u64,
}

/// The hypervisor's shadow tables of one VM, one per guest process.
#[derive(Clone, Debug)]
pub struct ShadowTables {
    tables: BTreeMap<Pid, RadixTable>,
    frames: HvFrames,
}

impl Default for ShadowTables {
    fn default() -> ShadowTables {
        ShadowTables::new()
    }
}

impl ShadowTables {
    /// No shadow table yet. Shadow table pages are hypervisor-private host frames placed 1 TiB
    /// after the EPT's.
    pub fn new() -> ShadowTables {
        ShadowTables {
            tables: BTreeMap::new(),
            frames: HvFrames::new(Hpa(HV_PRIVATE_BASE.raw() + (1 << 40))),
        }
    }

    /// The shadow table of the running process, created (empty) on first use.
    fn current(&mut self, guest: &GuestOs) -> &mut RadixTable {
        let levels = guest.table().levels();
        let frames = &mut self.frames;
        self.tables
            .entry(guest.current_pid())
            .or_insert_with(|| RadixTable::new(levels, frames.alloc().raw()))
    }

    /// The shadow table of `pid`, if it has one.
    pub fn table(&self, pid: Pid) -> Option<&RadixTable> {
        self.tables.get(&pid)
    }

    /// The hardware walk of the running process's shadow table for `gva`. A miss on a page the
    /// guest maps is a hidden fault: the hypervisor fills the shadow entry and the walk is
    /// retried. A miss on a page the guest does not map is a plain guest page fault (no trap
    /// here; see [`ShadowTables::guest_fault`]).
    pub fn walk(&mut self, guest: &GuestOs, backing: &Backing, gva: Gva) -> (WalkPath, ShadowSync) {
        let mut sync = ShadowSync::default();
        let mut path = self.current(guest).walk(gva.raw());
        if path.leaf.is_none()
            && let Some(g) = guest.table().lookup(gva.raw())
        {
            sync.traps.hidden_fault = 1;
            sync.synced = self.sync(guest, backing, Gva(gva.raw() & !(g.bytes() - 1)), g);
            path = self.current(guest).walk(gva.raw());
        }
        (path, sync)
    }

    /// The translation the shadow table gives, without side effects.
    pub fn lookup(&self, pid: Pid, gva: Gva) -> Option<Hpa> {
        let t = self.tables.get(&pid)?;
        t.lookup(gva.raw()).map(|l| Hpa(l.translate(gva.raw())))
    }

    /// The guest handled a page fault: the fault trapped and was reflected, each entry the guest
    /// wrote trapped, and the write of the leaf is synced to the shadow.
    pub fn guest_fault(&mut self, guest: &GuestOs, backing: &Backing, fault: &Fault) -> ShadowSync {
        ShadowSync {
            traps: Traps {
                reflected_fault: 1,
                pt_write: u64::from(fault.writes.entries),
                ..Traps::default()
            },
            synced: self.sync(guest, backing, fault.page, fault.leaf),
            removed: 0,
        }
    }

    /// The guest unmapped `pages` (`writes` entries written) and then either reloaded CR3
    /// (`flushed`) or issued one INVLPG per page; the shadow entries are removed.
    pub fn unmap(
        &mut self,
        guest: &GuestOs,
        pages: &[Unmapped],
        writes: Writes,
        flushed: bool,
    ) -> ShadowSync {
        let mut sync = ShadowSync {
            traps: Traps {
                pt_write: u64::from(writes.entries),
                ..Traps::default()
            },
            ..ShadowSync::default()
        };
        if flushed {
            sync.traps.cr3_load = 1;
        } else {
            sync.traps.invlpg = pages.len() as u64;
        }
        let table = self.current(guest);
        for p in pages {
            let end = p.page.raw() + p.leaf.bytes();
            let mut va = p.page.raw();
            while va < end {
                va = match table.unmap(va) {
                    Some(l) => {
                        sync.removed += 1;
                        (va & !(l.bytes() - 1)) + l.bytes()
                    }
                    None => va + 4096,
                };
            }
        }
        sync
    }

    /// The guest loaded CR3: the hypervisor switches shadow roots.
    pub fn cr3_load(&mut self) -> ShadowSync {
        ShadowSync {
            traps: Traps {
                cr3_load: 1,
                ..Traps::default()
            },
            ..ShadowSync::default()
        }
    }

    /// Installs shadow leaves for the guest leaf `leaf` at virtual page `page` of the running
    /// process; returns how many were written.
    fn sync(&mut self, guest: &GuestOs, backing: &Backing, page: Gva, leaf: Leaf) -> u64 {
        let guest_size = PageSize::from_leaf_level(leaf.level).unwrap_or(PageSize::Size4K);
        self.current(guest);
        let Some(table) = self.tables.get_mut(&guest.current_pid()) else {
            return 0;
        };
        let frames = &mut self.frames;
        let mut alloc = || frames.alloc().raw();
        let mut off = 0;
        let mut synced = 0;
        while off < guest_size.bytes() {
            let gpa = Gpa(leaf.target + off);
            let (Some(hpa), Some(host)) = (backing.translate(gpa), backing.ept_page(gpa)) else {
                return synced;
            };
            let size = guest_size.min(host);
            // An existing entry (from an earlier lazy fill) is already right.
            if table
                .map(page.raw() + off, hpa.raw(), size.leaf_level(), &mut alloc)
                .is_ok()
            {
                synced += 1;
            }
            off += size.bytes();
        }
        synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestLayout;
    use crate::guest::GuestConfig;

    fn layout() -> GuestLayout {
        GuestLayout::for_ram(256 << 20)
    }

    fn vm(guest_page: PageSize, host_page: PageSize) -> (GuestOs, Backing) {
        let mut hv = HvFrames::new(HV_PRIVATE_BASE);
        let guest = GuestOs::new(
            GuestConfig {
                page: guest_page,
                ..GuestConfig::default()
            },
            layout(),
        )
        .unwrap();
        let backing = Backing::contiguous(layout(), Hpa(1 << 40), host_page, &mut hv);
        (guest, backing)
    }

    const BASE: u64 = 0x7000_0000_0000;

    #[test]
    fn guest_fault_traps_reflects_and_syncs_the_leaf() {
        let (mut g, b) = vm(PageSize::Size4K, PageSize::Size4K);
        let mut s = ShadowTables::new();
        g.map(Gva(BASE), 1 << 20).unwrap();
        let f = g.fault(Gva(BASE + 8)).unwrap();
        let sync = s.guest_fault(&g, &b, &f);
        assert_eq!(sync.traps.reflected_fault, 1);
        assert_eq!(sync.traps.pt_write, u64::from(f.writes.entries));
        assert_eq!(sync.synced, 1);
        let want = b.translate(g.translate(Gva(BASE + 8)).unwrap());
        assert_eq!(s.lookup(g.current_pid(), Gva(BASE + 8)), want);
        // The walk now hits: no trap.
        let (path, sync) = s.walk(&g, &b, Gva(BASE + 8));
        assert!(path.leaf.is_some());
        assert_eq!(sync, ShadowSync::default());
    }

    #[test]
    fn a_guest_huge_page_on_small_host_pages_syncs_lazily_on_hidden_faults() {
        let (mut g, b) = vm(PageSize::Size2M, PageSize::Size4K);
        let mut s = ShadowTables::new();
        g.map(Gva(BASE), 4 << 20).unwrap();
        let f = g.fault(Gva(BASE)).unwrap();
        assert_eq!(f.leaf.bytes(), 2 << 20);
        // Eager sync of the faulting write: one 4 KiB shadow leaf per host page.
        assert_eq!(s.guest_fault(&g, &b, &f).synced, 512);
        // Pages the guest maps but the shadow lost (INVLPG of one 4 KiB piece) come back through a
        // hidden fault.
        let pieces = [Unmapped {
            page: Gva(BASE),
            leaf: f.leaf,
        }];
        let sync = s.unmap(&g, &pieces, Writes::default(), false);
        assert_eq!((sync.traps.invlpg, sync.removed), (1, 512));
        let (path, sync) = s.walk(&g, &b, Gva(BASE + 4096));
        assert!(path.leaf.is_some());
        assert_eq!(sync.traps.hidden_fault, 1);
        assert_eq!(sync.synced, 512);
        // A page the guest does not map: no trap (the guest faults).
        let (path, sync) = s.walk(&g, &b, Gva(BASE + (8 << 20)));
        assert!(path.leaf.is_none());
        assert_eq!(sync, ShadowSync::default());
    }

    #[test]
    fn unmap_past_the_flush_ceiling_is_one_cr3_load() {
        let (g, _) = vm(PageSize::Size4K, PageSize::Size4K);
        let mut s = ShadowTables::new();
        let w = Writes {
            entries: 3,
            ..Writes::default()
        };
        let sync = s.unmap(&g, &[], w, true);
        assert_eq!(
            sync.traps,
            Traps {
                pt_write: 3,
                cr3_load: 1,
                ..Traps::default()
            }
        );
        assert_eq!(s.cr3_load().traps.cr3_load, 1);
    }
}
