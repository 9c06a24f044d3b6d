//! The translation schemes, one file each, and the two walks they share: the guest-dimension walk
//! (every gPA it meets handed to a scheme-specific translator) and the host (EPT) walk with its
//! nested TLB and host page-walk caches.

pub mod compromis;
pub mod ept;
pub mod native;
pub mod shadow;

use crate::config::MachineConfig;
use crate::mem::{Mem, Shortcut};
use crate::scheme::{Ctx, Mmu, Scheme, SchemeKind, WalkResult};
use crate::setassoc::SetAssoc;
use crate::stats::Stats;
use crate::tlb::WalkCaches;
use compromis_types::{Address, Gpa, Gva, Hpa, PageSize};
use compromis_vmem::radix::WalkPath;
use compromis_vmem::{Backing, PlannedWalk, RadixTable};
use std::cell::Cell;

/// A gPA translated for a walk: the hPA, the host references it cost, and the largest page over
/// which the host mapping is contiguous (limits the TLB entry size).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostXlat {
    pub hpa: Hpa,
    pub refs: u64,
    pub size: PageSize,
}

/// Walks the running process's guest table for `gva`, skipping levels on page-walk-cache hits,
/// and translates every gPA met (the table pages read, then the data page) with `xlat`.
///
/// Reference count with every cache disabled: `n` guest entries, each preceded by the
/// translation of its table page's gPA (gCR3 for the root), then the data gPA: with `m` host
/// references per translation, `n(m + 1) + m = (n + 1)(m + 1) - 1`.
///
/// `locate` gives, without cost, the host address of a table page whose pointer a page-walk cache
/// supplied (the cache holds the host address of the next table).
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn guest_walk(
    pwc: &mut WalkCaches,
    ctx: Ctx<'_>,
    gva: Gva,
    asid: u16,
    mem: &mut Mem,
    stats: &mut Stats,
    mut xlat: impl FnMut(Gpa, &mut Mem, &mut Stats) -> HostXlat,
    locate: impl Fn(Gpa) -> Hpa,
    planned: &PlannedWalk,
) -> Option<WalkResult> {
    let table = ctx.guest.table();
    // The leaf and the last two entries first, without recording the path: when the page-walk
    // caches leave only those to read (the usual case), that is all the walk needs. From the
    // walk the hints planned ([`Plans`]) when it is this page's at this version.
    let (above, leaf_entry, leaf) = table
        .finish_two(planned, gva.raw())
        .unwrap_or_else(|| table.last_two(gva.raw()));
    let leaf = leaf?;
    let skipped = pwc.skip(gva.raw(), asid, table.levels(), leaf.level);
    if skipped > 0 {
        stats.pwc_hits += 1;
        mem.shortcut(Shortcut::Pwc, stats);
    }
    let len = table.levels() - leaf.level + 1;
    let mut path = WalkPath {
        len,
        ..Default::default()
    };
    // Only the entries from `skipped` on are read below. (Not through `read_entries`: its
    // closure form, which must tell the first entry read from the others, cost EPT and
    // Compromis 0.7% and 1.5% more instructions on gups.)
    let s = usize::from(skipped);
    match (len - skipped, above) {
        (1, _) => path.entry_addrs[s] = leaf_entry,
        (2, Some(above)) => {
            path.entry_addrs[s] = above;
            path.entry_addrs[s + 1] = leaf_entry;
        }
        _ => path = table.walk(gva.raw()),
    }
    // What the full walk records there (checked in every test run).
    debug_assert!({
        let full = table.walk(gva.raw());
        full.len == len
            && full.entry_addrs[s..usize::from(len)] == path.entry_addrs[s..usize::from(len)]
    });
    let mut host_refs = 0;
    for i in skipped..path.len {
        let entry = Gpa(path.entry_addrs[usize::from(i)]);
        let table_page = entry.align_down(PageSize::Size4K);
        // A cached upper entry holds the host address of the next table: no translation for it.
        let table_hpa = if i > skipped || skipped == 0 {
            let x = xlat(table_page, mem, stats);
            host_refs += x.refs;
            x.hpa
        } else {
            locate(table_page)
        };
        mem.walk_ref(
            Hpa(table_hpa.raw() + entry.page_offset(PageSize::Size4K)),
            stats,
        );
    }
    let guest_refs = u64::from(path.len - skipped);
    let data = xlat(Gpa(leaf.translate(gva.raw())), mem, stats);
    host_refs += data.refs;
    stats.record_walk(guest_refs, host_refs);
    let guest_size = PageSize::from_leaf_level(leaf.level).unwrap_or(PageSize::Size4K);
    let size = guest_size.min(data.size);
    Some(WalkResult {
        frame: Hpa(data.hpa.raw() - gva.page_offset(size)),
        size,
    })
}

/// The entries a walk of `len` entries reads from entry `skipped` on (the page-walk caches gave
/// the ones before), each given to `read`: when only the last one or two are left, `last` and
/// `above` (the entry before it, if known) without a descent of the table; else those of the
/// recorded path `walk` makes. In debug builds (every test run) the entries given without a
/// descent are checked against `walk`'s path.
#[inline(always)]
pub(crate) fn read_entries(
    len: u8,
    skipped: u8,
    above: Option<u64>,
    last: u64,
    walk: impl FnOnce() -> WalkPath,
    mut read: impl FnMut(u64),
) {
    // Whether `walk`'s path is the walk that found the leaf and ends with `entries`.
    let ends_with = |path: WalkPath, entries: &[u64]| {
        path.len == len && path.entry_addrs[..usize::from(len)].ends_with(entries)
    };
    match (len - skipped, above) {
        (1, _) => {
            debug_assert!(ends_with(walk(), &[last]), "the walk's last entry");
            read(last);
        }
        (2, Some(above)) => {
            debug_assert!(
                ends_with(walk(), &[above, last]),
                "the walk's last two entries"
            );
            read(above);
            read(last);
        }
        _ => {
            let path = walk();
            debug_assert_eq!(path.len, len, "the walk that found the leaf");
            for &entry in &path.entry_addrs[usize::from(skipped)..usize::from(path.len)] {
                read(entry);
            }
        }
    }
}

/// Side-effect-free version of [`guest_walk`] for `probe`.
pub(crate) fn guest_probe(
    ctx: Ctx<'_>,
    gva: Gva,
    xlat: impl Fn(Gpa) -> Option<Hpa>,
) -> Option<Hpa> {
    xlat(ctx.guest.translate(gva)?)
}

/// The host (EPT) walker: nested TLB, host page-walk caches, EPT walk.
#[derive(Clone, Debug)]
pub(crate) struct NestedWalker {
    ntlb: SetAssoc,
    host_pwc: WalkCaches,
    /// Bit `leaf_level - 1` set once the nested TLB was filled with an entry of that page size:
    /// a size never filled cannot hit, so its lookup is skipped (a lookup that misses changes no
    /// state the results depend on: speed only).
    filled: u8,
    /// Whether the nested TLB has 4 ways and a power-of-two number of sets (every preset's: 32
    /// entries): its lookups and fills then take [`SetAssoc::lookup_w`] and
    /// [`SetAssoc::fill_w`], inlined (same answers, same state after).
    ntlb4: bool,
}

#[inline]
fn size_bit(size: PageSize) -> u8 {
    1 << (size.leaf_level() - 1)
}

#[inline]
fn ntlb_key(gpa: Gpa, size: PageSize) -> u64 {
    gpa.page_number(size) | (u64::from(size.leaf_level()) << 45)
}

impl NestedWalker {
    pub fn new(cfg: &MachineConfig) -> NestedWalker {
        let w = &cfg.walk_caches;
        let b = |g: crate::config::Geometry| g.build("").unwrap_or_else(|_| SetAssoc::disabled());
        let ntlb = b(w.nested_tlb);
        NestedWalker {
            ntlb4: ntlb.has_shape(4),
            ntlb,
            host_pwc: WalkCaches::new(&b(w.host_pml4), &b(w.host_pdpt), &b(w.host_pd)),
            filled: 0,
        }
    }

    /// Translates `gpa` through the nested TLB or an EPT walk.
    #[inline]
    pub fn translate(
        &mut self,
        backing: &Backing,
        gpa: Gpa,
        mem: &mut Mem,
        stats: &mut Stats,
    ) -> HostXlat {
        self.translate_planned(backing, gpa, &[], mem, stats)
    }

    /// [`NestedWalker::translate`], the EPT walk read from one of `plans` when one was made for
    /// `gpa`'s page at the EPT's present version ([`RadixTable::finish_two`]): when the host
    /// page-walk caches leave the last one or two entries to read (nearly always), those are
    /// the only entries the simulator reads, instead of a descent that records the whole path.
    /// Same answers, same state after.
    #[inline]
    pub fn translate_planned(
        &mut self,
        backing: &Backing,
        gpa: Gpa,
        plans: &[PlannedWalk],
        mem: &mut Mem,
        stats: &mut Stats,
    ) -> HostXlat {
        if !self.ntlb.is_disabled() {
            for size in PageSize::ALL {
                if self.filled & size_bit(size) == 0 {
                    continue;
                }
                let key = ntlb_key(gpa, size);
                let hit = if self.ntlb4 {
                    self.ntlb.lookup_w::<4>(key)
                } else {
                    self.ntlb.lookup(key)
                };
                if let Some(base) = hit {
                    stats.ntlb_hits += 1;
                    mem.host_shortcut(Shortcut::NestedTlb, stats);
                    return HostXlat {
                        hpa: Hpa(base + gpa.page_offset(size)),
                        refs: 0,
                        size,
                    };
                }
            }
            stats.ntlb_misses += 1;
        }
        let ept = backing.ept();
        let planned = plans.iter().find_map(|p| ept.finish_two(p, gpa.raw()));
        // The last two entries of the walk (`above` none when it reads one), and the leaf.
        let (above, last, leaf, path) = match planned {
            Some((above, last, leaf)) => (above, last, leaf, None),
            None => {
                let path = ept.walk(gpa.raw());
                let n = usize::from(path.len);
                let above = n.checked_sub(2).map(|k| path.entry_addrs[k]);
                (above, path.last_entry().unwrap_or(0), path.leaf, Some(path))
            }
        };
        let Some(leaf) = leaf else {
            // Not RAM: the guest's own tables and data are always RAM, so this is a bug upstream;
            // answer with an identity mapping and no reference rather than aborting the run.
            return HostXlat {
                hpa: Hpa(gpa.raw()),
                refs: 0,
                size: PageSize::Size4K,
            };
        };
        // A walk to a leaf at `leaf.level` reads one entry per level from the root down.
        let len = ept.levels() - leaf.level + 1;
        let skipped = self.host_pwc.skip(gpa.raw(), 0, ept.levels(), leaf.level);
        if skipped > 0 {
            stats.host_pwc_hits += 1;
            mem.host_shortcut(Shortcut::Pwc, stats);
        }
        read_entries(
            len,
            skipped,
            above,
            last,
            || path.unwrap_or_else(|| ept.walk(gpa.raw())),
            |e| mem.host_walk_ref(Hpa(e), stats),
        );
        let size = PageSize::from_leaf_level(leaf.level).unwrap_or(PageSize::Size4K);
        if self.ntlb4 {
            self.ntlb.fill_w::<4>(ntlb_key(gpa, size), leaf.target);
        } else {
            self.ntlb.fill(ntlb_key(gpa, size), leaf.target);
        }
        self.filled |= size_bit(size);
        HostXlat {
            hpa: Hpa(leaf.translate(gpa.raw())),
            refs: u64::from(len - skipped),
            size,
        }
    }
}

/// One guest page's walks as the hints planned them ([`Plans`]).
#[derive(Clone, Debug, Default)]
struct PlanSlot {
    /// The guest table's walk (made at the far hint).
    guest: Cell<PlannedWalk>,
    /// EPT walks (made at the mid hint, for walkers that give one): of the guest leaf entry's
    /// table page and of the data page.
    host: [Cell<PlannedWalk>; 2],
}

/// The walks the prefetch hints planned for the pages they were given, so that the later hints
/// and the walk itself read only the last entries instead of descending the simulator's radix
/// tables again: the far hint descends the guest table to the leaf entry's table page and
/// prefetches the entry ([`RadixTable::plan_walk`]), the mid hint reads it and plans the EPT
/// descents for the entry's table page and the data page, the near hint and the walk (its leaf
/// entry and the `locate` of its table page) finish them ([`RadixTable::finish_last`]). A plan is
/// used only for the page it was made for and while its table keeps the version it was made at
/// (any write to a table, as at a fault or an unmap, changes it): its answers are then exactly
/// those of a new descent, so no simulated result depends on it. Direct-mapped by guest page
/// (the last page planned in a slot wins; a lost plan only costs a descent). Interior
/// mutability, as hints are given through `&self`.
#[derive(Clone, Debug)]
pub(crate) struct Plans {
    slots: Box<[PlanSlot]>,
}

impl Default for Plans {
    fn default() -> Plans {
        Plans {
            slots: (0..Plans::SLOTS).map(|_| PlanSlot::default()).collect(),
        }
    }
}

impl Plans {
    /// Slots: the hints run 8 ops ahead, so a plan is used after at most a few others were made.
    const SLOTS: usize = 32;

    #[inline(always)]
    fn slot(&self, gva: Gva) -> &PlanSlot {
        // The top 5 bits of a u64 fit any usize.
        #[allow(clippy::cast_possible_truncation)]
        let s = ((gva.raw() >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as usize;
        &self.slots[s]
    }

    /// The guest walk planned in `gva`'s slot (perhaps another page's: every use checks it).
    #[inline(always)]
    pub fn guest(&self, gva: Gva) -> PlannedWalk {
        self.slot(gva).guest.get()
    }

    /// [`RadixTable::last_entry`]`(va)` of the EPT from the `k`-th EPT walk planned in `gva`'s
    /// slot, else from a new descent.
    #[inline(always)]
    pub fn host_last(
        &self,
        gva: Gva,
        k: usize,
        ept: &RadixTable,
        va: u64,
    ) -> (u64, Option<compromis_vmem::Leaf>) {
        ept.finish_last(&self.slot(gva).host[k].get(), va)
            .unwrap_or_else(|| ept.last_entry(va))
    }

    /// The EPT walks planned in `gva`'s slot (perhaps for other gPAs: every use checks them).
    #[inline(always)]
    pub fn host(&self, gva: Gva) -> [PlannedWalk; 2] {
        let s = self.slot(gva);
        [s.host[0].get(), s.host[1].get()]
    }

    /// [`RadixTable::last_entry`]`(gva)` of the guest `table` from the guest walk planned in
    /// `gva`'s slot, else from a new descent.
    #[inline(always)]
    pub fn guest_last(&self, gva: Gva, table: &RadixTable) -> (u64, Option<compromis_vmem::Leaf>) {
        table
            .finish_last(&self.slot(gva).guest.get(), gva.raw())
            .unwrap_or_else(|| table.last_entry(gva.raw()))
    }

    /// A new plan for `gva`'s page: its guest walk (the slot's EPT walks are left: each is
    /// checked against the gPA it is used for).
    #[inline(always)]
    pub fn put_guest(&self, gva: Gva, guest: PlannedWalk) {
        self.slot(gva).guest.set(guest);
    }

    /// The EPT walks of `gva`'s plan.
    #[inline(always)]
    pub fn put_host(&self, gva: Gva, host: [PlannedWalk; 2]) {
        let s = self.slot(gva);
        s.host[0].set(host[0]);
        s.host[1].set(host[1]);
    }
}

/// The guest-dimension page-walk caches from a configuration.
pub(crate) fn guest_pwc(cfg: &MachineConfig) -> WalkCaches {
    let w = &cfg.walk_caches;
    let b = |g: crate::config::Geometry| g.build("").unwrap_or_else(|_| SetAssoc::disabled());
    WalkCaches::new(&b(w.pml4), &b(w.pdpt), &b(w.pd))
}

// The factory lives beside the schemes it builds, so `scheme` (the interface) does not depend on
// `schemes` (the implementations).
impl SchemeKind {
    /// Builds the scheme for a VM.
    pub fn build(self, cfg: &MachineConfig) -> Box<dyn Scheme> {
        match self {
            SchemeKind::Native => Box::new(Mmu::new(self.name(), cfg, native::Native::new(cfg))),
            SchemeKind::Ept => Box::new(Mmu::new(self.name(), cfg, ept::Ept::new(cfg))),
            SchemeKind::Shadow => Box::new(Mmu::new(self.name(), cfg, shadow::Shadow::new(cfg))),
            SchemeKind::Compromis => {
                Box::new(Mmu::new(self.name(), cfg, compromis::Compromis::new(cfg)))
            }
        }
    }
}

/// A perfect TLB: every access translated at no cost, the data accesses through the data caches
/// as in every scheme. Not a translation scheme but the baseline of overheads (named `ideal`).
pub fn perfect_tlb(cfg: &MachineConfig) -> Box<dyn Scheme> {
    Box::new(Mmu::perfect("ideal", cfg, ept::Ept::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::Walker;
    use compromis_vmem::{Backing, GuestConfig, GuestLayout, GuestOs, HV_PRIVATE_BASE, HvFrames};
    use proptest::prelude::*;

    proptest! {
        /// Every walker's Near hint (`Walker::near`, fused in EPT, shadow paging and Compromis)
        /// gives what `probe` and `leaf_entries` give: guest 4 KiB or 2 MiB pages, host 4 KiB,
        /// 2 MiB or 1 GiB pages, faulted, walked (shadow entries filled) and unmapped addresses.
        #[test]
        fn near_is_probe_and_leaf_entries(
            guest_2m in any::<bool>(),
            host in 0usize..3,
            faults in prop::collection::vec(0u64..(64 << 20), 0..40),
            asks in prop::collection::vec(0u64..(80 << 20), 1..40),
        ) {
            let layout = GuestLayout::for_ram(1 << 30);
            let host_page = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G][host];
            let mut hv = HvFrames::new(HV_PRIVATE_BASE);
            let backing = Backing::contiguous(layout.clone(), Hpa(1 << 40), host_page, &mut hv);
            let guest_cfg = GuestConfig {
                page: if guest_2m { PageSize::Size2M } else { PageSize::Size4K },
                ..GuestConfig::default()
            };
            let mut guest = GuestOs::new(guest_cfg, layout).unwrap();
            let cfg = MachineConfig::default();
            let mut walkers: (native::Native, ept::Ept, shadow::Shadow, compromis::Compromis) = (
                native::Native::new(&cfg),
                ept::Ept::new(&cfg),
                shadow::Shadow::new(&cfg),
                compromis::Compromis::new(&cfg),
            );
            let (mut mem, mut stats) = (Mem::new(&cfg), Stats::default());
            let base = 0x7f00_0000_0000u64;
            guest.map(Gva(base), 64 << 20).unwrap();
            for (k, f) in faults.into_iter().enumerate() {
                let gva = Gva(base + f);
                if guest.translate(gva).is_none() {
                    let fault = guest.fault(gva).unwrap();
                    let ctx = Ctx { guest: &guest, backing: &backing };
                    walkers.2.on_fault(ctx, &fault, &mut stats);
                }
                if k % 2 == 0 {
                    // Shadow paging fills its entry on the walk (a hidden fault).
                    let ctx = Ctx { guest: &guest, backing: &backing };
                    walkers.2.walk(ctx, gva, guest.current_pid(), &mut mem, &mut stats);
                }
            }
            let ctx = Ctx { guest: &guest, backing: &backing };
            fn check(w: &impl Walker, ctx: Ctx<'_>, gva: Gva) -> Result<(), TestCaseError> {
                let want = (w.probe(ctx, gva), w.leaf_entries(ctx, gva));
                prop_assert_eq!(w.near(ctx, gva, true), want);
                prop_assert_eq!(w.near(ctx, gva, false), (want.0, [None; 2]));
                Ok(())
            }
            for a in asks {
                let gva = Gva(base + a);
                check(&walkers.0, ctx, gva)?;
                check(&walkers.1, ctx, gva)?;
                check(&walkers.2, ctx, gva)?;
                check(&walkers.3, ctx, gva)?;
            }
        }
    }

    proptest! {
        /// The nested walker reading the EPT's last two entries from plans
        /// (`translate_planned`) translates as without them (`translate`, a recorded descent):
        /// same answers, counters, nested TLB and host walk caches after every translation;
        /// plans of the gPA's page, of another page, or none; host pages of 4 KiB, 2 MiB and
        /// 1 GiB; small host walk caches that evict, so one, two and more entries are read.
        #[test]
        fn nested_planned_is_unplanned(
            host in 0usize..3,
            small in any::<bool>(),
            gpas in prop::collection::vec((0u64..(1 << 30), 0u8..3), 1..200),
        ) {
            let layout = GuestLayout::for_ram(1 << 30);
            let host_page = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G][host];
            let mut hv = HvFrames::new(HV_PRIVATE_BASE);
            let backing = Backing::contiguous(layout, Hpa(1 << 40), host_page, &mut hv);
            let mut cfg = MachineConfig::default();
            if small {
                let g = |entries, ways| crate::config::Geometry { entries, ways };
                cfg.walk_caches.nested_tlb = g(4, 4);
                cfg.walk_caches.host_pd = g(2, 2);
                cfg.walk_caches.host_pdpt = g(1, 1);
            }
            let mut planned = NestedWalker::new(&cfg);
            let mut plain = planned.clone();
            let (mut mem_a, mut stats_a) = (Mem::new(&cfg), Stats::default());
            let (mut mem_b, mut stats_b) = (Mem::new(&cfg), Stats::default());
            let ept = backing.ept();
            for (g, plan) in gpas {
                let gpa = Gpa(g);
                let plans = match plan {
                    0 => vec![],
                    1 => vec![ept.plan_walk(g ^ (1 << 21)), ept.plan_walk(g)],
                    _ => vec![ept.plan_walk(g ^ 0x5000)],
                };
                let a = planned.translate_planned(&backing, gpa, &plans, &mut mem_a, &mut stats_a);
                let b = plain.translate(&backing, gpa, &mut mem_b, &mut stats_b);
                prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
                prop_assert_eq!(&stats_a, &stats_b);
                prop_assert_eq!(format!("{:?}", planned.ntlb), format!("{:?}", plain.ntlb));
                prop_assert_eq!(
                    format!("{:?}", planned.host_pwc),
                    format!("{:?}", plain.host_pwc)
                );
                prop_assert_eq!(format!("{:?}", mem_a), format!("{:?}", mem_b));
            }
        }
    }

    proptest! {
        /// The nested walker with its 4-way nested TLB's fixed-shape lookups and fills
        /// (`lookup_w` / `fill_w`) translates as with the generic ones: same answers, same
        /// counters, the same nested TLB and host walk caches after every translation; host pages
        /// of 4 KiB, 2 MiB or 1 GiB (the nested TLB's sizes), a TLB small enough to evict.
        #[test]
        fn nested_shaped_is_generic(
            host in 0usize..3,
            entries in prop::sample::select(vec![4usize, 8, 32]),
            gpas in prop::collection::vec(0u64..(1 << 30), 1..200),
        ) {
            let layout = GuestLayout::for_ram(1 << 30);
            let host_page = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G][host];
            let mut hv = HvFrames::new(HV_PRIVATE_BASE);
            let backing = Backing::contiguous(layout, Hpa(1 << 40), host_page, &mut hv);
            let mut cfg = MachineConfig::default();
            cfg.walk_caches.nested_tlb = crate::config::Geometry { entries, ways: 4 };
            let mut fast = NestedWalker::new(&cfg);
            prop_assert!(fast.ntlb4);
            let mut plain = fast.clone();
            plain.ntlb4 = false;
            let (mut mem_f, mut stats_f) = (Mem::new(&cfg), Stats::default());
            let (mut mem_p, mut stats_p) = (Mem::new(&cfg), Stats::default());
            for g in gpas {
                // Pages of a few regions, so that the nested TLB both hits and evicts.
                let gpa = Gpa((g % 64) * 4096 + (g / 64 % 8) * (1 << 21) + (g >> 27 << 27) + (g & 0xfff));
                let a = fast.translate(&backing, gpa, &mut mem_f, &mut stats_f);
                let b = plain.translate(&backing, gpa, &mut mem_p, &mut stats_p);
                prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
                prop_assert_eq!(&stats_f, &stats_p);
                prop_assert_eq!(format!("{:?}", fast.ntlb), format!("{:?}", plain.ntlb));
                prop_assert_eq!(format!("{:?}", fast.host_pwc), format!("{:?}", plain.host_pwc));
                prop_assert_eq!(fast.filled, plain.filled);
            }
        }
    }
}
