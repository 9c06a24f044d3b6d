//! `compromis sim --shadow-sync`: the out-of-sync default against the eager model, and every
//! speedup over shadow printed beside shadow's exit rate (table, JSON, CSV).

use assert_cmd::Command;

fn churn(extra: &[&str]) -> std::process::Output {
    let mut c = Command::cargo_bin("compromis").unwrap();
    c.args([
        "sim",
        "--workload",
        "churn",
        "--footprint",
        "64MiB",
        "--accesses",
        "60000",
    ]);
    c.args(extra).output().unwrap()
}

fn json(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--output", "json"];
    args.extend_from_slice(extra);
    let out = churn(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn out_of_sync_is_the_default_and_takes_fewer_exits_than_eager() {
    let oos = json(&[]);
    let default_flag = json(&["--shadow-sync", "oos"]);
    let eager = json(&["--shadow-sync", "eager"]);
    assert_eq!(oos["over_shadow"], default_flag["over_shadow"]);
    assert_eq!(oos["over_shadow"]["sync"], "oos");
    assert_eq!(eager["over_shadow"]["sync"], "eager");
    let pki = |v: &serde_json::Value| v["over_shadow"]["shadow_exits_pki"].as_f64().unwrap();
    assert!(
        pki(&oos) > 0.0 && pki(&oos) < pki(&eager),
        "{} vs {}",
        pki(&oos),
        pki(&eager)
    );
    let speedup =
        |v: &serde_json::Value| v["over_shadow"]["speedup"]["compromis"].as_f64().unwrap();
    assert!(speedup(&oos) < speedup(&eager));
    assert_eq!(oos["over_shadow"]["speedup"]["shadow"].as_f64(), Some(1.0));
}

#[test]
fn table_and_csv_print_the_speedup_over_shadow_beside_its_exit_rate() {
    let out = churn(&["--shadow-sync", "eager"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("speedup over shadow (eager sync, ")
                && l.contains("exits/1k instr)")),
        "{text}"
    );
    let out = churn(&["--output", "csv"]);
    let csv = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (sync, pki, speedup) = (
        col("shadow_sync"),
        col("shadow_exits_pki"),
        col("speedup_over_shadow"),
    );
    for row in csv.lines().skip(1) {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[sync], "oos");
        assert!(f[pki].parse::<f64>().unwrap() > 0.0);
        assert!(f[speedup].parse::<f64>().unwrap() > 0.0);
    }
}

#[test]
fn bad_sync_mode_lists_valid_values() {
    let out = churn(&["--shadow-sync", "lazy"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("lazy") && err.contains("oos, eager"), "{err}");
}
