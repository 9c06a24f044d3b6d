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
use compromis_vmem::Backing;

/// The host address of the RAM gPA `g`: its segment's translation, else the EPT's. On RAM the
/// two agree ([`compromis_vmem::Backing::new`] refuses a segment that disagrees with the runs the
/// EPT is built from); the segment answers with a compare and an add where the EPT costs a walk
/// of the simulator's radix table (a host-cache miss for a random page of a large VM). Only the
/// simulator's own look-ups use this: the walk's cost still comes from its `xlat`.
#[inline]
fn host_of(backing: &Backing, g: Gpa) -> Option<Hpa> {
    backing.segment(g).or_else(|| backing.translate(g))
}

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
        let locate = |g| host_of(ctx.backing, g).unwrap_or(Hpa(0));
        let unplanned = compromis_vmem::PlannedWalk::default();
        guest_walk(
            &mut self.pwc,
            ctx,
            gva,
            asid,
            mem,
            stats,
            xlat,
            locate,
            &unplanned,
        )
    }
    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa> {
        guest_probe(ctx, gva, |g| host_of(ctx.backing, g))
    }
    fn near(&self, ctx: Ctx<'_>, gva: Gva, leaves: bool) -> (Option<Hpa>, [Option<Hpa>; 2]) {
        // `probe` and the (default) `leaf_entries` from one walk of the guest table.
        if !leaves {
            return (self.probe(ctx, gva), [None; 2]);
        }
        let (entry, leaf) = ctx.guest.table().last_entry(gva.raw());
        let pte = host_of(ctx.backing, Gpa(entry));
        let data = leaf.and_then(|l| host_of(ctx.backing, Gpa(l.translate(gva.raw()))));
        (data, [pte, None])
    }
    fn flush(&mut self) {
        self.pwc.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_vmem::{GuestLayout, HV_PRIVATE_BASE, HvFrames, Run, Segment};
    use proptest::prelude::*;

    /// A backing of `ram` bytes whose RAM ranges are cut into runs at the 2 MiB boundaries that
    /// `cuts` picks (each taken modulo the range's 2 MiB units), placed in the host in reverse order with a gap after each, and a
    /// segment register set inside every run whose bit in `segs` is set (starting `skip` pages in).
    fn backing(ram: u64, cuts: &[u16], segs: u32, skip: u64, host_page: PageSize) -> Backing {
        let layout = GuestLayout::for_ram(ram);
        let mut runs = Vec::new();
        for r in &layout.ram {
            let units = r.len >> 21;
            let mut at: Vec<u64> = cuts.iter().map(|&c| u64::from(c) % units).collect();
            at.extend([0, units]);
            at.sort_unstable();
            at.dedup();
            for w in at.windows(2) {
                runs.push((r.start.raw() + (w[0] << 21), (w[1] - w[0]) << 21));
            }
        }
        let mut h = 1u64 << 40;
        let mut placed = Vec::new();
        let mut segments = Vec::new();
        for (i, &(gpa, len)) in runs.iter().rev().enumerate() {
            placed.push(Run {
                gpa: Gpa(gpa),
                hpa: Hpa(h),
                len,
            });
            let off = (skip << 12).min(len - 4096);
            if segs >> (i % 32) & 1 == 1 {
                segments.push(Segment {
                    base: Gpa(gpa + off),
                    limit: Gpa(gpa + len),
                    host_base: Hpa(h + off),
                });
            }
            h += len + (3 << 21);
        }
        let mut hv = HvFrames::new(HV_PRIVATE_BASE);
        Backing::new(layout, placed, segments, host_page, &mut hv).expect("a valid backing")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// `host_of` (segment first) answers what the EPT answers for every RAM gPA, on backings of
        /// one or two RAM ranges cut into runs, with segment register sets over some of them.
        #[test]
        fn host_of_is_the_ept_on_ram(
            ram in (1u64..40).prop_map(|u| u << 27),
            cuts in prop::collection::vec(any::<u16>(), 0..5),
            segs in any::<u32>(),
            skip in 0u64..600,
            big in any::<bool>(),
            gpas in prop::collection::vec(any::<u64>(), 1..200),
        ) {
            let host_page = if big { PageSize::Size2M } else { PageSize::Size4K };
            let b = backing(ram, &cuts, segs, skip, host_page);
            let layout = GuestLayout::for_ram(ram);
            for g in gpas {
                // A RAM address: `g` folded into one of the ranges.
                let r = &layout.ram[usize::try_from(g % 2).unwrap() % layout.ram.len()];
                let gpa = Gpa(r.start.raw() + (g >> 1) % r.len);
                prop_assert!(b.translate(gpa).is_some());
                prop_assert_eq!(host_of(&b, gpa), b.translate(gpa), "gPA {}", gpa);
            }
        }
    }
}
