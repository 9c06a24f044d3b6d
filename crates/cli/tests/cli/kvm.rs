//! `compromis kvm` end to end: the no-KVM path always; a tiny run when `/dev/kvm` works.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn no_kvm_device_exits_2_with_a_clear_message() {
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["kvm", "--no-predict"])
        .env("COMPROMIS_KVM_DEVICE", "/nonexistent/kvm")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "KVM is not usable: /nonexistent/kvm does not exist",
        ));
}

#[test]
fn tiny_run_prints_every_output_format() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipping tiny_run_prints_every_output_format: no /dev/kvm");
        return;
    }
    let args = [
        "kvm",
        "--footprint",
        "4MiB",
        "--iterations",
        "2000",
        "--backing",
        "4k",
        "--no-predict",
    ];
    let out = Command::cargo_bin("compromis")
        .unwrap()
        .args(args)
        .args(["--output", "csv"])
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("KVM is not usable"), "{err}");
        eprintln!("skipping: {err}");
        return;
    }
    let csv = String::from_utf8_lossy(&out.stdout);
    // header + 2 workloads x 2 guest page sizes
    assert_eq!(csv.lines().count(), 5, "{csv}");
    Command::cargo_bin("compromis")
        .unwrap()
        .args(args)
        .args(["--output", "json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"calibration\""));
    Command::cargo_bin("compromis")
        .unwrap()
        .args(args)
        .assert()
        .success()
        .stdout(predicate::str::contains("BASE / LIMIT / OFFSET"));
}
