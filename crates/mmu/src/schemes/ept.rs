//! Hardware nested paging (Intel EPT, AMD NPT): a two-dimensional walk. Every gPA met by the
//! guest walk (gCR3, each guest entry's table page, the data page) is translated by a walk of the
//! host table, giving `(n + 1)(m + 1) - 1` references without caches (Bhargava et al., ASPLOS
//! 2008, "Accelerating two-dimensional page walks for virtualized systems"; Intel SDM Vol. 3C,
//! 29.3 "The Extended Page Table Mechanism"). A nested TLB caches gPA -> hPA translations and
//! host page-walk caches skip upper EPT levels. Guest page-table updates and CR3 loads cause no
//! VM exit.

use super::{NestedWalker, guest_probe, guest_pwc, guest_walk};
use crate::config::MachineConfig;
use crate::mem::Mem;
use crate::scheme::{Ctx, Prefetch, WalkResult, Walker};
use crate::stats::Stats;
use crate::tlb::WalkCaches;
use compromis_types::{Address, Gva, Hpa};

/// EPT walker.
pub struct Ept {
    pwc: WalkCaches,
    nested: NestedWalker,
}

impl Ept {
    /// From a configuration.
    pub fn new(cfg: &MachineConfig) -> Ept {
        Ept {
            pwc: guest_pwc(cfg),
            nested: NestedWalker::new(cfg),
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
        let nested = &mut self.nested;
        let locate = |g| ctx.backing.translate(g).unwrap_or(Hpa(0));
        guest_walk(
            &mut self.pwc,
            ctx,
            gva,
            asid,
            mem,
            stats,
            |g, m, s| nested.translate(ctx.backing, g, m, s),
            locate,
        )
    }
    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa> {
        guest_probe(ctx, gva, |g| ctx.backing.translate(g))
    }
    fn prefetch(&self, ctx: Ctx<'_>, gva: Gva, stage: Prefetch) {
        match stage {
            Prefetch::Far => ctx.guest.table().prefetch_leaf(gva.raw()),
            Prefetch::Mid => {
                // The EPT leaf entries of the data page and of the guest leaf entry's table page:
                // the walk's two nested translations (the upper guest levels are the page-walk
                // caches' and the nested TLB's). One guest walk gives both gPAs.
                let (entry, leaf) = ctx.guest.table().last_entry(gva.raw());
                let ept = ctx.backing.ept();
                ept.prefetch_leaf(entry);
                if let Some(leaf) = leaf {
                    ept.prefetch_leaf(leaf.translate(gva.raw()));
                }
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
        // `probe` and `leaf_entries` from one guest walk and one EPT walk of the data page
        // (three table walks instead of five).
        if !leaves {
            return (self.probe(ctx, gva), [None; 2]);
        }
        let (entry, leaf) = ctx.guest.table().last_entry(gva.raw());
        let pte = ctx.backing.translate(compromis_types::Gpa(entry));
        let Some(leaf) = leaf else {
            return (None, [pte, None]);
        };
        let data = leaf.translate(gva.raw());
        let (ept_entry, ept_leaf) = ctx.backing.ept().last_entry(data);
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
