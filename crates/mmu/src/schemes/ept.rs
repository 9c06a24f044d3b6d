//! Hardware nested paging (Intel EPT, AMD NPT): a two-dimensional walk. Every gPA met by the
//! guest walk (gCR3, each guest entry's table page, the data page) is translated by a walk of the
//! host table, giving `(n + 1)(m + 1) - 1` references without caches (Bhargava et al., ASPLOS
//! 2008, "Accelerating two-dimensional page walks for virtualized systems"; Intel SDM Vol. 3C,
//! 29.3 "The Extended Page Table Mechanism"). A nested TLB caches gPA -> hPA translations and
//! host page-walk caches skip upper EPT levels. Guest page-table updates and CR3 loads cause no
//! VM exit.

use super::{NestedWalker, Plans, guest_probe, guest_pwc, guest_walk};
use crate::config::MachineConfig;
use crate::mem::Mem;
use crate::scheme::{Ctx, Prefetch, WalkResult, Walker};
use crate::stats::Stats;
use crate::tlb::WalkCaches;
use compromis_types::{Address, Gpa, Gva, Hpa};

/// EPT walker.
pub struct Ept {
    pwc: WalkCaches,
    nested: NestedWalker,
    /// The walks the hints planned (speed only, see [`Plans`]).
    plans: Plans,
}

impl Ept {
    /// From a configuration.
    pub fn new(cfg: &MachineConfig) -> Ept {
        Ept {
            pwc: guest_pwc(cfg),
            nested: NestedWalker::new(cfg),
            plans: Plans::default(),
        }
    }
}

impl Walker for Ept {
    fn walk(
        &mut self,
        ctx: Ctx<'_>,
        gva: Gva,
        asid: u16,
        mem: &mut Mem,
        stats: &mut Stats,
    ) -> Option<WalkResult> {
        let planned = self.plans.guest(gva);
        let host = self.plans.host(gva);
        let plans = &self.plans;
        let nested = &mut self.nested;
        // The table page a page-walk cache gave: the guest leaf entry's, whose EPT walk the mid
        // hint planned.
        let locate = |g: Gpa| {
            plans
                .host_last(gva, 0, ctx.backing.ept(), g.raw())
                .1
                .map_or(Hpa(0), |l| Hpa(l.translate(g.raw())))
        };
        guest_walk(
            &mut self.pwc,
            ctx,
            gva,
            asid,
            mem,
            stats,
            |g, m, s| nested.translate_planned(ctx.backing, g, &host, m, s),
            locate,
            &planned,
        )
    }
    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa> {
        guest_probe(ctx, gva, |g| ctx.backing.translate(g))
    }
    fn prefetch(&self, ctx: Ctx<'_>, gva: Gva, stage: Prefetch) {
        match stage {
            // The guest walk, planned: its leaf entry prefetched.
            Prefetch::Far => self
                .plans
                .put_guest(gva, ctx.guest.table().plan_walk(gva.raw())),
            Prefetch::Mid => {
                // The EPT leaf entries of the data page and of the guest leaf entry's table page:
                // the walk's two nested translations (the upper guest levels are the page-walk
                // caches' and the nested TLB's), planned. One guest walk gives both gPAs.
                let ept = ctx.backing.ept();
                let (entry, leaf) = self.plans.guest_last(gva, ctx.guest.table());
                let host = [
                    ept.plan_walk(entry),
                    leaf.map(|l| ept.plan_walk(l.translate(gva.raw())))
                        .unwrap_or_default(),
                ];
                self.plans.put_host(gva, host);
            }
            Prefetch::Near => {}
        }
    }
    fn far_hints(&self, _ctx: Ctx<'_>) -> bool {
        true
    }
    fn mid_hints(&self) -> bool {
        true
    }
    fn leaf_entries(&self, ctx: Ctx<'_>, gva: Gva) -> [Option<Hpa>; 2] {
        // The guest leaf entry, and the EPT leaf entry of the data page.
        let guest = ctx.guest.table().walk(gva.raw());
        let at = |e: u64| ctx.backing.translate(compromis_types::Gpa(e));
        let data = guest.leaf.map(|l| l.translate(gva.raw()));
        [
            guest.last_entry().and_then(at),
            data.and_then(|g| ctx.backing.ept().walk(g).last_entry().map(Hpa)),
        ]
    }
    fn near(&self, ctx: Ctx<'_>, gva: Gva, leaves: bool) -> (Option<Hpa>, [Option<Hpa>; 2]) {
        // `probe` and `leaf_entries` from the guest walk and the EPT walks the far and mid
        // hints planned (else made here).
        let ept = ctx.backing.ept();
        let (entry, leaf) = self.plans.guest_last(gva, ctx.guest.table());
        if !leaves {
            let data = leaf.map(|l| l.translate(gva.raw()));
            let hpa = data.and_then(|d| {
                let l = self.plans.host_last(gva, 1, ept, d).1;
                l.map(|l| Hpa(l.translate(d)))
            });
            return (hpa, [None; 2]);
        }
        let pte = self
            .plans
            .host_last(gva, 0, ept, entry)
            .1
            .map(|l| Hpa(l.translate(entry)));
        let Some(leaf) = leaf else {
            return (None, [pte, None]);
        };
        let data = leaf.translate(gva.raw());
        let (ept_entry, ept_leaf) = self.plans.host_last(gva, 1, ept, data);
        (
            ept_leaf.map(|l| Hpa(l.translate(data))),
            [pte, Some(Hpa(ept_entry))],
        )
    }
    fn flush(&mut self) {
        // The nested TLB is tagged by VPID and not flushed by a guest CR3 load.
        self.pwc.flush();
    }
}
