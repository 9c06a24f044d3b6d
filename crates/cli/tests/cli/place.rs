//! Integration tests of `compromis place`.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn place() -> Command {
    let mut c = Command::cargo_bin("compromis").unwrap();
    c.arg("place");
    c
}

/// The golden scenario of the cluster crate as an Azure vmtable: two 8-GiB hosts, V0..V3 of
/// 2 GiB at t=0 (running at the trace start), 300, 600, 900; V1 leaves at 1200, V3 at 1500; V4 of
/// 4 GiB arrives at 1800 and leaves at 2100; V0 and V2 leave at 3000.
const SCENARIO: &str = "v0,s,d,0,3000,1,1,1,Interactive,1,2\nv1,s,d,300,1200,1,1,1,Interactive,1,2\n\
v2,s,d,600,3000,1,1,1,Interactive,1,2\nv3,s,d,900,1500,1,1,1,Interactive,1,2\nv4,s,d,1800,2100,1,1,1,Interactive,2,4\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn golden_csv_of_the_hand_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let t = write(dir.path(), "vmtable.csv", SCENARIO);
    // first-fit puts V0..V3 on host 0; after V1 and V3 leave, host 0 has 4 GiB free in two holes
    // and still takes V4, in 2 extents, 3 register sets (its 4 GiB straddle the MMIO hole and the
    // second extent crosses it): 4 of 5 VMs single-segment (0.8), one host used.
    // contig-first-fit sends V4 to host 1: 5 of 5, two hosts used. Utilisation samples every
    // 600 s up to the last arrival (t=1800): 0, 4/16, 8/16, 4/16 -> mean 0.25; fragmentation
    // 0, 0, 0 and, at 1800, 1 - (2+8)/(4+8) = 1/6 -> mean 1/24 = 0.041667. Peak use: 8 of 16 GiB.
    let expected = "\
first-fit,segments:8,2,10,5,1,5,4,0.800000,1:4 3:1,0,0,0,0,0,0,5,0,0,0,0,0,4,1,0.250000,0.041667,0,1,0,0.500000,
contig-first-fit,segments:8,2,10,5,1,5,5,1.000000,1:5,0,0,0,0,0,0,5,0,0,0,0,0,4,2,0.250000,0.041667,0,0,0,0.500000,
";
    let out = place()
        .args([
            "--format",
            "azure",
            "--hosts",
            "2x8GiB/8c",
            "--compare",
            "first-fit,contig-first-fit",
            "--output",
            "csv",
            "--sample-interval",
            "600",
        ])
        .arg("--trace")
        .arg(&t)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let mut lines = out.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("policy,fallback,hosts,events,arrivals")
    );
    // Every row ends with the provenance columns (version, commit, command line): left out here.
    let rows: Vec<String> = lines
        .map(|l| {
            let rec = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(l.as_bytes())
                .records()
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(&rec[rec.len() - 3], env!("CARGO_PKG_VERSION"));
            assert!(rec[rec.len() - 1].starts_with("compromis place --format azure"));
            rec.iter().take(rec.len() - 3).collect::<Vec<_>>().join(",")
        })
        .collect();
    assert_eq!(rows.join("\n") + "\n", expected);
}

#[test]
fn target_utilization_sizes_the_fleet_and_paging_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = write(dir.path(), "vmtable.csv", SCENARIO);
    // The scenario's peak demand is 8 GiB (V0..V3 before t=1200, V0 V2 V4 at 1800): at 25 % of
    // 8-GiB hosts that is 4 hosts, at 100 % one host. On one host V4 fits only in the two 2-GiB
    // holes: with at most one segment it runs paged, with `reject` it is refused.
    let run = |u: &str, fb: &str| {
        let out = place()
            .args([
                "--trace-format",
                "azure",
                "--hosts",
                "1x8GiB/8c",
                "--output",
                "json",
            ])
            .args([
                "--policy",
                "first-fit",
                "--target-utilization",
                u,
                "--fallback",
                fb,
            ])
            .arg("--trace")
            .arg(&t)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v[0].clone()
    };
    let r = run("0.25", "segments:8");
    assert_eq!(
        (r["hosts"].as_u64(), r["peak_demand_bytes"].as_u64()),
        (Some(4), Some(8 << 30))
    );
    assert_eq!(r["peak_mem_utilisation"], 0.25);
    let r = run("1", "segments:1");
    assert_eq!(r["hosts"], 1);
    assert_eq!(
        (
            r["placed"].as_u64(),
            r["paged"].as_u64(),
            r["multi_segment"].as_u64()
        ),
        (Some(5), Some(1), Some(0))
    );
    let r = run("1", "reject");
    assert_eq!(
        (r["placed"].as_u64(), r["paged"].as_u64()),
        (Some(4), Some(0))
    );
    place()
        .args([
            "--trace-format",
            "azure",
            "--target-utilization",
            "1.5",
            "--trace",
        ])
        .arg(&t)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "target utilisation 1.5 is not in (0, 1]",
        ));
    place()
        .args([
            "--hosts",
            "1x8GiB/8c,1x16GiB/8c",
            "--target-utilization",
            "0.5",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("one host kind"));
}

#[test]
fn default_synthetic_run_table_and_json() {
    place().assert().success().stdout(
        predicate::str::contains("single-segment share")
            .and(predicate::str::contains("contig-first-fit")),
    );
    let out = place()
        .args([
            "--vms",
            "500",
            "--output",
            "json",
            "--compare",
            "best-fit,frag-aware",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let runs = v.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["policy"], "best-fit");
    assert_eq!(runs[1]["policy"], "frag-aware");
    assert_eq!(runs[1]["arrivals"], 500);
    assert!(runs[1]["single_segment_share"].as_f64().unwrap() > 0.9);
}

#[test]
fn deterministic_output() {
    let run = || {
        place()
            .args([
                "--vms",
                "2000",
                "--seed",
                "7",
                "--compare",
                "random,first-fit,segment-best-fit",
                "--output",
                "csv",
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    assert_eq!(run(), run());
}

#[test]
fn svg_plots_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("plots");
    place()
        .args([
            "--vms",
            "300",
            "--compare",
            "first-fit,contig-first-fit",
            "--svg",
        ])
        .arg(&svg)
        .assert()
        .success();
    for f in ["single_segment_share.svg", "fragmentation.svg"] {
        let text = std::fs::read_to_string(svg.join(f)).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("contig-first-fit"),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&svg).unwrap().count(),
        2,
        "no temporary file left"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let t = write(dir.path(), "vmtable.csv", SCENARIO);
    place()
        .args(["--format", "nope", "--trace"])
        .arg(&t)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("unknown trace format 'nope'")
                .and(predicate::str::contains("google2011")),
        );
    place()
        .arg("--trace")
        .arg(&t)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--trace-format"));
    place()
        .args(["--policy", "fastest"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("segment-best-fit"));
    place()
        .args(["--hosts", "3x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad host group"));
    place()
        .args(["--format", "azure", "--trace", "/nonexistent/x.csv"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/x.csv"));
    let bad = write(
        dir.path(),
        "bad.csv",
        &format!(
            "{SCENARIO}v5,s,d,-60,100,1,1,1,x,1,2\nv6,s,d,100,50,1,1,1,x,1,2\nv7,s,d,100,200,1,1,1,x,1\n"
        ),
    );
    place()
        .args(["--format", "azure", "--hosts", "2x8GiB/8c", "--trace"])
        .arg(&bad)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("bad.csv line 6")
                .and(predicate::str::contains("negative vmcreated '-60'")),
        );
    let out = place()
        .args([
            "--format",
            "azure",
            "--hosts",
            "2x8GiB/8c",
            "--skip-bad-rows",
            "--output",
            "json",
            "--trace",
        ])
        .arg(&bad)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["bad_rows"], 3);
    let ex = v[0]["bad_row_examples"].to_string();
    assert!(
        ex.contains("line 7")
            && ex.contains("before arrival")
            && ex.contains("line 8")
            && ex.contains("missing column vmmemory"),
        "{ex}"
    );
}

#[test]
fn vm_larger_than_every_host_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = write(
        dir.path(),
        "big.csv",
        "a,s,d,0,100,1,1,1,x,1,2\nb,s,d,10,100,1,1,1,x,1,>64\n",
    );
    place()
        .args([
            "--format",
            "azure",
            "--hosts",
            "2x64GiB/8c",
            "--output",
            "csv",
            "--trace",
        ])
        .arg(&t)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "contig-first-fit,segments:8,2,4,2,1,1,1,1.000000,1:1,1,1,",
        ));
}

#[test]
fn real_traces_when_present() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if !data.is_dir() {
        eprintln!("note: {} absent, test skipped", data.display());
        return;
    }
    place()
        .args(["--format", "azure", "--hosts", "4x192GiB/24c", "--trace"])
        .arg(data.join("azure-vmtable-sample/vmtable.csv.gz"))
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"arrivals\s+10\n").unwrap());
    place()
        .args([
            "--format",
            "bitbrains",
            "--hosts",
            "4x192GiB/64c",
            "--fallback",
            "compact",
            "--trace",
        ])
        .arg(data.join("bitbrains-rnd"))
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"larger-than-any-host\s+1\n").unwrap());
}
