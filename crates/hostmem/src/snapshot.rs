//! A snapshot of a host's memory map: who owns every range, in address order. Data for the
//! printers (`compromis_report::hv`), captured without changing the host.

use crate::host::{HostMemory, Owner};
use compromis_types::Address;
use compromis_types::Extent;

/// The host memory map at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSnapshot {
    /// RAM ranges, in address order.
    pub ram: Vec<Extent>,
    /// Every owned or free range, in address order.
    pub spans: Vec<(Extent, Owner)>,
}

impl MapSnapshot {
    /// Captures the current map of `h`.
    pub fn capture(h: &HostMemory) -> MapSnapshot {
        MapSnapshot {
            ram: h.allocator().ranges().collect(),
            spans: h.owners(),
        }
    }

    /// The host-physical span `[lowest RAM address, end of the highest RAM range)`; `(0, 0)` when
    /// there is no RAM.
    pub fn span(&self) -> (u64, u64) {
        let lo = self.ram.first().map_or(0, |r| r.start.raw());
        let hi = self.ram.last().map_or(0, |r| r.end().raw());
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::Policy;
    use compromis_types::PageSize;
    use compromis_types::VmId;

    #[test]
    fn capture_lists_every_range() {
        const G: u64 = 1 << 30;
        let mut h = HostMemory::new(4 * G, Policy::FirstFit);
        h.create(VmId(1), G, PageSize::Size2M, 1).unwrap();
        let s = MapSnapshot::capture(&h);
        assert_eq!(s.span(), (0, 4 * G));
        assert_eq!(
            s.spans,
            vec![
                (Extent::new(0, G), Owner::Vm(VmId(1))),
                (Extent::new(G, 3 * G), Owner::Free)
            ]
        );
    }
}
