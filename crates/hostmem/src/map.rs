//! The host physical memory map: RAM ranges, reserved (unmovable) ranges and NUMA nodes.
//!
//! Modelled on what firmware hands a hypervisor (an e820 / UEFI memory map plus the ACPI SRAT):
//! RAM ranges with holes between them, ranges the hypervisor may never give to a VM (firmware, the
//! hypervisor's own text and heap) and the NUMA node of each range.

use crate::extent::{AllocError, GRANULE};
use compromis_types::{Address, Extent, Hpa};
use serde::Serialize;

/// A range of RAM that is never given to a VM and never moved by compaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reserved {
    /// The range (inside RAM).
    pub ext: Extent,
    /// What it holds (`firmware`, `hypervisor`...).
    pub label: String,
}

/// A NUMA node and the host-physical ranges it owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NumaNode {
    /// Node number.
    pub id: u32,
    /// Ranges (need not be RAM: a node may own a hole).
    pub ranges: Vec<Extent>,
}

/// The host's physical memory map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostMap {
    /// RAM ranges (4 KiB aligned, non-overlapping).
    pub ram: Vec<Extent>,
    /// Reserved, unmovable ranges inside RAM.
    pub reserved: Vec<Reserved>,
    /// NUMA nodes (may be empty: one implicit node).
    pub numa: Vec<NumaNode>,
}

impl HostMap {
    /// One RAM range `[0, capacity)` (rounded down to 4 KiB), nothing reserved, one NUMA node.
    pub fn flat(capacity: u64) -> HostMap {
        let cap = capacity & !(GRANULE - 1);
        let ram = if cap == 0 {
            vec![]
        } else {
            vec![Extent::new(0, cap)]
        };
        HostMap {
            numa: vec![NumaNode {
                id: 0,
                ranges: ram.clone(),
            }],
            ram,
            reserved: vec![],
        }
    }

    /// A PC-like map of `capacity` bytes of RAM (a multiple of 1 GiB, at least 4 GiB) on `nodes`
    /// NUMA nodes: RAM below a 1 GiB PCI hole at [3 GiB, 4 GiB), the rest above 4 GiB; the first
    /// 1 MiB reserved for firmware and the 256 MiB above it for the hypervisor; the address space
    /// split evenly between the nodes by RAM bytes, at 1 GiB boundaries.
    pub fn pc(capacity: u64, nodes: u32) -> HostMap {
        const G: u64 = 1 << 30;
        let cap = (capacity / G).max(4) * G;
        let ram = vec![Extent::new(0, 3 * G), Extent::new(4 * G, cap - 3 * G)];
        let reserved = vec![
            Reserved {
                ext: Extent::new(0, 1 << 20),
                label: "firmware".into(),
            },
            Reserved {
                ext: Extent::new(1 << 20, 256 << 20),
                label: "hypervisor".into(),
            },
        ];
        let nodes = nodes.clamp(1, 64);
        let per_node = (cap / G).div_ceil(u64::from(nodes)).max(1) * G;
        let mut numa = Vec::new();
        // Walk RAM in address order, cutting at every `per_node` RAM bytes.
        let mut id = 0u32;
        let mut node_ranges = Vec::new();
        let mut in_node = 0u64;
        for r in &ram {
            let mut s = r.start.raw();
            let end = r.end().raw();
            while s < end {
                let take = (per_node - in_node).min(end - s);
                node_ranges.push(Extent::new(s, take));
                in_node += take;
                s += take;
                if in_node == per_node {
                    numa.push(NumaNode {
                        id,
                        ranges: std::mem::take(&mut node_ranges),
                    });
                    id += 1;
                    in_node = 0;
                }
            }
        }
        if !node_ranges.is_empty() {
            numa.push(NumaNode {
                id,
                ranges: node_ranges,
            });
        }
        HostMap {
            ram,
            reserved,
            numa,
        }
    }

    /// Total RAM bytes.
    pub fn capacity(&self) -> u64 {
        self.ram.iter().map(|r| r.len).sum()
    }

    /// The NUMA node owning `hpa` (node 0 when the map has no nodes).
    pub fn node_of(&self, hpa: Hpa) -> Option<u32> {
        if self.numa.is_empty() {
            return Some(0);
        }
        self.numa
            .iter()
            .find(|n| n.ranges.iter().any(|r| r.contains(hpa)))
            .map(|n| n.id)
    }

    /// Checks the map: RAM ranges valid (see [`crate::ExtentAllocator::with_ranges`]), reserved
    /// ranges aligned, inside RAM and not overlapping each other.
    pub fn validate(&self) -> Result<(), AllocError> {
        let a = crate::ExtentAllocator::with_ranges(&self.ram)?;
        let mut a = a;
        for r in &self.reserved {
            a.alloc_at(r.ext).map_err(|_| AllocError::BadRange {
                ext: r.ext,
                reason: "reserved range is not inside RAM, unaligned or overlaps another reserved range",
            })?;
        }
        Ok(())
    }

    /// Bytes reserved.
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved.iter().map(|r| r.ext.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const G: u64 = 1 << 30;

    #[test]
    fn pc_map_shape() {
        let m = HostMap::pc(16 * G, 2);
        assert_eq!(m.capacity(), 16 * G);
        m.validate().unwrap();
        assert_eq!(m.ram[1], Extent::new(4 * G, 13 * G));
        assert_eq!(m.numa.len(), 2);
        // 8 GiB per node: node 0 = [0,3G) + [4G,9G).
        assert_eq!(
            m.numa[0].ranges,
            vec![Extent::new(0, 3 * G), Extent::new(4 * G, 5 * G)]
        );
        assert_eq!(m.node_of(Hpa(9 * G)), Some(1));
        assert_eq!(m.node_of(Hpa(3 * G + 5)), None); // the PCI hole
    }

    #[test]
    fn bad_reserved_rejected() {
        let mut m = HostMap::flat(G);
        m.reserved.push(Reserved {
            ext: Extent::new(G - 4096, 8192),
            label: "x".into(),
        });
        assert!(m.validate().is_err());
    }
}
