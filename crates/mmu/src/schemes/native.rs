//! Native paging: no virtualization. The guest table is walked directly and guest-physical
//! addresses are taken as physical (reported as `Hpa` with the same value). This is the baseline
//! of every overhead: 4 references per TLB miss with 4 KiB pages and 4-level paging (Intel SDM
//! Vol. 3A, 4.5 "4-Level Paging and 5-Level Paging").

use super::{HostXlat, guest_probe, guest_pwc, guest_walk};
use crate::config::MachineConfig;
use crate::mem::Mem;
use crate::scheme::{Ctx, WalkResult, Walker};
use crate::stats::Stats;
use crate::tlb::WalkCaches;
use compromis_types::{Address, Gva, Hpa, PageSize};

/// Native walker.
pub struct Native {
    pwc: WalkCaches,
}

impl Native {
    /// From a configuration.
    pub fn new(cfg: &MachineConfig) -> Native {
        Native {
            pwc: guest_pwc(cfg),
        }
    }
}

impl Walker for Native {
    fn walk(
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
        )
    }
    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa> {
        guest_probe(ctx, gva, |g| Some(Hpa(g.raw())))
    }
    fn leaf_entries(&self, ctx: Ctx<'_>, gva: Gva) -> [Option<Hpa>; 2] {
        [
            ctx.guest.table().walk(gva.raw()).last_entry().map(Hpa),
            None,
        ]
    }
    fn near(&self, ctx: Ctx<'_>, gva: Gva, leaves: bool) -> (Option<Hpa>, [Option<Hpa>; 2]) {
        // `probe` and `leaf_entries` from one walk of the guest table that records no path (the
        // two calls walked it twice, once recording every entry).
        let (entry, leaf) = ctx.guest.table().last_entry(gva.raw());
        let data = leaf.map(|l| Hpa(l.translate(gva.raw())));
        (data, [leaves.then_some(Hpa(entry)), None])
    }
    fn flush(&mut self) {
        self.pwc.flush();
    }
}
