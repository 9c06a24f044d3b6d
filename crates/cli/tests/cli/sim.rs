//! `compromis sim` as a user runs it: defaults, formats, determinism, bad input.

use assert_cmd::Command;
use predicates::prelude::*;

fn sim() -> Command {
    let mut c = Command::cargo_bin("compromis").unwrap();
    c.arg("sim");
    c
}

#[test]
fn small_run_prints_every_scheme_and_the_cycle_model() {
    sim()
        .args(["--footprint", "64MiB", "--accesses", "50000"])
        .assert()
        .success()
        .stdout(predicate::str::contains("compromis").and(predicate::str::contains("refs/walk")))
        .stdout(
            predicate::str::contains("Cycle model")
                .and(predicate::str::contains("speedup of compromis")),
        );
}

#[test]
fn csv_has_one_row_per_scheme_and_is_deterministic() {
    let run = || {
        let out = sim()
            .args([
                "--workload",
                "kv-zipf",
                "--footprint",
                "64MiB",
                "--accesses",
                "40000",
                "--format",
                "csv",
                "--seed",
                "9",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let a = run();
    assert_eq!(a.lines().count(), 5, "{a}");
    assert!(a.lines().nth(1).unwrap().starts_with("kv-zipf,native,"));
    assert_eq!(a, run());
}

#[test]
fn json_carries_counters_and_cycles() {
    let out = sim()
        .args([
            "--footprint",
            "32MiB",
            "--accesses",
            "20000",
            "--schemes",
            "ept,compromis",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schemes = v["schemes"].as_array().unwrap();
    assert_eq!(schemes.len(), 2);
    assert_eq!(schemes[0]["scheme"], "ept");
    assert!(schemes[1]["cycles"]["total"].as_f64().unwrap() > 0.0);
    assert_eq!(schemes[1]["measured"]["walk_refs_host"], 0);
}

#[test]
fn unknown_workload_lists_valid_values() {
    sim().args(["--workload", "nope"]).assert().code(2).stderr(
        predicate::str::contains("gups")
            .and(predicate::str::contains("pointer-chase"))
            .and(predicate::str::contains("churn")),
    );
}

#[test]
fn unknown_scheme_lists_valid_values() {
    sim()
        .args(["--schemes", "ept,magic"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("magic")
                .and(predicate::str::contains("native, ept, shadow, compromis")),
        );
}

#[test]
fn malformed_size_is_exit_2() {
    sim()
        .args(["--footprint", "4GX"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("4GX"));
}

#[test]
fn zero_footprint_is_exit_2() {
    sim()
        .args(["--footprint", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("footprint"));
}

#[test]
fn footprint_larger_than_vm_is_exit_2() {
    sim()
        .args([
            "--footprint",
            "2GiB",
            "--vm-memory",
            "1GiB",
            "--accesses",
            "10",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("does not fit"));
}

#[test]
fn guest_pages_1g_is_rejected() {
    sim()
        .args(["--guest-pages", "1g"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("4k or 2m"));
}

#[test]
fn aged_host_with_ept_fallback() {
    sim()
        .args([
            "--footprint",
            "64MiB",
            "--accesses",
            "20000",
            "--host-state",
            "aged",
            "--host-fill",
            "0.85",
            "--host-fallback",
            "ept",
            "--host-pages",
            "2m",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("provisioned ept"));
}

#[test]
fn bad_fallback_lists_valid_values() {
    sim()
        .args(["--host-fallback", "segments:0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("segments:K (1 <= K <= 1024), ept"));
}

/// `/dev/full` opened for writing, or `None` (with a note) where it does not exist.
fn dev_full() -> Option<std::fs::File> {
    match std::fs::File::create("/dev/full") {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("skipped: cannot open /dev/full: {e}");
            None
        }
    }
}

#[test]
fn full_stdout_is_exit_2_without_panic() {
    let Some(full) = dev_full() else { return };
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("compromis"))
        .args(["sim", "--accesses", "20000", "--footprint", "64MiB"])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
}

#[test]
fn full_stderr_on_error_is_exit_2_without_panic() {
    let Some(full) = dev_full() else { return };
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("compromis"))
        .args(["sim", "--accesses", "20000", "--footprint", "0"])
        .stderr(full)
        .output()
        .unwrap();
    // A panic exits 101; the error path must still exit 2 when stderr cannot be written.
    assert_eq!(out.status.code(), Some(2));
}
