//! Simulated accesses per second, per scheme, single-threaded: `gups` over a 4 GiB footprint with
//! 4 KiB pages (nearly every access misses the TLBs and walks) and `stream` (mostly TLB hits),
//! with the full cycle model (data caches on) and, for gups, with the data caches off (TLBs and
//! walk caches only, the structures of a minimal translation model).
//!
//! `trace`: a ChampSim trace written at setup (not committed; seeded, 1.5 M instructions: a 16 KiB
//! code loop, loads 70% in a hot 1 MiB region and 30% over 256 MiB, a store every fourth
//! instruction), read back through the trace reader into ops, then run with the full cycle
//! model through every scheme and the perfect-TLB baseline.
//!
//! Each scheme runs alone on one thread. The workloads' regions are populated when mapped (as
//! `compromis sim` does by default: every page faulted in and zeroed before the first access),
//! then the guest is warmed by 7 M accesses, so the measured batches are steady-state
//! translation, not page faults. (Until 2026-11-29 the bench did not populate: 7 M accesses are
//! 2.3 M gups updates, which leave about 10% of the 1 M pages untouched, so 2.9% of the timed
//! accesses took a page fault; see docs/performance.md, 2n.) The trace is not populated (its
//! pages are faulted in on first touch, during the warm-up).

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use compromis_mmu::config::CacheConfig;
use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::{HostState, VmSpec, build_vm, default_ram};
use compromis_sim::{SchemeRun, SimConfig};
use compromis_trace::{ChampSimInstr, ChampSimWriter, ReadOptions, open_ops};
use compromis_types::Gva;
use compromis_types::{ByteSize, Op, PageSize};
use compromis_vmem::GuestConfig;
use compromis_workload::{WorkloadKind, WorkloadSpec};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

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
    let mut machine = MachineConfig::default();
    if !data_caches {
        machine.cache = CacheConfig::dram_only(machine.cache.dram_latency);
    }
    let ops: Vec<Op> = compromis_workload::build(&spec)
        .expect("workload")
        .collect();
    let caches = if data_caches {
        "caches"
    } else {
        "no-data-caches"
    };
    let group = format!("{}-{}-{caches}", kind.name(), footprint);
    bench_runs(c, &group, machine, &vm, &ops, false, true);
}

/// One criterion group: each scheme (and the perfect-TLB baseline if `baseline`) on a VM of `vm`
/// runs all of `ops` but the last [`BATCH`] once, then is timed on those last [`BATCH`] ops;
/// regions are populated when mapped if `populate` ([`SimConfig::populate`]).
fn bench_runs(
    c: &mut Criterion,
    group: &str,
    machine: MachineConfig,
    vm: &VmSpec,
    ops: &[Op],
    baseline: bool,
    populate: bool,
) {
    let (backing, _) = build_vm(vm).expect("vm");
    let cfg = SimConfig {
        machine,
        guest: GuestConfig::default(),
        schemes: vec![],
        warmup: 0,
        verify: false,
        populate,
        baseline: false,
    };
    let (setup, steady) = ops.split_at(ops.len() - usize::try_from(BATCH).unwrap_or(0));
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(10);
    let runs = SchemeKind::ALL
        .into_iter()
        .map(|k| (k.name(), SchemeRun::new(k, &cfg, &backing).expect("run")))
        .chain(baseline.then(|| {
            (
                "ideal",
                SchemeRun::baseline(&cfg, &backing).expect("baseline"),
            )
        }));
    for (name, mut run) in runs {
        // Warmed up on first use: a filtered-out bench (`cargo bench -- 'trace.*/ept'`) costs
        // nothing but building its run, so a profile of one bench shows that bench.
        let mut warm = false;
        g.bench_function(name, |b| {
            if !warm {
                run.run(setup).expect("warm-up");
                warm = true;
            }
            b.iter(|| run.run(steady).expect("run"));
        });
    }
    g.finish();
}

/// Writes the trace described in the module docs to `path`.
fn write_trace(path: &std::path::Path) -> std::io::Result<()> {
    const INSTRS: u64 = 1_500_000;
    const HOT: u64 = 0x10_0000_0000;
    const COLD: u64 = 0x20_0000_0000;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = ChampSimWriter::new(file);
    for i in 0..INSTRS {
        let mut instr = ChampSimInstr {
            ip: Gva(0x40_0000 + (i % 4096) * 4),
            ..ChampSimInstr::default()
        };
        let load = if rng.gen_bool(0.7) {
            HOT + rng.gen_range(0..1u64 << 17) * 8
        } else {
            COLD + rng.gen_range(0..1u64 << 25) * 8
        };
        instr.source_memory[0] = Gva(load);
        if i % 4 == 0 {
            instr.destination_memory[0] = Gva(HOT + rng.gen_range(0..1u64 << 17) * 8);
        }
        w.write_instr(&instr)?;
    }
    w.into_inner()?;
    Ok(())
}

fn bench_trace(c: &mut Criterion) {
    let path =
        std::env::temp_dir().join(format!("compromis-bench-{}.champsim", std::process::id()));
    write_trace(&path).expect("write the bench trace");
    let ops: Result<Vec<Op>, _> = open_ops(&path, &ReadOptions::default())
        .expect("open")
        .collect();
    let _ = std::fs::remove_file(&path);
    let ops = ops.expect("read the bench trace");
    let vm = VmSpec {
        ram: default_ram(256 << 20),
        host_page: PageSize::Size4K,
        host: HostState::Fresh,
    };
    bench_runs(
        c,
        "trace-champsim-caches",
        MachineConfig::default(),
        &vm,
        &ops,
        true,
        false,
    );
}

fn benches(c: &mut Criterion) {
    bench_trace(c);
    // The full model: every data access and walk reference through L1D/L2/LLC.
    bench_workload(c, WorkloadKind::Gups, ByteSize::gib(4), true);
    bench_workload(c, WorkloadKind::Stream, ByteSize::gib(1), true);
    // TLBs, page-walk caches and nested TLB only (memory at a fixed latency): the structures a
    // minimal translation-only model has.
    bench_workload(c, WorkloadKind::Gups, ByteSize::gib(4), false);
}

criterion_group!(throughput, benches);
criterion_main!(throughput);
