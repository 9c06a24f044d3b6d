//! Placement under load (issue 11 item 8): the EPT-paging fallback is counted as "paged", not
//! refused, and `--target-utilization` sizes the fleet so the trace's peak demand is the target.

use compromis_cluster::sizing::peak_demand;
use compromis_cluster::{
    Event, Fallback, Fleet, PlaceRequest, PlaceSource, PolicyKind, RejectReason, simulate,
};

const G: u64 = 1 << 30;

fn arrive(vm: u64, time: u64, gib: u64) -> Event {
    Event::Arrival {
        vm,
        time,
        mem_bytes: gib * G,
        vcpus: 1,
        initial: false,
    }
}

/// One 8 GiB host filled by four 2 GiB VMs; the 2nd and 4th leave, so 4 GiB are free in two
/// 2 GiB holes; then a 3 GiB VM arrives (RAM below the MMIO hole): it fits in the host's total
/// free memory, never in one extent.
fn holes_then_big() -> Vec<Event> {
    let mut v: Vec<Event> = (0..4).map(|i| arrive(i, i, 2)).collect();
    v.push(Event::Departure { vm: 1, time: 10 });
    v.push(Event::Departure { vm: 3, time: 11 });
    v.push(arrive(9, 20, 3));
    v
}

fn run(policy: PolicyKind, fb: Fallback) -> compromis_cluster::PlacementReport {
    let fleet: Fleet = "1x8GiB/16c".parse().unwrap();
    simulate(
        holes_then_big().into_iter().map(Ok),
        &fleet,
        &policy,
        &fb,
        1,
    )
    .unwrap()
}

#[test]
fn paging_fallback_counts_paged_vms() {
    for policy in [PolicyKind::FirstFit, PolicyKind::ContigFirstFit] {
        // Two holes of 2 GiB: one segment is impossible, two segments are possible.
        let r = run(policy, Fallback::Segments(8));
        assert_eq!(
            (r.placed, r.single_segment, r.multi_segment(), r.paged),
            (5, 4, 1, 0)
        );
        assert_eq!(r.segments_histogram.get(&2), Some(&1), "{policy}");
        // At most one segment: the VM runs on EPT paging, counted as paged, not refused.
        let r = run(policy, Fallback::Segments(1));
        assert_eq!(
            (r.placed, r.multi_segment(), r.paged, r.rejected()),
            (5, 0, 1, 0)
        );
        assert_eq!(r.segments_histogram.values().sum::<u64>(), 4);
        let r = run(policy, Fallback::Ept);
        assert_eq!((r.placed, r.paged, r.rejected()), (5, 1, 0), "{policy}");
        // `refuse` (spelled `reject` too) refuses it instead.
        let r = run(policy, "reject".parse().unwrap());
        assert_eq!((r.placed, r.paged, r.rejected()), (4, 0, 1), "{policy}");
        assert_eq!(r.rejections.get(&RejectReason::NoSingleExtent), Some(&1));
    }
    // Compaction frees one extent when it can (the VMs move), so nothing is paged.
    let r = run(PolicyKind::FirstFit, Fallback::Compact);
    assert_eq!((r.single_segment, r.paged, r.compactions), (5, 0, 1));
}

#[test]
fn a_vm_beyond_the_free_memory_is_refused_not_paged() {
    let fleet: Fleet = "1x8GiB/16c".parse().unwrap();
    let mut ev = holes_then_big();
    ev.push(arrive(10, 30, 2));
    let r = simulate(
        ev.into_iter().map(Ok),
        &fleet,
        &PolicyKind::FirstFit,
        &Fallback::Ept,
        1,
    )
    .unwrap();
    assert_eq!((r.placed, r.paged, r.rejected()), (5, 1, 1));
    assert_eq!(r.rejections.get(&RejectReason::NoCapacity), Some(&1));
}

#[test]
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)] // reason: the oracle's host count is a small positive whole number
fn target_utilisation_sizes_the_fleet() {
    for target in [0.3, 0.6, 0.95] {
        let req = PlaceRequest {
            source: PlaceSource::Synthetic { vms: 2_000 },
            fleet: Some("1x192GiB/4096c".parse().unwrap()),
            policies: vec![PolicyKind::FirstFit, PolicyKind::ContigFirstFit],
            fallback: Fallback::Ept,
            target_utilization: Some(target),
            ..PlaceRequest::default()
        };
        let peak = peak_demand(
            req.open(&compromis_cluster::TraceOptions::default())
                .unwrap(),
            false,
        )
        .unwrap();
        let cap = 192 * G;
        let hosts = (peak as f64 / (target * cap as f64)).ceil() as u64;
        for r in req.run(&|_, _| {}).unwrap() {
            assert_eq!(r.hosts, hosts, "{target}");
            assert_eq!(r.peak_demand_bytes, Some(peak));
            assert_eq!(r.target_utilisation, Some(target));
            assert_eq!(r.rejected(), 0, "{}: {:?}", r.policy, r.rejections);
            // Nothing refused: the replay's own peak is the trace's peak on this fleet.
            let got = r.peak_mem_utilisation;
            let want = peak as f64 / (hosts * cap) as f64;
            assert!((got - want).abs() < 1e-12, "{got} {want}");
            assert!(
                got <= target && got > target - 1.0 / hosts as f64,
                "{got} {target}"
            );
        }
    }
    let mixed = PlaceRequest {
        fleet: Some("1x192GiB/24c,1x1TiB/64c".parse().unwrap()),
        target_utilization: Some(0.5),
        ..PlaceRequest::default()
    };
    assert!(
        mixed
            .run(&|_, _| {})
            .unwrap_err()
            .to_string()
            .contains("one host kind")
    );
    let bad = PlaceRequest {
        target_utilization: Some(1.5),
        ..PlaceRequest::default()
    };
    assert!(bad.run(&|_, _| {}).unwrap_err().to_string().contains("1.5"));
}
