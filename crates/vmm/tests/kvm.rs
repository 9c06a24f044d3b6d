//! Tests that need `/dev/kvm` (they print why and pass when it is unusable) and the backing-skip
//! test.

use compromis_types::{ByteSize, Gpa, PageSize};
use compromis_vmm::code::Params;
use compromis_vmm::memory::{HostBacking, MemoryError, Ram};
use compromis_vmm::paging::PageTables;
use compromis_vmm::vm::{Vm, VmError, layout};
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
        let native = run_native(&p, HostBacking::Page4K, TSC_KHZ).unwrap();
        assert_eq!(native.checksum, p.expected_checksum(), "{w} native");
        let ram = Ram::new(HostBacking::Page4K, p.image_len() + (16 << 20)).unwrap();
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
    match Ram::new(HostBacking::Huge1G, 1 << 50) {
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
        backings: vec![HostBacking::Page4K],
        footprint: ByteSize::gib(8),
        iterations: 1000,
        predict: false,
        ..Config::default()
    };
    let err = compromis_vmm::run(&cfg, &|_: &str| {}).unwrap_err();
    assert!(err.to_string().contains("MMIO hole"), "{err}");
}

/// A small VM running `kernel` (raw machine code) instead of a workload.
fn run_raw(kvm: &kvm_ioctls::Kvm, kernel: &[u8], budget: Duration) -> Result<(), VmError> {
    let len = 8 << 20;
    let ram = Ram::new(HostBacking::Page4K, len).unwrap();
    let tables = PageTables::identity(len, PageSize::Size4K, Gpa(layout::TABLES)).unwrap();
    Vm::new(
        kvm,
        &ram,
        &tables,
        kernel,
        Params::default(),
        Params::default(),
    )?
    .run(budget)
    .map(|_| ())
}

#[test]
fn guest_exception_is_reported_with_vector_and_registers() {
    let Some(kvm) = kvm_or_skip("guest_exception_is_reported") else {
        return;
    };
    // ud2: #UD, vector 6.
    let err = run_raw(&kvm, &[0x0f, 0x0b], Duration::from_secs(30)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, VmError::Exception { vector: 6, .. }), "{msg}");
    assert!(msg.contains("#UD") && msg.contains("rip"), "{msg}");
    // A load from an unmapped address: #PF, vector 14, with CR2.
    // mov rax, [0x7000_0000_0000] (movabs rax, moffs64)
    let mut pf = vec![0x48, 0xa1];
    pf.extend(0x7000_0000_0000u64.to_le_bytes());
    let err = run_raw(&kvm, &pf, Duration::from_secs(30)).unwrap_err();
    assert!(
        matches!(err, VmError::Exception { vector: 14, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("cr2 0x700000000000"), "{err}");
}

#[test]
fn watchdog_ends_a_guest_that_never_returns() {
    let Some(kvm) = kvm_or_skip("watchdog_ends_a_guest") else {
        return;
    };
    let start = std::time::Instant::now();
    // jmp $: loops forever.
    let err = run_raw(&kvm, &[0xeb, 0xfe], Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, VmError::Watchdog { .. }), "{err}");
    assert!(err.to_string().contains("rip"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30));
}
