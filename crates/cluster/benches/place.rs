//! Events per second of the engine on the Azure V1 dev split (`../shared/data/azure-v1-rnn`),
//! skipped when the data is absent; the synthetic trace is always measured.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use compromis_cluster::trace::{AzureRnnReader, DurationRule};
use compromis_cluster::{
    Event, Fallback, Fleet, PolicyKind, SyntheticConfig, SyntheticTrace, simulate,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::PathBuf;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/azure-v1-rnn")
}

fn bench(c: &mut Criterion) {
    let fleet: Fleet = "2000x192GiB/48c".parse().expect("fleet");
    let mut g = c.benchmark_group("place");
    g.sample_size(10);
    let dir = data();
    if dir.is_dir() {
        let events: Vec<Event> = AzureRnnReader::open(&dir, DurationRule::Uniform, 1)
            .expect("open")
            .map(|e| e.expect("event"))
            .collect();
        g.throughput(Throughput::Elements(events.len() as u64));
        for p in [
            PolicyKind::FirstFit,
            PolicyKind::ContigFirstFit,
            PolicyKind::SegmentBestFit,
            PolicyKind::FragAware,
        ] {
            g.bench_function(format!("azure-v1-dev/{p}"), |b| {
                b.iter(|| {
                    simulate(
                        events.iter().copied().map(Ok),
                        &fleet,
                        &p,
                        &Fallback::Segments(8),
                        1,
                    )
                    .expect("sim")
                })
            });
        }
        g.bench_function("azure-v1-dev/read+contig-first-fit", |b| {
            b.iter(|| {
                simulate(
                    AzureRnnReader::open(&dir, DurationRule::Uniform, 1).expect("open"),
                    &fleet,
                    &PolicyKind::ContigFirstFit,
                    &Fallback::Segments(8),
                    1,
                )
                .expect("sim")
            })
        });
    } else {
        eprintln!(
            "note: {} absent, skipping the Azure benchmark",
            dir.display()
        );
    }
    let syn: Vec<Event> = SyntheticTrace::new(SyntheticConfig {
        vms: 100_000,
        ..SyntheticConfig::default()
    })
    .expect("gen")
    .map(|e| e.expect("event"))
    .collect();
    g.throughput(Throughput::Elements(syn.len() as u64));
    g.bench_function("synthetic-100k/contig-first-fit", |b| {
        b.iter(|| {
            simulate(
                syn.iter().copied().map(Ok),
                &fleet,
                &PolicyKind::ContigFirstFit,
                &Fallback::Segments(8),
                1,
            )
            .expect("sim")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
