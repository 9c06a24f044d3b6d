//! SVG charts (plotters, SVG backend) in the [`theme`](crate::theme): grouped bar charts and line
//! charts.

use crate::ReportError;
use crate::theme;
use plotters::prelude::*;

/// One series of a grouped bar chart: a name and one value per group.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// One value per group.
    pub values: Vec<f64>,
}

pub(crate) fn plot_err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot {
        path: String::from("<svg>"),
        message: e.to_string(),
    }
}

/// A grouped bar chart as SVG text: one group of bars per entry of `groups` (labelled under the
/// axis), one bar per series in each group.
pub fn grouped_bars(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
) -> Result<String, ReportError> {
    let mut out = String::new();
    {
        // The legend sits in a right-hand margin, outside the bars.
        let legend_w = 30
            + 7 * series
                .iter()
                .map(|s| s.name.chars().count())
                .max()
                .unwrap_or(0);
        let legend_w = u32::try_from(legend_w).unwrap_or(200).min(260);
        let width = (160 + groups.len() * (30 + 14 * series.len())).clamp(640, 2400);
        let width = u32::try_from(width).unwrap_or(2400) + legend_w;
        let longest = groups.iter().map(|g| g.chars().count()).max().unwrap_or(0);
        let label_area = u32::try_from(20 + longest * 7).unwrap_or(200).min(200);
        let root = SVGBackend::with_string(&mut out, (width, 340 + label_area)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let max = series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0f64, f64::max);
        let top = if max > 0.0 { max * 1.1 } else { 1.0 };
        let n = groups.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, theme::title())
            .margin(12)
            .margin_right(12 + legend_w)
            .x_label_area_size(label_area)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .x_labels(0)
            .y_desc(y_label)
            .draw()
            .map_err(plot_err)?;
        let k = series.len().max(1) as f64;
        let bw = 0.8 / k;
        for (si, s) in series.iter().enumerate() {
            let color = theme::color(si);
            chart
                .draw_series(s.values.iter().enumerate().map(|(gi, &v)| {
                    let x0 = gi as f64 + 0.1 + bw * si as f64;
                    Rectangle::new([(x0, 0.0), (x0 + bw * 0.95, v)], color.filled())
                }))
                .map_err(plot_err)?;
        }
        // Group labels, rotated, under the centre of each group.
        let style = theme::label().transform(FontTransform::Rotate90);
        for (gi, g) in groups.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(gi as f64 + 0.5, 0.0));
            root.draw(&Text::new(g.clone(), (px - 6, py + 8), style.clone()))
                .map_err(plot_err)?;
        }
        // Legend in the right-hand margin: a swatch and the series name per row.
        let (xr, yr) = chart.plotting_area().get_pixel_range();
        let font = theme::legend();
        for (si, s) in series.iter().enumerate() {
            let color = theme::color(si);
            let y = yr.start + 8 + 20 * i32::try_from(si).unwrap_or(0);
            let x = xr.end + 14;
            root.draw(&Rectangle::new([(x, y), (x + 12, y + 12)], color.filled()))
                .map_err(plot_err)?;
            root.draw(&Text::new(s.name.clone(), (x + 18, y), font.clone()))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

/// A line chart of several series over a shared x axis, as SVG text.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String, ReportError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (800, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let pts = series.iter().flat_map(|s| s.1.iter());
        let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if x0 >= x1 {
            x0 = 0.0;
            x1 = x1.max(1.0);
        }
        let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, theme::title())
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, 0f64..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(plot_err)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = theme::color(i);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().copied(),
                    color.stroke_width(theme::LINE_WIDTH),
                ))
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(
                        vec![(x, y), (x + 14, y)],
                        color.stroke_width(theme::LINE_WIDTH),
                    )
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(out)
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
