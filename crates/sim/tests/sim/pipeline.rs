//! The engine's two drivers give the same results and the same errors: the pipeline (each scheme's
//! run on its own thread, the baseline on the reader's, chunks read ahead; taken outside a rayon
//! pool, as `compromis sim` runs) and the
//! chunk-by-chunk driver (taken inside a rayon pool, as `reproduce` runs), on streams of several
//! chunks with refused ops (a non-canonical address) and read errors at random places, with and
//! without skipping refused ops.

use super::fast_path::same;
use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::engine::{CHUNK, simulate_skipping};
use compromis_sim::{SimConfig, SimResults};
use compromis_types::{AccessKind, Gva, Hpa, Op, PageSize};
use compromis_vmem::{Backing, GuestConfig, GuestLayout, HV_PRIVATE_BASE, HvFrames};
use proptest::prelude::*;
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

/// `n` accesses (a cheap xorshift stream over 4 MiB), with refused ops at `bad` and a read
/// error in place of the op at `broken`.
fn stream(n: usize, bad: &[usize], broken: Option<usize>) -> Vec<Result<Op, std::io::Error>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if broken == Some(i) {
                return Err(std::io::Error::other(format!("broken at {i}")));
            }
            if bad.contains(&i) {
                return Ok(Op::load(0x8000_0000_0000_0000));
            }
            Ok(Op::Access {
                gva: Gva(0x5555_0000_0000 + (x % (4 << 20))),
                kind: [AccessKind::Load, AccessKind::Store, AccessKind::Fetch][i % 3],
                instrs: u32::from(i % 3 == 2),
                dep: i % 5 == 0,
            })
        })
        .collect()
}

type Outcome = Result<(SimResults, Vec<u64>), String>;

/// Simulates `ops`; `in_pool` runs the engine from a rayon worker (the chunk-by-chunk driver).
fn sim(
    cfg: &SimConfig,
    ops: Vec<Result<Op, std::io::Error>>,
    skip: bool,
    in_pool: bool,
) -> Outcome {
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |d: u64| seen.lock().unwrap().push(d);
    let go = || simulate_skipping(cfg, &backing(), ops, &progress, skip).map_err(|e| e.to_string());
    let r = if in_pool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(go)
    } else {
        go()
    };
    r.map(|s| (s, seen.into_inner().unwrap()))
}

fn config() -> SimConfig {
    SimConfig {
        machine: MachineConfig::default(),
        guest: GuestConfig {
            levels: 4,
            page: PageSize::Size4K,
            frames: compromis_vmem::FramePolicy::Contiguous,
            seed: 42,
        },
        schemes: vec![SchemeKind::Native, SchemeKind::Ept],
        warmup: 1000,
        verify: false,
        populate: false,
        baseline: true,
    }
}

#[test]
fn a_refused_op_before_a_read_error_is_the_error() {
    // The refused op is in the first chunk, the read error in the second: a driver that reads
    // ahead still reports the refused op, as the chunk-by-chunk driver does.
    for in_pool in [false, true] {
        let e = sim(
            &config(),
            stream(2 * CHUNK, &[100], Some(CHUNK + 5)),
            false,
            in_pool,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("op #100 of the stream"), "{e}");
        // In the same chunk of `CHUNK` ops, the read error comes first (the chunk never ran),
        // even where the pipeline's smaller chunks put them in two.
        let e = sim(
            &config(),
            stream(2 * CHUNK, &[100], Some(CHUNK - 5)),
            false,
            in_pool,
        )
        .err()
        .unwrap();
        assert!(e.contains("broken at"), "{e}");
        // In the same chunk, the read error comes first (the chunk never ran).
        let e = sim(
            &config(),
            stream(2 * CHUNK, &[CHUNK + 9], Some(CHUNK + 5)),
            false,
            in_pool,
        )
        .err()
        .unwrap();
        assert!(e.contains("broken at"), "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn pipeline_matches_chunk_by_chunk(
        chunks in 1usize..4,
        extra in 0usize..CHUNK,
        bad in prop::collection::vec(0usize..4 * CHUNK, 0..3),
        broken in prop::option::of(0usize..4 * CHUNK),
        skip in any::<bool>(),
    ) {
        let n = (chunks - 1) * CHUNK + extra + 1;
        let cfg = config();
        let piped = sim(&cfg, stream(n, &bad, broken), skip, false);
        let pooled = sim(&cfg, stream(n, &bad, broken), skip, true);
        match (piped, pooled) {
            (Ok((p, pp)), Ok((q, qp))) => {
                same(&p, &q)?;
                // Progress ends at the stream's length in both, and only grows.
                prop_assert_eq!(pp.last(), Some(&(n as u64)));
                prop_assert_eq!(qp.last(), Some(&(n as u64)));
                prop_assert!(pp.windows(2).all(|w| w[0] < w[1]), "{:?}", pp);
            }
            (Err(p), Err(q)) => prop_assert_eq!(p, q),
            (p, q) => prop_assert!(false, "pipeline {:?}, chunk by chunk {:?}", p.err(), q.err()),
        }
    }
}
