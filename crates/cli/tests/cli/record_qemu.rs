//! `compromis record --tracer qemu` end to end (issue 17). Every test skips, with the reason
//! printed, when `qemu-x86_64` with plugin support (package `qemu-user`) is not installed; the
//! comparison with lackey also needs valgrind.

use crate::common::inspect_json;
use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn compromis() -> Command {
    Command::cargo_bin("compromis").unwrap()
}

fn qemu_missing() -> bool {
    match compromis_trace::qemu::qemu_available("qemu-x86_64".as_ref()) {
        Ok(_) => false,
        Err(why) => {
            eprintln!("skipping: {why}");
            true
        }
    }
}

fn valgrind_missing() -> bool {
    let missing = !compromis_trace::valgrind::valgrind_available();
    if missing {
        eprintln!("skipping: valgrind not installed");
    }
    missing
}

/// `n` numbers in a scrambled, deterministic order, one a line.
fn numbers(dir: &Path, n: u32) -> PathBuf {
    let p = dir.join("in.txt");
    let text: String = (0..n)
        .map(|i| format!("{}\n", (u64::from(i) * 7919) % u64::from(n)))
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

/// Records `sort -n IN -o OUT` with `tracer`, saving the trace; returns (trace stats, stderr).
fn record_sort(dir: &Path, tracer: &str, input: &Path) -> (serde_json::Value, String) {
    let saved = dir.join(format!("{tracer}.ctrace"));
    let out = dir.join(format!("{tracer}.out"));
    let o = compromis()
        .env("LC_ALL", "C")
        .args(["record", "--tracer", tracer, "--save"])
        .arg(&saved)
        .args(["--", "sort", "-n"])
        .arg(input)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("tracer {tracer}")), "{stderr}");
    (inspect_json(&saved), stderr)
}

#[test]
fn sort_under_qemu_matches_native_output_and_lackey_counts() {
    if qemu_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = numbers(dir.path(), 2000);
    let native = std::process::Command::new("sort")
        .env("LC_ALL", "C")
        .arg("-n")
        .arg(&input)
        .output()
        .unwrap();
    assert!(native.status.success());
    let (q, stderr) = record_sort(dir.path(), "qemu", &input);
    assert_eq!(
        std::fs::read(dir.path().join("qemu.out")).unwrap(),
        native.stdout
    );
    assert!(stderr.contains("1 process(es)"), "{stderr}");
    let q_acc = q["accesses"].as_u64().unwrap();
    let q_instr = q["instructions"].as_u64().unwrap();
    assert!(q_acc > 100_000 && q_instr > 100_000, "{q}");
    assert_eq!(
        q["modifies"], 0,
        "QEMU reports a read-modify-write as a load and a store"
    );
    if valgrind_missing() {
        return;
    }
    let (l, _) = record_sort(dir.path(), "lackey", &input);
    assert_eq!(
        std::fs::read(dir.path().join("lackey.out")).unwrap(),
        native.stdout
    );
    // Same program, same input: counts within a factor of two (different CPU models make glibc
    // take other code paths, and the two tracers count rep-prefixed instructions differently).
    let l_acc = l["accesses"].as_u64().unwrap();
    let l_instr = l["instructions"].as_u64().unwrap();
    for (what, a, b) in [
        ("accesses", q_acc, l_acc),
        ("instructions", q_instr, l_instr),
    ] {
        assert!(a * 2 > b && b * 2 > a, "{what}: qemu {a}, lackey {b}");
    }
}

#[test]
fn threads_stay_apart_and_are_marked() {
    if qemu_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = numbers(dir.path(), 200_000);
    let saved = dir.path().join("t.ctrace");
    let o = compromis()
        .env("LC_ALL", "C")
        .args([
            "record",
            "--tracer",
            "qemu",
            "--no-fetches",
            "--no-simulate",
            "--save",
        ])
        .arg(&saved)
        .args(["--", "sort", "--parallel=2", "-S", "64M", "-n"])
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("sorted"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // GNU sort sorts with two threads: two vCPU streams of one process, each with its own count.
    assert!(
        stderr.contains("1 process(es), 2 thread stream(s)"),
        "{stderr}"
    );
    let per_thread: Vec<u64> = stderr
        .lines()
        .filter(|l| l.contains("thread (vCPU)"))
        .map(|l| {
            l.split(": ")
                .nth(1)
                .unwrap()
                .trim_end_matches(" records")
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(per_thread.len(), 2, "{stderr}");
    assert!(per_thread.iter().all(|&n| n > 1_000_000), "{per_thread:?}");
    let total: u64 = per_thread.iter().sum();
    assert_eq!(inspect_json(&saved)["records"], total);
}

#[test]
fn failing_program_is_reported() {
    if qemu_missing() {
        return;
    }
    compromis()
        .args(["record", "--tracer", "qemu", "--", "false"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("exit status: 1"));
}

#[test]
fn exec_is_refused_with_a_clear_message() {
    if qemu_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("x.ctrace");
    compromis()
        .env("TMPDIR", dir.path())
        .args(["record", "--tracer", "qemu", "--save"])
        .arg(&saved)
        .args(["--", "sh", "-c", "ls / > /dev/null"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("sh (process "))
        .stderr(predicate::str::contains("called exec"))
        .stderr(predicate::str::contains("--tracer lackey"));
    // Nothing half-written, no plugin copy left.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn forked_children_are_traced_as_their_own_processes() {
    if qemu_missing() {
        return;
    }
    // dash runs `( : )` in a forked subshell without exec.
    compromis()
        .args(["record", "--tracer", "qemu", "--", "sh", "-c", "( : ); :"])
        .assert()
        .success()
        .stderr(predicate::str::contains("2 process(es)"));
}

#[test]
fn qemu_options_are_refused_under_lackey() {
    compromis()
        .args(["record", "--tracer", "lackey", "--no-fetches", "--", "true"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--tracer qemu only"));
}

#[test]
fn killed_record_leaves_nothing_behind() {
    if qemu_missing() {
        return;
    }
    crate::common::interrupt_record("qemu", "37.4343");
}

/// Issue 16 with QEMU installed: without `--tracer`, a wrapper (a `#!` script, `env`) is recorded
/// with lackey, which follows its exec, so the trace is of the program it starts.
#[test]
fn wrappers_default_to_lackey_which_follows_exec() {
    if qemu_missing() || valgrind_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("wrap.sh");
    std::fs::write(&script, "#!/bin/sh\nexec true \"$@\"\n").unwrap();
    let mut perm = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&script, perm).unwrap();
    for cmd in [vec![script.to_str().unwrap()], vec!["env", "A=1", "true"]] {
        let out = compromis()
            .args(["record", "--output", "json", "--schemes", "native", "--"])
            .args(&cmd)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{cmd:?}: {err}");
        assert!(err.contains("tracer lackey"), "{cmd:?}: {err}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let procs = j["record"]["processes"].as_array().unwrap();
        let images = procs[0]["images"].as_array().unwrap();
        // The wrapper's image, then `true` after its exec.
        assert!(images.len() >= 2, "{cmd:?}: {j}");
        assert!(
            images
                .last()
                .and_then(|i| i["command"].as_str())
                .is_some_and(|c| c.contains("true")),
            "{cmd:?}: {j}"
        );
    }
}

/// The fetches are expanded by the reader from TB descriptions and markers (protocol 2): with or
/// without them, the data records are the same (QEMU's user-mode layout is deterministic), and
/// the fetches touch the code pages only.
#[test]
fn fetches_leave_the_data_records_unchanged() {
    if qemu_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = numbers(dir.path(), 2000);
    let record = |name: &str, extra: &[&str]| {
        let saved = dir.path().join(format!("{name}.ctrace"));
        let o = compromis()
            .env("LC_ALL", "C")
            .args(["record", "--no-simulate", "--save"])
            .arg(&saved)
            .args(extra)
            .args(["--", "sort", "-n"])
            .arg(&input)
            .args(["-o", "/dev/null"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        inspect_json(&saved)
    };
    let all = record("all", &[]);
    let data = record("data", &["--no-fetches"]);
    assert_eq!(data["instructions"], 0, "{data}");
    assert!(all["instructions"].as_u64().unwrap() > 100_000, "{all}");
    for field in ["loads", "stores"] {
        assert_eq!(all[field], data[field], "{field}: {all} {data}");
    }
    assert_eq!(
        all["records"].as_u64().unwrap(),
        all["instructions"].as_u64().unwrap() + data["records"].as_u64().unwrap(),
        "{all} {data}"
    );
}
