//! VM memory provisioning: the guest-physical layout, the segment registers each vCPU gets, and the
//! fallbacks when one host extent is impossible (k segments, an EPT mapping, or a refusal).
//!
//! Guest-physical layout (as Xen HVM): RAM below the MMIO hole is `[0, 0xF000_0000)`; the hole runs
//! to 4 GiB; RAM beyond 3.75 GiB continues at `[4 GiB, 4 GiB + rest)`. Team decision: ONE host
//! extent of the VM's RAM size backs both guest RAM ranges (the hole is not backed, no host memory
//! is wasted); the hardware gets one register set (BASE, LIMIT, host base; OFFSET = host - BASE)
//! per (guest RAM range x host extent) piece. gPAs outside every segment (MMIO, ROM) take the
//! fallback path of the simulator (an EPT walk or an exit for device emulation).

use crate::extent::{AllocError, aligned_usable};
use crate::host::{HostMemory, VmExtents, VmMapping, VmRecord};
use compromis_types::{
    Address, Extent, Gpa, GuestLayout, HIGH_RAM_START, Hpa, MMIO_HOLE_START, PageSize, Segment,
    VmId,
};
use serde::Serialize;
use smallvec::smallvec;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// One EPT leaf: the `size` page at `gpa` maps to `hpa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PageMapping {
    /// Guest-physical page (aligned to `size`).
    pub gpa: Gpa,
    /// Host-physical frame (aligned to `size`).
    pub hpa: Hpa,
    /// Page size.
    pub size: PageSize,
}

/// The most segment register sets a VM may be given (`segments:K` accepts `1..=MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 1024;

/// What the hypervisor does when a VM cannot get one host extent: the one provisioning contract
/// of the memory manager, used by `hv`, `sim`, `place` and the reproduction report.
///
/// Spelled on command lines and in files as `refuse`, `segments:K`, `ept` or `compact`
/// ([`FromStr`]/[`Display`] round-trip; `reject` is accepted for `refuse`, `segments` alone
/// means `segments:8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum Fallback {
    /// Fail with the state unchanged.
    Refuse,
    /// A segment table of at most `k` register sets (counting the split at the MMIO hole).
    Segments(usize),
    /// EPT pages built from whatever free memory remains.
    Ept,
    /// Compact the host (plan, apply, check: the cost is the bytes moved), then give one extent;
    /// refuse if no plan frees one.
    Compact,
}

impl Fallback {
    /// Every spelling, for help texts.
    pub const SPELLINGS: &'static str = "refuse, segments:K (1 <= K <= 1024), ept, compact";
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::Refuse => f.write_str("refuse"),
            Fallback::Segments(k) => write!(f, "segments:{k}"),
            Fallback::Ept => f.write_str("ept"),
            Fallback::Compact => f.write_str("compact"),
        }
    }
}

impl From<Fallback> for String {
    fn from(f: Fallback) -> String {
        f.to_string()
    }
}

/// A fallback spelling that is not one of [`Fallback::SPELLINGS`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown fallback '{0}': valid values are {spellings}", spellings = Fallback::SPELLINGS)]
pub struct ParseFallbackError(pub String);

impl FromStr for Fallback {
    type Err = ParseFallbackError;
    fn from_str(s: &str) -> Result<Fallback, ParseFallbackError> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "refuse" | "reject" => Ok(Fallback::Refuse),
            "ept" => Ok(Fallback::Ept),
            "compact" => Ok(Fallback::Compact),
            "segments" => Ok(Fallback::Segments(8)),
            _ => t
                .strip_prefix("segments:")
                .and_then(|k| k.parse().ok())
                .filter(|k| (1..=MAX_SEGMENTS).contains(k))
                .map(Fallback::Segments)
                .ok_or_else(|| ParseFallbackError(s.to_owned())),
        }
    }
}

/// How a VM's memory ended up being mapped (what [`HostMemory::provision`] gave it).
///
/// Serialized as `{"kind": "one-extent", "segments": 1}` and so on; displayed as the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Provisioned {
    /// One host extent; `segments` register sets (1, or 2 when RAM spans the MMIO hole).
    OneExtent {
        /// Register sets.
        segments: usize,
    },
    /// Several host extents, `segments` register sets.
    MultiSegment {
        /// Host extents.
        extents: usize,
        /// Register sets.
        segments: usize,
    },
    /// EPT fallback, with the number of pages of each size.
    Ept {
        /// 4 KiB pages.
        pages_4k: u64,
        /// 2 MiB pages.
        pages_2m: u64,
        /// 1 GiB pages.
        pages_1g: u64,
    },
}

impl Provisioned {
    /// `one-extent`, `multi-segment` or `ept`.
    pub const fn name(&self) -> &'static str {
        match self {
            Provisioned::OneExtent { .. } => "one-extent",
            Provisioned::MultiSegment { .. } => "multi-segment",
            Provisioned::Ept { .. } => "ept",
        }
    }
}

impl fmt::Display for Provisioned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Result of provisioning: every guest RAM byte is covered by exactly one segment or one page
/// mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmMemory {
    /// The guest-physical layout.
    pub layout: GuestLayout,
    /// Register sets (empty for an EPT-backed VM).
    pub segments: Vec<Segment>,
    /// EPT mappings, in gPA order (empty for a segment-backed VM).
    pub pages: Vec<PageMapping>,
    /// The host extents backing the VM, in guest order.
    pub host_extents: Vec<Extent>,
}

impl VmMemory {
    /// Translates a gPA (segments first, then a binary search of the pages); `None` outside RAM.
    pub fn translate(&self, gpa: Gpa) -> Option<Hpa> {
        // The MMIO hole (and anything beyond RAM) traps before any segment is looked at.
        if !self.layout.is_ram(gpa) {
            return None;
        }
        if let Some(h) = self.segments.iter().find_map(|s| s.translate(gpa)) {
            return Some(h);
        }
        let i = self
            .pages
            .partition_point(|p| p.gpa <= gpa)
            .checked_sub(1)?;
        let p = self.pages[i];
        let off = gpa.raw() - p.gpa.raw();
        (off < p.size.bytes()).then(|| Hpa(p.hpa.raw() + off))
    }
    /// EPT leaves for this VM with pages of at most `host_page`: its own pages when EPT-backed,
    /// else its segments split into pages (what an EPT scheme would map for the same placement).
    pub fn ept_pages(&self, host_page: PageSize) -> Vec<PageMapping> {
        if self.pages.is_empty() {
            pages_for(&self.ram_pieces(), host_page)
        } else {
            self.pages.clone()
        }
    }

    /// The register sets cut to guest RAM (a set spanning the MMIO hole becomes its two RAM
    /// parts): the translations an EPT or a backing map for them.
    pub fn ram_pieces(&self) -> Vec<Segment> {
        let mut out = Vec::new();
        for s in &self.segments {
            for r in &self.layout.ram {
                let (b, l) = (s.base.max(r.start), s.limit.min(r.end()));
                if b < l {
                    out.push(Segment {
                        base: b,
                        limit: l,
                        host_base: Hpa(s.host_base.raw() + (b.raw() - s.base.raw())),
                    });
                }
            }
        }
        out
    }

    /// What the VM got.
    pub fn outcome(&self) -> Provisioned {
        if self.pages.is_empty() {
            // One set spanning the hole is one allocation even though the 256 MiB behind the
            // hole went back to the free memory.
            if self.host_extents.len() <= 1 || self.segments.len() == 1 {
                Provisioned::OneExtent {
                    segments: self.segments.len(),
                }
            } else {
                Provisioned::MultiSegment {
                    extents: self.host_extents.len(),
                    segments: self.segments.len(),
                }
            }
        } else {
            let count = |s: PageSize| self.pages.iter().filter(|p| p.size == s).count() as u64;
            Provisioned::Ept {
                pages_4k: count(PageSize::Size4K),
                pages_2m: count(PageSize::Size2M),
                pages_1g: count(PageSize::Size1G),
            }
        }
    }
}

/// Bytes of guest RAM below the MMIO hole.
pub const LOW_RAM: u64 = MMIO_HOLE_START.0;
/// Bytes of the MMIO hole (from [`MMIO_HOLE_START`] to [`HIGH_RAM_START`]).
pub const HOLE_BYTES: u64 = HIGH_RAM_START.0 - MMIO_HOLE_START.0;

/// Host-physical bytes one register set needs for `ram` bytes of guest RAM: the RAM, plus the
/// MMIO hole when RAM straddles it (one OFFSET maps both RAM ranges only if the host range keeps
/// the hole's distance between them).
pub const fn one_set_span(ram: u64) -> u64 {
    if ram > LOW_RAM { ram + HOLE_BYTES } else { ram }
}

/// Cuts the guest RAM ranges over the host extents (both in order): one piece per (RAM range x
/// extent) intersection, each a translation `[base, limit) -> host_base`, never crossing the hole.
pub fn ram_pieces(layout: &GuestLayout, extents: &[Extent]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut ext = extents.iter().copied();
    let mut cur: Option<Extent> = ext.next();
    for r in &layout.ram {
        let mut g = r.start.raw();
        let end = r.end().raw();
        while g < end {
            let Some(e) = cur.as_mut() else { return out };
            let take = e.len.min(end - g);
            out.push(Segment {
                base: Gpa(g),
                limit: Gpa(g + take),
                host_base: e.start,
            });
            g += take;
            e.start = Hpa(e.start.raw() + take);
            e.len -= take;
            if e.len == 0 {
                cur = ext.next();
            }
        }
    }
    out
}

/// **The register-set rule** (one rule for `sim`, `hv` and `place`): the [`ram_pieces`] of the
/// VM, where consecutive pieces with the same OFFSET share one register set. A set may therefore
/// span the MMIO hole: this happens when the host range behind the hole is the hole's own
/// distance (the memory manager gives a VM above 3.75 GiB one such range when it can, see
/// [`HostMemory::create_one_set`], and leaves the 256 MiB behind the hole free for others).
/// Hole addresses never reach the segment: the MMU checks the hole first and they trap as MMIO
/// (device emulation), as they fault in an EPT that does not map the hole.
///
/// A VM in one host extent of exactly its RAM size still needs two sets when it straddles the
/// hole (the second OFFSET is 256 MiB lower).
pub fn segments_for(layout: &GuestLayout, extents: &[Extent]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for p in ram_pieces(layout, extents) {
        match out.last_mut() {
            Some(l) if l.offset() == p.offset() && l.limit <= p.base => l.limit = p.limit,
            _ => out.push(p),
        }
    }
    out
}

/// Number of register sets [`segments_for`] gives a VM of `ram` bytes in `extents`, without
/// allocating (the placement engine counts them for every VM).
pub fn register_sets(ram: u64, extents: &[Extent]) -> usize {
    let low = ram.min(LOW_RAM);
    let ranges = [(0, low), (HIGH_RAM_START.0, ram - low)];
    let (mut sets, mut last_offset) = (0usize, None::<u64>);
    let mut ext = extents.iter().copied();
    let mut cur = ext.next();
    for (start, len) in ranges {
        let (mut g, end) = (start, start + len);
        while g < end {
            let Some(e) = cur.as_mut() else { return sets };
            let take = e.len.min(end - g);
            let off = e.start.raw().wrapping_sub(g);
            if last_offset != Some(off) {
                sets += 1;
                last_offset = Some(off);
            }
            g += take;
            e.start = Hpa(e.start.raw() + take);
            e.len -= take;
            if e.len == 0 {
                cur = ext.next();
            }
        }
    }
    sets
}

/// Splits segments into EPT pages: at each step the largest page (at most `host_page`) that the
/// alignment of both gPA and hPA and the remaining length allow.
pub fn pages_for(segments: &[Segment], host_page: PageSize) -> Vec<PageMapping> {
    let mut out = Vec::new();
    for s in segments {
        let (mut g, mut h, mut left) = (s.base.raw(), s.host_base.raw(), s.len());
        while left > 0 {
            let size = PageSize::ALL
                .into_iter()
                .rev()
                .filter(|&p| p <= host_page)
                .find(|&p| g & p.mask() == 0 && h & p.mask() == 0 && left >= p.bytes())
                .unwrap_or(PageSize::Size4K);
            out.push(PageMapping {
                gpa: Gpa(g),
                hpa: Hpa(h),
                size,
            });
            let b = size.bytes().min(left);
            g += b;
            h += b;
            left -= b;
        }
    }
    out
}

impl HostMemory {
    /// Gives the VM `ram` bytes in one allocation that one register set covers: for RAM that
    /// straddles the MMIO hole, a host range of [`one_set_span`] bytes whose 256 MiB behind the
    /// hole go back to the free memory (two extents, one OFFSET); when no range that large is
    /// free, one extent of `ram` bytes (two register sets); else `NoExtent` with the state
    /// unchanged. Smaller VMs get one extent as [`HostMemory::create`] gives it.
    pub fn create_one_set(
        &mut self,
        vm: VmId,
        ram: u64,
        align: PageSize,
    ) -> Result<&[Extent], AllocError> {
        let span = one_set_span(ram);
        if span == ram || self.vms.contains_key(&vm) || !ram.is_multiple_of(align.bytes()) {
            return self.create(vm, ram, align, 1);
        }
        let len = span.next_multiple_of(align.bytes());
        let Some(e) = (len <= self.capacity())
            .then(|| self.alloc.find(len, align, self.policy))
            .flatten()
        else {
            return self.create(vm, ram, align, 1);
        };
        let base = e.start.raw();
        let high = ram - LOW_RAM;
        let extents: VmExtents = smallvec![
            Extent::new(base, LOW_RAM),
            Extent::new(base + HIGH_RAM_START.0, high),
        ];
        self.claim_all(&extents)?;
        self.insert_vm(
            vm,
            VmRecord {
                extents,
                // 3.75 GiB is a multiple of 2 MiB, not of 1 GiB.
                align: align.min(PageSize::Size2M),
                backing: VmMapping::Segments,
                max_extents: 2,
            },
        );
        self.extents(vm).ok_or(AllocError::UnknownVm(vm))
    }

    /// Provisions a VM of `ram` bytes (a multiple of `host_page`): one host extent aligned to
    /// `host_page` if possible; else the `fallback`. On error the state is unchanged.
    pub fn provision(
        &mut self,
        vm: VmId,
        ram: u64,
        host_page: PageSize,
        fallback: Fallback,
    ) -> Result<VmMemory, AllocError> {
        match self.create_one_set(vm, ram, host_page) {
            Ok(_) => {}
            Err(AllocError::NoExtent { len, largest }) => match fallback {
                Fallback::Refuse => return Err(AllocError::NoExtent { len, largest }),
                Fallback::Segments(k) => self.provision_segments(vm, ram, host_page, k)?,
                Fallback::Ept => self.ept_backing(vm, ram, host_page)?,
                Fallback::Compact => self.compact_then_create(vm, ram, host_page, largest)?,
            },
            Err(e) => return Err(e),
        }
        self.memory(vm).ok_or(AllocError::UnknownVm(vm))
    }

    /// Plans a compaction that frees one `ram`-byte extent, applies it, checks the host and
    /// creates the VM in the freed extent. `NoExtent` (state unchanged) when no plan exists.
    fn compact_then_create(
        &mut self,
        vm: VmId,
        ram: u64,
        host_page: PageSize,
        largest: u64,
    ) -> Result<(), AllocError> {
        let plan = self
            .plan_compaction(ram, host_page)
            .ok_or(AllocError::NoExtent { len: ram, largest })?;
        let before = self.clone();
        self.apply(&plan)?;
        if let Err(e) = self.create(vm, ram, host_page, 1) {
            *self = before;
            return Err(e);
        }
        Ok(())
    }

    /// Gives the VM `ram` bytes in extents that at most `k` register sets cover (the
    /// [`segments_for`] rule; largest free extents first), without trying one extent first; on
    /// error the state is unchanged.
    pub fn create_in_sets(
        &mut self,
        vm: VmId,
        ram: u64,
        host_page: PageSize,
        k: usize,
    ) -> Result<&[Extent], AllocError> {
        self.validate_request_pub(vm, ram, host_page)?;
        self.provision_segments(vm, ram, host_page, k)?;
        self.extents(vm).ok_or(AllocError::UnknownVm(vm))
    }

    fn provision_segments(
        &mut self,
        vm: VmId,
        ram: u64,
        host_page: PageSize,
        k: usize,
    ) -> Result<(), AllocError> {
        if k == 0 {
            return Err(AllocError::ZeroExtents);
        }
        let layout = GuestLayout::for_ram(ram);
        let mut last_err = AllocError::TooFragmented {
            len: ram,
            max_extents: k,
            coverable: 0,
        };
        // k extents may need k + 1 register sets when no extent boundary falls on the hole.
        for extents in (k.saturating_sub(1).max(1)..=k).rev() {
            match self.plan_pieces(ram, host_page, extents) {
                Ok(pieces) if segments_for(&layout, &pieces).len() <= k => {
                    self.claim_all(&pieces)?;
                    self.insert_vm(
                        vm,
                        VmRecord {
                            extents: pieces.into(),
                            align: host_page,
                            backing: VmMapping::Segments,
                            max_extents: k,
                        },
                    );
                    return Ok(());
                }
                Ok(_) => {}
                Err(coverable) => {
                    last_err = AllocError::TooFragmented {
                        len: ram,
                        max_extents: k,
                        coverable,
                    }
                }
            }
        }
        Err(last_err)
    }

    /// Builds an EPT-backed VM directly (without trying one extent first), as a paging-only
    /// hypervisor would: host_page-aligned chunks of the largest free extents first, then whatever
    /// is left at 4 KiB granularity. On error the state is unchanged.
    pub fn provision_ept(
        &mut self,
        vm: VmId,
        ram: u64,
        host_page: PageSize,
    ) -> Result<VmMemory, AllocError> {
        if self.vms.contains_key(&vm) {
            return Err(AllocError::VmExists(vm));
        }
        if ram == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !ram.is_multiple_of(host_page.bytes()) {
            return Err(AllocError::Unaligned {
                what: "length",
                value: ram,
                align: host_page.bytes(),
            });
        }
        self.ept_backing(vm, ram, host_page)?;
        self.memory(vm).ok_or(AllocError::UnknownVm(vm))
    }

    fn ept_backing(&mut self, vm: VmId, ram: u64, host_page: PageSize) -> Result<(), AllocError> {
        if ram > self.free_bytes() {
            return Err(AllocError::OutOfMemory {
                len: ram,
                free: self.free_bytes(),
            });
        }
        let mut sim = self.alloc.clone();
        let mut pieces = Vec::new();
        // Pass 1: host_page-aligned chunks (lengths multiples of host_page) keep large pages possible.
        let mut left = ram;
        let big: Vec<Extent> = sim.free_extents_by_len().collect();
        for f in big {
            let want = left & !host_page.mask();
            if want == 0 {
                break;
            }
            let take = aligned_usable(f.start.raw(), f.len, host_page).min(want);
            if take == 0 {
                continue;
            }
            let start = f.start.align_up(host_page).unwrap_or(f.start);
            let p = Extent { start, len: take };
            sim.alloc_at(p)?;
            pieces.push(p);
            left -= take;
        }
        // Pass 2: whatever is left, 4 KiB granular.
        while left > 0 {
            let Some(f) = sim.free_extents_by_len().next() else {
                break;
            };
            let p = Extent {
                start: f.start,
                len: f.len.min(left),
            };
            sim.alloc_at(p)?;
            pieces.push(p);
            left -= p.len;
        }
        if left > 0 {
            return Err(AllocError::OutOfMemory {
                len: ram,
                free: self.free_bytes(),
            });
        }
        self.alloc = sim;
        self.insert_vm(
            vm,
            VmRecord {
                extents: pieces.into(),
                align: PageSize::Size4K,
                backing: VmMapping::Ept { host_page },
                max_extents: usize::MAX,
            },
        );
        Ok(())
    }

    /// The VM's guest layout and its segments (segment-backed) or page mappings (EPT-backed).
    pub fn memory(&self, vm: VmId) -> Option<VmMemory> {
        let rec = self.vm(vm)?;
        let layout = GuestLayout::for_ram(rec.bytes());
        let (segments, pages) = match rec.backing {
            VmMapping::Segments => (segments_for(&layout, &rec.extents), Vec::new()),
            VmMapping::Ept { host_page } => (
                Vec::new(),
                pages_for(&ram_pieces(&layout, &rec.extents), host_page),
            ),
        };
        Some(VmMemory {
            layout,
            segments,
            pages,
            host_extents: rec.extents.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::Policy;
    use compromis_types::GpaRange;
    const G: u64 = 1 << 30;

    #[test]
    fn one_register_set_spans_the_hole() {
        let mut h = HostMemory::new(16 * G, Policy::FirstFit);
        let m = h
            .provision(VmId(1), 8 * G, PageSize::Size2M, Fallback::Refuse)
            .unwrap();
        assert_eq!(m.outcome(), Provisioned::OneExtent { segments: 1 });
        let s = m.segments[0];
        assert_eq!((s.base, s.limit), (Gpa(0), Gpa(4 * G + (8 * G - LOW_RAM))));
        // The 256 MiB behind the hole stay free; RAM bytes are exactly 8 GiB.
        assert_eq!(m.host_extents.iter().map(|e| e.len).sum::<u64>(), 8 * G);
        assert_eq!(h.free_bytes(), 8 * G);
        assert!(
            h.allocator()
                .free_extents()
                .any(|e| e == Extent::new(s.host_base.raw() + LOW_RAM, HOLE_BYTES))
        );
        // Hole addresses trap (no translation); RAM on both sides takes the one OFFSET.
        assert_eq!(m.translate(Gpa(LOW_RAM)), None);
        assert_eq!(
            m.translate(Gpa(4 * G)),
            Some(Hpa(s.host_base.raw() + 4 * G))
        );
        assert_eq!(
            m.translate(Gpa(LOW_RAM - 4096)),
            Some(Hpa(s.host_base.raw() + LOW_RAM - 4096))
        );
        // The EPT view maps RAM only.
        let pages = m.ept_pages(PageSize::Size4K);
        assert_eq!(pages.len() as u64 * 4096, 8 * G);
        assert!(pages.iter().all(|p| m.layout.is_ram(p.gpa)));
        h.check().unwrap();
        assert_eq!(h.destroy(VmId(1)), Ok(8 * G));
        assert_eq!(h.largest_free(), 16 * G);
        // Without room for the 256 MiB: one extent of RAM size, two register sets.
        let mut t = HostMemory::new(8 * G, Policy::FirstFit);
        let m = t
            .provision(VmId(1), 8 * G, PageSize::Size2M, Fallback::Refuse)
            .unwrap();
        assert_eq!(m.outcome(), Provisioned::OneExtent { segments: 2 });
        // 1 GiB host pages: the range starts 1 GiB-aligned; RAM above the hole is 1 GiB-aligned.
        let mut g = HostMemory::new(32 * G, Policy::FirstFit);
        let m = g
            .provision(VmId(1), 8 * G, PageSize::Size1G, Fallback::Refuse)
            .unwrap();
        assert_eq!(m.segments.len(), 1);
        assert!(
            m.ept_pages(PageSize::Size1G)
                .iter()
                .any(|p| p.size == PageSize::Size1G)
        );
        g.check().unwrap();
    }

    #[test]
    fn register_set_count_equals_the_rule() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..2000 {
            let ram = rng.gen_range(1..=12u64) * (G / 2);
            let n = rng.gen_range(1..=4usize);
            let mut left = ram;
            let mut exts = Vec::new();
            let mut at = 0u64;
            for i in 0..n {
                let len = if i + 1 == n {
                    left
                } else {
                    (rng.gen_range(0..=left) >> 21) << 21
                };
                if len == 0 {
                    continue;
                }
                at += rng.gen_range(0..3u64) * HOLE_BYTES;
                exts.push(Extent::new(at, len));
                at += len;
                left -= len;
            }
            let layout = GuestLayout::for_ram(ram);
            let rule = segments_for(&layout, &exts);
            assert_eq!(register_sets(ram, &exts), rule.len(), "{ram} {exts:?}");
            let bytes: u64 = ram_pieces(&layout, &exts).iter().map(Segment::len).sum();
            assert_eq!(bytes, ram);
        }
    }

    #[test]
    fn layout_around_the_mmio_hole() {
        assert_eq!(
            GuestLayout::for_ram(3 * G).ram,
            vec![GpaRange {
                start: Gpa(0),
                len: 3 * G
            }]
        );
        assert_eq!(
            GuestLayout::for_ram(0xF000_0000).ram,
            vec![GpaRange {
                start: Gpa(0),
                len: 0xF000_0000
            }]
        );
        let l = GuestLayout::for_ram(8 * G);
        // 3.75 GiB below the hole, 8 - 3.75 = 4.25 GiB from 4 GiB to 8.25 GiB.
        assert_eq!(
            l.ram,
            vec![
                GpaRange {
                    start: Gpa(0),
                    len: 0xF000_0000
                },
                GpaRange {
                    start: Gpa(4 * G),
                    len: 0x1_1000_0000
                }
            ]
        );
        assert_eq!(l.ram_bytes(), 8 * G);
        assert!(!l.is_ram(Gpa(0xF000_0000)));
        assert!(l.is_ram(Gpa(0x2_0FFF_FFFF)));
        assert!(!l.is_ram(Gpa(0x2_1000_0000)));
        assert!(GuestLayout::for_ram(0).ram.is_empty());
    }

    #[test]
    fn one_extent_vms_get_one_or_two_register_sets() {
        // 11 GiB: after 3 GiB, no room for the 8.25 GiB one set would need.
        let mut h = HostMemory::new(11 * G, Policy::FirstFit);
        let m = h
            .provision(VmId(1), 3 * G, PageSize::Size2M, Fallback::Refuse)
            .unwrap();
        assert_eq!(m.host_extents, vec![Extent::new(0, 3 * G)]);
        assert_eq!(
            m.segments,
            vec![Segment {
                base: Gpa(0),
                limit: Gpa(3 * G),
                host_base: Hpa(0)
            }]
        );
        assert_eq!(m.outcome(), Provisioned::OneExtent { segments: 1 });
        let m = h
            .provision(VmId(2), 8 * G, PageSize::Size2M, Fallback::Refuse)
            .unwrap();
        assert_eq!(m.host_extents, vec![Extent::new(3 * G, 8 * G)]);
        let low = Segment {
            base: Gpa(0),
            limit: Gpa(0xF000_0000),
            host_base: Hpa(3 * G),
        };
        let high = Segment {
            base: Gpa(4 * G),
            limit: Gpa(4 * G + 0x1_1000_0000),
            host_base: Hpa(3 * G + 0xF000_0000),
        };
        assert_eq!(m.segments, vec![low, high]);
        // OFFSET of the high segment: host 0x1_9F00_0000 - base 0x1_0000_0000 = 0xAF00_0000... computed by hand:
        // 3G + 0xF000_0000 = 0xC000_0000 + 0xF000_0000 = 0x1_B000_0000; minus 4G = 0xB000_0000.
        assert_eq!(high.offset(), 0xB000_0000);
        assert_eq!(m.translate(Gpa(4 * G)), Some(Hpa(0x1_B000_0000)));
        assert_eq!(m.translate(Gpa(0xF000_0000)), None);
        assert_eq!(m.outcome(), Provisioned::OneExtent { segments: 2 });
    }

    #[test]
    fn ept_on_a_fresh_host_and_ept_pages_of_a_segment_vm() {
        let mut h = HostMemory::new(16 * G, Policy::FirstFit);
        let m = h.provision_ept(VmId(1), 4 * G, PageSize::Size1G).unwrap();
        // Takes [0,4G): guest [0,3.75G) -> 3 x 1G + 384 x 2M; guest [4G,4.25G) -> hPA 3.75G, 128 x 2M.
        assert_eq!(m.host_extents, vec![Extent::new(0, 4 * G)]);
        assert_eq!(
            m.outcome(),
            Provisioned::Ept {
                pages_4k: 0,
                pages_2m: 512,
                pages_1g: 3
            }
        );
        let s = h
            .provision(VmId(2), 2 * G, PageSize::Size2M, Fallback::Refuse)
            .unwrap();
        assert_eq!(s.ept_pages(PageSize::Size2M).len(), 1024);
        assert_eq!(m.ept_pages(PageSize::Size4K), m.pages);
        let before = h.clone();
        assert_eq!(
            h.provision_ept(VmId(1), G, PageSize::Size4K),
            Err(AllocError::VmExists(VmId(1)))
        );
        assert!(matches!(
            h.provision_ept(VmId(3), G + 4096, PageSize::Size2M),
            Err(AllocError::Unaligned { .. })
        ));
        assert!(matches!(
            h.provision_ept(VmId(3), 32 * G, PageSize::Size2M),
            Err(AllocError::OutOfMemory { .. })
        ));
        assert_eq!(h, before);
    }

    fn fragmented() -> HostMemory {
        // 16 GiB in 1 GiB VMs; destroy every other one: 8 free 1 GiB holes.
        let mut h = HostMemory::new(16 * G, Policy::FirstFit);
        for i in 0..16 {
            h.create(VmId(i), G, PageSize::Size2M, 1).unwrap();
        }
        for i in (0..16).step_by(2) {
            h.destroy(VmId(i)).unwrap();
        }
        h
    }

    #[test]
    fn fallbacks() {
        let mut h = fragmented();
        let before = h.clone();
        assert!(matches!(
            h.provision(VmId(100), 4 * G, PageSize::Size2M, Fallback::Refuse),
            Err(AllocError::NoExtent { .. })
        ));
        assert_eq!(h, before);
        // 3 GiB in at most 2 register sets: impossible with 1 GiB holes.
        assert!(
            h.provision(VmId(100), 3 * G, PageSize::Size2M, Fallback::Segments(2))
                .is_err()
        );
        assert_eq!(h, before);
        // 3 GiB (below the hole) in 3 extents = 3 register sets.
        let m = h
            .provision(VmId(100), 3 * G, PageSize::Size2M, Fallback::Segments(3))
            .unwrap();
        assert_eq!(
            m.outcome(),
            Provisioned::MultiSegment {
                extents: 3,
                segments: 3
            }
        );
        // VM 100 took the holes at 14G, 12G, 10G (equal lengths: highest address first). EPT 4 GiB
        // takes 8G, 6G, 4G, 2G: guest [0,3G) -> three 1 GiB pages; [3G,3.75G) -> hPA 2G, too short
        // for 1 GiB: 384 x 2 MiB; [4G,4.25G) -> hPA 2.75G: 128 x 2 MiB.
        let m = h
            .provision(VmId(101), 4 * G, PageSize::Size1G, Fallback::Ept)
            .unwrap();
        assert_eq!(
            m.outcome(),
            Provisioned::Ept {
                pages_4k: 0,
                pages_2m: 384 + 128,
                pages_1g: 3
            }
        );
        h.check().unwrap();
        // Every guest RAM byte translates, pages are aligned.
        for p in &m.pages {
            assert!(p.gpa.is_aligned(p.size) && p.hpa.is_aligned(p.size));
        }
        assert_eq!(m.pages.iter().map(|p| p.size.bytes()).sum::<u64>(), 4 * G);
    }

    #[test]
    fn fallback_spellings_round_trip() {
        for f in [
            Fallback::Refuse,
            Fallback::Segments(1),
            Fallback::Segments(MAX_SEGMENTS),
            Fallback::Ept,
            Fallback::Compact,
        ] {
            assert_eq!(f.to_string().parse::<Fallback>(), Ok(f));
        }
        assert_eq!("reject".parse::<Fallback>(), Ok(Fallback::Refuse));
        assert_eq!("Segments".parse::<Fallback>(), Ok(Fallback::Segments(8)));
        for bad in ["segments:0", "segments:1025", "segments:x", "paging", ""] {
            let e = bad.parse::<Fallback>().unwrap_err().to_string();
            assert!(e.contains("refuse, segments:K"), "{e}");
        }
        assert_eq!(String::from(Fallback::Segments(3)), "segments:3");
        assert_eq!(
            Provisioned::OneExtent { segments: 2 }.to_string(),
            "one-extent"
        );
    }

    #[test]
    fn compact_fallback_moves_vms_then_gives_one_extent() {
        let mut h = fragmented();
        let before = h.clone();
        // 4 GiB: no hole is that large, but 8 GiB are free: compaction frees one extent.
        let m = h
            .provision(VmId(100), 4 * G, PageSize::Size2M, Fallback::Compact)
            .unwrap();
        assert_eq!(m.outcome(), Provisioned::OneExtent { segments: 2 });
        assert_eq!(m.host_extents.len(), 1);
        h.check().unwrap();
        // Every VM that was there is still there, with its size.
        for (id, r) in before.vms() {
            assert_eq!(h.vm(id).map(VmRecord::bytes), Some(r.bytes()));
        }
        // More than is free: refused, state unchanged.
        let mut full = h.clone();
        let snapshot = full.clone();
        assert!(matches!(
            full.provision(VmId(101), 8 * G, PageSize::Size2M, Fallback::Compact),
            Err(AllocError::NoExtent { .. })
        ));
        assert_eq!(full, snapshot);
    }
}
