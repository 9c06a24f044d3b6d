//! `compromis reproduce --quick`: the report's files exist, its tables agree with the raw results,
//! and bad input is a clear error.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use std::path::Path;

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn csv_rows(dir: &Path, name: &str) -> usize {
    read(dir, name).lines().count() - 1
}

/// Runs the quick report once (no real traces: the data folder given does not exist) and checks
/// the files against `results.json`.
#[test]
fn quick_report_is_consistent_with_its_raw_results() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["reproduce", "--quick", "--seed", "7", "--data"])
        .arg(tmp.path().join("no-data-here"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("README.md"));

    for f in compromis_repro::CSV_FILES
        .iter()
        .chain(&compromis_repro::SVG_FILES)
        .chain(&["results.json", "README.md"])
    {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    for f in compromis_repro::SVG_FILES {
        assert!(read(&out, f).starts_with("<svg"), "{f} is not SVG");
    }
    // No temporary file left behind.
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "leftover {name}");
    }

    let json: Value = serde_json::from_str(&read(&out, "results.json")).unwrap();
    let readme = read(&out, "README.md");
    assert_eq!(json["config"]["seed"], 7);
    assert_eq!(json["config"]["quick"], true);

    // Section 1: 4 schemes x 2 guest x 3 host pages; the caches-off column is the closed form.
    let walk = json["walk_refs"].as_array().unwrap();
    assert_eq!(walk.len(), 24);
    assert_eq!(csv_rows(&out, "walk_refs.csv"), 24);
    for w in walk {
        let closed = w["closed_form"].as_u64().unwrap();
        let walks = w["walks_off"].as_u64().unwrap();
        assert!(walks > 0);
        assert_eq!(w["refs_off"].as_u64().unwrap(), closed * walks, "{w}");
        assert_eq!(w["agrees"], true);
        // The README row shows the closed form and the simulated value side by side.
        let row = format!(
            "| {} | {} | {} | {} | {} | {closed} | {closed}.00 | yes |",
            w["scheme"].as_str().unwrap(),
            w["guest"].as_str().unwrap(),
            w["host"].as_str().unwrap(),
            w["n"],
            w["m"]
        );
        assert!(readme.contains(&row), "README lacks {row}");
    }
    let ept44 = walk
        .iter()
        .find(|w| w["scheme"] == "ept" && w["guest"] == "4k" && w["host"] == "4k")
        .unwrap();
    assert_eq!(ept44["closed_form"], 24);
    assert!(readme.contains("All 24 simulated caches-off values equal the closed form."));

    // Section 2: 6 workloads x 2 x 3, and the multi-process runs; speedups are cycle ratios.
    let runs = json["overheads"].as_array().unwrap();
    assert_eq!(runs.len(), 36);
    assert_eq!(csv_rows(&out, "overheads.csv"), 36);
    assert_eq!(
        csv_rows(&out, "multiprocess.csv"),
        json["multiprocess"].as_array().unwrap().len()
    );
    let mut best = 0.0f64;
    for r in runs.iter().chain(json["multiprocess"].as_array().unwrap()) {
        let cyc = |s: &str| {
            r["schemes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["scheme"] == s)
                .unwrap()["cycles"]
                .as_f64()
                .unwrap()
        };
        let sp = r["speedup_vs_ept"].as_f64().unwrap();
        assert!((sp - cyc("ept") / cyc("compromis")).abs() < 1e-9);
        best = best.max(sp);
    }
    assert!(readme.contains(&format!(
        "Largest speedup of Compromis over EPT: **{best:.3}x**"
    )));
    // Shadow paging shows CR3 exits in the multi-process runs.
    let mp = json["multiprocess"].as_array().unwrap();
    assert!(mp.iter().any(|r| r["schemes"][2]["scheme"] == "shadow"
        && r["schemes"][2]["exits_cr3_load"].as_u64().unwrap() > 0));
    // Every speedup over shadow stands beside shadow's exit rate; the largest one too.
    let shadow_of = |r: &serde_json::Value| r["schemes"][2].clone();
    let mut best_sh = (0.0f64, 0.0f64);
    for r in runs.iter().chain(mp) {
        let sh = shadow_of(r);
        assert_eq!(sh["scheme"], "shadow");
        let pki = sh["exits_pki"].as_f64().unwrap();
        assert!(sh["warmup_exits"].as_u64().is_some());
        let sp = r["speedup_vs_shadow"].as_f64().unwrap();
        assert!(
            readme.contains(&format!("| {pki:.2} | {sp:.3}x |")),
            "{pki} {sp}"
        );
        if sp >= best_sh.0 {
            best_sh = (sp, pki);
        }
    }
    let line = readme
        .lines()
        .find(|l| l.starts_with("Largest speedup of Compromis over shadow paging"))
        .unwrap();
    assert!(line.contains(&format!("**{:.3}x**", best_sh.0)), "{line}");
    assert!(
        line.contains(&format!(
            "shadow: {:.2} VM exits per 1,000 instructions",
            best_sh.1
        )),
        "{line}"
    );

    // Section 3: the synthetic trace under every policy; the real traces reported missing.
    let prov = json["provisioning"].as_array().unwrap();
    assert_eq!(prov.len(), 7);
    assert_eq!(csv_rows(&out, "provisioning.csv"), 7);
    for p in prov {
        let share = p["share"].as_f64().unwrap();
        let expect = p["single_segment"].as_f64().unwrap() / p["placed"].as_f64().unwrap();
        assert!((share - expect).abs() < 1e-12);
        assert!(readme.contains(&format!("| {:.2}% |", 100.0 * share)));
    }
    assert_eq!(json["traces_missing"].as_array().unwrap().len(), 4);

    // Section 4: 2 host pages x 5 fills x 2 fallbacks.
    assert_eq!(json["fragmentation"].as_array().unwrap().len(), 20);
    assert_eq!(csv_rows(&out, "fragmentation.csv"), 20);

    // Section 5: every claim with our figure, in the README too.
    let claims = json["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 4);
    for c in claims {
        assert!(readme.contains(c["ours"].as_str().unwrap()));
    }
    assert!(readme.contains("## 5. The paper beside us"));

    // Deterministic: the same seed gives byte-identical files, with the sections run at the
    // same time (above) or one after another; --timings writes only to stderr.
    let again = tmp.path().join("again");
    let timed = Command::cargo_bin("compromis")
        .unwrap()
        .args([
            "reproduce",
            "--quick",
            "--seed",
            "7",
            "--sequential",
            "--timings",
            "--data",
        ])
        .arg(tmp.path().join("no-data-here"))
        .arg("--out")
        .arg(&again)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&timed.get_output().stderr).into_owned();
    for stage in [
        "overheads",
        "fragmentation",
        "provisioning",
        "anchors",
        "sections",
    ] {
        assert!(stderr.contains(&format!("timing: {stage}")), "{stderr}");
    }
    assert!(!String::from_utf8_lossy(&timed.get_output().stdout).contains("timing:"));
    for f in compromis_repro::CSV_FILES
        .iter()
        .chain(&compromis_repro::SVG_FILES)
        .chain(&["results.json", "README.md"])
    {
        assert_eq!(
            read(&out, f),
            read(&again, f),
            "{f} differs between two runs"
        );
    }
}

/// With the real traces of `../shared/data` (skipped when absent), section 3 has a row per trace
/// and policy, plus the extra `--trace`.
#[test]
fn quick_report_with_real_traces() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if !data.join("azure-v1-rnn").is_dir() {
        eprintln!("note: {} absent, skipping", data.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["reproduce", "--quick", "--data"])
        .arg(&data)
        .args(["--trace-format", "bitbrains", "--trace"])
        .arg(data.join("bitbrains-rnd"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let json: Value = serde_json::from_str(&read(&out, "results.json")).unwrap();
    let prov = json["provisioning"].as_array().unwrap();
    let mut traces: Vec<&str> = prov.iter().map(|p| p["trace"].as_str().unwrap()).collect();
    traces.dedup();
    assert_eq!(
        traces,
        [
            "synthetic",
            "azure-v1-rnn",
            "google-2011",
            "alibaba-2018",
            "bitbrains-rnd",
            "bitbrains-rnd (bitbrains)"
        ]
    );
    assert_eq!(prov.len(), 6 * 7);
    assert!(json["traces_missing"].as_array().unwrap().is_empty());
    // Quick mode replays at most 50,000 events of each trace.
    assert!(prov.iter().all(|p| p["events"].as_u64().unwrap() <= 50_000));
}

#[test]
fn bad_trace_format_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.csv");
    std::fs::write(&trace, "x\n").unwrap();
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["reproduce", "--quick", "--trace-format", "nope", "--trace"])
        .arg(&trace)
        .arg("--out")
        .arg(tmp.path().join("o"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nope"));
    assert!(!tmp.path().join("o").exists());
}

#[test]
fn missing_trace_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["reproduce", "--quick", "--trace-format", "azure", "--trace"])
        .arg(tmp.path().join("absent.csv"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("absent.csv"));
}

#[test]
fn trace_needs_its_format() {
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["reproduce", "--trace", "x.csv"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--trace-format"));
}
