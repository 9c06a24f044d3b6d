//! Translation correctness of every scheme: the closed-form reference counts with caches off, and
//! a differential property test against the reference composition (guest table, then the
//! hypervisor's mapping) on random op streams.

use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::{EngineError, SchemeResult, SimConfig, simulate};
use compromis_types::{Gpa, Gva, Hpa, Op, PageSize};
use compromis_vmem::{
    Backing, FramePolicy, GuestConfig, GuestLayout, HV_PRIVATE_BASE, HvFrames, Run, Segment,
};
use proptest::prelude::*;
use std::convert::Infallible;
use std::sync::Arc;

fn backing(ram: u64, host_page: PageSize) -> Arc<Backing> {
    let mut hv = HvFrames::new(HV_PRIVATE_BASE);
    Arc::new(Backing::contiguous(
        GuestLayout::for_ram(ram),
        Hpa(1 << 40),
        host_page,
        &mut hv,
    ))
}

fn run(cfg: &SimConfig, b: &Arc<Backing>, ops: Vec<Op>) -> Result<Vec<SchemeResult>, EngineError> {
    simulate(cfg, b, ops.into_iter().map(Ok::<_, Infallible>), &|_| {}).map(|r| r.schemes)
}

/// `(n + 1)(m + 1) - 1` for EPT and `n` for the others, with every TLB and cache off.
#[test]
fn closed_form_reference_counts() {
    let cases = [
        // (guest page, host page, n, m, EPT refs)
        (PageSize::Size4K, PageSize::Size4K, 4, 4, 24),
        (PageSize::Size4K, PageSize::Size2M, 4, 3, 19),
        (PageSize::Size4K, PageSize::Size1G, 4, 2, 14),
        (PageSize::Size2M, PageSize::Size2M, 3, 3, 15),
        (PageSize::Size2M, PageSize::Size4K, 3, 4, 19),
    ];
    for (gp, hp, n, m, ept) in cases {
        assert_eq!((n + 1) * (m + 1) - 1, ept);
        let cfg = SimConfig {
            machine: MachineConfig::no_caches(),
            guest: GuestConfig {
                page: gp,
                ..GuestConfig::default()
            },
            schemes: SchemeKind::ALL.to_vec(),
            warmup: 0,
            verify: true,
            populate: false,
            baseline: false,
        };
        let b = backing(1 << 30, hp);
        let base = 0x7f00_0000_0000u64;
        let mut ops = vec![Op::Map {
            start: Gva(base),
            len: 64 << 20,
        }];
        ops.extend((0..5000u64).map(|i| Op::load(base + (i * 0x9e37_79b9 % (64 << 20)))));
        let res = run(&cfg, &b, ops).unwrap();
        for r in &res {
            let s = &r.measured;
            // Shadow leaves are the smaller of the guest page and the host mapping.
            let shadow_n = gp.min(hp).walk_refs(4);
            let (guest, host) = match r.scheme {
                SchemeKind::Ept => (n, (n + 1) * m),
                SchemeKind::Shadow => (u64::from(shadow_n), 0),
                _ => (n, 0),
            };
            assert_eq!(s.walks, 5000, "{} {gp}/{hp}", r.scheme);
            assert_eq!(
                s.walk_refs_guest,
                guest * 5000,
                "{} {gp}/{hp}: guest refs",
                r.scheme
            );
            assert_eq!(
                s.walk_refs_host,
                host * 5000,
                "{} {gp}/{hp}: host refs",
                r.scheme
            );
            let bucket = usize::try_from(guest + host).unwrap();
            assert_eq!(s.walk_hist[bucket], 5000);
        }
    }
}

/// 5-level guest paging: 5 references natively, (5+1)(4+1)-1 = 29 under EPT with 4-level EPT.
#[test]
fn five_level_guest() {
    let cfg = SimConfig {
        machine: MachineConfig::no_caches(),
        guest: GuestConfig {
            levels: 5,
            ..GuestConfig::default()
        },
        schemes: SchemeKind::ALL.to_vec(),
        warmup: 0,
        verify: true,
        populate: false,
        baseline: false,
    };
    let b = backing(1 << 30, PageSize::Size4K);
    let ops = (0..100u64)
        .map(|i| Op::load(0x100_0000_0000_0000 + i * 4096))
        .collect();
    let res = run(&cfg, &b, ops).unwrap();
    let refs: Vec<f64> = res.iter().map(|r| r.measured.refs_per_walk()).collect();
    assert_eq!(refs, vec![5.0, 29.0, 5.0, 5.0]);
}

#[derive(Clone, Debug)]
enum Step {
    Access(u64, u8),
    Map(u64, u64),
    Unmap(u64, u64),
    Switch(u16),
}

fn step() -> impl Strategy<Value = Step> {
    // Addresses inside a 16 MiB window so that pages are reused, unmapped and remapped.
    prop_oneof![
        20 => (0u64..(16 << 20), 0u8..3).prop_map(|(a, k)| Step::Access(a, k)),
        2 => (0u64..8, 1u64..1024).prop_map(|(s, n)| Step::Map(s << 21, n << 12)),
        2 => (0u64..4096, 1u64..1024).prop_map(|(s, n)| Step::Unmap(s << 12, n << 12)),
        1 => (0u16..3).prop_map(Step::Switch),
    ]
}

fn to_ops(steps: &[Step]) -> Vec<Op> {
    let base = 0x5555_0000_0000u64;
    steps
        .iter()
        .map(|s| match *s {
            Step::Access(a, k) => {
                let gva = Gva(base + a);
                match k {
                    0 => Op::Access {
                        gva,
                        kind: compromis_types::AccessKind::Load,
                        instrs: 1,
                        dep: true,
                    },
                    1 => Op::Access {
                        gva,
                        kind: compromis_types::AccessKind::Store,
                        instrs: 1,
                        dep: false,
                    },
                    _ => Op::Access {
                        gva,
                        kind: compromis_types::AccessKind::Fetch,
                        instrs: 1,
                        dep: false,
                    },
                }
            }
            Step::Map(s, l) => Op::Map {
                start: Gva(base + s),
                len: l,
            },
            Step::Unmap(s, l) => Op::Unmap {
                start: Gva(base + s),
                len: l,
            },
            Step::Switch(p) => Op::Switch { pid: p },
        })
        .collect()
}

/// Tiny structures so that evictions, PWC skips and nested-TLB hits all happen.
fn tiny_caches() -> MachineConfig {
    let mut m = MachineConfig::default();
    let g = compromis_mmu::Geometry::new;
    m.tlb.l1d_4k = g(4, 2);
    m.tlb.l1d_2m = g(2, 2);
    m.tlb.l1i_4k = g(2, 1);
    m.tlb.stlb = g(8, 2);
    m.walk_caches.pd = g(2, 1);
    m.walk_caches.nested_tlb = g(4, 2);
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every scheme's translation of every access equals the reference composition, and its
    /// side-effect-free probe agrees (checked inside the engine with `verify`).
    #[test]
    fn every_scheme_matches_reference(
        steps in prop::collection::vec(step(), 1..400),
        guest_2m in any::<bool>(),
        host in 0usize..3,
        scattered in any::<bool>(),
        five in any::<bool>(),
        tagged in any::<bool>(),
        tiny in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut machine = if tiny { tiny_caches() } else { MachineConfig::default() };
        machine.tlb.tagged = tagged;
        let cfg = SimConfig {
            machine,
            guest: GuestConfig {
                levels: if five { 5 } else { 4 },
                page: if guest_2m { PageSize::Size2M } else { PageSize::Size4K },
                frames: if scattered { FramePolicy::Scattered } else { FramePolicy::Contiguous },
                seed,
            },
            schemes: SchemeKind::ALL.to_vec(),
            warmup: 0,
            verify: true,
            populate: false,
            baseline: false,
        };
        let b = backing(256 << 20, PageSize::ALL[host]);
        let res = run(&cfg, &b, to_ops(&steps));
        prop_assert!(res.is_ok(), "{:?}", res.err());
        // All schemes saw the same guest: same faults, same accesses.
        let res = res.unwrap();
        for r in &res[1..] {
            prop_assert_eq!(r.measured.accesses, res[0].measured.accesses);
            prop_assert_eq!(r.measured.page_faults, res[0].measured.page_faults);
        }
        // The host (EPT) share of the walk account: every host reference is in it and nothing
        // else than walk cycles; schemes without an EPT dimension have none.
        for r in &res {
            let m = &r.measured;
            prop_assert_eq!(m.walk_ref_levels_host.iter().sum::<u64>(), m.walk_refs_host);
            prop_assert!(m.walk_cycles_host <= m.walk_cycles);
            for (h, t) in m.walk_ref_levels_host.iter().zip(&m.walk_ref_levels) {
                prop_assert!(h <= t);
            }
            if matches!(r.scheme, SchemeKind::Native | SchemeKind::Shadow) {
                prop_assert_eq!(m.walk_cycles_host, 0);
            }
        }
    }
}

/// A VM whose RAM is only partly covered by segment registers: gPAs outside take the EPT
/// fallback, counted, and translations stay correct.
#[test]
fn compromis_fallback_outside_segments() {
    let layout = GuestLayout::for_ram(64 << 20);
    let runs = vec![
        Run {
            gpa: Gpa(0),
            hpa: Hpa(1 << 40),
            len: 32 << 20,
        },
        // The second half is scattered in two pieces, out of order.
        Run {
            gpa: Gpa(32 << 20),
            hpa: Hpa((1 << 40) + (200 << 20)),
            len: 16 << 20,
        },
        Run {
            gpa: Gpa(48 << 20),
            hpa: Hpa((1 << 40) + (100 << 20)),
            len: 16 << 20,
        },
    ];
    let segs = vec![Segment {
        base: Gpa(0),
        limit: Gpa(32 << 20),
        host_base: Hpa(1 << 40),
    }];
    let mut hv = HvFrames::new(HV_PRIVATE_BASE);
    let b = Arc::new(Backing::new(layout, runs, segs, PageSize::Size2M, &mut hv).unwrap());
    let cfg = SimConfig {
        machine: MachineConfig::default(),
        guest: GuestConfig {
            frames: FramePolicy::Scattered,
            seed: 3,
            ..GuestConfig::default()
        },
        schemes: vec![SchemeKind::Compromis, SchemeKind::Ept],
        warmup: 0,
        verify: true,
        populate: false,
        baseline: false,
    };
    let base = 0x7f00_0000_0000u64;
    let mut ops = vec![Op::Map {
        start: Gva(base),
        len: 48 << 20,
    }];
    ops.extend((0..20_000u64).map(|i| Op::store(base + (i * 0x9e37_79b9 % (48 << 20)))));
    let res = run(&cfg, &b, ops).unwrap();
    let c = &res[0].measured;
    assert!(c.fallback_translations > 0 && c.segment_translations > 0);
    assert_eq!(res[1].measured.fallback_translations, 0);
}

/// Shadow paging exits on guest page-table writes, CR3 loads and faults; EPT and Compromis never.
/// Eager sync here; both modes in closed form: `shadow_sync.rs`.
#[test]
fn exits_by_cause() {
    let mut machine = MachineConfig::default();
    machine.exits.shadow_sync = compromis_vmem::SyncMode::Eager;
    let cfg = SimConfig {
        machine,
        guest: GuestConfig::default(),
        schemes: SchemeKind::ALL.to_vec(),
        warmup: 0,
        verify: true,
        populate: false,
        baseline: false,
    };
    let b = backing(64 << 20, PageSize::Size4K);
    let base = 0x1000_0000u64;
    let ops = vec![
        Op::Map {
            start: Gva(base),
            len: 1 << 20,
        },
        Op::load(base),          // fault: 4 entries written (3 tables + leaf)
        Op::load(base + 0x1000), // fault: 1 entry
        Op::Switch { pid: 1 },
        Op::Switch { pid: 0 },
        Op::Unmap {
            start: Gva(base),
            len: 0x2000,
        }, // 2 entries cleared, 2 INVLPG
    ];
    let res = run(&cfg, &b, ops).unwrap();
    for r in &res {
        let e = r.measured.exits;
        if r.scheme == SchemeKind::Shadow {
            assert_eq!(
                (e.page_fault, e.pt_write, e.cr3_load, e.invlpg),
                (2, 7, 2, 2)
            );
        } else {
            assert_eq!(e.total(), 0, "{}", r.scheme);
        }
        assert_eq!(r.measured.page_faults, 2);
        assert_eq!(r.measured.context_switches, 2);
    }
}

/// Populated regions fault every page in at map time: the accesses that follow never fault, and
/// the population's faults are outside the measured phase even with no warm-up.
#[test]
fn populate_faults_in_at_map_time() {
    let base = 0x7f00_0000_0000u64;
    let mut ops = vec![Op::Map {
        start: Gva(base),
        len: 8 << 20,
    }];
    ops.extend((0..2000u64).map(|i| Op::load(base + i * 4096 % (8 << 20))));
    for guest_page in [PageSize::Size4K, PageSize::Size2M] {
        let cfg = SimConfig {
            machine: MachineConfig::default(),
            guest: GuestConfig {
                page: guest_page,
                ..GuestConfig::default()
            },
            schemes: SchemeKind::ALL.to_vec(),
            warmup: 0,
            verify: true,
            populate: true,
            baseline: false,
        };
        let res = run(&cfg, &backing(64 << 20, PageSize::Size4K), ops.clone()).unwrap();
        let pages = (8 << 20) / guest_page.bytes();
        for r in &res {
            assert_eq!(r.measured.page_faults, 0, "{}", r.scheme);
            assert_eq!(r.warmup.page_faults, pages, "{}", r.scheme);
            assert_eq!(r.measured.accesses, 2000);
        }
    }
}

/// The perfect-TLB baseline is an engine option: run (and verified like every scheme) only when
/// asked, returned beside the schemes; it walks nothing, exits never, and accesses the same data.
#[test]
fn baseline_runs_beside_the_schemes_only_when_asked() {
    let b = backing(64 << 20, PageSize::Size4K);
    let base = 0x1000_0000u64;
    let mut ops = vec![Op::Map {
        start: Gva(base),
        len: 4 << 20,
    }];
    ops.extend((0..2_000u64).map(|i| Op::load(base + (i * 4099 * 8) % (4 << 20))));
    let mut cfg = SimConfig {
        machine: MachineConfig::default(),
        guest: GuestConfig::default(),
        schemes: vec![SchemeKind::Shadow, SchemeKind::Ept],
        warmup: 0,
        verify: true,
        populate: false,
        baseline: false,
    };
    let go = |cfg: &SimConfig| {
        simulate(
            cfg,
            &b,
            ops.iter().copied().map(Ok::<_, Infallible>),
            &|_| {},
        )
        .unwrap()
    };
    let without = go(&cfg);
    assert!(without.baseline.is_none());
    cfg.baseline = true;
    let with = go(&cfg);
    let ideal = with.baseline.expect("baseline asked for");
    assert_eq!(ideal.scheme.name(), "ideal");
    assert_eq!(
        with.schemes.iter().map(|r| r.scheme).collect::<Vec<_>>(),
        cfg.schemes
    );
    for (a, b) in with.schemes.iter().zip(&without.schemes) {
        assert_eq!(a.measured, b.measured, "{}", a.scheme);
    }
    let (i, s) = (&ideal.measured, &with.schemes[0].measured);
    assert_eq!((i.walks, i.walk_cycles, i.exits.total()), (0, 0, 0));
    assert_eq!((i.accesses, i.page_faults), (s.accesses, s.page_faults));
}
