//! `compromis config`: the printed defaults check clean, bad files exit 2 naming the key.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn compromis() -> Command {
    Command::cargo_bin("compromis").unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn printed_defaults_pass_check() {
    let out = compromis()
        .args(["config", "--defaults"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    for section in [
        "[tlb]",
        "[walk_caches]",
        "[cache.l1d]",
        "[cache.l2]",
        "[cache.llc]",
        "[latency]",
        "[exits]",
        "[core]",
    ] {
        assert!(text.contains(section), "missing {section}");
    }
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "machine.toml", &text);
    compromis()
        .args(["config", "--check"])
        .arg(&p)
        .assert()
        .success()
        .stdout(format!("{}: ok\n", p.display()));
}

#[test]
fn partial_file_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "p.toml", "[cache.l2]\nsize = \"2MiB\"\n");
    compromis()
        .args(["config", "--check"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::ends_with(": ok\n"));
}

#[test]
fn impossible_value_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needles) in [
        (
            "[cache.l2]\nways = 0\n",
            &["cache.l2.ways", "line 2", "bad.toml"][..],
        ),
        (
            "[cache.llc]\nsize = 100000\n",
            &["cache.llc.size", "100000"][..],
        ),
        ("[core]\nbase_cpi = -1.0\n", &["core.base_cpi", "-1"][..]),
    ] {
        let p = write(dir.path(), "bad.toml", text);
        let mut a = compromis()
            .args(["config", "--check"])
            .arg(&p)
            .assert()
            .code(2)
            .stdout("");
        for n in needles {
            a = a.stderr(predicate::str::contains(*n));
        }
    }
}

#[test]
fn unknown_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "u.toml",
        "[cache]\ndram_latency = 200\ndram_latncy = 5\n",
    );
    compromis()
        .args(["config", "--check"])
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("dram_latncy").and(predicate::str::contains("line 3")));
}

#[test]
fn missing_file_and_missing_mode_exit_2() {
    compromis()
        .args(["config", "--check", "/nonexistent/m.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/m.toml"));
    compromis().args(["config"]).assert().code(2);
}
