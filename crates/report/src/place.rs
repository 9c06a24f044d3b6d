//! Printers and plots of placement reports ([`PlacementReport`] of `compromis_cluster`): a
//! side-by-side text table, JSON and CSV, and SVG plots of the time series (single-segment share
//! and cluster fragmentation over trace time). They only read the reports.

use crate::figure::{self, Axis, FigureFormat, Line};
use crate::theme::Width;
use crate::{Format, ReportError};
use compromis_cluster::{PlacementReport, RejectReason, Sample};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Renders reports in a format: [`table`], [`json`] or [`csv`].
pub fn render(reports: &[PlacementReport], format: Format) -> Result<String, ReportError> {
    Ok(match format {
        Format::Table => table(reports),
        Format::Json => json(reports)?,
        Format::Csv => csv(reports),
    })
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
    add("  one segment", &|r| r.single_segment.to_string());
    add("  2 or more segments", &|r| r.multi_segment().to_string());
    add("  paged (EPT fallback)", &|r| r.paged.to_string());
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
    add("peak memory utilisation", &|r| pct(r.peak_mem_utilisation));
    add("target peak utilisation", &|r| {
        r.target_utilisation.map_or_else(|| "-".to_owned(), pct)
    });
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
pub fn table(reports: &[PlacementReport]) -> String {
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
pub fn json(reports: &[PlacementReport]) -> Result<String, ReportError> {
    let v: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r)?;
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "single_segment_share".into(),
                    serde_json::json!(r.single_segment_share()),
                );
                o.insert("multi_segment".into(), serde_json::json!(r.multi_segment()));
            }
            Ok(v)
        })
        .collect::<Result<_, serde_json::Error>>()?;
    let mut s = serde_json::to_string_pretty(&v)?;
    s.push('\n');
    Ok(s)
}

/// CSV with one row per report.
pub fn csv(reports: &[PlacementReport]) -> String {
    let mut out = String::from(
        "policy,fallback,hosts,events,arrivals,initial_vms,placed,single_segment,single_segment_share,segments_histogram,rejected,\
         larger_than_any_host,no_capacity,no_single_extent,too_fragmented,compaction_failed,departures,resizes,resize_migrations,\
         resize_rejections,compactions,bytes_moved,peak_live_vms,peak_hosts_in_use,mean_mem_utilisation,mean_fragmentation,bad_rows,\
         multi_segment,paged,peak_mem_utilisation,target_utilisation\n",
    );
    for r in reports {
        let rej = |x: RejectReason| r.rejections.get(&x).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{:.6},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{},{},{},{:.6},{}",
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
            r.bad_rows,
            r.multi_segment(),
            r.paged,
            r.peak_mem_utilisation,
            r.target_utilisation
                .map_or_else(String::new, |t| format!("{t:.6}")),
        );
    }
    out
}

/// File stem, title, y label, value of a sample.
type PlotSpec = (&'static str, &'static str, &'static str, fn(&Sample) -> f64);

/// The plots of [`svgs`], by file name.
pub const SVG_FILES: [&str; 2] = ["single_segment_share.svg", "fragmentation.svg"];

/// A time series of `f` per report, in the figure theme: trace time starts at the first
/// placement (the first sample with a live VM in any report), the legend sits above the plot.
fn draw(
    reports: &[PlacementReport],
    title: &str,
    ylabel: &str,
    f: fn(&Sample) -> f64,
    width: Width,
) -> Result<String, ReportError> {
    let hours = |t: u64| t as f64 / 3600.0;
    let start = reports
        .iter()
        .filter_map(|r| r.series.iter().find(|s| s.live_vms > 0))
        .map(|s| s.time)
        .min();
    let lines = reports
        .iter()
        .map(|r| Line {
            name: format!("{} / {}", r.policy, r.fallback),
            points: r
                .series
                .iter()
                .filter(|s| start.is_none_or(|t| s.time >= t))
                .map(|s| (hours(s.time), f(s).clamp(0.0, 1.0)))
                .collect(),
            refused: Vec::new(),
        })
        .collect();
    figure::time_series(
        title,
        "trace time (hours)",
        Axis::linear(ylabel).percent(),
        lines,
        width,
    )
}

/// The plots as SVG text at `width`, with their file names ([`SVG_FILES`]): the share of placed
/// VMs with one segment and the cluster fragmentation over trace time, one line per report.
pub fn svgs_at(
    reports: &[PlacementReport],
    width: Width,
) -> Result<Vec<(&'static str, String)>, ReportError> {
    let plots: [PlotSpec; 2] = [
        (
            SVG_FILES[0],
            "VMs provisioned with one memory segment",
            "share of placed VMs",
            |s| s.single_segment_share,
        ),
        (
            SVG_FILES[1],
            "Cluster fragmentation (free memory outside each host's largest extent)",
            "fragmentation",
            |s| s.fragmentation,
        ),
    ];
    plots
        .into_iter()
        .map(|(file, title, ylabel, f)| {
            draw(reports, title, ylabel, f, width)
                .map(|svg| (file, svg))
                .map_err(|e| match e {
                    ReportError::Plot { message, .. } => ReportError::Plot {
                        path: file.to_owned(),
                        message,
                    },
                    e => e,
                })
        })
        .collect()
}

/// [`svgs_at`] page width.
pub fn svgs(reports: &[PlacementReport]) -> Result<Vec<(&'static str, String)>, ReportError> {
    svgs_at(reports, Width::Page)
}

/// Writes the plots of [`svgs_at`] into `dir` (created if needed) in every format of `formats`
/// (each file with [`write_atomic`](crate::write_atomic)); returns the files written.
pub fn write_figures(
    reports: &[PlacementReport],
    dir: &Path,
    width: Width,
    formats: &[FigureFormat],
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for (file, svg) in svgs_at(reports, width)? {
        let stem = file.trim_end_matches(".svg");
        out.extend(figure::write_figure(dir, stem, &svg, formats)?);
    }
    Ok(out)
}

/// Writes the plots of [`svgs`] into `dir` as SVG; returns the files written.
pub fn write_svgs(reports: &[PlacementReport], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    write_figures(reports, dir, Width::Page, &[FigureFormat::Svg])
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
        let t = table(&rs);
        assert!(
            t.lines().next().unwrap().ends_with("first-fit  frag-aware"),
            "{t}"
        );
        assert!(
            t.contains("75.000%") && t.contains("100.000%") && t.contains("1:3 3:1"),
            "{t}"
        );
        let c = csv(&rs);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(
            lines[1].starts_with("first-fit,reject,0,0,6,0,4,3,0.750000,1:3 3:1,2,0,2,"),
            "{}",
            lines[1]
        );
        let j: serde_json::Value = serde_json::from_str(&json(&rs).unwrap()).unwrap();
        assert_eq!(j[1]["single_segment_share"], 1.0);
        assert_eq!(j[0]["rejections"]["no-capacity"], 2);
        assert_eq!(render(&rs, Format::Csv).unwrap(), c);
    }

    #[test]
    fn empty_and_flat_series_draw() {
        let dir = tempfile::tempdir().unwrap();
        let empty = PlacementReport {
            policy: "first-fit".into(),
            ..PlacementReport::default()
        };
        let s = Sample {
            time: 7200,
            live_vms: 1,
            hosts_in_use: 1,
            mem_utilisation: 0.5,
            fragmentation: 0.0,
            single_segment_share: 1.0,
        };
        let flat = PlacementReport {
            policy: "frag-aware".into(),
            series: vec![s, Sample { time: 10_800, ..s }],
            ..PlacementReport::default()
        };
        let files = write_svgs(&[empty, flat], &dir.path().join("out")).unwrap();
        assert_eq!(files.len(), 2);
        for f in files {
            let t = std::fs::read_to_string(f).unwrap();
            assert!(t.contains("frag-aware") && t.contains("</svg>"));
        }
    }
}
