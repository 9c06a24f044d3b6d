//! The VM an experiment runs in: provisioned by the memory manager (`compromis-hostmem`), then
//! turned into the functional backing (`compromis-vmem`) by one conversion, [`backing_of`].
//!
//! A fresh host and an aged host differ only in the host the memory manager provisions from: the
//! fresh host has free memory from [`FRESH_HOST_BASE`] on (the VM gets one extent there); the aged
//! host was fragmented by a seeded history of other VMs and provisions with the caller's
//! [`Fallback`].

use crate::ExperimentError;
use compromis_hostmem::{
    AllocError, Fallback, HostMap, HostMemory, Policy, Provisioned, Reserved, VmMemory,
};
use compromis_types::{Address, ByteSize, Extent, GuestLayout, Hpa, PageSize, VmId};
use compromis_vmem::{Backing, HV_PRIVATE_BASE, HvFrames, Run};
use serde::Serialize;
use std::sync::Arc;

/// Where the VM's memory comes from on the host.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum HostState {
    /// A host with free memory: the VM gets one extent at [`FRESH_HOST_BASE`].
    Fresh,
    /// An aged host: `host` bytes of RAM, filled to `fill` (0..1) by a seeded history of other
    /// VMs arriving and leaving, then our VM is provisioned with `fallback` if one extent is
    /// impossible.
    Aged {
        /// Host RAM in bytes.
        host: u64,
        /// Fraction of host memory used by other VMs.
        fill: f64,
        /// Seed of the history.
        seed: u64,
        /// What the memory manager does when one extent is impossible.
        fallback: Fallback,
    },
}

/// The VM to build.
#[derive(Clone, Debug, Serialize)]
pub struct VmSpec {
    /// Guest RAM.
    pub ram: ByteSize,
    /// Largest EPT leaf the host uses (host THP / hugetlbfs).
    pub host_page: PageSize,
    /// Host memory state.
    pub host: HostState,
}

/// What the hypervisor gave the VM.
#[derive(Clone, Debug, Serialize)]
pub struct VmInfo {
    /// Guest RAM in bytes.
    pub ram: u64,
    /// Guest RAM ranges `(start, len)` (two when the MMIO hole splits RAM).
    pub ram_ranges: Vec<(u64, u64)>,
    /// Host extents backing the VM.
    pub host_extents: usize,
    /// Segment register sets loaded on VM entry.
    pub segments: usize,
    /// RAM bytes covered by segments.
    pub segment_bytes: u64,
    /// EPT leaves of 4 KiB, 2 MiB, 1 GiB.
    pub ept_leaves: [u64; 3],
    /// How the memory manager provisioned the VM.
    pub provisioning: Provisioned,
    /// Host fragmentation (1 - largest free / free) just before the VM was provisioned.
    pub host_fragmentation: f64,
}

/// Where a fresh VM's host memory starts (above the hypervisor's own memory; 1 GiB aligned).
pub const FRESH_HOST_BASE: Hpa = Hpa(4 << 30);

/// The memory manager's host for `spec`, before our VM arrives, and its fallback.
fn host_for(spec: &VmSpec) -> (HostMemory, Fallback) {
    match spec.host {
        HostState::Fresh => {
            // RAM up to the end of the VM's one register set (its RAM plus, above 3.75 GiB, the
            // 256 MiB behind the MMIO hole); everything below FRESH_HOST_BASE is the hypervisor's.
            let end = FRESH_HOST_BASE.raw() + compromis_hostmem::one_set_span(spec.ram.bytes());
            let map = HostMap {
                reserved: vec![Reserved {
                    ext: Extent::new(0, FRESH_HOST_BASE.raw()),
                    label: "hypervisor".to_owned(),
                }],
                ..HostMap::flat(end)
            };
            let host = HostMemory::with_map(map, Policy::FirstFit)
                .unwrap_or_else(|_| HostMemory::new(end, Policy::FirstFit));
            (host, Fallback::Refuse)
        }
        HostState::Aged {
            host,
            fill,
            seed,
            fallback,
        } => {
            let mut h = HostMemory::new(host, Policy::FirstFit);
            h.age(seed, fill);
            (h, fallback)
        }
    }
}

/// Builds the VM: the memory manager provisions it, [`backing_of`] turns that into the backing.
pub fn build_vm(spec: &VmSpec) -> Result<(Arc<Backing>, VmInfo), ExperimentError> {
    if spec.ram.bytes() == 0 || !spec.ram.bytes().is_multiple_of(spec.host_page.bytes()) {
        return Err(ExperimentError::VmMemory {
            ram: spec.ram,
            align: spec.host_page,
        });
    }
    let (mut host, fallback) = host_for(spec);
    let host_fragmentation = match spec.host {
        HostState::Fresh => 0.0,
        HostState::Aged { .. } => host.fragmentation(),
    };
    let m = host
        .provision(VmId(0), spec.ram.bytes(), spec.host_page, fallback)
        .map_err(|source| ExperimentError::Provision {
            ram: spec.ram,
            fallback,
            source,
        })?;
    let backing = backing_of(&m, spec.host_page)?;
    let info = VmInfo {
        ram: spec.ram.bytes(),
        ram_ranges: backing
            .layout()
            .ram
            .iter()
            .map(|r| (r.start.0, r.len))
            .collect(),
        host_extents: m.host_extents.len(),
        segments: backing.segments().len(),
        segment_bytes: backing.segment_bytes(),
        ept_leaves: backing.ept_leaves(),
        provisioning: m.outcome(),
        host_fragmentation,
    };
    Ok((Arc::new(backing), info))
}

/// The one conversion from what the memory manager provisioned to the simulator's functional
/// backing: segments become register sets (and runs), EPT pages become runs (adjacent contiguous
/// pages merged). Page-table pages of the EPT come from the hypervisor's private frames.
pub fn backing_of(m: &VmMemory, host_page: PageSize) -> Result<Backing, ExperimentError> {
    // Runs map RAM only: a register set spanning the MMIO hole gives its two RAM parts (the
    // register-set rule, `compromis_hostmem::segments_for`).
    let mut runs: Vec<Run> = m
        .ram_pieces()
        .iter()
        .map(|s| Run {
            gpa: s.base,
            hpa: s.host_base,
            len: s.len(),
        })
        .collect();
    let mut pages = m.pages.clone();
    pages.sort_by_key(|p| p.gpa);
    for p in pages {
        match runs.last_mut() {
            Some(r) if r.gpa.0 + r.len == p.gpa.0 && r.hpa.0 + r.len == p.hpa.0 => {
                r.len += p.size.bytes()
            }
            _ => runs.push(Run {
                gpa: p.gpa,
                hpa: p.hpa,
                len: p.size.bytes(),
            }),
        }
    }
    let layout = GuestLayout::for_ram(m.layout.ram_bytes());
    // The EPT is built only if a scheme walks it (native and the baseline on a fresh host never
    // do): `Backing::lazy`.
    Ok(Backing::lazy(
        layout,
        runs,
        m.segments.clone(),
        host_page,
        HvFrames::new(HV_PRIVATE_BASE),
    )?)
}

/// Whether an experiment error is the memory manager refusing the VM (as opposed to a bad input
/// or a simulation failure).
pub fn is_refused(e: &ExperimentError) -> Option<&AllocError> {
    match e {
        ExperimentError::Provision { source, .. } => Some(source),
        _ => None,
    }
}
