//! `compromis sim --compare-host-pages`: Compromis against EPT and shadow paging at every host
//! page size and at the best host page the VM's contiguity allows.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn sim(extra: &[&str]) -> std::process::Output {
    Command::cargo_bin("compromis")
        .unwrap()
        .args([
            "sim",
            "--footprint",
            "64MiB",
            "--accesses",
            "20000",
            "--compare-host-pages",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn one_row_per_host_page_with_both_readings() {
    let out = sim(&[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "| 4k ",
        "| 2m ",
        "| 1g ",
        "370%",
        "runtime reading",
        "overhead reading",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let json = sim(&["--output", "json"]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    // Fresh host: one extent, so the 1 GiB row is mapped with 1 GiB leaves.
    assert!(rows[2]["ept_leaves"][2].as_u64().unwrap() > 0);
    for r in rows {
        let schemes = r["schemes"].as_array().unwrap();
        assert_eq!(schemes.len(), 4);
    }
    // Deterministic.
    assert_eq!(sim(&["--output", "json"]).stdout, json.stdout);
}

#[test]
fn compare_host_pages_rejects_bad_input_with_exit_2() {
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["sim", "--compare-host-pages", "--footprint", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("footprint").or(predicate::str::contains("0")));
}
