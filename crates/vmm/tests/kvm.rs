//! Tests that need `/dev/kvm` (they print why and pass when it is unusable) and the backing-skip
//! test.

use compromis_types::{ByteSize, PageSize};
use compromis_vmm::memory::{Backing, MemoryError, Ram};
use compromis_vmm::{Config, Prepared, Workload, open_kvm, run_native, run_vm};
use std::time::Duration;

fn kvm_or_skip(test: &str) -> Option<kvm_ioctls::Kvm> {
    match open_kvm() {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            None
        }
    }
}

const TSC_KHZ: f64 = 1e6; // timing is not checked here

#[test]
fn guest_checksums_equal_native_for_both_workloads_and_guest_page_sizes() {
    let Some(kvm) = kvm_or_skip("guest_checksums_equal_native") else {
        return;
    };
    for w in Workload::ALL {
        let p = Prepared::new(w, ByteSize::mib(64), 100_000, 42).unwrap();
        let native = run_native(&p, Backing::Page4K, TSC_KHZ).unwrap();
        assert_eq!(native.checksum, p.expected_checksum(), "{w} native");
        let ram = Ram::new(Backing::Page4K, p.image_len() + (16 << 20)).unwrap();
        for g in [PageSize::Size4K, PageSize::Size2M] {
            let vm = run_vm(&kvm, &ram, &p, g, Duration::from_secs(30), TSC_KHZ).unwrap();
            assert_eq!(vm.checksum, native.checksum, "{w} guest {g:?}");
        }
    }
}

#[test]
fn impossible_backing_is_skipped_with_a_note() {
    let pool = compromis_vmm::hugepages::pool_path(PageSize::Size1G).unwrap();
    let before = std::fs::read_to_string(pool).ok();
    // A petabyte of 1 GiB pages: the reservation must fail with a note, without touching the pool.
    match Ram::new(Backing::Huge1G, 1 << 50) {
        Err(MemoryError::Unavailable(note)) => {
            assert!(note.contains("1g pages"), "{note}");
            eprintln!("note: {note}");
        }
        other => panic!("expected a skip note, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(pool).ok(), before, "pool changed");
    assert!(compromis_vmm::hugepages::Reservation::reserve(PageSize::Size2M, 1 << 40).is_err());
}

#[test]
fn too_large_a_footprint_is_refused_before_anything_runs() {
    // Guest RAM must stay below the MMIO hole: refused with a message before any allocation.
    let cfg = Config {
        workloads: vec![Workload::Gups],
        guest_pages: vec![PageSize::Size4K],
        backings: vec![Backing::Page4K],
        footprint: ByteSize::gib(8),
        iterations: 1000,
        predict: false,
        ..Config::default()
    };
    let err = compromis_vmm::run(&cfg, &|_: &str| {}).unwrap_err();
    assert!(err.to_string().contains("MMIO hole"), "{err}");
}
