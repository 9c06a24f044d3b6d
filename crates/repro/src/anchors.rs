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
//!
//! What the counter measures. On Skylake, `DTLB_LOAD_MISSES.WALK_PENDING` "counts 1 per cycle for
//! each PMH that is busy with a page walk for a load. EPT page walk duration are excluded in
//! Skylake microarchitecture" (the same words for the store and instruction-fetch events; Intel's
//! event list as shipped in Linux, `tools/perf/pmu-events/arch/x86/skylakex/virtual-memory.json`,
//! which also lists the separate `EPT.WALK_PENDING` that the artifact left commented out in
//! `eval/driver/common-perf.sh`). The measured mean is therefore the guest dimension of the
//! two-dimensional walk, without the EPT walks inside it. We compare it with the same part of
//! ours: the walk's cycles minus its host (EPT) share (`Stats::walk_cycles_host`: EPT references,
//! nested-TLB and host page-walk-cache hits), and print the whole walk beside it
//! ([`WalkBreakdown`]).

use crate::{Progress, ReproError};
use compromis_mmu::config::presets::Machine;
use compromis_mmu::{MachineConfig, SchemeKind, Stats};
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
    /// Our mean page-walk latency as the counter counts it: EPT walk duration excluded (cycles;
    /// `None` when the run made no walk). This is the figure compared with `measured`.
    pub ours: Option<f64>,
    /// `ours / measured`.
    pub ratio: Option<f64>,
    /// Whether `ours` is within ±30% of `measured`.
    pub within: bool,
    /// Our whole two-dimensional walk (guest and EPT dimensions), mean cycles.
    pub ours_full: Option<f64>,
    /// Where the walk's references were served and what each part cost.
    pub breakdown: Option<WalkBreakdown>,
}

/// One scheme's mean page walk, by dimension and by the level that served each reference: what
/// `compromis reproduce --anchors` prints under the anchor table. Every figure is per walk.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WalkBreakdown {
    /// Walks measured.
    pub walks: u64,
    /// Guest-dimension references per walk served by L1D, L2, LLC, DRAM.
    pub guest_refs: [f64; 4],
    /// Host-dimension (EPT) references per walk served by L1D, L2, LLC, DRAM.
    pub host_refs: [f64; 4],
    /// Cycles of the guest references.
    pub guest_ref_cycles: f64,
    /// Cycles of the host references.
    pub host_ref_cycles: f64,
    /// Guest page-walk-cache hits per walk, and their cycles.
    pub guest_pwc_hits: f64,
    /// Cycles of the guest page-walk-cache hits.
    pub guest_pwc_cycles: f64,
    /// Nested-TLB hits per walk.
    pub ntlb_hits: f64,
    /// Host page-walk-cache hits per walk.
    pub host_pwc_hits: f64,
    /// Cycles of the nested-TLB and host page-walk-cache hits.
    pub host_shortcut_cycles: f64,
    /// Fixed cycles per walk (`latency.walk_start`).
    pub walk_start: f64,
    /// The whole walk: the sum of the parts above.
    pub total: f64,
    /// The walk without its EPT share (host references and host shortcuts): what Skylake's
    /// `walk_pending / walk_completed` measures.
    pub without_ept: f64,
}

#[allow(clippy::cast_precision_loss)] // counters stay far below 2^53
impl WalkBreakdown {
    /// From a run's measured counters and the machine it ran on; `None` without walks.
    pub fn of(s: &Stats, m: &MachineConfig) -> Option<WalkBreakdown> {
        if s.walks == 0 {
            return None;
        }
        let n = s.walks as f64;
        let lat = [
            m.cache.l1d.latency,
            m.cache.l2.latency,
            m.cache.llc.latency,
            m.cache.dram_latency,
        ];
        let host: [u64; 4] = s.walk_ref_levels_host;
        let guest: [u64; 4] = std::array::from_fn(|i| s.walk_ref_levels[i] - host[i]);
        let cycles = |v: &[u64; 4]| -> u64 { v.iter().zip(lat).map(|(c, l)| c * l).sum() };
        let (gc, hc) = (cycles(&guest), cycles(&host));
        let gpwc = s.pwc_hits * m.latency.pwc_hit;
        let hshort = s.walk_cycles_host - hc;
        let start = s.walk_cycles - gc - hc - gpwc - hshort;
        Some(WalkBreakdown {
            walks: s.walks,
            guest_refs: guest.map(|c| c as f64 / n),
            host_refs: host.map(|c| c as f64 / n),
            guest_ref_cycles: gc as f64 / n,
            host_ref_cycles: hc as f64 / n,
            guest_pwc_hits: s.pwc_hits as f64 / n,
            guest_pwc_cycles: gpwc as f64 / n,
            ntlb_hits: s.ntlb_hits as f64 / n,
            host_pwc_hits: s.host_pwc_hits as f64 / n,
            host_shortcut_cycles: hshort as f64 / n,
            walk_start: start as f64 / n,
            total: s.walk_cycles as f64 / n,
            without_ept: (s.walk_cycles - s.walk_cycles_host) as f64 / n,
        })
    }
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

/// Progress stage of the anchor runs.
const STAGE: &str = "anchors";

/// Simulates every anchor on the preset closest to the measured machine.
pub fn run_anchors(
    quick: bool,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Vec<AnchorRow>, ReproError> {
    let machine: Machine = ANCHOR_MACHINE.parse()?;
    let config = machine.config()?;
    progress.stage(STAGE, ANCHORS.len() as u64);
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
            // Only the walk's own counters are compared: no perfect-TLB baseline is run.
            let r = req
                .build()
                .and_then(crate::passes::Vm::build)
                .and_then(|vm| vm.simulate(&[SchemeKind::Ept], false))
                .map_err(|source| ReproError::Experiment {
                    config: format!("anchor {}", a.name),
                    source,
                })?;
            progress.step(STAGE);
            let breakdown = r
                .schemes
                .iter()
                .find(|s| s.scheme == SchemeKind::Ept)
                .and_then(|s| WalkBreakdown::of(&s.measured, &config));
            let ours = breakdown.as_ref().map(|b| b.without_ept);
            let ratio = ours.map(|x| x / a.measured);
            Ok(AnchorRow {
                anchor: *a,
                machine: machine.name().to_owned(),
                footprint: footprint.bytes(),
                accesses,
                ours,
                ratio,
                within: ratio.is_some_and(|r| (r - 1.0).abs() <= TOLERANCE),
                ours_full: breakdown.as_ref().map(|b| b.total),
                breakdown,
            })
        })
        .collect();
    progress.finish(STAGE);
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
                (Some(x), Some(q)) => format!(
                    "{x:.1} ({q:.2}x; whole 2D walk {:.1}; {} {})",
                    r.ours_full.unwrap_or(x),
                    r.machine,
                    ByteSize(r.footprint)
                ),
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

/// The mean walk of each anchor run, part by part (cycles per walk; references per walk by the
/// level that served them, `L1D/L2/LLC/DRAM`).
pub fn breakdown_table(rows: &[AnchorRow]) -> Table {
    let mut t = Table::new([
        "anchor run",
        "guest refs L1D/L2/LLC/DRAM",
        "guest ref cycles",
        "guest PWC hits (cycles)",
        "EPT refs L1D/L2/LLC/DRAM",
        "EPT ref cycles",
        "nested TLB + EPT PWC hits (cycles)",
        "walk_start",
        "whole walk",
        "without EPT (compared)",
    ]);
    let refs = |v: &[f64; 4]| {
        let sum: f64 = v.iter().sum();
        format!("{:.2}/{:.2}/{:.2}/{:.2} = {sum:.2}", v[0], v[1], v[2], v[3])
    };
    for r in rows {
        let Some(b) = &r.breakdown else { continue };
        t.push([
            format!(
                "{}/{} {}",
                r.anchor.guest,
                r.anchor.host,
                ByteSize(r.footprint)
            ),
            refs(&b.guest_refs),
            format!("{:.1}", b.guest_ref_cycles),
            format!("{:.2} ({:.1})", b.guest_pwc_hits, b.guest_pwc_cycles),
            refs(&b.host_refs),
            format!("{:.1}", b.host_ref_cycles),
            format!(
                "{:.2} + {:.2} ({:.1})",
                b.ntlb_hits, b.host_pwc_hits, b.host_shortcut_cycles
            ),
            format!("{:.1}", b.walk_start),
            format!("{:.1}", b.total),
            format!("{:.1}", b.without_ept),
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
        "ours_whole_walk_cycles",
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
            r.ours_full.map_or_else(String::new, |x| x.to_string()),
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
                ours_full: Some(ours),
                breakdown: None,
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
        for r in &rows {
            let b = r.breakdown.as_ref().unwrap();
            // The compared figure is the whole walk without its EPT part, and the parts add up.
            let parts = b.guest_ref_cycles
                + b.guest_pwc_cycles
                + b.host_ref_cycles
                + b.host_shortcut_cycles
                + b.walk_start;
            assert!((parts - b.total).abs() < 1e-6, "{b:?}");
            let ept = b.host_ref_cycles + b.host_shortcut_cycles;
            assert!((b.total - ept - r.ours.unwrap()).abs() < 1e-6, "{b:?}");
            assert_eq!(r.ours_full, Some(b.total));
            // Every walk pays its fixed cost once.
            let machine: Machine = ANCHOR_MACHINE.parse().unwrap();
            let start = machine.config().unwrap().latency.walk_start;
            #[allow(clippy::cast_precision_loss)]
            let start = start as f64;
            assert!((b.walk_start - start).abs() < 1e-9, "{b:?}");
            // A 4 KiB EPT walk makes host references; each per-walk count is at most the
            // uncached 2D walk's (24 references).
            let refs: f64 = b.guest_refs.iter().chain(&b.host_refs).sum();
            assert!(refs > 0.0 && refs <= 24.0, "{b:?}");
        }
        let text = breakdown_table(&rows).to_text();
        assert_eq!(
            text.lines().filter(|l| l.contains("GiB")).count(),
            2,
            "{text}"
        );
    }

    /// The breakdown of hand-made counters: two walks, one guest L1D reference and one EPT DRAM
    /// reference each, one guest PWC hit and one nested-TLB hit in all.
    #[test]
    fn breakdown_of_hand_made_counters() {
        let m = MachineConfig::default();
        let (l1, dram) = (m.cache.l1d.latency, m.cache.dram_latency);
        let (pwc, ntlb, start) = (m.latency.pwc_hit, m.latency.ntlb_hit, m.latency.walk_start);
        let s = Stats {
            walks: 2,
            walk_ref_levels: [2, 0, 0, 2],
            walk_ref_levels_host: [0, 0, 0, 2],
            pwc_hits: 1,
            ntlb_hits: 1,
            walk_cycles_host: 2 * dram + ntlb,
            walk_cycles: 2 * l1 + 2 * dram + pwc + ntlb + 2 * start,
            ..Stats::default()
        };
        let b = WalkBreakdown::of(&s, &m).unwrap();
        #[allow(clippy::cast_precision_loss)]
        let f = |x: u64| x as f64;
        assert_eq!(b.guest_refs, [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(b.host_refs, [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(b.guest_ref_cycles, f(l1));
        assert_eq!(b.host_ref_cycles, f(dram));
        assert_eq!(b.guest_pwc_cycles, f(pwc) / 2.0);
        assert_eq!(b.host_shortcut_cycles, f(ntlb) / 2.0);
        assert_eq!(b.walk_start, f(start));
        assert_eq!(b.without_ept, f(l1) + f(pwc) / 2.0 + f(start));
        assert!(WalkBreakdown::of(&Stats::default(), &m).is_none());
    }
}
