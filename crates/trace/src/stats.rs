//! Summary statistics of a trace (`compromis trace inspect`).

use crate::RecordSource;
use crate::error::TraceError;
use crate::rec::{Record, RecordKind};
use compromis_types::{Address, Gva, PageSize};
use serde::Serialize;
use std::collections::BTreeSet;

/// What a trace contains.
///
/// Accesses count as the simulator sees them: a modify is one load and one store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TraceStats {
    /// Records read (lines of a lackey trace, not counting commentary).
    pub records: u64,
    /// Instructions (fetch records).
    pub instructions: u64,
    /// Instruction fetches (equal to `instructions`).
    pub fetches: u64,
    /// Data loads, a modify counting one.
    pub loads: u64,
    /// Data stores, a modify counting one.
    pub stores: u64,
    /// Modify records (each also counted in `loads` and `stores`).
    pub modifies: u64,
    /// Simulator accesses: fetches + loads + stores.
    pub accesses: u64,
    /// Bad records skipped.
    pub skipped: u64,
    /// Distinct 4 KiB pages touched.
    pub pages_4k: u64,
    /// Distinct 2 MiB pages touched.
    pub pages_2m: u64,
    /// Memory footprint: distinct 4 KiB pages times 4 KiB.
    pub footprint_bytes: u64,
    /// Lowest address accessed.
    pub min_addr: Option<Gva>,
    /// Highest address accessed.
    pub max_addr: Option<Gva>,
}

/// Accumulates [`TraceStats`] one record at a time.
#[derive(Debug, Default)]
pub struct StatsBuilder {
    s: TraceStats,
    pages: BTreeSet<u64>,
    last_page: Option<u64>,
}

impl StatsBuilder {
    /// Adds one record.
    #[inline]
    pub fn add(&mut self, r: &Record) {
        let s = &mut self.s;
        s.records += 1;
        match r.kind {
            RecordKind::Instr => {
                s.instructions += 1;
                s.fetches += 1;
            }
            RecordKind::Load => s.loads += 1,
            RecordKind::Store => s.stores += 1,
            RecordKind::Modify => {
                s.modifies += 1;
                s.loads += 1;
                s.stores += 1;
            }
        }
        s.accesses += r.access_count();
        s.min_addr = Some(s.min_addr.map_or(r.addr, |m| m.min(r.addr)));
        s.max_addr = Some(s.max_addr.map_or(r.addr, |m| m.max(r.addr)));
        let page = r.addr.page_number(PageSize::Size4K);
        if self.last_page != Some(page) {
            self.last_page = Some(page);
            self.pages.insert(page);
        }
    }

    /// The statistics, with `skipped` bad records.
    pub fn finish(self, skipped: u64) -> TraceStats {
        let mut s = self.s;
        s.skipped = skipped;
        s.pages_4k = self.pages.len() as u64;
        s.footprint_bytes = s.pages_4k * PageSize::Size4K.bytes();
        let per_2m = PageSize::Size2M.shift() - PageSize::Size4K.shift();
        let mut last = None;
        for p in &self.pages {
            let big = p >> per_2m;
            if last != Some(big) {
                s.pages_2m += 1;
                last = Some(big);
            }
        }
        s
    }
}

impl TraceStats {
    /// Reads a whole record stream; stops at its first error.
    pub fn collect(src: &mut dyn RecordSource) -> Result<TraceStats, TraceError> {
        let mut b = StatsBuilder::default();
        for r in &mut *src {
            b.add(&r?);
        }
        Ok(b.finish(src.skipped()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LackeyReader;

    #[test]
    fn counts_a_small_trace() {
        // Pages: 0x400 (4K page 0, 2M page 0), 0x1000 (4K page 1), 0x200000 (2M page 1), and
        // 0x400 again.
        let text = "I  400,3\n L 1000,8\n M 200000,4\n S 408,8\n";
        let mut r = LackeyReader::new(text.as_bytes(), "t", false);
        let s = TraceStats::collect(&mut r).unwrap();
        assert_eq!(s.records, 4);
        assert_eq!(s.instructions, 1);
        assert_eq!((s.loads, s.stores, s.modifies), (2, 2, 1));
        assert_eq!(s.accesses, 5);
        assert_eq!(s.pages_4k, 3);
        assert_eq!(s.pages_2m, 2);
        assert_eq!(s.footprint_bytes, 3 * 4096);
        assert_eq!(s.min_addr, Some(Gva(0x400)));
        assert_eq!(s.max_addr, Some(Gva(0x200000)));
    }
}
