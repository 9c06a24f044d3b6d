//! Native paging: no virtualization. The guest table is walked directly and guest-physical
//! addresses are taken as physical (reported as `Hpa` with the same value). This is the baseline
//! of every overhead: 4 references per TLB miss with 4 KiB pages and 4-level paging (Intel SDM
//! Vol. 3A, 4.5 "4-Level Paging and 5-Level Paging").

#[cfg(test)]
use super::{HostXlat, guest_walk};
use super::{Plans, guest_pwc, read_entries};
use crate::config::MachineConfig;
use crate::mem::{Mem, Shortcut};
use crate::scheme::{Ctx, Prefetch, WalkResult, Walker};
use crate::stats::Stats;
use crate::tlb::WalkCaches;
use compromis_types::{Address, Gva, Hpa, PageSize};
use compromis_vmem::LeafTables;

/// Native walker.
pub struct Native {
    pwc: WalkCaches,
    /// The guest table's leaf tables by 2 MiB region (speed only, see [`LeafTables`]).
    leaf_tables: LeafTables,
    /// The guest walks the far hints planned (speed only, see [`Plans`]): the near hint and the
    /// walk read their last entries from them instead of descending the table again.
    plans: Plans,
}

impl Native {
    /// From a configuration.
    pub fn new(cfg: &MachineConfig) -> Native {
        Native {
            pwc: guest_pwc(cfg),
            leaf_tables: LeafTables::default(),
            plans: Plans::default(),
        }
    }

    /// The shared guest walk ([`super::guest_walk`]) with guest-physical addresses taken as
    /// host-physical: the oracle of [`Native::walk`]'s own.
    #[cfg(test)]
    fn shared_walk(
        &mut self,
        ctx: Ctx<'_>,
        gva: Gva,
        asid: u16,
        mem: &mut Mem,
        stats: &mut Stats,
    ) -> Option<WalkResult> {
        let identity = |g: compromis_types::Gpa| HostXlat {
            hpa: Hpa(g.raw()),
            refs: 0,
            size: PageSize::Size1G,
        };
        guest_walk(
            &mut self.pwc,
            ctx,
            gva,
            asid,
            mem,
            stats,
            |g, _, _| identity(g),
            |g| Hpa(g.raw()),
            &Default::default(),
        )
    }
}

impl Walker for Native {
    /// [`super::guest_walk`] with an identity translation, written for it: every entry's
    /// guest-physical address is its host address and no reference is a host one, so a walk is
    /// the leaf's search, the page-walk caches, one reference per entry left to read and the
    /// counts, without a recorded path when only the last one or two entries are read (the
    /// usual case: one descent gives both) and without the translator calls. Same references in the same order, same counts, same
    /// result (proptested against the shared walk below).
    #[inline]
    fn walk(
        &mut self,
        ctx: Ctx<'_>,
        gva: Gva,
        asid: u16,
        mem: &mut Mem,
        stats: &mut Stats,
    ) -> Option<WalkResult> {
        let table = ctx.guest.table();
        let va = gva.raw();
        let (above, leaf_entry, leaf) = table
            .finish_two(&self.plans.guest(gva), va)
            .unwrap_or_else(|| table.last_two_memo(va, &mut self.leaf_tables));
        let leaf = leaf?;
        let levels = table.levels();
        let skipped = self.pwc.skip(va, asid, levels, leaf.level);
        if skipped > 0 {
            stats.pwc_hits += 1;
            mem.shortcut(Shortcut::Pwc, stats);
        }
        let len = levels - leaf.level + 1;
        // Usually only the leaf entry is left to read, or the entry above it and the leaf entry
        // (a PDE-cache miss, a PDPTE-cache hit).
        read_entries(
            len,
            skipped,
            above,
            leaf_entry,
            || table.walk(va),
            |e| mem.walk_ref(Hpa(e), stats),
        );
        stats.record_walk(u64::from(len - skipped), 0);
        let size = PageSize::from_leaf_level(leaf.level).unwrap_or(PageSize::Size4K);
        Some(WalkResult {
            frame: Hpa(leaf.translate(va) - gva.page_offset(size)),
            size,
        })
    }
    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa> {
        super::guest_probe(ctx, gva, |g| Some(Hpa(g.raw())))
    }
    fn prefetch(&self, ctx: Ctx<'_>, gva: Gva, stage: Prefetch) {
        // The default's far hint (the guest leaf entry prefetched), the walk kept as a plan.
        if stage == Prefetch::Far && self.far_hints(ctx) {
            self.plans
                .put_guest(gva, ctx.guest.table().plan_walk(gva.raw()));
        }
    }
    fn leaf_entries(&self, ctx: Ctx<'_>, gva: Gva) -> [Option<Hpa>; 2] {
        [
            ctx.guest.table().walk(gva.raw()).last_entry().map(Hpa),
            None,
        ]
    }
    fn near(&self, ctx: Ctx<'_>, gva: Gva, leaves: bool) -> (Option<Hpa>, [Option<Hpa>; 2]) {
        // `probe` and `leaf_entries` from one walk of the guest table that records no path (the
        // two calls walked it twice, once recording every entry), the far hint's plan when it
        // has one for this page.
        let (entry, leaf) = self.plans.guest_last(gva, ctx.guest.table());
        let data = leaf.map(|l| Hpa(l.translate(gva.raw())));
        (data, [leaves.then_some(Hpa(entry)), None])
    }
    fn flush(&mut self) {
        self.pwc.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_vmem::{Backing, GuestConfig, GuestLayout, GuestOs, HV_PRIVATE_BASE, HvFrames};
    use proptest::prelude::*;

    proptest! {
        /// Native's own walk is the shared guest walk with an identity translation: same result,
        /// same counters (references by level, cycles, page-walk-cache hits, the walk
        /// histogram) and the same page-walk-cache state after every walk, for 4- and 5-level
        /// tables of 4 KiB and 2 MiB pages, mapped and unmapped addresses, small caches that
        /// evict and the default ones, with and without data caches, with and without a plan
        /// of the walk (the far hint's) or of another page.
        #[test]
        fn native_walk_is_the_shared_walk(
            levels in prop_oneof![Just(4u8), Just(5u8)],
            guest_2m in any::<bool>(),
            small in any::<bool>(),
            caches in any::<bool>(),
            faults in prop::collection::vec(0u64..(1u64 << 40), 0..60),
            walks in prop::collection::vec(
                (0u64..(1u64 << 40), 0u16..3, any::<bool>(), 0u8..3),
                1..120,
            ),
        ) {
            let layout = GuestLayout::for_ram(1 << 30);
            let mut hv = HvFrames::new(HV_PRIVATE_BASE);
            let backing = Backing::contiguous(layout.clone(), Hpa(1 << 40), PageSize::Size4K, &mut hv);
            let guest_cfg = GuestConfig {
                levels,
                page: if guest_2m { PageSize::Size2M } else { PageSize::Size4K },
                ..GuestConfig::default()
            };
            let mut guest = GuestOs::new(guest_cfg, layout).unwrap();
            let mut cfg = MachineConfig::default();
            if small {
                let g = |entries, ways| crate::config::Geometry { entries, ways };
                cfg.walk_caches.pml4 = g(2, 2);
                cfg.walk_caches.pdpt = g(2, 1);
                cfg.walk_caches.pd = g(4, 2);
            }
            if !caches {
                cfg.cache.l1d.size = compromis_types::ByteSize(0);
                cfg.cache.l2.size = compromis_types::ByteSize(0);
                cfg.cache.llc.size = compromis_types::ByteSize(0);
            }
            let (mut fast, mut shared) = (Native::new(&cfg), Native::new(&cfg));
            let (mut mem1, mut mem2) = (Mem::new(&cfg), Mem::new(&cfg));
            let (mut s1, mut s2) = (Stats::default(), Stats::default());
            // Pages in a few places: near one another (shared upper tables) and far apart.
            let spread = |a: u64| 0x10_0000_0000u64 + (a % 4) * (1 << 39) + (a >> 22) * 4096 + (a & 0xfff);
            guest.map(Gva(0x10_0000_0000), 1 << 41).unwrap();
            for &f in &faults {
                let gva = Gva(spread(f));
                if guest.translate(gva).is_none() {
                    guest.fault(gva).unwrap();
                }
            }
            let ctx = Ctx { guest: &guest, backing: &backing };
            for (a, asid, flush, plan) in walks {
                // Mostly pages the guest mapped (a walk of an unmapped page stops early).
                let a = match faults.len() {
                    0 => a,
                    n if a % 4 != 0 => faults[usize::try_from(a / 4).unwrap_or(0) % n],
                    _ => a,
                };
                let gva = Gva(spread(a));
                // A plan of this page (as the far hint makes), or of another page.
                let planned = match plan {
                    1 => Some(gva),
                    2 => Some(Gva(gva.raw() ^ 0x3000)),
                    _ => None,
                };
                if let Some(p) = planned {
                    fast.plans.put_guest(p, guest.table().plan_walk(p.raw()));
                }
                let r1 = fast.walk(ctx, gva, asid, &mut mem1, &mut s1);
                let r2 = shared.shared_walk(ctx, gva, asid, &mut mem2, &mut s2);
                prop_assert_eq!(r1, r2);
                prop_assert_eq!(&s1, &s2);
                prop_assert_eq!(format!("{:?}", fast.pwc), format!("{:?}", shared.pwc));
                if flush {
                    fast.flush();
                    shared.flush();
                }
            }
        }
    }
}
