//! The cycle model: latency accounting on hand-built walks, properties that must hold on one
//! stream, and determinism of the totals (across runs and thread counts).

use compromis_mmu::config::{CacheConfig, CacheLevel};
use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::{SchemeResult, SimConfig, simulate};
use compromis_types::{Gva, Hpa, Op, PageSize};
use compromis_vmem::{Backing, GuestConfig, GuestLayout, HV_PRIVATE_BASE, HvFrames};
use proptest::prelude::*;
use std::convert::Infallible;
use std::sync::Arc;

fn backing(host_page: PageSize) -> Arc<Backing> {
    let mut hv = HvFrames::new(HV_PRIVATE_BASE);
    Arc::new(Backing::contiguous(
        GuestLayout::for_ram(256 << 20),
        Hpa(1 << 40),
        host_page,
        &mut hv,
    ))
}

fn run(machine: MachineConfig, ops: &[Op]) -> Vec<SchemeResult> {
    let cfg = SimConfig {
        machine,
        guest: GuestConfig::default(),
        schemes: SchemeKind::ALL.to_vec(),
        warmup: 0,
        verify: true,
        populate: false,
        baseline: false,
    };
    simulate(
        &cfg,
        &backing(PageSize::Size4K),
        ops.iter().copied().map(Ok::<_, Infallible>),
        &|_| {},
    )
    .unwrap()
    .schemes
}

/// No TLB, no walk cache, no data cache: every reference costs the DRAM latency, every segment
/// translation the segment latency. One access to a fresh page (its walk happens after the fault).
#[test]
fn hand_built_walk_latencies() {
    let mut m = MachineConfig::no_caches();
    m.cache = CacheConfig::dram_only(200);
    let (dram, seg, start) = (
        m.cache.dram_latency,
        m.latency.segment,
        m.latency.walk_start,
    );
    let base = 0x7000_0000_0000u64;
    let res = run(
        m,
        &[
            Op::Map {
                start: Gva(base),
                len: 1 << 20,
            },
            Op::load(base + 8),
        ],
    );
    for r in &res {
        let s = &r.measured;
        let want_walk = match r.scheme {
            SchemeKind::Native | SchemeKind::Shadow => 4 * dram,
            SchemeKind::Ept => 24 * dram,
            // 4 guest entries; gCR3, 3 table pages and the data page each by one segment add.
            SchemeKind::Compromis => 4 * dram + 5 * seg,
        } + start;
        assert_eq!(s.walk_cycles, want_walk, "{}", r.scheme);
        assert_eq!(s.data_cycles, dram, "{}", r.scheme);
        assert_eq!(
            s.walk_ref_levels,
            [0, 0, 0, s.walk_refs_guest + s.walk_refs_host]
        );
        // The host (EPT) share: 20 of EPT's 24 references (5 translations of 4), none elsewhere
        // (a segment add is not an EPT reference).
        let want_host = if r.scheme == SchemeKind::Ept { 20 } else { 0 };
        assert_eq!(s.walk_ref_levels_host, [0, 0, 0, want_host], "{}", r.scheme);
        assert_eq!(s.walk_cycles_host, want_host * dram, "{}", r.scheme);
    }
}

/// With the data caches on, a second walk through the same tables finds the entries in L1D.
#[test]
fn second_walk_hits_in_l1d() {
    let mut m = MachineConfig::no_caches();
    m.cache = CacheConfig {
        l1d: CacheLevel::new(compromis_types::ByteSize::kib(32), 8, 64, 4),
        ..CacheConfig::dram_only(200)
    };
    let (l1, start) = (m.cache.l1d.latency, m.latency.walk_start);
    let base = 0x7000_0000_0000u64;
    // Two accesses to one page: the first walk fills L1D with its entries, the second reads
    // them from L1D (no TLB: both walk). The data line is in L1D the second time too.
    let ops = [
        Op::Map {
            start: Gva(base),
            len: 1 << 20,
        },
        Op::load(base),
        Op::load(base + 8),
    ];
    let once = run(m.clone(), &ops[..2]);
    let twice = run(m, &ops);
    for (a, b) in once.iter().zip(&twice) {
        let refs = b.measured.walk_refs_guest + b.measured.walk_refs_host;
        assert_eq!(b.measured.walks, 2);
        let extra_walk = b.measured.walk_cycles - a.measured.walk_cycles;
        let segs = b.measured.segment_translations - a.measured.segment_translations;
        assert_eq!(extra_walk, refs / 2 * l1 + segs + start, "{}", b.scheme);
        assert_eq!(
            b.measured.data_cycles - a.measured.data_cycles,
            l1,
            "{}",
            b.scheme
        );
    }
}

fn total(r: &SchemeResult) -> u64 {
    r.measured.walk_cycles + r.measured.data_cycles
}

fn stream(pages: &[u16]) -> Vec<Op> {
    let base = 0x5555_0000_0000u64;
    let mut ops = vec![Op::Map {
        start: Gva(base),
        len: 64 << 20,
    }];
    ops.extend(
        pages
            .iter()
            .map(|&p| Op::load(base + (u64::from(p) << 12) + u64::from(p % 64) * 64)),
    );
    ops
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Removing the last data-cache levels (LLC; then L2 too; then all) never lowers the cycles
    /// of walks and data, for any scheme. (Removing a *middle* level can: the hierarchy is
    /// non-inclusive, see docs/machine-model.md.)
    #[test]
    fn removing_lower_cache_levels_never_lowers_cycles(pages in prop::collection::vec(0u16..16384, 1..600)) {
        let full = MachineConfig::default();
        let mut no_llc = full.clone();
        no_llc.cache.llc = CacheLevel::OFF;
        let mut l1_only = no_llc.clone();
        l1_only.cache.l2 = CacheLevel::OFF;
        let mut dram = full.clone();
        dram.cache = CacheConfig::dram_only(full.cache.dram_latency);
        let ops = stream(&pages);
        let runs: Vec<Vec<SchemeResult>> = [full, no_llc, l1_only, dram].into_iter().map(|m| run(m, &ops)).collect();
        for w in runs.windows(2) {
            for (a, b) in w[0].iter().zip(&w[1]) {
                prop_assert!(total(a) <= total(b), "{}: {} > {}", a.scheme, total(a), total(b));
            }
        }
    }

    /// Disabling a TLB level or the page-walk caches never gives fewer walks or fewer walk
    /// references, and with memory at a fixed latency never fewer cycles.
    #[test]
    fn disabling_tlb_levels_never_helps(pages in prop::collection::vec(0u16..4096, 1..600)) {
        let full = MachineConfig { cache: CacheConfig::dram_only(200), ..MachineConfig::default() };
        let mut no_stlb = full.clone();
        no_stlb.tlb.stlb = compromis_mmu::Geometry::OFF;
        let mut no_pwc = full.clone();
        no_pwc.walk_caches.pd = compromis_mmu::Geometry::OFF;
        no_pwc.walk_caches.pdpt = compromis_mmu::Geometry::OFF;
        no_pwc.walk_caches.pml4 = compromis_mmu::Geometry::OFF;
        let mut no_ntlb = full.clone();
        no_ntlb.walk_caches.nested_tlb = compromis_mmu::Geometry::OFF;
        let ops = stream(&pages);
        let base = run(full, &ops);
        for m in [no_stlb, no_pwc, no_ntlb] {
            for (a, b) in base.iter().zip(&run(m, &ops)) {
                let refs = |r: &SchemeResult| r.measured.walk_refs_guest + r.measured.walk_refs_host;
                prop_assert!(a.measured.walks <= b.measured.walks, "{}", a.scheme);
                prop_assert!(refs(a) <= refs(b), "{}", a.scheme);
                prop_assert!(total(a) <= total(b), "{}", a.scheme);
            }
        }
    }
}

/// The same stream gives the same cycles, whether the schemes run on one thread or several.
#[test]
fn cycle_totals_are_deterministic_across_thread_counts() {
    let pages: Vec<u16> = (0..20_000u32)
        .map(|i| u16::try_from(i * 7919 % 16384).unwrap())
        .collect();
    let ops = stream(&pages);
    let on = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                run(MachineConfig::default(), &ops)
                    .iter()
                    .map(|r| r.measured.clone())
                    .collect::<Vec<_>>()
            })
    };
    let one = on(1);
    assert_eq!(one, on(2));
    assert_eq!(one, on(4));
    assert!(one.iter().all(|s| s.walk_cycles > 0 && s.data_cycles > 0));
}
