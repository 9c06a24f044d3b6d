//! SVG plots of a run (or of several runs side by side): single-segment share and cluster
//! fragmentation over trace time. Files are written to a temporary name, then renamed.

use crate::metrics::{PlacementReport, Sample};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A plot could not be written.
#[derive(Debug, Error)]
pub enum PlotError {
    /// Drawing failed.
    #[error("cannot draw {file}: {reason}")]
    Draw {
        /// The file.
        file: String,
        /// The cause.
        reason: String,
    },
    /// Writing failed.
    #[error("cannot write {path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// File name, title, y label, value of a sample.
type PlotSpec = (&'static str, &'static str, &'static str, fn(&Sample) -> f64);

const COLORS: [RGBColor; 7] = [
    BLUE,
    RED,
    GREEN,
    MAGENTA,
    CYAN,
    BLACK,
    RGBColor(255, 140, 0),
];

fn draw(
    reports: &[PlacementReport],
    title: &str,
    ylabel: &str,
    f: fn(&Sample) -> f64,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let hours = |t: u64| t as f64 / 3600.0;
        let x0 = reports
            .iter()
            .filter_map(|r| r.series.first())
            .map(|s| hours(s.time))
            .fold(f64::INFINITY, f64::min);
        let x1 = reports
            .iter()
            .filter_map(|r| r.series.last())
            .map(|s| hours(s.time))
            .fold(f64::NEG_INFINITY, f64::max);
        let (x0, x1) = if x0.is_finite() && x1 > x0 {
            (x0, x1)
        } else {
            (0.0, 1.0)
        };
        let ymin = reports
            .iter()
            .flat_map(|r| r.series.iter().map(f))
            .fold(1.0_f64, f64::min)
            .clamp(0.0, 1.0);
        let y0 = (ymin - 0.02).clamp(0.0, 0.98);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..1.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("trace time (hours)")
            .y_desc(ylabel)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, r) in reports.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    r.series
                        .iter()
                        .map(|s| (hours(s.time), f(s).clamp(0.0, 1.0))),
                    c.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("{} / {}", r.policy, r.fallback))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn write_atomic(path: &Path, text: &str) -> Result<(), PlotError> {
    let tmp = path.with_extension("svg.tmp");
    let io = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Writes `single_segment_share.svg` and `fragmentation.svg` into `dir` (created if needed).
pub fn write_svgs(reports: &[PlacementReport], dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let plots: [PlotSpec; 2] = [
        (
            "single_segment_share.svg",
            "VMs provisioned with one memory segment",
            "share of placed VMs",
            |s| s.single_segment_share,
        ),
        (
            "fragmentation.svg",
            "Cluster fragmentation (free memory outside each host's largest extent)",
            "fragmentation",
            |s| s.fragmentation,
        ),
    ];
    let mut out = Vec::new();
    for (file, title, ylabel, f) in plots {
        let svg = draw(reports, title, ylabel, f).map_err(|reason| PlotError::Draw {
            file: file.to_owned(),
            reason,
        })?;
        let p = dir.join(file);
        write_atomic(&p, &svg)?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
