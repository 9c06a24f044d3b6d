//! Anchors: the simulator's figures beside figures measured on hardware (section 6 of the report,
//! and `compromis reproduce --anchors`).
//!
//! Each anchor is a measured figure with its source, the configuration we simulate to compare
//! with it, and its role: at most one anchor may calibrate a model parameter (the table says
//! which); the others only validate. Today none calibrates: every row validates.
//!
//! The measured figures come from the DMT artifact (Zhang et al., "Direct Memory Translation for
//! Virtualized Clouds", ASPLOS 2024; github.com/xlab-uiuc/dmt, `minimal.md`, step VII, EPT
//! virtualized case): GUPS over a 16 GiB table (`bench_gups_st 16`), mean page-walk latency from
//! the PMU (`dtlb_*_misses.walk_pending / walk_completed`, `eval/driver/common-perf.sh`), in a VM
//! with transparent huge pages off ("Base") and on ("Huge"). The machine is an Intel server whose
//! L3 the artifact's simulator models as 22 MiB 11-way with a 1 MiB 16-way L2 (Skylake-SP class),
//! so the closest preset is `skylake-sp`.

use crate::{Progress, ReproError};
use compromis_mmu::SchemeKind;
use compromis_mmu::config::presets::Machine;
use compromis_report::Table;
use compromis_sim::{ExperimentRequest, Source};
use compromis_types::{ByteSize, PageSize};
use compromis_vmem::GuestConfig;
use compromis_workload::WorkloadKind;
use rayon::prelude::*;
use serde::Serialize;

/// The preset closest to the machine the anchors were measured on.
pub const ANCHOR_MACHINE: &str = "skylake-sp";

/// A figure is "within" when ours is within this fraction of the measured one (±30%).
pub const TOLERANCE: f64 = 0.30;

/// What an anchor does to the model.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Only compared with: no parameter was set from it.
    Validates,
    /// A model parameter was set from it (at most one anchor): the key it set.
    Calibrates(&'static str),
}

/// A figure measured on hardware, and the configuration simulated against it.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Anchor {
    /// What was measured.
    pub name: &'static str,
    /// The measured value (cycles).
    pub measured: f64,
    /// Where it comes from.
    pub source: &'static str,
    /// Guest page size (THP off: 4 KiB; THP on: 2 MiB).
    pub guest: PageSize,
    /// Host page size.
    pub host: PageSize,
    /// Its role.
    pub role: Role,
}

/// The anchors, in table order.
pub const ANCHORS: [Anchor; 2] = [
    Anchor {
        name: "EPT page walk, GUPS 16 GiB, 4 KiB guest / 4 KiB host pages (cycles)",
        measured: 184.5,
        source: "DMT artifact (ASPLOS 2024), minimal.md: \"Average Walk Latency: Base 184.5 cycles\", EPT VM, THP never",
        guest: PageSize::Size4K,
        host: PageSize::Size4K,
        role: Role::Validates,
    },
    Anchor {
        name: "EPT page walk, GUPS 16 GiB, 2 MiB guest / 2 MiB host pages (cycles)",
        measured: 112.2,
        source: "DMT artifact (ASPLOS 2024), minimal.md: \"Huge 112.2 cycles\", EPT VM, THP always (2 MiB host pages as issue 11 reads it)",
        guest: PageSize::Size2M,
        host: PageSize::Size2M,
        role: Role::Validates,
    },
];

/// One anchor beside our figure.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AnchorRow {
    /// The anchor.
    pub anchor: Anchor,
    /// The preset simulated.
    pub machine: String,
    /// GUPS footprint simulated (bytes).
    pub footprint: u64,
    /// Accesses simulated (a tenth of them warm-up).
    pub accesses: u64,
    /// Our mean EPT page-walk latency (cycles; `None` when the run made no walk).
    pub ours: Option<f64>,
    /// `ours / measured`.
    pub ratio: Option<f64>,
    /// Whether `ours` is within ±30% of `measured`.
    pub within: bool,
}

/// Footprint and accesses of an anchor run with `guest` pages: the artifact's 16 GiB table, or in
/// quick mode 1 GiB (4 KiB pages) or 8 GiB (2 MiB pages: less would fit the second-level TLB's
/// reach and make no walk).
pub fn anchor_size(quick: bool, guest: PageSize) -> (ByteSize, u64) {
    match (quick, guest) {
        (false, _) => (ByteSize::gib(16), 2_000_000),
        (true, PageSize::Size4K) => (ByteSize::gib(1), 200_000),
        (true, _) => (ByteSize::gib(8), 200_000),
    }
}

/// Simulates every anchor on the preset closest to the measured machine.
pub fn run_anchors(
    quick: bool,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Vec<AnchorRow>, ReproError> {
    let machine: Machine = ANCHOR_MACHINE.parse()?;
    let config = machine.config()?;
    progress.stage("anchors", ANCHORS.len() as u64);
    let rows = ANCHORS
        .par_iter()
        .map(|a| {
            let (footprint, accesses) = anchor_size(quick, a.guest);
            let req = ExperimentRequest {
                source: Source::Workload {
                    kind: WorkloadKind::Gups,
                    footprint: Some(footprint),
                    accesses: Some(accesses),
                    processes: Some(1),
                    quantum: None,
                },
                machine: config.clone(),
                schemes: vec![SchemeKind::Ept],
                guest: GuestConfig {
                    page: a.guest,
                    ..GuestConfig::default()
                },
                host_page: a.host,
                seed,
                ..ExperimentRequest::default()
            };
            let o = req
                .build()
                .and_then(|p| compromis_sim::run(&p, &|_| {}))
                .map_err(|source| ReproError::Experiment {
                    config: format!("anchor {}", a.name),
                    source,
                })?;
            progress.step();
            let ours = o
                .scheme(SchemeKind::Ept)
                .filter(|s| s.result.measured.walks > 0)
                .map(|s| s.cycles.walk_latency);
            let ratio = ours.map(|x| x / a.measured);
            Ok(AnchorRow {
                anchor: *a,
                machine: machine.name().to_owned(),
                footprint: footprint.bytes(),
                accesses,
                ours,
                ratio,
                within: ratio.is_some_and(|r| (r - 1.0).abs() <= TOLERANCE),
            })
        })
        .collect();
    progress.finish();
    rows
}

/// The table "anchor | measured on hardware | ours | within ±30%? | role | source".
pub fn anchors_table(rows: &[AnchorRow]) -> Table {
    let mut t = Table::new([
        "anchor",
        "measured on hardware",
        "ours",
        "within ±30%?",
        "role",
        "source",
    ]);
    for r in rows {
        t.push([
            r.anchor.name.to_owned(),
            format!("{:.1}", r.anchor.measured),
            match (r.ours, r.ratio) {
                (Some(x), Some(q)) => {
                    format!("{x:.1} ({q:.2}x, {} {})", r.machine, ByteSize(r.footprint))
                }
                _ => "no walk".to_owned(),
            },
            if r.within { "yes" } else { "no" }.to_owned(),
            match r.anchor.role {
                Role::Validates => "validates".to_owned(),
                Role::Calibrates(key) => format!("calibrates {key}"),
            },
            r.anchor.source.to_owned(),
        ]);
    }
    t
}

/// `anchors.csv`: the anchors as a tidy table (plain numbers, snake_case headers).
pub fn anchors_csv(rows: &[AnchorRow]) -> Table {
    let mut t = Table::new([
        "anchor",
        "measured_cycles",
        "ours_cycles",
        "ratio",
        "within_30pct",
        "machine",
        "footprint_bytes",
        "accesses",
        "role",
        "source",
    ]);
    for r in rows {
        t.push([
            r.anchor.name.to_owned(),
            r.anchor.measured.to_string(),
            r.ours.map_or_else(String::new, |x| x.to_string()),
            r.ratio.map_or_else(String::new, |x| x.to_string()),
            r.within.to_string(),
            r.machine.clone(),
            r.footprint.to_string(),
            r.accesses.to_string(),
            match r.anchor.role {
                Role::Validates => "validates".to_owned(),
                Role::Calibrates(key) => format!("calibrates {key}"),
            },
            r.anchor.source.to_owned(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_anchor_calibrates() {
        let n = ANCHORS
            .iter()
            .filter(|a| matches!(a.role, Role::Calibrates(_)))
            .count();
        assert!(n <= 1);
    }

    #[test]
    fn the_anchor_machine_is_a_preset() {
        assert!(ANCHOR_MACHINE.parse::<Machine>().is_ok());
    }

    #[test]
    fn within_is_plus_or_minus_thirty_percent() {
        let row = |ours: f64| {
            let ratio = ours / 100.0;
            AnchorRow {
                anchor: Anchor {
                    measured: 100.0,
                    ..ANCHORS[0]
                },
                machine: "m".into(),
                footprint: 1,
                accesses: 1,
                ours: Some(ours),
                ratio: Some(ratio),
                within: (ratio - 1.0).abs() <= TOLERANCE,
            }
        };
        let t = anchors_table(&[row(129.0), row(131.0)]).to_text();
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| l.contains("129.0") || l.contains("131.0"))
            .collect();
        assert!(lines[0].contains("| yes"), "{t}");
        assert!(lines[1].contains("| no"), "{t}");
    }

    #[test]
    fn quick_anchors_run_and_compare() {
        let rows = run_anchors(true, 42, &crate::NoProgress).unwrap();
        assert_eq!(rows.len(), ANCHORS.len());
        for r in &rows {
            let ours = r.ours.unwrap();
            assert!(ours > 0.0);
            assert_eq!(
                r.within,
                ((ours / r.anchor.measured) - 1.0).abs() <= TOLERANCE
            );
        }
        // A 2 MiB/2 MiB walk is shorter than a 4 KiB/4 KiB one (15 vs 24 references).
        assert!(rows[1].ours.unwrap() < rows[0].ours.unwrap());
    }
}
