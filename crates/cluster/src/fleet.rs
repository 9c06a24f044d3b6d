//! Cluster model: host specifications and heterogeneous fleets, parsed from
//! `20000x192GiB/24c` (several groups comma-separated, an optional `/8GiBr` hypervisor reserve).

use compromis_types::ByteSize;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Allocation granule of the scheduler: VM sizes are rounded up to, and host capacities down to,
/// 2 MiB (one x86-64 large page), so every segment can be mapped with 2 MiB pages.
pub const VM_GRANULE: u64 = 2 << 20;

/// Rounds a VM size up to the granule (at least one granule).
pub fn round_vm(bytes: u64) -> u64 {
    bytes.div_ceil(VM_GRANULE).max(1).saturating_mul(VM_GRANULE)
}

/// One kind of host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// Installed memory in bytes.
    pub mem_bytes: u64,
    /// Physical cores offered to VMs (a VM's vCPUs are never oversubscribed).
    pub cores: u32,
    /// Memory kept by the hypervisor, not offered to VMs.
    pub reserved_bytes: u64,
}

impl HostSpec {
    /// Memory offered to VMs: installed minus reserved, rounded down to the granule.
    pub fn vm_capacity(&self) -> u64 {
        self.mem_bytes.saturating_sub(self.reserved_bytes) / VM_GRANULE * VM_GRANULE
    }
}

/// A fleet: groups of identical hosts, numbered in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// `(count, spec)` groups.
    pub groups: Vec<(u32, HostSpec)>,
}

/// A fleet description that cannot be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FleetError {
    /// The text does not follow `COUNTxMEM/CORESc[/RESERVEDr]`.
    #[error(
        "bad host group '{group}': {reason} (expected COUNTxMEM/CORESc[/RESERVEDr], e.g. 20000x192GiB/24c or 10x512GiB/64c/8GiBr)"
    )]
    Syntax {
        /// The offending group.
        group: String,
        /// What is wrong.
        reason: String,
    },
    /// No host at all.
    #[error("the fleet has no host")]
    Empty,
}

impl Fleet {
    /// A fleet of `count` identical hosts.
    pub fn uniform(count: u32, spec: HostSpec) -> Fleet {
        Fleet {
            groups: vec![(count, spec)],
        }
    }

    /// Every host's spec, in host-id order.
    pub fn hosts(&self) -> impl Iterator<Item = HostSpec> + '_ {
        self.groups
            .iter()
            .flat_map(|&(n, s)| std::iter::repeat_n(s, n as usize))
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.0 as usize).sum()
    }

    /// True when the fleet has no host.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Largest VM capacity of any host.
    pub fn max_vm_capacity(&self) -> u64 {
        self.groups
            .iter()
            .map(|g| g.1.vm_capacity())
            .max()
            .unwrap_or(0)
    }

    /// Total memory offered to VMs.
    pub fn total_vm_capacity(&self) -> u64 {
        self.groups
            .iter()
            .map(|g| u64::from(g.0) * g.1.vm_capacity())
            .sum()
    }
}

impl FromStr for Fleet {
    type Err = FleetError;
    fn from_str(s: &str) -> Result<Fleet, FleetError> {
        let mut groups = Vec::new();
        for g in s.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let err = |reason: &str| FleetError::Syntax {
                group: g.to_owned(),
                reason: reason.to_owned(),
            };
            let (count, rest) = g
                .split_once(['x', 'X'])
                .ok_or_else(|| err("missing 'x' between count and memory"))?;
            let count: u32 = count
                .trim()
                .parse()
                .map_err(|_| err("the count is not a whole number"))?;
            let mut parts = rest.split('/');
            let mem: ByteSize = parts
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .map_err(|_| err("bad memory size"))?;
            let cores = parts.next().ok_or_else(|| err("missing '/CORESc'"))?.trim();
            let cores: u32 = cores
                .strip_suffix(['c', 'C'])
                .ok_or_else(|| err("cores must end with 'c'"))?
                .parse()
                .map_err(|_| err("bad core count"))?;
            let reserved = match parts.next() {
                None => 0,
                Some(r) => r
                    .trim()
                    .strip_suffix(['r', 'R'])
                    .ok_or_else(|| err("the reserve must end with 'r'"))?
                    .parse::<ByteSize>()
                    .map_err(|_| err("bad reserved size"))?
                    .bytes(),
            };
            if parts.next().is_some() {
                return Err(err("too many '/' fields"));
            }
            let spec = HostSpec {
                mem_bytes: mem.bytes(),
                cores,
                reserved_bytes: reserved,
            };
            if spec.vm_capacity() == 0 {
                return Err(err("no memory left for VMs after the reserve"));
            }
            if count > 0 {
                groups.push((count, spec));
            }
        }
        let f = Fleet { groups };
        if f.is_empty() {
            return Err(FleetError::Empty);
        }
        if f.len() > MAX_HOSTS {
            return Err(FleetError::Syntax {
                group: s.to_owned(),
                reason: format!(
                    "{} hosts is more than the {MAX_HOSTS} accepted (each host's memory map is \
                     kept in memory)",
                    f.len()
                ),
            });
        }
        Ok(f)
    }
}

impl fmt::Display for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (n, s)) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}x{}/{}c", ByteSize(s.mem_bytes), s.cores)?;
            if s.reserved_bytes > 0 {
                write!(f, "/{}r", ByteSize(s.reserved_bytes))?;
            }
        }
        Ok(())
    }
}

/// Most hosts a fleet may have (checked before any host is built).
pub const MAX_HOSTS: usize = 1_000_000;

/// Fleet of `compromis place` with the synthetic generator and no `--hosts`: sized so the
/// default 20,000-VM synthetic trace fills its memory at the peak (about 2 % of the VMs are
/// refused for capacity); 128 cores per host keep memory, not cores, the binding resource.
pub const DEFAULT_SYNTHETIC_FLEET: &str = "100x192GiB/128c";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_groups() {
        let f: Fleet = "2x192GiB/24c, 1x512GiB/64c/8GiBr".parse().unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(
            f.groups[1].1,
            HostSpec {
                mem_bytes: 512 << 30,
                cores: 64,
                reserved_bytes: 8 << 30
            }
        );
        assert_eq!(f.max_vm_capacity(), 504 << 30);
        assert_eq!(
            f.hosts().map(|h| h.cores).collect::<Vec<_>>(),
            vec![24, 24, 64]
        );
        assert_eq!(
            "3x1GiB/2c".parse::<Fleet>().unwrap().to_string(),
            "3x1GiB/2c"
        );
    }

    #[test]
    fn bad_fleets() {
        for bad in [
            "",
            "x192GiB/24c",
            "2x192GiB",
            "2x192GiB/24",
            "2x1GiB/2c/2GiBr",
            "2x1Q/2c",
            "0x1GiB/1c",
        ] {
            assert!(bad.parse::<Fleet>().is_err(), "{bad}");
        }
        let e = "2x192GiB".parse::<Fleet>().unwrap_err().to_string();
        assert!(e.contains("2x192GiB") && e.contains("CORESc"), "{e}");
    }

    #[test]
    fn rounding() {
        assert_eq!(round_vm(0), VM_GRANULE);
        assert_eq!(round_vm(1), VM_GRANULE);
        assert_eq!(round_vm(768 << 20), 768 << 20);
        assert_eq!(round_vm((768 << 20) + 1), 770 << 20);
    }
}
