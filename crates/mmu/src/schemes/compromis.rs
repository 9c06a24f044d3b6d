//! Compromis (Teabe et al., VEE 2021, "(No)Compromis: Paging Virtualization Is Not a Fatality"):
//! the guest keeps ordinary paging; the hypervisor gives the VM contiguous host memory described by
//! segment registers (BASE, LIMIT, OFFSET per register set). A TLB miss walks the guest table
//! only, and every gPA it meets (gCR3, each guest entry's table page, the data page) is translated
//! by one compare and one add, with no memory reference: `n` references per walk.
//!
//! A gPA outside every register set (RAM the hypervisor could not give as a segment, see
//! `compromis-hostmem`) takes the fallback path: an EPT walk through the nested TLB, counted in
//! `fallback_translations`. No VM exit on guest page-table writes or CR3 loads.

use super::{HostXlat, NestedWalker, guest_probe, guest_pwc, guest_walk};
use crate::config::MachineConfig;
use crate::mem::{Mem, Shortcut};
use crate::scheme::{Ctx, WalkResult, Walker};
use crate::stats::Stats;
use crate::tlb::WalkCaches;
use compromis_types::{Address, Gpa, Gva, Hpa, PageSize};

/// Compromis walker.
pub struct Compromis {
    pwc: WalkCaches,
    fallback: NestedWalker,
}

impl Compromis {
    /// From a configuration.
    pub fn new(cfg: &MachineConfig) -> Compromis {
        Compromis {
            pwc: guest_pwc(cfg),
            fallback: NestedWalker::new(cfg),
        }
    }
}

impl Walker for Compromis {
    fn walk(
        &mut self,
        ctx: Ctx<'_>,
        gva: Gva,
        asid: u16,
        mem: &mut Mem,
        stats: &mut Stats,
    ) -> Option<WalkResult> {
        let fallback = &mut self.fallback;
        let xlat = |g, m: &mut Mem, s: &mut Stats| match ctx.backing.segment(g) {
            Some(hpa) => {
                s.segment_translations += 1;
                m.shortcut(Shortcut::Segment, s);
                // A segment is contiguous: it never splinters the guest's pages.
                HostXlat {
                    hpa,
                    refs: 0,
                    size: PageSize::Size1G,
                }
            }
            None => {
                s.fallback_translations += 1;
                fallback.translate(ctx.backing, g, m, s)
            }
        };
        let locate = |g| ctx.backing.translate(g).unwrap_or(Hpa(0));
        guest_walk(&mut self.pwc, ctx, gva, asid, mem, stats, xlat, locate)
    }
    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa> {
        guest_probe(ctx, gva, |g| {
            ctx.backing.segment(g).or_else(|| ctx.backing.translate(g))
        })
    }
    fn near(&self, ctx: Ctx<'_>, gva: Gva, leaves: bool) -> (Option<Hpa>, [Option<Hpa>; 2]) {
        // `probe` and the (default) `leaf_entries` from one walk of the guest table.
        if !leaves {
            return (self.probe(ctx, gva), [None; 2]);
        }
        let (entry, leaf) = ctx.guest.table().last_entry(gva.raw());
        let pte = ctx.backing.translate(Gpa(entry));
        let data = leaf.and_then(|l| {
            let g = Gpa(l.translate(gva.raw()));
            ctx.backing.segment(g).or_else(|| ctx.backing.translate(g))
        });
        (data, [pte, None])
    }
    fn flush(&mut self) {
        self.pwc.flush();
    }
}
