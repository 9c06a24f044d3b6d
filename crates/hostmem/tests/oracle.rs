//! Property tests: long random operation sequences against a naive bitmap oracle.
//!
//! - `allocator_matches_bitmap`: every `alloc` returns exactly the extent the naive policy
//!   (computed from the bitmap's maximal free runs) chooses; `free`, `alloc_at` succeed exactly
//!   when the bitmap says the range is allocated / free; refused calls leave the state unchanged;
//!   the free extents always equal the bitmap's free runs.
//! - `host_memory_matches_bitmap` (a small host with a hole and a reserved range at 64 KiB
//!   granule, and a 64 GiB host at 2 MiB granule where VMs span the MMIO hole): random create,
//!   provision, destroy, grow, shrink and compaction. No two VMs overlap, owned + free =
//!   capacity, every segment is inside the VM's RAM and aligned, a destroyed VM's memory is fully
//!   returned, refused operations leave the state unchanged, `check` passes.
//!
//! Operations per run: 4 x 15,000 + 2 x 4 x 6,000 = 108,000.

use compromis_hostmem::{
    AllocError, Extent, ExtentAllocator, Fallback, GrowOutcome, HostMap, HostMemory, Policy,
    Provisioned, Reserved, VmId,
};
use compromis_types::{Address, PageSize};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const K64: u64 = 64 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cell {
    Hole,
    Free,
    Used,
}

/// The naive allocator: one cell per granule.
struct Bitmap {
    g: u64,
    cells: Vec<Cell>,
    cursor: u64,
}

impl Bitmap {
    fn new(ranges: &[Extent], g: u64, span: u64) -> Bitmap {
        let mut cells = vec![Cell::Hole; usize::try_from(span / g).unwrap()];
        for r in ranges {
            cells[idx(r.start.raw(), g)..idx(r.end().raw(), g)].fill(Cell::Free);
        }
        Bitmap {
            g,
            cells,
            cursor: 0,
        }
    }
    fn all(&self, e: Extent, want: Cell) -> bool {
        let (s, t) = (idx(e.start.raw(), self.g), idx(e.end().raw(), self.g));
        e.len > 0 && t <= self.cells.len() && self.cells[s..t].iter().all(|&c| c == want)
    }
    fn set(&mut self, e: Extent, v: Cell) {
        let (s, t) = (idx(e.start.raw(), self.g), idx(e.end().raw(), self.g));
        self.cells[s..t].fill(v);
    }
    /// Maximal free runs in address order.
    fn runs(&self) -> Vec<Extent> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.cells.len() {
            if self.cells[i] == Cell::Free {
                let s = i;
                while i < self.cells.len() && self.cells[i] == Cell::Free {
                    i += 1;
                }
                out.push(Extent::new(s as u64 * self.g, (i - s) as u64 * self.g));
            } else {
                i += 1;
            }
        }
        out
    }
    fn choose(&self, len: u64, align: PageSize, policy: Policy) -> Option<Extent> {
        let fits = |r: &Extent| {
            let a = r.start.align_up(align)?.raw();
            (a + len <= r.end().raw()).then(|| Extent::new(a, len))
        };
        let runs = self.runs();
        let cand: Vec<(Extent, Extent)> = runs
            .iter()
            .filter_map(|r| fits(r).map(|e| (*r, e)))
            .collect();
        match policy {
            Policy::FirstFit => cand.first().map(|c| c.1),
            Policy::BestFit => cand
                .iter()
                .min_by_key(|(r, _)| (r.len, r.start))
                .map(|c| c.1),
            Policy::WorstFit => cand
                .iter()
                .max_by_key(|(r, _)| (r.len, r.start))
                .map(|c| c.1),
            Policy::NextFit => cand
                .iter()
                .find(|(r, _)| r.start.raw() >= self.cursor)
                .or(cand.first())
                .map(|c| c.1),
        }
    }
}

fn idx(a: u64, g: u64) -> usize {
    usize::try_from(a / g).unwrap()
}

fn random_align(rng: &mut ChaCha8Rng) -> PageSize {
    match rng.gen_range(0..20) {
        0 => PageSize::Size1G,
        1..=6 => PageSize::Size2M,
        _ => PageSize::Size4K,
    }
}

fn allocator_run(seed: u64, ops: usize) -> Result<(), TestCaseError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ranges = [Extent::new(0, 96 * M), Extent::new(128 * M, 128 * M)];
    let mut a = ExtentAllocator::with_ranges(&ranges).unwrap();
    let mut o = Bitmap::new(&ranges, K64, 256 * M);
    let mut live: Vec<Extent> = Vec::new();
    for step in 0..ops {
        let before = a.clone();
        match rng.gen_range(0..10) {
            0..=4 => {
                let len = if rng.gen_bool(0.05) {
                    rng.gen_range(1..=2048u64)
                } else {
                    rng.gen_range(1..=48u64)
                } * K64;
                let align = random_align(&mut rng);
                let policy = Policy::ALL[rng.gen_range(0..4)];
                let want = o.choose(len, align, policy);
                let got = a.alloc(len, align, policy);
                match (want, got) {
                    (Some(w), Ok(e)) => {
                        prop_assert_eq!(
                            w,
                            e,
                            "step {} {} len {:#x} align {}",
                            step,
                            policy,
                            len,
                            align
                        );
                        o.set(e, Cell::Used);
                        o.cursor = e.end().raw();
                        live.push(e);
                    }
                    (None, Err(AllocError::NoExtent { .. } | AllocError::TooLarge { .. })) => {
                        prop_assert_eq!(&a, &before);
                    }
                    (w, g) => {
                        prop_assert!(false, "step {}: oracle {:?}, allocator {:?}", step, w, g)
                    }
                }
            }
            5..=7 if !live.is_empty() => {
                // Free a whole extent, or its head or tail (a shrink).
                let i = rng.gen_range(0..live.len());
                let e = live[i];
                let cells = e.len / K64;
                let part = if cells > 1 && rng.gen_bool(0.3) {
                    rng.gen_range(1..cells) * K64
                } else {
                    e.len
                };
                let (freed, rest) = if rng.gen_bool(0.5) {
                    (
                        Extent {
                            start: e.start,
                            len: part,
                        },
                        Extent::new(e.start.raw() + part, e.len - part),
                    )
                } else {
                    (
                        Extent::new(e.end().raw() - part, part),
                        Extent {
                            start: e.start,
                            len: e.len - part,
                        },
                    )
                };
                prop_assert!(o.all(freed, Cell::Used));
                a.free(freed)
                    .map_err(|err| TestCaseError::fail(format!("step {step}: {err}")))?;
                o.set(freed, Cell::Free);
                if rest.len == 0 {
                    live.swap_remove(i);
                } else {
                    live[i] = rest;
                }
            }
            _ => {
                // A random range: free it or claim it; must succeed exactly when the oracle agrees.
                let s = rng.gen_range(0..4096u64) * K64;
                let l = rng.gen_range(1..=16u64) * K64;
                let e = Extent::new(s, l);
                if rng.gen_bool(0.5) {
                    let ok = o.all(e, Cell::Used);
                    // Only an unallocated range is tried (an allocated one would split `live`).
                    if !ok {
                        prop_assert_eq!(a.free(e), Err(AllocError::NotAllocated(e)));
                        prop_assert_eq!(&a, &before);
                    }
                } else if o.all(e, Cell::Free) {
                    a.alloc_at(e)
                        .map_err(|err| TestCaseError::fail(format!("step {step}: {err}")))?;
                    o.set(e, Cell::Used);
                    live.push(e);
                } else {
                    prop_assert_eq!(a.alloc_at(e), Err(AllocError::NotFree(e)));
                    prop_assert_eq!(&a, &before);
                }
            }
        }
        if step % 50 == 0 || step + 1 == ops {
            prop_assert_eq!(
                a.free_extents().collect::<Vec<_>>(),
                o.runs(),
                "step {}",
                step
            );
            prop_assert!(a.check_indexes().is_ok());
        }
        let free_cells = o.cells.iter().filter(|&&c| c == Cell::Free).count() as u64;
        prop_assert_eq!(a.free_bytes(), free_cells * K64);
    }
    Ok(())
}

/// Marks the ownership of every VM in a cell map (None = free or hole), asserting no overlap and
/// that everything is inside RAM.
fn host_step_check(
    h: &HostMemory,
    owners: &mut [Option<u64>],
    ram: &Bitmap,
    prev: &BTreeMap<VmId, Vec<Extent>>,
    g: u64,
) -> Result<BTreeMap<VmId, Vec<Extent>>, TestCaseError> {
    let now: BTreeMap<VmId, Vec<Extent>> =
        h.vms().map(|(id, r)| (id, r.extents.to_vec())).collect();
    // Clear VMs that changed or left, then mark VMs that changed or arrived.
    for (id, ext) in prev {
        if now.get(id) != Some(ext) {
            for e in ext {
                for c in &mut owners[idx(e.start.raw(), g)..idx(e.end().raw(), g)] {
                    prop_assert_eq!(*c, Some(id.0));
                    *c = None;
                }
            }
        }
    }
    for (id, ext) in &now {
        if prev.get(id) == Some(ext) {
            continue;
        }
        for e in ext {
            prop_assert!(
                ram.all(*e, Cell::Free),
                "{} extent {} not inside RAM",
                id,
                e
            );
            for c in &mut owners[idx(e.start.raw(), g)..idx(e.end().raw(), g)] {
                prop_assert!(c.is_none(), "{} overlaps vm{:?} at {}", id, c, e);
                *c = Some(id.0);
            }
        }
        // Segments / pages: cover the guest RAM exactly, inside the VM's extents, aligned.
        let m = h.memory(*id).unwrap();
        let rec = h.vm(*id).unwrap();
        // A register set may span the MMIO hole: its RAM parts are what it maps.
        let pieces = m.ram_pieces();
        let seg_bytes: u64 = pieces.iter().map(|s| s.len()).sum();
        let page_bytes: u64 = m.pages.iter().map(|p| p.size.bytes()).sum();
        prop_assert_eq!(seg_bytes + page_bytes, rec.bytes());
        prop_assert_eq!(m.layout.ram_bytes(), rec.bytes());
        if !m.segments.is_empty() {
            prop_assert_eq!(
                m.segments.len(),
                compromis_hostmem::register_sets(rec.bytes(), ext)
            );
        }
        // One set may cover several extents that touch in host memory (in guest order, as after
        // an in-place grow): check against the VM's extents merged where they touch.
        let mut runs: Vec<Extent> = ext.clone();
        runs.sort_by_key(|e| e.start);
        let mut merged: Vec<Extent> = Vec::new();
        for e in runs {
            match merged.last_mut() {
                Some(l) if l.end() == e.start => l.len += e.len,
                _ => merged.push(e),
            }
        }
        for s in &pieces {
            let he = s.host_extent();
            prop_assert!(
                he.start.is_aligned(PageSize::Size4K) && s.base.is_aligned(PageSize::Size4K)
            );
            prop_assert!(
                merged
                    .iter()
                    .any(|e| e.start <= he.start && he.end() <= e.end()),
                "segment {:?} outside {}",
                s,
                id
            );
            prop_assert!(m.layout.is_ram(s.base));
        }
        for p in &m.pages {
            prop_assert!(p.gpa.is_aligned(p.size) && p.hpa.is_aligned(p.size));
        }
        prop_assert!(ext.iter().all(|e| e.start.is_aligned(rec.align)));
    }
    let owned = owners.iter().filter(|c| c.is_some()).count() as u64 * g;
    prop_assert_eq!(
        owned + h.map().reserved_bytes() + h.free_bytes(),
        h.capacity()
    );
    Ok(now)
}

fn host_run(seed: u64, ops: usize, big: bool) -> Result<(), TestCaseError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (map, g, span, unit_max) = if big {
        (HostMap::flat(64 * G), 2 * M, 64 * G, 4096u64)
    } else {
        let mut m = HostMap::flat(0);
        m.ram = vec![Extent::new(0, 96 * M), Extent::new(128 * M, 128 * M)];
        m.reserved = vec![Reserved {
            ext: Extent::new(128 * M, 4 * M),
            label: "hv".into(),
        }];
        (m, K64, 256 * M, 320)
    };
    let policy = Policy::ALL[rng.gen_range(0..4)];
    let mut h = HostMemory::with_map(map.clone(), policy).unwrap();
    let mut ram = Bitmap::new(&map.ram, g, span);
    for r in &map.reserved {
        ram.set(r.ext, Cell::Used);
    }
    let mut owners: Vec<Option<u64>> = vec![None; ram.cells.len()];
    let mut prev = BTreeMap::new();
    // Successful operations by kind: each must happen at least once for the run to mean anything.
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();
    for step in 0..ops {
        let before = h.clone();
        let vm = VmId(rng.gen_range(0..40));
        let units = rng.gen_range(1..=unit_max);
        // Lengths are multiples of the granule; with 2 MiB alignment, of 2 MiB.
        let align = if big || rng.gen_bool(0.3) {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        let len = if align == PageSize::Size2M {
            units.div_ceil((2 * M) / g).max(1) * 2 * M
        } else {
            units * g
        };
        let res: Result<(), AllocError> = match rng.gen_range(0..12) {
            0..=3 => {
                let r = h
                    .create(vm, len, align, rng.gen_range(1..=3))
                    .map(|e| e.len());
                if let Ok(n) = r {
                    *done
                        .entry(if n > 1 { "create-multi" } else { "create" })
                        .or_default() += 1;
                }
                r.map(|_| ())
            }
            4 | 5 => {
                let fb =
                    [Fallback::Refuse, Fallback::Segments(3), Fallback::Ept][rng.gen_range(0..3)];
                let r = h.provision(vm, len, align, fb);
                if let Ok(m) = &r {
                    let kind = match m.outcome() {
                        // RAM across the MMIO hole in one allocation (one or two register sets).
                        Provisioned::OneExtent { .. } if m.layout.ram.len() == 2 => {
                            "provision-hole"
                        }
                        Provisioned::OneExtent { .. } => "provision-one",
                        Provisioned::MultiSegment { .. } => "provision-k",
                        Provisioned::Ept { .. } => "provision-ept",
                    };
                    *done.entry(kind).or_default() += 1;
                }
                r.map(|_| ())
            }
            6 | 7 => {
                let freed_before = h.free_bytes();
                let size = h.vm(vm).map(|r| r.bytes());
                let r = h.destroy(vm).map(|_| ());
                if let (Ok(()), Some(s)) = (&r, size) {
                    *done.entry("destroy").or_default() += 1;
                    prop_assert_eq!(
                        h.free_bytes(),
                        freed_before + s,
                        "destroyed memory fully returned"
                    );
                }
                r
            }
            8 | 9 => {
                // Grow or shrink by a multiple of the VM's alignment (or a random length for an
                // unknown VM, which must be refused).
                let k = rng.gen_range(1..=(unit_max / 8).max(1));
                let by = h.vm(vm).map_or(len, |r| r.align.bytes().max(g) * k);
                if rng.gen_bool(0.5) {
                    let r = h.grow(vm, by);
                    match &r {
                        Ok(GrowOutcome::InPlace) => *done.entry("grow-in-place").or_default() += 1,
                        Ok(GrowOutcome::Relocated { .. }) => {
                            *done.entry("grow-relocate").or_default() += 1
                        }
                        Ok(GrowOutcome::Added { .. }) => *done.entry("grow-ept").or_default() += 1,
                        Err(_) => {}
                    }
                    r.map(|_| ())
                } else {
                    let r = h.shrink(vm, by).map(|_| ());
                    if r.is_ok() {
                        *done.entry("shrink").or_default() += 1;
                    }
                    r
                }
            }
            10 => {
                let want = rng.gen_range(1..=unit_max) * g;
                match h.plan_compaction(want, PageSize::Size4K) {
                    Some(plan) => {
                        if !plan.moves.is_empty() {
                            *done.entry("compact").or_default() += 1;
                        }
                        h.apply(&plan)
                            .map_err(|e| TestCaseError::fail(format!("step {step}: apply: {e}")))?;
                        prop_assert!(
                            h.allocator()
                                .find(want, PageSize::Size4K, Policy::FirstFit)
                                .is_some(),
                            "step {}: compaction for {:#x} did not make room",
                            step,
                            want
                        );
                    }
                    None => prop_assert_eq!(&h, &before),
                }
                Ok(())
            }
            _ => {
                // Bad input: zero size, unaligned, too large, unknown VM.
                let r = match rng.gen_range(0..4) {
                    0 => h.create(VmId(999), 0, align, 1).map(|_| ()),
                    1 => h
                        .create(VmId(999), 4096 + 512, PageSize::Size4K, 1)
                        .map(|_| ()),
                    2 => h
                        .create(VmId(999), span * 2, PageSize::Size4K, 1)
                        .map(|_| ()),
                    _ => h.destroy(VmId(1000)).map(|_| ()),
                };
                prop_assert!(r.is_err());
                r
            }
        };
        if res.is_err() {
            prop_assert_eq!(&h, &before, "step {}: refused op changed the state", step);
        }
        prev = host_step_check(&h, &mut owners, &ram, &prev, g)?;
        if let Err(e) = h.check() {
            prop_assert!(false, "step {}: {}", step, e);
        }
    }
    let mut kinds = vec![
        "create",
        "create-multi",
        "provision-one",
        "provision-k",
        "provision-ept",
        "destroy",
    ];
    kinds.extend(["grow-in-place", "grow-relocate", "shrink", "compact"]);
    if big {
        kinds.push("provision-hole");
    }
    for k in kinds {
        prop_assert!(
            done.get(k).copied().unwrap_or(0) > 0,
            "no successful {} in {:?}",
            k,
            done
        );
    }
    eprintln!(
        "{} host, {policy}: {done:?}",
        if big { "64 GiB" } else { "256 MiB" }
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn allocator_matches_bitmap(seed in any::<u64>()) {
        allocator_run(seed, 15_000)?;
    }

    #[test]
    fn host_memory_matches_bitmap_small(seed in any::<u64>()) {
        host_run(seed, 6_000, false)?;
    }

    #[test]
    fn host_memory_matches_bitmap_64g(seed in any::<u64>()) {
        host_run(seed, 6_000, true)?;
    }
}
