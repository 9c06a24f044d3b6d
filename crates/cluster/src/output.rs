//! Printers for [`PlacementReport`]s: a side-by-side text table, JSON and CSV. They only read
//! the report.

use crate::metrics::{PlacementReport, RejectReason};
use std::fmt::Write as _;

/// Output format of `compromis place`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned text table, one column per run.
    Table,
    /// JSON array of reports (with the time series).
    Json,
    /// CSV, one row per run (summary only).
    Csv,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "table" => Ok(OutputFormat::Table),
            "json" => Ok(OutputFormat::Json),
            "csv" => Ok(OutputFormat::Csv),
            other => Err(format!(
                "unknown output format '{other}': valid values are table, json, csv"
            )),
        }
    }
}

/// Renders reports in a format.
pub fn render(reports: &[PlacementReport], format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(reports),
        OutputFormat::Json => render_json(reports),
        OutputFormat::Csv => render_csv(reports),
    }
}

const REASONS: [RejectReason; 5] = [
    RejectReason::LargerThanAnyHost,
    RejectReason::NoCapacity,
    RejectReason::NoSingleExtent,
    RejectReason::TooFragmented,
    RejectReason::CompactionFailed,
];

fn pct(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

fn histogram(r: &PlacementReport) -> String {
    let v: Vec<String> = r
        .segments_histogram
        .iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(" ")
    }
}

/// Rows of `(label, value per report)`.
fn rows(reports: &[PlacementReport]) -> Vec<(String, Vec<String>)> {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |label: &str, f: &dyn Fn(&PlacementReport) -> String| {
        rows.push((label.to_owned(), reports.iter().map(f).collect()))
    };
    add("policy", &|r| r.policy.clone());
    add("fallback", &|r| r.fallback.clone());
    add("hosts", &|r| r.hosts.to_string());
    add("events", &|r| r.events.to_string());
    add("arrivals", &|r| r.arrivals.to_string());
    add("initial VMs", &|r| r.initial_vms.to_string());
    add("placed", &|r| r.placed.to_string());
    add("single-segment share", &|r| pct(r.single_segment_share()));
    add("segments per VM (k:VMs)", &|r| histogram(r));
    add("rejected", &|r| r.rejected().to_string());
    for reason in REASONS {
        add(&format!("  {}", reason.name()), &move |r| {
            r.rejections.get(&reason).copied().unwrap_or(0).to_string()
        });
    }
    add("departures", &|r| r.departures.to_string());
    add("resizes", &|r| r.resizes.to_string());
    add("  migrated", &|r| r.resize_migrations.to_string());
    add("  refused", &|r| r.resize_rejections.to_string());
    add("compactions", &|r| r.compactions.to_string());
    add("bytes moved", &|r| r.bytes_moved.to_string());
    add("peak live VMs", &|r| r.peak_live_vms.to_string());
    add("peak hosts in use", &|r| r.peak_hosts_in_use.to_string());
    add("mean memory utilisation (arrival phase)", &|r| {
        pct(r.mean_mem_utilisation())
    });
    add("mean fragmentation (arrival phase)", &|r| {
        pct(r.mean_fragmentation())
    });
    add("bad rows skipped", &|r| r.bad_rows.to_string());
    rows
}

/// Side-by-side table.
pub fn render_table(reports: &[PlacementReport]) -> String {
    let rows = rows(reports);
    let lw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let cw: Vec<usize> = (0..reports.len())
        .map(|i| rows.iter().map(|r| r.1[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (label, vals) in &rows {
        let _ = write!(out, "{label:<lw$}");
        for (v, w) in vals.iter().zip(&cw) {
            let _ = write!(out, "  {v:>w$}");
        }
        out.push('\n');
    }
    for r in reports {
        for ex in &r.bad_row_examples {
            let _ = writeln!(out, "bad row ({}): {ex}", r.policy);
        }
    }
    out
}

/// JSON array of the reports, each with its headline share.
pub fn render_json(reports: &[PlacementReport]) -> String {
    let v: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "single_segment_share".into(),
                    serde_json::json!(r.single_segment_share()),
                );
            }
            v
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

/// CSV with one row per report.
pub fn render_csv(reports: &[PlacementReport]) -> String {
    let mut out = String::from(
        "policy,fallback,hosts,events,arrivals,initial_vms,placed,single_segment,single_segment_share,segments_histogram,rejected,\
         larger_than_any_host,no_capacity,no_single_extent,too_fragmented,compaction_failed,departures,resizes,resize_migrations,\
         resize_rejections,compactions,bytes_moved,peak_live_vms,peak_hosts_in_use,mean_mem_utilisation,mean_fragmentation,bad_rows\n",
    );
    for r in reports {
        let rej = |x: RejectReason| r.rejections.get(&x).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{:.6},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{}",
            r.policy,
            r.fallback,
            r.hosts,
            r.events,
            r.arrivals,
            r.initial_vms,
            r.placed,
            r.single_segment,
            r.single_segment_share(),
            histogram(r),
            r.rejected(),
            rej(REASONS[0]),
            rej(REASONS[1]),
            rej(REASONS[2]),
            rej(REASONS[3]),
            rej(REASONS[4]),
            r.departures,
            r.resizes,
            r.resize_migrations,
            r.resize_rejections,
            r.compactions,
            r.bytes_moved,
            r.peak_live_vms,
            r.peak_hosts_in_use,
            r.mean_mem_utilisation(),
            r.mean_fragmentation(),
            r.bad_rows
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(policy: &str, placed: u64, single: u64) -> PlacementReport {
        let mut r = PlacementReport {
            policy: policy.into(),
            fallback: "reject".into(),
            placed,
            single_segment: single,
            arrivals: placed + 2,
            ..PlacementReport::default()
        };
        r.segments_histogram.insert(1, single);
        r.segments_histogram.insert(3, placed - single);
        r.rejections.insert(RejectReason::NoCapacity, 2);
        r
    }

    #[test]
    fn printers_show_every_run() {
        let rs = [rep("first-fit", 4, 3), rep("frag-aware", 4, 4)];
        let t = render_table(&rs);
        assert!(
            t.lines().next().unwrap().ends_with("first-fit  frag-aware"),
            "{t}"
        );
        assert!(
            t.contains("75.000%") && t.contains("100.000%") && t.contains("1:3 3:1"),
            "{t}"
        );
        let c = render_csv(&rs);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(
            lines[1].starts_with("first-fit,reject,0,0,6,0,4,3,0.750000,1:3 3:1,2,0,2,"),
            "{}",
            lines[1]
        );
        let j: serde_json::Value = serde_json::from_str(&render_json(&rs)).unwrap();
        assert_eq!(j[1]["single_segment_share"], 1.0);
        assert_eq!(j[0]["rejections"]["no-capacity"], 2);
        assert_eq!("CSV".parse::<OutputFormat>().unwrap(), OutputFormat::Csv);
        assert!(
            "xml"
                .parse::<OutputFormat>()
                .unwrap_err()
                .contains("table, json, csv")
        );
    }
}
