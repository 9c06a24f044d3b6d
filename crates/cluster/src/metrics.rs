//! Placement statistics: a plain struct of counters and a time series, separate from the printers
//! in [`crate::output`].

use serde::Serialize;
use std::collections::BTreeMap;

/// Why a VM (or a resize) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// Larger (memory or cores) than every host of the fleet.
    LargerThanAnyHost,
    /// No host has enough free memory and cores.
    NoCapacity,
    /// No host offers one extent and the fallback is `reject`.
    NoSingleExtent,
    /// The chosen host would need more than `k` segments.
    TooFragmented,
    /// No compaction plan frees one extent large enough.
    CompactionFailed,
}

impl RejectReason {
    /// Stable kebab-case name.
    pub const fn name(self) -> &'static str {
        match self {
            RejectReason::LargerThanAnyHost => "larger-than-any-host",
            RejectReason::NoCapacity => "no-capacity",
            RejectReason::NoSingleExtent => "no-single-extent",
            RejectReason::TooFragmented => "too-fragmented",
            RejectReason::CompactionFailed => "compaction-failed",
        }
    }
}

/// One point of the time series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Trace time in seconds.
    pub time: u64,
    /// Live VMs.
    pub live_vms: u64,
    /// Hosts with at least one VM.
    pub hosts_in_use: u32,
    /// Used / offered memory of the fleet.
    pub mem_utilisation: f64,
    /// Cluster fragmentation: share of free memory outside each host's largest extent.
    pub fragmentation: f64,
    /// Share of the VMs placed so far that got one segment.
    pub single_segment_share: f64,
}

/// Everything measured in one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PlacementReport {
    /// Policy name.
    pub policy: String,
    /// Fallback name.
    pub fallback: String,
    /// Hosts in the fleet.
    pub hosts: u64,
    /// Events processed (bad rows excluded).
    pub events: u64,
    /// VM arrivals.
    pub arrivals: u64,
    /// Arrivals of VMs already running at the trace start.
    pub initial_vms: u64,
    /// VMs placed.
    pub placed: u64,
    /// VMs placed with exactly one segment.
    pub single_segment: u64,
    /// VMs placed on EPT paging (no segment: the last resort of every fallback but `refuse`).
    pub paged: u64,
    /// Segments per VM placed in segments (paged VMs excluded) -> number of VMs.
    pub segments_histogram: BTreeMap<usize, u64>,
    /// Refused arrivals by reason.
    pub rejections: BTreeMap<RejectReason, u64>,
    /// Departures processed.
    pub departures: u64,
    /// Resizes processed.
    pub resizes: u64,
    /// Resizes that had to move the VM to another host.
    pub resize_migrations: u64,
    /// Resizes that fit nowhere (the VM is stopped).
    pub resize_rejections: u64,
    /// Compactions performed.
    pub compactions: u64,
    /// Bytes copied by compactions.
    pub bytes_moved: u64,
    /// Rows skipped as bad (with `skip_bad_rows`).
    pub bad_rows: u64,
    /// Runs ended implicitly: a task scheduled again while running (Google 2011 shards that
    /// are not consecutive), replayed as the end of its previous run.
    pub implicit_ends: u64,
    /// The first few bad-row messages.
    pub bad_row_examples: Vec<String>,
    /// Most VMs alive at once.
    pub peak_live_vms: u64,
    /// Most hosts in use at once (sampled at every event).
    pub peak_hosts_in_use: u32,
    /// Highest memory utilisation of the fleet (used / offered, at every event).
    pub peak_mem_utilisation: f64,
    /// The peak memory utilisation the fleet was sized for (`--target-utilization`), if any.
    pub target_utilisation: Option<f64>,
    /// The trace's peak memory demand in bytes (every VM live from arrival to departure, sizes
    /// rounded to the granule), when the fleet was sized from it.
    pub peak_demand_bytes: Option<u64>,
    /// First and last event time.
    pub time_span: (u64, u64),
    /// Time of the last arrival: the means below cover samples up to it (the drain after the
    /// last arrival, when VMs only leave, is left out).
    pub last_arrival: u64,
    /// Time series, sampled at a fixed trace-time interval.
    pub series: Vec<Sample>,
}

impl PlacementReport {
    /// The paper's metric: share of placed VMs that got one memory segment (0 when none placed).
    pub fn single_segment_share(&self) -> f64 {
        if self.placed == 0 {
            0.0
        } else {
            self.single_segment as f64 / self.placed as f64
        }
    }

    /// Counts one placed VM.
    pub fn count_placed(&mut self, p: crate::engine::Placed) {
        self.placed += 1;
        match p {
            crate::engine::Placed::Paged => self.paged += 1,
            crate::engine::Placed::Segments(n) => {
                if n == 1 {
                    self.single_segment += 1;
                }
                *self.segments_histogram.entry(n).or_insert(0) += 1;
            }
        }
    }

    /// VMs placed in two or more segments.
    pub fn multi_segment(&self) -> u64 {
        self.placed - self.single_segment - self.paged
    }

    /// All refused arrivals.
    pub fn rejected(&self) -> u64 {
        self.rejections.values().sum()
    }

    /// Mean memory utilisation over the samples up to the last arrival.
    pub fn mean_mem_utilisation(&self) -> f64 {
        mean(
            self.series
                .iter()
                .filter(|s| s.time <= self.last_arrival)
                .map(|s| s.mem_utilisation),
        )
    }

    /// Mean fragmentation over the samples up to the last arrival.
    pub fn mean_fragmentation(&self) -> f64 {
        mean(
            self.series
                .iter()
                .filter(|s| s.time <= self.last_arrival)
                .map(|s| s.fragmentation),
        )
    }
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0u64), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}
