//! Simulated accesses per second, per scheme, single-threaded: `gups` over a 4 GiB footprint with
//! 4 KiB pages (nearly every access misses the TLBs and walks) and `stream` (mostly TLB hits),
//! with the full cycle model (data caches on) and, for gups, with the data caches off (TLBs and
//! walk caches only, the structures of a minimal translation model).
//!
//! Each scheme runs alone on one thread. The guest is warmed first by 7 M accesses (with gups,
//! all but ~0.1% of the 1 M pages get touched), so the measured batches are steady-state
//! translation, not page faults.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use compromis_mmu::config::CacheConfig;
use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::{HostState, VmSpec, build_vm, default_ram};
use compromis_sim::{SchemeRun, SimConfig};
use compromis_types::{ByteSize, Op, PageSize};
use compromis_vmem::GuestConfig;
use compromis_workload::{WorkloadKind, WorkloadSpec};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: u64 = 1 << 20;

fn bench_workload(c: &mut Criterion, kind: WorkloadKind, footprint: ByteSize, data_caches: bool) {
    let spec = WorkloadSpec {
        kind,
        footprint,
        accesses: 8 * BATCH,
        ..WorkloadSpec::default()
    };
    let mapped = compromis_workload::mapped_bytes(&spec);
    let vm = VmSpec {
        ram: default_ram(mapped),
        host_page: PageSize::Size4K,
        host: HostState::Fresh,
    };
    let (backing, _) = build_vm(&vm).expect("vm");
    let mut machine = MachineConfig::default();
    if !data_caches {
        machine.cache = CacheConfig::dram_only(machine.cache.dram_latency);
    }
    let cfg = SimConfig {
        machine,
        guest: GuestConfig::default(),
        schemes: vec![],
        warmup: 0,
        verify: false,
        populate: false,
        baseline: false,
    };
    let ops: Vec<Op> = compromis_workload::build(&spec)
        .expect("workload")
        .collect();
    let (setup, steady) = ops.split_at(ops.len() - usize::try_from(BATCH).unwrap_or(0));
    let caches = if data_caches {
        "caches"
    } else {
        "no-data-caches"
    };
    let mut g = c.benchmark_group(format!("{}-{}-{caches}", kind.name(), footprint));
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(10);
    for scheme in SchemeKind::ALL {
        let mut run = SchemeRun::new(scheme, &cfg, &backing).expect("run");
        run.run(setup).expect("warm-up");
        g.bench_function(scheme.name(), |b| b.iter(|| run.run(steady).expect("run")));
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    // The full model: every data access and walk reference through L1D/L2/LLC.
    bench_workload(c, WorkloadKind::Gups, ByteSize::gib(4), true);
    bench_workload(c, WorkloadKind::Stream, ByteSize::gib(1), true);
    // TLBs, page-walk caches and nested TLB only (memory at a fixed latency): the structures a
    // minimal translation-only model has.
    bench_workload(c, WorkloadKind::Gups, ByteSize::gib(4), false);
}

criterion_group!(throughput, benches);
criterion_main!(throughput);
