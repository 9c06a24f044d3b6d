//! Allocate/free throughput of the extent allocator with 10,000 live extents (issue 5 target:
//! 1 M operations per second or more). Each iteration is one allocation and one free (2 ops).

#![allow(missing_docs)] // reason: criterion_group! generates an undocumented public function

use compromis_hostmem::{Extent, ExtentAllocator, HostMemory, Policy};
use compromis_types::PageSize;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

const LIVE: usize = 10_000;

/// An allocator with `LIVE` live extents and about as many free extents between them.
fn aged() -> (ExtentAllocator, Vec<u64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut a = ExtentAllocator::new(1 << 40);
    let mut live: Vec<Extent> = Vec::new();
    for _ in 0..2 * LIVE {
        let len = rng.gen_range(1..=256u64) * 4096;
        live.push(
            a.alloc(len, PageSize::Size4K, Policy::FirstFit)
                .expect("room"),
        );
    }
    let mut kept = Vec::new();
    for (i, e) in live.into_iter().enumerate() {
        if i % 2 == 0 {
            a.free(e).expect("allocated");
        } else {
            kept.push(e);
        }
    }
    assert_eq!(kept.len(), LIVE);
    let sizes = (0..4096)
        .map(|_| rng.gen_range(1..=256u64) * 4096)
        .collect();
    (a, sizes)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free_10k_live");
    g.throughput(Throughput::Elements(2));
    for policy in Policy::ALL {
        let (mut a, sizes) = aged();
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(policy), |b| {
            b.iter(|| {
                let len = sizes[i % sizes.len()];
                i += 1;
                let e = a
                    .alloc(black_box(len), PageSize::Size4K, policy)
                    .expect("room");
                a.free(black_box(e)).expect("allocated");
            });
        });
    }
    g.finish();
}

/// Compaction planning on a 192 GiB host aged to 85% fill (the cluster engine's use), asking for
/// half of the free memory, and all of it, in one extent.
fn compaction(c: &mut Criterion) {
    let mut h = HostMemory::new(192 << 30, Policy::BestFit);
    h.age(3, 0.85);
    let free = h.free_bytes();
    let mut g = c.benchmark_group("plan_compaction_aged_192g");
    for (name, want) in [
        ("half_free", (free / 2) & !((2 << 20) - 1)),
        ("all_free", free & !((2 << 20) - 1)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| h.plan_compaction(black_box(want), PageSize::Size2M))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, compaction);
criterion_main!(benches);
