//! Ageing: a deterministic, seeded way to make a realistically fragmented host.
//!
//! Datacenter hosts fragment as VMs of different sizes arrive and leave. [`HostMemory::age`] replays
//! such a history: VMs whose sizes follow a skewed distribution (many small, few large: 1, 2, 4, 8,
//! 16 units with weights 30/25/20/15/10, a unit being 1/128 of the capacity rounded down to 2 MiB)
//! arrive while the host is below the target fill and leave (a uniformly chosen one) when above it,
//! for a number of churn steps; then arrivals top the host up to the target fill. Only the ageing
//! VMs are ever destroyed; they keep their ids and stay on the host (they are the "other VMs").
//!
//! The host's own memory is aged too, at 4 KiB granularity: memory a leaving VM frees is soon
//! partly taken by the host itself (page cache, slab, page tables, device buffers). For every
//! `host_chunk_every` bytes a VM frees, the host allocates a run of 1 to 16 pages of 4 KiB
//! (uniformly) at a uniformly random 4 KiB page of the freed range (reserved ranges labelled
//! `host`); at most `host_chunks_per_gib` runs per GiB of RAM live at once, the oldest is freed
//! first (reclaim). Memory no VM ever used stays pristine (a host aged to fill 0 is untouched).
//! Free memory therefore ends in pieces whose edges are 4 KiB-aligned, not 2 MiB-aligned: an EPT
//! built from it gets scattered 4 KiB frames, and one free extent for a segment is rarer.

use crate::host::{FragStats, HostMemory};
use crate::map::Reserved;
use compromis_types::PageSize;
use compromis_types::VmId;
use compromis_types::{Address, Extent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::VecDeque;

/// Knobs of [`HostMemory::age_with`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgeConfig {
    /// Seed of the arrival/departure sequence.
    pub seed: u64,
    /// Fraction of the capacity the host should hold in VMs at the end (0..1).
    pub target_fill: f64,
    /// Churn steps (one arrival or one departure each).
    pub steps: usize,
    /// Candidate VM sizes in bytes with their weights (empty: the default distribution).
    pub sizes: Vec<(u64, u32)>,
    /// Alignment of the ageing VMs.
    pub align: PageSize,
    /// Id of the first ageing VM (later ones count up).
    pub first_id: u64,
    /// Most of the host's own small allocations (1 to 16 pages of 4 KiB each) alive at once, per
    /// GiB of RAM (0: none, the host's own memory stays out of the picture).
    pub host_chunks_per_gib: f64,
    /// Bytes a leaving VM frees per host allocation made inside them.
    pub host_chunk_every: u64,
}

impl AgeConfig {
    /// Defaults: 2,000 churn steps, default size distribution, 2 MiB alignment, ids from 1,000,000.
    pub fn new(seed: u64, target_fill: f64) -> AgeConfig {
        AgeConfig {
            seed,
            target_fill,
            steps: 2000,
            sizes: Vec::new(),
            align: PageSize::Size2M,
            first_id: 1_000_000,
            host_chunks_per_gib: 1.0,
            host_chunk_every: 256 << 20,
        }
    }
}

/// What ageing did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgeReport {
    /// VMs created (including those later destroyed).
    pub created: usize,
    /// VMs destroyed.
    pub destroyed: usize,
    /// Arrivals refused for lack of an extent.
    pub refused: usize,
    /// Ageing VMs still on the host, in id order.
    pub live: Vec<VmId>,
    /// The host's own allocations alive at the end (4 KiB-granular runs, reserved as `host`).
    pub host_chunks: usize,
    /// Bytes they hold.
    pub host_bytes: u64,
    /// Metrics at the end.
    pub stats: FragStats,
}

fn default_sizes(capacity: u64, align: PageSize) -> Vec<(u64, u32)> {
    let unit = ((capacity / 128) & !align.mask()).max(align.bytes());
    [(1, 30), (2, 25), (4, 20), (8, 15), (16, 10)]
        .into_iter()
        .map(|(k, w)| (unit * k, w))
        .collect()
}

#[allow(clippy::cast_precision_loss)] // reason: byte counts below 2^53 are exact; a ratio needs no more
fn fill(h: &HostMemory) -> f64 {
    if h.capacity() == 0 {
        1.0
    } else {
        (h.capacity() - h.free_bytes()) as f64 / h.capacity() as f64
    }
}

impl HostMemory {
    /// Ages the host with the default knobs (see [`AgeConfig::new`]) toward `target_fill`.
    pub fn age(&mut self, seed: u64, target_fill: f64) -> AgeReport {
        self.age_with(&AgeConfig::new(seed, target_fill))
    }

    /// Ages the host; the same config on the same host state gives the same result.
    pub fn age_with(&mut self, cfg: &AgeConfig) -> AgeReport {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let sizes = if cfg.sizes.is_empty() {
            default_sizes(self.capacity(), cfg.align)
        } else {
            cfg.sizes.clone()
        };
        let total_w: u64 = sizes.iter().map(|&(_, w)| u64::from(w)).sum::<u64>().max(1);
        let target = cfg.target_fill.clamp(0.0, 1.0);
        let mut next = VmId(cfg.first_id.max(self.next_vm_id().0));
        let mut live: Vec<VmId> = Vec::new();
        let (mut created, mut destroyed, mut refused) = (0, 0, 0);
        let draw = |rng: &mut ChaCha8Rng| {
            let mut x = rng.gen_range(0..total_w);
            for &(s, w) in &sizes {
                if x < u64::from(w) {
                    return s;
                }
                x -= u64::from(w);
            }
            sizes.last().map_or(0, |&(s, _)| s)
        };
        let mut arrive = |h: &mut HostMemory, rng: &mut ChaCha8Rng, live: &mut Vec<VmId>| {
            let len = draw(rng);
            if h.create(next, len, cfg.align, 1).is_ok() {
                live.push(next);
                next = VmId(next.0 + 1);
                true
            } else {
                false
            }
        };
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )] // reason: a count of small allocations, far below 2^53
        let cap = ((self.capacity() as f64 / f64::from(1u32 << 30))
            * cfg.host_chunks_per_gib.max(0.0))
        .round() as usize;
        let every = cfg.host_chunk_every.max(4096);
        let mut host: VecDeque<Extent> = VecDeque::new();
        for _ in 0..cfg.steps {
            if fill(self) < target {
                if arrive(self, &mut rng, &mut live) {
                    created += 1;
                    continue;
                }
                refused += 1;
            }
            if live.is_empty() {
                continue;
            }
            let i = rng.gen_range(0..live.len());
            let vm = live.swap_remove(i);
            let freed = self.extents(vm).map(<[Extent]>::to_vec).unwrap_or_default();
            if self.destroy(vm).is_ok() {
                destroyed += 1;
                if cap > 0 {
                    for e in freed {
                        for _ in 0..e.len / every {
                            self.host_chunk(&mut rng, e, &mut host, cap);
                        }
                    }
                }
            }
        }
        // Top up to the target fill; stop after a run of refusals.
        let mut misses = 0;
        while fill(self) < target && misses < 32 {
            if arrive(self, &mut rng, &mut live) {
                created += 1;
                misses = 0;
            } else {
                refused += 1;
                misses += 1;
            }
        }
        live.sort();
        AgeReport {
            created,
            destroyed,
            refused,
            live,
            host_chunks: host.len(),
            host_bytes: host.iter().map(|e| e.len).sum(),
            stats: self.stats(),
        }
    }

    /// One allocation of the host's own inside `freed`: 1 to 16 pages of 4 KiB from a uniformly
    /// random 4 KiB page of it (cut at its end), reserved as `host`; skipped when that page is
    /// already the host's. Past `cap` live allocations the oldest is freed.
    fn host_chunk(
        &mut self,
        rng: &mut ChaCha8Rng,
        freed: Extent,
        host: &mut VecDeque<Extent>,
        cap: usize,
    ) {
        const PAGE: u64 = 4096;
        let want = rng.gen_range(1..=16u64) * PAGE;
        let at = freed.start.raw() + rng.gen_range(0..freed.len / PAGE) * PAGE;
        let ext = Extent::new(at, want.min(freed.end().raw() - at));
        if self.alloc.alloc_at(ext).is_err() {
            return;
        }
        self.map.reserved.push(Reserved {
            ext,
            label: "host".to_owned(),
        });
        host.push_back(ext);
        while host.len() > cap {
            if let Some(old) = host.pop_front() {
                self.map.reserved.retain(|r| r.ext != old);
                // The range was allocated just above and only this loop frees it.
                let _ = self.alloc.free(old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::Policy;

    #[test]
    fn ageing_is_deterministic_and_fragments() {
        const G: u64 = 1 << 30;
        let mut a = HostMemory::new(192 * G, Policy::FirstFit);
        let mut b = a.clone();
        let ra = a.age(7, 0.8);
        let rb = b.age(7, 0.8);
        assert_eq!(ra, rb);
        assert_eq!(a, b);
        a.check().unwrap();
        assert!(ra.stats.fragmentation > 0.0, "{:?}", ra.stats);
        assert!(ra.destroyed > 0 && ra.created > ra.destroyed);
        let mut c = HostMemory::new(192 * G, Policy::FirstFit);
        c.age(8, 0.8);
        assert_ne!(a, c);
    }

    #[test]
    fn the_host_scatters_its_own_memory_at_4k() {
        const G: u64 = 1 << 30;
        let mut h = HostMemory::new(16 * G, Policy::FirstFit);
        let r = h.age(7, 0.5);
        h.check().unwrap();
        // At most one live allocation per GiB of a 16 GiB host, each 1..16 pages; the churn
        // freed far more than 16 x 256 MiB, so the cap is reached.
        assert_eq!(r.host_chunks, 16);
        let host: Vec<_> = h
            .map()
            .reserved
            .iter()
            .filter(|x| x.label == "host")
            .collect();
        assert_eq!(host.len(), r.host_chunks);
        assert_eq!(host.iter().map(|x| x.ext.len).sum::<u64>(), r.host_bytes);
        assert!(
            host.iter()
                .all(|x| x.ext.len >= 4096 && x.ext.len <= 16 * 4096)
        );
        // Free pieces now start or end off the 2 MiB grid, so an EPT over all the free memory
        // gets 4 KiB frames.
        let off = h
            .allocator()
            .free_extents()
            .filter(|e| e.start.raw() % (2 << 20) != 0 || e.end().raw() % (2 << 20) != 0)
            .count();
        assert!(off >= 2, "{off}");
        let all = h.free_bytes() / (2 << 20) * (2 << 20);
        let m = h.provision_ept(VmId(1), all, PageSize::Size2M).unwrap();
        assert!(matches!(m.outcome(), crate::Provisioned::Ept { pages_4k, .. } if pages_4k > 0));
        // A host aged to fill 0 had no VM leave: it stays pristine.
        let mut z = HostMemory::new(16 * G, Policy::FirstFit);
        assert_eq!(z.age(7, 0.0).host_chunks, 0);
        assert_eq!(z.largest_free(), 16 * G);
        // Without the host's own allocations the 2 MiB-aligned VM churn leaves 2 MiB grid edges.
        let mut q = HostMemory::new(16 * G, Policy::FirstFit);
        let cfg = AgeConfig {
            host_chunks_per_gib: 0.0,
            ..AgeConfig::new(7, 0.5)
        };
        let rq = q.age_with(&cfg);
        assert_eq!((rq.host_chunks, rq.host_bytes), (0, 0));
        assert!(
            q.allocator()
                .free_extents()
                .all(|e| e.start.raw() % (2 << 20) == 0)
        );
    }
}
