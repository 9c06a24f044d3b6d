//! The one theme of every figure: the Okabe-Ito colour-blind-safe palette, marker shapes, the
//! colours of the host-memory map, the font and its sizes (in points), line widths and the two
//! figure widths of a paper (one column, 3.33 in; the whole page, 7 in). Charts take their styles
//! from here and nowhere else.
//!
//! Figures are drawn in a grid of [`UNITS_PER_PT`] drawing units per typographic point, so a
//! figure of [`Width::Column`] is 240 pt wide whatever the viewer, and a size given here in points
//! is the size printed at that width. The smallest text (tick labels, legends) is
//! [`TICK_PT`] = 7 pt.

use plotters::style::{FontDesc, IntoFont, RGBColor, TextStyle};

/// Font family written into SVG files. The PDF and PNG exports map it to DejaVu Sans, which is
/// embedded in the binary (the `dejavu` crate), so they look the same on every machine.
pub const FONT: &str = "sans-serif";
/// Drawing units per point (the SVG user unit is a quarter point).
pub const UNITS_PER_PT: f64 = 4.0;
/// Size of a figure's title, in points.
pub const TITLE_PT: f64 = 9.0;
/// Size of axis titles and panel titles, in points.
pub const AXIS_PT: f64 = 8.0;
/// Size of tick labels, category labels and legend entries, in points (the smallest text).
pub const TICK_PT: f64 = 7.0;
/// Stroke width of a data line, in points.
pub const LINE_PT: f64 = 1.0;

/// Legacy pixel sizes of the first, pixel-based charts (kept for callers of those sizes).
pub const TITLE_SIZE: u32 = 18;
/// Legacy legend size (pixels).
pub const LEGEND_SIZE: u32 = 13;
/// Legacy label size (pixels).
pub const LABEL_SIZE: u32 = 12;
/// Stroke width of a data line, in drawing units.
pub const LINE_WIDTH: u32 = 4;

/// The Okabe-Ito palette (Okabe and Ito, "Color Universal Design", 2008), reordered so the first
/// colours are the most distinct on white: blue, orange, bluish green, vermillion, reddish purple,
/// sky blue, black, yellow. Series colours are taken in this order (cycled past the eighth).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xb2),
    RGBColor(0xe6, 0x9f, 0x00),
    RGBColor(0x00, 0x9e, 0x73),
    RGBColor(0xd5, 0x5e, 0x00),
    RGBColor(0xcc, 0x79, 0xa7),
    RGBColor(0x56, 0xb4, 0xe9),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0xf0, 0xe4, 0x42),
];

/// Free memory in a host map.
pub const FREE: RGBColor = RGBColor(0xee, 0xee, 0xee);
/// Reserved (unmovable) memory in a host map.
pub const RESERVED: RGBColor = RGBColor(0x55, 0x55, 0x55);
/// Grid lines.
pub const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
/// Axes, reference lines and text.
pub const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);

/// The colour of series (or VM) number `i`.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Marker shapes of line series, in order (cycled): a second cue beside the colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Filled circle.
    Circle,
    /// Filled square.
    Square,
    /// Filled triangle.
    Triangle,
    /// Hollow circle.
    Ring,
    /// Diagonal cross (also the mark of a refused point).
    Cross,
}

/// The marker of series number `i`.
pub fn marker(i: usize) -> Marker {
    const M: [Marker; 4] = [
        Marker::Circle,
        Marker::Square,
        Marker::Triangle,
        Marker::Ring,
    ];
    M[i % M.len()]
}

/// The two widths of a paper figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Width {
    /// One column of a two-column paper: 3.33 in (240 pt).
    #[default]
    Column,
    /// The whole text width of a page: 7 in (504 pt).
    Page,
}

impl Width {
    /// The width in points.
    pub fn points(self) -> f64 {
        match self {
            Width::Column => 240.0,
            Width::Page => 504.0,
        }
    }

    /// The width in inches.
    pub fn inches(self) -> f64 {
        self.points() / 72.0
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Width::Column => "column",
            Width::Page => "page",
        }
    }
}

impl std::str::FromStr for Width {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "column" => Ok(Width::Column),
            "page" => Ok(Width::Page),
            _ => Err(format!(
                "unknown figure width '{s}': valid values are column, page"
            )),
        }
    }
}

/// Points to drawing units.
pub fn units(pt: f64) -> i32 {
    #[allow(clippy::cast_possible_truncation)]
    let u = (pt * UNITS_PER_PT).round() as i32;
    u
}

/// A font of `pt` points (plotters' SVG backend writes `size / 1.24` as the font size).
pub fn font(pt: f64) -> FontDesc<'static> {
    (FONT, pt * UNITS_PER_PT * 1.24).into_font()
}

/// A text style of `pt` points in the ink colour.
pub fn text(pt: f64) -> TextStyle<'static> {
    TextStyle::from(font(pt)).color(&INK)
}

/// The title font.
pub fn title() -> FontDesc<'static> {
    font(TITLE_PT)
}

/// The legend font.
pub fn legend() -> FontDesc<'static> {
    font(TICK_PT)
}

/// The label font.
pub fn label() -> TextStyle<'static> {
    text(TICK_PT)
}

/// An estimate of the width of `s` in drawing units at `pt` points, from the advance widths of
/// DejaVu Sans in classes (narrow `il.,:;'|!`, wide `mwMW`, capitals, the rest about 0.62 em).
pub fn text_width(s: &str, pt: f64) -> i32 {
    let em: f64 = s
        .chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 0.3,
            ' ' | 'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '-' | '/' => 0.4,
            'm' | 'w' | 'M' | 'W' | '%' => 0.95,
            c if c.is_ascii_uppercase() => 0.72,
            _ => 0.63,
        })
        .sum();
    units(em * pt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_and_sizes() {
        assert!((Width::Column.inches() - 3.333).abs() < 0.01);
        assert!((Width::Page.inches() - 7.0).abs() < 0.01);
        assert_eq!("PAGE".parse::<Width>(), Ok(Width::Page));
        assert!("a4".parse::<Width>().is_err());
        const { assert!(TICK_PT >= 7.0) };
        assert_eq!(units(1.0), 4);
        assert_ne!(color(0), color(1));
        assert_eq!(color(8), color(0));
    }
}
