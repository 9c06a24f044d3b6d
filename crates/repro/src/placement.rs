//! Placement under load (issue 11 item 8): the single-segment share of placed VMs against the
//! fleet's peak memory utilisation, 0.3 to 0.95, for a contiguity-oblivious and a
//! contiguity-aware policy on every trace. The fleet of each point is the trace's host kind,
//! sized so the trace's peak demand is that utilisation (`compromis place --target-utilization`);
//! a VM that cannot get at most 8 segments runs on EPT paging (counted as paged, not refused).
//!
//! Says which traces are VM traces (Azure, Bitbrains, the Azure-calibrated synthetic trace) and
//! which are task or container traces (Google 2011 tasks, Alibaba 2018 containers), whose
//! "VMs" are smaller and shorter-lived than datacenter VMs.

use crate::ReproError;
use crate::compute::{Source, open_source};
use crate::{Progress, RunConfig};
use compromis_cluster::sizing::{fleet_for_peak, peak_demand};
use compromis_cluster::{Fallback, Fleet, HostSpec, PolicyKind, ReplayOptions, simulate_with};
use compromis_report::Table;
use compromis_report::svg::lines;
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;

/// Peak utilisations of the sweep.
pub const TARGETS: [f64; 6] = [0.3, 0.5, 0.7, 0.8, 0.9, 0.95];
/// The policies compared: contiguity-oblivious first-fit, the paper's contiguity-aware first-fit.
pub const POLICIES: [PolicyKind; 2] = [PolicyKind::FirstFit, PolicyKind::ContigFirstFit];
/// The fallback of every point: up to 8 segments, then EPT paging.
pub const FALLBACK: Fallback = Fallback::Segments(8);
/// Cores per host in the sweep: enough that memory, not cores, binds.
pub const SWEEP_CORES: u32 = 1024;
/// The CSV file of the sweep.
pub const CSV_FILE: &str = "utilisation.csv";
/// The figure of the sweep.
pub const SVG_FILE: &str = "utilisation.svg";

/// One trace, one policy, one target utilisation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UtilisationRow {
    /// Trace name.
    pub trace: String,
    /// `VM`, `task` or `container`.
    pub kind: String,
    /// Policy.
    pub policy: String,
    /// Whether the policy looks at contiguity.
    pub contiguity_aware: bool,
    /// Target peak utilisation.
    pub target: f64,
    /// Hosts of the sized fleet.
    pub hosts: u64,
    /// Peak utilisation the replay reached.
    pub peak_utilisation: f64,
    /// VMs placed.
    pub placed: u64,
    /// Placed with one segment.
    pub single_segment: u64,
    /// Placed with 2 to 8 segments.
    pub multi_segment: u64,
    /// Placed on EPT paging.
    pub paged: u64,
    /// Refused.
    pub rejected: u64,
    /// `single_segment / placed`.
    pub share: f64,
}

/// What a trace's records are: datacenter VMs, or tasks / containers.
pub fn trace_kind(name: &str) -> &'static str {
    if name.starts_with("google") {
        "task"
    } else if name.starts_with("alibaba") {
        "container"
    } else {
        "VM"
    }
}

/// Progress stage of the sweep.
pub(crate) const STAGE: &str = "placement under load";

/// Runs the sweep on every source (each on its own host kind); rows in source, policy, target
/// order.
pub(crate) fn sweep(
    cfg: &RunConfig,
    sources: &[Source],
    progress: &dyn Progress,
) -> Result<Vec<UtilisationRow>, ReproError> {
    let mut sized: Vec<Vec<Fleet>> = Vec::new();
    for s in sources {
        let base = s.fleet()?;
        let spec = base
            .groups
            .first()
            .map(|g| g.1)
            .ok_or_else(|| ReproError::Fleet {
                fleet: s.fleet.clone(),
                message: "no host".into(),
            })?;
        // Memory is the resource under study: cores never bind (else high targets only show
        // VMs refused for cores).
        let spec = HostSpec {
            cores: SWEEP_CORES,
            ..spec
        };
        let peak = peak_demand(open_source(s, &base, cfg)?, false).map_err(|source| {
            ReproError::Trace {
                path: s.name.clone().into(),
                format: s.name.clone(),
                source,
            }
        })?;
        let fleets = TARGETS
            .iter()
            .map(|&t| {
                fleet_for_peak(spec, peak, t).map_err(|e| ReproError::Fleet {
                    fleet: s.fleet.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        sized.push(fleets);
    }
    let mut jobs = Vec::new();
    for i in 0..sources.len() {
        for p in POLICIES {
            for t in 0..TARGETS.len() {
                jobs.push((i, p, t));
            }
        }
    }
    let popts = ReplayOptions {
        seed: cfg.seed,
        ..ReplayOptions::default()
    };
    jobs.par_iter()
        .map(|&(i, policy, t)| {
            let s = &sources[i];
            let fleet = &sized[i][t];
            let events = open_source(s, fleet, cfg)?;
            let rep =
                simulate_with(events, fleet, &policy, &FALLBACK, &popts).map_err(|source| {
                    ReproError::Placement {
                        trace: s.name.clone(),
                        policy: policy.name().to_owned(),
                        source,
                    }
                })?;
            progress.step(STAGE);
            Ok(UtilisationRow {
                trace: s.name.clone(),
                kind: trace_kind(&s.name).to_owned(),
                policy: policy.name().to_owned(),
                contiguity_aware: policy.build(0).contiguity_aware(),
                target: TARGETS[t],
                hosts: rep.hosts,
                peak_utilisation: rep.peak_mem_utilisation,
                placed: rep.placed,
                single_segment: rep.single_segment,
                multi_segment: rep.multi_segment(),
                paged: rep.paged,
                rejected: rep.rejected(),
                share: rep.single_segment_share(),
            })
        })
        .collect()
}

/// Jobs of [`sweep`] for `sources` traces (for the progress bar).
pub fn jobs(sources: usize) -> u64 {
    u64::try_from(sources * POLICIES.len() * TARGETS.len()).unwrap_or(0)
}

/// The sweep as a table.
pub fn table(rows: &[UtilisationRow]) -> Table {
    let mut t = Table::new([
        "trace",
        "kind",
        "policy",
        "target",
        "hosts",
        "peak util.",
        "placed",
        "one segment",
        "2-8 segments",
        "paged",
        "refused",
        "single-segment share",
    ]);
    for r in rows {
        t.push([
            r.trace.clone(),
            r.kind.clone(),
            r.policy.clone(),
            format!("{:.2}", r.target),
            r.hosts.to_string(),
            format!("{:.2}%", 100.0 * r.peak_utilisation),
            r.placed.to_string(),
            r.single_segment.to_string(),
            r.multi_segment.to_string(),
            r.paged.to_string(),
            r.rejected.to_string(),
            format!("{:.2}%", 100.0 * r.share),
        ]);
    }
    t
}

/// The figure: one line per trace and policy, share against target utilisation.
pub fn svg(rows: &[UtilisationRow]) -> Result<String, ReproError> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows {
        let name = format!("{} ({}) / {}", r.trace, r.kind, r.policy);
        match series.last_mut() {
            Some(s) if s.0 == name => s.1.push((r.target, r.share)),
            _ => series.push((name, vec![(r.target, r.share)])),
        }
    }
    Ok(lines(
        "Single-segment share against peak memory utilisation",
        "peak memory utilisation of the fleet",
        "share of placed VMs with one segment",
        &series,
    )?)
}

/// The report's section (markdown): what was run, which traces are VM traces, the table.
pub fn section(rows: &[UtilisationRow], markdown: impl Fn(&Table) -> String) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## 3b. Placement under load\n");
    let _ = writeln!(
        s,
        "Each trace on fleets of its host kind (its memory, {SWEEP_CORES} cores so that memory, not cores, binds) sized so that the trace's peak memory demand is {} of the fleet \
         (`compromis place --target-utilization U`); contiguity-oblivious first-fit against the paper's \
         contiguity-aware first-fit; a VM that cannot get up to 8 segments runs on EPT paging (counted as paged, \
         not refused).\n",
        TARGETS
            .iter()
            .map(|t| format!("{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut kinds: Vec<(String, &str)> = rows
        .iter()
        .map(|r| (r.trace.clone(), trace_kind(&r.trace)))
        .collect();
    kinds.dedup();
    let vm: Vec<&str> = kinds
        .iter()
        .filter(|k| k.1 == "VM")
        .map(|k| k.0.as_str())
        .collect();
    let other: Vec<String> = kinds
        .iter()
        .filter(|k| k.1 != "VM")
        .map(|k| format!("{} ({}s)", k.0, k.1))
        .collect();
    let _ = writeln!(
        s,
        "VM traces: {}. Task or container traces: {} (their records are tasks or containers, smaller and \
         shorter-lived than VMs; the paper's claim is about VMs).\n",
        if vm.is_empty() {
            "none".to_owned()
        } else {
            vm.join(", ")
        },
        if other.is_empty() {
            "none".to_owned()
        } else {
            other.join(", ")
        }
    );
    s.push_str(&markdown(&table(rows)));
    let _ = writeln!(s, "\n![utilisation]({SVG_FILE})\n");
    s
}

/// `utilisation.csv`: the sweep as a tidy table (plain numbers, snake_case headers).
pub fn csv_table(rows: &[UtilisationRow]) -> Table {
    let mut t = Table::new([
        "trace",
        "kind",
        "policy",
        "contiguity_aware",
        "target_utilisation",
        "hosts",
        "peak_utilisation",
        "placed",
        "single_segment",
        "multi_segment",
        "paged",
        "refused",
        "single_segment_share",
    ]);
    for r in rows {
        t.push([
            r.trace.clone(),
            r.kind.clone(),
            r.policy.clone(),
            r.contiguity_aware.to_string(),
            r.target.to_string(),
            r.hosts.to_string(),
            r.peak_utilisation.to_string(),
            r.placed.to_string(),
            r.single_segment.to_string(),
            r.multi_segment.to_string(),
            r.paged.to_string(),
            r.rejected.to_string(),
            r.share.to_string(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_table() {
        assert_eq!(trace_kind("azure-v1-rnn"), "VM");
        assert_eq!(trace_kind("bitbrains-rnd"), "VM");
        assert_eq!(trace_kind("google-2011"), "task");
        assert_eq!(trace_kind("alibaba-2018"), "container");
        let row = UtilisationRow {
            trace: "google-2011".into(),
            kind: "task".into(),
            policy: "first-fit".into(),
            contiguity_aware: false,
            target: 0.5,
            hosts: 3,
            peak_utilisation: 0.49,
            placed: 10,
            single_segment: 7,
            multi_segment: 2,
            paged: 1,
            rejected: 0,
            share: 0.7,
        };
        let s = section(std::slice::from_ref(&row), |t| t.to_text());
        assert!(
            s.contains("VM traces: none") && s.contains("google-2011 (tasks)"),
            "{s}"
        );
        assert!(s.contains("70.00%") && s.contains("49.00%"), "{s}");
        let svg = svg(&[row.clone(), UtilisationRow { target: 0.9, ..row }]).unwrap();
        assert!(svg.contains("google-2011 (task) / first-fit"));
    }
}
