//! A placement study as asked for: one VM trace (or the synthetic generator), one fleet, several
//! policies replayed side by side in parallel. Every default (the fleet, the memory a normalized
//! 1.0 stands for, the seed) is set here, once; `compromis place` and the reproduction report
//! call [`PlaceRequest::run`].

use crate::engine::{ReplayError, ReplayOptions, simulate_observed};
use crate::event::VmTraceError;
use crate::fleet::{DEFAULT_SYNTHETIC_FLEET, Fleet, FleetError};
use crate::metrics::PlacementReport;
use crate::policy::PolicyKind;
use crate::sizing::{SizingError, check_target, fleet_for_peak, peak_demand};
use crate::trace::{
    DurationRule, EventStream, Prefetch, SyntheticConfig, SyntheticTrace, TraceFormat,
    TraceOptions, open_trace,
};
use compromis_hostmem::{Fallback, Policy as ExtentPolicy};
use compromis_types::DEFAULT_SEED;
use rayon::prelude::*;
use std::path::PathBuf;
use thiserror::Error;

/// Fleet used with a trace when none is given: the paper co-authors' simulator's fleet.
pub const DEFAULT_TRACE_FLEET: &str = "20000x192GiB/24c";

/// Where the VM events come from.
#[derive(Clone, Debug, PartialEq)]
pub enum PlaceSource {
    /// The built-in synthetic generator.
    Synthetic {
        /// VMs to generate.
        vms: u64,
    },
    /// A VM trace file or folder.
    Trace {
        /// The file or folder.
        path: PathBuf,
        /// Its format.
        format: TraceFormat,
    },
}

/// A placement study.
#[derive(Clone, Debug)]
pub struct PlaceRequest {
    /// The events.
    pub source: PlaceSource,
    /// The fleet (default: [`DEFAULT_TRACE_FLEET`] for a trace, [`DEFAULT_SYNTHETIC_FLEET`] for
    /// the generator).
    pub fleet: Option<Fleet>,
    /// Policies, replayed in parallel, reported in this order.
    pub policies: Vec<PolicyKind>,
    /// What the memory manager does when a VM cannot get one extent.
    pub fallback: Fallback,
    /// Seed of every random choice (generator, duration draws, random policy).
    pub seed: u64,
    /// Trace seconds between samples of the time series.
    pub sample_interval: u64,
    /// Count and skip malformed rows.
    pub skip_bad_rows: bool,
    /// Extent choice inside a host.
    pub extent_policy: ExtentPolicy,
    /// Bytes a normalized 1.0 stands for (google2011, alibaba2018; default: the largest host).
    pub norm_mem: Option<u64>,
    /// Lifetime inside an azure-rnn duration bin.
    pub duration_rule: DurationRule,
    /// Size the fleet so that the trace's peak memory demand is this utilisation of it: the host
    /// kind comes from [`PlaceRequest::fleet`] (one group; its count is replaced).
    pub target_utilization: Option<f64>,
}

impl Default for PlaceRequest {
    fn default() -> Self {
        let r = ReplayOptions::default();
        PlaceRequest {
            source: PlaceSource::Synthetic {
                vms: SyntheticConfig::default().vms,
            },
            fleet: None,
            policies: vec![PolicyKind::ContigFirstFit],
            fallback: Fallback::Segments(8),
            seed: DEFAULT_SEED,
            sample_interval: r.sample_interval,
            skip_bad_rows: false,
            extent_policy: r.extent_policy,
            norm_mem: None,
            duration_rule: DurationRule::Uniform,
            target_utilization: None,
        }
    }
}

/// Why a placement study cannot run.
#[derive(Debug, Error)]
pub enum PlaceError {
    /// The default fleet does not parse (a bug).
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// No policy to run.
    #[error("no placement policy selected")]
    NoPolicy,
    /// A normalization of zero bytes.
    #[error("--norm-mem (the memory a normalized 1.0 stands for) must be above zero")]
    ZeroNormMem,
    /// The trace cannot be opened.
    #[error("cannot read {format} trace {path}")]
    Open {
        /// The trace.
        path: PathBuf,
        /// Its format.
        format: TraceFormat,
        /// Why.
        #[source]
        source: VmTraceError,
    },
    /// The generator's settings are invalid.
    #[error(transparent)]
    Synthetic(VmTraceError),
    /// The target utilisation cannot size a fleet.
    #[error(transparent)]
    Sizing(#[from] SizingError),
    /// A target utilisation with a fleet of several host kinds.
    #[error(
        "--target-utilization sizes a fleet of one host kind; '{0}' has several (give one, e.g. 1x192GiB/24c)"
    )]
    MixedFleet(Fleet),
    /// The trace could not be read to measure its peak demand.
    #[error("cannot measure the peak memory demand of the trace")]
    Demand(#[source] VmTraceError),
    /// A replay failed.
    #[error("replay under {policy} failed")]
    Replay {
        /// The policy.
        policy: PolicyKind,
        /// Why.
        #[source]
        source: ReplayError,
    },
}

impl PlaceRequest {
    /// The fleet the replays run on: [`PlaceRequest::fleet`], or with a target utilisation that
    /// host kind sized to the trace's peak demand (returned too).
    pub fn sized_fleet(&self) -> Result<(Fleet, Option<u64>), PlaceError> {
        let fleet = self.fleet()?;
        let Some(target) = self.target_utilization else {
            return Ok((fleet, None));
        };
        check_target(target)?;
        let [(_, spec)] = fleet.groups[..] else {
            return Err(PlaceError::MixedFleet(fleet));
        };
        let topts = self.trace_options(&fleet)?;
        let peak =
            peak_demand(self.open(&topts)?, self.skip_bad_rows).map_err(PlaceError::Demand)?;
        Ok((fleet_for_peak(spec, peak, target)?, Some(peak)))
    }

    /// The fleet, with the default applied.
    pub fn fleet(&self) -> Result<Fleet, PlaceError> {
        match (&self.fleet, &self.source) {
            (Some(f), _) => Ok(f.clone()),
            (None, PlaceSource::Trace { .. }) => Ok(DEFAULT_TRACE_FLEET.parse()?),
            (None, PlaceSource::Synthetic { .. }) => Ok(DEFAULT_SYNTHETIC_FLEET.parse()?),
        }
    }

    fn trace_options(&self, fleet: &Fleet) -> Result<TraceOptions, PlaceError> {
        let norm = self.norm_mem.unwrap_or_else(|| {
            fleet
                .groups
                .iter()
                .map(|g| g.1.mem_bytes)
                .max()
                .unwrap_or(0)
        });
        if norm == 0 {
            return Err(PlaceError::ZeroNormMem);
        }
        Ok(TraceOptions {
            seed: self.seed,
            norm_mem_bytes: norm,
            duration_rule: self.duration_rule,
        })
    }

    /// Opens the event stream (each policy replays its own copy).
    pub fn open(&self, topts: &TraceOptions) -> Result<EventStream, PlaceError> {
        match &self.source {
            PlaceSource::Trace { path, format } => {
                open_trace(path, *format, topts).map_err(|source| PlaceError::Open {
                    path: path.clone(),
                    format: *format,
                    source,
                })
            }
            PlaceSource::Synthetic { vms } => Ok(Box::new(
                SyntheticTrace::new(SyntheticConfig {
                    vms: *vms,
                    seed: self.seed,
                    ..SyntheticConfig::default()
                })
                .map_err(PlaceError::Synthetic)?,
            )),
        }
    }

    /// Replays every policy in parallel; `progress(i, events)` reports policy `i`'s progress.
    /// Reports come back in the order of [`PlaceRequest::policies`].
    pub fn run(
        &self,
        progress: &(dyn Fn(usize, u64) + Sync),
    ) -> Result<Vec<PlacementReport>, PlaceError> {
        if self.policies.is_empty() {
            return Err(PlaceError::NoPolicy);
        }
        let (fleet, peak) = self.sized_fleet()?;
        let topts = self.trace_options(&fleet)?;
        // Open once up front so a bad path or layout fails before any thread starts.
        drop(self.open(&topts)?);
        let opts = ReplayOptions {
            seed: self.seed,
            sample_interval: self.sample_interval.max(1),
            skip_bad_rows: self.skip_bad_rows,
            extent_policy: self.extent_policy,
            ..ReplayOptions::default()
        };
        // With a core to spare (fewer replays than threads), each trace is parsed ahead on its
        // own thread while its replay places the previous batch; the events are the same.
        let read_ahead = self.policies.len() < rayon::current_num_threads();
        self.policies
            .par_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut events = self.open(&topts)?;
                if read_ahead {
                    events = Box::new(Prefetch::new(events));
                }
                let mut rep = simulate_observed(events, &fleet, p, &self.fallback, &opts, &|n| {
                    progress(i, n)
                })
                .map_err(|source| PlaceError::Replay { policy: *p, source })?;
                rep.target_utilisation = self.target_utilization;
                rep.peak_demand_bytes = peak;
                Ok(rep)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_policies_in_order_and_deterministically() {
        let req = PlaceRequest {
            source: PlaceSource::Synthetic { vms: 300 },
            fleet: Some("8x192GiB/48c".parse().unwrap()),
            policies: vec![PolicyKind::FirstFit, PolicyKind::ContigFirstFit],
            ..PlaceRequest::default()
        };
        let a = req.run(&|_, _| {}).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].policy, "first-fit");
        assert_eq!(a[1].policy, "contig-first-fit");
        assert_eq!(a, req.run(&|_, _| {}).unwrap());
        let none = PlaceRequest {
            policies: vec![],
            ..req.clone()
        };
        assert!(matches!(none.run(&|_, _| {}), Err(PlaceError::NoPolicy)));
        let zero = PlaceRequest {
            norm_mem: Some(0),
            ..req
        };
        assert!(matches!(zero.run(&|_, _| {}), Err(PlaceError::ZeroNormMem)));
    }

    #[test]
    fn default_fleets() {
        let t = PlaceRequest {
            source: PlaceSource::Trace {
                path: "x".into(),
                format: TraceFormat::Azure,
            },
            ..PlaceRequest::default()
        };
        assert_eq!(t.fleet().unwrap(), DEFAULT_TRACE_FLEET.parse().unwrap());
        assert_eq!(
            PlaceRequest::default().fleet().unwrap(),
            DEFAULT_SYNTHETIC_FLEET.parse().unwrap()
        );
    }
}
