//! Integration tests of `compromis hv`.
//!
//! The demo's full output is a golden file (crates/hostmem/tests/golden/hv_demo.txt); regenerate
//! it with `UPDATE_GOLDEN=1 cargo test -p compromis-cli --test cli_hv` after an intended change.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::PathBuf;

fn hv() -> Command {
    let mut c = Command::cargo_bin("compromis").expect("binary");
    c.arg("hv");
    c
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../hostmem/tests/golden")
        .join(name)
}

#[test]
fn demo_matches_golden() {
    let out = hv().assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).expect("utf-8");
    let path = golden("hv_demo.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("write golden");
    }
    let want = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(text, want, "demo output differs from {}", path.display());
}

#[test]
fn scenario_file_runs_and_reports_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.hv");
    std::fs::write(
        &f,
        "# two 4 GiB holes\nhost 16GiB policy=best-fit\ncreate 1 4GiB\ncreate 2 4GiB\ncreate 3 4GiB\n\
         destroy 2\ncreate 4 8GiB\ncreate 4 8GiB extents=2\ngrow 9 1GiB\ncheck\n",
    )
    .unwrap();
    hv().arg(&f)
        .arg("--quiet")
        .assert()
        .success()
        .stdout(predicate::str::contains(":7: create 4 8GiB\n! refused: no free extent of 8GiB (largest free extent: 4GiB)"))
        // Two equal 4 GiB extents: largest first, ties highest address first.
        .stdout(predicate::str::contains(
            "created vm4 (8GiB) in 2 extent(s): [0x300000000, 0x400000000) [0x100000000, 0x200000000)",
        ))
        .stdout(predicate::str::contains("! refused: unknown VM vm9"))
        .stdout(predicate::str::contains("check: all invariants hold"))
        .stdout(predicate::str::contains("9 steps, 2 refused, 0B copied"));
}

#[test]
fn bad_scenario_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.hv");
    std::fs::write(&f, "host 8GiB\ncreate vm1 4GiB\ncreate vm2 lots\n").unwrap();
    hv().arg(&f)
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("bad.hv:3: malformed size 'lots'"));
    std::fs::write(&f, "host 8GiB policy=fastest\n").unwrap();
    hv().arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "bad.hv:1: unknown allocation policy 'fastest': valid values are",
        ));
}

#[test]
fn missing_file_is_an_error() {
    hv().arg("/nonexistent/dir/x.hv")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "cannot read scenario /nonexistent/dir/x.hv",
        ));
}

#[test]
fn svg_is_written_and_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    hv().arg("--quiet")
        .arg("--svg")
        .arg(dir.path())
        .assert()
        .success();
    let svg = dir.path().join("hostmap.svg");
    let text = std::fs::read_to_string(&svg).unwrap();
    // A plotters figure in the report's theme, like every other figure.
    assert!(text.starts_with("<svg"));
    assert!(text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<svg ").count(), 1);
    // Every <rect ...> is self-closing.
    let opened = text.matches("<rect ").count();
    let closed = text.matches("\"/>").count();
    assert!(
        opened > 25 && closed >= opened,
        "{opened} rects, {closed} closes"
    );
    // One row label per step (25 statements in the demo), at the 3 pt padding (12 units).
    assert_eq!(text.matches("<text x=\"12\"").count(), 25);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn svg_into_a_file_instead_of_a_folder_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "keep").unwrap();
    hv().arg("--quiet")
        .arg("--svg")
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a folder"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
}

#[test]
fn svg_folder_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("figs/hv");
    hv().arg("--quiet")
        .arg("--svg")
        .arg(&sub)
        .assert()
        .success();
    assert!(sub.join("hostmap.svg").is_file());
}

#[test]
fn print_demo_round_trips() {
    let out = hv()
        .arg("--print-demo")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("demo.hv");
    std::fs::write(&f, &out).unwrap();
    let a = hv()
        .arg("--quiet")
        .arg(&f)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let b = hv()
        .arg("--quiet")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let name = f.display().to_string();
    assert_eq!(
        String::from_utf8(a).unwrap().replace(&name, "<demo>"),
        String::from_utf8(b).unwrap()
    );
}
