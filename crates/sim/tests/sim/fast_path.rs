//! The engine's batched access path (`Scheme::run_accesses`, taken when nothing is verified)
//! against its op-by-op path (`SchemeRun::step`, taken with `verify`): on random op streams with
//! faults, unmaps, context switches, populated maps, refused ops and any warm-up length, every
//! run's counters (warm-up and measured) and guest counters are the same.

use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::engine::simulate_skipping;
use compromis_sim::{SimConfig, SimResults};
use compromis_types::{AccessKind, Gva, Hpa, Op, PageSize};
use compromis_vmem::{Backing, GuestConfig, GuestLayout, HV_PRIVATE_BASE, HvFrames};
use proptest::prelude::*;
use std::convert::Infallible;
use std::sync::Arc;

fn backing() -> Arc<Backing> {
    let mut hv = HvFrames::new(HV_PRIVATE_BASE);
    Arc::new(Backing::contiguous(
        GuestLayout::for_ram(256 << 20),
        Hpa(1 << 40),
        PageSize::Size4K,
        &mut hv,
    ))
}

#[derive(Clone, Debug)]
enum Step {
    Access(u64, u8, u32),
    /// An access near the one before (the same page or its neighbours): runs of one page, and
    /// neighbouring pages of which one is mapped and the other not.
    Near(i64, u8),
    Map(u64, u64),
    Unmap(u64, u64),
    Switch(u16),
    /// An access the guest refuses (a non-canonical address).
    Bad,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        30 => (0u64..(8 << 20), 0u8..4, 0u32..5).prop_map(|(a, k, n)| Step::Access(a, k, n)),
        15 => (-6000i64..6000, 0u8..4).prop_map(|(d, k)| Step::Near(d, k)),
        2 => (0u64..4, 1u64..256).prop_map(|(s, n)| Step::Map(s << 21, n << 12)),
        2 => (0u64..2048, 1u64..64).prop_map(|(s, n)| Step::Unmap(s << 12, n << 12)),
        1 => (0u16..3).prop_map(Step::Switch),
        1 => Just(Step::Bad),
    ]
}

/// The ops of `steps`; refused ops only with `bad`.
fn to_ops(steps: &[Step], bad: bool) -> Vec<Op> {
    let base = 0x5555_0000_0000u64;
    let access = |a: u64, k: u8, instrs: u32| Op::Access {
        gva: Gva(base + a),
        kind: [AccessKind::Load, AccessKind::Store, AccessKind::Fetch][usize::from(k % 3)],
        instrs,
        dep: k == 3,
    };
    let mut last = 0u64;
    steps
        .iter()
        .filter(|s| bad || !matches!(s, Step::Bad))
        .map(|s| match *s {
            Step::Access(a, k, instrs) => {
                last = a;
                access(a, k, instrs)
            }
            Step::Near(d, k) => {
                last = last.saturating_add_signed(d).min((8 << 20) - 1);
                access(last, k, 1)
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
            Step::Bad => Op::load(0x8000_0000_0000_0000),
        })
        .collect()
}

fn sim(cfg: &SimConfig, ops: &[Op], skip: bool) -> Result<SimResults, String> {
    simulate_skipping(
        cfg,
        &backing(),
        ops.iter().copied().map(Ok::<_, Infallible>),
        &|_| {},
        skip,
    )
    .map_err(|e| e.to_string())
}

/// Two simulations gave the same results: every run's statistics and guest, and the baseline's
/// (also used by the pipeline tests).
pub(crate) fn same(a: &SimResults, b: &SimResults) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.skipped, b.skipped);
    prop_assert_eq!(a.schemes.len(), b.schemes.len());
    for (x, y) in a.schemes.iter().zip(&b.schemes) {
        prop_assert_eq!(x.scheme, y.scheme);
        prop_assert_eq!(&x.warmup, &y.warmup);
        prop_assert_eq!(&x.measured, &y.measured);
        prop_assert_eq!(x.guest, y.guest);
    }
    let (x, y) = (a.baseline.as_ref().unwrap(), b.baseline.as_ref().unwrap());
    prop_assert_eq!(&x.warmup, &y.warmup);
    prop_assert_eq!(&x.measured, &y.measured);
    prop_assert_eq!(x.guest, y.guest);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn batched_accesses_count_as_op_by_op(
        steps in prop::collection::vec(step(), 1..500),
        warmup in 0u64..600,
        populate in any::<bool>(),
        skip in any::<bool>(),
        tagged in any::<bool>(),
        bad in any::<bool>(),
        caches in 0u8..3,
        slots in prop::sample::select(vec![1u64, 2, 10]),
    ) {
        let mut machine = MachineConfig::default();
        machine.tlb.tagged = tagged;
        // The perfect TLB's batched path (`Mmu::run_perfect`) with and without data caches
        // (vs-c-model's configuration has none), on the serial and the overlapped timeline; and
        // an LLC whose tags are large enough for the near hint to be given (the default's are
        // not: `DataCaches::prefetches`).
        let dram = machine.cache.dram_latency;
        match caches {
            0 => machine.cache = compromis_mmu::config::CacheConfig::dram_only(dram),
            1 => {}
            _ => machine.cache.llc.size = compromis_types::ByteSize::mib(32),
        }
        machine.core.max_outstanding = slots;
        let cfg = SimConfig {
            machine,
            guest: GuestConfig {
                levels: 4,
                page: PageSize::Size4K,
                frames: compromis_vmem::FramePolicy::Contiguous,
                seed: 42,
            },
            schemes: SchemeKind::ALL.to_vec(),
            warmup,
            verify: false,
            populate,
            baseline: true,
        };
        let ops = to_ops(&steps, skip || bad);
        let fast = sim(&cfg, &ops, skip);
        let slow = sim(&SimConfig { verify: true, ..cfg.clone() }, &ops, skip);
        match (fast, slow) {
            (Ok(f), Ok(s)) => same(&f, &s)?,
            (Err(f), Err(s)) => prop_assert_eq!(f, s),
            (f, s) => prop_assert!(false, "fast {:?}, op by op {:?}", f.err(), s.err()),
        }
    }
}
