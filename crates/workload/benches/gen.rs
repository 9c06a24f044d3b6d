//! Generation throughput (ops per second) of every workload, 1 GiB footprint, one process.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use compromis_types::ByteSize;
use compromis_workload::{WorkloadKind, WorkloadSpec, build};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const OPS: usize = 2_000_000;

fn generate(c: &mut Criterion) {
    let mut g = c.benchmark_group("generate");
    g.throughput(Throughput::Elements(OPS as u64));
    g.sample_size(10);
    for kind in WorkloadKind::ALL {
        let spec = WorkloadSpec {
            kind,
            footprint: ByteSize::gib(1),
            accesses: u64::MAX,
            ..WorkloadSpec::default()
        };
        // Build once outside the timing (the bfs graph is generated when the process first runs).
        let mut it = build(&spec).expect("valid spec");
        black_box(it.next());
        g.bench_with_input(BenchmarkId::from_parameter(kind.name()), &kind, |b, _| {
            b.iter(|| {
                let mut acc = 0u64;
                for op in it.by_ref().take(OPS) {
                    if let compromis_types::Op::Access { gva, .. } = op {
                        acc = acc.wrapping_add(gva.0);
                    }
                }
                black_box(acc)
            });
        });
    }
    g.finish();
}

/// Cost of building a stream and producing its first op (the bfs graph generation dominates).
fn startup(c: &mut Criterion) {
    let mut g = c.benchmark_group("startup");
    g.sample_size(10);
    for (kind, mib) in [
        (WorkloadKind::Gups, 1024),
        (WorkloadKind::Bfs, 64),
        (WorkloadKind::Bfs, 1024),
    ] {
        let spec = WorkloadSpec {
            kind,
            footprint: ByteSize::mib(mib),
            ..WorkloadSpec::default()
        };
        g.bench_function(format!("{}-{mib}MiB", kind.name()), |b| {
            b.iter(|| black_box(build(&spec).expect("valid spec").next()));
        });
    }
    g.finish();
}

criterion_group!(benches, generate, startup);
criterion_main!(benches);
