//! One host's memory: the extent allocator plus the extents of each VM, with the lifecycle
//! operations of Compromis's hypervisor layer (create, destroy, grow by hotplug, shrink, compaction).
//!
//! Our design (the paper leaves the policy open): a VM gets one extent when possible, else up to
//! `max_extents` extents (a small segment table), largest first. Compaction is a plan/apply split
//! (as in BtrPlace): [`HostMemory::plan_compaction`] returns moves, [`HostMemory::apply`] performs
//! them atomically, and [`HostMemory::check`] validates any state independently of the allocator.

use crate::extent::{AllocError, ExtentAllocator, Policy, aligned_usable};
use crate::map::HostMap;
use crate::vmtable::VmTable;
use compromis_types::{Address, Extent, Hpa, PageSize, VmId};
use serde::Serialize;
use smallvec::{SmallVec, smallvec};
use std::fmt;
use thiserror::Error;

/// How the hardware reaches a VM's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum VmMapping {
    /// Segment registers (one per guest-RAM-range x host-extent piece).
    Segments,
    /// EPT page mappings of at most `host_page`.
    Ept {
        /// Largest host page used.
        host_page: PageSize,
    },
}

/// A VM's extents: up to two inline (a placement VM has one, or two across the MMIO hole), so
/// creating and destroying such a VM allocates nothing.
pub type VmExtents = SmallVec<[Extent; 2]>;

/// A VM's host memory: its extents in guest order (the first extent backs the lowest guest RAM).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmRecord {
    /// Host extents, in guest-physical order.
    pub extents: VmExtents,
    /// Alignment of every extent start and length.
    pub align: PageSize,
    /// Segments or EPT.
    pub backing: VmMapping,
    /// The extent limit the VM was created with (1 = a single segment).
    pub max_extents: usize,
}

impl VmRecord {
    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }
}

/// One step of a compaction: copy `from` to `to` (same length) and change the VM's OFFSET.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Move {
    /// The VM whose extent moves.
    pub vm: VmId,
    /// Current extent.
    pub from: Extent,
    /// Destination (free when the move is applied).
    pub to: Extent,
}

/// A list of moves, applied in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompactionPlan {
    /// The moves.
    pub moves: Vec<Move>,
}

impl CompactionPlan {
    /// Bytes copied by the plan (the cost of compaction).
    pub fn bytes_moved(&self) -> u64 {
        self.moves.iter().map(|m| m.from.len).sum()
    }
}

/// What a grow did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum GrowOutcome {
    /// The neighbouring free extent was claimed: nothing copied.
    InPlace,
    /// The VM was copied to a new single extent.
    Relocated {
        /// The new extent.
        to: Extent,
        /// Bytes copied (the VM's size before the grow).
        bytes_copied: u64,
    },
    /// An EPT-backed VM got extra, possibly scattered, extents.
    Added {
        /// The new extents.
        extents: Vec<Extent>,
    },
}

/// Who owns a range, for the checker and the printers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Owner {
    /// Free memory.
    Free,
    /// A reserved range.
    Reserved(String),
    /// A VM.
    Vm(VmId),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Free => f.write_str("free"),
            Owner::Reserved(l) => write!(f, "reserved ({l})"),
            Owner::Vm(v) => write!(f, "{v}"),
        }
    }
}

/// A violated invariant found by [`HostMemory::check`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InvariantError {
    /// Two owners claim the same bytes.
    #[error("{first} {a} and {second} {b} overlap")]
    Overlap {
        /// First owner.
        first: Owner,
        /// Its range.
        a: Extent,
        /// Second owner.
        second: Owner,
        /// Its range.
        b: Extent,
    },
    /// A range is empty or not inside one RAM range.
    #[error("{owner} extent {ext} is empty or not inside one RAM range")]
    OutsideRam {
        /// Owner.
        owner: Owner,
        /// Range.
        ext: Extent,
    },
    /// A VM extent is not aligned to the VM's alignment.
    #[error("{vm} extent {ext} is not aligned to {align}")]
    Unaligned {
        /// The VM.
        vm: VmId,
        /// The extent.
        ext: Extent,
        /// Required alignment.
        align: PageSize,
    },
    /// VM + reserved + free bytes differ from the capacity (a leak).
    #[error("owned {owned:#x} + free {free:#x} bytes != capacity {capacity:#x}")]
    Accounting {
        /// VM and reserved bytes.
        owned: u64,
        /// Free bytes.
        free: u64,
        /// RAM bytes.
        capacity: u64,
    },
    /// The allocator's indexes disagree.
    #[error("allocator index: {0}")]
    Index(String),
}

/// Fragmentation metrics of a host.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FragStats {
    /// RAM bytes.
    pub capacity: u64,
    /// Bytes owned by VMs.
    pub vm_bytes: u64,
    /// Reserved bytes.
    pub reserved_bytes: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Largest free extent.
    pub largest_free: u64,
    /// Number of free extents.
    pub free_extents: usize,
    /// External fragmentation `1 - largest / free` (0 when nothing is free).
    pub fragmentation: f64,
}

/// One host's memory manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMemory {
    pub(crate) map: HostMap,
    pub(crate) alloc: ExtentAllocator,
    pub(crate) policy: Policy,
    pub(crate) vms: VmTable,
}

#[allow(clippy::cast_precision_loss)] // reason: byte counts below 2^53 are exact; a ratio needs no more
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

impl HostMemory {
    /// A host with one RAM range `[0, capacity)` (rounded down to 4 KiB) and nothing reserved.
    pub fn new(capacity: u64, policy: Policy) -> Self {
        let map = HostMap::flat(capacity);
        let alloc = ExtentAllocator::new(capacity);
        HostMemory {
            map,
            alloc,
            policy,
            vms: VmTable::new(),
        }
    }

    /// A host with the given memory map (validated); reserved ranges are allocated up front.
    pub fn with_map(map: HostMap, policy: Policy) -> Result<Self, AllocError> {
        map.validate()?;
        let mut alloc = ExtentAllocator::with_ranges(&map.ram)?;
        for r in &map.reserved {
            alloc.alloc_at(r.ext)?;
        }
        Ok(HostMemory {
            map,
            alloc,
            policy,
            vms: VmTable::new(),
        })
    }

    /// The memory map.
    pub fn map(&self) -> &HostMap {
        &self.map
    }
    /// The allocator (read-only).
    pub fn allocator(&self) -> &ExtentAllocator {
        &self.alloc
    }
    /// The allocation policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }
    /// Changes the allocation policy for later allocations.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }
    /// RAM bytes.
    pub fn capacity(&self) -> u64 {
        self.alloc.capacity()
    }
    /// Free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.alloc.free_bytes()
    }
    /// Starts loading the state a create or destroy reads beyond this struct (the allocator's
    /// indexes, the VM records), once the struct itself is in cache: a hint for the placement
    /// engine, which knows a host's next event before it handles it (see [`crate::warm`]).
    #[inline]
    pub fn prefetch(&self) {
        self.alloc.prefetch();
        self.vms.prefetch(8);
    }
    /// Largest free extent.
    pub fn largest_free(&self) -> u64 {
        self.alloc.largest_free()
    }
    /// Number of free extents.
    pub fn free_extent_count(&self) -> usize {
        self.alloc.free_extent_count()
    }
    /// External fragmentation: `1 - largest_free / free_bytes` (0 when nothing is free).
    pub fn fragmentation(&self) -> f64 {
        let free = self.free_bytes();
        if free == 0 {
            0.0
        } else {
            1.0 - ratio(self.largest_free(), free)
        }
    }
    /// All fragmentation metrics at once.
    pub fn stats(&self) -> FragStats {
        FragStats {
            capacity: self.capacity(),
            vm_bytes: self.vms.values().map(VmRecord::bytes).sum(),
            reserved_bytes: self.map.reserved_bytes(),
            free_bytes: self.free_bytes(),
            largest_free: self.largest_free(),
            free_extents: self.free_extent_count(),
            fragmentation: self.fragmentation(),
        }
    }
    /// The extents of `vm`, in guest order.
    pub fn extents(&self, vm: VmId) -> Option<&[Extent]> {
        self.vms.get(&vm).map(|r| r.extents.as_slice())
    }
    /// Everything recorded about `vm`.
    pub fn vm(&self, vm: VmId) -> Option<&VmRecord> {
        self.vms.get(&vm)
    }
    /// VMs in id order.
    pub fn vms(&self) -> impl Iterator<Item = (VmId, &VmRecord)> + '_ {
        self.vms.iter().map(|(&id, r)| (id, r))
    }
    /// The smallest id not in use above every existing one.
    pub fn next_vm_id(&self) -> VmId {
        VmId(
            self.vms
                .keys()
                .next_back()
                .map_or(0, |v| v.0.saturating_add(1)),
        )
    }

    /// Every range of RAM with its owner, in address order (free, reserved and VM ranges).
    pub fn owners(&self) -> Vec<(Extent, Owner)> {
        let mut v: Vec<(Extent, Owner)> = self
            .alloc
            .free_extents()
            .map(|e| (e, Owner::Free))
            .collect();
        v.extend(
            self.map
                .reserved
                .iter()
                .map(|r| (r.ext, Owner::Reserved(r.label.clone()))),
        );
        for (&id, r) in &self.vms {
            v.extend(r.extents.iter().map(|&e| (e, Owner::Vm(id))));
        }
        v.sort();
        v
    }

    fn validate_request(
        &self,
        vm: VmId,
        len: u64,
        align: PageSize,
        max_extents: usize,
    ) -> Result<(), AllocError> {
        if self.vms.contains_key(&vm) {
            return Err(AllocError::VmExists(vm));
        }
        if max_extents == 0 {
            return Err(AllocError::ZeroExtents);
        }
        if len == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !len.is_multiple_of(align.bytes()) {
            return Err(AllocError::Unaligned {
                what: "length",
                value: len,
                align: align.bytes(),
            });
        }
        if len > self.capacity() {
            return Err(AllocError::TooLarge {
                len,
                capacity: self.capacity(),
            });
        }
        Ok(())
    }

    /// The checks of [`HostMemory::create`] for one request (used by other ways of creating).
    pub(crate) fn validate_request_pub(
        &self,
        vm: VmId,
        len: u64,
        align: PageSize,
    ) -> Result<(), AllocError> {
        self.validate_request(vm, len, align, 1)
    }

    /// Up to `max_extents` aligned pieces covering `len` bytes, largest free extents first, or the
    /// bytes they could cover.
    pub(crate) fn plan_pieces(
        &self,
        len: u64,
        align: PageSize,
        max_extents: usize,
    ) -> Result<Vec<Extent>, u64> {
        let mut pieces = Vec::new();
        let mut left = len;
        for f in self.alloc.free_extents_by_len() {
            if left == 0 || pieces.len() == max_extents || f.len < align.bytes() {
                break;
            }
            let usable = aligned_usable(f.start.raw(), f.len, align);
            if usable == 0 {
                continue;
            }
            let take = usable.min(left);
            let start = f.start.align_up(align).unwrap_or(f.start);
            pieces.push(Extent { start, len: take });
            left -= take;
        }
        if left == 0 {
            Ok(pieces)
        } else {
            Err(len - left)
        }
    }

    /// Gives the VM `len` bytes: one extent if possible, else (if `max_extents > 1`) up to
    /// `max_extents` extents (largest first), else `Err` with the state unchanged. `len` must be a
    /// multiple of `align`; every extent starts at a multiple of `align`.
    pub fn create(
        &mut self,
        vm: VmId,
        len: u64,
        align: PageSize,
        max_extents: usize,
    ) -> Result<&[Extent], AllocError> {
        self.validate_request(vm, len, align, max_extents)?;
        let extents = match self.alloc.alloc(len, align, self.policy) {
            Ok(e) => smallvec![e],
            Err(AllocError::NoExtent { largest, .. }) if max_extents == 1 => {
                return Err(AllocError::NoExtent { len, largest });
            }
            Err(AllocError::NoExtent { .. }) => {
                let pieces = self
                    .plan_pieces(len, align, max_extents)
                    .map_err(|coverable| AllocError::TooFragmented {
                        len,
                        max_extents,
                        coverable,
                    })?;
                self.claim_all(&pieces)?;
                pieces.into()
            }
            Err(e) => return Err(e),
        };
        let rec = VmRecord {
            extents,
            align,
            backing: VmMapping::Segments,
            max_extents,
        };
        Ok(&self.vms.insert(vm, rec).extents)
    }

    /// Claims every piece or none. On a failure the pieces already claimed are freed again; the
    /// free set is kept maximally coalesced, so this restores the exact previous state (without
    /// cloning the allocator, which dominated the cost of placement).
    pub(crate) fn claim_all(&mut self, pieces: &[Extent]) -> Result<(), AllocError> {
        for (i, &p) in pieces.iter().enumerate() {
            if let Err(e) = self.alloc.alloc_at(p) {
                for &q in &pieces[..i] {
                    self.alloc.free(q)?;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Records a VM whose extents were already claimed.
    pub(crate) fn insert_vm(&mut self, vm: VmId, rec: VmRecord) {
        self.vms.insert(vm, rec);
    }

    /// Destroys the VM and returns the bytes freed.
    pub fn destroy(&mut self, vm: VmId) -> Result<u64, AllocError> {
        let i = self.vms.index_of(vm).ok_or(AllocError::UnknownVm(vm))?;
        let rec = self.vms.at(i);
        if let [e] = rec.extents[..] {
            // One extent: `free` checks it before changing anything.
            self.alloc.free(e)?;
            self.vms.remove_at(i);
            return Ok(e.len);
        }
        // Check everything before changing anything (the extents of one VM never overlap).
        if let Some(&bad) = rec.extents.iter().find(|&&e| !self.alloc.is_allocated(e)) {
            return Err(AllocError::NotAllocated(bad));
        }
        let bytes = rec.bytes();
        for e in self.vms.remove_at(i).extents {
            self.alloc.free(e)?;
        }
        Ok(bytes)
    }

    /// Hotplug: grows the VM by `extra` bytes (a multiple of its alignment). In place when the free
    /// extent right after its last extent is large enough; else a segment-backed VM is relocated to
    /// one new extent of the new size (cost: its old size in bytes copied), or, when that fails and
    /// the VM may have more extents (`max_extents`), gets extra extents (largest free first); an
    /// EPT-backed VM gets extra extents from whatever is free. On error the state is unchanged.
    pub fn grow(&mut self, vm: VmId, extra: u64) -> Result<GrowOutcome, AllocError> {
        let rec = self.vms.get(&vm).ok_or(AllocError::UnknownVm(vm))?;
        if extra == 0 {
            return Err(AllocError::ZeroSize);
        }
        let align = rec.align;
        if !extra.is_multiple_of(align.bytes()) {
            return Err(AllocError::Unaligned {
                what: "length",
                value: extra,
                align: align.bytes(),
            });
        }
        let old = rec.bytes();
        let total = old.checked_add(extra).ok_or(AllocError::TooLarge {
            len: u64::MAX,
            capacity: self.capacity(),
        })?;
        if total > self.capacity() {
            return Err(AllocError::TooLarge {
                len: total,
                capacity: self.capacity(),
            });
        }
        let last = *rec.extents.last().ok_or(AllocError::UnknownVm(vm))?;
        let tail = Extent {
            start: last.end(),
            len: extra,
        };
        let backing = rec.backing;
        let max_extents = rec.max_extents;
        let old_extents = rec.extents.clone();
        if self.alloc.is_free(tail) {
            self.alloc.alloc_at(tail)?;
            if let Some(r) = self.vms.get_mut(&vm)
                && let Some(l) = r.extents.last_mut()
            {
                l.len += extra;
            }
            return Ok(GrowOutcome::InPlace);
        }
        match backing {
            VmMapping::Segments => match self.alloc.alloc(total, align, self.policy) {
                Ok(to) => {
                    for e in old_extents {
                        self.alloc.free(e)?;
                    }
                    if let Some(r) = self.vms.get_mut(&vm) {
                        r.extents = smallvec![to];
                    }
                    Ok(GrowOutcome::Relocated {
                        to,
                        bytes_copied: old,
                    })
                }
                Err(err) => {
                    // A VM allowed several extents may take one more instead of moving.
                    let room = max_extents.saturating_sub(old_extents.len());
                    match self.plan_pieces(extra, align, room) {
                        Ok(pieces) if room > 0 => {
                            self.claim_all(&pieces)?;
                            if let Some(r) = self.vms.get_mut(&vm) {
                                r.extents.extend(pieces.iter().copied());
                            }
                            Ok(GrowOutcome::Added { extents: pieces })
                        }
                        _ => Err(err),
                    }
                }
            },
            VmMapping::Ept { .. } => {
                let pieces = self.plan_pieces(extra, align, usize::MAX).map_err(|_| {
                    AllocError::NoExtent {
                        len: extra,
                        largest: self.largest_free(),
                    }
                })?;
                self.claim_all(&pieces)?;
                if let Some(r) = self.vms.get_mut(&vm) {
                    r.extents.extend(pieces.iter().copied());
                }
                Ok(GrowOutcome::Added { extents: pieces })
            }
        }
    }

    /// Shrinks the VM by `by` bytes (a multiple of its alignment, less than its size), releasing
    /// the end of its guest memory. Returns the bytes freed.
    pub fn shrink(&mut self, vm: VmId, by: u64) -> Result<u64, AllocError> {
        let rec = self.vms.get(&vm).ok_or(AllocError::UnknownVm(vm))?;
        if by == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !by.is_multiple_of(rec.align.bytes()) {
            return Err(AllocError::Unaligned {
                what: "length",
                value: by,
                align: rec.align.bytes(),
            });
        }
        let size = rec.bytes();
        if by >= size {
            return Err(AllocError::ShrinkTooLarge { vm, by, size });
        }
        let mut extents = rec.extents.clone();
        let mut a = self.alloc.clone();
        let mut left = by;
        while left > 0 {
            let Some(last) = extents.last_mut() else {
                break;
            };
            let cut = left.min(last.len);
            let released = Extent {
                start: Hpa(last.end().raw() - cut),
                len: cut,
            };
            a.free(released)?;
            last.len -= cut;
            if last.len == 0 {
                extents.pop();
            }
            left -= cut;
        }
        self.alloc = a;
        if let Some(r) = self.vms.get_mut(&vm) {
            r.extents = extents;
        }
        Ok(by)
    }

    /// Moves that would create a free extent of at least `want` bytes starting at a multiple of
    /// `align`, or `None` if the planner finds none. An empty plan means such an extent is already
    /// free. The planner considers windows of `want` bytes anchored at the boundaries of free and
    /// VM extents, cheapest first (bytes of VM extents overlapping the window), skips windows
    /// touching a reserved range, and accepts the first one whose VM extents can each be moved
    /// whole (best-fit, keeping the VM's alignment) to free memory outside the window. It tries
    /// at most [`MAX_WINDOWS`] windows.
    pub fn plan_compaction(&self, want: u64, align: PageSize) -> Option<CompactionPlan> {
        if want == 0 || self.alloc.find(want, align, Policy::BestFit).is_some() {
            return Some(CompactionPlan::default());
        }
        if want > self.free_bytes() {
            return None;
        }
        // Occupied ranges in address order: VM extents (movable) and reserved ranges.
        let mut occ: Vec<Occupied> = Vec::new();
        for (&id, r) in &self.vms {
            occ.extend(
                r.extents
                    .iter()
                    .map(|e| (e.start.raw(), e.end().raw(), Some((id, r.align)))),
            );
        }
        occ.extend(
            self.map
                .reserved
                .iter()
                .map(|r| (r.ext.start.raw(), r.ext.end().raw(), None)),
        );
        occ.sort_unstable();
        let mut candidates: Vec<u64> = Vec::new();
        let up = |x: u64| Hpa(x).align_up(align).map(Hpa::raw);
        let down = |x: u64| x.checked_sub(want).map(|s| Hpa(s).align_down(align).raw());
        for f in self.alloc.free_extents() {
            candidates.extend(up(f.start.raw()));
            candidates.extend(down(f.end().raw()));
        }
        for &(s, e, _) in &occ {
            candidates.extend(up(s));
            candidates.extend(up(e));
            candidates.extend(down(e));
        }
        candidates.sort_unstable();
        candidates.dedup();
        let ranges: Vec<Extent> = self.alloc.ranges().collect();
        let mut scored: Vec<(u64, u64)> = Vec::new();
        for ws in candidates {
            let Some(we) = ws.checked_add(want) else {
                continue;
            };
            if !ranges
                .iter()
                .any(|r| r.start.raw() <= ws && we <= r.end().raw())
            {
                continue;
            }
            let first = occ.partition_point(|&(_, e, _)| e <= ws);
            let mut cost = 0u64;
            let mut ok = true;
            for &(s, e, owner) in occ[first..].iter().take_while(|&&(s, _, _)| s < we) {
                match owner {
                    Some(_) => cost += e - s,
                    None => ok = false,
                }
            }
            if ok {
                scored.push((cost, ws));
            }
        }
        scored.sort_unstable();
        for &(_, ws) in scored.iter().take(MAX_WINDOWS) {
            if let Some(plan) = self.try_window(ws, want, &occ) {
                return Some(plan);
            }
        }
        None
    }

    fn try_window(&self, ws: u64, want: u64, occ: &[Occupied]) -> Option<CompactionPlan> {
        let we = ws + want;
        let mut sim = self.alloc.clone();
        let frees: Vec<Extent> = sim
            .free_extents()
            .filter(|f| f.start.raw() < we && f.end().raw() > ws)
            .map(|f| {
                let s = f.start.raw().max(ws);
                Extent::new(s, f.end().raw().min(we) - s)
            })
            .collect();
        for f in frees {
            sim.alloc_at(f).ok()?;
        }
        let first = occ.partition_point(|&(_, e, _)| e <= ws);
        let mut movers: Vec<(u64, u64, VmId, PageSize)> = occ[first..]
            .iter()
            .take_while(|&&(s, _, _)| s < we)
            .filter_map(|&(s, e, o)| o.map(|(vm, al)| (e - s, s, vm, al)))
            .collect();
        movers.sort_unstable_by(|a, b| b.cmp(a));
        let mut moves = Vec::new();
        for (len, s, vm, al) in movers {
            let to = sim.alloc(len, al, Policy::BestFit).ok()?;
            moves.push(Move {
                vm,
                from: Extent::new(s, len),
                to,
            });
        }
        moves.sort_by_key(|m| m.from.start);
        Some(CompactionPlan { moves })
    }

    /// Applies a plan atomically: every move is checked (the VM owns `from`, `to` has the same
    /// length, is aligned to the VM's alignment and is free when its turn comes); on any error the
    /// state is unchanged.
    pub fn apply(&mut self, plan: &CompactionPlan) -> Result<(), AllocError> {
        let mut next = self.clone();
        for (index, m) in plan.moves.iter().enumerate() {
            let bad = |reason: String| AllocError::BadMove { index, reason };
            let rec = next
                .vms
                .get_mut(&m.vm)
                .ok_or_else(|| bad(format!("unknown VM {}", m.vm)))?;
            let pos = rec
                .extents
                .iter()
                .position(|&e| e == m.from)
                .ok_or_else(|| bad(format!("{} does not own {}", m.vm, m.from)))?;
            if m.to.len != m.from.len {
                return Err(bad(format!(
                    "destination {} and source {} differ in length",
                    m.to, m.from
                )));
            }
            if !m.to.start.is_aligned(rec.align) {
                return Err(bad(format!(
                    "destination {} is not aligned to {}",
                    m.to, rec.align
                )));
            }
            next.alloc.alloc_at(m.to).map_err(|e| bad(e.to_string()))?;
            next.alloc.free(m.from).map_err(|e| bad(e.to_string()))?;
            rec.extents[pos] = m.to;
        }
        // Merge only at the end: a later move may name an extent an earlier move made adjacent.
        for m in &plan.moves {
            if let Some(rec) = next.vms.get_mut(&m.vm) {
                merge_adjacent(&mut rec.extents);
            }
        }
        *self = next;
        Ok(())
    }

    /// Validates the whole state independently of the allocator's own bookkeeping: every VM,
    /// reserved and free range is non-empty and inside one RAM range, no two overlap, VM extents are
    /// aligned, owned + free bytes = capacity, and the allocator's indexes agree.
    pub fn check(&self) -> Result<(), InvariantError> {
        self.alloc.check_indexes().map_err(InvariantError::Index)?;
        let ranges: Vec<Extent> = self.alloc.ranges().collect();
        let all = self.owners();
        let mut prev: Option<&(Extent, Owner)> = None;
        let (mut owned, mut free) = (0u64, 0u64);
        for item in &all {
            let (ext, owner) = item;
            let inside = ext.len > 0
                && ext.start.raw().checked_add(ext.len).is_some()
                && ranges
                    .iter()
                    .any(|r| r.start <= ext.start && ext.end() <= r.end());
            if !inside {
                return Err(InvariantError::OutsideRam {
                    owner: owner.clone(),
                    ext: *ext,
                });
            }
            if let Some((pe, po)) = prev
                && pe.end() > ext.start
            {
                return Err(InvariantError::Overlap {
                    first: po.clone(),
                    a: *pe,
                    second: owner.clone(),
                    b: *ext,
                });
            }
            match owner {
                Owner::Free => free += ext.len,
                _ => owned += ext.len,
            }
            prev = Some(item);
        }
        for (&vm, r) in &self.vms {
            for &ext in &r.extents {
                if !ext.start.is_aligned(r.align) || !ext.len.is_multiple_of(r.align.bytes()) {
                    return Err(InvariantError::Unaligned {
                        vm,
                        ext,
                        align: r.align,
                    });
                }
            }
        }
        if owned + free != self.capacity() || free != self.free_bytes() {
            return Err(InvariantError::Accounting {
                owned,
                free,
                capacity: self.capacity(),
            });
        }
        Ok(())
    }
}

/// An occupied range for the planner: `(start, end, Some((vm, align)))` for a VM extent, `None`
/// for a reserved range.
type Occupied = (u64, u64, Option<(VmId, PageSize)>);

/// Windows the compaction planner tries before giving up.
pub const MAX_WINDOWS: usize = 256;

/// Merges extents that follow each other in both guest order and host addresses.
fn merge_adjacent(extents: &mut VmExtents) {
    let mut out = VmExtents::with_capacity(extents.len());
    for &e in extents.iter() {
        match out.last_mut() {
            Some(l) if l.end() == e.start => l.len += e.len,
            _ => out.push(e),
        }
    }
    *extents = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;

    #[test]
    fn create_one_extent_then_k() {
        let mut h = HostMemory::new(16 * G, Policy::FirstFit);
        h.create(VmId(1), 4 * G, PageSize::Size2M, 1).unwrap();
        h.create(VmId(2), 4 * G, PageSize::Size2M, 1).unwrap();
        h.create(VmId(3), 4 * G, PageSize::Size2M, 1).unwrap();
        h.destroy(VmId(2)).unwrap();
        // Free: [4G,8G) and [12G,16G): an 8 GiB VM needs two extents.
        let before = h.clone();
        assert_eq!(
            h.create(VmId(4), 8 * G, PageSize::Size2M, 1),
            Err(AllocError::NoExtent {
                len: 8 * G,
                largest: 4 * G
            })
        );
        assert_eq!(h, before);
        let ext = h
            .create(VmId(4), 8 * G, PageSize::Size2M, 2)
            .unwrap()
            .to_vec();
        // Largest first; ties -> highest address first.
        assert_eq!(
            ext,
            vec![Extent::new(12 * G, 4 * G), Extent::new(4 * G, 4 * G)]
        );
        assert_eq!(h.free_bytes(), 0);
        h.check().unwrap();
        assert_eq!(h.destroy(VmId(4)), Ok(8 * G));
        h.check().unwrap();
    }

    #[test]
    fn bad_input_is_typed_and_harmless() {
        let mut h = HostMemory::new(8 * G, Policy::BestFit);
        h.create(VmId(1), G, PageSize::Size4K, 1).unwrap();
        let before = h.clone();
        assert_eq!(
            h.create(VmId(2), 0, PageSize::Size4K, 1),
            Err(AllocError::ZeroSize)
        );
        assert!(matches!(
            h.create(VmId(2), 16 * G, PageSize::Size4K, 1),
            Err(AllocError::TooLarge { .. })
        ));
        assert!(matches!(
            h.create(VmId(2), 3 * M, PageSize::Size2M, 1),
            Err(AllocError::Unaligned { .. })
        ));
        assert_eq!(
            h.create(VmId(1), G, PageSize::Size4K, 1),
            Err(AllocError::VmExists(VmId(1)))
        );
        assert_eq!(
            h.create(VmId(2), G, PageSize::Size4K, 0),
            Err(AllocError::ZeroExtents)
        );
        assert_eq!(h.destroy(VmId(9)), Err(AllocError::UnknownVm(VmId(9))));
        assert_eq!(h.grow(VmId(9), G), Err(AllocError::UnknownVm(VmId(9))));
        assert!(matches!(
            h.shrink(VmId(1), G),
            Err(AllocError::ShrinkTooLarge { .. })
        ));
        assert!(matches!(
            h.grow(VmId(1), 100),
            Err(AllocError::Unaligned { .. })
        ));
        assert_eq!(h, before);
    }

    #[test]
    fn grow_in_place_or_relocate_and_shrink() {
        let mut h = HostMemory::new(8 * G, Policy::FirstFit);
        h.create(VmId(1), G, PageSize::Size2M, 1).unwrap();
        assert_eq!(h.grow(VmId(1), G), Ok(GrowOutcome::InPlace));
        assert_eq!(h.extents(VmId(1)), Some(&[Extent::new(0, 2 * G)][..]));
        h.create(VmId(2), G, PageSize::Size2M, 1).unwrap(); // [2G,3G)
        // vm1 cannot grow in place any more: relocated to [3G,6G), 2 GiB copied.
        assert_eq!(
            h.grow(VmId(1), G),
            Ok(GrowOutcome::Relocated {
                to: Extent::new(3 * G, 3 * G),
                bytes_copied: 2 * G
            })
        );
        assert_eq!(h.shrink(VmId(1), G), Ok(G));
        assert_eq!(h.extents(VmId(1)), Some(&[Extent::new(3 * G, 2 * G)][..]));
        assert_eq!(h.free_bytes(), 5 * G);
        h.check().unwrap();
    }

    #[test]
    fn grow_adds_an_extent_when_allowed() {
        let mut h = HostMemory::new(8 * G, Policy::FirstFit);
        h.create(VmId(1), G, PageSize::Size2M, 2).unwrap(); // [0,1G)
        h.create(VmId(2), G, PageSize::Size2M, 1).unwrap(); // [1G,2G)
        h.create(VmId(3), 5 * G, PageSize::Size2M, 1).unwrap(); // [2G,7G); free [7G,8G)
        let mut single = h.clone();
        // Neighbour taken, no 2 GiB extent: vm1 may have 2 extents, so it takes [7G,8G).
        assert_eq!(
            h.grow(VmId(1), G),
            Ok(GrowOutcome::Added {
                extents: vec![Extent::new(7 * G, G)]
            })
        );
        assert_eq!(h.extents(VmId(1)).map(<[Extent]>::len), Some(2));
        h.check().unwrap();
        let before = h.clone();
        assert!(matches!(
            h.grow(VmId(1), G),
            Err(AllocError::NoExtent { .. })
        ));
        assert_eq!(h, before);
        // vm2 (one extent allowed) cannot grow: refused, unchanged.
        let b2 = single.clone();
        assert!(matches!(
            single.grow(VmId(2), G),
            Err(AllocError::NoExtent { .. })
        ));
        assert_eq!(single, b2);
    }

    #[test]
    fn compaction_plan_apply_check() {
        let mut h = HostMemory::new(8 * G, Policy::FirstFit);
        for i in 0..8 {
            h.create(VmId(i), G, PageSize::Size2M, 1).unwrap();
        }
        for i in [1, 3, 5] {
            h.destroy(VmId(i)).unwrap();
        }
        // Free: [1G,2G), [3G,4G), [5G,6G): 3 GiB free, largest 1 GiB.
        assert!((h.fragmentation() - 2.0 / 3.0).abs() < 1e-12);
        assert!(h.plan_compaction(4 * G, PageSize::Size2M).is_none());
        let plan = h.plan_compaction(2 * G, PageSize::Size2M).unwrap();
        // Cheapest window costs one 1 GiB move.
        assert_eq!(plan.bytes_moved(), G);
        let before = h.clone();
        h.apply(&plan).unwrap();
        h.check().unwrap();
        assert!(h.largest_free() >= 2 * G);
        // Applying the same plan again is refused and leaves the state alone.
        let after = h.clone();
        assert!(matches!(h.apply(&plan), Err(AllocError::BadMove { .. })));
        assert_eq!(h, after);
        assert_ne!(h, before);
    }

    #[test]
    fn apply_merges_only_after_all_moves() {
        // Regression (found by the oracle test): a move that makes a VM's extents adjacent must
        // not hide an extent a later move of the same plan names. Move 1 puts the first extent
        // at [1G,2G), right before the second one [2G,3G) (a merge would hide it from move 2).
        let mut h = HostMemory::new(8 * G, Policy::FirstFit);
        for (i, g) in [(1, 2), (2, 1), (3, 2), (4, 1), (5, 2)] {
            h.create(VmId(i), g * G, PageSize::Size2M, 1).unwrap();
        }
        for i in [1, 2, 4] {
            h.destroy(VmId(i)).unwrap();
        }
        // Free: [0,3G) and [5G,6G). vm8 takes [0,2G); vm9 gets two 1 GiB extents, equal lengths
        // so highest address first: guest order [5G,6G) then [2G,3G).
        h.create(VmId(8), 2 * G, PageSize::Size2M, 1).unwrap();
        let e = h
            .create(VmId(9), 2 * G, PageSize::Size2M, 2)
            .unwrap()
            .to_vec();
        assert_eq!(e, vec![Extent::new(5 * G, G), Extent::new(2 * G, G)]);
        h.destroy(VmId(8)).unwrap(); // free [0,2G)
        let plan = CompactionPlan {
            moves: vec![
                Move {
                    vm: VmId(9),
                    from: Extent::new(5 * G, G),
                    to: Extent::new(G, G),
                },
                Move {
                    vm: VmId(9),
                    from: Extent::new(2 * G, G),
                    to: Extent::new(5 * G, G),
                },
            ],
        };
        h.apply(&plan).unwrap();
        assert_eq!(
            h.extents(VmId(9)),
            Some(&[Extent::new(G, G), Extent::new(5 * G, G)][..])
        );
        h.check().unwrap();
    }

    #[test]
    fn checker_catches_corruption() {
        let mut h = HostMemory::new(4 * G, Policy::FirstFit);
        h.create(VmId(1), G, PageSize::Size4K, 1).unwrap();
        h.create(VmId(2), G, PageSize::Size4K, 1).unwrap();
        let mut bad = h.clone();
        bad.vms.get_mut(&VmId(2)).unwrap().extents[0] = Extent::new(G / 2, G);
        assert!(matches!(bad.check(), Err(InvariantError::Overlap { .. })));
        let mut leak = h.clone();
        leak.vms.remove(&VmId(1));
        assert!(matches!(
            leak.check(),
            Err(InvariantError::Accounting { .. })
        ));
        let mut out = h.clone();
        out.vms
            .get_mut(&VmId(2))
            .unwrap()
            .extents
            .push(Extent::new(8 * G, G));
        assert!(matches!(
            out.check(),
            Err(InvariantError::OutsideRam { .. })
        ));
    }
}
