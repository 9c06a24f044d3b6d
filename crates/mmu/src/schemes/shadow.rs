//! Shadow paging, the timing side: the hardware walks only the hypervisor's gVA -> hPA shadow
//! table (`n` references per miss, where the shadow leaf is the smaller of the guest page and the
//! host mapping), and every trap the shadow's maintenance takes is charged as a VM exit: guest
//! page-table writes, CR3 loads, INVLPG, reflected and hidden page faults. (Adams & Agesen,
//! ASPLOS 2006; Bhargava et al., ASPLOS 2008; KVM `arch/x86/kvm/mmu/paging_tmpl.h`.)
//!
//! The shadow tables and their sync logic are functional state (`compromis_vmem::shadow`); this
//! walker only charges for what they report. The sync mode (`exits.shadow_sync`: out of sync, the
//! default, as KVM and Xen do; or eager) is the machine model's.

use super::{guest_pwc, read_entries};
use crate::config::MachineConfig;
use crate::mem::{Mem, Shortcut};
use crate::scheme::{Ctx, Prefetch, WalkResult, Walker};
use crate::stats::{ExitCause, Stats};
use crate::tlb::WalkCaches;
use compromis_types::{Address, Gva, Hpa, PageSize};
use compromis_vmem::{Fault, ShadowSync, ShadowTables, Unmapped, Writes};

/// Shadow-paging walker.
pub struct Shadow {
    pwc: WalkCaches,
    shadow: ShadowTables,
}

impl Shadow {
    /// From a configuration, with no shadow table yet.
    pub fn new(cfg: &MachineConfig) -> Shadow {
        Shadow {
            pwc: guest_pwc(cfg),
            shadow: ShadowTables::with_mode(cfg.exits.shadow_sync),
        }
    }
}

/// Charges the traps of `sync` as VM exits.
fn charge(sync: &ShadowSync, stats: &mut Stats) {
    let t = &sync.traps;
    stats
        .exits
        .add(ExitCause::PageFault, t.reflected_fault + t.hidden_fault);
    stats.exits.add(ExitCause::PtWrite, t.pt_write);
    stats.exits.add(ExitCause::Cr3Load, t.cr3_load);
    stats.exits.add(ExitCause::Invlpg, t.invlpg);
    stats.exits.add(ExitCause::Unsync, t.unsync);
    stats.resynced += sync.resynced;
}

impl Walker for Shadow {
    fn walk(
        &mut self,
        ctx: Ctx<'_>,
        gva: Gva,
        asid: u16,
        mem: &mut Mem,
        stats: &mut Stats,
    ) -> Option<WalkResult> {
        // The last two entries of the walk and its leaf, from one descent of the shadow table:
        // the page-walk caches nearly always leave no more to read.
        let ((above, last, leaf), sync) = self.shadow.walk(ctx.guest, ctx.backing, gva);
        charge(&sync, stats);
        let leaf = leaf?;
        // The shadow table has the guest table's levels; a walk reads one entry per level from
        // the root down to the leaf's.
        let levels = ctx.guest.table().levels();
        let len = levels - leaf.level + 1;
        let skipped = self.pwc.skip(gva.raw(), asid, levels, leaf.level);
        if skipped > 0 {
            stats.pwc_hits += 1;
            mem.shortcut(Shortcut::Pwc, stats);
        }
        let shadow = &self.shadow;
        read_entries(
            len,
            skipped,
            above,
            last,
            || {
                let table = shadow.table(ctx.guest.current_pid());
                table.map(|t| t.walk(gva.raw())).unwrap_or_default()
            },
            |e| mem.walk_ref(Hpa(e), stats),
        );
        stats.record_walk(u64::from(len - skipped), 0);
        let size = PageSize::from_leaf_level(leaf.level).unwrap_or(PageSize::Size4K);
        Some(WalkResult {
            frame: Hpa(leaf.target),
            size,
        })
    }

    fn prefetch(&self, ctx: Ctx<'_>, gva: Gva, stage: Prefetch) {
        if stage == Prefetch::Far
            && let Some(t) = self.shadow.table(ctx.guest.current_pid())
        {
            t.prefetch_leaf(gva.raw());
        }
    }
    fn far_hints(&self, _ctx: Ctx<'_>) -> bool {
        // The shadow table's leaf (the guest table's size says nothing of it); nothing at Mid.
        true
    }

    fn leaf_entries(&self, ctx: Ctx<'_>, gva: Gva) -> [Option<Hpa>; 2] {
        let t = self.shadow.table(ctx.guest.current_pid());
        [
            t.and_then(|t| t.walk(gva.raw()).last_entry()).map(Hpa),
            None,
        ]
    }

    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa> {
        self.shadow.lookup(ctx.guest.current_pid(), gva)
    }

    fn near(&self, ctx: Ctx<'_>, gva: Gva, leaves: bool) -> (Option<Hpa>, [Option<Hpa>; 2]) {
        // `probe` and `leaf_entries` from one walk of the shadow table.
        let Some(t) = self.shadow.table(ctx.guest.current_pid()) else {
            return (None, [None; 2]);
        };
        if !leaves {
            return (
                t.lookup(gva.raw()).map(|l| Hpa(l.translate(gva.raw()))),
                [None; 2],
            );
        }
        let (entry, leaf) = t.last_entry(gva.raw());
        (
            leaf.map(|l| Hpa(l.translate(gva.raw()))),
            [Some(Hpa(entry)), None],
        )
    }

    fn on_fault(&mut self, ctx: Ctx<'_>, fault: &Fault, stats: &mut Stats) {
        let sync = self.shadow.guest_fault(ctx.guest, ctx.backing, fault);
        charge(&sync, stats);
    }

    fn on_unmap(
        &mut self,
        ctx: Ctx<'_>,
        pages: &[Unmapped],
        writes: Writes,
        flushed: bool,
        stats: &mut Stats,
    ) {
        let sync = self.shadow.unmap(ctx.guest, pages, writes, flushed);
        charge(&sync, stats);
    }

    fn on_cr3_load(&mut self, ctx: Ctx<'_>, stats: &mut Stats) {
        let sync = self.shadow.cr3_load(ctx.guest.current_pid());
        charge(&sync, stats);
    }

    fn flush(&mut self) {
        self.pwc.flush();
    }
}
