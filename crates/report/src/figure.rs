//! Paper figures in the one [`theme`]: a small plotting API drawn with plotters' SVG backend and
//! exported as SVG, PDF or PNG.
//!
//! - [`bar_chart`]: grouped bars in one or more panels, each panel with its own y scale (a 3.6x
//!   bar in one panel does not flatten the 1.01x bars of another), linear or log axis, optional
//!   baseline (bars grow from 1.0 for ratios) and reference line, two-level x labels (a label under
//!   each bar, the group's label under the group) and a note per group (e.g. `n=5,000`);
//! - [`line_chart`]: lines over x in one or more panels, with markers and a mark (a cross at the
//!   foot of the panel) for points that do not exist because the run was refused;
//! - [`time_series`]: lines over time without markers;
//! - [`export`] / [`write_figure`]: SVG text to SVG, PDF ([`svg2pdf`]) or PNG ([`resvg`]) bytes.
//!
//! Every figure is [`Width::Column`] (3.33 in) or [`Width::Page`] (7 in) wide; sizes are in
//! points ([`theme::UNITS_PER_PT`] drawing units each), so text is printed at least
//! [`theme::TICK_PT`] = 7 pt when the figure is set at its width. The legend sits above the
//! panels, never on the data. PDF and PNG use DejaVu Sans, embedded in the binary (the `dejavu`
//! crate) and, in the PDF, embedded as a subset font; SVG files name the `sans-serif` family.
//!
//! ```
//! use compromis_report::figure::{Axis, BarChart, BarPanel, Series, bar_chart, export, FigureFormat};
//! use compromis_report::theme::Width;
//! let chart = BarChart {
//!     title: "Speedup".into(),
//!     y: Axis::log("speedup").ratio().baseline(1.0).reference(1.0),
//!     panels: vec![BarPanel {
//!         title: "vs EPT".into(),
//!         groups: vec!["gups".into(), "kv".into()],
//!         notes: vec![],
//!         series: vec![Series { name: "4k".into(), values: vec![1.07, 1.09] }],
//!     }],
//!     bar_labels: true,
//! };
//! let svg = bar_chart(&chart, Width::Column).unwrap();
//! assert!(export(&svg, FigureFormat::Pdf).unwrap().starts_with(b"%PDF"));
//! ```

use crate::theme::{self, INK, Marker, Width, units};
use crate::{ReportError, write_atomic};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A file format of a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum FigureFormat {
    /// Scalable vector graphics (the text stays text).
    Svg,
    /// PDF with the font embedded.
    Pdf,
    /// PNG at 300 dpi.
    Png,
}

impl FigureFormat {
    /// Every format.
    pub const ALL: [FigureFormat; 3] = [FigureFormat::Svg, FigureFormat::Pdf, FigureFormat::Png];

    /// The file extension (and command-line name).
    pub fn ext(self) -> &'static str {
        match self {
            FigureFormat::Svg => "svg",
            FigureFormat::Pdf => "pdf",
            FigureFormat::Png => "png",
        }
    }
}

impl std::fmt::Display for FigureFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.ext())
    }
}

impl std::str::FromStr for FigureFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        FigureFormat::ALL
            .into_iter()
            .find(|f| f.ext() == t)
            .ok_or_else(|| format!("unknown figure format '{s}': valid values are svg, pdf, png"))
    }
}

/// Linear or logarithmic axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scale {
    /// Linear.
    #[default]
    Linear,
    /// Base-10 logarithmic (values at or below zero are marked `0` at the foot of the axis).
    Log,
}

/// How tick labels print a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TickFormat {
    /// The number.
    #[default]
    Number,
    /// A fraction printed as a percentage (0.05 -> `5%`).
    Percent,
    /// A ratio (1.05 -> `1.05×`).
    Ratio,
}

/// An axis: title, scale, tick format, and for a value axis an optional bar baseline and
/// reference line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Axis {
    /// Axis title.
    pub label: String,
    /// Linear or log.
    pub scale: Scale,
    /// Tick label format.
    pub format: TickFormat,
    /// A horizontal line drawn across every panel (e.g. 1.0 for speedups).
    pub reference: Option<f64>,
    /// Value bars grow from (default: 0 on a linear axis, the foot of a log axis).
    pub baseline: Option<f64>,
    /// Whether a linear value axis of a line chart starts at zero (bars always include their
    /// baseline).
    pub from_zero: bool,
}

impl Axis {
    /// A linear axis titled `label`.
    pub fn linear(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            ..Axis::default()
        }
    }
    /// A log axis titled `label`.
    pub fn log(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            scale: Scale::Log,
            ..Axis::default()
        }
    }
    /// Ticks as percentages of fractions.
    pub fn percent(mut self) -> Axis {
        self.format = TickFormat::Percent;
        self
    }
    /// Ticks as ratios.
    pub fn ratio(mut self) -> Axis {
        self.format = TickFormat::Ratio;
        self
    }
    /// A reference line at `v`.
    pub fn reference(mut self, v: f64) -> Axis {
        self.reference = Some(v);
        self
    }
    /// Bars grow from `v`.
    pub fn baseline(mut self, v: f64) -> Axis {
        self.baseline = Some(v);
        self
    }
    /// A line chart's value axis starts at zero.
    pub fn from_zero(mut self) -> Axis {
        self.from_zero = true;
        self
    }
    fn log_scale(&self) -> bool {
        self.scale == Scale::Log
    }
}

/// One series of a grouped bar chart: a name and one value per group (`NaN`: no bar).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend name (or the label under each bar with [`BarChart::bar_labels`]).
    pub name: String,
    /// One value per group.
    pub values: Vec<f64>,
}

/// A panel of a bar chart: groups along x, one bar per series in each group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarPanel {
    /// Panel title (may be empty).
    pub title: String,
    /// Group labels.
    pub groups: Vec<String>,
    /// A note under each group's label (e.g. `n=5,000`); empty for none.
    pub notes: Vec<String>,
    /// Series (the same names in the same order in every panel: colours follow the order).
    pub series: Vec<Series>,
}

/// A grouped bar chart of one or more panels, each with its own y scale.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarChart {
    /// Figure title (may be empty).
    pub title: String,
    /// The value axis.
    pub y: Axis,
    /// Panels, laid out in rows.
    pub panels: Vec<BarPanel>,
    /// Print each series' name under its bar (two-level x labels) instead of a legend.
    pub bar_labels: bool,
}

/// One line of a line chart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Line {
    /// Legend name (lines of one name share a colour across panels).
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
    /// x values where the run was refused (drawn as a cross at the foot of the panel).
    pub refused: Vec<f64>,
}

/// A panel of a line chart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinePanel {
    /// Panel title (may be empty).
    pub title: String,
    /// Lines.
    pub lines: Vec<Line>,
}

/// Lines over x in one or more panels (shared x range, own y scale per panel).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineChart {
    /// Figure title (may be empty).
    pub title: String,
    /// The x axis.
    pub x: Axis,
    /// The value axis.
    pub y: Axis,
    /// Panels, laid out in rows.
    pub panels: Vec<LinePanel>,
    /// A marker at every point.
    pub markers: bool,
}

pub(crate) fn plot_err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot {
        path: String::from("<svg>"),
        message: e.to_string(),
    }
}

/// Ticks of `[lo, hi]` (data space).
fn ticks(scale: Scale, lo: f64, hi: f64) -> Vec<f64> {
    if scale == Scale::Log && lo > 0.0 {
        // Decades of a finite positive range: small integers.
        #[allow(clippy::cast_possible_truncation)]
        let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        let mut all = Vec::new();
        let mut decades = Vec::new();
        for k in a..=b {
            let p = 10f64.powi(k);
            for m in [1.0, 2.0, 5.0] {
                let v = m * p;
                if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                    all.push(v);
                    if m == 1.0 {
                        decades.push(v);
                    }
                }
            }
        }
        if all.len() > 7 && decades.len() >= 2 {
            return decades;
        }
        if all.len() >= 3 {
            return all;
        }
    }
    linear_ticks(lo, hi, 5)
}

pub(crate) fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / n.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    // Ticks are whole multiples of the step, rounded to the step's decimals (no 0.30000000000000004).
    let d = 10f64.powi(i32::try_from(decimals(step)).unwrap_or(4) + 1);
    let k0 = (lo / step - 1e-9).ceil();
    let mut out = Vec::new();
    let mut k = k0;
    while k * step <= hi + step * 1e-9 && out.len() < 50 {
        let v = (k * step * d).round() / d;
        out.push(if v == 0.0 { 0.0 } else { v });
        k += 1.0;
    }
    out
}

/// The fewest decimals (0 to 4) that print `v` exactly enough.
fn decimals(v: f64) -> usize {
    (0..=4)
        .find(|&d| {
            let s = 10f64.powi(i32::try_from(d).unwrap_or(0));
            ((v * s).round() - v * s).abs() < 1e-6 * s.max(1.0)
        })
        .unwrap_or(4)
}

/// Tick labels: one number of decimals for a linear axis, each tick's own on a log axis.
fn tick_labels(values: &[f64], axis: &Axis) -> Vec<String> {
    let scale = if axis.format == TickFormat::Percent {
        100.0
    } else {
        1.0
    };
    let suffix = match axis.format {
        TickFormat::Number => "",
        TickFormat::Percent => "%",
        TickFormat::Ratio => "×",
    };
    let common = values
        .iter()
        .map(|v| decimals(v * scale))
        .max()
        .unwrap_or(0);
    let (mn, mx) = values
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    let spans_decade = mn > 0.0 && mx / mn >= 9.99;
    values
        .iter()
        .map(|v| {
            let d = if axis.log_scale() && spans_decade {
                decimals(v * scale)
            } else {
                common
            };
            format!("{:.*}{suffix}", d, v * scale)
        })
        .collect()
}

/// A value-to-pixel mapping of one panel.
struct Frame {
    x0: i32,
    x1: i32,
    y0: i32,
    y1: i32,
    /// Domain of x (transformed).
    xd: (f64, f64),
    /// Domain of y (transformed).
    yd: (f64, f64),
    xlog: bool,
    ylog: bool,
}

fn tf(log: bool, v: f64) -> f64 {
    if log { v.max(1e-300).log10() } else { v }
}

fn lerp(a: i32, b: i32, t: f64) -> i32 {
    #[allow(clippy::cast_possible_truncation)]
    let p = (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as i32;
    p
}

impl Frame {
    fn px(&self, x: f64) -> i32 {
        let t = (tf(self.xlog, x) - self.xd.0) / (self.xd.1 - self.xd.0);
        lerp(self.x0, self.x1, t.clamp(-0.05, 1.05))
    }
    fn py(&self, y: f64) -> i32 {
        let t = (tf(self.ylog, y) - self.yd.0) / (self.yd.1 - self.yd.0);
        lerp(self.y1, self.y0, t.clamp(-0.05, 1.05))
    }
    /// The data-space domain of y.
    fn y_data(&self) -> (f64, f64) {
        if self.ylog {
            (10f64.powf(self.yd.0), 10f64.powf(self.yd.1))
        } else {
            self.yd
        }
    }
}

/// A padded domain (transformed) of `values` on `axis`, including `extra` values.
fn domain(values: &[f64], extra: &[f64], log: bool, from_zero: bool) -> (f64, f64) {
    let vals = values
        .iter()
        .chain(extra)
        .copied()
        .filter(|v| v.is_finite() && (!log || *v > 0.0));
    let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(tf(log, v)), b.max(tf(log, v)))
    });
    if !lo.is_finite() {
        return if log { (-1.0, 0.0) } else { (0.0, 1.0) };
    }
    if from_zero && !log {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let span = hi - lo;
    if span <= 1e-12 * hi.abs().max(lo.abs()).max(1e-12) {
        let d = if log {
            0.05
        } else if lo.abs() > 0.0 {
            lo.abs() * 0.05
        } else {
            1.0
        };
        return (lo - d, hi + d);
    }
    let pad = span * 0.08;
    let lo2 = if from_zero && !log && lo >= 0.0 {
        lo
    } else {
        lo - pad
    };
    (lo2, hi + pad)
}

pub(crate) fn text_at(
    area: &Area<'_>,
    s: &str,
    (x, y): (i32, i32),
    pt: f64,
    h: HPos,
    v: VPos,
) -> Result<(), ReportError> {
    let style = theme::text(pt).pos(Pos::new(h, v));
    area.draw(&Text::new(s.to_owned(), (x, y), style))
        .map_err(plot_err)
}

fn hline(
    area: &Area<'_>,
    y: i32,
    x0: i32,
    x1: i32,
    color: RGBColor,
    pt: f64,
) -> Result<(), ReportError> {
    area.draw(&PathElement::new(
        vec![(x0, y), (x1, y)],
        color.stroke_width(units(pt).unsigned_abs().max(1)),
    ))
    .map_err(plot_err)
}

/// Draws the y grid, ticks and labels, and the axis lines of a frame.
fn y_axis(area: &Area<'_>, f: &Frame, axis: &Axis) -> Result<(), ReportError> {
    let (lo, hi) = f.y_data();
    let t = ticks(axis.scale, lo, hi);
    let labels = tick_labels(&t, axis);
    for (v, l) in t.iter().zip(&labels) {
        let y = f.py(*v);
        hline(area, y, f.x0, f.x1, theme::GRID, 0.5)?;
        text_at(
            area,
            l,
            (f.x0 - units(2.0), y),
            theme::TICK_PT,
            HPos::Right,
            VPos::Center,
        )?;
    }
    area.draw(&PathElement::new(
        vec![(f.x0, f.y0), (f.x0, f.y1), (f.x1, f.y1)],
        INK.stroke_width(units(0.6).unsigned_abs()),
    ))
    .map_err(plot_err)?;
    if let Some(r) = axis.reference
        && (!axis.log_scale() || r > 0.0)
    {
        hline(area, f.py(r), f.x0, f.x1, INK, 0.8)?;
    }
    Ok(())
}

fn y_label_width(axis: &Axis, doms: &[(f64, f64)]) -> i32 {
    doms.iter()
        .map(|&(lo, hi)| {
            let (lo, hi) = if axis.log_scale() {
                (10f64.powf(lo), 10f64.powf(hi))
            } else {
                (lo, hi)
            };
            tick_labels(&ticks(axis.scale, lo, hi), axis)
                .iter()
                .map(|l| theme::text_width(l, theme::TICK_PT))
                .max()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
        + units(3.0)
}

/// A legend swatch.
#[derive(Clone, Copy)]
enum Swatch {
    Bar(RGBColor),
    Line(RGBColor, Option<Marker>),
    Refused,
}

fn draw_marker(
    area: &Area<'_>,
    (x, y): (i32, i32),
    m: Marker,
    color: RGBColor,
) -> Result<(), ReportError> {
    let r = units(1.8);
    let w = units(0.6).unsigned_abs();
    match m {
        Marker::Circle => area.draw(&Circle::new((x, y), r, color.filled())),
        Marker::Ring => area.draw(&Circle::new((x, y), r, color.stroke_width(w))),
        Marker::Square => area.draw(&Rectangle::new(
            [(x - r + 1, y - r + 1), (x + r - 1, y + r - 1)],
            color.filled(),
        )),
        Marker::Triangle => area.draw(&Polygon::new(
            vec![(x, y - r - 1), (x - r, y + r - 1), (x + r, y + r - 1)],
            color.filled(),
        )),
        Marker::Cross => {
            let r = units(2.2);
            let s = color.stroke_width(units(0.9).unsigned_abs());
            area.draw(&PathElement::new(vec![(x - r, y - r), (x + r, y + r)], s))
                .and_then(|()| {
                    area.draw(&PathElement::new(vec![(x - r, y + r), (x + r, y - r)], s))
                })
        }
    }
    .map_err(plot_err)
}

/// Draws a legend in rows from `(x, y)` within `width`; returns the height used.
fn legend(
    area: &Area<'_>,
    (x, y): (i32, i32),
    width: i32,
    entries: &[(String, Swatch)],
    draw: bool,
) -> Result<i32, ReportError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let row_h = units(theme::TICK_PT * 1.5);
    let sw = units(9.0);
    let (mut cx, mut cy) = (x, y);
    for (name, s) in entries {
        let w = sw + units(2.5) + theme::text_width(name, theme::TICK_PT) + units(6.0);
        if cx > x && cx + w > x + width {
            cx = x;
            cy += row_h;
        }
        if draw {
            let mid = cy + row_h / 2;
            match *s {
                Swatch::Bar(c) => area
                    .draw(&Rectangle::new(
                        [(cx, mid - units(3.0)), (cx + sw, mid + units(3.0))],
                        c.filled(),
                    ))
                    .map_err(plot_err)?,
                Swatch::Line(c, m) => {
                    area.draw(&PathElement::new(
                        vec![(cx, mid), (cx + sw, mid)],
                        c.stroke_width(units(theme::LINE_PT).unsigned_abs()),
                    ))
                    .map_err(plot_err)?;
                    if let Some(m) = m {
                        draw_marker(area, (cx + sw / 2, mid), m, c)?;
                    }
                }
                Swatch::Refused => draw_marker(area, (cx + sw / 2, mid), Marker::Cross, INK)?,
            }
            text_at(
                area,
                name,
                (cx + sw + units(2.5), mid),
                theme::TICK_PT,
                HPos::Left,
                VPos::Center,
            )?;
        }
        cx += w;
    }
    Ok(cy + row_h - y)
}

/// Panel grid: columns for `n` panels at `width`.
fn columns(n: usize, width: Width) -> usize {
    match width {
        Width::Column => {
            if n >= 4 {
                2
            } else {
                1
            }
        }
        Width::Page => n.clamp(1, 3),
    }
}

/// The common frame of a figure: canvas size, title, legend, y-axis title; calls `panel` for
/// every panel cell `(index, x, y, w, h)`.
struct Layout {
    width: i32,
    height: i32,
    top: i32,
    left: i32,
    cols: usize,
    cell_w: i32,
    cell_h: i32,
    legend_h: i32,
    title_h: i32,
}

fn layout(
    width: Width,
    n_panels: usize,
    title: &str,
    legend_entries: &[(String, Swatch)],
    cell_h: i32,
    cols: usize,
) -> Result<Layout, ReportError> {
    let w = units(width.points());
    let pad = units(3.0);
    let left = pad + units(theme::AXIS_PT * 1.3);
    let title_lines = wrap_title(title, w - 2 * pad);
    let title_h = if title_lines.is_empty() {
        0
    } else {
        units(theme::TITLE_PT * (1.25 * title_lines.len() as f64 + 0.3))
    };
    // Measure the legend without drawing (a dummy area is not needed: `draw = false`).
    let mut dummy = String::new();
    let legend_h = {
        let root = SVGBackend::with_string(&mut dummy, (1, 1)).into_drawing_area();
        legend(&root, (left, 0), w - left - pad, legend_entries, false)?
    };
    let cols = cols.clamp(1, n_panels.max(1));
    let rows = n_panels.max(1).div_ceil(cols);
    let top = pad + title_h + legend_h + if legend_h > 0 { units(2.0) } else { 0 };
    let cell_w = (w - left - pad) / i32::try_from(cols).unwrap_or(1);
    let height = top + cell_h * i32::try_from(rows).unwrap_or(1) + pad;
    Ok(Layout {
        width: w,
        height,
        top,
        left,
        cols,
        cell_w,
        cell_h,
        legend_h,
        title_h,
    })
}

impl Layout {
    fn cell(&self, i: usize) -> (i32, i32) {
        let c = i32::try_from(i % self.cols).unwrap_or(0);
        let r = i32::try_from(i / self.cols).unwrap_or(0);
        (self.left + c * self.cell_w, self.top + r * self.cell_h)
    }

    /// Title, legend and the rotated y-axis title.
    fn decorate(
        &self,
        area: &Area<'_>,
        title: &str,
        entries: &[(String, Swatch)],
        y_title: &str,
    ) -> Result<(), ReportError> {
        area.fill(&WHITE).map_err(plot_err)?;
        let pad = units(3.0);
        for (i, line) in wrap_title(title, self.width - 2 * pad).iter().enumerate() {
            let y = pad + units(theme::TITLE_PT * 1.25 * i as f64);
            text_at(
                area,
                line,
                (self.width / 2, y),
                theme::TITLE_PT,
                HPos::Center,
                VPos::Top,
            )?;
        }
        if self.legend_h > 0 {
            legend(
                area,
                (self.left, pad + self.title_h),
                self.width - self.left - pad,
                entries,
                true,
            )?;
        }
        let mid = (self.top + self.height) / 2;
        let style = theme::text(theme::AXIS_PT)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(y_title.to_owned(), (pad, mid), style))
            .map_err(plot_err)
    }
}

/// A title in lines that fit `width` (split between words).
fn wrap_title(title: &str, width: i32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in title.split_whitespace() {
        match lines.last_mut() {
            Some(l) if theme::text_width(&format!("{l} {word}"), theme::TITLE_PT) <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// Replaces plotters' pixel size by the size in points, so viewers print the figure at its width.
fn physical_size(svg: String, w: i32, h: i32) -> String {
    let from = format!("width=\"{w}\" height=\"{h}\"");
    let to = format!(
        "width=\"{}pt\" height=\"{}pt\"",
        f64::from(w) / theme::UNITS_PER_PT,
        f64::from(h) / theme::UNITS_PER_PT
    );
    svg.replacen(&from, &to, 1)
}

/// Splits a label in two lines at the `-` or space nearest its middle (or returns it whole).
fn wrap2(s: &str) -> (String, Option<String>) {
    let mid = s.len() / 2;
    let cut = s
        .char_indices()
        .filter(|(_, c)| *c == '-' || *c == ' ' || *c == '/')
        .map(|(i, _)| i)
        .min_by_key(|i| i.abs_diff(mid));
    match cut {
        Some(i) => (s[..=i].trim_end().to_owned(), Some(s[i + 1..].to_owned())),
        None => (s.to_owned(), None),
    }
}

/// A grouped bar chart as SVG text.
pub fn bar_chart(c: &BarChart, width: Width) -> Result<String, ReportError> {
    let log = c.y.log_scale();
    let series_names: Vec<&str> = c
        .panels
        .first()
        .map(|p| p.series.iter().map(|s| s.name.as_str()).collect())
        .unwrap_or_default();
    let entries: Vec<(String, Swatch)> = if c.bar_labels {
        Vec::new()
    } else {
        series_names
            .iter()
            .enumerate()
            .map(|(i, n)| ((*n).to_owned(), Swatch::Bar(theme::color(i))))
            .collect()
    };
    let extra: Vec<f64> = c.y.baseline.iter().chain(&c.y.reference).copied().collect();
    let doms: Vec<(f64, f64)> = c
        .panels
        .iter()
        .map(|p| {
            let vals: Vec<f64> = p
                .series
                .iter()
                .flat_map(|s| s.values.iter().copied())
                .collect();
            domain(&vals, &extra, log, true)
        })
        .collect();
    let ylw = y_label_width(&c.y, &doms);
    let n = c.panels.len().max(1);
    let plot_h = units(if n > 2 { 70.0 } else { 100.0 });
    let row = units(theme::TICK_PT * 1.3);
    let plot_w = |cols: usize| {
        (units(width.points()) - units(16.0)) / i32::try_from(cols).unwrap_or(1) - ylw
    };
    // Bar labels that do not fit under their bar are written vertically, unless stacking the
    // panels in one column lets them fit horizontally.
    let needs_rotation = |cols: usize| {
        c.bar_labels
            && c.panels.iter().any(|p| {
                let slot = plot_w(cols) / i32::try_from(p.groups.len().max(1)).unwrap_or(1);
                let bw = slot * 85 / 100 / i32::try_from(p.series.len().max(1)).unwrap_or(1);
                p.series
                    .iter()
                    .any(|s| theme::text_width(&s.name, theme::TICK_PT) > bw * 85 / 100)
            })
    };
    let mut cols = columns(n, width);
    if needs_rotation(cols) && !needs_rotation(1) {
        cols = 1;
    }
    let rotate = needs_rotation(cols);
    // Group labels may need two lines in narrow slots.
    let approx_plot_w = plot_w(cols);
    let wraps = c.panels.iter().any(|p| {
        let slot = approx_plot_w / i32::try_from(p.groups.len().max(1)).unwrap_or(1);
        p.groups
            .iter()
            .any(|g| theme::text_width(g, theme::TICK_PT) > slot * 95 / 100)
    });
    let has_notes = c
        .panels
        .iter()
        .any(|p| p.notes.iter().any(|s| !s.is_empty()));
    let has_titles = c.panels.iter().any(|p| !p.title.is_empty());
    let title_h = if has_titles {
        units(theme::AXIS_PT * 1.5)
    } else {
        units(2.0)
    };
    let bar_label_h = if !c.bar_labels {
        0
    } else if rotate {
        c.panels
            .iter()
            .flat_map(|p| p.series.iter())
            .map(|s| theme::text_width(&s.name, theme::TICK_PT))
            .max()
            .unwrap_or(0)
            + units(3.0)
    } else {
        row
    };
    let label_h = units(2.0)
        + bar_label_h
        + if wraps { 2 * row } else { row }
        + if has_notes { row } else { 0 }
        + units(4.0);
    let cell_h = title_h + plot_h + label_h;
    let l = layout(width, n, &c.title, &entries, cell_h, cols)?;
    let mut out = String::new();
    {
        let w = l.width.unsigned_abs();
        let h = l.height.unsigned_abs();
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        l.decorate(&root, &c.title, &entries, &c.y.label)?;
        for (pi, p) in c.panels.iter().enumerate() {
            let (cx, cy) = l.cell(pi);
            let f = Frame {
                x0: cx + ylw,
                x1: cx + l.cell_w - units(4.0),
                y0: cy + title_h,
                y1: cy + title_h + plot_h,
                xd: (0.0, 1.0),
                yd: doms[pi],
                xlog: false,
                ylog: log,
            };
            if !p.title.is_empty() {
                text_at(
                    &root,
                    &p.title,
                    ((f.x0 + f.x1) / 2, cy),
                    theme::AXIS_PT,
                    HPos::Center,
                    VPos::Top,
                )?;
            }
            y_axis(&root, &f, &c.y)?;
            let ng = p.groups.len().max(1);
            let k = p.series.len().max(1);
            let pw = f64::from(f.x1 - f.x0);
            let slot = pw / ng as f64;
            let bw = slot * 0.85 / k as f64;
            let (ylo, _) = f.y_data();
            let base = c.y.baseline.unwrap_or(if log { ylo } else { 0.0 });
            let by = f.py(base);
            for gi in 0..p.groups.len() {
                for (si, s) in p.series.iter().enumerate() {
                    let Some(&v) = s.values.get(gi) else { continue };
                    let xa = f64::from(f.x0) + slot * gi as f64 + slot * 0.075 + bw * si as f64;
                    #[allow(clippy::cast_possible_truncation)]
                    let (xa, xb) = (xa.round() as i32, (xa + bw).round() as i32 - 1);
                    let xm = (xa + xb) / 2;
                    if v.is_finite() && (!log || v > 0.0) {
                        let vy = f.py(v);
                        root.draw(&Rectangle::new(
                            [(xa, by.min(vy)), (xb.max(xa + 1), by.max(vy))],
                            theme::color(si).filled(),
                        ))
                        .map_err(plot_err)?;
                    } else if v.is_finite() {
                        // Zero on a log axis: a `0` at the foot, or a flat stub where it does
                        // not fit.
                        if theme::text_width("0", theme::TICK_PT) <= xb - xa {
                            text_at(
                                &root,
                                "0",
                                (xm, f.y1 - units(1.0)),
                                theme::TICK_PT,
                                HPos::Center,
                                VPos::Bottom,
                            )?;
                        } else {
                            root.draw(&Rectangle::new(
                                [(xa, f.y1 - units(1.5)), (xb.max(xa + 1), f.y1)],
                                theme::color(si).filled(),
                            ))
                            .map_err(plot_err)?;
                        }
                    }
                    if c.bar_labels && rotate {
                        let style = theme::text(theme::TICK_PT)
                            .transform(FontTransform::Rotate270)
                            .pos(Pos::new(HPos::Right, VPos::Center));
                        root.draw(&Text::new(s.name.clone(), (xm, f.y1 + units(2.0)), style))
                            .map_err(plot_err)?;
                    } else if c.bar_labels {
                        text_at(
                            &root,
                            &s.name,
                            (xm, f.y1 + units(2.0)),
                            theme::TICK_PT,
                            HPos::Center,
                            VPos::Top,
                        )?;
                    }
                }
                let gx = lerp(f.x0, f.x1, (gi as f64 + 0.5) / ng as f64);
                let mut gy = f.y1 + units(2.0) + bar_label_h;
                let g = &p.groups[gi];
                #[allow(clippy::cast_possible_truncation)]
                let fits = theme::text_width(g, theme::TICK_PT) <= (slot * 0.95) as i32;
                let (a, b) = if fits { (g.clone(), None) } else { wrap2(g) };
                text_at(&root, &a, (gx, gy), theme::TICK_PT, HPos::Center, VPos::Top)?;
                gy += row;
                if let Some(b) = b {
                    text_at(&root, &b, (gx, gy), theme::TICK_PT, HPos::Center, VPos::Top)?;
                }
                if wraps {
                    gy += row;
                }
                if let Some(note) = p.notes.get(gi).filter(|s| !s.is_empty()) {
                    text_at(
                        &root,
                        note,
                        (gx, gy),
                        theme::TICK_PT,
                        HPos::Center,
                        VPos::Top,
                    )?;
                }
            }
        }
        root.present().map_err(plot_err)?;
    }
    Ok(physical_size(out, l.width, l.height))
}

/// A line chart as SVG text: one colour (and marker) per line name, shared across panels; the x
/// range is shared by the panels, each panel has its own y scale.
pub fn line_chart(c: &LineChart, width: Width) -> Result<String, ReportError> {
    let mut names: Vec<&str> = Vec::new();
    for p in &c.panels {
        for line in &p.lines {
            if !names.contains(&line.name.as_str()) {
                names.push(&line.name);
            }
        }
    }
    let idx = |name: &str| names.iter().position(|n| *n == name).unwrap_or(0);
    let any_refused = c
        .panels
        .iter()
        .any(|p| p.lines.iter().any(|l| !l.refused.is_empty()));
    let mut entries: Vec<(String, Swatch)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let m = c.markers.then(|| theme::marker(i));
            ((*n).to_owned(), Swatch::Line(theme::color(i), m))
        })
        .collect();
    if any_refused {
        entries.push(("refused (no run)".to_owned(), Swatch::Refused));
    }
    let xs: Vec<f64> = c
        .panels
        .iter()
        .flat_map(|p| p.lines.iter())
        .flat_map(|l| {
            l.points
                .iter()
                .map(|p| p.0)
                .chain(l.refused.iter().copied())
        })
        .collect();
    let xlog = c.x.log_scale();
    let xd = {
        let (a, b) = domain(&xs, &[], xlog, false);
        // Lines start at their first point: a 2% margin, not the 8% of a value axis.
        let span = b - a;
        (a + span * 0.06 / 1.16, b - span * 0.06 / 1.16)
    };
    let ylog = c.y.log_scale();
    let extra: Vec<f64> = c.y.reference.iter().copied().collect();
    let doms: Vec<(f64, f64)> = c
        .panels
        .iter()
        .map(|p| {
            let vals: Vec<f64> = p
                .lines
                .iter()
                .flat_map(|l| l.points.iter().map(|q| q.1))
                .collect();
            domain(&vals, &extra, ylog, c.y.from_zero)
        })
        .collect();
    let ylw = y_label_width(&c.y, &doms);
    let n = c.panels.len().max(1);
    let plot_h = units(if n > 2 { 75.0 } else { 110.0 });
    let has_titles = c.panels.iter().any(|p| !p.title.is_empty());
    let title_h = if has_titles {
        units(theme::AXIS_PT * 1.5)
    } else {
        units(2.0)
    };
    let label_h = units(2.0 + theme::TICK_PT * 1.3 + theme::AXIS_PT * 1.4 + 3.0);
    let cell_h = title_h + plot_h + label_h;
    let l = layout(width, n, &c.title, &entries, cell_h, columns(n, width))?;
    let mut out = String::new();
    {
        let root =
            SVGBackend::with_string(&mut out, (l.width.unsigned_abs(), l.height.unsigned_abs()))
                .into_drawing_area();
        l.decorate(&root, &c.title, &entries, &c.y.label)?;
        for (pi, p) in c.panels.iter().enumerate() {
            let (cx, cy) = l.cell(pi);
            let f = Frame {
                x0: cx + ylw,
                x1: cx + l.cell_w - units(6.0),
                y0: cy + title_h,
                y1: cy + title_h + plot_h,
                xd,
                yd: doms[pi],
                xlog,
                ylog,
            };
            if !p.title.is_empty() {
                text_at(
                    &root,
                    &p.title,
                    ((f.x0 + f.x1) / 2, cy),
                    theme::AXIS_PT,
                    HPos::Center,
                    VPos::Top,
                )?;
            }
            y_axis(&root, &f, &c.y)?;
            // x ticks.
            let (xa, xb) = if xlog {
                (10f64.powf(xd.0), 10f64.powf(xd.1))
            } else {
                xd
            };
            let xt = ticks(c.x.scale, xa, xb);
            let xl = tick_labels(&xt, &c.x);
            let max_labels = usize::try_from(
                (f.x1 - f.x0)
                    / (xl
                        .iter()
                        .map(|s| theme::text_width(s, theme::TICK_PT))
                        .max()
                        .unwrap_or(1)
                        + units(4.0))
                    .max(1),
            )
            .unwrap_or(1)
            .max(2);
            let every = xt.len().div_ceil(max_labels).max(1);
            for (i, (v, s)) in xt.iter().zip(&xl).enumerate() {
                let x = f.px(*v);
                root.draw(&PathElement::new(
                    vec![(x, f.y1), (x, f.y1 + units(1.5))],
                    INK.stroke_width(units(0.5).unsigned_abs()),
                ))
                .map_err(plot_err)?;
                if i % every == 0 {
                    text_at(
                        &root,
                        s,
                        (x, f.y1 + units(2.0)),
                        theme::TICK_PT,
                        HPos::Center,
                        VPos::Top,
                    )?;
                }
            }
            text_at(
                &root,
                &c.x.label,
                ((f.x0 + f.x1) / 2, f.y1 + units(2.0 + theme::TICK_PT * 1.3)),
                theme::AXIS_PT,
                HPos::Center,
                VPos::Top,
            )?;
            for line in &p.lines {
                let i = idx(&line.name);
                let color = theme::color(i);
                let pts: Vec<(i32, i32)> = line
                    .points
                    .iter()
                    .filter(|q| q.0.is_finite() && q.1.is_finite() && (!ylog || q.1 > 0.0))
                    .map(|&(x, y)| (f.px(x), f.py(y)))
                    .collect();
                root.draw(&PathElement::new(
                    pts.clone(),
                    color.stroke_width(units(theme::LINE_PT).unsigned_abs()),
                ))
                .map_err(plot_err)?;
                if c.markers {
                    for q in &pts {
                        draw_marker(&root, *q, theme::marker(i), color)?;
                    }
                }
                for x in &line.refused {
                    draw_marker(&root, (f.px(*x), f.y1 - units(3.0)), Marker::Cross, color)?;
                }
            }
        }
        root.present().map_err(plot_err)?;
    }
    Ok(physical_size(out, l.width, l.height))
}

/// A time series: lines without markers over a time axis (the caller starts `lines` at the
/// first event of interest), legend above the plot.
pub fn time_series(
    title: &str,
    x_label: &str,
    y: Axis,
    lines: Vec<Line>,
    width: Width,
) -> Result<String, ReportError> {
    line_chart(
        &LineChart {
            title: title.to_owned(),
            x: Axis::linear(x_label),
            y,
            panels: vec![LinePanel {
                title: String::new(),
                lines,
            }],
            markers: false,
        },
        width,
    )
}

/// The font database of the PDF and PNG exports: DejaVu Sans (regular and bold), also the
/// `sans-serif` family.
fn fontdb() -> Arc<resvg::usvg::fontdb::Database> {
    static DB: OnceLock<Arc<resvg::usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = resvg::usvg::fontdb::Database::new();
        db.load_font_data(dejavu::sans::regular().to_vec());
        db.load_font_data(dejavu::sans::bold().to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        Arc::new(db)
    })
    .clone()
}

fn parse(svg: &str) -> Result<resvg::usvg::Tree, ReportError> {
    let opt = resvg::usvg::Options {
        fontdb: fontdb(),
        font_family: "DejaVu Sans".to_owned(),
        ..resvg::usvg::Options::default()
    };
    resvg::usvg::Tree::from_str(svg, &opt).map_err(plot_err)
}

/// PNG resolution.
pub const PNG_DPI: f32 = 300.0;

/// The bytes of a figure (SVG text from this module) in `format`: the SVG itself, a PDF (the
/// page is the figure's size in points, text embedded as text with a subset of DejaVu Sans) or a
/// PNG at [`PNG_DPI`].
pub fn export(svg: &str, format: FigureFormat) -> Result<Vec<u8>, ReportError> {
    match format {
        FigureFormat::Svg => Ok(svg.as_bytes().to_vec()),
        FigureFormat::Pdf => {
            let tree = parse(svg)?;
            // usvg sizes are CSS pixels (96 per inch).
            svg2pdf::to_pdf(
                &tree,
                svg2pdf::ConversionOptions::default(),
                svg2pdf::PageOptions { dpi: 96.0 },
            )
            .map_err(plot_err)
        }
        FigureFormat::Png => {
            let tree = parse(svg)?;
            let scale = PNG_DPI / 96.0;
            let size = tree
                .size()
                .to_int_size()
                .scale_by(scale)
                .ok_or_else(|| plot_err("empty figure"))?;
            let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
                .ok_or_else(|| plot_err("figure too large for a PNG"))?;
            pixmap.fill(resvg::tiny_skia::Color::WHITE);
            resvg::render(
                &tree,
                resvg::tiny_skia::Transform::from_scale(scale, scale),
                &mut pixmap.as_mut(),
            );
            pixmap.encode_png().map_err(plot_err)
        }
    }
}

/// Writes `svg` as `dir/stem.<ext>` for every format (each with [`write_atomic`]); returns the
/// files written. Errors name the file.
pub fn write_figure(
    dir: &Path,
    stem: &str,
    svg: &str,
    formats: &[FigureFormat],
) -> Result<Vec<PathBuf>, ReportError> {
    let mut out = Vec::new();
    for f in formats {
        let p = dir.join(format!("{stem}.{}", f.ext()));
        let bytes = export(svg, *f).map_err(|e| match e {
            ReportError::Plot { message, .. } => ReportError::Plot {
                path: p.display().to_string(),
                message,
            },
            e => e,
        })?;
        write_atomic(&p, &bytes)?;
        out.push(p);
    }
    Ok(out)
}

/// The formats of a `--figure-format` list, deduplicated, in [`FigureFormat::ALL`] order; SVG
/// when the list is empty.
pub fn formats_or_svg(list: &[FigureFormat]) -> Vec<FigureFormat> {
    let v: Vec<FigureFormat> = FigureFormat::ALL
        .into_iter()
        .filter(|f| list.contains(f))
        .collect();
    if v.is_empty() {
        vec![FigureFormat::Svg]
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(log: bool) -> BarChart {
        BarChart {
            title: "Speedup of Compromis".into(),
            y: if log {
                Axis::log("speedup").ratio().baseline(1.0).reference(1.0)
            } else {
                Axis::linear("overhead").percent()
            },
            panels: vec![
                BarPanel {
                    title: "vs EPT".into(),
                    groups: vec!["gups".into(), "churn".into(), "azure-v1-rnn".into()],
                    notes: vec!["n=1".into(), String::new(), "n=3".into()],
                    series: vec![
                        Series {
                            name: "4k".into(),
                            values: vec![1.07, 1.01, 0.0],
                        },
                        Series {
                            name: "2m".into(),
                            values: vec![1.004, f64::NAN, 1.0],
                        },
                    ],
                },
                BarPanel {
                    title: "vs shadow".into(),
                    groups: vec!["gups".into(), "churn".into(), "x".into()],
                    notes: vec![],
                    series: vec![
                        Series {
                            name: "4k".into(),
                            values: vec![0.996, 3.49, 1.0],
                        },
                        Series {
                            name: "2m".into(),
                            values: vec![1.08, 3.41, 1.0],
                        },
                    ],
                },
            ],
            bar_labels: log,
        }
    }

    fn svg_ok(svg: &str) -> resvg::usvg::Tree {
        parse(svg).expect("the SVG parses")
    }

    #[test]
    fn bar_charts_parse_and_export() {
        for log in [false, true] {
            for w in [Width::Column, Width::Page] {
                let svg = bar_chart(&bars(log), w).unwrap();
                let tree = svg_ok(&svg);
                // The SVG is as wide as the paper width, in points (usvg: 96 px per inch).
                let inches = f64::from(tree.size().width()) / 96.0;
                assert!((inches - w.inches()).abs() < 0.01, "{inches}");
                assert!(svg.contains("vs shadow") && svg.contains("gups"));
                let pdf = export(&svg, FigureFormat::Pdf).unwrap();
                assert!(pdf.starts_with(b"%PDF"));
                let png = export(&svg, FigureFormat::Png).unwrap();
                let img = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
                let want = (w.inches() * f64::from(PNG_DPI)).round();
                assert!(
                    (f64::from(img.width()) - want).abs() <= 2.0,
                    "{}",
                    img.width()
                );
            }
        }
    }

    #[test]
    fn text_is_at_least_7pt_at_column_width() {
        let svg = bar_chart(&bars(true), Width::Column).unwrap();
        // Drawing units are a quarter point; the SVG is set at its width in points.
        let min = svg
            .split("font-size=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().parse::<f64>().unwrap())
            .fold(f64::INFINITY, f64::min);
        assert!(min / theme::UNITS_PER_PT >= 7.0 - 1e-9, "{min}");
    }

    #[test]
    fn log_ticks_and_labels() {
        assert_eq!(ticks(Scale::Log, 1e-4, 0.2), vec![1e-4, 1e-3, 1e-2, 1e-1]);
        let t = ticks(Scale::Log, 0.95, 1.2);
        assert!(
            t.len() >= 3 && t.iter().all(|v| (0.95..=1.2).contains(v)),
            "{t:?}"
        );
        let a = Axis::log("x").percent();
        assert_eq!(tick_labels(&[1e-4, 1e-2, 0.1], &a), ["0.01%", "1%", "10%"]);
        let r = Axis::linear("x").ratio();
        assert_eq!(tick_labels(&[1.0, 1.5, 2.0], &r), ["1.0×", "1.5×", "2.0×"]);
        assert_eq!(linear_ticks(0.0, 1.0, 5), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    }

    #[test]
    fn line_charts_mark_refused_points() {
        let c = LineChart {
            title: String::new(),
            x: Axis::linear("host fill").percent(),
            y: Axis::linear("Mcycles"),
            panels: vec![LinePanel {
                title: "host 1g".into(),
                lines: vec![Line {
                    name: "compromis".into(),
                    points: vec![(0.0, 6.8), (0.5, 6.81)],
                    refused: vec![0.8, 0.9],
                }],
            }],
            markers: true,
        };
        let svg = line_chart(&c, Width::Column).unwrap();
        svg_ok(&svg);
        assert!(svg.contains("refused (no run)"));
        let empty = line_chart(&LineChart::default(), Width::Page).unwrap();
        svg_ok(&empty);
        let t = time_series("t", "hours", Axis::linear("share"), vec![], Width::Page).unwrap();
        svg_ok(&t);
    }

    #[test]
    fn formats() {
        assert_eq!("PDF".parse::<FigureFormat>(), Ok(FigureFormat::Pdf));
        assert!(
            "jpg"
                .parse::<FigureFormat>()
                .unwrap_err()
                .contains("svg, pdf, png")
        );
        assert_eq!(formats_or_svg(&[]), [FigureFormat::Svg]);
        assert_eq!(
            formats_or_svg(&[FigureFormat::Png, FigureFormat::Svg, FigureFormat::Png]),
            [FigureFormat::Svg, FigureFormat::Png]
        );
        let dir = tempfile::tempdir().unwrap();
        let svg = bar_chart(&bars(false), Width::Column).unwrap();
        let files = write_figure(dir.path(), "f", &svg, &FigureFormat::ALL).unwrap();
        assert_eq!(files.len(), 3);
        assert!(files[1].ends_with("f.pdf"));
    }
}
