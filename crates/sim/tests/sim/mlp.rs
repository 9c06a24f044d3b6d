//! Memory-level parallelism and guest page faults in the cycle model (issue 11, items 3-5): the
//! serial model is the one-outstanding-access case, dependent chains are never faster, more
//! outstanding accesses never slow a run down, and a fault costs more the more it zeroes.

use compromis_mmu::{MachineConfig, SchemeKind, Stats};
use compromis_sim::{CycleAccount, SimConfig, SimResults, simulate};
use compromis_types::{Gva, Hpa, Op, PageSize};
use compromis_vmem::{Backing, GuestConfig, GuestLayout, HV_PRIVATE_BASE, HvFrames};
use proptest::prelude::*;
use std::convert::Infallible;
use std::sync::Arc;

const BASE: u64 = 0x5555_0000_0000;

fn sim(machine: MachineConfig, guest_page: PageSize, populate: bool, ops: &[Op]) -> SimResults {
    let cfg = SimConfig {
        machine,
        guest: GuestConfig {
            page: guest_page,
            ..GuestConfig::default()
        },
        schemes: SchemeKind::ALL.to_vec(),
        warmup: 0,
        verify: false,
        populate,
        baseline: true,
    };
    let mut hv = HvFrames::new(HV_PRIVATE_BASE);
    let b = Arc::new(Backing::contiguous(
        GuestLayout::for_ram(256 << 20),
        Hpa(1 << 40),
        PageSize::Size4K,
        &mut hv,
    ));
    simulate(
        &cfg,
        &b,
        ops.iter().copied().map(Ok::<_, Infallible>),
        &|_| {},
    )
    .unwrap()
}

fn every_run(r: &SimResults) -> Vec<&Stats> {
    r.schemes
        .iter()
        .map(|s| &s.measured)
        .chain(r.baseline.iter().map(|b| &b.measured))
        .collect()
}

/// Loads at the given page indices of a 64 MiB region (`dep`: each on the previous load).
fn loads(pages: &[u16], dep: bool) -> Vec<Op> {
    let mut ops = vec![Op::Map {
        start: Gva(BASE),
        len: 64 << 20,
    }];
    ops.extend(pages.iter().map(|&p| {
        let a = BASE + (u64::from(p) << 12) + u64::from(p % 64) * 64;
        if dep { Op::load_dep(a) } else { Op::load(a) }
    }));
    ops
}

fn with_slots(n: u64) -> MachineConfig {
    let mut m = MachineConfig::default();
    m.core.max_outstanding = n;
    m
}

fn mem(r: &SimResults) -> Vec<u64> {
    every_run(r).iter().map(|s| s.mem_cycles).collect()
}

#[test]
fn one_outstanding_access_is_the_serial_model() {
    let m = with_slots(1);
    let pages: Vec<u16> = (0..3000u32).map(|i| (i * 7919 % 16384) as u16).collect();
    let r = sim(m.clone(), PageSize::Size4K, true, &loads(&pages, false));
    for s in every_run(&r) {
        assert!(s.data_cycles > 0);
        assert_eq!(
            s.mem_cycles,
            s.stlb_hits * m.latency.stlb_hit + s.walk_cycles + s.data_cycles
        );
        let c = CycleAccount::of(s, s, &m);
        assert_eq!(c.overlap, 0.0);
    }
}

#[test]
fn independent_misses_overlap_and_chains_do_not() {
    let pages: Vec<u16> = (0..3000u32).map(|i| (i * 7919 % 16384) as u16).collect();
    let m = MachineConfig::default();
    let indep = sim(m.clone(), PageSize::Size4K, true, &loads(&pages, false));
    let chain = sim(m, PageSize::Size4K, true, &loads(&pages, true));
    for (i, c) in every_run(&indep).iter().zip(every_run(&chain)) {
        // Same latencies (same caches, same walks), different overlap.
        assert_eq!(
            (i.walk_cycles, i.data_cycles),
            (c.walk_cycles, c.data_cycles)
        );
        assert!(
            2 * i.mem_cycles < c.mem_cycles,
            "{} vs {}",
            i.mem_cycles,
            c.mem_cycles
        );
        // A chain of loads is the serial sum.
        assert_eq!(
            c.mem_cycles,
            c.stlb_hits * 8 + c.walk_cycles + c.data_cycles
        );
    }
}

/// A 2 MiB fault zeroes 512 times what a 4 KiB one does; faults are in the ideal run too, so they
/// are not translation overhead.
#[test]
fn fault_cost_grows_with_page_size_and_is_in_the_baseline() {
    let m = MachineConfig::default();
    let ops = [
        Op::Map {
            start: Gva(BASE),
            len: 4 << 20,
        },
        Op::load(BASE),
    ];
    let small = sim(m.clone(), PageSize::Size4K, false, &ops);
    let huge = sim(m.clone(), PageSize::Size2M, false, &ops);
    let cost = |r: &SimResults| {
        let s = &r.schemes[0].measured;
        let ideal = &r.baseline.as_ref().unwrap().measured;
        assert_eq!((s.page_faults, ideal.page_faults), (1, 1));
        let c = CycleAccount::of(s, ideal, &m);
        let i = CycleAccount::of(ideal, ideal, &m);
        assert_eq!(c.faults, i.faults);
        assert!(c.ideal >= i.faults);
        c.faults
    };
    let (a, b) = (cost(&small), cost(&huge));
    assert!(b > a, "2 MiB fault {b} <= 4 KiB fault {a}");
    let e = &m.exits;
    assert_eq!(a, (e.guest_page_fault + e.zero_4k) as f64);
    assert_eq!(b, (e.guest_page_fault + 512 * e.zero_4k) as f64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// On small random streams: more outstanding accesses never slow any run down, and a
    /// dependent chain is never faster than the same accesses independent.
    #[test]
    fn more_outstanding_never_slower_chains_never_faster(
        pages in prop::collection::vec(0u16..16384, 1..300),
        slots in 1u64..12,
    ) {
        let ops = loads(&pages, false);
        let few = mem(&sim(with_slots(slots), PageSize::Size4K, true, &ops));
        let more = mem(&sim(with_slots(slots + 1), PageSize::Size4K, true, &ops));
        for (a, b) in few.iter().zip(&more) {
            prop_assert!(b <= a, "{} outstanding: {}, {}: {}", slots, a, slots + 1, b);
        }
        let chain = mem(&sim(with_slots(slots), PageSize::Size4K, true, &loads(&pages, true)));
        for (a, c) in few.iter().zip(&chain) {
            prop_assert!(a <= c);
        }
    }
}
