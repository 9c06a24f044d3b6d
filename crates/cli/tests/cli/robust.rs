//! Issue 15 regressions: signals, outputs that must not be lost or replaced, early checks of
//! output paths. Tests that need valgrind or QEMU skip with a printed reason when missing.

use crate::common::processes_with;
use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `sig` to `child` (compromis alone, not its group) after `after`; waits for it to end
/// (at most 30 s) and returns its exit code and stderr.
fn signal_and_wait(mut child: Child, sig: &str, after: Duration) -> (Option<i32>, String) {
    std::thread::sleep(after);
    let st = std::process::Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "compromis did not stop on SIG{sig}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// SIGTERM and SIGHUP (SIGINT is `common::interrupt_record`) to `record` under `tracer`, with
/// a pre-existing `--save` file and a program whose child runs in the background: exit 2, the
/// whole process tree gone, the old file intact, no temporary file anywhere. (QEMU stops a
/// recording at an exec, so under QEMU the program is `sleep` itself.)
fn terminate_record(tracer: &str, sig: &str, needle: &str) {
    let script = format!("sleep {needle} & wait");
    let cmd: Vec<&str> = if tracer == "qemu" {
        vec!["sleep", needle]
    } else {
        vec!["sh", "-c", &script]
    };
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let save = dir.path().join("old.ctrace");
    std::fs::write(&save, b"precious").unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("compromis"))
        .env("TMPDIR", tmp.path())
        .args(["record", "--tracer", tracer, "--save"])
        .arg(&save)
        .arg("--")
        .args(&cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, err) = signal_and_wait(child, sig, Duration::from_millis(1500));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // The background sleep (a grandchild of compromis) was killed too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&format!("sleep {needle}")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            processes_with(&format!("sleep {needle}"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read(&save).unwrap(), b"precious");
    assert_eq!(names(dir.path()), ["old.ctrace"]);
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

#[test]
fn record_lackey_term_and_hup_kill_the_tree_and_keep_the_old_file() {
    if !have("valgrind") {
        eprintln!("skipped: valgrind not installed");
        return;
    }
    terminate_record("lackey", "TERM", "41.5");
    terminate_record("lackey", "HUP", "41.6");
}

#[test]
fn record_qemu_term_and_hup_kill_the_tree_and_keep_the_old_file() {
    if !have("qemu-x86_64") {
        eprintln!("skipped: qemu-x86_64 not installed");
        return;
    }
    terminate_record("qemu", "TERM", "42.5");
    terminate_record("qemu", "HUP", "42.6");
}

#[test]
fn record_save_to_a_folder_fails_before_the_program_runs() {
    if !have("valgrind") {
        eprintln!("skipped: valgrind not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    for tracer in ["lackey", "qemu"] {
        if tracer == "qemu" && !have("qemu-x86_64") {
            continue;
        }
        Command::cargo_bin("compromis")
            .unwrap()
            .args(["record", "--tracer", tracer, "--save"])
            .arg(dir.path())
            .arg("--")
            .arg("touch")
            .arg(&marker)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("folder"));
        assert!(!marker.exists(), "{tracer}: the program ran");
    }
}

#[test]
fn trace_convert_respects_a_read_only_destination() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.lackey");
    std::fs::write(&input, "I  04000000,4\n L 7ff000000,8\n").unwrap();
    let out = dir.path().join("out.ctrace");
    std::fs::write(&out, b"mine").unwrap();
    let mut p = std::fs::metadata(&out).unwrap().permissions();
    p.set_readonly(true);
    std::fs::set_permissions(&out, p).unwrap();
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["trace", "convert"])
        .arg(&input)
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("read-only"));
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    assert_eq!(names(dir.path()), ["in.lackey", "out.ctrace"]);
}

#[test]
fn reproduce_refuses_a_non_empty_out_without_force_and_checks_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("README.md"), b"mine").unwrap();
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["reproduce", "--quick", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--force"));
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), b"mine");
    // A destination below a file is found before the run (no progress bar, at once).
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["reproduce", "--quick", "--out"])
        .arg(out.join("README.md").join("sub"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("README.md"));
    // The current folder is never replaced, even with --force.
    Command::cargo_bin("compromis")
        .unwrap()
        .current_dir(&out)
        .args(["reproduce", "--quick", "--force", "--out", "."])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("current folder"));
    assert_eq!(names(dir.path()), ["report"]);
    assert_eq!(names(&out), ["README.md"]);
}

#[test]
fn reproduce_stopped_by_sigterm_keeps_the_old_folder_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("old.txt"), b"mine").unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("compromis"))
        .args(["reproduce", "--quick", "--force", "--out"])
        .arg(&out)
        .arg("--data")
        .arg(dir.path().join("no-data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, err) = signal_and_wait(child, "TERM", Duration::from_millis(1500));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("interrupted (SIGTERM)"), "{err}");
    assert_eq!(names(dir.path()), ["report"]);
    assert_eq!(names(&out), ["old.txt"]);
}

/// Case 7: every size the tools allocate by has a cap, checked before allocating, and the
/// message states it.
#[test]
fn limits_fail_fast_with_the_cap_in_the_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["hv", "/dev/zero"], "16 MiB, the cap on a scenario file"),
        (
            &["place", "--trace-format", "azure", "--trace", "/dev/zero"],
            "1048576 bytes, the cap on a trace line",
        ),
        (
            &[
                "place",
                "--trace-format",
                "google2011",
                "--trace",
                "/dev/zero",
            ],
            "1048576 bytes, the cap on a trace line",
        ),
        (
            &["config", "--check", "/dev/zero"],
            "1 MiB, the cap on a machine file",
        ),
        (
            &["sim", "--footprint", "16TiB"],
            "the most this machine can simulate",
        ),
        (
            &["sim", "--vm-memory", "64TiB", "--accesses", "1000"],
            "the most this machine can simulate",
        ),
        (
            &["place", "--hosts", "100000000x192GiB/24c"],
            "more than the 1000000 accepted",
        ),
    ];
    for (args, msg) in cases {
        Command::cargo_bin("compromis")
            .unwrap()
            .args(*args)
            .timeout(Duration::from_secs(60))
            .assert()
            .code(2)
            .stderr(predicate::str::contains(*msg));
    }
}

#[test]
fn config_check_refuses_a_huge_stlb_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.toml");
    std::fs::write(&m, "[tlb]\nstlb = { entries = 1600000000, ways = 8 }\n").unwrap();
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["config", "--check"])
        .arg(&m)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("more than the 1048576 accepted"))
        .stderr(predicate::str::contains("line 2"));
}

/// `hv` keeps no per-step copy of the map unless it draws it, and stops printing at a closed
/// pipe with status 0 like the other commands.
#[test]
fn hv_long_scenario_and_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.hv");
    let mut text = String::from("host 100TiB policy=first-fit\n");
    for i in 0..10_000 {
        text += &format!("create vm{i} 1GiB\n");
    }
    std::fs::write(&f, text).unwrap();
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["hv", "--quiet"])
        .arg(&f)
        .timeout(Duration::from_secs(120))
        .assert()
        .success()
        .stdout(predicate::str::contains("10001 steps, 0 refused"));
    // `hv FILE | head -1`: the reader goes away after the first line.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("compromis"))
        .arg("hv")
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Case 9: degenerate input is a clear error with status 2, not all-zero results.
#[test]
fn degenerate_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.lackey");
    std::fs::write(&empty, b"").unwrap();
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["sim", "--trace"])
        .arg(&empty)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "empty.lackey holds no memory-access record",
        ));
    let csv = dir.path().join("empty.csv");
    std::fs::write(&csv, b"").unwrap();
    for format in ["azure", "google2011", "alibaba2018", "bitbrains"] {
        Command::cargo_bin("compromis")
            .unwrap()
            .args(["place", "--trace-format", format, "--trace"])
            .arg(&csv)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("the trace has no VM"));
    }
    // A header only.
    let header = dir.path().join("header.csv");
    std::fs::write(
        &header,
        b"container_id,machine_id,time_stamp,app_du,status,cpu_request,cpu_limit,mem_size\n",
    )
    .unwrap();
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["place", "--trace-format", "alibaba2018", "--trace"])
        .arg(&header)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the trace has no VM"));
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["place", "--vms", "0"])
        .assert()
        .code(2);
    let ali = dir.path().join("ali.csv");
    std::fs::write(
        &ali,
        b"c_1,m_1,0,app_1,started,400,400,3.0\nc_1,m_1,100,app_1,z\xc3\xa9bra,400,400,3.0\n",
    )
    .unwrap();
    Command::cargo_bin("compromis")
        .unwrap()
        .args(["place", "--trace-format", "alibaba2018", "--trace"])
        .arg(&ali)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 2: status 'zébra'"));
    Command::cargo_bin("compromis")
        .unwrap()
        .args([
            "place",
            "--trace-format",
            "alibaba2018",
            "--norm-mem",
            "0",
            "--trace",
        ])
        .arg(&ali)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("above zero").or(predicate::str::contains("is 0")));
}
