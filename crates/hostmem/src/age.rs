//! Ageing: a deterministic, seeded way to make a realistically fragmented host.
//!
//! Datacenter hosts fragment as VMs of different sizes arrive and leave. [`HostMemory::age`] replays
//! such a history: VMs whose sizes follow a skewed distribution (many small, few large: 1, 2, 4, 8,
//! 16 units with weights 30/25/20/15/10, a unit being 1/128 of the capacity rounded down to 2 MiB)
//! arrive while the host is below the target fill and leave (a uniformly chosen one) when above it,
//! for a number of churn steps; then arrivals top the host up to the target fill. Only the ageing
//! VMs are ever destroyed; they keep their ids and stay on the host (they are the "other VMs").

use crate::host::{FragStats, HostMemory};
use compromis_types::PageSize;
use compromis_types::VmId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

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
            if self.destroy(vm).is_ok() {
                destroyed += 1;
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
            stats: self.stats(),
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
}
