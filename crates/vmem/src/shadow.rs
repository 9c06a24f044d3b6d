//! Shadow paging, the functional side: the hypervisor's per-process shadow tables (gVA -> hPA
//! directly) and how it keeps them in sync with the guest's tables. (Adams & Agesen, ASPLOS 2006;
//! Bhargava et al., ASPLOS 2008; KVM `arch/x86/kvm/mmu/paging_tmpl.h`.)
//!
//! Two ways of keeping the shadow in sync ([`SyncMode`]):
//!
//! - **out of sync** (`oos`, the default; KVM "unsync" shadow pages since 2008,
//!   `mmu_try_to_unsync_pages` / `kvm_sync_page` in `arch/x86/kvm/mmu/mmu.c`; Xen's Shadow 3
//!   "out-of-sync" L1 tables): guest tables above the last level (PML4/PDPT/PD pages, and so every
//!   2 MiB leaf) stay write-protected, so their writes trap. A last-level (4 KiB leaf) table page
//!   is write-protected only while it is in sync: the first guest write to it traps once
//!   ([`Traps::unsync`]: the hypervisor unprotects it and marks it unsync), later writes are free.
//!   The hypervisor reconciles what the guest wrote when it must: on the hidden fault a new entry
//!   takes at first use, on INVLPG (that page's entries), and on a CR3 load (every unsync table
//!   of the process loaded, which is write-protected again); each entry reconciled at INVLPG or
//!   CR3 load is counted in [`ShadowSync::resynced`]. A demand fault costs two exits: the
//!   reflected guest fault and the hidden fault that fills the shadow entry.
//! - **eager** (`eager`): every guest page-table page is write-protected, every entry the guest
//!   writes traps and is synced at once (as KVM does when it emulates a write to a shadowed page
//!   table, and did for every table before unsync pages).
//!
//! In both, guest CR3 loads (the shadow root changes), INVLPG and guest page faults (intercepted,
//! then reflected to the guest) trap, and a shadow miss on a page the guest maps (e.g. after a
//! huge page was split) is a hidden page fault that fills the shadow entry. A shadow leaf is the
//! smaller of the guest page and the host mapping.
//!
//! Every operation returns a [`ShadowSync`]: the traps the guest event caused and the shadow
//! entries written and removed. What a trap costs is the timing model's business
//! (`compromis-mmu`'s shadow walker charges each as a VM exit).

use crate::backing::{Backing, HV_PRIVATE_BASE, HvFrames};
use crate::guest::{Fault, GuestOs, Unmapped};
use crate::radix::{LastTwo, Leaf, RadixTable, Writes};
use compromis_types::{Address, Gpa, Gva, Hpa, PageSize, Pid};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Out-of-sync mode: first guest write to an in-sync (write-protected) last-level table page,
    /// which the hypervisor then unprotects and marks unsync.
    pub unsync: u64,
}

/// How the hypervisor keeps shadow tables in sync with the guest's (see the module docs).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Last-level guest tables left writable while unsync, reconciled at INVLPG, CR3 load and
    /// hidden faults (KVM unsync shadow pages, Xen Shadow 3 out-of-sync).
    #[default]
    Oos,
    /// Every guest page-table write trapped and synced at once.
    Eager,
}

impl SyncMode {
    /// Both modes.
    pub const ALL: [SyncMode; 2] = [SyncMode::Oos, SyncMode::Eager];

    /// The mode's name (`oos`, `eager`).
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Oos => "oos",
            SyncMode::Eager => "eager",
        }
    }
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<SyncMode, String> {
        SyncMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown shadow sync mode '{s}': valid values are oos, eager"))
    }
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
    /// Out-of-sync mode: guest entries written without a trap, reconciled at this INVLPG or CR3
    /// load (each costs the hypervisor a read of the guest entry and an update of the shadow).
    pub resynced: u64,
}

/// Out-of-sync state of one process.
#[derive(Clone, Debug, Default)]
struct Unsync {
    /// Its unsync last-level tables (keyed by the 2 MiB region each maps).
    tables: BTreeSet<u64>,
    /// Pages whose entry the guest wrote in an unsync table, not yet reconciled.
    pending: BTreeSet<u64>,
}

/// The hypervisor's shadow tables of one VM, one per guest process.
#[derive(Clone, Debug)]
pub struct ShadowTables {
    /// Each process's shadow table, in the order first used (a few processes: a search of this
    /// list is a compare or two, where a map's search was a call and a node scan per walk).
    tables: Vec<(Pid, RadixTable)>,
    frames: HvFrames,
    mode: SyncMode,
    /// Out-of-sync mode: the unsync last-level tables of each process and the entries written
    /// in them not yet reconciled.
    unsync: BTreeMap<Pid, Unsync>,
}

impl Default for ShadowTables {
    fn default() -> ShadowTables {
        ShadowTables::new()
    }
}

/// The 2 MiB region whose last-level table holds the entry of `va`.
#[inline]
fn table_key(va: u64) -> u64 {
    va >> 21
}

impl ShadowTables {
    /// No shadow table yet, out-of-sync mode. Shadow table pages are hypervisor-private host
    /// frames placed 1 TiB after the EPT's.
    pub fn new() -> ShadowTables {
        ShadowTables::with_mode(SyncMode::default())
    }

    /// No shadow table yet, syncing in `mode`.
    pub fn with_mode(mode: SyncMode) -> ShadowTables {
        ShadowTables {
            tables: Vec::new(),
            frames: HvFrames::new(Hpa(HV_PRIVATE_BASE.raw() + (1 << 40))),
            mode,
            unsync: BTreeMap::new(),
        }
    }

    /// How this hypervisor syncs.
    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// Out-of-sync mode: the guest wrote the entry of page `va` in a shadowed last-level table,
    /// without a trap unless the table was in sync (write-protected): then the write trapped and
    /// the table became unsync. Returns the traps (0 or 1).
    fn write_leaf_table(&mut self, pid: Pid, va: u64) -> u64 {
        let u = self.unsync.entry(pid).or_default();
        u.pending.insert(va);
        u64::from(u.tables.insert(table_key(va)))
    }

    /// Out-of-sync mode: the entry of page `va` was reconciled.
    fn reconciled(&mut self, pid: Pid, va: u64) {
        if let Some(u) = self.unsync.get_mut(&pid) {
            u.pending.remove(&va);
        }
    }

    /// The shadow table of the running process, created (empty) on first use.
    fn current(&mut self, guest: &GuestOs) -> &mut RadixTable {
        let pid = guest.current_pid();
        let i = match self.tables.iter().position(|(p, _)| *p == pid) {
            Some(i) => i,
            None => {
                let levels = guest.table().levels();
                let root = self.frames.alloc().raw();
                self.tables.push((pid, RadixTable::new(levels, root)));
                self.tables.len() - 1
            }
        };
        &mut self.tables[i].1
    }

    /// The shadow table of `pid`, if it has one.
    #[inline]
    pub fn table(&self, pid: Pid) -> Option<&RadixTable> {
        self.tables.iter().find(|(p, _)| *p == pid).map(|(_, t)| t)
    }

    /// The hardware walk of the running process's shadow table for `gva`. A miss on a page the
    /// guest maps is a hidden fault: the hypervisor fills the shadow entry and the walk is
    /// retried. A miss on a page the guest does not map is a plain guest page fault (no trap
    /// here; see [`ShadowTables::guest_fault`]). Gives the walk's last two entries and its leaf
    /// as [`RadixTable::last_two`] does (one descent that records nothing else).
    pub fn walk(&mut self, guest: &GuestOs, backing: &Backing, gva: Gva) -> (LastTwo, ShadowSync) {
        let mut sync = ShadowSync::default();
        let mut two = self.current(guest).last_two(gva.raw());
        if two.2.is_none()
            && let Some(g) = guest.table().lookup(gva.raw())
        {
            sync.traps.hidden_fault = 1;
            sync.synced = self.sync(guest, backing, Gva(gva.raw() & !(g.bytes() - 1)), g);
            // Out of sync: the entry the guest wrote without a trap is reconciled here.
            if g.level == 1 {
                self.reconciled(guest.current_pid(), gva.raw() & !0xfff);
            }
            two = self.current(guest).last_two(gva.raw());
        }
        (two, sync)
    }

    /// The translation the shadow table gives, without side effects.
    pub fn lookup(&self, pid: Pid, gva: Gva) -> Option<Hpa> {
        let t = self.table(pid)?;
        t.lookup(gva.raw()).map(|l| Hpa(l.translate(gva.raw())))
    }

    /// The guest handled a page fault: the fault trapped and was reflected.
    ///
    /// Eager: each entry the guest wrote trapped, and the leaf is synced to the shadow at once.
    /// Out of sync: the entries written to upper-level tables trapped (links to new tables, a
    /// 2 MiB leaf); a 4 KiB leaf is written to a last-level table without a trap (one trap if that
    /// table was in sync), and the shadow entry is filled by the hidden fault of the retried access.
    pub fn guest_fault(&mut self, guest: &GuestOs, backing: &Backing, fault: &Fault) -> ShadowSync {
        let mut sync = ShadowSync {
            traps: Traps {
                reflected_fault: 1,
                ..Traps::default()
            },
            ..ShadowSync::default()
        };
        let entries = u64::from(fault.writes.entries);
        match self.mode {
            SyncMode::Eager => {
                sync.traps.pt_write = entries;
                sync.synced = self.sync(guest, backing, fault.page, fault.leaf);
            }
            SyncMode::Oos if fault.leaf.level == 1 => {
                // The new table (if any) is not shadowed yet: its writes need no protection, but
                // the link to it is written in the (protected) table above.
                sync.traps.pt_write = entries - 1;
                if fault.writes.new_tables == 0 {
                    sync.traps.unsync =
                        self.write_leaf_table(guest.current_pid(), fault.page.raw());
                }
            }
            SyncMode::Oos => sync.traps.pt_write = entries,
        }
        sync
    }

    /// The guest unmapped `pages` (`writes` entries written) and then either reloaded CR3
    /// (`flushed`) or issued one INVLPG per page; the shadow entries are removed.
    ///
    /// Eager: every entry written trapped. Out of sync: clearing a 4 KiB leaf is a free write to
    /// a last-level table (one trap if that table was in sync); clearing a 2 MiB leaf and linking
    /// the new table of a split trap; the 4 KiB leaves a split writes go to a table that is not
    /// shadowed yet (free). The removed shadow entries are reconciled at the INVLPGs (counted in
    /// `resynced`), or the CR3 load reconciles every pending entry of the process.
    pub fn unmap(
        &mut self,
        guest: &GuestOs,
        pages: &[Unmapped],
        writes: Writes,
        flushed: bool,
    ) -> ShadowSync {
        let mut sync = ShadowSync::default();
        let pid = guest.current_pid();
        match self.mode {
            SyncMode::Eager => sync.traps.pt_write = u64::from(writes.entries),
            SyncMode::Oos => {
                let mut leaf4k = 0u64;
                for p in pages {
                    if p.leaf.level == 1 {
                        leaf4k += 1;
                        sync.traps.unsync += self.write_leaf_table(pid, p.page.raw());
                    }
                }
                let huge = pages.len() as u64 - leaf4k;
                // Entries written by splits beyond their cleared leaf: links (trapped) and 4 KiB
                // leaves of the new tables (free).
                let split_links = u64::from(writes.new_tables);
                sync.traps.pt_write = huge + split_links;
            }
        }
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
        if self.mode == SyncMode::Oos {
            if flushed {
                sync.resynced = self.resync_all(pid);
            } else {
                // INVLPG reconciles the entries of each page (the shadow's removed ones).
                sync.resynced = sync.removed;
                for p in pages.iter().filter(|p| p.leaf.level == 1) {
                    self.reconciled(pid, p.page.raw());
                }
            }
        }
        sync
    }

    /// Out-of-sync mode: a CR3 load of `pid` reconciles every entry pending in its unsync tables,
    /// which are write-protected again. Returns the entries reconciled.
    fn resync_all(&mut self, pid: Pid) -> u64 {
        self.unsync
            .remove(&pid)
            .map_or(0, |u| u.pending.len() as u64)
    }

    /// The guest loaded CR3 of `pid` (the process now running): the hypervisor switches shadow
    /// roots and, out of sync, reconciles that process's unsync tables.
    pub fn cr3_load(&mut self, pid: Pid) -> ShadowSync {
        ShadowSync {
            traps: Traps {
                cr3_load: 1,
                ..Traps::default()
            },
            resynced: if self.mode == SyncMode::Oos {
                self.resync_all(pid)
            } else {
                0
            },
            ..ShadowSync::default()
        }
    }

    /// Installs shadow leaves for the guest leaf `leaf` at virtual page `page` of the running
    /// process; returns how many were written.
    fn sync(&mut self, guest: &GuestOs, backing: &Backing, page: Gva, leaf: Leaf) -> u64 {
        let guest_size = PageSize::from_leaf_level(leaf.level).unwrap_or(PageSize::Size4K);
        self.current(guest);
        let pid = guest.current_pid();
        let Some((_, table)) = self.tables.iter_mut().find(|(p, _)| *p == pid) else {
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
        let mut s = ShadowTables::with_mode(SyncMode::Eager);
        g.map(Gva(BASE), 1 << 20).unwrap();
        let f = g.fault(Gva(BASE + 8)).unwrap();
        let sync = s.guest_fault(&g, &b, &f);
        assert_eq!(sync.traps.reflected_fault, 1);
        assert_eq!(sync.traps.pt_write, u64::from(f.writes.entries));
        assert_eq!(sync.synced, 1);
        let want = b.translate(g.translate(Gva(BASE + 8)).unwrap());
        assert_eq!(s.lookup(g.current_pid(), Gva(BASE + 8)), want);
        // The walk now hits: no trap.
        let ((_, _, leaf), sync) = s.walk(&g, &b, Gva(BASE + 8));
        assert!(leaf.is_some());
        assert_eq!(sync, ShadowSync::default());
    }

    #[test]
    fn a_guest_huge_page_on_small_host_pages_syncs_lazily_on_hidden_faults() {
        let (mut g, b) = vm(PageSize::Size2M, PageSize::Size4K);
        let mut s = ShadowTables::with_mode(SyncMode::Eager);
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
        let ((_, _, leaf), sync) = s.walk(&g, &b, Gva(BASE + 4096));
        assert!(leaf.is_some());
        assert_eq!(sync.traps.hidden_fault, 1);
        assert_eq!(sync.synced, 512);
        // A page the guest does not map: no trap (the guest faults).
        let ((_, _, leaf), sync) = s.walk(&g, &b, Gva(BASE + (8 << 20)));
        assert!(leaf.is_none());
        assert_eq!(sync, ShadowSync::default());
    }

    #[test]
    fn unmap_past_the_flush_ceiling_is_one_cr3_load() {
        let (g, _) = vm(PageSize::Size4K, PageSize::Size4K);
        let mut s = ShadowTables::with_mode(SyncMode::Eager);
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
        assert_eq!(s.cr3_load(1).traps.cr3_load, 1);
    }

    #[test]
    fn out_of_sync_leaf_writes_are_free_and_reconciled_later() {
        let (mut g, b) = vm(PageSize::Size4K, PageSize::Size4K);
        let mut s = ShadowTables::new();
        assert_eq!(s.mode(), SyncMode::Oos);
        g.map(Gva(BASE), 1 << 20).unwrap();
        let pid = g.current_pid();
        // First fault: three new tables, whose links trap; the leaf table is not shadowed yet.
        let f = g.fault(Gva(BASE)).unwrap();
        assert_eq!(f.writes.new_tables, 3);
        let sync = s.guest_fault(&g, &b, &f);
        assert_eq!(
            sync.traps,
            Traps {
                reflected_fault: 1,
                pt_write: 3,
                ..Traps::default()
            }
        );
        assert_eq!(sync.synced, 0);
        assert_eq!(s.lookup(pid, Gva(BASE)), None);
        // The retried access takes a hidden fault that fills the entry: two exits in all.
        let ((_, _, leaf), sync) = s.walk(&g, &b, Gva(BASE));
        assert!(leaf.is_some());
        assert_eq!((sync.traps.hidden_fault, sync.synced), (1, 1));
        // The shadowed leaf table is write-protected: the next write unsyncs it (one trap), the
        // ones after are free.
        for (i, want) in [(1u64, 1u64), (2, 0), (3, 0)] {
            let f = g.fault(Gva(BASE + (i << 12))).unwrap();
            let sync = s.guest_fault(&g, &b, &f);
            assert_eq!(
                (
                    sync.traps.pt_write,
                    sync.traps.unsync,
                    sync.traps.reflected_fault
                ),
                (0, want, 1),
                "fault {i}"
            );
        }
        // Page 1 touched (hidden fault reconciles it); pages 2 and 3 stay pending.
        assert_eq!(s.walk(&g, &b, Gva(BASE + 4096)).1.traps.hidden_fault, 1);
        // INVLPG of page 1: its shadow entry reconciled, the leaf clear itself free.
        let pieces = [Unmapped {
            page: Gva(BASE + 4096),
            leaf: Leaf {
                target: 0,
                level: 1,
            },
        }];
        let sync = s.unmap(&g, &pieces, Writes::default(), false);
        assert_eq!(
            sync.traps,
            Traps {
                invlpg: 1,
                ..Traps::default()
            }
        );
        assert_eq!((sync.removed, sync.resynced), (1, 1));
        // A CR3 load reconciles the two pending entries and protects the table again.
        let sync = s.cr3_load(pid);
        assert_eq!((sync.traps.cr3_load, sync.resynced), (1, 2));
        assert_eq!(s.cr3_load(pid).resynced, 0);
        let f = g.fault(Gva(BASE + (5 << 12))).unwrap();
        assert_eq!(s.guest_fault(&g, &b, &f).traps.unsync, 1);
    }

    #[test]
    fn out_of_sync_huge_leaves_trap_like_eager() {
        let (mut g, b) = vm(PageSize::Size2M, PageSize::Size2M);
        let mut oos = ShadowTables::new();
        let mut eager = ShadowTables::with_mode(SyncMode::Eager);
        g.map(Gva(BASE), 4 << 20).unwrap();
        let f = g.fault(Gva(BASE)).unwrap();
        let (o, e) = (oos.guest_fault(&g, &b, &f), eager.guest_fault(&g, &b, &f));
        assert_eq!(o.traps, e.traps);
        assert_eq!(o.traps.pt_write, u64::from(f.writes.entries));
    }

    #[test]
    fn sync_mode_names_parse_back() {
        for m in SyncMode::ALL {
            assert_eq!(m.name().parse::<SyncMode>(), Ok(m));
        }
        let e = "lazy".parse::<SyncMode>().unwrap_err();
        assert!(e.contains("lazy") && e.contains("oos, eager"), "{e}");
    }
}
