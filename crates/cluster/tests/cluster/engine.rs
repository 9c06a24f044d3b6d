//! The independent checker after every event on random traces, conservation laws, determinism
//! across runs and thread counts, and bad input that must never panic.

use compromis_cluster::{
    Event, Fallback, Fleet, PlacementReport, PolicyKind, RejectReason, ReplayError, ReplayOptions,
    SyntheticConfig, SyntheticTrace, VmTraceError, simulate, simulate_with,
};
use proptest::prelude::*;
use rayon::prelude::*;

const M: u64 = 1 << 20;

/// Random valid event streams: VM i arrives at step i (sizes 1 MiB..9 GiB, some resized), departs
/// after a random delay or never.
fn stream(spec: &[(u64, u32, Option<u64>, Option<u64>)]) -> Vec<Event> {
    let mut pending: Vec<(u64, u8, u64, Event)> = Vec::new();
    for (i, &(mem, vcpus, life, resize)) in spec.iter().enumerate() {
        let vm = i as u64;
        let t = vm * 10;
        pending.push((
            t,
            2,
            vm,
            Event::Arrival {
                vm,
                time: t,
                mem_bytes: mem,
                vcpus,
                initial: i < 3,
            },
        ));
        if let Some(l) = life {
            if let Some(r) = resize {
                pending.push((
                    t + l / 2,
                    1,
                    vm,
                    Event::Resize {
                        vm,
                        time: t + l / 2,
                        mem_bytes: r,
                    },
                ));
            }
            pending.push((t + l, 0, vm, Event::Departure { vm, time: t + l }));
        }
    }
    // Arrivals of a VM precede its own events: order by (time, kind, vm) puts departures first at a
    // tie, so keep a VM's own events after its arrival by making lifetimes >= 2.
    pending.sort_by_key(|p| (p.0, p.1, p.2));
    pending.into_iter().map(|p| p.3).collect()
}

fn spec_strategy() -> impl Strategy<Value = Vec<(u64, u32, Option<u64>, Option<u64>)>> {
    prop::collection::vec(
        (
            1u64..4608,
            0u32..6,
            prop::option::weighted(0.85, 2u64..400),
            prop::option::weighted(0.2, 1u64..4608),
        )
            .prop_map(|(m, c, l, r)| (m * 2 * M, c, l, r.map(|r| r * 2 * M))),
        1..120,
    )
}

fn fleets() -> [Fleet; 2] {
    [
        "3x16GiB/8c".parse().unwrap(),
        "2x8GiB/4c,1x32GiB/16c/2GiBr".parse().unwrap(),
    ]
}

fn conserved(r: &PlacementReport) {
    assert_eq!(r.placed + r.rejected(), r.arrivals);
    assert_eq!(
        r.segments_histogram.values().sum::<u64>() + r.paged,
        r.placed
    );
    assert_eq!(r.single_segment + r.multi_segment() + r.paged, r.placed);
    assert_eq!(
        r.segments_histogram.get(&1).copied().unwrap_or(0),
        r.single_segment
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn checker_holds_after_every_event(spec in spec_strategy()) {
        let ev = stream(&spec);
        for fleet in fleets() {
            for p in PolicyKind::ALL {
                for fb in [Fallback::Refuse, Fallback::Compact, Fallback::Segments(3), Fallback::Ept] {
                    let opts = ReplayOptions { check_every_event: true, sample_interval: 50, ..ReplayOptions::default() };
                    let r = simulate_with(ev.iter().copied().map(Ok), &fleet, &p, &fb, &opts);
                    let r = r.unwrap_or_else(|e| panic!("{p} {fb}: {e}"));
                    conserved(&r);
                    prop_assert_eq!(r.events, ev.len() as u64);
                    // Under `refuse` a VM gets one allocation: one register set, or two when
                    // its RAM straddles the MMIO hole and only an extent of its RAM size is free.
                    if fb == Fallback::Refuse {
                        prop_assert!(r.segments_histogram.keys().all(|&k| k <= 2));
                    }
                    if fb == Fallback::Refuse {
                        prop_assert_eq!(r.paged, 0);
                    }
                }
            }
        }
    }
}

#[test]
fn contiguity_aware_never_worse_on_synthetic() {
    let fleet: Fleet = "40x192GiB/128c".parse().unwrap();
    let run = |p| {
        simulate(
            SyntheticTrace::new(SyntheticConfig {
                vms: 6000,
                seed: 9,
                ..SyntheticConfig::default()
            })
            .unwrap(),
            &fleet,
            &p,
            &Fallback::Segments(8),
            9,
        )
        .unwrap()
    };
    let ff = run(PolicyKind::FirstFit);
    let cff = run(PolicyKind::ContigFirstFit);
    conserved(&ff);
    conserved(&cff);
    assert!(
        cff.single_segment_share() >= ff.single_segment_share(),
        "{} < {}",
        cff.single_segment_share(),
        ff.single_segment_share()
    );
}

#[test]
fn deterministic_across_runs_and_thread_counts() {
    let fleet: Fleet = "30x192GiB/128c".parse().unwrap();
    let run_all = || -> Vec<PlacementReport> {
        PolicyKind::ALL
            .par_iter()
            .map(|p| {
                let t = SyntheticTrace::new(SyntheticConfig {
                    vms: 3000,
                    seed: 4,
                    ..SyntheticConfig::default()
                })
                .unwrap();
                simulate(t, &fleet, p, &Fallback::Compact, 4).unwrap()
            })
            .collect()
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run_all);
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(run_all);
    let again = run_all();
    assert_eq!(one, two);
    assert_eq!(one, again);
    // A different seed changes the synthetic trace, hence the result.
    let t = SyntheticTrace::new(SyntheticConfig {
        vms: 3000,
        seed: 5,
        ..SyntheticConfig::default()
    })
    .unwrap();
    assert_ne!(
        simulate(t, &fleet, &PolicyKind::ALL[0], &Fallback::Compact, 4).unwrap(),
        one[0]
    );
}

#[test]
fn impossible_vm_is_a_counted_rejection() {
    let fleet: Fleet = "2x8GiB/4c".parse().unwrap();
    let ev = [
        Event::Arrival {
            vm: 0,
            time: 0,
            mem_bytes: 9 << 30,
            vcpus: 1,
            initial: false,
        },
        Event::Arrival {
            vm: 1,
            time: 0,
            mem_bytes: 1 << 30,
            vcpus: 5,
            initial: false,
        },
        Event::Arrival {
            vm: 2,
            time: 1,
            mem_bytes: u64::MAX,
            vcpus: 1,
            initial: false,
        },
        Event::Arrival {
            vm: 3,
            time: 1,
            mem_bytes: 0,
            vcpus: 0,
            initial: false,
        },
        Event::Departure { vm: 0, time: 2 },
        Event::Resize {
            vm: 3,
            time: 3,
            mem_bytes: 100 << 30,
        },
    ];
    for p in PolicyKind::ALL {
        let r = simulate(
            ev.iter().copied().map(Ok),
            &fleet,
            &p,
            &Fallback::Segments(4),
            0,
        )
        .unwrap();
        assert_eq!(
            r.rejections.get(&RejectReason::LargerThanAnyHost),
            Some(&3),
            "{p}"
        );
        assert_eq!((r.placed, r.resizes, r.resize_rejections), (1, 1, 1), "{p}");
    }
}

#[test]
fn inconsistent_events_are_errors_or_counted() {
    let fleet: Fleet = "1x8GiB/4c".parse().unwrap();
    let a = |vm, time| {
        Ok(Event::Arrival {
            vm,
            time,
            mem_bytes: 1 << 30,
            vcpus: 1,
            initial: false,
        })
    };
    type Case = (
        Box<dyn Fn() -> Vec<Result<Event, VmTraceError>>>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            Box::new(move || vec![a(0, 5), Ok(Event::Departure { vm: 7, time: 6 })]),
            "never arrived",
        ),
        (Box::new(move || vec![a(0, 5), a(0, 6)]), "already arrived"),
        (Box::new(move || vec![a(0, 5), a(1, 4)]), "backwards"),
        (
            Box::new(move || {
                vec![
                    a(0, 5),
                    Err(VmTraceError::Row {
                        path: "t.csv".into(),
                        line: 3,
                        reason: "negative vmcreated '-1'".into(),
                    }),
                ]
            }),
            "t.csv line 3",
        ),
    ];
    for (ev, msg) in cases {
        let e = simulate(ev(), &fleet, &PolicyKind::FirstFit, &Fallback::Refuse, 0).unwrap_err();
        assert!(e.to_string().contains(msg), "{e} lacks {msg}");
        assert!(matches!(
            e,
            ReplayError::BadEvent { .. } | ReplayError::Trace(_)
        ));
        let opts = ReplayOptions {
            skip_bad_rows: true,
            ..ReplayOptions::default()
        };
        let r = simulate_with(
            ev(),
            &fleet,
            &PolicyKind::FirstFit,
            &Fallback::Refuse,
            &opts,
        )
        .unwrap();
        assert_eq!((r.bad_rows, r.placed), (1, 1));
        assert!(r.bad_row_examples[0].contains(msg));
    }
}

/// Issue 13: keeping only the indexes a policy reads (without the per-host extent lists, the
/// largest free extent taken from the memory manager) changes no result.
#[test]
fn index_needs_change_nothing() {
    let ev: Vec<Event> = SyntheticTrace::new(SyntheticConfig {
        vms: 3_000,
        ..SyntheticConfig::default()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect();
    let fleet: Fleet = "12x192GiB/128c".parse().unwrap();
    for p in PolicyKind::ALL {
        for fb in [
            Fallback::Segments(8),
            Fallback::Compact,
            Fallback::Refuse,
            Fallback::Ept,
        ] {
            let run = |all: bool| {
                let opts = ReplayOptions {
                    keep_all_indexes: all,
                    ..ReplayOptions::default()
                };
                simulate_with(ev.iter().copied().map(Ok), &fleet, &p, &fb, &opts).unwrap()
            };
            assert_eq!(run(false), run(true), "{p} {fb}");
        }
    }
}
