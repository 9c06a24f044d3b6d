//! Per-scheme statistics: plain counters that can be subtracted, so a warm-up phase and the
//! measured phase are deltas of one running total.

use serde::{Deserialize, Serialize};

/// Histogram buckets of memory references per walk (the last bucket holds everything larger).
pub const WALK_HIST_BUCKETS: usize = 32;

/// Why the guest left for the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCause {
    /// Shadow paging: a write to a (write-protected) guest page-table page.
    PtWrite,
    /// Shadow paging: a guest CR3 load.
    Cr3Load,
    /// Shadow paging: a guest page fault, intercepted and reflected to the guest.
    PageFault,
    /// Shadow paging: a guest INVLPG.
    Invlpg,
    /// Shadow paging, out of sync: first write to an in-sync last-level guest table.
    Unsync,
}

impl ExitCause {
    /// All causes.
    pub const ALL: [ExitCause; 5] = [
        ExitCause::PtWrite,
        ExitCause::Cr3Load,
        ExitCause::PageFault,
        ExitCause::Invlpg,
        ExitCause::Unsync,
    ];
    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            ExitCause::PtWrite => "pt_write",
            ExitCause::Cr3Load => "cr3_load",
            ExitCause::PageFault => "page_fault",
            ExitCause::Invlpg => "invlpg",
            ExitCause::Unsync => "unsync",
        }
    }
}

/// VM exits by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exits {
    /// Shadow sync on guest page-table writes.
    pub pt_write: u64,
    /// Guest CR3 loads.
    pub cr3_load: u64,
    /// Reflected guest page faults.
    pub page_fault: u64,
    /// Guest INVLPG.
    pub invlpg: u64,
    /// Out-of-sync shadow: first writes to in-sync last-level guest tables.
    pub unsync: u64,
}

impl Exits {
    /// Adds `n` exits of `cause`.
    #[inline]
    pub fn add(&mut self, cause: ExitCause, n: u64) {
        match cause {
            ExitCause::PtWrite => self.pt_write += n,
            ExitCause::Cr3Load => self.cr3_load += n,
            ExitCause::PageFault => self.page_fault += n,
            ExitCause::Invlpg => self.invlpg += n,
            ExitCause::Unsync => self.unsync += n,
        }
    }
    /// Exits of `cause`.
    pub fn get(&self, cause: ExitCause) -> u64 {
        match cause {
            ExitCause::PtWrite => self.pt_write,
            ExitCause::Cr3Load => self.cr3_load,
            ExitCause::PageFault => self.page_fault,
            ExitCause::Invlpg => self.invlpg,
            ExitCause::Unsync => self.unsync,
        }
    }
    /// All exits.
    pub fn total(&self) -> u64 {
        self.pt_write + self.cr3_load + self.page_fault + self.invlpg + self.unsync
    }
}

/// Counters of one scheme over one phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Memory accesses (loads + stores + fetches).
    pub accesses: u64,
    /// Instructions retired.
    pub instructions: u64,
    /// Data loads.
    pub loads: u64,
    /// Data stores.
    pub stores: u64,
    /// Instruction fetches.
    pub fetches: u64,
    /// L1 TLB hits (data and instruction).
    pub l1_hits: u64,
    /// L1 TLB misses.
    pub l1_misses: u64,
    /// Second-level TLB hits.
    pub stlb_hits: u64,
    /// Second-level TLB misses (each starts a page walk).
    pub stlb_misses: u64,
    /// Completed page walks.
    pub walks: u64,
    /// Memory references of walks that read guest page-table (or shadow-table) entries.
    pub walk_refs_guest: u64,
    /// Memory references of walks that read host (EPT) entries.
    pub walk_refs_host: u64,
    /// Walks by number of memory references.
    pub walk_hist: [u64; WALK_HIST_BUCKETS],
    /// Guest-dimension page-walk cache hits (walks that skipped levels).
    pub pwc_hits: u64,
    /// Nested TLB hits.
    pub ntlb_hits: u64,
    /// Nested TLB misses (each a host walk).
    pub ntlb_misses: u64,
    /// Host page-walk cache hits.
    pub host_pwc_hits: u64,
    /// Guest-physical addresses translated by a segment register (Compromis).
    pub segment_translations: u64,
    /// Guest-physical addresses outside every segment, translated by the fallback (EPT) path.
    pub fallback_translations: u64,
    /// VM exits by cause.
    pub exits: Exits,
    /// Out-of-sync shadow paging: guest entries reconciled at INVLPG or CR3 load.
    pub resynced: u64,
    /// Guest page faults (first touch).
    pub page_faults: u64,
    /// 4 KiB pieces the guest zeroed on its page faults (512 per 2 MiB fault).
    pub zeroed_4k: u64,
    /// Guest context switches (CR3 loads).
    pub context_switches: u64,
    /// Full TLB flushes.
    pub tlb_flushes: u64,
    /// Cycles spent in page walks (each reference at the latency of the level that served it,
    /// each walk-cache shortcut at its latency).
    pub walk_cycles: u64,
    /// Walk references served by L1D, L2, LLC, DRAM.
    pub walk_ref_levels: [u64; 4],
    /// The host (EPT) dimension's share of `walk_cycles`: its references and its nested-TLB and
    /// host page-walk-cache hits. The rest (`walk_cycles - walk_cycles_host`) is the guest
    /// dimension plus the fixed cost per walk; Skylake's `dtlb_*_misses.walk_pending` counters
    /// exclude the EPT part (see `compromis_repro::anchors`).
    #[serde(default)]
    pub walk_cycles_host: u64,
    /// The host (EPT) dimension's share of `walk_ref_levels`.
    #[serde(default)]
    pub walk_ref_levels_host: [u64; 4],
    /// Cycles of the program's own data accesses.
    pub data_cycles: u64,
    /// Data accesses served by L1D, L2, LLC, DRAM.
    pub data_levels: [u64; 4],
    /// Cycles of the memory timeline (see `timing`): the STLB-hit, walk and data latencies of
    /// every access, overlapped as the core's memory-level parallelism allows. With one access in
    /// flight at a time it is exactly `stlb_hits x latency + walk_cycles + data_cycles`.
    pub mem_cycles: u64,
}

impl Stats {
    /// Counts one walk of `guest + host` references.
    #[inline]
    pub fn record_walk(&mut self, guest: u64, host: u64) {
        self.walks += 1;
        self.walk_refs_guest += guest;
        self.walk_refs_host += host;
        let b = usize::try_from(guest + host)
            .unwrap_or(usize::MAX)
            .min(WALK_HIST_BUCKETS - 1);
        self.walk_hist[b] += 1;
    }

    /// Mean references per walk.
    pub fn refs_per_walk(&self) -> f64 {
        ratio(self.walk_refs_guest + self.walk_refs_host, self.walks)
    }

    /// Counters accumulated since `earlier` (a snapshot of the same run).
    pub fn since(&self, earlier: &Stats) -> Stats {
        let hist = std::array::from_fn(|i| self.walk_hist[i] - earlier.walk_hist[i]);
        let e = &earlier.exits;
        Stats {
            accesses: self.accesses - earlier.accesses,
            instructions: self.instructions - earlier.instructions,
            loads: self.loads - earlier.loads,
            stores: self.stores - earlier.stores,
            fetches: self.fetches - earlier.fetches,
            l1_hits: self.l1_hits - earlier.l1_hits,
            l1_misses: self.l1_misses - earlier.l1_misses,
            stlb_hits: self.stlb_hits - earlier.stlb_hits,
            stlb_misses: self.stlb_misses - earlier.stlb_misses,
            walks: self.walks - earlier.walks,
            walk_refs_guest: self.walk_refs_guest - earlier.walk_refs_guest,
            walk_refs_host: self.walk_refs_host - earlier.walk_refs_host,
            walk_hist: hist,
            pwc_hits: self.pwc_hits - earlier.pwc_hits,
            ntlb_hits: self.ntlb_hits - earlier.ntlb_hits,
            ntlb_misses: self.ntlb_misses - earlier.ntlb_misses,
            host_pwc_hits: self.host_pwc_hits - earlier.host_pwc_hits,
            segment_translations: self.segment_translations - earlier.segment_translations,
            fallback_translations: self.fallback_translations - earlier.fallback_translations,
            exits: Exits {
                pt_write: self.exits.pt_write - e.pt_write,
                cr3_load: self.exits.cr3_load - e.cr3_load,
                page_fault: self.exits.page_fault - e.page_fault,
                invlpg: self.exits.invlpg - e.invlpg,
                unsync: self.exits.unsync - e.unsync,
            },
            resynced: self.resynced - earlier.resynced,
            page_faults: self.page_faults - earlier.page_faults,
            zeroed_4k: self.zeroed_4k - earlier.zeroed_4k,
            context_switches: self.context_switches - earlier.context_switches,
            tlb_flushes: self.tlb_flushes - earlier.tlb_flushes,
            walk_cycles: self.walk_cycles - earlier.walk_cycles,
            walk_ref_levels: std::array::from_fn(|i| {
                self.walk_ref_levels[i] - earlier.walk_ref_levels[i]
            }),
            walk_cycles_host: self.walk_cycles_host - earlier.walk_cycles_host,
            walk_ref_levels_host: std::array::from_fn(|i| {
                self.walk_ref_levels_host[i] - earlier.walk_ref_levels_host[i]
            }),
            data_cycles: self.data_cycles - earlier.data_cycles,
            data_levels: std::array::from_fn(|i| self.data_levels[i] - earlier.data_levels[i]),
            mem_cycles: self.mem_cycles - earlier.mem_cycles,
        }
    }
}

/// `num / den`, 0 when `den` is 0.
#[allow(clippy::cast_precision_loss)] // counters stay far below 2^53 in practice
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}
