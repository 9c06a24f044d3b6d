//! The first chart functions, kept for their callers: thin wrappers of [`figure`](crate::figure)
//! (one panel, page width, the one theme). New code uses [`figure`](crate::figure) directly.

use crate::ReportError;
use crate::figure::{self, Axis, BarChart, BarPanel, Line, LineChart, LinePanel};
use crate::theme::Width;

pub use crate::figure::Series;
pub(crate) use crate::figure::plot_err;

/// A grouped bar chart as SVG text: one group of bars per entry of `groups`, one bar per series
/// in each group, legend above the bars.
pub fn grouped_bars(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
) -> Result<String, ReportError> {
    figure::bar_chart(
        &BarChart {
            title: title.to_owned(),
            y: Axis::linear(y_label),
            panels: vec![BarPanel {
                title: String::new(),
                groups: groups.to_vec(),
                notes: Vec::new(),
                series: series.to_vec(),
            }],
            bar_labels: false,
        },
        Width::Page,
    )
}

/// A line chart of several series over a shared x axis, as SVG text (markers on the points).
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String, ReportError> {
    figure::line_chart(
        &LineChart {
            title: title.to_owned(),
            x: Axis::linear(x_label),
            y: Axis::linear(y_label),
            panels: vec![LinePanel {
                title: String::new(),
                lines: series
                    .iter()
                    .map(|(name, points)| Line {
                        name: name.clone(),
                        points: points.clone(),
                        refused: Vec::new(),
                    })
                    .collect(),
            }],
            markers: true,
        },
        Width::Page,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg() {
        let s = grouped_bars(
            "t",
            "y",
            &["a".into(), "b".into()],
            &[Series {
                name: "ept".into(),
                values: vec![1.0, 2.0],
            }],
        )
        .unwrap();
        assert!(s.starts_with("<svg") && s.contains("ept"));
        let l = lines("t", "x", "y", &[("s".into(), vec![(0.0, 1.0), (1.0, 2.0)])]).unwrap();
        assert!(l.contains("<svg"));
    }
}
