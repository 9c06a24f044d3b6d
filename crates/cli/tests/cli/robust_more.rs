//! Issue 15 regressions, second part: `--svg` folders written whole, simulator errors about
//! trace content (located, printed once, skippable), Google 2011 shards that are not
//! consecutive, and zero-filled or endless inputs.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn c() -> Command {
    Command::cargo_bin("compromis").unwrap()
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

const PLACE: [&str; 5] = ["place", "--vms", "200", "--hosts", "20x192GiB/24c"];

#[test]
fn place_svg_folder_is_written_whole_and_needs_force_when_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("figs");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("old.txt"), "keep").unwrap();
    c().args(PLACE)
        .arg("--svg")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("figs").and(predicate::str::contains("--force")));
    assert_eq!(names(&out), ["old.txt"]);
    assert_eq!(names(tmp.path()), ["figs"], "no staging folder left behind");
    c().args(PLACE)
        .arg("--svg")
        .arg(&out)
        .arg("--force")
        .assert()
        .success();
    let files = names(&out);
    assert!(
        !files.contains(&"old.txt".to_owned()),
        "replaced whole: {files:?}"
    );
    assert!(files.iter().any(|f| f.ends_with(".svg")), "{files:?}");
    assert_eq!(names(tmp.path()), ["figs"], "no staging folder left behind");
}

#[test]
fn hv_svg_folder_is_written_whole_and_needs_force_when_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hv");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("old.txt"), "keep").unwrap();
    c().args(["hv", "--quiet", "--svg"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--force"));
    assert_eq!(names(&out), ["old.txt"]);
    c().args(["hv", "--quiet", "--force", "--svg"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(names(&out), ["hostmap.svg"]);
    assert_eq!(names(tmp.path()), ["hv"]);
}

#[test]
fn an_address_beyond_48_bits_names_file_and_line_once_and_is_skippable() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("wide.lackey");
    std::fs::write(
        &t,
        "==1== header\nI  04000000,4\n L 7ff000001000,8\n L 1fff000001000,8\n L 7ff000002000,8\n",
    )
    .unwrap();
    let out = c().arg("sim").arg("--trace").arg(&t).assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("wide.lackey, line 4"), "{err}");
    assert!(err.contains("0x1fff000001000"), "{err}");
    assert_eq!(
        err.matches("beyond the 48-bit").count(),
        1,
        "printed once: {err}"
    );
    c().arg("sim")
        .arg("--trace")
        .arg(&t)
        .arg("--skip-bad-records")
        .args(["--output", "json"])
        .assert()
        .success()
        .stderr(predicate::str::contains("skipped 1 bad records"))
        .stdout(predicate::str::contains("\"skipped_records\": 1"));
}

#[test]
fn a_guest_out_of_memory_names_the_record_and_is_skippable() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("oom.lackey");
    // 600 accesses 2 MiB apart with 2 MiB guest pages: 1.2 GiB, more than the VM's 1 GiB.
    let text: String = (0..600u64)
        .map(|i| format!(" L {:x},8\n", 0x1000_0000 + i * (2 << 20)))
        .collect();
    std::fs::write(&t, text).unwrap();
    let args = ["--vm-memory", "1GiB", "--guest-pages", "2m"];
    let out = c()
        .arg("sim")
        .arg("--trace")
        .arg(&t)
        .args(args)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains("oom.lackey, line ") && err.contains("out of memory"),
        "{err}"
    );
    assert_eq!(
        err.matches("out of memory").count(),
        1,
        "printed once: {err}"
    );
    c().arg("sim")
        .arg("--trace")
        .arg(&t)
        .args(args)
        .arg("--skip-bad-records")
        .assert()
        .success()
        .stderr(predicate::str::contains("bad records of"));
}

#[test]
fn zero_filled_input_stops_at_once_in_every_reader() {
    for extra in [
        &[][..],
        &["--trace-format", "champsim"][..],
        &["--trace-format", "lackey"][..],
        &["--trace-format", "lackey", "--skip-bad-records"][..],
        &["--trace-format", "champsim", "--skip-bad-records"][..],
    ] {
        c().args(["trace", "inspect", "/dev/zero"])
            .args(extra)
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .code(2)
            .stderr(
                predicate::str::contains("/dev/zero").and(predicate::str::contains("not a trace")),
            );
    }
}

#[test]
fn google_shards_that_are_not_consecutive_replay_a_rescheduled_task_as_an_implicit_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Synthetic shards 00000 and 00007: task 1/0's end and task 2/0's lie in shards not here.
    std::fs::write(
        d.join("task_events-part-00000-of-00500.csv"),
        "0,,1,0,m,1,u,0,0,0.1,0.5,0,0\n0,,2,0,m,1,u,0,0,0.1,0.25,0,0\n",
    )
    .unwrap();
    std::fs::write(
        d.join("task_events-part-00007-of-00500.csv"),
        "9000000,,1,0,m,1,u,0,0,0.1,0.5,0,0\n9500000,,2,0,m,1,u,0,0,0.1,0.25,0,0\n\
         9600000,,2,0,m,4,u,0,0,0.1,0.25,0,0\n",
    )
    .unwrap();
    let out = c()
        .args([
            "place",
            "--trace-format",
            "google2011",
            "--hosts",
            "10x192GiB/24c",
        ])
        .args(["--output", "json", "--trace"])
        .arg(d)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "2 tasks were scheduled again while running",
        ));
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let r = &v[0];
    assert_eq!(r["implicit_ends"], 2, "{r}");
    assert_eq!(r["arrivals"], 4, "{r}");
    assert_eq!(r["departures"], 3, "{r}");
}
