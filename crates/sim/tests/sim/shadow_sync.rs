//! Shadow-paging exits in closed form, eager and out of sync (issue 11, item 1): crafted streams
//! whose traps can be counted by hand.

use compromis_mmu::stats::Exits;
use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::{SimConfig, simulate};
use compromis_types::{Gva, Hpa, Op, PageSize};
use compromis_vmem::{Backing, GuestConfig, GuestLayout, HV_PRIVATE_BASE, HvFrames, SyncMode};
use std::convert::Infallible;
use std::sync::Arc;

const BASE: u64 = 0x7000_0000_0000;

/// Shadow's measured exits and resynced entries for `ops` under `mode` (4 KiB guest and host
/// pages, no populate, no warm-up).
fn shadow(mode: SyncMode, populate: bool, ops: &[Op]) -> (Exits, u64, u64) {
    let mut machine = MachineConfig::default();
    machine.exits.shadow_sync = mode;
    let cfg = SimConfig {
        machine,
        guest: GuestConfig::default(),
        schemes: vec![SchemeKind::Shadow],
        warmup: 0,
        verify: true,
        populate,
        baseline: false,
    };
    let mut hv = HvFrames::new(HV_PRIVATE_BASE);
    let b = Arc::new(Backing::contiguous(
        GuestLayout::for_ram(256 << 20),
        Hpa(1 << 40),
        PageSize::Size4K,
        &mut hv,
    ));
    let r = simulate(
        &cfg,
        &b,
        ops.iter().copied().map(Ok::<_, Infallible>),
        &|_| {},
    )
    .unwrap();
    let m = &r.schemes[0].measured;
    let w = &r.schemes[0].warmup;
    (m.exits, m.resynced, w.exits.total())
}

/// Map `n` pages of one fresh 2 MiB region, touch each, switch away and back, unmap them all.
fn map_touch_switch_unmap(n: u64) -> Vec<Op> {
    let mut ops = vec![Op::Map {
        start: Gva(BASE),
        len: n << 12,
    }];
    ops.extend((0..n).map(|i| Op::load(BASE + (i << 12))));
    ops.push(Op::Switch { pid: 1 });
    ops.push(Op::Switch { pid: 0 });
    ops.push(Op::Unmap {
        start: Gva(BASE),
        len: n << 12,
    });
    ops
}

fn exits(pt_write: u64, cr3_load: u64, page_fault: u64, invlpg: u64, unsync: u64) -> Exits {
    Exits {
        pt_write,
        cr3_load,
        page_fault,
        invlpg,
        unsync,
    }
}

#[test]
fn eager_traps_every_guest_page_table_write() {
    for n in [1u64, 2, 5, 33, 34, 100] {
        let flushed = u64::from(n > 33);
        let (e, resynced, _) = shadow(SyncMode::Eager, false, &map_touch_switch_unmap(n));
        // Faults: one reflected each; 3 new tables + n leaves written; unmap clears n leaves;
        // two switches, and a CR3 reload instead of INVLPGs past the flush ceiling (33 pages).
        let want = exits(3 + 2 * n, 2 + flushed, n, n * (1 - flushed), 0);
        assert_eq!((e, resynced), (want, 0), "n = {n}");
    }
}

#[test]
fn out_of_sync_takes_two_exits_per_demand_fault() {
    for n in [1u64, 2, 5, 33, 34, 100] {
        let flushed = u64::from(n > 33);
        let (e, resynced, _) = shadow(SyncMode::Oos, false, &map_touch_switch_unmap(n));
        // Faults: reflected + hidden each; only the 3 links to new tables trap; the leaf table
        // is unsynced by the second fault's write (it was shadowed at the first hidden fault),
        // and again by the unmap's first clear (the CR3 load of the switch back re-protected
        // it); every cleared entry is reconciled at its INVLPG or at the CR3 reload.
        let unsync = u64::from(n >= 2) + 1;
        let want = exits(3, 2 + flushed, 2 * n, n * (1 - flushed), unsync);
        assert_eq!((e, resynced), (want, n), "n = {n}");
        let per_fault = (e.page_fault + e.pt_write + e.unsync) as f64 / n as f64;
        if n >= 33 {
            assert!(per_fault < 2.2, "n = {n}: {per_fault} exits per fault");
        }
    }
}

/// Populated pages: the faults and the guest's zeroing stores are in the warm-up phase; out of
/// sync, each zeroing store is a hidden fault that fills (and reconciles) the page's shadow
/// entry, so the measured touches and the switches take no fault and reconcile nothing.
#[test]
fn populated_pages_are_filled_by_the_guests_zeroing_store() {
    let n = 8u64;
    let mut ops = vec![Op::Map {
        start: Gva(BASE),
        len: n << 12,
    }];
    ops.extend((0..n / 2).map(|i| Op::load(BASE + (i << 12))));
    ops.push(Op::Switch { pid: 1 });
    ops.push(Op::Switch { pid: 0 });
    let (e, resynced, warm) = shadow(SyncMode::Oos, true, &ops);
    // Warm-up (populate): n reflected faults and n hidden faults (the zeroing stores), 3 links,
    // one unsync at the second leaf write (none at the first: the new table was not shadowed).
    assert_eq!(warm, 2 * n + 3 + 1);
    // Measured: two CR3 loads; every entry was reconciled by its hidden fault.
    assert_eq!((e, resynced), (exits(0, 2, 0, 0, 0), 0));
    let (e, resynced, warm) = shadow(SyncMode::Eager, true, &ops);
    assert_eq!(warm, n + 3 + n);
    assert_eq!((e, resynced), (exits(0, 2, 0, 0, 0), 0));
}

/// Unpopulated, the same touches fault inside the run: out of sync, two exits per touched page,
/// and the switch back reconciles nothing (each entry was reconciled by its hidden fault).
#[test]
fn unpopulated_pages_are_filled_at_first_touch() {
    let n = 8u64;
    let mut ops = vec![Op::Map {
        start: Gva(BASE),
        len: n << 12,
    }];
    ops.extend((0..n / 2).map(|i| Op::load(BASE + (i << 12))));
    ops.push(Op::Switch { pid: 1 });
    ops.push(Op::Switch { pid: 0 });
    let (e, resynced, warm) = shadow(SyncMode::Oos, false, &ops);
    assert_eq!(warm, 0);
    assert_eq!((e, resynced), (exits(3, 2, n, 0, 1), 0));
}
