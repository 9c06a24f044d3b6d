//! `compromis sweep` (issue 14): resume after a kill, shards and merge, Parquet against CSV,
//! Slurm scripts, bad specs; and the provenance and output routing of `sim`, `place`, `record`.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn compromis() -> Command {
    Command::cargo_bin("compromis").unwrap()
}

/// A small `sim` sweep of 2 x 2 x 2 = 8 points (a few tenths of a second each).
const SIM_SPEC: &str = r#"
command = "sim"
seeds = [1, 2]

[flags]
footprint = "16MiB"
accesses = 20000
schemes = ["ept", "compromis"]

[sweep]
workload = ["gups", "stream"]
"machine.cache.dram_latency" = [150, 300]
"#;

fn write_spec(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("spec.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run_sweep(spec: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let out = compromis()
        .arg("sweep")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn finished(out: &Path) -> usize {
    std::fs::read_dir(out.join("points"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("run.json").is_file())
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn local_run_writes_a_typed_tidy_table_and_run_json() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SIM_SPEC);
    let out = dir.path().join("o");
    run_sweep(&spec, &out, &["--jobs", "2"]);
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        &header[..5],
        [
            "point",
            "workload",
            "machine_cache_dram_latency",
            "seed",
            "source"
        ]
    );
    assert!(header.iter().all(|h| {
        h.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }));
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    // One row per point and scheme.
    assert_eq!(rows.len(), 8 * 2);
    // Numeric columns hold plain numbers.
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for row in &rows {
        for name in [
            "machine_cache_dram_latency",
            "total_cycles",
            "overhead",
            "walks",
        ] {
            row[col(name)].parse::<f64>().unwrap();
        }
    }
    // The memory latency reaches the simulator: the same point at 300 cycles costs more.
    let cycles = |point: &str| -> f64 {
        rows.iter()
            .find(|r| &r[0] == point && &r[col("scheme")] == "ept")
            .unwrap()[col("total_cycles")]
        .parse()
        .unwrap()
    };
    assert!(
        cycles("2") > cycles("0"),
        "DRAM latency 300 must cost more than 150"
    );
    // Parquet holds the same values.
    let back =
        compromis_sweep::table::read_parquet(std::fs::read(out.join("table.parquet")).unwrap())
            .unwrap();
    assert_eq!(back.header, header);
    let csv_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(back.rows, csv_rows);
    // run.json: parameters, resolved machine model, version, commit, seed, wall time.
    let p = std::fs::read_dir(out.join("points"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("p0002-")
        })
        .unwrap();
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["point"]["seed"], 1);
    assert_eq!(run["machine"]["cache"]["dram_latency"], 300);
    assert_eq!(run["provenance"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(run["provenance"]["git_commit"].as_str().unwrap().len() >= 7);
    assert!(run["wall_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(run["spec_sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn killed_sweep_resumes_to_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SIM_SPEC);
    let full = dir.path().join("full");
    run_sweep(&spec, &full, &["--jobs", "2"]);
    // Kill a one-job run after its first finished point.
    let out = dir.path().join("killed");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("compromis"))
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .args(["--jobs", "1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while finished(&out) == 0 && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = finished(&out);
    assert!(
        (1..8).contains(&done),
        "{done} points finished before the kill"
    );
    assert!(!out.join("table.csv").exists());
    // The rerun skips the finished points and gives the table of an uninterrupted run.
    let rerun = run_sweep(&spec, &out, &["--jobs", "2"]);
    let err = String::from_utf8_lossy(&rerun.stderr);
    assert!(
        err.contains(&format!(
            "{} run, {done} already finished (skipped)",
            8 - done
        )),
        "{err}"
    );
    for f in ["table.csv", "table.parquet"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(full.join(f)).unwrap(),
            "{f}"
        );
    }
    // A third run has nothing to do.
    let again = run_sweep(&spec, &out, &[]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 run, 8 already finished"));
}

#[test]
fn shards_merge_to_the_local_table() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SIM_SPEC);
    let local = dir.path().join("local");
    run_sweep(&spec, &local, &[]);
    let mut dirs = Vec::new();
    for i in 0..3 {
        let d = dir.path().join(format!("shard{i}"));
        let out = run_sweep(&spec, &d, &["--shard", &format!("{i}/3")]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("table not written yet"));
        assert!(!d.join("table.csv").exists());
        dirs.push(d);
    }
    let merged = dir.path().join("merged");
    compromis()
        .args(["sweep", "merge"])
        .args(&dirs)
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    for f in ["table.csv", "table.parquet"] {
        assert_eq!(
            std::fs::read(merged.join(f)).unwrap(),
            std::fs::read(local.join(f)).unwrap(),
            "{f}"
        );
    }
    // Missing shards are named, not silently dropped.
    compromis()
        .args(["sweep", "merge"])
        .arg(&dirs[0])
        .arg(&dirs[1])
        .arg("--out")
        .arg(dir.path().join("partial"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("points are not finished"));
}

#[test]
fn place_sweeps_give_one_row_per_point_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "command = \"place\"\nseeds = [3]\n[flags]\nvms = 300\nhosts = \"20x192GiB/48c\"\ncompare = [\"first-fit\", \"contig-first-fit\"]\n[sweep]\nfallback = [\"refuse\", \"segments:8\"]\n",
    );
    let out = dir.path().join("o");
    run_sweep(&spec, &out, &[]);
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    // `fallback` is also a result column: the result's value is kept, once.
    assert_eq!(header.iter().filter(|h| *h == "fallback").count(), 1);
    assert_eq!(&header[..3], ["point", "seed", "policy"]);
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4);
    let share = header
        .iter()
        .position(|h| h == "single_segment_share")
        .unwrap();
    for row in &rows {
        let v: f64 = row[share].parse().unwrap();
        assert!((0.0..=1.0).contains(&v));
    }
}

#[test]
fn bad_specs_exit_2_naming_file_line_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "command = \"sim\"\n[sweep]\nhost-pages = [\"4k\", \"3m\"]\n",
    );
    compromis()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(dir.path().join("o"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("spec.toml").and(predicate::str::contains("3m")));
    // Nothing ran: the points are checked before any runs.
    assert!(!dir.path().join("o").join("points").exists());
    let spec = write_spec(dir.path(), "command = \"sim\"\n[flags]\nseed = 4\n");
    compromis()
        .arg("sweep")
        .arg(&spec)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 3").and(predicate::str::contains("seeds")));
}

#[test]
fn slurm_script_has_one_task_per_shard() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SIM_SPEC);
    let out = dir.path().join("o");
    compromis()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .args([
            "--slurm",
            "--shards",
            "4",
            "--jobs",
            "1",
            "--sbatch=--time=5",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("sbatch"));
    let s = std::fs::read_to_string(out.join("sweep.sbatch")).unwrap();
    assert!(s.contains("#SBATCH --array=0-3\n"), "{s}");
    assert!(s.contains("#SBATCH --time=5\n"), "{s}");
    assert!(s.contains("--shard \"${SLURM_ARRAY_TASK_ID}/4\""), "{s}");
    assert_eq!(finished(&out), 0);
}

/// A single-node Slurm (munge, slurmctld, slurmd) started by tests/slurm/run-sweep.sh runs a
/// 4-shard sweep through `sbatch`; the merged table must equal the local run's byte for byte.
#[test]
fn slurm_job_array_equals_the_local_run() {
    let have = |p: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for p in ["slurmctld", "slurmd", "munged", "sbatch"] {
        if !have(p) {
            eprintln!("skipping: {p} not found (apt-get install slurm-wlm munge)");
            return;
        }
    }
    // SAFETY-free check for root: slurmd must run as root to launch jobs.
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipping: the Slurm test starts slurmd and must run as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SIM_SPEC);
    let local = dir.path().join("local");
    run_sweep(&spec, &local, &[]);
    let out = dir.path().join("slurm");
    compromis()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .args(["--slurm", "--shards", "4", "--jobs", "1"])
        .assert()
        .success();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/run-sweep.sh");
    let st = std::process::Command::new("bash")
        .arg(&script)
        .arg(dir.path().join("slurm-state"))
        .arg(out.join("sweep.sbatch"))
        .status()
        .unwrap();
    if st.code() == Some(77) {
        eprintln!("skipping: the single-node Slurm did not start (see the script's output)");
        return;
    }
    assert!(st.success(), "run-sweep.sh failed: {st}");
    assert_eq!(finished(&out), 8);
    compromis()
        .args(["sweep", "merge"])
        .arg(&out)
        .assert()
        .success();
    for f in ["table.csv", "table.parquet"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(local.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn sim_output_file_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    compromis()
        .args([
            "sim",
            "--footprint",
            "16MiB",
            "--accesses",
            "10000",
            "--output",
            "json",
            "-o",
        ])
        .arg(&json)
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["provenance"]["tool"], "compromis");
    assert_eq!(v["provenance"]["args"][0], "sim");
    assert!(v["schemes"].is_array());
    let csv_out = compromis()
        .args([
            "sim",
            "--footprint",
            "16MiB",
            "--accesses",
            "10000",
            "--output",
            "csv",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(csv_out.stdout).unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let h = r.headers().unwrap().clone();
    let tail: Vec<&str> = h.iter().skip(h.len() - 3).collect();
    assert_eq!(tail, ["compromis_version", "git_commit", "command_line"]);
    let row = r.records().next().unwrap().unwrap();
    assert!(row[h.len() - 1].starts_with("compromis sim --footprint 16MiB"));
    // A failed run leaves no file.
    let bad = dir.path().join("bad.json");
    compromis()
        .args(["sim", "--footprint", "64GiB", "--vm-memory", "1GiB", "-o"])
        .arg(&bad)
        .assert()
        .code(2);
    assert!(!bad.exists());
}

#[test]
fn place_output_file_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.json");
    compromis()
        .args([
            "place",
            "--vms",
            "100",
            "--hosts",
            "5x192GiB/48c",
            "--output",
            "json",
            "--output-file",
        ])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    assert_eq!(v[0]["provenance"]["args"][0], "place");
    assert!(v[0]["placed"].as_u64().unwrap() > 0);
}

/// `record`: the program's output never mixes with the results; `-o` and `--program-output`.
#[test]
fn record_keeps_program_output_apart() {
    let qemu = std::process::Command::new("qemu-x86_64")
        .arg("-h")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("-plugin"));
    let valgrind = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let tracers: Vec<&str> = [("qemu", qemu), ("lackey", valgrind)]
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(t, _)| *t)
        .collect();
    if tracers.is_empty() {
        eprintln!("skipping: neither qemu-user with plugins nor valgrind is installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "30303\n10101\n20202\n").unwrap();
    for t in tracers {
        // Default: the sorted numbers go to stderr; stdout is a CSV whose first line is the header.
        let out = compromis()
            .args(["record", "--tracer", t, "--output", "csv", "--", "sort"])
            .arg(&input)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.starts_with("source,scheme,"), "{t}: {stdout}");
        assert!(!stdout.contains("10101"), "{t}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("10101\n20202\n30303"),
            "{t}"
        );
        // --program-output FILE and -o FILE: nothing on stdout.
        let prog = dir.path().join(format!("{t}.out"));
        let res = dir.path().join(format!("{t}.json"));
        let out = compromis()
            .args([
                "record",
                "--tracer",
                t,
                "--output",
                "json",
                "--program-output",
            ])
            .arg(&prog)
            .arg("-o")
            .arg(&res)
            .arg("--")
            .arg("sort")
            .arg(&input)
            .output()
            .unwrap();
        assert!(out.status.success(), "{t}");
        assert!(out.stdout.is_empty(), "{t}");
        assert_eq!(
            std::fs::read_to_string(&prog).unwrap(),
            "10101\n20202\n30303\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&res).unwrap()).unwrap();
        assert_eq!(v["provenance"]["args"][0], "record", "{t}");
        // A program that cannot start: exit 1, its error on stderr, no tables.
        compromis()
            .args([
                "record",
                "--tracer",
                t,
                "--output",
                "csv",
                "--",
                "/nonexistent/program",
            ])
            .assert()
            .code(1)
            .stdout(predicate::str::is_empty())
            .stderr(predicate::str::contains("/nonexistent/program"));
    }
}

#[test]
fn hv_and_trace_inspect_write_their_results_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hv.txt");
    compromis()
        .args(["hv", "--quiet", "-o"])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
    let text = std::fs::read_to_string(&f).unwrap();
    let stdout = compromis().args(["hv", "--quiet"]).output().unwrap().stdout;
    assert_eq!(text, String::from_utf8(stdout).unwrap());
    let trace = dir.path().join("t.lackey");
    std::fs::write(&trace, "I  00400000,4\n L 7ff000000,8\n S 7ff001000,8\n").unwrap();
    let out = dir.path().join("stats.json");
    compromis()
        .args(["trace", "inspect", "--output", "json"])
        .arg(&trace)
        .arg("-o")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        (v["records"].as_u64(), v["stores"].as_u64()),
        (Some(3), Some(1)),
        "{v}"
    );
}
