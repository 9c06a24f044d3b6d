//! Machine presets: `config --list`, `config --machine NAME --defaults`, and `--machine` with
//! `--config` (the file's keys over the preset's).

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn compromis() -> Command {
    Command::cargo_bin("compromis").unwrap()
}

fn stdout(args: &[&str]) -> String {
    let out = compromis()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn list_names_every_preset_once_and_marks_the_default() {
    let text = stdout(&["config", "--list"]);
    let names = compromis_mmu::config::presets::names();
    assert!(names.len() >= 3);
    assert_eq!(text.lines().count(), names.len(), "{text}");
    for n in names {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(n))
            .unwrap_or_else(|| panic!("{n} not listed:\n{text}"));
        assert!(line.len() > n.len() + 10, "no description: {line:?}");
        assert_eq!(
            line.contains("(default)"),
            n == compromis_mmu::config::presets::DEFAULT_MACHINE,
            "{line:?}"
        );
    }
}

#[test]
fn every_preset_prints_a_file_that_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    for n in compromis_mmu::config::presets::names() {
        let text = stdout(&["config", "--machine", n, "--defaults"]);
        assert!(text.contains("[cache.llc]") && text.contains('#'), "{n}");
        let p = write(dir.path(), &format!("{n}.toml"), &text);
        compromis()
            .args(["config", "--check"])
            .arg(&p)
            .assert()
            .success()
            .stdout(predicate::str::ends_with(": ok\n"));
    }
    // Without --machine, --defaults prints the default preset.
    assert_eq!(
        stdout(&["config", "--defaults"]),
        stdout(&[
            "config",
            "--machine",
            compromis_mmu::config::presets::DEFAULT_MACHINE,
            "--defaults"
        ])
    );
}

#[test]
fn unknown_machine_is_exit_2_listing_the_presets() {
    for args in [
        &["config", "--machine", "pentium", "--defaults"][..],
        &["sim", "--machine", "pentium"][..],
    ] {
        compromis().args(args).assert().code(2).stderr(
            predicate::str::contains("skylake-sp").and(predicate::str::contains("zen3-milan")),
        );
    }
}

fn sim_csv(extra: &[&str]) -> String {
    let mut args = vec![
        "sim",
        "--footprint",
        "64MiB",
        "--accesses",
        "20000",
        "--schemes",
        "ept,compromis",
        "--output",
        "csv",
    ];
    args.extend_from_slice(extra);
    crate::common::without_provenance(&stdout(&args))
}

#[test]
fn the_file_keys_go_over_the_machine_preset() {
    let dir = tempfile::tempdir().unwrap();
    // A full file (every key) of another machine, given over the default preset, is that machine.
    let zen = stdout(&["config", "--machine", "zen3-milan", "--defaults"]);
    let zen_file = write(dir.path(), "zen.toml", &zen);
    let zen_file = zen_file.to_str().unwrap();
    let as_preset = sim_csv(&["--machine", "zen3-milan"]);
    assert_eq!(sim_csv(&["--config", zen_file]), as_preset);
    assert_eq!(
        sim_csv(&["--machine", "icelake-sp", "--config", zen_file]),
        as_preset
    );
    // No preset gives the same results as another.
    assert_ne!(sim_csv(&[]), as_preset);
    // A partial file changes only its keys: over two presets it gives two different machines,
    // and over one preset it changes the results.
    let partial = write(dir.path(), "p.toml", "[cache]\ndram_latency = 900\n");
    let partial = partial.to_str().unwrap();
    let zen_slow = sim_csv(&["--machine", "zen3-milan", "--config", partial]);
    assert_ne!(zen_slow, as_preset);
    assert_ne!(
        zen_slow,
        sim_csv(&["--machine", "skylake-sp", "--config", partial])
    );
    // The default machine is the default preset.
    assert_eq!(
        sim_csv(&[]),
        sim_csv(&["--machine", compromis_mmu::config::presets::DEFAULT_MACHINE])
    );
}

#[test]
fn check_over_a_preset_names_the_file_the_line_and_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    // An L3 faster than zen3-milan's L2 (12 cycles): the error names the machine it was read over.
    let p = write(dir.path(), "l3.toml", "# x\n[cache.llc]\nlatency = 10\n");
    compromis()
        .args(["config", "--machine", "zen3-milan", "--check"])
        .arg(&p)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("l3.toml")
                .and(predicate::str::contains("line 3"))
                .and(predicate::str::contains("zen3-milan")),
        );
}

#[test]
fn the_table_names_the_machine_it_ran_on() {
    let text = stdout(&[
        "sim",
        "--machine",
        "zen3-milan",
        "--footprint",
        "64MiB",
        "--accesses",
        "20000",
        "--schemes",
        "ept",
    ]);
    assert!(text.contains("on machine zen3-milan:"), "{text}");
}
