//! The event engine: replays VM events on a fleet, one [`HostMemory`] per host, a
//! [`ClusterIndex`] for the policies, and counts everything in a [`PlacementReport`].

use crate::event::{Event, VmKey, VmTraceError};
use crate::fleet::{Fleet, HostSpec, round_vm};
use crate::hm::{HostMemory, Policy as ExtentPolicy, VmId};
use crate::index::{ClusterIndex, HostId, IndexNeeds};
use crate::metrics::{PlacementReport, RejectReason, Sample};
use crate::policy::{PlacementPolicy, PolicyKind};
use compromis_hostmem::warm::prefetch;
use compromis_hostmem::{Fallback, one_set_span, register_sets};
use compromis_types::PageSize;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use thiserror::Error;

/// Alignment of every VM segment (see [`crate::fleet::VM_GRANULE`]).
pub const SEGMENT_ALIGN: PageSize = PageSize::Size2M;

/// Engine settings beyond the policy and fallback.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Seed of the policy's random choices (only the `random` policy uses it).
    pub seed: u64,
    /// Trace seconds between two samples of the time series.
    pub sample_interval: u64,
    /// At most this many samples are kept: past it, every other sample is dropped and the
    /// interval doubles (memory stays bounded on long traces).
    pub max_samples: usize,
    /// Count bad rows and bad events instead of failing.
    pub skip_bad_rows: bool,
    /// Run the independent checker after every event (slow: tests only).
    pub check_every_event: bool,
    /// Extent choice inside each host.
    pub extent_policy: ExtentPolicy,
    /// Keep every ordered index, not only those the policy reads (tests: results must not change).
    pub keep_all_indexes: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            seed: compromis_types::DEFAULT_SEED,
            sample_interval: 3600,
            max_samples: 2048,
            skip_bad_rows: false,
            check_every_event: false,
            extent_policy: ExtentPolicy::BestFit,
            keep_all_indexes: false,
        }
    }
}

/// Why a replay stopped.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// A trace reader failed (a bad row without `skip_bad_rows`, or an I/O error).
    #[error(transparent)]
    Trace(#[from] VmTraceError),
    /// An event inconsistent with the previous ones.
    #[error("event {index} (VM {vm} at time {time}): {reason}")]
    BadEvent {
        /// 0-based index of the event in the stream.
        index: u64,
        /// The VM.
        vm: VmKey,
        /// Its time.
        time: u64,
        /// What is wrong.
        reason: String,
    },
    /// The independent checker found a broken invariant (a bug).
    #[error("invariant broken after event {index}: {reason}")]
    Check {
        /// 0-based index of the event.
        index: u64,
        /// What is broken.
        reason: String,
    },
}

/// Multiplicative hash of a VM key (keys are trace-assigned integers; iteration order never
/// reaches the output), also of the index's extent lengths.
#[derive(Default)]
pub(crate) struct VmHasher(u64);

impl Hasher for VmHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = (k ^ (k >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (k >> 32);
    }
}

pub(crate) type VmHash = BuildHasherDefault<VmHasher>;

/// How a VM was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// In this many segments (1: the paper's single segment).
    Segments(usize),
    /// On EPT paging (the last resort of every fallback but `refuse`).
    Paged,
}

#[derive(Clone, Copy, Debug)]
struct Live {
    host: HostId,
    mem: u64,
    vcpus: u32,
    /// Placed on EPT paging.
    paged: bool,
}

/// What the engine knows of a VM that arrived and has not left: one map, so an event costs one
/// or two lookups.
#[derive(Clone, Copy, Debug)]
enum VmState {
    Live(Live),
    /// Refused at arrival (or at a resize): its departure is still expected.
    Rejected,
}

/// Slack past the dense table's end within which a new key still grows it (see [`VmStates`]).
const DENSE_SLACK: u64 = 4096;

/// Every VM that arrived and has not left, by key: a dense table indexed by the key for the
/// small keys most readers assign (azure-rnn, the synthetic trace, Bitbrains number VMs from 0),
/// a hash map for the rest (Google's and Azure's large ids). A key goes to the dense table when
/// it lies within [`DENSE_SLACK`] of its end and the table stays below twice the keys ever placed
/// there plus the slack, so its memory stays proportional to the VMs seen.
#[derive(Default)]
struct VmStates {
    dense: Vec<Option<VmState>>,
    /// Keys ever stored in `dense` (its growth bound).
    dense_keys: u64,
    sparse: HashMap<VmKey, VmState, VmHash>,
}

impl VmStates {
    #[inline]
    fn slot(&self, vm: VmKey) -> Option<usize> {
        usize::try_from(vm).ok().filter(|&i| i < self.dense.len())
    }

    #[inline]
    fn get(&self, vm: VmKey) -> Option<&VmState> {
        match self.slot(vm) {
            Some(i) => self.dense[i].as_ref(),
            None => self.sparse.get(&vm),
        }
    }

    #[inline]
    fn contains_key(&self, vm: VmKey) -> bool {
        self.get(vm).is_some()
    }

    #[inline]
    fn insert(&mut self, vm: VmKey, st: VmState) -> Option<VmState> {
        let len = self.dense.len() as u64;
        if vm >= len
            && vm < len + DENSE_SLACK
            && vm < 2 * self.dense_keys + DENSE_SLACK
            && let Ok(end) = usize::try_from(vm + 1)
        {
            self.grow(end.max(self.dense.len() * 5 / 4));
        }
        match self.slot(vm) {
            Some(i) => {
                let was = self.dense[i].replace(st);
                if was.is_none() {
                    self.dense_keys += 1;
                }
                was
            }
            None => self.sparse.insert(vm, st),
        }
    }

    /// Grows the dense table to `len` slots; keys of the hash map that it now covers move into
    /// it (the table grows by a quarter at least, so this happens O(log n) times).
    #[cold]
    fn grow(&mut self, len: usize) {
        let old = self.dense.len() as u64;
        self.dense.resize(len, None);
        if !self.sparse.is_empty() {
            let new = self.dense.len() as u64;
            let moved: Vec<(VmKey, VmState)> = self
                .sparse
                .iter()
                .filter(|&(&k, _)| (old..new).contains(&k))
                .map(|(&k, &s)| (k, s))
                .collect();
            for (k, s) in moved {
                self.sparse.remove(&k);
                if let Some(i) = self.slot(k) {
                    self.dense[i] = Some(s);
                    self.dense_keys += 1;
                }
            }
        }
    }

    /// Starts loading `vm`'s entry of the dense table (nothing for a key of the hash map).
    #[inline]
    fn prefetch(&self, vm: VmKey) {
        if let Some(i) = self.slot(vm) {
            prefetch(&self.dense[i]);
        }
    }

    #[inline]
    fn remove(&mut self, vm: VmKey) -> Option<VmState> {
        match self.slot(vm) {
            Some(i) => self.dense[i].take(),
            None => self.sparse.remove(&vm),
        }
    }

    fn values(&self) -> impl Iterator<Item = &VmState> + '_ {
        self.dense.iter().flatten().chain(self.sparse.values())
    }
}

/// The fleet's state: each host's memory manager, the index, the live VMs.
pub struct Cluster {
    /// Each host's memory manager, made on the host's first VM (idle hosts cost nothing).
    mems: Vec<Option<HostMemory>>,
    /// A never-used host of each capacity, what [`Cluster::host_memory`] shows for idle hosts.
    pristine: Vec<HostMemory>,
    extent_policy: ExtentPolicy,
    index: ClusterIndex,
    /// Every VM that arrived and has not left, live or rejected (a host's live VMs are those its
    /// memory manager holds).
    vms: VmStates,
    /// The live ones among them.
    live_count: usize,
    max_cap: u64,
    max_cores: u32,
    total_cap: u64,
}

impl Cluster {
    /// An empty cluster keeping every ordered index.
    pub fn new(fleet: &Fleet, extent_policy: ExtentPolicy) -> Cluster {
        Cluster::with_needs(fleet, extent_policy, IndexNeeds::ALL)
    }

    /// An empty cluster keeping only the ordered indexes in `needs` (those its policy and
    /// fallback read).
    pub fn with_needs(fleet: &Fleet, extent_policy: ExtentPolicy, needs: IndexNeeds) -> Cluster {
        let specs: Vec<_> = fleet.hosts().collect();
        Cluster {
            mems: vec![None; specs.len()],
            pristine: {
                let mut caps: Vec<u64> = specs.iter().map(HostSpec::vm_capacity).collect();
                caps.sort_unstable();
                caps.dedup();
                caps.into_iter()
                    .map(|c| HostMemory::new(c, extent_policy))
                    .collect()
            },
            extent_policy,
            index: ClusterIndex::with_needs(
                specs.iter().map(|s| (s.vm_capacity(), s.cores)),
                needs,
            ),
            vms: VmStates::default(),
            live_count: 0,
            max_cap: fleet.max_vm_capacity(),
            max_cores: specs.iter().map(|s| s.cores).max().unwrap_or(0),
            total_cap: fleet.total_vm_capacity(),
        }
    }

    /// The index the policies see.
    pub fn index(&self) -> &ClusterIndex {
        &self.index
    }

    /// Number of live VMs.
    pub fn live_vms(&self) -> usize {
        self.live_count
    }

    fn live(&self, vm: VmKey) -> Option<Live> {
        match self.vms.get(vm) {
            Some(&VmState::Live(l)) => Some(l),
            _ => None,
        }
    }

    /// Whether a live VM runs on EPT paging (placed without segments).
    pub fn is_paged(&self, vm: VmKey) -> bool {
        self.live(vm).is_some_and(|l| l.paged)
    }

    /// The host a live VM runs on.
    pub fn host_of(&self, vm: VmKey) -> Option<HostId> {
        self.live(vm).map(|l| l.host)
    }

    /// A host's memory manager.
    pub fn host_memory(&self, h: HostId) -> &HostMemory {
        match &self.mems[h as usize] {
            Some(m) => m,
            None => self.pristine_of(h),
        }
    }

    fn pristine_of(&self, h: HostId) -> &HostMemory {
        let cap = self.index.host(h).capacity;
        let i = self.pristine.partition_point(|m| m.capacity() < cap);
        &self.pristine[i.min(self.pristine.len() - 1)]
    }

    /// Host `h`'s memory manager, made on first use.
    fn mem_mut(&mut self, h: HostId) -> &mut HostMemory {
        let (cap, pol) = (self.index.host(h).capacity, self.extent_policy);
        self.mems[h as usize].get_or_insert_with(|| HostMemory::new(cap, pol))
    }

    /// Creates the VM on `h` in at most `sets` register sets (1: one allocation, by the
    /// register-set rule of `compromis_hostmem::segments_for`, a VM across the MMIO hole gets one
    /// set when a range of its RAM plus the hole is free, else two sets in one extent;
    /// `usize::MAX`: paging, any pieces); returns the register sets it got.
    fn try_create(
        &mut self,
        h: HostId,
        vm: VmKey,
        need: u64,
        vcpus: u32,
        sets: usize,
    ) -> Option<usize> {
        let (cap, pol) = (self.index.host(h).capacity, self.extent_policy);
        let mem = self.mems[h as usize].get_or_insert_with(|| HostMemory::new(cap, pol));
        let ext = match sets {
            1 => mem.create_one_set(VmId(vm), need, SEGMENT_ALIGN),
            usize::MAX => mem.create(VmId(vm), need, SEGMENT_ALIGN, usize::MAX),
            k => mem.create_in_sets(VmId(vm), need, SEGMENT_ALIGN, k),
        }
        .ok()?;
        let n = register_sets(need, ext);
        if self.index.keeps_host_extents() {
            self.index.on_create(h, ext, vcpus);
        } else {
            let bytes = ext.iter().map(|e| e.len).sum();
            self.index
                .on_create_sized(h, bytes, vcpus, mem.largest_free());
        }
        let paged = sets == usize::MAX;
        let was = self.vms.insert(
            vm,
            VmState::Live(Live {
                host: h,
                mem: need,
                vcpus,
                paged,
            }),
        );
        debug_assert!(
            !matches!(was, Some(VmState::Live(_))),
            "VM {vm} placed twice"
        );
        self.live_count += 1;
        Some(n)
    }

    fn compact_plan_cost(&self, h: HostId, need: u64) -> Option<u64> {
        self.host_memory(h)
            .plan_compaction(need, SEGMENT_ALIGN)
            .map(|p| p.bytes_moved())
    }

    fn compact(&mut self, h: HostId, need: u64, rep: &mut PlacementReport) -> bool {
        let Some(plan) = self.host_memory(h).plan_compaction(need, SEGMENT_ALIGN) else {
            return false;
        };
        if self.mem_mut(h).apply(&plan).is_err() {
            return false;
        }
        rep.compactions += 1;
        rep.bytes_moved += plan.bytes_moved();
        let mem = self.host_memory(h);
        if !self.index.keeps_host_extents() {
            let largest = mem.largest_free();
            self.index.on_moved_sized(h, largest);
            return true;
        }
        let all: Vec<_> = mem
            .vms()
            .flat_map(|(_, r)| r.extents.iter().copied())
            .collect();
        self.index.on_moved(h, all);
        true
    }

    /// Places on host `h`: one extent, else the fallback on that host, else (unless the fallback
    /// is `refuse`) EPT paging over whatever free memory the host has.
    fn provision(
        &mut self,
        h: HostId,
        vm: VmKey,
        need: u64,
        vcpus: u32,
        fb: Fallback,
        rep: &mut PlacementReport,
    ) -> Result<Placed, RejectReason> {
        if let Some(n) = self.try_create(h, vm, need, vcpus, 1) {
            return Ok(Placed::Segments(n));
        }
        let failed = match fb {
            Fallback::Refuse => return Err(RejectReason::NoSingleExtent),
            Fallback::Segments(k) => match self.try_create(h, vm, need, vcpus, k) {
                Some(n) => return Ok(Placed::Segments(n)),
                None => RejectReason::TooFragmented,
            },
            Fallback::Ept => RejectReason::NoCapacity,
            Fallback::Compact => {
                if self.compact(h, need, rep)
                    && let Some(n) = self.try_create(h, vm, need, vcpus, 1)
                {
                    return Ok(Placed::Segments(n));
                }
                RejectReason::CompactionFailed
            }
        };
        self.page(h, vm, need, vcpus).ok_or(failed)
    }

    /// EPT paging: the VM's memory from any free memory of the host, in as many pieces as it takes.
    fn page(&mut self, h: HostId, vm: VmKey, need: u64, vcpus: u32) -> Option<Placed> {
        let s = self.index.host(h);
        if s.free < need || s.free_cores < vcpus {
            return None;
        }
        self.try_create(h, vm, need, vcpus, usize::MAX)?;
        Some(Placed::Paged)
    }

    /// Places a VM with the policy and fallback: one segment, K segments or paged.
    pub fn place(
        &mut self,
        vm: VmKey,
        mem: u64,
        vcpus: u32,
        pol: &mut dyn PlacementPolicy,
        fb: Fallback,
        rep: &mut PlacementReport,
    ) -> Result<Placed, RejectReason> {
        let need = round_vm(mem);
        if need > self.max_cap || vcpus > self.max_cores {
            return Err(RejectReason::LargerThanAnyHost);
        }
        // A contiguity-aware policy looks for one register set first (RAM plus the MMIO hole
        // for a VM across it), then for one extent (two register sets).
        let span = one_set_span(need);
        let chosen = if pol.contiguity_aware() && span > need {
            pol.choose(&self.index, span, vcpus)
                .or_else(|| pol.choose(&self.index, need, vcpus))
        } else {
            pol.choose(&self.index, need, vcpus)
        };
        if let Some(h) = chosen {
            return self.provision(h, vm, need, vcpus, fb, rep);
        }
        let any = self.index.first_by_free(0, need, vcpus);
        let Some(any) = any.filter(|_| pol.contiguity_aware()) else {
            return Err(RejectReason::NoCapacity);
        };
        match fb {
            Fallback::Refuse => Err(RejectReason::NoSingleExtent),
            Fallback::Segments(_) | Fallback::Ept => self.provision(any, vm, need, vcpus, fb, rep),
            Fallback::Compact => {
                // The cheapest plan among the (up to) four hosts with the most free memory.
                let cands: Vec<HostId> = self
                    .index
                    .by_free_from(need)
                    .rev()
                    .map(|(_, h)| h)
                    .filter(|&h| self.index.host(h).free_cores >= vcpus)
                    .take(4)
                    .collect();
                let best = cands
                    .into_iter()
                    .filter_map(|h| self.compact_plan_cost(h, need).map(|c| (c, h)))
                    .min();
                match best {
                    Some((_, h)) => self.provision(h, vm, need, vcpus, fb, rep),
                    None => self
                        .page(any, vm, need, vcpus)
                        .ok_or(RejectReason::CompactionFailed),
                }
            }
        }
    }

    /// Removes a live VM; returns false when it is not live (a rejected VM is forgotten).
    pub fn remove(&mut self, vm: VmKey) -> bool {
        let Some(VmState::Live(l)) = self.vms.remove(vm) else {
            return false;
        };
        self.live_count -= 1;
        let (cap, pol) = (self.index.host(l.host).capacity, self.extent_policy);
        // A live VM's host always has its memory manager; get_or_insert never makes one here.
        let mem = self.mems[l.host as usize].get_or_insert_with(|| HostMemory::new(cap, pol));
        if self.index.keeps_host_extents() {
            self.index
                .on_destroy(l.host, mem.extents(VmId(vm)).unwrap_or_default(), l.vcpus);
            let _ = mem.destroy(VmId(vm));
        } else {
            let bytes = mem.destroy(VmId(vm)).unwrap_or(0);
            self.index
                .on_destroy_sized(l.host, bytes, l.vcpus, mem.largest_free());
        }
        true
    }

    /// Starts loading what an event on host `h` reads first: its summary, its max-tree leaf and
    /// its memory manager's struct (a cache hint; [`Cluster::warm_deep`] follows once these are
    /// in cache).
    #[inline]
    fn warm(&self, h: HostId) {
        self.index.prefetch_host(h);
        if let Some(m) = self.mems.get(h as usize) {
            prefetch(m);
        }
    }

    /// Starts loading host `h`'s memory manager's indexes and VM records (reads its struct,
    /// which [`Cluster::warm`] started loading earlier).
    #[inline]
    fn warm_deep(&self, h: HostId) {
        self.index.prefetch_host_extents(h);
        if let Some(Some(m)) = self.mems.get(h as usize) {
            m.prefetch();
        }
    }

    /// The host of a departing VM, if it is live (for the cache hints).
    #[inline]
    fn departing_host(&self, ev: &Result<Event, VmTraceError>) -> Option<HostId> {
        match ev {
            Ok(Event::Departure { vm, .. } | Event::ImplicitEnd { vm, .. }) => {
                self.live(*vm).map(|l| l.host)
            }
            _ => None,
        }
    }

    /// Independent checker: capacity, no overlap, every live VM placed once with its size, the
    /// index in agreement with each memory manager. Costs O(live VMs + hosts).
    pub fn check(&self) -> Result<(), String> {
        let mut seen = 0usize;
        for h in 0..self.mems.len() {
            let hid = HostId::try_from(h).map_err(|e| e.to_string())?;
            let s = self.index.host(hid);
            let mem = self.host_memory(hid);
            let mut exts = Vec::new();
            let mut cores = 0u32;
            let vms: Vec<VmKey> = mem.vms().map(|(v, _)| v.0).collect();
            for &vm in &vms {
                let l = self
                    .live(vm)
                    .ok_or_else(|| format!("VM {vm} listed on host {h} but not live"))?;
                if l.host != hid {
                    return Err(format!(
                        "VM {vm} listed on host {h} but recorded on host {}",
                        l.host
                    ));
                }
                let e = mem
                    .extents(VmId(vm))
                    .ok_or_else(|| format!("VM {vm} unknown to host {h}'s memory manager"))?;
                let total: u64 = e.iter().map(|x| x.len).sum();
                if total != l.mem {
                    return Err(format!("VM {vm} holds {total} bytes, needs {}", l.mem));
                }
                exts.extend(
                    e.iter()
                        .map(|x| (compromis_types::Address::raw(x.start), x.len)),
                );
                cores += l.vcpus;
            }
            seen += vms.len();
            exts.sort_unstable();
            let mut end = 0;
            for &(st, len) in &exts {
                if len == 0 || st < end {
                    return Err(format!(
                        "host {h}: extent [{st:#x}, +{len:#x}) overlaps or is empty"
                    ));
                }
                end = st + len;
            }
            if end > s.capacity {
                return Err(format!(
                    "host {h}: extent ends at {end:#x} beyond capacity {:#x}",
                    s.capacity
                ));
            }
            let used: u64 = exts.iter().map(|e| e.1).sum();
            if used + mem.free_bytes() != s.capacity || s.free != mem.free_bytes() {
                return Err(format!(
                    "host {h}: used {used} + free {} != capacity {} (index free {})",
                    mem.free_bytes(),
                    s.capacity,
                    s.free
                ));
            }
            mem.check()
                .map_err(|e| format!("host {h}: memory manager invariant: {e}"))?;
            let mut theirs: Vec<u64> = mem.allocator().free_extents().map(|e| e.len).collect();
            theirs.sort_unstable_by(|a, b| b.cmp(a));
            let lists = self.index.keeps_host_extents();
            if lists && theirs != s.free_lengths().collect::<Vec<_>>() {
                return Err(format!(
                    "host {h}: index free extents {:?} differ from the memory manager's {theirs:?}",
                    s.free_lengths().collect::<Vec<_>>()
                ));
            }
            if s.largest != mem.largest_free() {
                return Err(format!(
                    "host {h}: index largest extent {} != memory manager's {}",
                    s.largest,
                    mem.largest_free()
                ));
            }
            if lists && exts != s.allocated().collect::<Vec<_>>() {
                return Err(format!(
                    "host {h}: index extents differ from the memory manager's"
                ));
            }
            if cores + s.free_cores != s.cores || s.vms as usize != vms.len() {
                return Err(format!("host {h}: core or VM accounting off"));
            }
        }
        let live = self
            .vms
            .values()
            .filter(|s| matches!(s, VmState::Live(_)))
            .count();
        if seen != live || live != self.live_count {
            return Err(format!(
                "{live} live VMs (counted {}) but {seen} listed on hosts",
                self.live_count
            ));
        }
        Ok(())
    }

    fn sample(&self, time: u64, rep: &PlacementReport) -> Sample {
        let used = self.total_cap - self.index.free_bytes();
        Sample {
            time,
            live_vms: self.live_count as u64,
            hosts_in_use: self.index.hosts_in_use(),
            mem_utilisation: if self.total_cap == 0 {
                0.0
            } else {
                used as f64 / self.total_cap as f64
            },
            fragmentation: self.index.fragmentation(),
            single_segment_share: rep.single_segment_share(),
        }
    }
}

/// Replays `events` on `fleet` with default options and the given seed. The stable entry point.
pub fn simulate<I>(
    events: I,
    fleet: &Fleet,
    policy: &PolicyKind,
    fallback: &Fallback,
    seed: u64,
) -> Result<PlacementReport, ReplayError>
where
    I: IntoIterator<Item = Result<Event, VmTraceError>>,
{
    simulate_with(
        events,
        fleet,
        policy,
        fallback,
        &ReplayOptions {
            seed,
            ..ReplayOptions::default()
        },
    )
}

/// Replays `events` with explicit options.
pub fn simulate_with<I>(
    events: I,
    fleet: &Fleet,
    policy: &PolicyKind,
    fallback: &Fallback,
    opts: &ReplayOptions,
) -> Result<PlacementReport, ReplayError>
where
    I: IntoIterator<Item = Result<Event, VmTraceError>>,
{
    simulate_observed(events, fleet, policy, fallback, opts, &|_| {})
}

/// Replays `events`, calling `progress(events_so_far)` every 65,536 events.
pub fn simulate_observed<I>(
    events: I,
    fleet: &Fleet,
    policy: &PolicyKind,
    fallback: &Fallback,
    opts: &ReplayOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PlacementReport, ReplayError>
where
    I: IntoIterator<Item = Result<Event, VmTraceError>>,
{
    let mut pol = policy.build(opts.seed);
    // The compaction fallback reads hosts by free memory.
    let needs = if opts.keep_all_indexes {
        IndexNeeds::ALL
    } else {
        // The independent checker compares each host's extents with the memory manager's.
        pol.needs().union(IndexNeeds {
            by_free: *fallback == Fallback::Compact,
            host_extents: opts.check_every_event,
            ..IndexNeeds::TREES
        })
    };
    let mut cl = Cluster::with_needs(fleet, opts.extent_policy, needs);
    let mut rep = PlacementReport {
        policy: policy.name().to_owned(),
        fallback: fallback.to_string(),
        hosts: fleet.len() as u64,
        ..PlacementReport::default()
    };
    let mut interval = opts.sample_interval.max(1);
    let mut next_sample: Option<u64> = None;
    let mut last_time: Option<u64> = None;
    let mut index = 0u64;
    let mut first_time = None;
    let mut peak_used = 0u64;
    // Events are read a few ahead so that a departure's state is in cache when it is handled:
    // its VM's entry as it enters the window, its host's summary and memory manager's struct
    // when it is at `WARM` in the window (`WARM + 1` events before it is handled), that
    // manager's indexes and VM records at `WARM_DEEP` (cache hints only; the
    // events are still handled one by one, in order). A policy that knows its next host
    // (random-fit) gets the same two steps before its next arrival.
    const AHEAD: usize = 8;
    const WARM: usize = 5;
    const WARM_DEEP: usize = 1;
    let mut src = events.into_iter();
    let mut window: VecDeque<Result<Event, VmTraceError>> = VecDeque::with_capacity(AHEAD);
    let mut hinted: Option<HostId> = None;
    loop {
        while window.len() < AHEAD {
            let Some(item) = src.next() else { break };
            if let Ok(Event::Departure { vm, .. } | Event::ImplicitEnd { vm, .. }) = &item {
                cl.vms.prefetch(*vm);
            }
            window.push_back(item);
        }
        let Some(item) = window.pop_front() else {
            break;
        };
        if let Some(h) = window.get(WARM).and_then(|e| cl.departing_host(e)) {
            cl.warm(h);
        }
        if let Some(h) = window.get(WARM_DEEP).and_then(|e| cl.departing_host(e)) {
            cl.warm_deep(h);
        }
        if let Some(h) = hinted.take() {
            cl.warm_deep(h);
        }
        let ev = match item {
            Ok(ev) => ev,
            Err(e) if opts.skip_bad_rows && e.is_row_error() => {
                rep.bad_rows += 1;
                if rep.bad_row_examples.len() < 5 {
                    rep.bad_row_examples.push(e.to_string());
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // An implicit end is a departure, counted apart.
        let ev = match ev {
            Event::ImplicitEnd { vm, time } => {
                rep.implicit_ends += 1;
                Event::Departure { vm, time }
            }
            ev => ev,
        };
        let t = ev.time();
        let bad = |reason: String| ReplayError::BadEvent {
            index,
            vm: ev.vm(),
            time: t,
            reason,
        };
        let problem = if last_time.is_some_and(|l| t < l) {
            Some(format!(
                "time goes backwards (previous event at {})",
                last_time.unwrap_or(0)
            ))
        } else {
            None
        };
        let problem = problem.or_else(|| match ev {
            Event::Arrival { vm, .. } if cl.vms.contains_key(vm) => {
                Some("arrival of a VM that already arrived".to_owned())
            }
            Event::Departure { vm, .. } | Event::ImplicitEnd { vm, .. } | Event::Resize { vm, .. }
                if !cl.vms.contains_key(vm) =>
            {
                Some("departure or resize of a VM that is not running (it never arrived or already left)".to_owned())
            }
            _ => None,
        });
        if let Some(reason) = problem {
            if opts.skip_bad_rows {
                rep.bad_rows += 1;
                if rep.bad_row_examples.len() < 5 {
                    rep.bad_row_examples.push(bad(reason).to_string());
                }
                index += 1;
                continue;
            }
            return Err(bad(reason));
        }
        // Samples describe the state before the first event at or after each sample time.
        let ns = *next_sample.get_or_insert(t / interval * interval);
        if t >= ns {
            rep.series.push(cl.sample(ns, &rep));
            next_sample = Some((t / interval + 1) * interval);
            if rep.series.len() > opts.max_samples.max(2) {
                rep.series = rep.series.iter().step_by(2).copied().collect();
                interval = interval.saturating_mul(2);
                next_sample = Some((t / interval + 1) * interval);
            }
        }
        first_time.get_or_insert(t);
        last_time = Some(t);
        match ev {
            Event::Arrival {
                vm,
                mem_bytes,
                vcpus,
                initial,
                ..
            } => {
                rep.arrivals += 1;
                rep.last_arrival = t;
                if initial {
                    rep.initial_vms += 1;
                }
                match cl.place(vm, mem_bytes, vcpus, pol.as_mut(), *fallback, &mut rep) {
                    Ok(p) => rep.count_placed(p),
                    Err(r) => {
                        *rep.rejections.entry(r).or_insert(0) += 1;
                        cl.vms.insert(vm, VmState::Rejected);
                    }
                }
                hinted = pol.next_hint();
                if let Some(h) = hinted {
                    cl.warm(h);
                }
            }
            Event::Departure { vm, .. } | Event::ImplicitEnd { vm, .. } => {
                rep.departures += 1;
                cl.remove(vm);
            }
            Event::Resize { vm, mem_bytes, .. } => {
                rep.resizes += 1;
                if let Some(l) = cl.live(vm) {
                    cl.remove(vm);
                    let need = round_vm(mem_bytes);
                    let same = if need <= cl.index.host(l.host).capacity {
                        cl.provision(l.host, vm, need, l.vcpus, *fallback, &mut rep)
                            .ok()
                    } else {
                        None
                    };
                    if same.is_none() {
                        if cl
                            .place(vm, need, l.vcpus, pol.as_mut(), *fallback, &mut rep)
                            .is_ok()
                        {
                            rep.resize_migrations += 1;
                        } else {
                            rep.resize_rejections += 1;
                            cl.vms.insert(vm, VmState::Rejected);
                        }
                    }
                }
            }
        }
        rep.events += 1;
        rep.peak_live_vms = rep.peak_live_vms.max(cl.live_count as u64);
        rep.peak_hosts_in_use = rep.peak_hosts_in_use.max(cl.index.hosts_in_use());
        peak_used = peak_used.max(cl.total_cap - cl.index.free_bytes());
        if opts.check_every_event {
            cl.check()
                .map_err(|reason| ReplayError::Check { index, reason })?;
        }
        index += 1;
        if index.is_multiple_of(65_536) {
            progress(index);
        }
    }
    if let Some(t) = last_time {
        rep.series.push(cl.sample(t, &rep));
    }
    rep.time_span = (first_time.unwrap_or(0), last_time.unwrap_or(0));
    rep.peak_mem_utilisation = if cl.total_cap == 0 {
        0.0
    } else {
        peak_used as f64 / cl.total_cap as f64
    };
    progress(index);
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn live(host: HostId) -> VmState {
        VmState::Live(Live {
            host,
            mem: 1,
            vcpus: 1,
            paged: false,
        })
    }

    proptest! {
        /// `VmStates` against a `HashMap`: keys that grow the dense table, keys just past its
        /// reach and large keys that go to the hash map, inserted, replaced, looked up, removed.
        #[test]
        fn vm_states_match_a_hash_map(
            ops in prop::collection::vec((0u8..4, 0u8..4, 0u64..20_000, any::<u64>()), 0..2000),
        ) {
            let (mut t, mut o) = (VmStates::default(), HashMap::<VmKey, u32>::new());
            let mut next = 0u64;
            for (op, kind, small, big) in ops {
                let key = match kind {
                    0 => { next += 1; next - 1 } // the readers' sequential keys
                    1 => small,
                    2 => next + DENSE_SLACK + small, // past the slack: the hash map
                    _ => big,
                };
                let host = u32::try_from(small % 7).unwrap_or(0);
                match op {
                    0 | 1 => {
                        let st = if op == 0 { live(host) } else { VmState::Rejected };
                        let was = t.insert(key, st).map(|s| match s { VmState::Live(l) => l.host, VmState::Rejected => 99 });
                        let want = if op == 0 { host } else { 99 };
                        prop_assert_eq!(was, o.insert(key, want));
                    }
                    2 => {
                        let was = t.remove(key).map(|s| match s { VmState::Live(l) => l.host, VmState::Rejected => 99 });
                        prop_assert_eq!(was, o.remove(&key));
                    }
                    _ => {
                        prop_assert_eq!(t.contains_key(key), o.contains_key(&key));
                        let got = t.get(key).map(|s| match s { VmState::Live(l) => l.host, VmState::Rejected => 99 });
                        prop_assert_eq!(got, o.get(&key).copied());
                    }
                }
                prop_assert_eq!(t.values().count(), o.len());
                prop_assert!(t.dense.len() as u64 <= 2 * t.dense_keys.max(1) * 5 / 4 + 2 * DENSE_SLACK);
            }
        }
    }
}
