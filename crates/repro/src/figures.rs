//! The report's tidy CSVs and its figures.
//!
//! Every CSV of the report is a tidy table: snake_case headers, one value per cell, numbers as
//! plain numbers (fractions for shares and overheads, ratios for speedups, raw cycle counts),
//! booleans as `true`/`false`, a missing value as an empty cell. The figures are drawn from those
//! tables only ([`Tidy`]), so `compromis plot DIR` redraws them from a report's CSVs without
//! simulating anything ([`read_tidy`], [`write_figures`]).

use crate::{ReproError, Results};
use compromis_report::Table;
use compromis_report::figure::{
    self, Axis, BarChart, BarPanel, FigureFormat, Line, LineChart, LinePanel, Series,
};
use compromis_report::theme::Width;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The tidy CSV files the figures are drawn from.
pub const TIDY_FILES: [&str; 5] = [
    "walk_refs.csv",
    "overheads.csv",
    "multiprocess.csv",
    "provisioning.csv",
    "fragmentation.csv",
];

/// The figures of the report, by file stem (one file per stem and format).
pub const FIGURES: [&str; 6] = [
    "overheads_guest4k",
    "overheads_guest2m",
    "speedups_guest4k",
    "speedups_guest2m",
    "provisioning",
    "fragmentation",
];

const SCHEMES: [&str; 4] = ["native", "ept", "shadow", "compromis"];

/// A float as CSV text: Rust's shortest round-trip form (deterministic, full precision).
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        String::new()
    }
}

fn run_header(multi: bool) -> Vec<String> {
    let mut h: Vec<String> = ["workload", "processes", "guest", "host", "ideal_cycles"]
        .map(String::from)
        .to_vec();
    for s in SCHEMES {
        h.push(format!("{s}_cycles"));
    }
    for s in SCHEMES {
        h.push(format!("{s}_overhead"));
    }
    for s in &SCHEMES[1..] {
        h.push(format!("{s}_exits"));
    }
    if multi {
        h.push("shadow_cr3_exits".into());
        h.push("shadow_pt_write_exits".into());
    }
    h.push("shadow_warmup_exits".into());
    h.push("shadow_exits_pki".into());
    h.push("speedup_vs_ept".into());
    h.push("speedup_vs_shadow".into());
    h
}

fn run_rows(rows: &[crate::RunRow], multi: bool) -> Table {
    let mut t = Table::new(run_header(multi));
    for r in rows {
        let f = |s: &str| r.schemes.iter().find(|f| f.scheme == s);
        let mut row = vec![
            r.workload.clone(),
            r.processes.to_string(),
            r.guest.clone(),
            r.host.clone(),
            num(r.ideal_cycles),
        ];
        row.extend(SCHEMES.map(|s| f(s).map_or_else(String::new, |f| num(f.cycles))));
        row.extend(SCHEMES.map(|s| f(s).map_or_else(String::new, |f| num(f.overhead))));
        for s in &SCHEMES[1..] {
            row.push(f(s).map_or_else(String::new, |f| f.exits.to_string()));
        }
        if multi {
            row.push(f("shadow").map_or_else(String::new, |f| f.exits_cr3_load.to_string()));
            row.push(f("shadow").map_or_else(String::new, |f| f.exits_pt_write.to_string()));
        }
        row.push(f("shadow").map_or_else(String::new, |f| f.warmup_exits.to_string()));
        row.push(f("shadow").map_or_else(String::new, |f| num(f.exits_pki)));
        row.push(num(r.speedup_vs_ept));
        row.push(num(r.speedup_vs_shadow));
        t.push(row);
    }
    t
}

/// The tidy tables of [`TIDY_FILES`], in that order.
pub fn tidy_tables(r: &Results) -> Vec<(&'static str, Table)> {
    let mut walk = Table::new([
        "scheme",
        "guest",
        "host",
        "n",
        "m",
        "closed_form",
        "walks_caches_off",
        "refs_caches_off",
        "refs_per_walk_caches_off",
        "agrees",
        "refs_per_walk_caches_on",
    ]);
    for w in &r.walk_refs {
        walk.push([
            w.scheme.clone(),
            w.guest.clone(),
            w.host.clone(),
            w.n.to_string(),
            w.m.to_string(),
            w.closed_form.to_string(),
            w.walks_off.to_string(),
            w.refs_off.to_string(),
            num(w.caches_off),
            w.agrees.to_string(),
            w.caches_on.map_or_else(String::new, num),
        ]);
    }
    let mut prov = Table::new([
        "trace",
        "fleet",
        "policy",
        "contiguity_aware",
        "events",
        "placed",
        "single_segment",
        "multi_segment",
        "single_segment_share",
        "multi_segment_share",
        "rejected",
    ]);
    for p in &r.provisioning {
        let multi = p.placed.saturating_sub(p.single_segment);
        prov.push([
            p.trace.clone(),
            p.fleet.clone(),
            p.policy.clone(),
            p.contiguity_aware.to_string(),
            p.events.to_string(),
            p.placed.to_string(),
            p.single_segment.to_string(),
            multi.to_string(),
            num(p.share),
            if p.placed == 0 {
                String::new()
            } else {
                num(multi as f64 / p.placed as f64)
            },
            p.rejected.to_string(),
        ]);
    }
    let mut frag = Table::new([
        "host_page",
        "fill",
        "fallback",
        "refused",
        "refusal",
        "host_fragmentation",
        "provisioning",
        "host_extents",
        "segment_sets",
        "ept_leaves_4k",
        "ept_leaves_2m",
        "ept_leaves_1g",
        "fallback_translations",
        "ept_cycles",
        "compromis_cycles",
        "speedup_vs_ept",
    ]);
    for f in &r.fragmentation {
        let mut row = vec![f.host_page.clone(), num(f.fill), f.fallback.clone()];
        match &f.outcome {
            Ok(o) => {
                row.extend(["false".to_owned(), String::new()]);
                row.extend([
                    num(o.host_fragmentation),
                    o.provisioning.clone(),
                    o.host_extents.to_string(),
                    o.segments.to_string(),
                    o.ept_leaves[0].to_string(),
                    o.ept_leaves[1].to_string(),
                    o.ept_leaves[2].to_string(),
                    o.fallback_translations.to_string(),
                    num(o.ept_cycles),
                    num(o.compromis_cycles),
                    num(o.speedup_vs_ept),
                ]);
            }
            Err(msg) => {
                row.extend(["true".to_owned(), msg.clone()]);
                row.extend(std::iter::repeat_n(String::new(), 11));
            }
        }
        frag.push(row);
    }
    vec![
        (TIDY_FILES[0], walk),
        (TIDY_FILES[1], run_rows(&r.overheads, false)),
        (TIDY_FILES[2], run_rows(&r.multiprocess, true)),
        (TIDY_FILES[3], prov),
        (TIDY_FILES[4], frag),
    ]
}

/// The text (non-numeric) columns of the tidy tables; every other column holds numbers, `true`
/// or `false`, or nothing.
pub const TEXT_COLUMNS: [&str; 17] = [
    "scheme",
    "guest",
    "host",
    "workload",
    "trace",
    "fleet",
    "policy",
    "host_page",
    "fallback",
    "refusal",
    "provisioning",
    "paper",
    "anchor",
    "machine",
    "role",
    "source",
    "kind",
];

/// One tidy table read back from its CSV file, for the figures.
#[derive(Clone, Debug)]
pub struct TidyTable {
    /// The file (for error messages).
    pub path: PathBuf,
    /// The table.
    pub table: Table,
}

impl TidyTable {
    fn err(&self, line: usize, message: String) -> ReproError {
        ReproError::Data {
            path: self.path.clone(),
            line,
            message,
        }
    }

    fn col(&self, name: &str) -> Result<usize, ReproError> {
        self.table
            .header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| self.err(1, format!("no column '{name}' in the header")))
    }

    /// The text of column `name` in every row.
    fn texts(&self, name: &str) -> Result<Vec<&str>, ReproError> {
        let c = self.col(name)?;
        Ok(self
            .table
            .rows
            .iter()
            .map(|r| r.get(c).map_or("", String::as_str))
            .collect())
    }

    /// The numbers of column `name` (`NaN` for an empty cell); a cell that is not a number is
    /// an error naming its file, line and value.
    fn numbers(&self, name: &str) -> Result<Vec<f64>, ReproError> {
        let c = self.col(name)?;
        self.table
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let cell = r.get(c).map_or("", |s| s.trim());
                if cell.is_empty() {
                    return Ok(f64::NAN);
                }
                cell.parse::<f64>().map_err(|_| {
                    self.err(i + 2, format!("column {name}: '{cell}' is not a number"))
                })
            })
            .collect()
    }
}

/// The tidy tables a figure set is drawn from, by file name.
#[derive(Clone, Debug, Default)]
pub struct Tidy {
    tables: BTreeMap<String, TidyTable>,
}

impl Tidy {
    /// The tables of a run (in memory, as they are written).
    pub fn from_results(r: &Results) -> Tidy {
        Tidy {
            tables: tidy_tables(r)
                .into_iter()
                .map(|(name, table)| {
                    (
                        name.to_owned(),
                        TidyTable {
                            path: PathBuf::from(name),
                            table,
                        },
                    )
                })
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Result<&TidyTable, ReproError> {
        self.tables.get(name).ok_or_else(|| ReproError::Data {
            path: PathBuf::from(name),
            line: 0,
            message: "missing: not a report folder of `compromis reproduce`?".into(),
        })
    }
}

/// Reads the tidy CSVs of a report folder (every file of [`TIDY_FILES`]). Errors name the file,
/// and the line of a malformed row.
pub fn read_tidy(dir: &Path) -> Result<Tidy, ReproError> {
    let mut tables = BTreeMap::new();
    for name in TIDY_FILES {
        let path = dir.join(name);
        let data = |line: usize, message: String| ReproError::Data {
            path: path.clone(),
            line,
            message,
        };
        let text = std::fs::read(&path).map_err(|e| data(0, format!("cannot read: {e}")))?;
        let mut rd = csv::ReaderBuilder::new().from_reader(text.as_slice());
        let header: Vec<String> = rd
            .headers()
            .map_err(|e| data(1, e.to_string()))?
            .iter()
            .map(str::to_owned)
            .collect();
        let mut table = Table::new(header);
        for (i, rec) in rd.records().enumerate() {
            let rec = rec.map_err(|e| data(i + 2, e.to_string()))?;
            table.push(rec.iter());
        }
        tables.insert(name.to_owned(), TidyTable { path, table });
    }
    Ok(Tidy { tables })
}

/// Short workload names, so the labels of a chart do not overlap.
fn short(workload: &str) -> &str {
    match workload {
        "pointer-chase" => "chase",
        "kv-zipf" => "kv",
        w => w,
    }
}

/// Distinct values in order of first appearance.
fn distinct<'a>(v: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Overheads (per-workload panels, own scale each) and speedups (panels vs EPT and vs shadow,
/// log axis from 1.0) of the single-process runs with `guest` pages.
fn run_figures(t: &TidyTable, guest: &str) -> Result<(BarChart, BarChart), ReproError> {
    let workloads_col = t.texts("workload")?;
    let guests = t.texts("guest")?;
    let hosts_col = t.texts("host")?;
    let keep: Vec<usize> = (0..guests.len()).filter(|&i| guests[i] == guest).collect();
    let workloads = distinct(keep.iter().map(|&i| workloads_col[i]));
    let hosts = distinct(keep.iter().map(|&i| hosts_col[i]));
    let find = |w: &str, h: &str| {
        keep.iter()
            .copied()
            .find(|&i| workloads_col[i] == w && hosts_col[i] == h)
    };
    let mut cols = BTreeMap::new();
    for s in SCHEMES {
        cols.insert(s, t.numbers(&format!("{s}_overhead"))?);
    }
    let overheads = BarChart {
        title: format!("Overhead vs a perfect TLB, guest {guest} pages"),
        y: Axis::linear("overhead (own scale per workload)").percent(),
        panels: workloads
            .iter()
            .map(|w| BarPanel {
                title: short(w).to_owned(),
                groups: hosts.iter().map(|h| format!("host {h}")).collect(),
                notes: Vec::new(),
                series: SCHEMES
                    .iter()
                    .map(|s| Series {
                        name: (*s).to_owned(),
                        values: hosts
                            .iter()
                            .map(|h| find(w, h).map_or(f64::NAN, |i| cols[s][i]))
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
        bar_labels: false,
    };
    let mut panels = Vec::new();
    for (col, title) in [
        ("speedup_vs_ept", "vs EPT"),
        ("speedup_vs_shadow", "vs shadow paging"),
    ] {
        let v = t.numbers(col)?;
        panels.push(BarPanel {
            title: title.to_owned(),
            groups: workloads.iter().map(|w| short(w).to_owned()).collect(),
            notes: Vec::new(),
            series: hosts
                .iter()
                .map(|h| Series {
                    name: (*h).to_owned(),
                    values: workloads
                        .iter()
                        .map(|w| find(w, h).map_or(f64::NAN, |i| v[i]))
                        .collect(),
                })
                .collect(),
        });
    }
    let speedups = BarChart {
        title: format!("Speedup of Compromis, guest {guest} pages (workload / host pages)"),
        y: Axis::log("runtime ratio (log)")
            .ratio()
            .baseline(1.0)
            .reference(1.0),
        panels,
        bar_labels: true,
    };
    Ok((overheads, speedups))
}

fn provisioning_figure(t: &TidyTable) -> Result<BarChart, ReproError> {
    let traces_col = t.texts("trace")?;
    let policies_col = t.texts("policy")?;
    let placed = t.numbers("placed")?;
    let multi = t.numbers("multi_segment")?;
    let traces = distinct(traces_col.iter().copied());
    let policies = distinct(policies_col.iter().copied());
    let find = |tr: &str, p: &str| {
        (0..traces_col.len()).find(|&i| traces_col[i] == tr && policies_col[i] == p)
    };
    let notes = traces
        .iter()
        .map(|tr| {
            let ns: Vec<f64> = (0..traces_col.len())
                .filter(|&i| traces_col[i] == *tr && placed[i].is_finite())
                .map(|i| placed[i])
                .collect();
            let lo = ns.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ns.iter().copied().fold(0.0, f64::max);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let (lo, hi) = (lo as u64, hi as u64);
            if ns.is_empty() {
                String::new()
            } else if lo == hi {
                format!("n={}", compromis_report::thousands(hi))
            } else {
                format!(
                    "n={}-{}",
                    compromis_report::thousands(lo),
                    compromis_report::thousands(hi)
                )
            }
        })
        .collect();
    Ok(BarChart {
        title: "VMs needing more than one memory segment (n: VMs placed; 0: none)".into(),
        y: Axis::log("share of placed VMs (log)").percent(),
        panels: vec![BarPanel {
            title: String::new(),
            groups: traces.iter().map(|s| (*s).to_owned()).collect(),
            notes,
            series: policies
                .iter()
                .map(|p| Series {
                    name: (*p).to_owned(),
                    values: traces
                        .iter()
                        .map(|tr| {
                            find(tr, p).map_or(f64::NAN, |i| {
                                if placed[i] > 0.0 {
                                    multi[i] / placed[i]
                                } else {
                                    f64::NAN
                                }
                            })
                        })
                        .collect(),
                })
                .collect(),
        }],
        bar_labels: false,
    })
}

fn fragmentation_figure(t: &TidyTable) -> Result<LineChart, ReproError> {
    let hp = t.texts("host_page")?;
    let fb = t.texts("fallback")?;
    let refused = t.texts("refused")?;
    let fill = t.numbers("fill")?;
    let speed = t.numbers("speedup_vs_ept")?;
    let mut panels = Vec::new();
    for h in distinct(hp.iter().copied()) {
        let mut lines = Vec::new();
        for f in distinct(fb.iter().copied()) {
            let rows: Vec<usize> = (0..hp.len())
                .filter(|&i| hp[i] == h && fb[i] == f)
                .collect();
            lines.push(Line {
                name: format!("fallback {f}"),
                points: rows
                    .iter()
                    .filter(|&&i| refused[i] != "true" && speed[i].is_finite())
                    .map(|&i| (fill[i], speed[i]))
                    .collect(),
                refused: rows
                    .iter()
                    .filter(|&&i| refused[i] == "true")
                    .map(|&i| fill[i])
                    .collect(),
            });
        }
        panels.push(LinePanel {
            title: format!("host pages up to {h}"),
            lines,
        });
    }
    Ok(LineChart {
        title: "gups on an aged host: speedup of Compromis vs EPT".into(),
        x: Axis::linear("host fill before the VM").percent(),
        y: Axis::linear("runtime ratio").ratio().reference(1.0),
        panels,
        markers: true,
    })
}

/// The figures of [`FIGURES`] as SVG text, drawn from tidy tables at `width`.
pub fn figures(d: &Tidy, width: Width) -> Result<Vec<(&'static str, String)>, ReproError> {
    let runs = d.get("overheads.csv")?;
    let mut out = Vec::new();
    let mut bars = Vec::new();
    for g in ["4k", "2m"] {
        let (o, s) = run_figures(runs, g)?;
        bars.push(o);
        bars.push(s);
    }
    // FIGURES order: overheads 4k, overheads 2m, speedups 4k, speedups 2m.
    let order = [0usize, 2, 1, 3];
    for (k, &i) in order.iter().enumerate() {
        out.push((FIGURES[k], figure::bar_chart(&bars[i], width)?));
    }
    out.push((
        FIGURES[4],
        figure::bar_chart(&provisioning_figure(d.get("provisioning.csv")?)?, width)?,
    ));
    out.push((
        FIGURES[5],
        figure::line_chart(&fragmentation_figure(d.get("fragmentation.csv")?)?, width)?,
    ));
    Ok(out)
}

/// Draws the figures into `dir` in every format of `formats`; returns the files written.
pub fn write_figures(
    d: &Tidy,
    dir: &Path,
    width: Width,
    formats: &[FigureFormat],
) -> Result<Vec<PathBuf>, ReproError> {
    std::fs::create_dir_all(dir).map_err(|source| ReproError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for (stem, svg) in figures(d, width)? {
        files.extend(figure::write_figure(dir, stem, &svg, formats)?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_cells_name_file_line_and_value() {
        let dir = tempfile::tempdir().unwrap();
        for name in TIDY_FILES {
            std::fs::write(dir.path().join(name), "a\n1\n").unwrap();
        }
        std::fs::write(
            dir.path().join("overheads.csv"),
            "workload,guest,host,native_overhead\ngups,4k,4k,8.1%\n",
        )
        .unwrap();
        let d = read_tidy(dir.path()).unwrap();
        let e = figures(&d, Width::Page).unwrap_err().to_string();
        assert!(e.contains("overheads.csv:2") && e.contains("'8.1%'"), "{e}");
        let missing = read_tidy(&dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("walk_refs.csv"), "{missing}");
    }
}
