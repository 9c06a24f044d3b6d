//! Printers of the host memory map: a text bar, a table, and an SVG drawing of the map over time.
//! They only read a [`HostMemory`] (or [`Frame`]s captured from one); they never change it.

use crate::host::{HostMemory, Owner};
use compromis_types::{Address, ByteSize, Extent};
use std::fmt::Write as _;

/// A snapshot of the host memory map, one row of the SVG drawing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Row label (e.g. the scenario step).
    pub label: String,
    /// RAM ranges.
    pub ram: Vec<Extent>,
    /// Every owned or free range, in address order.
    pub spans: Vec<(Extent, Owner)>,
}

impl Frame {
    /// Captures the current map of `h`.
    pub fn capture(label: impl Into<String>, h: &HostMemory) -> Frame {
        Frame {
            label: label.into(),
            ram: h.allocator().ranges().collect(),
            spans: h.owners(),
        }
    }
    fn span(&self) -> (u64, u64) {
        let lo = self.ram.first().map_or(0, |r| r.start.raw());
        let hi = self.ram.last().map_or(0, |r| r.end().raw());
        (lo, hi)
    }
}

const SYMBOLS: &[u8] = b"123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The one-character symbol of an owner in the text bar: `.` free, `#` reserved, a digit or
/// letter for a VM (cycling through 61 symbols by id), a space for a hole between RAM ranges.
pub fn symbol(owner: &Owner) -> char {
    match owner {
        Owner::Free => '.',
        Owner::Reserved(_) => '#',
        Owner::Vm(v) => {
            let n = u64::try_from(SYMBOLS.len()).unwrap_or(1);
            let i = usize::try_from((v.0.wrapping_sub(1)) % n).unwrap_or(0);
            char::from(SYMBOLS[i])
        }
    }
}

/// A text bar of `width` columns over the RAM address span; each column shows the owner of the
/// most bytes in it (a VM or reserved range wins over free space on a tie, so small VMs stay
/// visible).
pub fn text_bar(h: &HostMemory, width: usize) -> String {
    let f = Frame::capture("", h);
    let (lo, hi) = f.span();
    let width = width.max(1);
    if hi <= lo {
        return String::new();
    }
    let total = u128::from(hi - lo);
    let w = width as u128;
    let mut out = String::with_capacity(width + 2);
    out.push('|');
    let mut i = 0usize;
    for c in 0..width {
        let cs = lo + u64::try_from(total * c as u128 / w).unwrap_or(0);
        let ce = lo + u64::try_from(total * (c as u128 + 1) / w).unwrap_or(0);
        while i < f.spans.len() && f.spans[i].0.end().raw() <= cs {
            i += 1;
        }
        let mut best: Option<(u64, bool, &Owner)> = None;
        for (e, o) in f.spans[i..].iter().take_while(|(e, _)| e.start.raw() < ce) {
            let ov = e.end().raw().min(ce) - e.start.raw().max(cs);
            let key = (ov, *o != Owner::Free);
            if best.is_none_or(|(b, nf, _)| key > (b, nf)) {
                best = Some((key.0, key.1, o));
            }
        }
        out.push(best.map_or(' ', |(_, _, o)| symbol(o)));
    }
    out.push('|');
    out
}

/// A table: the fragmentation metrics, then every VM (extents, size, NUMA node of each extent) and
/// the free extents.
pub fn table(h: &HostMemory) -> String {
    let s = h.stats();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "capacity {}  vms {}  reserved {}  free {}  largest free {}  free extents {}  fragmentation {:.3}",
        ByteSize(s.capacity),
        ByteSize(s.vm_bytes),
        ByteSize(s.reserved_bytes),
        ByteSize(s.free_bytes),
        ByteSize(s.largest_free),
        s.free_extents,
        s.fragmentation
    );
    let _ = writeln!(
        out,
        "{:<4} {:<22} {:<40} {:>10} {:>5}",
        "sym", "owner", "host range", "size", "node"
    );
    for (e, o) in h.owners() {
        let node = h
            .map()
            .node_of(e.start)
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{:<4} {:<22} {:<40} {:>10} {:>5}",
            symbol(&o),
            o.to_string(),
            e.to_string(),
            ByteSize(e.len).to_string(),
            node
        );
    }
    out
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn color(owner: &Owner) -> String {
    match owner {
        Owner::Free => "#eeeeee".into(),
        Owner::Reserved(_) => "#555555".into(),
        Owner::Vm(v) => {
            // Golden-angle hues: neighbouring ids get distinct colours.
            let hue = (v.0.wrapping_mul(137)) % 360;
            let (r, g, b) = hsl_to_rgb(hue, 0.65, 0.55);
            format!("#{r:02x}{g:02x}{b:02x}")
        }
    }
}

/// HSL (hue in degrees) to 8-bit RGB, for SVG 1.1 which has no `hsl()` colours.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
// reason: hue < 360 is exact in f64; channels are clamped to 0..=255 before the cast
fn hsl_to_rgb(hue: u64, s: f64, l: f64) -> (u8, u8, u8) {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let h = (hue % 360) as f64 / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let to8 = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    (to8(r), to8(g), to8(b))
}

/// Draws the host memory map over time as SVG: one row per frame (top = first), address on the x
/// axis (holes between RAM ranges left blank), one colour per VM, grey for reserved, light grey for
/// free. Hand-written SVG 1.1 (no dependency), valid XML.
pub fn render_svg(frames: &[Frame]) -> String {
    const LABEL_W: f64 = 300.0;
    const MAP_W: f64 = 900.0;
    const ROW_H: f64 = 22.0;
    const TOP: f64 = 40.0;
    let (lo, hi) = frames
        .iter()
        .map(Frame::span)
        .fold((u64::MAX, 0), |(a, b), (l, h)| (a.min(l), b.max(h)));
    let (lo, hi) = if hi > lo { (lo, hi) } else { (0, 1) };
    #[allow(clippy::cast_precision_loss)] // reason: pixel positions need no more than f64 precision
    let x = |a: u64| LABEL_W + MAP_W * ((a.saturating_sub(lo)) as f64 / (hi - lo) as f64);
    #[allow(clippy::cast_precision_loss)] // reason: a frame count is far below 2^53
    let height = TOP + ROW_H * frames.len() as f64 + 30.0;
    let width = LABEL_W + MAP_W + 20.0;
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{LABEL_W}" y="20" font-size="14">Host memory map over time (host-physical {lo:#x} .. {hi:#x})</text>"#
    );
    for (row, f) in frames.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)] // reason: a row index is far below 2^53
        let y = TOP + ROW_H * row as f64;
        let _ = writeln!(
            s,
            r#"<text x="4" y="{:.1}">{}</text>"#,
            y + 15.0,
            xml_escape(&f.label)
        );
        for (e, o) in &f.spans {
            let x0 = x(e.start.raw());
            let w = (x(e.end().raw()) - x0).max(0.5);
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.2}" y="{y:.1}" width="{w:.2}" height="{:.1}" fill="{}" stroke="white" stroke-width="0.3"><title>{} {} {}</title></rect>"#,
                ROW_H - 4.0,
                color(o),
                xml_escape(&o.to_string()),
                e,
                ByteSize(e.len)
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::Policy;
    use compromis_types::{PageSize, VmId};

    #[test]
    fn bar_and_table() {
        const G: u64 = 1 << 30;
        let mut h = HostMemory::new(8 * G, Policy::FirstFit);
        h.create(VmId(1), 2 * G, PageSize::Size2M, 1).unwrap();
        h.create(VmId(2), 2 * G, PageSize::Size2M, 1).unwrap();
        h.destroy(VmId(1)).unwrap();
        // 8 columns of 1 GiB: free free vm2 vm2 free x4.
        assert_eq!(text_bar(&h, 8), "|..22....|");
        let t = table(&h);
        assert!(
            t.contains("vm2") && t.contains("fragmentation 0.333"),
            "{t}"
        );
    }

    #[test]
    fn hsl_conversion() {
        assert_eq!(hsl_to_rgb(0, 1.0, 0.5), (255, 0, 0));
        assert_eq!(hsl_to_rgb(120, 1.0, 0.5), (0, 255, 0));
        assert_eq!(hsl_to_rgb(240, 1.0, 0.5), (0, 0, 255));
        assert_eq!(hsl_to_rgb(60, 1.0, 0.25), (128, 128, 0));
    }

    #[test]
    fn svg_is_wellformed_enough() {
        let mut h = HostMemory::new(1 << 30, Policy::FirstFit);
        let a = Frame::capture("start <&>", &h);
        h.create(VmId(3), 1 << 29, PageSize::Size4K, 1).unwrap();
        let b = Frame::capture("after", &h);
        let svg = render_svg(&[a, b]);
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("start &lt;&amp;&gt;"));
        assert_eq!(svg.matches("<rect").count(), 1 + 1 + 2);
    }
}
