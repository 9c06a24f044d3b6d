//! Hand-computed placement scenarios, one per policy (golden): which host each policy picks and
//! which extents the VM gets. Every expected value below is derived by hand in the comments.

use compromis_cluster::hm::{Extent, VmId};
use compromis_cluster::index::ClusterIndex;
use compromis_cluster::{
    Cluster, Event, Fallback, Fleet, Placed, PlacementReport, PolicyKind, RejectReason,
    ReplayOptions, simulate_with,
};
use compromis_types::{Address, Hpa};

const G: u64 = 1 << 30;

fn ext(s: u64, l: u64) -> Extent {
    Extent {
        start: Hpa::new(s * G),
        len: l * G,
    }
}

/// Index with four hosts (GiB):
/// H0 cap 16, 16 cores, VM at [3,6): free extents 3 and 10 (free 13);
/// H1 cap 8, 8 cores, VM at [5,8): free extent 5;
/// H2 cap 8, 8 cores, full;
/// H3 cap 8, 8 cores, empty: free extent 8.
fn index() -> ClusterIndex {
    let mut ix = ClusterIndex::new([(16 * G, 16), (8 * G, 8), (8 * G, 8), (8 * G, 8)]);
    ix.on_create(0, &[ext(3, 3)], 0);
    ix.on_create(1, &[ext(5, 3)], 0);
    ix.on_create(2, &[ext(0, 8)], 0);
    ix
}

fn pick(p: PolicyKind, gib: u64, vcpus: u32) -> Option<u32> {
    p.build(0).choose(&index(), gib * G, vcpus)
}

#[test]
fn choose_golden_per_policy() {
    use PolicyKind::*;
    // 2 GiB: first-fit: H0 (first with free >= 2); best-fit: least free >= 2 is H1 (5);
    // worst-fit: most free is H0 (13); contig-first-fit: H0 has an extent of 3;
    // segment-best-fit: smallest extent >= 2 is H0's 3; frag-aware: no exact 2-GiB extent, the
    // smallest sufficient largest-extent is H1's 5.
    let want = [
        (FirstFit, 0),
        (BestFit, 1),
        (WorstFit, 0),
        (ContigFirstFit, 0),
        (SegmentBestFit, 0),
        (FragAware, 1),
    ];
    for (p, h) in want {
        assert_eq!(pick(p, 2, 1), Some(h), "{p} 2 GiB");
    }
    // 6 GiB: free >= 6 are H0 (13) and H3 (8): first-fit H0, best-fit H3, worst-fit H0;
    // extents >= 6 are H0's 10 and H3's 8: contig-first-fit H0, segment-best-fit H3 (8 < 10),
    // frag-aware H3 (largest 8 < 10).
    let want = [
        (FirstFit, 0),
        (BestFit, 3),
        (WorstFit, 0),
        (ContigFirstFit, 0),
        (SegmentBestFit, 3),
        (FragAware, 3),
    ];
    for (p, h) in want {
        assert_eq!(pick(p, 6, 1), Some(h), "{p} 6 GiB");
    }
    // 3 GiB: frag-aware takes the exact-fit extent 3 of H0 although H1's largest (5) is smaller.
    assert_eq!(pick(FragAware, 3, 1), Some(0));
    // 11 GiB: only H0 has 13 GiB free, but no extent is that large.
    for p in [FirstFit, BestFit, WorstFit, Random] {
        assert_eq!(pick(p, 11, 1), Some(0), "{p} 11 GiB");
    }
    for p in [ContigFirstFit, SegmentBestFit, FragAware] {
        assert_eq!(pick(p, 11, 1), None, "{p} 11 GiB");
    }
    // 9 vCPUs: only H0 has more than 8 cores.
    for p in PolicyKind::ALL {
        assert_eq!(pick(p, 2, 9), Some(0), "{p} 9 vCPUs");
    }
    // Random: any host with 2 GiB free (not the full H2), the same for the same seed.
    let r1 = PolicyKind::Random.build(5).choose(&index(), 2 * G, 1);
    assert!(matches!(r1, Some(0 | 1 | 3)));
    assert_eq!(r1, PolicyKind::Random.build(5).choose(&index(), 2 * G, 1));
}

/// The engine scenario on two 8-GiB hosts: V0..V3 of 2 GiB, then V1 and V3 leave, then V4 of 4 GiB.
fn events() -> Vec<Event> {
    let a = |vm, time| Event::Arrival {
        vm,
        time,
        mem_bytes: 2 * G,
        vcpus: 1,
        initial: false,
    };
    vec![
        a(0, 0),
        a(1, 1),
        a(2, 2),
        a(3, 3),
        Event::Departure { vm: 1, time: 4 },
        Event::Departure { vm: 3, time: 5 },
        Event::Arrival {
            vm: 4,
            time: 6,
            mem_bytes: 4 * G,
            vcpus: 1,
            initial: false,
        },
    ]
}

fn fleet() -> Fleet {
    "2x8GiB/8c".parse().unwrap()
}

/// Replays the scenario on a `Cluster` and returns where V4 went and its extents.
/// Outcome of V4, its host and extents, and the report.
type Replay = (
    Result<Placed, RejectReason>,
    Option<(u32, Vec<Extent>)>,
    PlacementReport,
);

fn replay(p: PolicyKind, fb: Fallback) -> Replay {
    let mut cl = Cluster::new(&fleet(), compromis_cluster::hm::Policy::BestFit);
    let mut pol = p.build(0);
    let mut rep = PlacementReport::default();
    let mut last = Ok(Placed::Segments(0));
    for e in events() {
        match e {
            Event::Arrival {
                vm,
                mem_bytes,
                vcpus,
                ..
            } => last = cl.place(vm, mem_bytes, vcpus, pol.as_mut(), fb, &mut rep),
            Event::Departure { vm, .. } | Event::ImplicitEnd { vm, .. } => assert!(cl.remove(vm)),
            Event::Resize { .. } => unreachable!(),
        }
        cl.check().unwrap();
    }
    let at = cl.host_of(4).map(|h| {
        // Extents come in guest order; compare them in address order.
        let mut v = cl.host_memory(h).extents(VmId(4)).unwrap().to_vec();
        v.sort_by_key(|e| e.start);
        (h, v)
    });
    (last, at, rep)
}

#[test]
fn engine_golden_per_policy() {
    // first-fit and best-fit fill H0 with V0..V3 at [0,2) [2,4) [4,6) [6,8); after V1 and V3 leave,
    // H0 has 4 GiB free in two 2-GiB holes, and both still pick H0 for V4 (free memory suffices):
    // extents [2,4) and [6,8). V4's 4 GiB of RAM straddle the MMIO hole (guest RAM [0, 3.75) and
    // [4, 4.25) GiB): the first hole backs gPA [0, 2), the second [2, 3.75) and [4, 4.25), which
    // the hole cuts into two register sets with different OFFSETs: 3 register sets.
    for p in [PolicyKind::FirstFit, PolicyKind::BestFit] {
        let (r, at, _) = replay(p, Fallback::Segments(8));
        assert_eq!(r, Ok(Placed::Segments(3)), "{p}");
        assert_eq!(at, Some((0, vec![ext(2, 2), ext(6, 2)])), "{p}");
    }
    // worst-fit alternates (ties to the highest id): V0->H1 [0,2), V1->H0 [0,2), V2->H1 [2,4),
    // V3->H0 [2,4); both leavers are on H0, which is empty again, so V4 -> H0 in one register
    // set: a host range of 4.25 GiB whose 256 MiB behind the hole stay free, [0, 3.75) + [4, 4.25).
    let one_set = |h: u32| {
        Some((
            h,
            vec![Extent::new(0, 0xF000_0000), Extent::new(4 * G, G / 4)],
        ))
    };
    let (r, at, _) = replay(PolicyKind::WorstFit, Fallback::Segments(8));
    assert_eq!((r, at), (Ok(Placed::Segments(1)), one_set(0)));
    // The contiguity-aware policies fill H0 the same way but see that its largest hole is 2 GiB:
    // V4 -> H1 in one register set.
    for p in [
        PolicyKind::ContigFirstFit,
        PolicyKind::SegmentBestFit,
        PolicyKind::FragAware,
    ] {
        let (r, at, _) = replay(p, Fallback::Segments(8));
        assert_eq!((r, at), (Ok(Placed::Segments(1)), one_set(1)), "{p}");
    }
    // first-fit with `reject`: V4 is refused (no single extent on the chosen host).
    let (r, at, _) = replay(PolicyKind::FirstFit, Fallback::Refuse);
    assert_eq!((r, at), (Err(RejectReason::NoSingleExtent), None));
    // first-fit with `compact`: H0 is compacted by moving one 2-GiB VM, then V4 gets one extent
    // of 4 GiB (no room for the 4.25 GiB of one set: two register sets, split at the hole).
    let (r, at, rep) = replay(PolicyKind::FirstFit, Fallback::Compact);
    assert_eq!(r, Ok(Placed::Segments(2)));
    assert_eq!(
        at.map(|a| (a.0, a.1.len(), a.1[0].len)),
        Some((0, 1, 4 * G))
    );
    assert_eq!((rep.compactions, rep.bytes_moved), (1, 2 * G));
}

#[test]
fn simulate_counts_golden() {
    let opts = ReplayOptions {
        check_every_event: true,
        sample_interval: 2,
        ..ReplayOptions::default()
    };
    let r = simulate_with(
        events().into_iter().map(Ok),
        &fleet(),
        &PolicyKind::FirstFit,
        &Fallback::Segments(8),
        &opts,
    )
    .unwrap();
    assert_eq!(
        (
            r.arrivals,
            r.placed,
            r.single_segment,
            r.departures,
            r.events
        ),
        (5, 5, 4, 2, 7)
    );
    assert_eq!(
        r.segments_histogram.clone().into_iter().collect::<Vec<_>>(),
        vec![(1, 4), (3, 1)]
    );
    assert!((r.single_segment_share() - 0.8).abs() < 1e-12);
    // Samples at t=0, 2, 4, 6 (state before the first event at or after each) plus the final one.
    let times: Vec<u64> = r.series.iter().map(|s| s.time).collect();
    assert_eq!(times, vec![0, 2, 4, 6, 6]);
    // Before t=4: V0 and V1 on H0 -> 4 of 16 GiB used; at the end V0, V2, V4 -> 8 of 16.
    assert!((r.series[1].mem_utilisation - 0.25).abs() < 1e-12);
    assert!((r.series[4].mem_utilisation - 0.5).abs() < 1e-12);
    // At the end H0 is full and H1 empty: fragmentation 1 - 8/8 = 0.
    assert_eq!(r.series[4].fragmentation, 0.0);
    let c = simulate_with(
        events().into_iter().map(Ok),
        &fleet(),
        &PolicyKind::ContigFirstFit,
        &Fallback::Refuse,
        &opts,
    )
    .unwrap();
    assert_eq!((c.placed, c.single_segment, c.peak_hosts_in_use), (5, 5, 2));
}
