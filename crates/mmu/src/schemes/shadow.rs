//! Shadow paging: the hypervisor keeps, per guest process, a shadow table mapping gVA -> hPA
//! directly, and the hardware walks only that table (`n` references per miss, where the shadow
//! leaf is the smaller of the guest page and the host mapping). To keep it in sync, guest
//! page-table pages are write-protected: every guest page-table write is a VM exit, and so are
//! guest CR3 loads (the hypervisor must switch shadow roots), INVLPG, and guest page faults
//! (intercepted, then reflected to the guest). (Adams & Agesen, ASPLOS 2006; Bhargava et al.,
//! ASPLOS 2008; KVM `arch/x86/kvm/mmu/paging_tmpl.h`.)
//!
//! Our model syncs eagerly on the faulting write (as KVM does when it emulates a write to a
//! shadowed page table) and lazily otherwise: a shadow miss on a page the guest maps (e.g. after
//! a huge page was split) is a hidden page fault, counted as a `page_fault` exit, that fills the
//! shadow entry.

use super::guest_pwc;
use crate::config::MachineConfig;
use crate::mem::{Mem, Shortcut};
use crate::scheme::{Ctx, Prefetch, WalkResult, Walker};
use crate::stats::{ExitCause, Stats};
use crate::tlb::WalkCaches;
use compromis_types::{Address, Gpa, Gva, Hpa, PageSize, Pid};
use compromis_vmem::{
    Backing, Fault, HV_PRIVATE_BASE, HvFrames, Leaf, RadixTable, Unmapped, Writes,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Shadow-paging walker.
pub struct Shadow {
    pwc: WalkCaches,
    tables: BTreeMap<Pid, RadixTable>,
    frames: HvFrames,
}

impl Shadow {
    /// From a configuration. Shadow table pages are hypervisor-private host frames placed after
    /// the EPT's (the backing's EPT is not used by this scheme's walks).
    pub fn new(cfg: &MachineConfig, _backing: &Arc<Backing>) -> Shadow {
        Shadow {
            pwc: guest_pwc(cfg),
            tables: BTreeMap::new(),
            frames: HvFrames::new(Hpa(HV_PRIVATE_BASE.raw() + (1 << 40))),
        }
    }

    fn table(&mut self, ctx: Ctx<'_>) -> &mut RadixTable {
        let pid = ctx.guest.current_pid();
        let levels = ctx.guest.table().levels();
        let frames = &mut self.frames;
        self.tables
            .entry(pid)
            .or_insert_with(|| RadixTable::new(levels, frames.alloc().raw()))
    }

    /// Installs shadow leaves for the guest leaf `leaf` at virtual page `page`.
    fn sync(&mut self, ctx: Ctx<'_>, page: Gva, leaf: Leaf) {
        let guest_size = PageSize::from_leaf_level(leaf.level).unwrap_or(PageSize::Size4K);
        self.table(ctx);
        let pid = ctx.guest.current_pid();
        let Some(table) = self.tables.get_mut(&pid) else {
            return;
        };
        let frames = &mut self.frames;
        let mut alloc = || frames.alloc().raw();
        let mut off = 0;
        while off < guest_size.bytes() {
            let gpa = Gpa(leaf.target + off);
            let (Some(hpa), Some(host)) = (ctx.backing.translate(gpa), ctx.backing.ept_page(gpa))
            else {
                return;
            };
            let size = guest_size.min(host);
            // An existing entry (from an earlier lazy fill) is already right.
            let _ = table.map(page.raw() + off, hpa.raw(), size.leaf_level(), &mut alloc);
            off += size.bytes();
        }
    }
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
        let mut path = self.table(ctx).walk(gva.raw());
        if path.leaf.is_none() {
            // Hidden fault: the guest maps the page but the shadow does not (yet).
            let g = ctx.guest.table().lookup(gva.raw())?;
            stats.exits.add(ExitCause::PageFault, 1);
            self.sync(ctx, Gva(gva.raw() & !(g.bytes() - 1)), g);
            path = self.table(ctx).walk(gva.raw());
        }
        let leaf = path.leaf?;
        let levels = ctx.guest.table().levels();
        let skipped = self.pwc.skip(gva.raw(), asid, levels, leaf.level);
        if skipped > 0 {
            stats.pwc_hits += 1;
            mem.shortcut(Shortcut::Pwc, stats);
        }
        for &entry in &path.entry_addrs[usize::from(skipped)..usize::from(path.len)] {
            mem.walk_ref(Hpa(entry), stats);
        }
        stats.record_walk(u64::from(path.len - skipped), 0);
        let size = PageSize::from_leaf_level(leaf.level).unwrap_or(PageSize::Size4K);
        Some(WalkResult {
            frame: Hpa(leaf.target),
            size,
        })
    }

    fn prefetch(&self, ctx: Ctx<'_>, gva: Gva, stage: Prefetch) {
        if stage == Prefetch::Far
            && let Some(t) = self.tables.get(&ctx.guest.current_pid())
        {
            t.prefetch_leaf(gva.raw());
        }
    }

    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa> {
        let t = self.tables.get(&ctx.guest.current_pid())?;
        t.lookup(gva.raw()).map(|l| Hpa(l.translate(gva.raw())))
    }

    fn on_fault(&mut self, ctx: Ctx<'_>, fault: &Fault, stats: &mut Stats) {
        stats.exits.add(ExitCause::PageFault, 1);
        stats
            .exits
            .add(ExitCause::PtWrite, u64::from(fault.writes.entries));
        self.sync(ctx, fault.page, fault.leaf);
    }

    fn on_unmap(
        &mut self,
        ctx: Ctx<'_>,
        pages: &[Unmapped],
        writes: Writes,
        flushed: bool,
        stats: &mut Stats,
    ) {
        stats
            .exits
            .add(ExitCause::PtWrite, u64::from(writes.entries));
        if flushed {
            stats.exits.add(ExitCause::Cr3Load, 1);
        } else {
            stats.exits.add(ExitCause::Invlpg, pages.len() as u64);
        }
        let table = self.table(ctx);
        for p in pages {
            let end = p.page.raw() + p.leaf.bytes();
            let mut va = p.page.raw();
            while va < end {
                va = match table.unmap(va) {
                    Some(l) => (va & !(l.bytes() - 1)) + l.bytes(),
                    None => va + 4096,
                };
            }
        }
    }

    fn on_cr3_load(&mut self, _ctx: Ctx<'_>, stats: &mut Stats) {
        stats.exits.add(ExitCause::Cr3Load, 1);
    }

    fn flush(&mut self) {
        self.pwc.flush();
    }
}
