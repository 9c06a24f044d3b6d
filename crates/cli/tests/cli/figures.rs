//! Figures and tidy data: `reproduce --quick --figure-format svg,pdf,png` writes valid SVG, PDF
//! and PNG files and tidy CSVs whose numeric columns parse as numbers; `compromis plot` redraws
//! the same figures from the CSVs alone; `place` and `hv` export the formats too; `compromis data`
//! lists the trace families and `data check` validates a folder.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn compromis() -> Command {
    Command::cargo_bin("compromis").unwrap()
}

/// The file is a valid figure of its extension: SVG parses (usvg), PDF starts with `%PDF` and
/// ends with `%%EOF`, PNG decodes (tiny-skia's decoder, the `png` crate).
fn check_figure(p: &Path) {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    match p.extension().and_then(|e| e.to_str()) {
        Some("svg") => {
            let text = String::from_utf8(bytes).unwrap();
            resvg::usvg::Tree::from_str(&text, &resvg::usvg::Options::default())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        Some("pdf") => {
            assert!(bytes.starts_with(b"%PDF-"), "{}", p.display());
            let tail =
                String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(16)..]).into_owned();
            assert!(tail.contains("%%EOF"), "{}: {tail}", p.display());
        }
        Some("png") => {
            let img = resvg::tiny_skia::Pixmap::decode_png(&bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(img.width() >= 900, "{}: {} px", p.display(), img.width());
        }
        other => panic!("unexpected figure {other:?}"),
    }
}

/// Every CSV of `dir` is tidy: snake_case headers, and every column that is not a text column
/// holds numbers (f64), `true`/`false`, or nothing, with at least one number or boolean.
fn check_tidy(dir: &Path) {
    let mut checked = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("csv") {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let mut rd = csv::Reader::from_path(&p).unwrap();
        let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
        for h in &header {
            assert!(
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}: header '{h}' is not snake_case"
            );
        }
        let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert!(!rows.is_empty(), "{name} is empty");
        for (c, h) in header.iter().enumerate() {
            if compromis_repro::TEXT_COLUMNS.contains(&h.as_str()) || (name == "claims.csv") {
                continue;
            }
            let mut values = 0;
            for (i, r) in rows.iter().enumerate() {
                let cell = &r[c];
                if cell.is_empty() {
                    continue;
                }
                assert!(
                    cell.parse::<f64>().is_ok() || cell == "true" || cell == "false",
                    "{name}:{}: column {h} holds '{cell}', not a number",
                    i + 2
                );
                values += 1;
            }
            assert!(values > 0, "{name}: column {h} has no value");
        }
        checked += 1;
    }
    assert_eq!(checked, compromis_repro::CSV_FILES.len());
}

#[test]
fn figures_in_three_formats_tidy_csvs_and_plot_redraws_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    compromis()
        .args([
            "reproduce",
            "--quick",
            "--figure-format",
            "svg,pdf",
            "--figure-format",
            "png",
        ])
        .args(["--figure-width", "column", "--data"])
        .arg(tmp.path().join("no-data-here"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("data folder").and(predicate::str::contains("not found")));
    for stem in compromis_repro::FIGURES {
        for ext in ["svg", "pdf", "png"] {
            check_figure(&out.join(format!("{stem}.{ext}")));
        }
    }
    check_tidy(&out);
    // Fractions and ratios, not formatted strings.
    let overheads = std::fs::read_to_string(out.join("overheads.csv")).unwrap();
    assert!(overheads.starts_with("workload,processes,guest,host,ideal_cycles,"));
    assert!(!overheads.contains('%') && !overheads.contains("x,"));

    // `plot` redraws byte-identical figures from the CSVs (results.json removed: not read).
    std::fs::remove_file(out.join("results.json")).unwrap();
    let again = tmp.path().join("again");
    compromis()
        .arg("plot")
        .arg(&out)
        .arg("--out")
        .arg(&again)
        .args(["--figure-width", "column", "--figure-format", "svg,pdf"])
        .assert()
        .success()
        .stdout(predicate::str::contains("provisioning.pdf"));
    for stem in compromis_repro::FIGURES {
        let a = std::fs::read(out.join(format!("{stem}.svg"))).unwrap();
        let b = std::fs::read(again.join(format!("{stem}.svg"))).unwrap();
        assert!(a == b, "{stem}.svg differs when redrawn from the CSVs");
        check_figure(&again.join(format!("{stem}.pdf")));
    }
    assert!(!again.join("speedups_guest4k.png").exists());

    // A malformed CSV is a clear error naming the file, line and value; exit 2.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    for f in compromis_repro::TIDY_FILES {
        std::fs::copy(out.join(f), bad.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(bad.join("overheads.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Line 3, column native_overhead (read by the overhead figure) holds a formatted string.
    let col = lines[0]
        .split(',')
        .position(|h| h == "native_overhead")
        .unwrap();
    let mut cells: Vec<&str> = lines[2].split(',').collect();
    cells[col] = "8.1%";
    lines[2] = cells.join(",");
    std::fs::write(bad.join("overheads.csv"), lines.join("\n") + "\n").unwrap();
    compromis().arg("plot").arg(&bad).assert().code(2).stderr(
        predicate::str::contains("overheads.csv:3").and(predicate::str::contains("'8.1%'")),
    );
    compromis()
        .arg("plot")
        .arg(tmp.path().join("nowhere"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("walk_refs.csv"));
}

#[test]
fn place_and_hv_export_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    compromis()
        .args([
            "place",
            "--vms",
            "300",
            "--compare",
            "first-fit,frag-aware",
            "--svg",
        ])
        .arg(tmp.path().join("place"))
        .args(["--figure-format", "pdf,png,svg"])
        .assert()
        .success();
    for stem in ["single_segment_share", "fragmentation"] {
        for ext in ["svg", "pdf", "png"] {
            check_figure(&tmp.path().join("place").join(format!("{stem}.{ext}")));
        }
    }
    compromis()
        .args([
            "hv",
            "--quiet",
            "--figure-width",
            "column",
            "--figure-format",
            "png",
            "--svg",
        ])
        .arg(tmp.path().join("hv"))
        .assert()
        .success()
        .stderr(predicate::str::contains("hostmap.png"));
    check_figure(&tmp.path().join("hv/hostmap.png"));
    assert!(!tmp.path().join("hv/hostmap.svg").exists());
    compromis()
        .args(["hv", "--figure-format", "gif"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("gif"));
}

#[test]
fn data_lists_families_and_checks_a_folder() {
    compromis().arg("data").assert().success().stdout(
        predicate::str::contains("azure-v1-rnn")
            .and(predicate::str::contains("--trace-format bitbrains"))
            .and(predicate::str::contains("CC-BY 4.0"))
            .and(predicate::str::contains("https://")),
    );
    let tmp = tempfile::tempdir().unwrap();
    // An empty folder: no family, exit 2.
    compromis()
        .args(["data", "check"])
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no VM-trace family"));
    // A generated Alibaba container_meta file reads; a broken Bitbrains folder is named.
    std::fs::create_dir(tmp.path().join("alibaba-2018")).unwrap();
    std::fs::write(
        tmp.path()
            .join("alibaba-2018/alibaba2018_container_meta_sample.csv"),
        "c_1,m_1,0,app_1,started,400,400,1.56\nc_2,m_2,10,app_2,started,200,200,3.13\n",
    )
    .unwrap();
    compromis()
        .args(["data", "check"])
        .arg(tmp.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("ok (").and(predicate::str::contains("missing")));
    std::fs::create_dir(tmp.path().join("bitbrains-rnd")).unwrap();
    std::fs::write(tmp.path().join("bitbrains-rnd/7.csv"), "garbage\n1;2\n").unwrap();
    compromis()
        .args(["data", "check"])
        .arg(tmp.path())
        .assert()
        .code(2)
        .stdout(predicate::str::contains("BAD").and(predicate::str::contains("7.csv")));
    compromis()
        .args(["data", "check"])
        .arg(tmp.path().join("nowhere"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a folder"));
}
