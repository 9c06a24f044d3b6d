//! Printers of the hypervisor memory manager (`compromis_hostmem`): the host map as a text bar, a
//! table and an SVG figure over time, and the prose of each `compromis hv` scenario step. They only
//! read a [`HostMemory`], [`MapSnapshot`]s and [`StepReport`]s.

use crate::svg::plot_err;
use crate::theme::{Width, units};
use crate::{ReportError, theme};
use compromis_hostmem::{
    Extent, GrowOutcome, HostMemory, MapSnapshot, Owner, Provisioned, StepOutcome, StepReport,
    VmMemory,
};
use compromis_types::{Address, ByteSize};
use plotters::prelude::*;
use std::fmt::Write as _;

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
    let f = MapSnapshot::capture(h);
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

fn extents_list(e: &[Extent]) -> String {
    e.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe(vm: compromis_hostmem::VmId, m: &VmMemory) -> String {
    let mut s = match m.outcome() {
        Provisioned::OneExtent { segments } => {
            format!("{vm}: one host extent, {segments} register set(s)")
        }
        Provisioned::MultiSegment { extents, segments } => {
            format!("{vm}: {extents} host extents, {segments} register set(s)")
        }
        Provisioned::Ept {
            pages_4k,
            pages_2m,
            pages_1g,
        } => format!(
            "{vm}: EPT fallback over {} host extent(s): {} pages ({pages_1g} x 1g, {pages_2m} x 2m, {pages_4k} x 4k)",
            m.host_extents.len(),
            pages_1g + pages_2m + pages_4k
        ),
    };
    for seg in &m.segments {
        let _ = write!(
            s,
            "\n  BASE {} LIMIT {} -> host {} (OFFSET {:#x})",
            seg.base,
            seg.limit,
            seg.host_base,
            seg.offset()
        );
    }
    s
}

/// What a step did, in prose (may span lines): `created vm1 (4GiB) in 1 extent(s): ...`,
/// `refused: ...`, `check FAILED: ...`.
pub fn outcome(o: &StepOutcome) -> String {
    match o {
        StepOutcome::Host { capacity, policy } => {
            format!("host of {} ({policy} policy)", ByteSize(*capacity))
        }
        StepOutcome::PolicySet(p) => format!("policy is now {p}"),
        StepOutcome::Created { vm, len, extents } => format!(
            "created {vm} ({}) in {} extent(s): {}",
            ByteSize(*len),
            extents.len(),
            extents_list(extents)
        ),
        StepOutcome::Provisioned { vm, memory } => format!("provisioned {}", describe(*vm, memory)),
        StepOutcome::Destroyed { vm, freed } => {
            format!("destroyed {vm}: {} freed", ByteSize(*freed))
        }
        StepOutcome::Grown { vm, by, how } => match how {
            GrowOutcome::InPlace => format!("grew {vm} by {} in place", ByteSize(*by)),
            GrowOutcome::Relocated { to, bytes_copied } => format!(
                "grew {vm} by {}: relocated to {to}, {} copied",
                ByteSize(*by),
                ByteSize(*bytes_copied)
            ),
            GrowOutcome::Added { extents } => format!(
                "grew {vm} by {}: added extents {}",
                ByteSize(*by),
                extents_list(extents)
            ),
        },
        StepOutcome::Shrunk { vm, released } => {
            format!("shrank {vm}: {} released", ByteSize(*released))
        }
        StepOutcome::NothingToCompact { want } => format!(
            "a free extent of {} already exists: nothing to move",
            ByteSize(*want)
        ),
        StepOutcome::Compacted {
            want,
            moves,
            bytes_moved,
            largest_free,
        } => {
            let mut s = format!(
                "compacted for {}: {} move(s), {} copied; largest free now {}",
                ByteSize(*want),
                moves.len(),
                ByteSize(*bytes_moved),
                ByteSize(*largest_free)
            );
            for m in moves {
                let _ = write!(s, "\n  {} {} -> {}", m.vm, m.from, m.to);
            }
            s
        }
        StepOutcome::Aged { seed, report: r } => format!(
            "aged (seed {seed}): {} created, {} destroyed, {} refused; {} ageing VMs live, fragmentation {:.3}",
            r.created,
            r.destroyed,
            r.refused,
            r.live.len(),
            r.stats.fragmentation
        ),
        StepOutcome::Checked => "check: all invariants hold".into(),
        StepOutcome::Refused(e) => format!("refused: {e}"),
        StepOutcome::CheckFailed(e) => format!("check FAILED: {e}"),
    }
}

/// A step as `compromis hv` prints it: `== <file>:<line>: <statement>`, the outcome (prefixed
/// with `! ` when refused), then, with `map = Some((host, width))`, the text bar and the table of
/// the host after the step; a blank line ends it.
pub fn step(file: &str, r: &StepReport, map: Option<(&HostMemory, usize)>) -> String {
    let mut text = format!(
        "== {file}:{}: {}\n{}{}\n",
        r.line,
        r.text,
        if r.ok() { "" } else { "! " },
        outcome(&r.outcome)
    );
    if let Some((h, width)) = map {
        text.push_str(&text_bar(h, width));
        text.push('\n');
        text.push_str(&table(h));
    }
    text.push('\n');
    text
}

/// The last line of `compromis hv`: steps, refusals and bytes copied over `steps`.
pub fn summary(steps: &[StepReport]) -> String {
    let refused = steps.iter().filter(|r| !r.ok()).count();
    let copied: u64 = steps.iter().map(StepReport::bytes_copied).sum();
    format!(
        "{} steps, {refused} refused, {} copied by relocation and compaction\n",
        steps.len(),
        ByteSize(copied)
    )
}

/// The fill colour of an owner: the theme's palette by VM id, [`theme::RESERVED`],
/// [`theme::FREE`].
fn fill(owner: &Owner) -> RGBColor {
    match owner {
        Owner::Free => theme::FREE,
        Owner::Reserved(_) => theme::RESERVED,
        Owner::Vm(v) => theme::color(usize::try_from(v.0.wrapping_sub(1)).unwrap_or(0)),
    }
}

/// Whether text on `c` should be dark (light fills) or white (dark fills).
fn dark_text_on(c: RGBColor) -> bool {
    0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2) > 140.0
}

/// Shortens `s` to about `max` units wide at `pt` points (with an ellipsis).
fn fit(s: &str, max: i32, pt: f64) -> String {
    if theme::text_width(s, pt) <= max {
        return s.to_owned();
    }
    let mut out: String = s.to_owned();
    while !out.is_empty() && theme::text_width(&out, pt) + theme::text_width("…", pt) > max {
        out.pop();
    }
    out.push('…');
    out
}

/// The host memory map over a scenario at page width as SVG; see [`map_svg_at`].
pub fn map_svg(steps: &[StepReport]) -> Result<String, ReportError> {
    map_svg_at(steps, Width::Page)
}

/// The host memory map over a scenario as SVG, in the figure theme at `width`: one row per step
/// (top = first), labelled with its line and statement; host-physical address on the x axis with
/// GiB ticks (holes between RAM ranges left blank); one palette colour per VM (by id) with the
/// VM's name written in it where it fits, dark grey for reserved, light grey for free.
pub fn map_svg_at(steps: &[StepReport], width: Width) -> Result<String, ReportError> {
    use crate::figure::text_at;
    use plotters::style::text_anchor::{HPos, VPos};
    let (lo, hi) = steps
        .iter()
        .map(|r| r.map.span())
        .fold((u64::MAX, 0), |(a, b), (l, h)| (a.min(l), b.max(h)));
    let (lo, hi) = if hi > lo { (lo, hi) } else { (0, 1) };
    let w = units(width.points());
    let pad = units(3.0);
    let label_w = w * 2 / 5;
    let map_x0 = pad + label_w + units(3.0);
    let map_w = w - map_x0 - units(6.0);
    let x = |a: u64| {
        let off = u128::from(a.saturating_sub(lo).min(hi - lo));
        let px = off * u128::from(map_w.unsigned_abs()) / u128::from(hi - lo);
        map_x0 + i32::try_from(px).unwrap_or(map_w)
    };
    let row_h = units(10.0);
    let bar_h = units(8.5);
    let top = pad + units(theme::TITLE_PT * 1.5) + units(theme::TICK_PT * 1.6);
    let rows = i32::try_from(steps.len()).unwrap_or(i32::MAX / row_h - 100);
    let axis_h = units(2.0 + theme::TICK_PT * 1.4 + theme::AXIS_PT * 1.4 + 3.0);
    let height = top + row_h * rows + axis_h;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w.unsigned_abs(), height.unsigned_abs()))
            .into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        text_at(
            &root,
            "Host memory map after each step",
            (w / 2, pad),
            theme::TITLE_PT,
            HPos::Center,
            VPos::Top,
        )?;
        // Legend of the two non-VM fills.
        let ly = pad + units(theme::TITLE_PT * 1.5) + units(theme::TICK_PT * 0.8);
        let mut lx = map_x0;
        for (name, c) in [("free", theme::FREE), ("reserved", theme::RESERVED)] {
            root.draw(&Rectangle::new(
                [(lx, ly - units(3.0)), (lx + units(9.0), ly + units(3.0))],
                c.filled(),
            ))
            .map_err(plot_err)?;
            root.draw(&Rectangle::new(
                [(lx, ly - units(3.0)), (lx + units(9.0), ly + units(3.0))],
                theme::INK.stroke_width(1),
            ))
            .map_err(plot_err)?;
            text_at(
                &root,
                name,
                (lx + units(11.5), ly),
                theme::TICK_PT,
                HPos::Left,
                VPos::Center,
            )?;
            lx += units(11.5 + 6.0) + theme::text_width(name, theme::TICK_PT);
        }
        text_at(
            &root,
            "VMs: one colour each, named where they fit",
            (lx, ly),
            theme::TICK_PT,
            HPos::Left,
            VPos::Center,
        )?;
        for (row, r) in (0..rows).zip(steps) {
            let y = top + row_h * row;
            let label = fit(&format!("{}: {}", r.line, r.text), label_w, theme::TICK_PT);
            text_at(
                &root,
                &label,
                (pad, y + bar_h / 2),
                theme::TICK_PT,
                HPos::Left,
                VPos::Center,
            )?;
            for (e, o) in &r.map.spans {
                let x0 = x(e.start.raw());
                let x1 = x(e.end().raw()).max(x0 + 1);
                let corners = [(x0, y), (x1, y + bar_h)];
                let c = fill(o);
                root.draw(&Rectangle::new(corners, c.filled()))
                    .map_err(plot_err)?;
                if *o != Owner::Free {
                    // A white outline keeps neighbouring VMs of one colour apart.
                    root.draw(&Rectangle::new(corners, WHITE.stroke_width(2)))
                        .map_err(plot_err)?;
                }
                if let Owner::Vm(v) = o {
                    let name = v.to_string();
                    if theme::text_width(&name, theme::TICK_PT) + units(2.0) <= x1 - x0 {
                        let style = theme::text(theme::TICK_PT)
                            .color(if dark_text_on(c) { &theme::INK } else { &WHITE })
                            .pos(plotters::style::text_anchor::Pos::new(
                                HPos::Center,
                                VPos::Center,
                            ));
                        root.draw(&Text::new(name, ((x0 + x1) / 2, y + bar_h / 2), style))
                            .map_err(plot_err)?;
                    }
                }
            }
        }
        // GiB ticks under the map.
        let ay = top + row_h * rows;
        const GIB: f64 = (1u64 << 30) as f64;
        let (glo, ghi) = (lo as f64 / GIB, hi as f64 / GIB);
        root.draw(&PathElement::new(
            vec![(map_x0, ay), (map_x0 + map_w, ay)],
            theme::INK.stroke_width(units(0.6).unsigned_abs()),
        ))
        .map_err(plot_err)?;
        for t in crate::figure::linear_ticks(glo, ghi, 8) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let tx = x((t * GIB) as u64);
            root.draw(&PathElement::new(
                vec![(tx, ay), (tx, ay + units(1.5))],
                theme::INK.stroke_width(units(0.5).unsigned_abs()),
            ))
            .map_err(plot_err)?;
            text_at(
                &root,
                &format!("{t}"),
                (tx, ay + units(2.0)),
                theme::TICK_PT,
                HPos::Center,
                VPos::Top,
            )?;
        }
        text_at(
            &root,
            "host-physical address (GiB)",
            (map_x0 + map_w / 2, ay + units(2.0 + theme::TICK_PT * 1.4)),
            theme::AXIS_PT,
            HPos::Center,
            VPos::Top,
        )?;
        root.present().map_err(plot_err)?;
    }
    let (pw, ph) = (
        f64::from(w) / theme::UNITS_PER_PT,
        f64::from(height) / theme::UNITS_PER_PT,
    );
    Ok(out.replacen(
        &format!("width=\"{w}\" height=\"{height}\""),
        &format!("width=\"{pw}pt\" height=\"{ph}pt\""),
        1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_hostmem::{Policy, Scenario, VmId, scenario::DEMO};
    use compromis_types::PageSize;

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
    fn steps_in_prose() {
        let s = Scenario::parse(
            "host 4GiB\ncreate 1 8GiB\ndestroy 2\ncreate 1 1GiB # ok\ncheck\n",
            "t",
        )
        .unwrap();
        let r = s.run().unwrap();
        let prose: Vec<String> = r.iter().map(|x| outcome(&x.outcome)).collect();
        assert_eq!(prose[0], "host of 4GiB (first-fit policy)");
        assert!(
            prose[1].starts_with("refused: ") && prose[1].contains("exceeds the host capacity"),
            "{}",
            prose[1]
        );
        assert_eq!(prose[2], "refused: unknown VM vm2");
        assert_eq!(prose[4], "check: all invariants hold");
        assert_eq!(
            step("t", &r[2], None),
            "== t:3: destroy 2\n! refused: unknown VM vm2\n\n"
        );
        assert_eq!(
            summary(&r),
            "5 steps, 2 refused, 0B copied by relocation and compaction\n"
        );
    }

    #[test]
    fn map_svg_has_a_row_per_step() {
        let s = Scenario::parse(DEMO, "<demo>").unwrap();
        let r = s.run().unwrap();
        let svg = map_svg(&r).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // One label per step: "<line>: <statement>" (left-aligned at the padding).
        let x = format!("<text x=\"{}\"", units(3.0));
        assert_eq!(svg.matches(&x).count(), r.len());
        assert!(svg.contains("host-physical address (GiB)"));
        assert!(svg.contains("vm1"), "VM labels");
        crate::figure::export(&svg, crate::figure::FigureFormat::Pdf).unwrap();
        let escaped = map_svg(&[StepReport {
            text: "start <&>".into(),
            ..r[0].clone()
        }])
        .unwrap();
        assert!(escaped.contains("start &lt;&amp;&gt;"), "{escaped}");
    }
}
