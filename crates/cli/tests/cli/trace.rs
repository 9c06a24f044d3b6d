//! `compromis trace inspect|convert` and `compromis record` end to end.

use crate::common::inspect_json;
use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn compromis() -> Command {
    Command::cargo_bin("compromis").unwrap()
}

/// Four records touching 0x400 and 0x408 (4 KiB page 0), 0x1000 (page 1) and 0x200000
/// (page 512, the second 2 MiB page): 3 distinct 4 KiB pages, 2 distinct 2 MiB pages; the modify
/// counts as one load and one store, so 5 accesses. Written in lackey's canonical layout so a
/// round trip through the native format reproduces it byte for byte.
const SMALL: &str = "I  00000400,3\n L 00001000,8\n M 00200000,4\n S 00000408,8\n";

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn inspect_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "s.lackey",
        &format!("==7== Lackey\n{SMALL}==7== done\n"),
    );
    compromis()
        .args(["trace", "inspect"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("accesses      5\n"))
        .stdout(predicate::str::contains("pages_4k      3\n"))
        .stdout(predicate::str::contains("pages_2m      2\n"))
        .stdout(predicate::str::contains("min_addr      0x400\n"))
        .stdout(predicate::str::contains("max_addr      0x200000\n"));
    // CSV: a header of names and one line of values (numbers plain).
    let out = compromis()
        .args(["trace", "inspect", "--format", "csv"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "file,records,instructions,fetches,loads,stores,modifies,accesses,skipped,pages_4k,pages_2m,footprint_bytes,min_addr,max_addr"
    );
    assert!(
        lines
            .next()
            .unwrap()
            .ends_with(",4,1,1,2,2,1,5,0,3,2,12288,1024,2097152"),
        "{csv}"
    );
    // The whole table is a contract (scripts read it): hand-derived from SMALL.
    let out = compromis()
        .args(["trace", "inspect"])
        .arg(&p)
        .output()
        .unwrap();
    let want = format!(
        "file          {}\n\
         records       4\n\
         instructions  1\n\
         fetches       1\n\
         loads         2\n\
         stores        2\n\
         modifies      1\n\
         accesses      5\n\
         skipped       0\n\
         pages_4k      3\n\
         pages_2m      2\n\
         footprint     12288 bytes (0.0 MiB)\n\
         min_addr      0x400\n\
         max_addr      0x200000\n",
        p.display()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let j = inspect_json(&p);
    assert_eq!(j["records"], 4);
    assert_eq!(j["instructions"], 1);
    assert_eq!(j["loads"], 2);
    assert_eq!(j["stores"], 2);
    assert_eq!(j["modifies"], 1);
    assert_eq!(j["footprint_bytes"], 3 * 4096);
    assert_eq!(j["skipped"], 0);
}

#[test]
fn convert_round_trip_and_champsim() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "s.lackey", SMALL);
    let native = dir.path().join("s.ctrace");
    let champsim = dir.path().join("s.champsim.xz");
    let back = dir.path().join("back.lackey");
    compromis()
        .args(["trace", "convert"])
        .arg(&src)
        .arg(&native)
        .assert()
        .success();
    compromis()
        .args(["trace", "convert"])
        .arg(&native)
        .arg(&back)
        .args(["--to", "lackey"])
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&back).unwrap(), SMALL);
    compromis()
        .args(["trace", "convert"])
        .arg(&native)
        .arg(&champsim)
        .assert()
        .success()
        .stdout(predicate::str::contains("dropped 0"));
    // One 64-byte ChampSim record, xz-compressed (detected by magic, not by name).
    let j = inspect_json(&champsim);
    assert_eq!(j["accesses"], 5);
    assert_eq!(j["instructions"], 1);
}

#[test]
fn unknown_output_format_lists_valid_values() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "s.lackey", SMALL);
    compromis()
        .args(["trace", "convert"])
        .arg(&src)
        .arg(dir.path().join("o"))
        .args(["--to", "csv"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("lackey, champsim, native"));
    compromis()
        .args(["trace", "convert"])
        .arg(&src)
        .arg(dir.path().join("o.bin"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--to"));
    assert!(!dir.path().join("o.bin").exists());
}

#[test]
fn bad_input_names_file_and_line_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.lackey",
        "I  400,3\n L 1000,8\nnot a trace line\n S 4zz,8\n",
    );
    compromis()
        .args(["trace", "inspect"])
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.lackey, line 3"))
        .stderr(predicate::str::contains("not a trace line"));
    let out = dir.path().join("x.ctrace");
    compromis()
        .args(["trace", "convert"])
        .arg(&p)
        .arg(&out)
        .assert()
        .code(2);
    assert!(
        !out.exists(),
        "a failed convert must not leave an output file"
    );
    compromis()
        .args(["trace", "inspect", "--skip-bad-records"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("skipped       2\n"))
        .stdout(predicate::str::contains("accesses      2\n"));
}

#[test]
fn wrong_magic_and_truncated_binary() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.ctrace", "definitely not a native trace");
    compromis()
        .args(["trace", "inspect"])
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "bad.ctrace has a wrong magic number",
        ));
    // 70 bytes of ChampSim: one record and 6 stray bytes.
    let mut bytes = vec![0u8; 70];
    bytes[0] = 0x10;
    bytes[8] = 1; // not text: detected as ChampSim
    let p = dir.path().join("t.champsim");
    std::fs::write(&p, &bytes).unwrap();
    compromis()
        .args(["trace", "inspect"])
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "t.champsim is truncated at byte 64",
        ));
}

fn valgrind_missing() -> bool {
    let ok = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("valgrind not installed: skipping");
    }
    !ok
}

/// Counts the accesses of a lackey log as the simulator sees them (a modify is a load and a store).
fn lackey_accesses(log: &str) -> u64 {
    log.lines()
        .map(|l| {
            if l.starts_with("I  ") || l.starts_with(" L ") || l.starts_with(" S ") {
                1
            } else if l.starts_with(" M ") {
                2
            } else {
                0
            }
        })
        .sum()
}

#[test]
fn record_sort_matches_lackey() {
    if valgrind_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 300 numbers in a scrambled, deterministic order.
    let input: String = (0..300u32)
        .map(|i| format!("{}\n", (i * 7919) % 300))
        .collect();
    let inp = write(dir.path(), "in.txt", &input);
    let saved = dir.path().join("sort.ctrace");
    let path = std::env::var("PATH").unwrap_or_default();
    let out = compromis()
        .env_clear()
        .env("PATH", &path)
        .env("LC_ALL", "C")
        .args(["record", "--tracer", "lackey"])
        .arg("--save")
        .arg(&saved)
        // JSON output, and every translation checked against the reference composition.
        .args(["--format", "json", "--verify"])
        // `-S`: a fixed buffer (without it sort sizes its buffer from the free memory of the
        // moment, `sysinfo`), so that the two runs below do the same work as far as we can fix it.
        .args(["--", "sort", "-S", "1M", "-n"])
        .arg(&inp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The program's own stdout is intact, on stderr (issue 14: stdout holds only the results),
    // and not mixed with valgrind's commentary.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sorted: String = (0..300u32).map(|i| format!("{i}\n")).collect();
    assert!(stderr.contains(&sorted), "{stderr}");
    assert!(stdout.starts_with('{'), "{stdout}");
    assert!(
        !stderr.contains("=="),
        "valgrind commentary in the program's output"
    );

    // The same run, straight under lackey (same environment, arguments and directory).
    let log = dir.path().join("lackey.log");
    // `output()` as above: stdin closed, stdout and stderr pipes (sort looks at its stdout).
    let st = std::process::Command::new("valgrind")
        .env_clear()
        .env("PATH", &path)
        .env("LC_ALL", "C")
        .args(["--tool=lackey", "--trace-mem=yes"])
        .arg(format!("--log-file={}", log.display()))
        .args(["sort", "-S", "1M", "-n"])
        .arg(&inp)
        .output()
        .unwrap();
    assert!(st.status.success());
    assert!(String::from_utf8_lossy(&st.stdout).starts_with(&sorted));
    let want = lackey_accesses(&std::fs::read_to_string(&log).unwrap());
    assert!(want > 10_000, "{want}");
    let j = inspect_json(&saved);
    // Two runs of the program, not one: in the full test suite (other tests running in parallel)
    // the recorded run has done 114 or 228 accesses more than the direct one (1,004,418 against
    // 1,004,304; 1,003,306 against 1,003,078), never alone or under CPU load; the cause is not
    // found (a multiple of 114: a path of sort's taken once or twice more, it seems). So the two
    // runs agree within 0.1% (about 1,000 accesses), and the simulator's count is compared
    // exactly with the saved trace's below.
    let got = u(&j["accesses"]);
    assert!(
        got.abs_diff(want) * 1000 <= want,
        "recorded {got} accesses, lackey alone {want}"
    );
    assert_eq!(j["skipped"], 0);
    // The simulator saw exactly those accesses, under every scheme.
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let schemes = json["schemes"].as_array().unwrap();
    assert_eq!(schemes.len(), 4, "{json}");
    for s in schemes {
        let n =
            s["warmup"]["accesses"].as_u64().unwrap() + s["measured"]["accesses"].as_u64().unwrap();
        assert_eq!(n, got, "{}", s["scheme"]);
    }
}

#[test]
fn record_reports_failing_program() {
    if valgrind_missing() {
        return;
    }
    compromis()
        .args(["record", "--tracer", "lackey", "--", "false"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("exit status: 1"));
}

#[test]
fn ctrl_c_leaves_no_valgrind_behind() {
    if valgrind_missing() {
        return;
    }
    crate::common::interrupt_record("lackey", "37.4242");
}

/// `compromis record --tracer lackey --output json --schemes native ARGS -- CMD`: (stdout JSON, stderr).
fn record_json(dir: &Path, args: &[&str], cmd: &[&str]) -> (serde_json::Value, String) {
    let path = std::env::var("PATH").unwrap_or_default();
    let out = compromis()
        .current_dir(dir)
        .env_clear()
        .env("PATH", &path)
        .env("LC_ALL", "C")
        .args([
            "record",
            "--tracer",
            "lackey",
            "--output",
            "json",
            "--schemes",
            "native",
        ])
        .args(args)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The program's own output (if any) comes first; the JSON document starts at a line "{".
    let start = stdout.find("\n{").map_or(0, |i| i + 1);
    let json = serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (json, stderr)
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Accesses the simulator saw (warm-up and measured), first scheme.
fn simulated_accesses(j: &serde_json::Value) -> u64 {
    let s = &j["schemes"][0];
    u(&s["warmup"]["accesses"]) + u(&s["measured"]["accesses"])
}

fn context_switches(j: &serde_json::Value) -> u64 {
    let s = &j["schemes"][0];
    u(&s["warmup"]["context_switches"]) + u(&s["measured"]["context_switches"])
}

/// Issue 16: through a wrapper script that execs, and through `env A=1`, the trace is the
/// program's (its records and footprint within the wrapper's share of recording it directly).
#[test]
fn record_follows_exec_through_a_wrapper_script_and_env() {
    if valgrind_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input: String = (0..300u32)
        .map(|i| format!("{}\n", (i * 7919) % 300))
        .collect();
    write(dir.path(), "in.txt", &input);
    let wrapper = write(
        dir.path(),
        "wrap.sh",
        "#!/bin/sh\n# a launcher\nexec \"$@\"\n",
    );
    let mut perm = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&wrapper, perm).unwrap();

    let (direct, _) = record_json(
        dir.path(),
        &["--save", "direct.ctrace"],
        &["sort", "-n", "in.txt"],
    );
    let (wrapped, err) = record_json(
        dir.path(),
        &["--save", "wrapped.ctrace"],
        &["./wrap.sh", "sort", "-n", "in.txt"],
    );
    let (env, env_err) = record_json(
        dir.path(),
        &["--save", "env.ctrace"],
        &["env", "A=1", "sort", "-n", "in.txt"],
    );
    let program_records = |j: &serde_json::Value| {
        let procs = j["record"]["processes"].as_array().unwrap();
        assert_eq!(procs.len(), 1, "{j}");
        let images = procs[0]["images"].as_array().unwrap();
        (
            images
                .iter()
                .map(|i| i["command"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
            images.iter().map(|i| u(&i["records"])).collect::<Vec<_>>(),
        )
    };
    let (cmds, d) = program_records(&direct);
    assert_eq!(cmds, vec!["sort -n in.txt"]);
    for (j, stderr, first) in [
        (&wrapped, &err, "./wrap.sh sort -n in.txt"),
        (&env, &env_err, "env A=1 sort -n in.txt"),
    ] {
        let (cmds, r) = program_records(j);
        assert_eq!(cmds.len(), 2, "{j}");
        assert_eq!(cmds[0], first);
        assert!(cmds[1].ends_with("sort -n in.txt"), "{cmds:?}");
        // The program's own part matches the direct recording within 1%.
        let diff = r[1].abs_diff(d[0]);
        assert!(diff * 100 <= d[0], "program {} vs direct {}", r[1], d[0]);
        assert_eq!(u(&j["record"]["simulated_records"]), r[0] + r[1]);
        assert!(stderr.contains(&format!("exec {}", cmds[1])), "{stderr}");
        assert!(!stderr.contains("warning"), "{stderr}");
        // One exec: one switch to a fresh address space.
        assert_eq!(context_switches(j), 1);
    }
    // Footprint: the program's pages, plus at most the wrapper's.
    let pages = |f: &str| u(&inspect_json(&dir.path().join(f))["pages_4k"]);
    let (pd, pw, pe) = (
        pages("direct.ctrace"),
        pages("wrapped.ctrace"),
        pages("env.ctrace"),
    );
    let records = |f: &str| u(&inspect_json(&dir.path().join(f))["records"]);
    assert_eq!(records("direct.ctrace"), d[0]);
    let (_, rw) = program_records(&wrapped);
    assert_eq!(records("wrapped.ctrace"), rw[0] + rw[1]);
    for p in [pw, pe] {
        assert!(
            p >= pd && p <= pd * 2,
            "direct {pd} pages, through a launcher {p}"
        );
    }
}

/// Compiles `crates/trace/tests/data/fork4.c` (four forked workers), or says why not.
fn fork4(dir: &Path) -> Option<std::path::PathBuf> {
    let src = write(
        dir,
        "fork4.c",
        include_str!("../../../trace/tests/data/fork4.c"),
    );
    let bin = dir.join("fork4");
    let ok = std::process::Command::new("cc")
        .args(["-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("no C compiler (cc): skipping");
    }
    ok.then_some(bin)
}

/// Issue 16: a forking program under each `--children` mode.
#[test]
fn record_forking_program_under_each_children_mode() {
    if valgrind_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = fork4(dir.path()) else {
        return;
    };
    let bin = bin.to_str().unwrap();
    // none (the default): only the parent is simulated; its children are silent.
    let (j, err) = record_json(dir.path(), &["--save", "none.ctrace"], &[bin]);
    let procs = j["record"]["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{err}");
    assert_eq!(j["record"]["children"], "none");
    let parent = u(&procs[0]["records"]);
    assert_eq!(
        u(&inspect_json(&dir.path().join("none.ctrace"))["records"]),
        parent
    );
    assert_eq!(context_switches(&j), 0);
    assert!(err.contains("--children none"), "{err}");

    // separate: five guest processes, one trace file each.
    let (j, err) = record_json(
        dir.path(),
        &["--children", "separate", "--save", "sep.ctrace"],
        &[bin],
    );
    let procs = j["record"]["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 5, "{err}");
    assert!(procs.iter().all(|p| p["simulated"] == true));
    assert!(
        procs[1..]
            .iter()
            .all(|p| p["forked"] == true && p["parent"] == procs[0]["pid"])
    );
    // The parent's own records are the same as under `none`.
    assert_eq!(u(&procs[0]["records"]), parent);
    let saved = j["record"]["saved"].as_array().unwrap();
    assert_eq!(saved.len(), 5, "{j}");
    for (p, s) in procs.iter().zip(saved) {
        let path = s["path"].as_str().unwrap();
        assert_eq!(s["pid"], p["pid"]);
        let records = u(&inspect_json(&dir.path().join(path))["records"]);
        assert_eq!(records, u(&p["records"]), "{path}");
    }
    assert!(
        saved[1]["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("sep.{}.ctrace", procs[1]["pid"]))
    );
    // Each worker stores 65536 times into 1 MiB of its own: at least 256 pages each.
    assert!(context_switches(&j) >= 4, "{}", context_switches(&j));
    let total: u64 = procs.iter().map(|p| u(&p["records"])).sum();
    assert_eq!(u(&j["record"]["simulated_records"]), total);

    // all: every record in one address space, no switches, one file.
    let (j, _) = record_json(
        dir.path(),
        &["--children", "all", "--save", "all.ctrace"],
        &[bin],
    );
    let procs = j["record"]["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 5);
    assert_eq!(context_switches(&j), 0);
    let total: u64 = procs.iter().map(|p| u(&p["records"])).sum();
    assert_eq!(
        u(&inspect_json(&dir.path().join("all.ctrace"))["records"]),
        total
    );
    assert!(simulated_accesses(&j) >= total);
}

/// Issue 16: an exec valgrind does not follow is reported.
#[test]
fn record_warns_about_an_exec_it_did_not_follow() {
    if valgrind_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (j, err) = record_json(
        dir.path(),
        &["--no-follow", "*/true"],
        &["sh", "-c", "exec /bin/true"],
    );
    assert!(
        err.contains("warning: pid") && err.contains("did not follow"),
        "{err}"
    );
    assert_eq!(j["record"]["warnings"].as_array().unwrap().len(), 1, "{j}");
}

/// Issue 15: a descendant still running when the traced program exits does not keep `record`
/// waiting.
#[test]
fn record_does_not_wait_for_a_background_descendant() {
    if valgrind_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Output into files, not pipes: the background `sleep` inherits them, and what is measured is
    // when `record` exits, not when the last holder of its stdout closes it.
    let out = dir.path().join("out.json");
    let err = dir.path().join("err.txt");
    let start = std::time::Instant::now();
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("compromis"))
        .current_dir(dir.path())
        .args([
            "record",
            "--tracer",
            "lackey",
            "--output",
            "json",
            "--schemes",
            "native",
            "--",
        ])
        .args(["sh", "-c", "sleep 29.4242 & exit 0"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    let took = start.elapsed();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(took.as_secs() < 25, "{took:?}: {stderr}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(u(&j["record"]["simulated_records"]) > 1000);
}

/// CSV output carries the processes after the results table.
#[test]
fn record_csv_lists_the_processes() {
    if valgrind_missing() {
        return;
    }
    let out = compromis()
        .args([
            "record",
            "--tracer",
            "lackey",
            "--output",
            "csv",
            "--schemes",
            "native",
            "--",
            "env",
            "A=1",
            "true",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (_, procs) = stdout.split_once("\n\n").unwrap();
    let lines: Vec<&str> = procs.lines().collect();
    assert_eq!(
        lines[0],
        "pid,parent,image,command,records,exited,simulated,compromis_version,git_commit,command_line"
    );
    assert_eq!(lines.len(), 3, "{procs}");
    // Rows end with the provenance columns (version, commit, command line).
    assert!(
        lines[1].contains(",0,env A=1 true,") && lines[1].contains(",false,true,"),
        "{procs}"
    );
    assert!(
        lines[2].contains(",1,") && lines[2].contains(",true,true,"),
        "{procs}"
    );
}
