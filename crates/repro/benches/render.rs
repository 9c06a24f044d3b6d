//! Rendering a full-size report (README, CSVs, SVGs, JSON) from results of the default run's shape.
#![allow(missing_docs)] // reason: criterion_group! generates an undocumented public function

use compromis_repro::{
    Claim, FragOutcome, FragRow, ProvisioningRow, Results, RunConfig, RunRow, SchemeFigures,
    WalkRefRow, readme, write_report,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn fig(scheme: &str, cycles: f64) -> SchemeFigures {
    SchemeFigures {
        scheme: scheme.into(),
        cycles,
        overhead: cycles / 1e6 - 1.0,
        refs_per_walk: 4.0,
        walk_latency: 40.0,
        walks: 1000,
        exits_pt_write: 10,
        exits_cr3_load: 1,
        exits: 11,
        exits_pki: 0.5,
        warmup_exits: 3,
        fallback_translations: 0,
    }
}

fn results() -> Results {
    let pages = ["4k", "2m"];
    let hosts = ["4k", "2m", "1g"];
    let mut walk_refs = Vec::new();
    let mut overheads = Vec::new();
    for s in ["native", "ept", "shadow", "compromis"] {
        for g in pages {
            for h in hosts {
                walk_refs.push(WalkRefRow {
                    scheme: s.into(),
                    guest: g.into(),
                    host: h.into(),
                    n: 4,
                    m: 4,
                    closed_form: 24,
                    walks_off: 5000,
                    refs_off: 120_000,
                    caches_off: 24.0,
                    agrees: true,
                    caches_on: Some(5.0),
                });
            }
        }
    }
    for w in ["gups", "stream", "pointer-chase", "kv-zipf", "bfs", "churn"] {
        for g in pages {
            for h in hosts {
                overheads.push(RunRow {
                    workload: w.into(),
                    processes: 1,
                    guest: g.into(),
                    host: h.into(),
                    ideal_cycles: 1e6,
                    schemes: vec![
                        fig("native", 2e6),
                        fig("ept", 3e6),
                        fig("shadow", 4e6),
                        fig("compromis", 2.1e6),
                    ],
                    speedup_vs_ept: 3.0 / 2.1,
                    speedup_vs_shadow: 4.0 / 2.1,
                });
            }
        }
    }
    let provisioning = (0..42)
        .map(|i| ProvisioningRow {
            trace: format!("trace{}", i / 7),
            fleet: "100x192GiB/128c".into(),
            policy: format!("policy{}", i % 7),
            contiguity_aware: i % 2 == 0,
            events: 1000,
            placed: 500,
            single_segment: 490 + i,
            share: (490 + i) as f64 / 500.0,
            rejected: 0,
        })
        .collect();
    let fragmentation = (0..20)
        .map(|i| FragRow {
            host_page: if i < 10 { "2m" } else { "1g" }.into(),
            fill: f64::from(i % 5) / 5.0,
            fallback: if i % 10 < 5 { "segments:8" } else { "ept" }.into(),
            outcome: Ok(FragOutcome {
                host_fragmentation: 0.5,
                provisioning: "ept".into(),
                host_extents: 3,
                segments: 0,
                ept_leaves: [0, 512, 1],
                fallback_translations: 10,
                ept_cycles: 2e9,
                compromis_cycles: 1.9e9,
                speedup_vs_ept: 2.0 / 1.9,
            }),
        })
        .collect();
    Results {
        config: RunConfig {
            machine: "skylake-sp".into(),
            quick: false,
            seed: 42,
            footprint: 4 << 30,
            accesses: 8_000_000,
            warmup: 4_000_000,
            mp_processes: 4,
            mp_quantum: 10_000,
            trace_event_limit: None,
            synthetic_vms: 20_000,
            frag_workload: "gups".into(),
            frag_host_pages: vec!["2m".into(), "1g".into()],
            frag_host_factor: 16,
        },
        walk_refs,
        overheads,
        multiprocess: Vec::new(),
        provisioning,
        traces_missing: Vec::new(),
        utilisation: Vec::new(),
        fragmentation,
        fair: vec![],
        anchors: vec![],
        claims: vec![Claim {
            paper: "p".into(),
            ours: "o".into(),
            explanation: "e".into(),
        }],
    }
}

fn bench(c: &mut Criterion) {
    let r = results();
    c.bench_function("readme", |b| b.iter(|| readme(std::hint::black_box(&r))));
    let dir = tempfile::tempdir().expect("temp dir");
    c.bench_function("write_report", |b| {
        b.iter(|| write_report(&r, dir.path()).expect("write"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
