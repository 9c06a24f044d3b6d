//! The one theme of every figure: palette, colours of the host-memory map, font family and sizes,
//! line width. Charts take their styles from here and nowhere else.

use plotters::style::{FontDesc, IntoFont, RGBColor, TextStyle};

/// Font family of every text in a figure.
pub const FONT: &str = "sans-serif";
/// Size of a figure's title.
pub const TITLE_SIZE: u32 = 18;
/// Size of a legend entry.
pub const LEGEND_SIZE: u32 = 13;
/// Size of a category label (bar-chart groups, rows of the host map).
pub const LABEL_SIZE: u32 = 12;
/// Stroke width of a data line.
pub const LINE_WIDTH: u32 = 2;

/// Series colours, in order (cycled past the eighth series).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
    RGBColor(0x81, 0x72, 0xb3),
    RGBColor(0x93, 0x78, 0x60),
    RGBColor(0xda, 0x8b, 0xc3),
    RGBColor(0x8c, 0x8c, 0x8c),
];

/// Free memory in a host map.
pub const FREE: RGBColor = RGBColor(0xee, 0xee, 0xee);
/// Reserved (unmovable) memory in a host map.
pub const RESERVED: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// The colour of series (or VM) number `i`.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The title font.
pub fn title() -> FontDesc<'static> {
    (FONT, TITLE_SIZE).into_font()
}

/// The legend font.
pub fn legend() -> FontDesc<'static> {
    (FONT, LEGEND_SIZE).into_font()
}

/// The label font.
pub fn label() -> TextStyle<'static> {
    TextStyle::from((FONT, LABEL_SIZE).into_font())
}
