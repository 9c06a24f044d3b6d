//! Test oracle: replays a stream, tracking each process's mapped ranges naively, and checks the
//! stream's contract.

use crate::layout::{CODE_BASE, CODE_LEN};
use crate::{WorkloadError, WorkloadKind, WorkloadSpec, build, mapped_bytes};
use compromis_types::{AccessKind, ByteSize, Op, Pid};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// What the oracle saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub accesses: u64,
    pub fetches: u64,
    pub stores: u64,
    pub instrs: u64,
    pub maps: u64,
    pub unmaps: u64,
    pub switches: u64,
    pub max_mapped: u64,
}

/// Replays `ops` of `spec`, panicking on any violation.
pub fn check(spec: &WorkloadSpec, ops: impl Iterator<Item = Op>) -> Seen {
    let procs = usize::from(spec.processes);
    let mut maps: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new(); procs];
    let mut seen = Seen::default();
    let mut cur = 0usize;
    let mut slice = 0u64;
    let mut mapped_now = 0u64;
    let mut last_was_switch = false;
    for op in ops {
        last_was_switch = false;
        match op {
            Op::Map { start, len } => {
                assert!(len > 0 && len % 4096 == 0 && start.0 % 4096 == 0, "{op:?}");
                let m = &mut maps[cur];
                if let Some((&s, &e)) = m.range(..start.0 + len).next_back() {
                    assert!(e <= start.0, "pid {cur}: {op:?} overlaps [{s:#x}, {e:#x})");
                }
                m.insert(start.0, start.0 + len);
                mapped_now += len;
                seen.max_mapped = seen.max_mapped.max(mapped_now);
                seen.maps += 1;
            }
            Op::Unmap { start, len } => {
                assert_eq!(
                    maps[cur].remove(&start.0),
                    Some(start.0 + len),
                    "pid {cur}: {op:?}"
                );
                mapped_now -= len;
                seen.unmaps += 1;
            }
            Op::Switch { pid } => {
                assert!(procs > 1, "switch with one process");
                assert_eq!(slice, spec.quantum, "switch after {slice} accesses");
                assert_eq!(usize::from(pid), (cur + 1) % procs, "round robin");
                cur = usize::from(pid);
                slice = 0;
                seen.switches += 1;
                last_was_switch = true;
            }
            Op::Access {
                gva, kind, instrs, ..
            } => {
                let a = gva.0;
                let inside = maps[cur]
                    .range(..=a)
                    .next_back()
                    .is_some_and(|(_, &e)| a < e);
                assert!(
                    inside,
                    "pid {cur}: access {gva:?} outside every mapped region"
                );
                if kind == AccessKind::Fetch {
                    assert!(
                        (CODE_BASE.0..CODE_BASE.0 + CODE_LEN).contains(&a),
                        "fetch {gva:?}"
                    );
                    assert!(instrs > 0, "a fetch starts an instruction");
                } else {
                    assert_eq!(a % 8, 0, "data accesses are 8-byte aligned: {gva:?}");
                }
                seen.accesses += 1;
                seen.fetches += u64::from(kind == AccessKind::Fetch);
                seen.stores += u64::from(kind == AccessKind::Store);
                seen.instrs += u64::from(instrs);
                slice += 1;
                if procs > 1 {
                    assert!(slice <= spec.quantum);
                }
            }
        }
    }
    assert!(!last_was_switch, "stream ends with a switch");
    assert_eq!(seen.accesses, spec.accesses);
    seen
}

fn spec(
    kind: WorkloadKind,
    fp: u64,
    accesses: u64,
    processes: u16,
    quantum: u64,
    seed: u64,
) -> WorkloadSpec {
    WorkloadSpec {
        kind,
        footprint: ByteSize(fp),
        accesses,
        processes,
        quantum,
        seed,
    }
}

fn ops(s: &WorkloadSpec) -> Vec<Op> {
    build(s).expect("valid spec").collect()
}

#[test]
fn every_workload_keeps_the_contract() {
    for kind in WorkloadKind::ALL {
        for (fp, procs, quantum) in [
            (8 << 20, 1, 100_000),
            (24 << 20, 3, 1_000),
            (64 << 10, 2, 7),
        ] {
            let s = spec(kind, fp, 30_000, procs, quantum, 11);
            let seen = check(&s, build(&s).unwrap());
            assert!(seen.fetches > 0, "{kind}: no fetch");
            assert!(
                seen.max_mapped <= mapped_bytes(&s),
                "{kind}: mapped {} > {}",
                seen.max_mapped,
                mapped_bytes(&s)
            );
            assert!(
                seen.instrs >= seen.accesses,
                "{kind}: fewer instructions than accesses"
            );
            if procs > 1 {
                assert_eq!(seen.switches, (30_000 - 1) / quantum, "{kind}");
            } else {
                assert_eq!(seen.switches, 0);
            }
        }
    }
}

#[test]
fn mapped_bytes_is_reached_by_static_workloads() {
    for kind in [
        WorkloadKind::Gups,
        WorkloadKind::Stream,
        WorkloadKind::PointerChase,
        WorkloadKind::KvZipf,
        WorkloadKind::Bfs,
    ] {
        let s = spec(kind, 64 << 20, 1000, 2, 100, 1);
        let seen = check(&s, build(&s).unwrap());
        assert_eq!(seen.max_mapped, mapped_bytes(&s), "{kind}");
    }
}

#[test]
fn data_regions_are_huge_page_friendly() {
    for kind in WorkloadKind::ALL {
        let s = spec(kind, 256 << 20, 2000, 1, 1, 5);
        for op in build(&s).unwrap() {
            if let Op::Map { start, len } = op
                && start.0 != CODE_BASE.0
                && len >= 2 << 20
            {
                assert_eq!(start.0 % (2 << 20), 0, "{kind}: {op:?}");
                assert_eq!(len % (2 << 20), 0, "{kind}: {op:?}");
            }
        }
    }
}

#[test]
fn deterministic_and_seeded() {
    for kind in WorkloadKind::ALL {
        let a = spec(kind, 16 << 20, 20_000, 2, 5_000, 3);
        assert_eq!(ops(&a), ops(&a), "{kind}");
        if kind != WorkloadKind::Stream {
            let b = WorkloadSpec { seed: 4, ..a };
            assert_ne!(ops(&a), ops(&b), "{kind}: seed ignored");
        }
    }
}

#[test]
fn processes_differ_and_switch_round_robin() {
    let s = spec(WorkloadKind::Gups, 8 << 20, 1_000, 3, 100, 9);
    let v = ops(&s);
    // pid 0 starts implicitly: its two maps, then 100 accesses, then Switch{1}.
    assert!(matches!(v[0], Op::Map { .. }) && matches!(v[1], Op::Map { .. }));
    assert_eq!(v[102], Op::Switch { pid: 1 });
    assert!(matches!(v[103], Op::Map { .. }) && matches!(v[104], Op::Map { .. }));
    let switches: Vec<Pid> = v
        .iter()
        .filter_map(|o| {
            if let Op::Switch { pid } = o {
                Some(*pid)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(switches, vec![1, 2, 0, 1, 2, 0, 1, 2, 0]);
    // Process 1's first updates are not process 0's (distinct derived seeds).
    assert_ne!(&v[2..20], &v[105..123]);
    // The last op is an access: no trailing switch.
    assert!(matches!(v.last(), Some(Op::Access { .. })));
    // Exactly one quantum boundary at the end: no switch.
    let s = spec(WorkloadKind::Gups, 8 << 20, 200, 2, 100, 9);
    assert_eq!(check(&s, build(&s).unwrap()).switches, 1);
}

#[test]
fn bad_specs_are_rejected() {
    let ok = WorkloadSpec::default();
    assert!(ok.validate().is_ok());
    let e = |s: WorkloadSpec| build(&s).err().expect("rejected");
    assert_eq!(
        e(WorkloadSpec {
            footprint: ByteSize(0),
            ..ok
        }),
        WorkloadError::ZeroFootprint
    );
    assert_eq!(
        e(WorkloadSpec { accesses: 0, ..ok }),
        WorkloadError::ZeroAccesses
    );
    assert_eq!(
        e(WorkloadSpec { processes: 0, ..ok }),
        WorkloadError::ZeroProcesses
    );
    assert_eq!(
        e(WorkloadSpec {
            processes: 2,
            quantum: 0,
            ..ok
        }),
        WorkloadError::ZeroQuantum
    );
    // One process and quantum 0 is fine (no switches).
    assert!(build(&WorkloadSpec { quantum: 0, ..ok }).is_ok());
    let small = e(WorkloadSpec {
        kind: WorkloadKind::Stream,
        footprint: ByteSize(16 << 10),
        processes: 2,
        ..ok
    });
    assert_eq!(
        small,
        WorkloadError::FootprintTooSmall {
            workload: "stream",
            footprint: ByteSize::kib(16),
            processes: 2,
            per_process: ByteSize::kib(8),
            min: ByteSize::kib(12),
        }
    );
    assert_eq!(
        small.to_string(),
        "footprint 16KiB is too small for workload 'stream' with 2 process(es): each process gets 8KiB, the minimum is 12KiB"
    );
    assert!(matches!(
        e(WorkloadSpec {
            footprint: ByteSize(1 << 50),
            ..ok
        }),
        WorkloadError::FootprintTooLarge { .. }
    ));
    assert_eq!(mapped_bytes(&WorkloadSpec { accesses: 0, ..ok }), 0);
    for kind in WorkloadKind::ALL {
        let min = kind.min_footprint();
        assert!(
            build(&WorkloadSpec {
                kind,
                footprint: ByteSize(min),
                ..ok
            })
            .is_ok(),
            "{kind}"
        );
        assert!(
            build(&WorkloadSpec {
                kind,
                footprint: ByteSize(min - 1),
                ..ok
            })
            .is_err(),
            "{kind}"
        );
    }
}

#[test]
fn names_round_trip_and_unknown_lists_valid() {
    for kind in WorkloadKind::ALL {
        assert_eq!(kind.name().parse::<WorkloadKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    assert_eq!(
        "Pointer_Chase".parse::<WorkloadKind>(),
        Ok(WorkloadKind::PointerChase)
    );
    let err = "gupz".parse::<WorkloadKind>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown workload 'gupz': valid values are gups, stream, pointer-chase, kv-zipf, bfs, churn"
    );
}

#[test]
fn churn_maps_and_unmaps_often() {
    let s = spec(WorkloadKind::Churn, 64 << 20, 200_000, 1, 1, 2);
    let seen = check(&s, build(&s).unwrap());
    assert!(seen.unmaps > 50, "{seen:?}");
    assert!(seen.maps > seen.unmaps);
    // A store per touched page: at least a quarter of the non-fetch accesses are stores.
    assert!(seen.stores * 4 > seen.accesses - seen.fetches, "{seen:?}");
}

#[test]
fn gups_instruction_counts() {
    // 9 instructions per update, 3 accesses per update.
    let s = spec(WorkloadKind::Gups, 1 << 20, 3_000, 1, 1, 2);
    let seen = check(&s, build(&s).unwrap());
    assert_eq!(seen.instrs, 9_000);
    assert_eq!(seen.fetches, 1_000);
    assert_eq!(seen.stores, 1_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Node loads (the `next` field at offset 0) of the first `n` hops visit every node once,
    /// and hop `n` starts the same cycle again.
    #[test]
    fn pointer_chase_is_one_cycle(pages in 1u64..40, seed in any::<u64>()) {
        let fp = pages * 4096;
        let n = fp / 64;
        let s = spec(WorkloadKind::PointerChase, fp, 3 * (n + 1), 1, 1, seed);
        let nexts: Vec<u64> = build(&s).unwrap().filter_map(|o| match o {
            Op::Access { gva, kind: AccessKind::Load, .. } if gva.0 % 64 == 0 => Some(gva.0),
            _ => None,
        }).collect();
        prop_assert_eq!(nexts.len() as u64, n + 1);
        let mut first: Vec<u64> = nexts[..nexts.len() - 1].to_vec();
        prop_assert_eq!(nexts[0], nexts[nexts.len() - 1]);
        first.sort_unstable();
        first.dedup();
        prop_assert_eq!(first.len() as u64, n);
        let base = first[0];
        prop_assert_eq!(first[first.len() - 1] - base, (n - 1) * 64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any valid spec (odd footprints near the minimums included) keeps the contract.
    #[test]
    fn random_specs_keep_the_contract(
        k in 0usize..6,
        fp in 4096u64..(48 << 20),
        accesses in 1u64..4000,
        processes in 1u16..5,
        quantum in 1u64..500,
        seed in any::<u64>(),
    ) {
        let s = spec(WorkloadKind::ALL[k], fp, accesses, processes, quantum, seed);
        match build(&s) {
            Ok(ops) => {
                let seen = check(&s, ops);
                prop_assert!(seen.max_mapped <= mapped_bytes(&s));
            }
            Err(WorkloadError::FootprintTooSmall { min, .. }) => {
                prop_assert!(fp / u64::from(processes) < min.bytes());
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }
}

#[test]
fn many_processes_start_lazily() {
    let s = spec(
        WorkloadKind::Gups,
        u64::from(u16::MAX) * 4096,
        200,
        u16::MAX,
        1,
        1,
    );
    let seen = check(&s, build(&s).unwrap());
    assert_eq!(seen.switches, 199);
    // Each of the 200 processes that ran mapped its code and its one-page table.
    assert_eq!(seen.maps, 2 * 200);
    assert_eq!(mapped_bytes(&s), u64::from(u16::MAX) * (64 * 1024 + 4096));
}
