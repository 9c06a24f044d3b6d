//! Accesses per second of `DataCaches::access` (default Skylake-like hierarchy) on uniformly
//! random streams: over 64 MiB (mostly LLC misses) and over 512 KiB (mostly L2 hits).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use compromis_mmu::DataCaches;
use compromis_mmu::config::CacheConfig;
use compromis_types::Hpa;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// SplitMix64: a seeded, dependency-free generator (deterministic streams).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn stream(footprint: u64, n: usize, seed: u64) -> Vec<Hpa> {
    let mut s = seed;
    (0..n)
        .map(|_| Hpa((splitmix(&mut s) % footprint) & !7))
        .collect()
}

fn bench(c: &mut Criterion) {
    const N: usize = 1 << 20;
    let cfg = CacheConfig::default();
    let mut g = c.benchmark_group("data_caches");
    g.throughput(Throughput::Elements(N as u64));
    for (name, footprint) in [("random_64MiB", 64u64 << 20), ("random_512KiB", 512 << 10)] {
        let addrs = stream(footprint, N, 42);
        // Warm caches, cloned per batch so every iteration starts from the same state.
        let mut warm = DataCaches::new(&cfg);
        for &a in &addrs {
            warm.access(a);
        }
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || warm.clone(),
                |caches| {
                    let mut cycles = 0u64;
                    for &a in &addrs {
                        cycles += caches.access(black_box(a)).1;
                    }
                    black_box(cycles)
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
