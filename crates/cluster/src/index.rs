//! The scheduler's own per-host summary, kept beside each host's memory manager so that policies
//! never scan every host: free bytes, free cores, the multiset of free-extent lengths (derived
//! from the allocated extents the memory manager returned), and cluster-wide indexes over them
//! (max-trees for first-fit searches, ordered sets for best/worst-fit, a global extent index for
//! segment best-fit). Every update is O(log hosts + log extents).

use crate::engine::VmHash;
use crate::hm::Extent;
use compromis_hostmem::warm::{prefetch, prefetch_slice};
use compromis_types::Address;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

/// Host number within the fleet.
pub type HostId = u32;

/// One host's summary.
#[derive(Clone, Debug)]
pub struct HostSummary {
    /// Memory offered to VMs.
    pub capacity: u64,
    /// Free bytes.
    pub free: u64,
    /// Cores.
    pub cores: u32,
    /// Free cores.
    pub free_cores: u32,
    /// Largest free extent.
    pub largest: u64,
    /// Live VMs.
    pub vms: u32,
    /// Free-extent length to `(count, slot)`: how many free extents of that length, and the
    /// length's group in the extent index ([`KeyGroups`], when kept).
    lens: SortedMap<(u32, u32)>,
    alloc: SortedMap<u64>,
}

/// A small map from `u64` keys, kept as a vector sorted by key. A host holds tens of VMs, so a
/// binary search and a short `memmove` beat a B-tree's node walks and allocations; the vector's
/// capacity is reused, so a steady replay allocates nothing here.
#[derive(Clone, Debug, Default)]
struct SortedMap<V> {
    v: Vec<(u64, V)>,
}

impl<V: Copy> SortedMap<V> {
    fn pos(&self, k: u64) -> Result<usize, usize> {
        self.v.binary_search_by_key(&k, |e| e.0)
    }
    fn insert(&mut self, k: u64, val: V) {
        match self.pos(k) {
            Ok(i) => self.v[i].1 = val,
            Err(i) => self.v.insert(i, (k, val)),
        }
    }
    #[cfg(test)]
    fn remove(&mut self, k: u64) {
        if let Ok(i) = self.pos(k) {
            self.v.remove(i);
        }
    }
    /// The entry with the largest key below `k`.
    #[cfg(test)]
    fn before(&self, k: u64) -> Option<(u64, V)> {
        let i = self.v.partition_point(|e| e.0 < k);
        i.checked_sub(1).map(|i| self.v[i])
    }
    /// The entry with the smallest key at or above `k`.
    fn at_or_after(&self, k: u64) -> Option<(u64, V)> {
        self.v.get(self.v.partition_point(|e| e.0 < k)).copied()
    }
    fn last_key(&self) -> Option<u64> {
        self.v.last().map(|e| e.0)
    }
    fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, V)> + '_ {
        self.v.iter().copied()
    }
}

impl HostSummary {
    fn new(capacity: u64, cores: u32) -> HostSummary {
        let mut lens = SortedMap::default();
        lens.insert(capacity, (1, 0));
        HostSummary {
            capacity,
            free: capacity,
            cores,
            free_cores: cores,
            largest: capacity,
            vms: 0,
            lens,
            alloc: SortedMap::default(),
        }
    }

    /// The free gap around `s` given the allocated extents: `[end of predecessor, start of
    /// successor)` (the oracle of [`HostSummary::insert_alloc`] and [`HostSummary::remove_alloc`]).
    #[cfg(test)]
    fn gap(&self, s: u64) -> (u64, u64) {
        let a = self.alloc.before(s).map_or(0, |(st, l)| st + l);
        let b = self
            .alloc
            .at_or_after(s)
            .map_or(self.capacity, |(st, _)| st);
        (a, b)
    }

    /// Records the allocated extent `[st, st + len)` and returns the free gap it was cut from,
    /// as [`HostSummary::gap`] gave it before the insert (one search for both).
    fn insert_alloc(&mut self, st: u64, len: u64) -> (u64, u64) {
        let v = &mut self.alloc.v;
        let i = v.partition_point(|e| e.0 < st);
        let a = i.checked_sub(1).map_or(0, |j| v[j].0 + v[j].1);
        match v.get_mut(i) {
            Some(e) if e.0 == st => {
                e.1 = len;
                (a, st)
            }
            Some(e) => {
                let b = e.0;
                v.insert(i, (st, len));
                (a, b)
            }
            None => {
                v.push((st, len));
                (a, self.capacity)
            }
        }
    }

    /// Forgets the allocated extent starting at `st` and returns the free gap around it, as
    /// [`HostSummary::gap`] gives it after the removal (one search for both).
    fn remove_alloc(&mut self, st: u64) -> (u64, u64) {
        let v = &mut self.alloc.v;
        let i = v.partition_point(|e| e.0 < st);
        if v.get(i).is_some_and(|e| e.0 == st) {
            v.remove(i);
        }
        let a = i.checked_sub(1).map_or(0, |j| v[j].0 + v[j].1);
        let b = v.get(i).map_or(self.capacity, |e| e.0);
        (a, b)
    }

    /// Free-extent lengths, largest first.
    pub fn free_lengths(&self) -> impl Iterator<Item = u64> + '_ {
        self.lens
            .iter()
            .rev()
            .flat_map(|(l, (c, _))| std::iter::repeat_n(l, c as usize))
    }

    /// The smallest free extent of at least `len` bytes.
    pub fn smallest_fitting(&self, len: u64) -> Option<u64> {
        self.lens.at_or_after(len).map(|(l, _)| l)
    }

    /// Allocated extents `(start, len)` in address order.
    pub fn allocated(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.alloc.iter()
    }
}

/// A max-tree node: the maxima of free bytes, largest free extent and free cores below it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Node {
    free: u64,
    largest: u64,
    cores: u32,
}

/// Max segment tree over hosts of `(free bytes, largest extent, free cores)`, for the first-fit
/// searches by free bytes and by largest extent. Each node keeps the three maxima side by side,
/// so one climb serves both searches; an update stops climbing at the first ancestor whose
/// maxima do not change, so a change on a host that is not the maximum of its subtree costs a
/// few levels, not the tree's height.
#[derive(Clone, Debug)]
struct MaxTree {
    size: usize,
    node: Vec<Node>,
}

impl MaxTree {
    fn new(n: usize) -> MaxTree {
        let size = n.next_power_of_two().max(1);
        MaxTree {
            size,
            node: vec![Node::default(); 2 * size],
        }
    }

    fn set(&mut self, i: usize, free: u64, largest: u64, cores: u32) {
        let mut p = i + self.size;
        self.node[p] = Node {
            free,
            largest,
            cores,
        };
        while p > 1 {
            let parent = p / 2;
            let (a, b) = (self.node[2 * parent], self.node[2 * parent + 1]);
            let m = Node {
                free: a.free.max(b.free),
                largest: a.largest.max(b.largest),
                cores: a.cores.max(b.cores),
            };
            if self.node[parent] == m {
                break;
            }
            self.node[parent] = m;
            p = parent;
        }
    }

    /// First leaf index >= `from` whose value (largest extent when `LARGEST`, else free bytes)
    /// is >= `v` with cores >= `c`. From leaf 0 (the usual search) a descent from the root;
    /// from a later leaf (random-fit's start) a climb from that leaf: the leaf itself first (it
    /// usually qualifies while the fleet has room), else up to the nearest ancestor whose right
    /// sibling qualifies and down from there. Every node reached that way lies right of `from`,
    /// so no range test, and the cold lines touched are the leaf and its near ancestors, not a
    /// path from the root.
    #[inline]
    fn first<const LARGEST: bool>(&self, from: usize, v: u64, c: u32) -> Option<usize> {
        if from == 0 {
            self.search::<LARGEST>(1, v, c)
        } else if from < self.size {
            self.search::<LARGEST>(from + self.size, v, c)
        } else {
            None
        }
    }

    /// The search of [`MaxTree::first`] from node `n`: a depth-first descent, left child first,
    /// that backs up to the nearest untried right sibling at a dead end (the two maxima of a
    /// node may come from different leaves, so a qualifying node can hold no qualifying leaf).
    /// The first qualifying leaf of `n`'s subtree or right of it.
    fn search<const LARGEST: bool>(&self, mut n: usize, v: u64, c: u32) -> Option<usize> {
        let ok = |n: usize| {
            let x = self.node[n];
            (if LARGEST { x.largest } else { x.free }) >= v && x.cores >= c
        };
        loop {
            if n >= self.size {
                if ok(n) {
                    return Some(n - self.size);
                }
            } else {
                let l = 2 * n;
                if ok(l) {
                    n = l;
                    continue;
                }
                if ok(l + 1) {
                    n = l + 1;
                    continue;
                }
            }
            // Dead end (or a failing start): up to the nearest left child whose right sibling
            // qualifies.
            loop {
                if n == 1 {
                    return None;
                }
                if n.is_multiple_of(2) && ok(n + 1) {
                    n += 1;
                    break;
                }
                n /= 2;
            }
        }
    }
}

/// Which ordered indexes a replay keeps up to date (the max-trees, sums and per-host summaries
/// are always kept): a policy declares what it reads, so each update touches only those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexNeeds {
    /// Hosts ordered by free bytes ([`ClusterIndex::by_free_from`]).
    pub by_free: bool,
    /// Hosts ordered by free bytes within each count of free cores
    /// ([`ClusterIndex::best_by_free`]).
    pub by_free_cores: bool,
    /// The host with the most free bytes within each count of free cores
    /// ([`ClusterIndex::worst_by_free`]).
    pub most_free: bool,
    /// Hosts ordered by largest extent ([`ClusterIndex::by_largest_from`]).
    pub by_largest: bool,
    /// Every free extent of the cluster ([`ClusterIndex::extents_from`]).
    pub extents: bool,
    /// Each host's free-extent lengths and allocated extents ([`HostSummary::free_lengths`],
    /// [`HostSummary::smallest_fitting`], [`HostSummary::allocated`]; always kept with
    /// `extents`). Without them the caller gives each host's largest free extent
    /// ([`ClusterIndex::on_create_sized`]): the memory manager already keeps its free extents.
    pub host_extents: bool,
}

impl IndexNeeds {
    /// Every index.
    pub const ALL: IndexNeeds = IndexNeeds {
        by_free: true,
        by_free_cores: true,
        most_free: true,
        by_largest: true,
        extents: true,
        host_extents: true,
    };
    /// Only the max-trees (first-fit searches).
    pub const TREES: IndexNeeds = IndexNeeds {
        by_free: false,
        by_free_cores: false,
        most_free: false,
        by_largest: false,
        extents: false,
        host_extents: false,
    };
    /// Both sets of needs.
    pub fn union(self, o: IndexNeeds) -> IndexNeeds {
        IndexNeeds {
            by_free: self.by_free || o.by_free,
            by_free_cores: self.by_free_cores || o.by_free_cores,
            most_free: self.most_free || o.most_free,
            by_largest: self.by_largest || o.by_largest,
            extents: self.extents || o.extents,
            host_extents: self.host_extents || o.host_extents,
        }
    }
}

/// The cluster-wide index.
#[derive(Clone, Debug)]
pub struct ClusterIndex {
    needs: IndexNeeds,
    hosts: Vec<HostSummary>,
    tree: MaxTree,
    by_free: BTreeSet<(u64, HostId)>,
    /// `by_free_cores[c]`: the hosts with `c` free cores, as `(free, host)`.
    by_free_cores: Vec<BTreeSet<(u64, HostId)>>,
    /// `most_free[c]`: a max-heap of `(free, host)` of hosts pushed when they had `c` free
    /// cores. An entry is stale once its host's free bytes or cores differ; each heap's top is
    /// kept current (an update pops the stale tops of the heap its host leaves), so
    /// [`ClusterIndex::worst_by_free`] reads one top per count. An update costs one push
    /// instead of a B-tree removal and insertion; the heaps are rebuilt from the hosts once
    /// stale entries outnumber the hosts.
    most_free: Vec<BinaryHeap<(u64, HostId)>>,
    /// Entries in `most_free`, stale or not.
    most_free_len: usize,
    /// Each host's free cores as `by_largest` and `extents` last filed them, side by side for
    /// their walks (kept with `by_largest` or `extents`, else empty).
    free_cores: Vec<u32>,
    /// `(largest extent, host)`, walked by [`ClusterIndex::best_by_largest`].
    by_largest: KeyGroups,
    /// Each host's group in `by_largest`.
    largest_slot: Vec<u32>,
    /// Every free extent, `(len, host)` (with the number of extents of that length on that
    /// host), walked by [`ClusterIndex::smallest_extent`].
    extents: KeyGroups,
    sum_free: u64,
    sum_largest: u64,
    in_use: u32,
}

impl ClusterIndex {
    /// An index of empty hosts of the given `(capacity, cores)`, every ordered index kept.
    pub fn new(hosts: impl IntoIterator<Item = (u64, u32)>) -> ClusterIndex {
        ClusterIndex::with_needs(hosts, IndexNeeds::ALL)
    }

    /// An index that keeps only the ordered indexes in `needs` (the others stay empty).
    pub fn with_needs(
        hosts: impl IntoIterator<Item = (u64, u32)>,
        needs: IndexNeeds,
    ) -> ClusterIndex {
        let mut hosts: Vec<HostSummary> = hosts
            .into_iter()
            .map(|(m, c)| HostSummary::new(m, c))
            .collect();
        let n = hosts.len();
        let mut ix = ClusterIndex {
            needs,
            tree: MaxTree::new(n),
            by_free: BTreeSet::new(),
            by_free_cores: Vec::new(),
            most_free: Vec::new(),
            most_free_len: 0,
            free_cores: if needs.by_largest || needs.extents {
                hosts.iter().map(|h| h.free_cores).collect()
            } else {
                Vec::new()
            },
            by_largest: KeyGroups::default(),
            largest_slot: if needs.by_largest {
                vec![0; n]
            } else {
                Vec::new()
            },
            extents: KeyGroups::default(),
            sum_free: 0,
            sum_largest: 0,
            in_use: 0,
            hosts: Vec::new(),
        };
        for (i, h) in hosts.iter_mut().enumerate() {
            let id = host_id(i);
            ix.tree.set(i, h.free, h.largest, h.free_cores);
            if needs.by_free {
                ix.by_free.insert((h.free, id));
            }
            if needs.by_free_cores {
                ix.cores_bucket(h.free_cores).insert((h.free, id));
            }
            if needs.most_free {
                heap(&mut ix.most_free, h.free_cores).push((h.free, id));
                ix.most_free_len += 1;
            }
            if needs.by_largest {
                ix.largest_slot[i] = ix.by_largest.add(h.largest, id, h.free_cores);
            }
            if needs.extents {
                h.lens.v[0].1.1 = ix.extents.add(h.capacity, id, h.free_cores);
            }
            ix.sum_free += h.free;
            ix.sum_largest += h.largest;
        }
        ix.hosts = hosts;
        ix
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True without hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether each host's free-extent lengths and allocated extents are kept (see
    /// [`IndexNeeds::host_extents`]): then [`ClusterIndex::on_create`] and
    /// [`ClusterIndex::on_destroy`] must be used, else the `_sized` forms suffice.
    pub fn keeps_host_extents(&self) -> bool {
        self.needs.host_extents || self.needs.extents
    }

    /// Starts loading host `h`'s summary and its max-tree leaf (a cache hint, see
    /// [`compromis_hostmem::warm`]).
    #[inline]
    pub fn prefetch_host(&self, h: HostId) {
        let i = h as usize;
        if let Some(s) = self.hosts.get(i) {
            prefetch(s);
        }
        if let Some(n) = self.tree.node.get(i + self.tree.size) {
            prefetch(n);
        }
        if let Some(c) = self.free_cores.get(i) {
            prefetch(c);
        }
        if let Some(s) = self.largest_slot.get(i) {
            prefetch(s);
        }
    }

    /// Starts loading host `h`'s free-extent lengths and allocated extents, when kept (reads
    /// its summary, which [`ClusterIndex::prefetch_host`] started loading earlier).
    #[inline]
    pub fn prefetch_host_extents(&self, h: HostId) {
        if self.keeps_host_extents()
            && let Some(s) = self.hosts.get(h as usize)
        {
            prefetch_slice(&s.lens.v, 2);
            prefetch_slice(&s.alloc.v, 4);
        }
    }

    /// One host's summary.
    pub fn host(&self, h: HostId) -> &HostSummary {
        &self.hosts[h as usize]
    }

    /// First host (lowest id >= `from`) with `free >= mem` and enough cores.
    pub fn first_by_free(&self, from: usize, mem: u64, vcpus: u32) -> Option<HostId> {
        self.tree
            .first::<false>(from, mem, vcpus)
            .filter(|&i| i < self.hosts.len())
            .map(host_id)
    }

    /// First host (lowest id >= `from`) with a free extent of `mem` bytes and enough cores.
    pub fn first_by_extent(&self, from: usize, mem: u64, vcpus: u32) -> Option<HostId> {
        self.tree
            .first::<true>(from, mem, vcpus)
            .filter(|&i| i < self.hosts.len())
            .map(host_id)
    }

    /// Hosts ordered by free bytes (ascending), from the first with `free >= mem`.
    pub fn by_free_from(&self, mem: u64) -> impl DoubleEndedIterator<Item = (u64, HostId)> + '_ {
        debug_assert!(self.needs.by_free, "by_free is not kept by this index");
        self.by_free.range((mem, 0)..).copied()
    }

    /// The host with the least free memory that still has `mem` bytes and `vcpus` free cores
    /// (ties: lowest id): the first of [`ClusterIndex::by_free_from`] with enough cores, found
    /// with one ordered lookup per count of free cores instead of a scan.
    pub fn best_by_free(&self, mem: u64, vcpus: u32) -> Option<HostId> {
        self.with_cores(vcpus)
            .filter_map(|b| b.range((mem, 0)..).next())
            .min()
            .map(|&(_, h)| h)
    }

    /// The host with the most free memory (ties: highest id) if it has `mem` bytes, among those
    /// with `vcpus` free cores: the last of [`ClusterIndex::by_free_from`] with enough cores.
    pub fn worst_by_free(&self, mem: u64, vcpus: u32) -> Option<HostId> {
        debug_assert!(self.needs.most_free, "most_free is not kept by this index");
        self.most_free
            .iter()
            .skip(vcpus as usize)
            .filter_map(|b| b.peek().filter(|&&(free, _)| free >= mem))
            .max()
            .map(|&(_, h)| h)
    }

    /// Whether `most_free`'s entry `(free, h)` in the heap of `cores` is current.
    #[inline]
    fn most_free_current(&self, (free, h): (u64, HostId), cores: u32) -> bool {
        let s = &self.hosts[h as usize];
        s.free == free && s.free_cores == cores
    }

    /// `most_free`'s invariant: every host's current entry is in the heap of its free cores,
    /// and every heap's top is current.
    #[cfg(test)]
    fn most_free_ok(&self) -> bool {
        let tops = self.most_free.iter().enumerate().all(|(c, b)| {
            b.peek()
                .is_none_or(|&top| self.most_free_current(top, u32::try_from(c).unwrap()))
        });
        let all = self.hosts.iter().enumerate().all(|(i, s)| {
            self.most_free
                .get(s.free_cores as usize)
                .is_some_and(|b| b.iter().any(|&e| e == (s.free, host_id(i))))
        });
        tops && all
    }

    /// Files host `h` (now `free` bytes, `cores` free cores, before `old_cores`) in
    /// `most_free`: one push, then the stale tops of the heap it left are popped.
    fn most_free_update(&mut self, h: HostId, free: u64, cores: u32, old_cores: u32) {
        heap(&mut self.most_free, cores).push((free, h));
        self.most_free_len += 1;
        if self.most_free_len > 2 * self.hosts.len() + 1024 {
            let mut heaps = std::mem::take(&mut self.most_free);
            for b in &mut heaps {
                b.clear();
            }
            for (i, s) in self.hosts.iter().enumerate() {
                heap(&mut heaps, s.free_cores).push((s.free, host_id(i)));
            }
            self.most_free = heaps;
            self.most_free_len = self.hosts.len();
            return;
        }
        while let Some(&top) = self.most_free[old_cores as usize].peek() {
            if self.most_free_current(top, old_cores) {
                break;
            }
            self.most_free[old_cores as usize].pop();
            self.most_free_len -= 1;
        }
    }

    /// The `(free, host)` sets of the hosts with at least `vcpus` free cores, one per count.
    fn with_cores(&self, vcpus: u32) -> impl Iterator<Item = &BTreeSet<(u64, HostId)>> {
        debug_assert!(
            self.needs.by_free_cores,
            "by_free_cores is not kept by this index"
        );
        self.by_free_cores.iter().skip(vcpus as usize)
    }

    /// The `(free, host)` set of hosts with `cores` free cores, created on first use.
    fn cores_bucket(&mut self, cores: u32) -> &mut BTreeSet<(u64, HostId)> {
        bucket(&mut self.by_free_cores, cores)
    }

    /// The host with the smallest largest free extent of at least `mem` bytes among those with
    /// `vcpus` free cores (ties: lowest id): the first of [`ClusterIndex::by_largest_from`] with
    /// enough cores, found by a walk of the distinct largest extents that skips those without
    /// such a host in O(1) (`KeyGroups` in this file).
    pub fn best_by_largest(&self, mem: u64, vcpus: u32) -> Option<HostId> {
        debug_assert!(
            self.needs.by_largest,
            "by_largest is not kept by this index"
        );
        self.by_largest
            .first(mem, u64::MAX, vcpus, &self.free_cores)
            .map(|(_, h)| h)
    }

    /// Hosts ordered by largest free extent (ascending), from the first with `largest >= mem`.
    /// Collects them: for tests and checks.
    pub fn by_largest_from(&self, mem: u64) -> Vec<(u64, HostId)> {
        debug_assert!(
            self.needs.by_largest,
            "by_largest is not kept by this index"
        );
        self.by_largest.all_from(mem)
    }

    /// Every free extent of the cluster as `(len, host)` ascending, from the first with `len >= mem`
    /// (one entry per distinct length per host). Collects them: for tests and checks; the
    /// policies use [`ClusterIndex::smallest_extent`].
    pub fn extents_from(&self, mem: u64) -> Vec<(u64, HostId)> {
        debug_assert!(self.needs.extents, "extents are not kept by this index");
        self.extents.all_from(mem)
    }

    /// The smallest free extent of `mem..=max` bytes among the hosts with at least `vcpus` free
    /// cores, as `(len, host)` (ties: lowest host id): the first entry of
    /// [`ClusterIndex::extents_from`] of a host with enough cores.
    ///
    /// The walk visits distinct lengths, not extents: a length none of whose hosts has enough
    /// free cores is skipped in O(1) (`KeyGroups` in this file).
    pub fn smallest_extent(&self, mem: u64, max: u64, vcpus: u32) -> Option<(u64, HostId)> {
        debug_assert!(self.needs.extents, "extents are not kept by this index");
        self.extents.first(mem, max, vcpus, &self.free_cores)
    }

    /// Hosts with at least one VM.
    pub fn hosts_in_use(&self) -> u32 {
        self.in_use
    }

    /// Free bytes of the cluster.
    pub fn free_bytes(&self) -> u64 {
        self.sum_free
    }

    /// Cluster fragmentation: the share of free memory outside each host's largest free extent,
    /// `1 - sum(largest) / sum(free)` (0 when nothing is free).
    pub fn fragmentation(&self) -> f64 {
        if self.sum_free == 0 {
            0.0
        } else {
            1.0 - self.sum_largest as f64 / self.sum_free as f64
        }
    }

    /// Adds one free extent of length `l` to host `h` (summary and global index).
    fn add_len(&mut self, h: HostId, l: u64) {
        if l > 0 {
            let lens = &mut self.hosts[h as usize].lens;
            match lens.pos(l) {
                Ok(i) => lens.v[i].1.0 += 1,
                Err(i) => {
                    // The host's first extent of this length: into the extent index.
                    let slot = if self.needs.extents {
                        self.extents.add(l, h, self.free_cores[h as usize])
                    } else {
                        0
                    };
                    lens.v.insert(i, (l, (1, slot)));
                }
            }
        }
    }

    /// Removes one free extent of length `l` from host `h`.
    fn del_len(&mut self, h: HostId, l: u64) {
        if l == 0 {
            return;
        }
        let lens = &mut self.hosts[h as usize].lens;
        let Ok(i) = lens.pos(l) else {
            return;
        };
        let (c, slot) = &mut lens.v[i].1;
        *c -= 1;
        if *c == 0 {
            let slot = *slot;
            lens.v.remove(i);
            // The host's last extent of this length: out of the extent index.
            if self.needs.extents {
                self.extents.del(slot, l, h, self.free_cores[h as usize]);
            }
        }
    }

    /// Host `h`'s largest extent from its free-extent lengths.
    fn largest_from_lens(&mut self, h: HostId) {
        let s = &mut self.hosts[h as usize];
        s.largest = s.lens.last_key().unwrap_or(0);
    }

    /// Updates every per-host index after a change of host `h`, given the values before it.
    fn refresh(&mut self, h: HostId, old: (u64, u64, u32, u32)) {
        let (old_free, old_largest, old_cores, old_vms) = old;
        let s = &self.hosts[h as usize];
        let (free, largest, cores, vms) = (s.free, s.largest, s.free_cores, s.vms);
        if self.needs.by_largest {
            let slot = &mut self.largest_slot[h as usize];
            if largest != old_largest {
                self.by_largest.del(*slot, old_largest, h, old_cores);
                *slot = self.by_largest.add(largest, h, cores);
            } else {
                self.by_largest.refile(*slot, old_cores, cores);
            }
        }
        if cores != old_cores && self.needs.extents {
            // The host's free lengths were filed under its old free cores (`add_len` and
            // `del_len` read `free_cores`, not yet updated).
            for &(_, (_, slot)) in &s.lens.v {
                self.extents.refile(slot, old_cores, cores);
            }
        }
        if cores != old_cores
            && let Some(c) = self.free_cores.get_mut(h as usize)
        {
            *c = cores;
        }
        if free != old_free {
            if self.needs.by_free {
                self.by_free.remove(&(old_free, h));
                self.by_free.insert((free, h));
            }
            self.sum_free = self.sum_free - old_free + free;
        }
        if largest != old_largest {
            self.sum_largest = self.sum_largest - old_largest + largest;
        }
        if self.needs.by_free_cores && (free != old_free || cores != old_cores) {
            self.cores_bucket(old_cores).remove(&(old_free, h));
            self.cores_bucket(cores).insert((free, h));
        }
        if self.needs.most_free && (free != old_free || cores != old_cores) {
            self.most_free_update(h, free, cores, old_cores);
        }
        match (old_vms > 0, vms > 0) {
            (false, true) => self.in_use += 1,
            (true, false) => self.in_use -= 1,
            _ => {}
        }
        if free != old_free || largest != old_largest || cores != old_cores {
            self.tree.set(h as usize, free, largest, cores);
        }
    }

    /// Host `h`'s values before a change, for [`ClusterIndex::refresh`].
    #[inline]
    fn snapshot(&self, h: HostId) -> (u64, u64, u32, u32) {
        let s = &self.hosts[h as usize];
        (s.free, s.largest, s.free_cores, s.vms)
    }

    /// Records a VM provisioned on `h` with these extents.
    pub fn on_create(&mut self, h: HostId, extents: &[Extent], vcpus: u32) {
        let old = self.snapshot(h);
        for e in extents {
            let st = e.start.raw();
            let s = &mut self.hosts[h as usize];
            let (a, b) = s.insert_alloc(st, e.len);
            s.free -= e.len;
            self.del_len(h, b - a);
            self.add_len(h, st - a);
            self.add_len(h, b - st - e.len);
        }
        let s = &mut self.hosts[h as usize];
        s.free_cores -= vcpus;
        s.vms += 1;
        self.largest_from_lens(h);
        self.refresh(h, old);
    }

    /// Records a VM of `bytes` provisioned on `h`, after which the host's largest free extent
    /// is `largest` (from its memory manager). Only for an index that does not keep the hosts'
    /// extents ([`ClusterIndex::keeps_host_extents`]).
    pub fn on_create_sized(&mut self, h: HostId, bytes: u64, vcpus: u32, largest: u64) {
        debug_assert!(!self.keeps_host_extents(), "this index needs the extents");
        let old = self.snapshot(h);
        let s = &mut self.hosts[h as usize];
        s.free -= bytes;
        s.free_cores -= vcpus;
        s.vms += 1;
        s.largest = largest;
        self.refresh(h, old);
    }

    /// Records a VM of `bytes` leaving `h`, after which the host's largest free extent is
    /// `largest`. Only for an index that does not keep the hosts' extents.
    pub fn on_destroy_sized(&mut self, h: HostId, bytes: u64, vcpus: u32, largest: u64) {
        debug_assert!(!self.keeps_host_extents(), "this index needs the extents");
        let old = self.snapshot(h);
        let s = &mut self.hosts[h as usize];
        s.free += bytes;
        s.free_cores += vcpus;
        s.vms -= 1;
        s.largest = largest;
        self.refresh(h, old);
    }

    /// Records that host `h`'s largest free extent is now `largest` (after a compaction moved its
    /// VMs). Only for an index that does not keep the hosts' extents.
    pub fn on_moved_sized(&mut self, h: HostId, largest: u64) {
        debug_assert!(!self.keeps_host_extents(), "this index needs the extents");
        let old = self.snapshot(h);
        self.hosts[h as usize].largest = largest;
        self.refresh(h, old);
    }

    /// Records a VM with these extents leaving `h`.
    pub fn on_destroy(&mut self, h: HostId, extents: &[Extent], vcpus: u32) {
        let old = self.snapshot(h);
        for e in extents {
            let st = e.start.raw();
            let (a, b) = self.hosts[h as usize].remove_alloc(st);
            self.del_len(h, st - a);
            self.del_len(h, b - st - e.len);
            self.add_len(h, b - a);
            self.hosts[h as usize].free += e.len;
        }
        let s = &mut self.hosts[h as usize];
        s.free_cores += vcpus;
        s.vms -= 1;
        self.largest_from_lens(h);
        self.refresh(h, old);
    }

    /// Replaces host `h`'s allocated extents (after a compaction moved them).
    pub fn on_moved(&mut self, h: HostId, all_extents: impl IntoIterator<Item = Extent>) {
        let old = self.snapshot(h);
        let lens: Vec<u64> = self.hosts[h as usize].free_lengths().collect();
        for l in lens {
            self.del_len(h, l);
        }
        let s = &mut self.hosts[h as usize];
        s.alloc.v.clear();
        for e in all_extents {
            s.alloc.insert(e.start.raw(), e.len);
        }
        let mut cur = 0;
        let mut gaps = Vec::with_capacity(s.alloc.v.len() + 1);
        for (st, l) in s.alloc.iter() {
            gaps.push(st - cur);
            cur = st + l;
        }
        gaps.push(s.capacity - cur);
        for g in gaps {
            self.add_len(h, g);
        }
        self.largest_from_lens(h);
        self.refresh(h, old);
    }
}

/// Free-core classes of [`KeyGroups`]: a host's free cores, capped at 63 (one bit of a `u64`).
const CLASS_CAP: u32 = 63;

/// The class bit of a host with `cores` free cores.
#[inline]
fn class_bit(cores: u32) -> u64 {
    1 << cores.min(CLASS_CAP)
}

/// Ordered `(key, host)` entries (a host's largest extent, or its distinct free-extent
/// lengths), grouped by key: a sorted vector of the distinct keys, each with the bit mask of the
/// free-core classes present in its group (bit `k`: a host with `k` free cores, 63 for 63 or
/// more) and a slot (stable while the group lives) to the group, which holds the key's hosts in
/// id order and the number of them in each class. A walk from a key up to the first host with at
/// least `c` free cores tests one mask per distinct key, so a key none of whose hosts has `c`
/// cores costs O(1), and scans hosts only in a key that has one (or, for `c` above 63, may
/// have one). A host's change of free cores moves it between classes in the groups of its keys
/// (the caller keeps each slot: O(1) per key), never between ordered sets. There are few
/// distinct keys (VM sizes are few; 70-400 lengths live at a time on the Azure trace), so the
/// sorted vector's inserts are short moves; a key whose group empties stays (mask 0) until such
/// keys are an eighth of the vector, so a length that comes back is not inserted again.
#[derive(Clone, Debug, Default)]
struct KeyGroups {
    /// The distinct keys ascending, each with its group's class mask (bit `k` set iff some host
    /// of the group has `k` free cores, 63: 63 or more) beside it, so that a walk reads this
    /// vector alone until a key's mask says it has a host with the cores.
    keys: Vec<KeyEntry>,
    /// Each key's slot, so that adding a host to a key that has a group costs a hash look-up,
    /// not a binary search of `keys` (its order never reaches the output).
    slot_of: HashMap<u64, u32, VmHash>,
    /// Indexed by [`KeyEntry::slot`].
    groups: Vec<Group>,
    /// Slots of `groups` not in use.
    spare: Vec<u32>,
    /// Keys in `keys` whose groups are empty (see [`KeyGroups::del`]).
    dead: usize,
}

#[derive(Clone, Copy, Debug)]
struct KeyEntry {
    key: u64,
    /// The group's class mask.
    mask: u64,
    slot: u32,
}

#[derive(Clone, Debug)]
struct Group {
    /// The key's hosts.
    hosts: HostSet,
    /// Hosts per free-core class.
    classes: [u32; CLASS_CAP as usize + 1],
    /// The group's key.
    key: u64,
    /// Where the key's entry was last seen in [`KeyGroups::keys`]: a hint, since inserting or
    /// removing a smaller key shifts it (checked, then searched for when wrong).
    pos: u32,
}

impl Default for Group {
    fn default() -> Group {
        Group {
            hosts: HostSet::Small(Vec::new()),
            classes: [0; CLASS_CAP as usize + 1],
            key: 0,
            pos: 0,
        }
    }
}

impl KeyGroups {
    /// The position in `keys` of the group at `slot` (its hint when right, else searched for
    /// and the hint updated).
    #[inline]
    fn key_pos(&mut self, slot: u32) -> usize {
        let hint = self.groups[slot as usize].pos as usize;
        if self.keys.get(hint).is_some_and(|e| e.slot == slot) {
            hint
        } else {
            self.key_pos_search(slot)
        }
    }

    /// [`KeyGroups::key_pos`] when the hint is wrong (a smaller key came or went).
    #[inline(never)]
    fn key_pos_search(&mut self, slot: u32) -> usize {
        let g = &mut self.groups[slot as usize];
        let key = g.key;
        let i = self
            .keys
            .binary_search_by_key(&key, |e| e.key)
            .expect("a live group's key is in the key vector");
        g.pos = u32::try_from(i).expect("fewer than 2^32 keys");
        i
    }

    /// Counts one more host of `cores` free cores in the group at `slot`.
    #[inline]
    fn class_in(&mut self, slot: u32, cores: u32) {
        let n = &mut self.groups[slot as usize].classes[cores.min(CLASS_CAP) as usize];
        *n += 1;
        if *n == 1 {
            let i = self.key_pos(slot);
            self.keys[i].mask |= class_bit(cores);
        }
    }

    /// Counts one host of `cores` free cores less in the group at `slot`.
    #[inline]
    fn class_out(&mut self, slot: u32, cores: u32) {
        let n = &mut self.groups[slot as usize].classes[cores.min(CLASS_CAP) as usize];
        *n -= 1;
        if *n == 0 {
            let i = self.key_pos(slot);
            self.keys[i].mask &= !class_bit(cores);
        }
    }

    /// Adds host `h` (with `cores` free cores) to `key`'s group, which it is not in, and
    /// returns the group's slot (stable until the group empties: the caller keeps it for
    /// [`KeyGroups::del`] and [`KeyGroups::refile`]).
    fn add(&mut self, key: u64, h: HostId, cores: u32) -> u32 {
        let slot = match self.slot_of.get(&key) {
            Some(&slot) => {
                if self.groups[slot as usize].hosts.is_empty() {
                    self.dead -= 1;
                }
                slot
            }
            None => {
                let i = self.keys.partition_point(|e| e.key < key);
                let slot = self.spare.pop().unwrap_or_else(|| {
                    self.groups.push(Group::default());
                    u32::try_from(self.groups.len() - 1).expect("fewer than 2^32 keys")
                });
                let g = &mut self.groups[slot as usize];
                g.key = key;
                g.pos = u32::try_from(i).expect("fewer than 2^32 keys");
                self.keys.insert(i, KeyEntry { key, mask: 0, slot });
                self.slot_of.insert(key, slot);
                slot
            }
        };
        self.groups[slot as usize].hosts.insert(h);
        self.class_in(slot, cores);
        slot
    }

    /// Removes host `h` (`cores` free cores as last filed) from `key`'s group, at `slot`.
    fn del(&mut self, slot: u32, key: u64, h: HostId, cores: u32) {
        let g = &mut self.groups[slot as usize];
        let was_in = g.hosts.remove(h);
        debug_assert!(was_in, "host {h} is not in the group of {key}");
        if !was_in {
            return;
        }
        let empty = g.hosts.is_empty();
        self.class_out(slot, cores);
        if empty {
            // The key stays, with an empty group and mask 0 (walks pass it in O(1)), so that
            // a key that comes back costs no insert; the dead keys go once they outnumber the
            // live ones.
            debug_assert!(self.groups[slot as usize].classes.iter().all(|&n| n == 0));
            self.dead += 1;
            if self.dead >= 16 && 8 * self.dead > self.keys.len() {
                self.compact();
            }
        }
    }

    /// Drops the keys whose groups are empty and frees their slots.
    fn compact(&mut self) {
        let (groups, slot_of, spare) = (&mut self.groups, &mut self.slot_of, &mut self.spare);
        self.keys.retain(|e| {
            let live = !groups[e.slot as usize].hosts.is_empty();
            if !live {
                slot_of.remove(&e.key);
                spare.push(e.slot);
            }
            live
        });
        for (i, e) in self.keys.iter().enumerate() {
            groups[e.slot as usize].pos = u32::try_from(i).expect("fewer than 2^32 keys");
        }
        self.dead = 0;
    }

    /// A host of the group at `slot` now has `to` free cores instead of `from`: both class
    /// counts change, and the mask (one look-up of the key's entry) only if a count crossed 0.
    #[inline]
    fn refile(&mut self, slot: u32, from: u32, to: u32) {
        let (f, t) = (from.min(CLASS_CAP) as usize, to.min(CLASS_CAP) as usize);
        if f == t {
            return;
        }
        let classes = &mut self.groups[slot as usize].classes;
        classes[f] -= 1;
        classes[t] += 1;
        let (gone, came) = (classes[f] == 0, classes[t] == 1);
        if gone || came {
            let i = self.key_pos(slot);
            let mask = &mut self.keys[i].mask;
            if gone {
                *mask &= !class_bit(from);
            }
            if came {
                *mask |= class_bit(to);
            }
        }
    }

    /// The first entry `(key, host)` with `lo <= key <= max` whose host has at least `vcpus`
    /// free cores (`cores[host]`), in `(key, host)` order.
    #[inline]
    fn first(&self, lo: u64, max: u64, vcpus: u32, cores: &[u32]) -> Option<(u64, HostId)> {
        // Classes that may hold a host with `vcpus` cores: `vcpus` and above (63 holds every
        // count from 63 on, so above 63 a key with that bit is scanned).
        let want = !0u64 << vcpus.min(CLASS_CAP);
        if lo == max {
            // One key (frag-aware's exact fit): its group by hash, no search of the keys.
            let &slot = self.slot_of.get(&lo)?;
            let g = &self.groups[slot as usize];
            // The mask through the position hint when right, else from the class counts.
            let has = match self.keys.get(g.pos as usize) {
                Some(e) if e.slot == slot => e.mask & want != 0,
                _ => g.classes[vcpus.min(CLASS_CAP) as usize..]
                    .iter()
                    .any(|&n| n > 0),
            };
            if !has {
                return None;
            }
            return g
                .hosts
                .first_with(|h| cores[h as usize] >= vcpus)
                .map(|h| (lo, h));
        }
        let from = self.keys.partition_point(|e| e.key < lo);
        let to = if max == u64::MAX {
            self.keys.len()
        } else {
            self.keys.partition_point(|e| e.key <= max)
        };
        for e in self.keys.get(from..to)? {
            if e.mask & want == 0 {
                continue;
            }
            let hosts = &self.groups[e.slot as usize].hosts;
            if let Some(h) = hosts.first_with(|h| cores[h as usize] >= vcpus) {
                return Some((e.key, h));
            }
        }
        None
    }

    /// Every entry from key `lo` on, in `(key, host)` order.
    fn all_from(&self, lo: u64) -> Vec<(u64, HostId)> {
        let from = self.keys.partition_point(|e| e.key < lo);
        let mut out = Vec::new();
        for e in &self.keys[from..] {
            match &self.groups[e.slot as usize].hosts {
                HostSet::Small(v) => out.extend(v.iter().map(|&h| (e.key, h))),
                HostSet::Large(s) => out.extend(s.iter().map(|h| (e.key, h))),
            }
        }
        out
    }
}

/// A group's hosts in id order: a sorted vector while the group is small (most are: a few hosts
/// share a free length), a bitmap over host ids once it grows past [`HostSet::SMALL_MAX`] (the
/// group of the hosts' full capacity holds every idle host, and shifting tens of KiB on each
/// change costs more than setting a bit), back to a vector below half that.
#[derive(Clone, Debug)]
enum HostSet {
    Small(Vec<HostId>),
    Large(HostBits),
}

impl HostSet {
    const SMALL_MAX: usize = 64;

    /// Adds `h` (nothing if present).
    fn insert(&mut self, h: HostId) {
        match self {
            HostSet::Small(v) => {
                if let Err(i) = v.binary_search(&h) {
                    if v.len() < Self::SMALL_MAX {
                        v.insert(i, h);
                    } else {
                        let mut set = HostBits::default();
                        for &x in v.iter() {
                            set.insert(x);
                        }
                        set.insert(h);
                        *self = HostSet::Large(set);
                    }
                }
            }
            HostSet::Large(s) => s.insert(h),
        }
    }

    /// Removes `h`; whether it was there.
    fn remove(&mut self, h: HostId) -> bool {
        match self {
            HostSet::Small(v) => match v.binary_search(&h) {
                Ok(i) => {
                    v.remove(i);
                    true
                }
                Err(_) => false,
            },
            HostSet::Large(s) => {
                let was_in = s.remove(h);
                if s.len < Self::SMALL_MAX / 2 {
                    *self = HostSet::Small(s.iter().collect());
                }
                was_in
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            HostSet::Small(v) => v.is_empty(),
            HostSet::Large(s) => s.len == 0,
        }
    }

    /// The lowest host for which `ok` holds.
    #[inline]
    fn first_with(&self, ok: impl Fn(HostId) -> bool) -> Option<HostId> {
        match self {
            HostSet::Small(v) => v.iter().copied().find(|&h| ok(h)),
            HostSet::Large(s) => s.iter().find(|&h| ok(h)),
        }
    }
}

/// A set of host ids as a bitmap (one bit per host id up to the largest seen), with its size
/// and the first word that may be non-zero, so a scan skips the empty words below it.
#[derive(Clone, Debug, Default)]
struct HostBits {
    words: Vec<u64>,
    len: usize,
    /// No bit is set in `words[..lo]`.
    lo: usize,
}

impl HostBits {
    /// Adds `h` (nothing if present).
    fn insert(&mut self, h: HostId) {
        let (w, b) = (h as usize / 64, h % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let word = &mut self.words[w];
        if *word & (1 << b) == 0 {
            *word |= 1 << b;
            self.len += 1;
            if w < self.lo || self.len == 1 {
                self.lo = w;
            }
        }
    }

    /// Removes `h`; whether it was there.
    fn remove(&mut self, h: HostId) -> bool {
        let (w, b) = (h as usize / 64, h % 64);
        let Some(word) = self.words.get_mut(w) else {
            return false;
        };
        if *word & (1 << b) == 0 {
            return false;
        }
        *word &= !(1 << b);
        self.len -= 1;
        if w == self.lo && *word == 0 {
            while self.lo + 1 < self.words.len() && self.words[self.lo] == 0 {
                self.lo += 1;
            }
        }
        true
    }

    /// The hosts ascending.
    fn iter(&self) -> impl Iterator<Item = HostId> + '_ {
        self.words
            .get(self.lo..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(i, &word)| {
                let base = host_id((self.lo + i) * 64);
                std::iter::successors((word != 0).then_some(word), |&w| {
                    let w = w & (w - 1);
                    (w != 0).then_some(w)
                })
                .map(move |w| base + w.trailing_zeros())
            })
    }
}

/// `sets[c]`, the set of hosts with `c` free cores, created on first use.
fn bucket(sets: &mut Vec<BTreeSet<(u64, HostId)>>, cores: u32) -> &mut BTreeSet<(u64, HostId)> {
    let c = cores as usize;
    if sets.len() <= c {
        sets.resize_with(c + 1, BTreeSet::new);
    }
    &mut sets[c]
}

/// `heaps[c]`, created on first use.
fn heap(heaps: &mut Vec<BinaryHeap<(u64, HostId)>>, cores: u32) -> &mut BinaryHeap<(u64, HostId)> {
    let c = cores as usize;
    if heaps.len() <= c {
        heaps.resize_with(c + 1, BinaryHeap::new);
    }
    &mut heaps[c]
}

/// Host index to id (fleets are limited to 100 million hosts when parsed).
fn host_id(i: usize) -> HostId {
    HostId::try_from(i).expect("fleets have fewer than 2^32 hosts")
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_types::Hpa;

    fn ext(s: u64, l: u64) -> Extent {
        Extent {
            start: Hpa::new(s),
            len: l,
        }
    }

    #[test]
    fn lengths_follow_alloc_and_free() {
        let mut ix = ClusterIndex::new([(100, 4), (50, 4)]);
        ix.on_create(0, &[ext(10, 20)], 1);
        assert_eq!(ix.host(0).free_lengths().collect::<Vec<_>>(), vec![70, 10]);
        ix.on_create(0, &[ext(60, 10), ext(0, 10)], 1);
        assert_eq!(ix.host(0).free_lengths().collect::<Vec<_>>(), vec![30, 30]);
        assert_eq!(ix.first_by_extent(0, 40, 1), Some(1));
        assert_eq!(ix.first_by_free(0, 60, 1), Some(0));
        assert_eq!(ix.extents_from(30), vec![(30, 0), (50, 1)]);
        ix.on_destroy(0, &[ext(10, 20)], 1);
        assert_eq!(ix.host(0).free_lengths().collect::<Vec<_>>(), vec![50, 30]);
        assert_eq!(ix.hosts_in_use(), 1);
        ix.on_moved(0, [ext(0, 10), ext(10, 10)]);
        assert_eq!(ix.host(0).free_lengths().collect::<Vec<_>>(), vec![80]);
        assert!((ix.fragmentation() - 0.0).abs() < 1e-12);
        ix.on_destroy(0, &[ext(0, 10), ext(10, 10)], 1);
        assert_eq!(ix.host(0).free_lengths().collect::<Vec<_>>(), vec![100]);
        assert_eq!(ix.hosts_in_use(), 0);
    }

    /// The one-search gap updates against `gap` plus a separate insert or remove.
    mod gap_oracle {
        use super::super::HostSummary;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn insert_and_remove_match_gap(
                ops in proptest::collection::vec((0u64..40, 1u64..4, any::<bool>()), 0..80),
            ) {
                let (mut fast, mut slow) = (HostSummary::new(200, 1), HostSummary::new(200, 1));
                for (st, len, ins) in ops {
                    if ins {
                        let want = slow.gap(st);
                        slow.alloc.insert(st, len);
                        prop_assert_eq!(fast.insert_alloc(st, len), want);
                    } else {
                        slow.alloc.remove(st);
                        let want = slow.gap(st);
                        prop_assert_eq!(fast.remove_alloc(st), want);
                    }
                    prop_assert_eq!(&fast.alloc.v, &slow.alloc.v);
                }
            }
        }
    }

    /// The max-tree's search against a scan of the leaves.
    mod tree_oracle {
        use super::super::MaxTree;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn first_matches_a_scan(
                n in 1usize..70,
                ops in proptest::collection::vec((0usize..70, 0u64..8, 0u64..8, 0u32..5), 0..120),
                queries in proptest::collection::vec((0usize..80, 0u64..9, 0u32..6), 1..40),
            ) {
                let mut t = MaxTree::new(n);
                let mut leaves = vec![(0u64, 0u64, 0u32); n];
                for (i, a, b, c) in ops {
                    let i = i % n;
                    t.set(i, a, b, c);
                    leaves[i] = (a, b, c);
                }
                for (from, v, c) in queries {
                    let want = (from..n).find(|&i| leaves[i].0 >= v && leaves[i].2 >= c);
                    prop_assert_eq!(t.first::<false>(from, v, c).filter(|&i| i < n), want, "free: from {} v {} c {}", from, v, c);
                    let want = (from..n).find(|&i| leaves[i].1 >= v && leaves[i].2 >= c);
                    prop_assert_eq!(t.first::<true>(from, v, c).filter(|&i| i < n), want, "largest: from {} v {} c {}", from, v, c);
                }
            }
        }
    }

    /// Worst-fit's heaps through many rebuilds (stale entries past twice the hosts plus 1,024):
    /// an idle host stays on top of the heap of 4 free cores while two others come and go
    /// under it (their stale entries stay buried), each change followed by the heaps'
    /// invariant and queries checked against a scan of the hosts.
    #[test]
    fn worst_by_free_survives_rebuilds() {
        let mut ix = ClusterIndex::with_needs(
            [(1000, 4), (64, 8), (32, 8)],
            IndexNeeds {
                most_free: true,
                ..IndexNeeds::TREES
            },
        );
        let mut live: [Option<(u64, u32)>; 3] = [None; 3];
        let (mut rebuilds, mut last_len) = (0, 0);
        let mut x = 7u64;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let h = 1 + (x >> 33) as usize % 2;
            let id = HostId::try_from(h).unwrap();
            match live[h] {
                Some((len, c)) => {
                    ix.on_destroy_sized(id, len, c, 64);
                    live[h] = None;
                }
                None => {
                    let (len, c) = (((x >> 40) % 4 + 1) * 8, 4);
                    ix.on_create_sized(id, len, c, 0);
                    live[h] = Some((len, c));
                }
            }
            if ix.most_free_len < last_len {
                rebuilds += 1;
            }
            last_len = ix.most_free_len;
            assert!(ix.most_free_ok());
            for (mem, vcpus) in [(0, 0), (8, 1), (40, 3), (64, 8), (2000, 4)] {
                let want = (0..3u32)
                    .filter(|&h| ix.host(h).free_cores >= vcpus)
                    .map(|h| (ix.host(h).free, h))
                    .max()
                    .filter(|&(f, _)| f >= mem)
                    .map(|(_, h)| h);
                assert_eq!(
                    ix.worst_by_free(mem, vcpus),
                    want,
                    "mem {mem} vcpus {vcpus}"
                );
            }
        }
        assert!(ix.most_free_len <= 2 * 3 + 1024 + 1);
        assert!(rebuilds >= 2, "{rebuilds} rebuilds");
    }

    /// Best- and worst-fit lookups by free cores against a scan of `by_free_from`.
    mod free_cores_oracle {
        use super::super::{ClusterIndex, HostId};
        use super::ext;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn best_and_worst_match_a_scan(
                hosts in proptest::collection::vec((1u64..8, 0u32..6), 1..12),
                ops in proptest::collection::vec((0usize..12, 0u64..8, 0u32..6, any::<bool>()), 0..60),
                queries in proptest::collection::vec((0u64..10, 0u32..8), 1..30),
            ) {
                let mut ix = ClusterIndex::new(hosts.iter().map(|&(m, c)| (m * 16, c)));
                // One live VM per host at most: (start, len, vcpus).
                let mut live: Vec<Option<(u64, u64, u32)>> = vec![None; hosts.len()];
                for (h, len, vcpus, create) in ops {
                    let h = h % hosts.len();
                    let id = HostId::try_from(h).unwrap();
                    match live[h] {
                        Some((st, l, c)) if !create => {
                            ix.on_destroy(id, &[ext(st, l)], c);
                            live[h] = None;
                        }
                        None if create && len > 0 && len * 16 <= ix.host(id).free
                            && vcpus <= ix.host(id).free_cores => {
                            ix.on_create(id, &[ext(0, len * 16)], vcpus);
                            live[h] = Some((0, len * 16, vcpus));
                        }
                        _ => {}
                    }
                }
                for (mem, vcpus) in queries {
                    let mem = mem * 16;
                    let ok = |h: HostId| ix.host(h).free_cores >= vcpus;
                    let best = ix.by_free_from(mem).map(|(_, h)| h).find(|&h| ok(h));
                    let worst = ix.by_free_from(mem).rev().map(|(_, h)| h).find(|&h| ok(h));
                    prop_assert_eq!(ix.best_by_free(mem, vcpus), best, "best mem {} vcpus {}", mem, vcpus);
                    prop_assert_eq!(ix.worst_by_free(mem, vcpus), worst, "worst mem {} vcpus {}", mem, vcpus);
                    let by_largest = ix.by_largest_from(mem).into_iter().map(|(_, h)| h).find(|&h| ok(h));
                    prop_assert_eq!(ix.best_by_largest(mem, vcpus), by_largest, "largest mem {} vcpus {}", mem, vcpus);
                }
            }
        }
    }

    /// The grouped walks ([`ClusterIndex::smallest_extent`], [`ClusterIndex::best_by_largest`])
    /// against a scan of every host's free runs, computed from its allocated extents, with
    /// queries interleaved with creations, departures and compactions so that hosts change free
    /// cores and extents under every key. `base` adds cores to every host and query so that the
    /// shared class of 63 cores and more is crossed too.
    mod walk_oracle {
        use super::super::{ClusterIndex, HostId};
        use super::ext;
        use proptest::prelude::*;

        /// Each host's free runs from its allocated extents (a scan, independent of the index).
        fn runs(ix: &ClusterIndex, h: HostId) -> Vec<u64> {
            let s = ix.host(h);
            let mut out = Vec::new();
            let mut cur = 0;
            for (st, l) in s.allocated() {
                out.push(st - cur);
                cur = st + l;
            }
            out.push(s.capacity - cur);
            out.retain(|&l| l > 0);
            out
        }

        #[derive(Clone, Debug)]
        enum Op {
            /// Host, offset in granules, length in granules, vCPUs.
            Create(usize, u64, u64, u32),
            /// Host, which VM of it.
            Destroy(usize, usize),
            /// Host: its VMs packed from address 0.
            Compact(usize),
            /// Size, upper bound of the size (above the size), vCPUs.
            Query(u64, u64, u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0usize..10, 0u64..12, 1u64..5, 0u32..3).prop_map(|(h, o, l, c)| Op::Create(h, o, l, c)),
                2 => (0usize..10, 0usize..8).prop_map(|(h, i)| Op::Destroy(h, i)),
                1 => (0usize..10).prop_map(Op::Compact),
                4 => (1u64..14, 0u64..4, 0u32..4).prop_map(|(m, d, c)| Op::Query(m, d, c)),
            ]
        }

        proptest! {
            #[test]
            fn walks_match_a_scan_of_free_runs(
                hosts in proptest::collection::vec((4u64..14, 0u32..4), 1..10),
                ops in proptest::collection::vec(op(), 0..150),
                base in prop_oneof![Just(0u32), Just(61u32)],
            ) {
                const G: u64 = 16;
                let mut ix = ClusterIndex::new(hosts.iter().map(|&(m, c)| (m * G, c + base)));
                // Each host's VMs: (start, len, vcpus).
                let mut vms: Vec<Vec<(u64, u64, u32)>> = vec![Vec::new(); hosts.len()];
                for op in ops {
                    match op {
                        Op::Create(h, off, len, vcpus) => {
                            let h = h % hosts.len();
                            let id = HostId::try_from(h).unwrap();
                            let (st, len) = (off * G, len * G);
                            let free = st + len <= ix.host(id).capacity
                                && vms[h].iter().all(|&(s, l, _)| st + len <= s || s + l <= st);
                            if free && vcpus <= ix.host(id).free_cores {
                                ix.on_create(id, &[ext(st, len)], vcpus);
                                vms[h].push((st, len, vcpus));
                            }
                        }
                        Op::Destroy(h, i) => {
                            let h = h % hosts.len();
                            if !vms[h].is_empty() {
                                let i = i % vms[h].len();
                                let (st, len, vcpus) = vms[h].remove(i);
                                ix.on_destroy(HostId::try_from(h).unwrap(), &[ext(st, len)], vcpus);
                            }
                        }
                        Op::Compact(h) => {
                            let h = h % hosts.len();
                            vms[h].sort_unstable();
                            let mut cur = 0;
                            for v in &mut vms[h] {
                                v.0 = cur;
                                cur += v.1;
                            }
                            ix.on_moved(HostId::try_from(h).unwrap(), vms[h].iter().map(|&(s, l, _)| ext(s, l)));
                        }
                        Op::Query(m, d, vcpus) => {
                            let (mem, max, vcpus) = (m * G, (m + d) * G, vcpus + base);
                            let ids = (0..hosts.len()).map(|h| HostId::try_from(h).unwrap());
                            let ok = |h: &HostId| ix.host(*h).free_cores >= vcpus;
                            let want = ids
                                .clone()
                                .filter(ok)
                                .filter_map(|h| runs(&ix, h).into_iter().filter(|&l| l >= mem && l <= max).min().map(|l| (l, h)))
                                .min();
                            prop_assert_eq!(ix.smallest_extent(mem, max, vcpus), want, "smallest {} ..= {} vcpus {}", mem, max, vcpus);
                            let want = ids
                                .filter(ok)
                                .filter_map(|h| runs(&ix, h).into_iter().max().filter(|&l| l >= mem).map(|l| (l, h)))
                                .min()
                                .map(|(_, h)| h);
                            prop_assert_eq!(ix.best_by_largest(mem, vcpus), want, "largest {} vcpus {}", mem, vcpus);
                        }
                    }
                    // Parked or not, every free run is listed once.
                    let mut all: Vec<(u64, HostId)> = (0..hosts.len())
                        .map(|h| HostId::try_from(h).unwrap())
                        .flat_map(|h| runs(&ix, h).into_iter().map(move |l| (l, h)))
                        .collect();
                    all.sort_unstable();
                    all.dedup();
                    prop_assert_eq!(ix.extents_from(0), all);
                }
            }
        }
    }

    /// `KeyGroups` alone against an ordered set of `(key, host)` entries: adds, removals (keys
    /// that empty and come back, enough dead keys to compact), changes of free cores across the
    /// shared class of 63 and more, then walks and listings.
    mod key_groups_oracle {
        use super::super::{HostId, KeyGroups};
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        const HOSTS: u32 = 90;

        proptest! {
            #[test]
            fn walks_match_an_ordered_set(
                ops in proptest::collection::vec((0u8..4, 0u64..120, 0u32..HOSTS, 0u32..70), 0..1500),
                queries in proptest::collection::vec((0u64..125, 0u64..125, 0u32..70), 1..30),
            ) {
                let mut kg = KeyGroups::default();
                let mut cores = vec![0u32; HOSTS as usize];
                let mut model: BTreeMap<(u64, HostId), u32> = BTreeMap::new();
                for (op, key, h, c) in ops {
                    match op {
                        // Adds twice as often as removals, so groups grow past 64 hosts.
                        0 | 1 => {
                            model
                                .entry((key, h))
                                .or_insert_with(|| kg.add(key, h, cores[h as usize]));
                        }
                        2 => {
                            if let Some(slot) = model.remove(&(key, h)) {
                                kg.del(slot, key, h, cores[h as usize]);
                            }
                        }
                        _ => {
                            let old = cores[h as usize];
                            for (_, &slot) in model.iter().filter(|((_, x), _)| *x == h) {
                                kg.refile(slot, old, c);
                            }
                            cores[h as usize] = c;
                        }
                    }
                }
                for (lo, span, vcpus) in queries {
                    let max = if span > 120 { u64::MAX } else { lo + span };
                    let want = model
                        .keys()
                        .find(|&&(k, h)| k >= lo && k <= max && cores[h as usize] >= vcpus)
                        .copied();
                    prop_assert_eq!(kg.first(lo, max, vcpus, &cores), want);
                    let all: Vec<(u64, HostId)> =
                        model.keys().filter(|&&(k, _)| k >= lo).copied().collect();
                    prop_assert_eq!(kg.all_from(lo), all);
                }
                let entries: Vec<(u64, HostId, u32)> =
                    model.iter().map(|(&(k, h), &slot)| (k, h, slot)).collect();
                for (k, h, slot) in entries {
                    kg.del(slot, k, h, cores[h as usize]);
                    model.remove(&(k, h));
                    if k % 7 == 0 {
                        let lo = k;
                        let want = model
                            .keys()
                            .find(|&&(x, y)| x >= lo && cores[y as usize] >= 1)
                            .copied();
                        prop_assert_eq!(kg.first(lo, u64::MAX, 1, &cores), want);
                    }
                }
                prop_assert_eq!(kg.all_from(0), Vec::new());
                // Re-adding after a full removal (keys compacted or kept dead) works.
                let slot = kg.add(5, 3, 9);
                prop_assert_eq!(kg.first(0, u64::MAX, 9, &cores_with(&cores, 3, 9)), Some((5, 3)));
                kg.del(slot, 5, 3, 9);
                prop_assert_eq!(kg.first(0, u64::MAX, 0, &cores), None);
            }
        }

        fn cores_with(cores: &[u32], h: HostId, c: u32) -> Vec<u32> {
            let mut v = cores.to_vec();
            v[h as usize] = c;
            v
        }
    }

    /// A group's host set, small and large (past [`HostSet::SMALL_MAX`] and back), against a
    /// `BTreeSet`.
    mod host_set_oracle {
        use super::super::{HostId, HostSet};
        use proptest::prelude::*;
        use std::collections::BTreeSet;

        proptest! {
            #[test]
            fn matches_a_btreeset(
                ops in proptest::collection::vec((0u32..150, 0u32..3), 0..600),
                queries in proptest::collection::vec(0u32..150, 1..20),
            ) {
                let (mut set, mut want) = (HostSet::Small(Vec::new()), BTreeSet::<HostId>::new());
                for (h, op) in ops {
                    // Insert twice as often as remove, so the set grows past SMALL_MAX and back.
                    if op < 2 {
                        set.insert(h);
                        want.insert(h);
                    } else {
                        prop_assert_eq!(set.remove(h), want.remove(&h));
                    }
                    prop_assert_eq!(set.is_empty(), want.is_empty());
                }
                for q in queries {
                    prop_assert_eq!(set.first_with(|h| h >= q), want.range(q..).next().copied());
                }
                let all: Vec<HostId> = match &set {
                    HostSet::Small(v) => v.clone(),
                    HostSet::Large(s) => s.iter().collect(),
                };
                prop_assert_eq!(all, want.into_iter().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn tree_respects_cores() {
        let mut ix = ClusterIndex::new([(100, 1), (100, 8), (100, 8)]);
        assert_eq!(ix.first_by_free(0, 50, 4), Some(1));
        assert_eq!(ix.first_by_free(2, 50, 4), Some(2));
        ix.on_create(1, &[ext(0, 60)], 8);
        assert_eq!(ix.first_by_free(0, 50, 4), Some(2));
        assert_eq!(ix.first_by_free(0, 101, 0), None);
    }
}
