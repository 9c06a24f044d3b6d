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
                if let Some(gpa) = ctx.guest.translate(gva) {
                    ctx.backing.ept().prefetch_leaf(gpa.raw());
                }
            }
            Prefetch::Near => {}
        }
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
        let guest = ctx.guest.table().walk(gva.raw());
        let pte = guest
            .last_entry()
            .and_then(|e| ctx.backing.translate(compromis_types::Gpa(e)));
        let Some(leaf) = guest.leaf else {
            return (None, [pte, None]);
        };
        let data = leaf.translate(gva.raw());
        let ept = ctx.backing.ept().walk(data);
        (
            ept.leaf.map(|l| Hpa(l.translate(data))),
            [pte, ept.last_entry().map(Hpa)],
        )
    }
    fn flush(&mut self) {
        // The nested TLB is tagged by VPID and not flushed by a guest CR3 load.
        self.pwc.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_types::PageSize;
    use compromis_vmem::{
        Backing, FramePolicy, GuestConfig, GuestLayout, GuestOs, HV_PRIVATE_BASE, HvFrames,
    };
    use proptest::prelude::*;

    proptest! {
        /// The fused Near hint gives what `probe` and `leaf_entries` give (guest 4 KiB or 2 MiB
        /// pages, host 4 KiB, 2 MiB or 1 GiB pages, faulted and unmapped addresses).
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
            let cfg = GuestConfig {
                page: if guest_2m { PageSize::Size2M } else { PageSize::Size4K },
                frames: FramePolicy::Contiguous,
                ..GuestConfig::default()
            };
            let mut guest = GuestOs::new(cfg, layout).unwrap();
            let base = 0x7f00_0000_0000u64;
            guest.map(Gva(base), 64 << 20).unwrap();
            for f in faults {
                if guest.translate(Gva(base + f)).is_none() {
                    guest.fault(Gva(base + f)).unwrap();
                }
            }
            let ept = Ept::new(&MachineConfig::default());
            let ctx = Ctx { guest: &guest, backing: &backing };
            for a in asks {
                let gva = Gva(base + a);
                let want = (ept.probe(ctx, gva), ept.leaf_entries(ctx, gva));
                prop_assert_eq!(ept.near(ctx, gva, true), want);
                prop_assert_eq!(ept.near(ctx, gva, false), (want.0, [None; 2]));
            }
        }
    }
}
