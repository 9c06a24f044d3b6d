//! Every synthetic workload through every scheme, verified access by access against the
//! reference composition, over guest/host page-size combinations and multi-process mode.

use compromis_mmu::{MachineConfig, SchemeKind};
use compromis_sim::SimConfig;
use compromis_sim::{Experiment, HostState, VmSpec, default_ram, run_workload};
use compromis_types::{ByteSize, PageSize};
use compromis_vmem::{FramePolicy, GuestConfig};
use compromis_workload::{WorkloadKind, WorkloadSpec};
use proptest::prelude::*;

fn experiment(
    guest: PageSize,
    host: PageSize,
    frames: FramePolicy,
    ram: ByteSize,
    seed: u64,
) -> Experiment {
    Experiment {
        sim: SimConfig {
            machine: MachineConfig::default(),
            guest: GuestConfig {
                levels: 4,
                page: guest,
                frames,
                seed,
            },
            schemes: SchemeKind::ALL.to_vec(),
            warmup: 100,
            verify: true,
            populate: false,
            baseline: false,
        },
        vm: VmSpec {
            ram,
            host_page: host,
            host: HostState::Fresh,
        },
    }
}

fn spec(kind: WorkloadKind, processes: u16, seed: u64) -> WorkloadSpec {
    let footprint = ByteSize::mib(24).max(ByteSize(kind.min_footprint() * u64::from(processes)));
    WorkloadSpec {
        kind,
        footprint,
        accesses: 20_000,
        processes,
        quantum: 3_000,
        seed,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn workloads_translate_like_the_reference(
        k in 0usize..6,
        guest_2m in any::<bool>(),
        host in 0usize..3,
        scattered in any::<bool>(),
        procs in 1u16..4,
        seed in any::<u64>(),
    ) {
        let kind = WorkloadKind::ALL[k];
        let s = spec(kind, procs, seed);
        let guest = if guest_2m { PageSize::Size2M } else { PageSize::Size4K };
        let frames = if scattered { FramePolicy::Scattered } else { FramePolicy::Contiguous };
        let exp = experiment(guest, PageSize::ALL[host], frames, default_ram(compromis_workload::mapped_bytes(&s)), seed);
        let out = run_workload(&exp, &s, &|_| {});
        prop_assert!(out.is_ok(), "{kind:?}: {:?}", out.err());
        let out = out.unwrap();
        let n = out.schemes[0].result.measured.accesses;
        prop_assert_eq!(n + 100, 20_000);
        for o in &out.schemes {
            prop_assert_eq!(o.result.measured.accesses, n);
            prop_assert_eq!(o.result.warmup.accesses, 100);
        }
    }
}

/// Every workload, default pages: EPT walks are longer than native ones, Compromis walks as short
/// as native ones, and only shadow paging exits.
#[test]
fn scheme_ordering_on_every_workload() {
    for kind in WorkloadKind::ALL {
        let s = spec(kind, 2, 7);
        let exp = experiment(
            PageSize::Size4K,
            PageSize::Size4K,
            FramePolicy::Contiguous,
            default_ram(compromis_workload::mapped_bytes(&s)),
            7,
        );
        let out = run_workload(&exp, &s, &|_| {}).unwrap();
        let by = |k: SchemeKind| out.schemes.iter().find(|o| o.result.scheme == k).unwrap();
        let (native, ept, shadow, comp) = (
            by(SchemeKind::Native),
            by(SchemeKind::Ept),
            by(SchemeKind::Shadow),
            by(SchemeKind::Compromis),
        );
        assert!(
            ept.derived.refs_per_walk > native.derived.refs_per_walk,
            "{kind:?}"
        );
        assert_eq!(comp.result.measured.walk_refs_host, 0, "{kind:?}");
        assert_eq!(
            comp.result.measured.walk_refs_guest, native.result.measured.walk_refs_guest,
            "{kind:?}"
        );
        assert!(shadow.result.measured.exits.total() > 0, "{kind:?}");
        assert_eq!(
            ept.result.measured.exits.total() + comp.result.measured.exits.total(),
            0,
            "{kind:?}"
        );
    }
}

#[test]
fn footprint_larger_than_vm_is_an_error() {
    let s = spec(WorkloadKind::Gups, 1, 1);
    let exp = experiment(
        PageSize::Size4K,
        PageSize::Size4K,
        FramePolicy::Contiguous,
        ByteSize::mib(16),
        1,
    );
    let err = run_workload(&exp, &s, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn deterministic_outcome() {
    let s = spec(WorkloadKind::KvZipf, 2, 5);
    let exp = experiment(
        PageSize::Size2M,
        PageSize::Size4K,
        FramePolicy::Scattered,
        default_ram(compromis_workload::mapped_bytes(&s)),
        5,
    );
    let a = serde_json_like(&run_workload(&exp, &s, &|_| {}).unwrap());
    let b = serde_json_like(&run_workload(&exp, &s, &|_| {}).unwrap());
    assert_eq!(a, b);
}

fn serde_json_like(o: &compromis_sim::Outcome) -> String {
    format!(
        "{:?}",
        o.schemes
            .iter()
            .map(|s| (&s.result.measured, &s.result.warmup))
            .collect::<Vec<_>>()
    )
}

/// On an aged host the memory manager cannot give one extent: with the EPT fallback, EPT gets
/// scattered frames and Compromis translates through its fallback path; with k segments,
/// Compromis needs no fallback. Every translation is still verified.
#[test]
fn aged_host_fallbacks() {
    use compromis_hostmem::Fallback as HostFallback;
    let s = WorkloadSpec {
        kind: WorkloadKind::Gups,
        footprint: ByteSize::mib(200),
        accesses: 30_000,
        processes: 1,
        quantum: 1,
        seed: 3,
    };
    for (fallback, want) in [
        (HostFallback::Ept, "ept"),
        (HostFallback::Segments(64), "multi-segment"),
    ] {
        let mut exp = experiment(
            PageSize::Size4K,
            PageSize::Size2M,
            FramePolicy::Contiguous,
            ByteSize::gib(1),
            3,
        );
        exp.vm.host = HostState::Aged {
            host: 8 << 30,
            fill: 0.85,
            seed: 11,
            fallback,
        };
        let out = run_workload(&exp, &s, &|_| {}).unwrap();
        assert_eq!(out.vm.provisioning.name(), want);
        assert!(out.vm.host_fragmentation > 0.0);
        let comp = out.scheme(SchemeKind::Compromis).unwrap();
        if fallback == HostFallback::Ept {
            assert_eq!(out.vm.segments, 0);
            assert!(comp.result.measured.fallback_translations > 0);
        } else {
            assert!(out.vm.host_extents > 1 && out.vm.segments > 1);
            assert_eq!(comp.result.measured.fallback_translations, 0);
        }
    }
}
