//! Out-of-sync shadow fills and the guest's zeroing of populated pages (issue 11, item 1): a
//! populated run takes the hidden fault of each page at populate time (warm-up), an unpopulated
//! one takes it at the page's first touch, inside the run.

use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::{Experiment, HostState, Outcome, SimConfig, VmSpec, default_ram, run_workload};
use compromis_types::{Address, ByteSize, Op, PageSize};
use compromis_vmem::{FramePolicy, GuestConfig, SyncMode};
use compromis_workload::{WorkloadKind, WorkloadSpec};
use std::collections::BTreeSet;

fn gups() -> WorkloadSpec {
    WorkloadSpec {
        kind: WorkloadKind::Gups,
        footprint: ByteSize::mib(16),
        accesses: 30_000,
        processes: 4,
        quantum: 3_000,
        seed: 7,
    }
}

/// `spec` through every scheme, warm-up `warmup` accesses.
fn run(
    spec: &WorkloadSpec,
    guest: PageSize,
    host: PageSize,
    populate: bool,
    warmup: u64,
) -> Outcome {
    let exp = Experiment {
        sim: SimConfig {
            machine: MachineConfig::default(),
            guest: GuestConfig {
                levels: 4,
                page: guest,
                frames: FramePolicy::Contiguous,
                seed: 42,
            },
            schemes: SchemeKind::ALL.to_vec(),
            warmup,
            verify: true,
            populate,
            baseline: false,
        },
        vm: VmSpec {
            ram: default_ram(compromis_workload::mapped_bytes(spec)),
            host_page: host,
            host: HostState::Fresh,
        },
    };
    assert_eq!(exp.sim.machine.exits.shadow_sync, SyncMode::Oos);
    run_workload(&exp, spec, &|_| {}).unwrap()
}

/// Distinct (process, guest page) pairs the stream accesses, for guest pages of `page`.
fn touched(spec: &WorkloadSpec, page: PageSize) -> u64 {
    let mut pid = 0;
    let mut seen = BTreeSet::new();
    for op in compromis_workload::build(spec).unwrap() {
        match op {
            Op::Switch { pid: p } => pid = p,
            Op::Access { gva, .. } => {
                seen.insert((pid, gva.raw() / page.bytes()));
            }
            _ => {}
        }
    }
    seen.len() as u64
}

#[test]
fn a_populated_run_takes_no_hidden_fault_in_its_measured_phase() {
    let spec = gups();
    for (guest, host) in [
        (PageSize::Size4K, PageSize::Size2M),
        (PageSize::Size4K, PageSize::Size4K),
        (PageSize::Size2M, PageSize::Size4K),
    ] {
        // Process k maps (and populates) its region when it first runs, after k quanta: a
        // warm-up of one round of the processes holds every populate.
        let o = run(
            &spec,
            guest,
            host,
            true,
            spec.quantum * u64::from(spec.processes),
        );
        // Every page populated: with 4 KiB guest pages one fault per 4 KiB mapped; with 2 MiB
        // ones, regions too small for a huge page take 4 KiB pages.
        let pages = o.schemes[0].result.warmup.page_faults;
        if guest == PageSize::Size4K {
            assert_eq!(
                pages,
                compromis_workload::mapped_bytes(&spec) / guest.bytes()
            );
        }
        for s in &o.schemes {
            let (m, w) = (&s.result.measured, &s.result.warmup);
            assert_eq!(m.page_faults, 0, "{}", s.result.scheme);
            assert_eq!(w.page_faults, pages, "{}", s.result.scheme);
        }
        let sh = &o.scheme(SchemeKind::Shadow).unwrap().result;
        // Measured: no guest fault, so no reflected or hidden fault either.
        assert_eq!(sh.measured.exits.page_fault, 0, "{guest}/{host}");
        // Warm-up: each populated page's reflected fault and the hidden fault of its zeroing.
        assert_eq!(sh.warmup.exits.page_fault, 2 * pages, "{guest}/{host}");
        // The only exits left in the run are the context switches' CR3 loads.
        assert_eq!(
            sh.measured.exits.total(),
            sh.measured.exits.cr3_load,
            "{guest}/{host}"
        );
    }
}

#[test]
fn an_unpopulated_run_takes_one_hidden_fault_per_first_touched_page() {
    let spec = gups();
    for (guest, host) in [
        (PageSize::Size4K, PageSize::Size2M),
        (PageSize::Size4K, PageSize::Size4K),
    ] {
        let o = run(&spec, guest, host, false, 0);
        let n = touched(&spec, guest);
        let sh = &o.scheme(SchemeKind::Shadow).unwrap().result;
        assert!(n > 1000, "{n}");
        assert_eq!(sh.warmup.page_faults, 0);
        assert_eq!(sh.measured.page_faults, n, "{guest}/{host}");
        // One reflected and one hidden fault per first-touched page.
        assert_eq!(sh.measured.exits.page_fault, 2 * n, "{guest}/{host}");
    }
}
