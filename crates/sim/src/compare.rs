//! Fair comparisons across host page sizes: Compromis against EPT and shadow paging with the host
//! mapping the VM with 4 KiB, 2 MiB and 1 GiB pages, and against EPT at the best host page the
//! VM's contiguity allows.
//!
//! A hypervisor that can give a VM one contiguous extent (Compromis's premise) can also map that
//! extent with 1 GiB EPT pages wherever it is aligned: comparing Compromis only with a splintered
//! EPT (4 KiB host pages) flatters it. [`run_host_pages`] runs one experiment at each host page
//! size (same stream, same VM size, same host state); [`HostPageComparison`] holds what the
//! comparison needs, and the "best" host page is the largest one asked for (the backing maps every
//! piece of the VM with the largest leaf its alignment and contiguity allow up to that size, so
//! its EPT leaves say what the contiguity actually gave).

use crate::{ExperimentError, ExperimentRequest, Outcome};
use compromis_mmu::SchemeKind;
use compromis_report::Table;
use compromis_types::PageSize;
use serde::Serialize;

/// The host page sizes compared, smallest first.
pub const HOST_PAGES: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

/// One host page size: each scheme's runtime and overhead.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HostPageRow {
    /// Largest EPT leaf the host was allowed.
    pub host_page: PageSize,
    /// EPT leaves the backing used: 4 KiB, 2 MiB, 1 GiB.
    pub ept_leaves: [u64; 3],
    /// Cycles with a perfect TLB.
    pub ideal: f64,
    /// Per scheme simulated: total cycles, overhead (`total / ideal - 1`) and VM exits per 1,000
    /// instructions, in the order asked.
    pub schemes: Vec<SchemeFigure>,
}

/// One scheme at one host page size.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SchemeFigure {
    /// The scheme.
    pub scheme: SchemeKind,
    /// Total cycles of the measured phase.
    pub cycles: f64,
    /// `cycles / ideal - 1`.
    pub overhead: f64,
    /// VM exits per 1,000 instructions.
    pub exits_pki: f64,
}

/// Compromis against EPT and shadow paging at every host page size.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HostPageComparison {
    /// Workload or trace.
    pub source: String,
    /// Guest page size.
    pub guest_page: PageSize,
    /// One row per host page size, smallest first.
    pub rows: Vec<HostPageRow>,
}

/// Speedup of one scheme over another, in both readings of "N% faster".
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Speedup {
    /// Runtime reading: `runtime(other) / runtime(scheme)` ("370% faster" = 4.7x).
    pub runtime: f64,
    /// Overhead reading: `overhead(other) / overhead(scheme)`, overheads against the perfect-TLB
    /// run (`None` when the scheme has no overhead).
    pub overhead: Option<f64>,
}

impl HostPageComparison {
    /// Gathers `outcomes` (one per host page size, as [`run_host_pages`] returns them).
    pub fn of(guest_page: PageSize, outcomes: &[(PageSize, Outcome)]) -> HostPageComparison {
        let source = outcomes
            .first()
            .map(|(_, o)| o.source.clone())
            .unwrap_or_default();
        let rows = outcomes
            .iter()
            .map(|(host_page, o)| HostPageRow {
                host_page: *host_page,
                ept_leaves: o.vm.ept_leaves,
                ideal: o.ideal.cycles.total,
                schemes: o
                    .schemes
                    .iter()
                    .map(|s| SchemeFigure {
                        scheme: s.result.scheme,
                        cycles: s.cycles.total,
                        overhead: s.cycles.overhead,
                        exits_pki: s.derived.exits_pki,
                    })
                    .collect(),
            })
            .collect();
        HostPageComparison {
            source,
            guest_page,
            rows,
        }
    }

    /// The row of `host_page`.
    pub fn row(&self, host_page: PageSize) -> Option<&HostPageRow> {
        self.rows.iter().find(|r| r.host_page == host_page)
    }

    /// The best host page the VM's contiguity allows: the largest one compared (its backing used
    /// the largest leaf every piece of the VM allows).
    pub fn best(&self) -> Option<&HostPageRow> {
        self.rows.iter().max_by_key(|r| r.host_page)
    }

    /// Speedup of `scheme` at host page `a` over `other` at host page `b`.
    pub fn speedup(
        &self,
        scheme: SchemeKind,
        a: PageSize,
        other: SchemeKind,
        b: PageSize,
    ) -> Option<Speedup> {
        let x = self.row(a)?.figure(scheme)?;
        let y = self.row(b)?.figure(other)?;
        (x.cycles > 0.0).then(|| Speedup {
            runtime: y.cycles / x.cycles,
            overhead: (x.overhead > 0.0).then(|| y.overhead / x.overhead),
        })
    }

    /// The comparison as a table: one row per host page size, then one for EPT at the best host
    /// page. Speedups are runtime ratios, with the overhead ratio beside them.
    pub fn table(&self) -> Table {
        let mut t = Table::new([
            "host pages",
            "EPT leaves 4k/2m/1g",
            "ideal Mcyc",
            "ept Mcyc",
            "shadow Mcyc",
            "compromis Mcyc",
            "compromis vs ept (overhead ratio)",
            "compromis vs shadow (overhead ratio)",
            "shadow exits/1k instr",
            "compromis vs ept at best host page (overhead ratio)",
        ]);
        let best = self.best().map(|r| r.host_page);
        let mcyc = |r: &HostPageRow, k| {
            r.figure(k)
                .map_or_else(|| "-".to_owned(), |f| format!("{:.2}", f.cycles / 1e6))
        };
        let ratio = |s: Option<Speedup>| {
            s.map_or_else(
                || "-".to_owned(),
                |s| match s.overhead {
                    Some(o) => format!("{:.3}x ({o:.2}x)", s.runtime),
                    None => format!("{:.3}x (-)", s.runtime),
                },
            )
        };
        for r in &self.rows {
            let h = r.host_page;
            let c = SchemeKind::Compromis;
            t.push([
                h.name().to_owned(),
                format!(
                    "{}/{}/{}",
                    r.ept_leaves[0], r.ept_leaves[1], r.ept_leaves[2]
                ),
                format!("{:.2}", r.ideal / 1e6),
                mcyc(r, SchemeKind::Ept),
                mcyc(r, SchemeKind::Shadow),
                mcyc(r, c),
                ratio(self.speedup(c, h, SchemeKind::Ept, h)),
                ratio(self.speedup(c, h, SchemeKind::Shadow, h)),
                r.figure(SchemeKind::Shadow)
                    .map_or_else(|| "-".to_owned(), |f| format!("{:.2}", f.exits_pki)),
                best.map_or_else(
                    || "-".to_owned(),
                    |b| ratio(self.speedup(c, h, SchemeKind::Ept, b)),
                ),
            ]);
        }
        t
    }
}

impl HostPageRow {
    /// The figures of `scheme`, if it was simulated.
    pub fn figure(&self, scheme: SchemeKind) -> Option<&SchemeFigure> {
        self.schemes.iter().find(|s| s.scheme == scheme)
    }
}

/// Runs `req` once per host page size of [`HOST_PAGES`] (the request's own host page is
/// ignored), one after the other (each run is parallel inside). The input must be a workload or
/// a trace file (a stream cannot be replayed). `progress` hears the accesses of all runs so far.
pub fn run_host_pages(
    req: &ExperimentRequest,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<(PageSize, Outcome)>, ExperimentError> {
    let mut done = 0;
    let mut out = Vec::new();
    for host_page in HOST_PAGES {
        let plan = ExperimentRequest {
            host_page,
            ..req.clone()
        }
        .build()?;
        // Progress counts the accesses of every run so far.
        let before = done;
        out.push((host_page, crate::run(&plan, &|n| progress(before + n))?));
        done += plan.accesses().unwrap_or(0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;
    use compromis_types::ByteSize;
    use compromis_workload::WorkloadKind;

    fn small() -> ExperimentRequest {
        ExperimentRequest {
            source: Source::Workload {
                kind: WorkloadKind::Gups,
                footprint: Some(ByteSize::mib(64)),
                accesses: Some(20_000),
                processes: None,
                quantum: None,
            },
            ..ExperimentRequest::default()
        }
    }

    #[test]
    fn one_row_per_host_page_and_best_is_the_largest() {
        let req = small();
        let outs = run_host_pages(&req, &|_| {}).unwrap();
        let c = HostPageComparison::of(req.guest.page, &outs);
        assert_eq!(
            c.rows.iter().map(|r| r.host_page).collect::<Vec<_>>(),
            HOST_PAGES.to_vec()
        );
        assert_eq!(c.best().unwrap().host_page, PageSize::Size1G);
        // Each row is the run at that host page: the same as a single run.
        let single = ExperimentRequest {
            host_page: PageSize::Size2M,
            ..req.clone()
        }
        .build()
        .and_then(|p| crate::run(&p, &|_| {}))
        .unwrap();
        let ept = single.scheme(SchemeKind::Ept).unwrap().cycles.total;
        let row = c.row(PageSize::Size2M).unwrap();
        assert_eq!(row.figure(SchemeKind::Ept).unwrap().cycles, ept);
        let s = c
            .speedup(
                SchemeKind::Compromis,
                PageSize::Size2M,
                SchemeKind::Ept,
                PageSize::Size2M,
            )
            .unwrap();
        assert_eq!(
            s.runtime,
            single
                .speedup(SchemeKind::Compromis, SchemeKind::Ept)
                .unwrap()
        );
        // A fresh host gives one extent: the 1 GiB row maps it with 1 GiB leaves.
        assert!(c.best().unwrap().ept_leaves[2] > 0);
        assert!(c.table().to_text().lines().count() > 3);
    }

    #[test]
    fn both_readings_of_a_speedup() {
        let fig = |scheme, cycles: f64| SchemeFigure {
            scheme,
            cycles,
            overhead: cycles / 100.0 - 1.0,
            exits_pki: 0.0,
        };
        let row = |h, ept, c| HostPageRow {
            host_page: h,
            ept_leaves: [0; 3],
            ideal: 100.0,
            schemes: vec![fig(SchemeKind::Ept, ept), fig(SchemeKind::Compromis, c)],
        };
        let cmp = HostPageComparison {
            source: "x".into(),
            guest_page: PageSize::Size4K,
            rows: vec![
                row(PageSize::Size4K, 470.0, 110.0),
                row(PageSize::Size1G, 120.0, 110.0),
            ],
        };
        let (c, e) = (SchemeKind::Compromis, SchemeKind::Ept);
        let s = cmp
            .speedup(c, PageSize::Size4K, e, PageSize::Size4K)
            .unwrap();
        assert!((s.runtime - 470.0 / 110.0).abs() < 1e-12);
        // Overheads 3.7 and 0.1: 37x in the overhead reading.
        assert!((s.overhead.unwrap() - 37.0).abs() < 1e-9);
        let best = cmp
            .speedup(c, PageSize::Size4K, e, PageSize::Size1G)
            .unwrap();
        assert!((best.runtime - 120.0 / 110.0).abs() < 1e-12);
        assert_eq!(cmp.best().unwrap().host_page, PageSize::Size1G);
    }
}
