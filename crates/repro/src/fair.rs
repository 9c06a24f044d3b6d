//! Fair comparisons (section 2b of the report): for each workload and guest page size, Compromis
//! against EPT and shadow paging at every host page size, and against EPT at the best host page
//! the VM's contiguity allows; speedups in both readings of "N% faster".
//!
//! The runs are those of section 2 (every workload at every guest/host page pair, fresh host: the
//! VM is one extent, so the best host page is 1 GiB). Compromis translates by segment whatever the
//! host page, so its runtime is taken from the run at the same host page as the scheme it is
//! compared with.

use crate::{RunRow, SchemeFigures};
use compromis_report::Table;
use serde::Serialize;

/// The host page sizes of the comparison, smallest first; the last is the best one a VM of one
/// extent allows.
pub(crate) const FAIR_HOST_PAGES: [&str; 3] = ["4k", "2m", "1g"];

/// A speedup of Compromis in both readings.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Reading {
    /// `runtime(other) / runtime(compromis)` ("370% faster" read as 4.7x).
    pub runtime: f64,
    /// `overhead(other) / overhead(compromis)`, overhead = `cycles / ideal - 1` (`None` when
    /// Compromis has no overhead).
    pub overhead: Option<f64>,
}

/// One workload at one guest page size.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FairRow {
    /// Workload.
    pub workload: String,
    /// Guest page size.
    pub guest: String,
    /// Compromis against EPT at 4k, 2m, 1g host pages (the same host page for both).
    pub vs_ept: Vec<Option<Reading>>,
    /// Compromis against shadow paging at 4k, 2m, 1g host pages.
    pub vs_shadow: Vec<Option<Reading>>,
    /// Shadow paging's measured VM exits per 1,000 instructions at 4k, 2m, 1g host pages (what
    /// each speedup over shadow rests on).
    pub shadow_exits_pki: Vec<Option<f64>>,
    /// Compromis (at 4 KiB host pages, where the segment is all it uses) against EPT at the best
    /// host page a VM of one extent allows (1 GiB).
    pub vs_ept_best: Option<Reading>,
}

fn figure<'a>(r: &'a RunRow, scheme: &str) -> Option<&'a SchemeFigures> {
    r.schemes.iter().find(|s| s.scheme == scheme)
}

fn reading(c: &SchemeFigures, other: &SchemeFigures) -> Option<Reading> {
    (c.cycles > 0.0).then(|| Reading {
        runtime: other.cycles / c.cycles,
        overhead: (c.overhead > 0.0).then(|| other.overhead / c.overhead),
    })
}

/// The comparison rows of the single-process runs of section 2, in their order.
pub(crate) fn fair_rows(overheads: &[RunRow]) -> Vec<FairRow> {
    let mut out: Vec<FairRow> = Vec::new();
    for r in overheads.iter().filter(|r| r.processes == 1) {
        if out
            .iter()
            .any(|f| f.workload == r.workload && f.guest == r.guest)
        {
            continue;
        }
        let at = |host: &str| {
            overheads.iter().find(|o| {
                o.processes == 1 && o.workload == r.workload && o.guest == r.guest && o.host == host
            })
        };
        let versus = |other: &str| {
            FAIR_HOST_PAGES
                .iter()
                .map(|h| {
                    let run = at(h)?;
                    reading(figure(run, "compromis")?, figure(run, other)?)
                })
                .collect()
        };
        let best = FAIR_HOST_PAGES[FAIR_HOST_PAGES.len() - 1];
        let vs_ept_best = (|| {
            let c = figure(at(FAIR_HOST_PAGES[0])?, "compromis")?;
            reading(c, figure(at(best)?, "ept")?)
        })();
        out.push(FairRow {
            workload: r.workload.clone(),
            guest: r.guest.clone(),
            vs_ept: versus("ept"),
            vs_shadow: versus("shadow"),
            shadow_exits_pki: FAIR_HOST_PAGES
                .iter()
                .map(|h| Some(figure(at(h)?, "shadow")?.exits_pki))
                .collect(),
            vs_ept_best,
        });
    }
    out
}

/// `1.234x (5.67x)`: runtime reading, overhead reading in parentheses.
pub(crate) fn show(r: Option<Reading>) -> String {
    match r {
        None => "-".to_owned(),
        Some(Reading {
            runtime,
            overhead: Some(o),
        }) => format!("{runtime:.3}x ({o:.2}x)"),
        Some(Reading { runtime, .. }) => format!("{runtime:.3}x (-)"),
    }
}

/// The comparison table.
pub(crate) fn fair_table(rows: &[FairRow]) -> Table {
    let mut header = vec!["workload".to_owned(), "guest".to_owned()];
    for h in FAIR_HOST_PAGES {
        header.push(format!("vs ept, host {h}"));
    }
    for h in FAIR_HOST_PAGES {
        header.push(format!("vs shadow, host {h}"));
    }
    header.push("vs ept at best host page (1g)".to_owned());
    let mut t = Table::new(header);
    for r in rows {
        let mut row = vec![r.workload.clone(), r.guest.clone()];
        row.extend(r.vs_ept.iter().map(|x| show(*x)));
        row.extend(
            r.vs_shadow
                .iter()
                .zip(&r.shadow_exits_pki)
                .map(|(x, pki)| match (x, pki) {
                    (Some(_), Some(p)) => format!("{}, {p:.2} exits/1k", show(*x)),
                    _ => show(*x),
                }),
        );
        row.push(show(r.vs_ept_best));
        t.push(row);
    }
    t
}

/// The largest runtime speedup in `pick` over every row, with its row.
pub(crate) fn best_of(
    rows: &[FairRow],
    pick: impl Fn(&FairRow) -> Option<Reading>,
) -> Option<(&FairRow, Reading)> {
    rows.iter()
        .filter_map(|r| pick(r).map(|x| (r, x)))
        .max_by(|a, b| a.1.runtime.total_cmp(&b.1.runtime))
}

/// `fair.csv`: the same comparison as a tidy table (plain numbers, snake_case headers): per
/// scheme compared and host page, the run-time ratio and the overhead ratio (empty when
/// Compromis has no overhead or the run is missing).
pub(crate) fn fair_csv(rows: &[FairRow]) -> Table {
    let mut header = vec!["workload".to_owned(), "guest".to_owned()];
    for other in ["ept", "shadow"] {
        for h in FAIR_HOST_PAGES {
            header.push(format!("vs_{other}_{h}_runtime"));
            header.push(format!("vs_{other}_{h}_overhead_ratio"));
        }
    }
    header.push("vs_ept_best_runtime".to_owned());
    header.push("vs_ept_best_overhead_ratio".to_owned());
    for h in FAIR_HOST_PAGES {
        header.push(format!("shadow_{h}_exits_pki"));
    }
    let cells = |r: Option<Reading>| {
        [
            r.map_or_else(String::new, |r| r.runtime.to_string()),
            r.and_then(|r| r.overhead)
                .map_or_else(String::new, |o| o.to_string()),
        ]
    };
    let mut t = Table::new(header);
    for r in rows {
        let mut row = vec![r.workload.clone(), r.guest.clone()];
        for x in r.vs_ept.iter().chain(&r.vs_shadow) {
            row.extend(cells(*x));
        }
        row.extend(cells(r.vs_ept_best));
        row.extend(
            r.shadow_exits_pki
                .iter()
                .map(|p| p.map_or_else(String::new, |p| p.to_string())),
        );
        t.push(row);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(host: &str, ept: f64, shadow: f64) -> RunRow {
        RunRow {
            workload: "gups".into(),
            processes: 1,
            guest: "4k".into(),
            host: host.into(),
            ideal_cycles: 100.0,
            schemes: vec![
                crate::SchemeFigures::for_tests("native", 105.0),
                crate::SchemeFigures::for_tests("ept", ept),
                SchemeFigures {
                    exits_pki: 1.5,
                    ..crate::SchemeFigures::for_tests("shadow", shadow)
                },
                crate::SchemeFigures::for_tests("compromis", 110.0),
            ],
            speedup_vs_ept: ept / 110.0,
            speedup_vs_shadow: shadow / 110.0,
        }
    }

    #[test]
    fn rows_compare_at_each_host_page_and_at_the_best() {
        let runs = [
            run("4k", 200.0, 150.0),
            run("2m", 150.0, 130.0),
            run("1g", 120.0, 125.0),
        ];
        let rows = fair_rows(&runs);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        let rt: Vec<f64> = r.vs_ept.iter().map(|x| x.unwrap().runtime).collect();
        assert_eq!(rt, vec![200.0 / 110.0, 150.0 / 110.0, 120.0 / 110.0]);
        // Overheads 1.0 vs 0.1: 10x in the overhead reading.
        assert!((r.vs_ept[0].unwrap().overhead.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(r.vs_ept_best.unwrap().runtime, 120.0 / 110.0);
        let (_, b) = best_of(&rows, |r| r.vs_ept_best).unwrap();
        assert_eq!(b.runtime, 120.0 / 110.0);
        let t = fair_table(&rows).to_text();
        assert!(t.contains("1.818x (10.00x)"), "{t}");
        // Every speedup over shadow beside shadow's exit rate.
        assert_eq!(r.shadow_exits_pki, vec![Some(1.5); 3]);
        assert!(t.contains("1.364x (5.00x), 1.50 exits/1k"), "{t}");
    }

    #[test]
    fn a_missing_host_page_is_a_dash_not_a_guess() {
        let rows = fair_rows(&[run("4k", 200.0, 150.0)]);
        assert!(rows[0].vs_ept[1].is_none() && rows[0].vs_ept_best.is_none());
        assert!(fair_table(&rows).to_text().contains(" - "));
    }
}
