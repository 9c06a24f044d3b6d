//! Helpers shared by the CLI test modules.

use std::path::Path;
use std::time::{Duration, Instant};

/// Processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

/// Starts `compromis record --tracer TRACER --save DIR/partial.ctrace -- sleep NEEDLE` (temporary
/// files in `tmp`), interrupts compromis alone with SIGINT after 1.5 s, and checks it stops
/// within 30 s with exit 2 and "interrupted", leaving no process whose command line holds
/// `needle` and no file in `dir` or `tmp`.
pub fn interrupt_record(tracer: &str, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("compromis"))
        .env("TMPDIR", tmp.path())
        .args(["record", "--tracer", tracer, "--save"])
        .arg(dir.path().join("partial.ctrace"))
        .args(["--", "sleep", needle])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the tracer start, then interrupt compromis alone (not its process group).
    std::thread::sleep(Duration::from_millis(1500));
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "compromis did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        processes_with(needle).is_empty(),
        "{:?}",
        processes_with(needle)
    );
    // No trace (not even a temporary one) and no plugin copy.
    for d in [dir.path(), tmp.path()] {
        assert_empty(d);
    }
}

fn assert_empty(d: &Path) {
    let left: Vec<_> = std::fs::read_dir(d).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A CSV output without its three trailing provenance columns (version, git commit, command
/// line), which differ between runs of different command lines.
pub fn without_provenance(csv_text: &str) -> String {
    let mut out = String::new();
    for rec in csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_text.as_bytes())
        .records()
    {
        let rec = rec.unwrap();
        assert!(rec.len() > 3, "{rec:?}");
        out += &rec.iter().take(rec.len() - 3).collect::<Vec<_>>().join(",");
        out.push('\n');
    }
    out
}

/// `compromis trace inspect --output json PATH`, which must succeed, parsed.
pub fn inspect_json(path: &Path) -> serde_json::Value {
    let out = assert_cmd::Command::cargo_bin("compromis")
        .unwrap()
        .args(["trace", "inspect", "--output", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
