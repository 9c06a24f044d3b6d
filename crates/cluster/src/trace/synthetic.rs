//! Built-in synthetic VM trace, calibrated on the Azure Public Dataset V1 (Cortez et al.,
//! "Resource Central", SOSP 2017), as re-encoded by Bergsma et al. (SOSP 2021): every figure
//! below was measured on its dev split (259,159 VMs arriving between t=1,800,000 s and
//! t=2,100,000 s); `docs/placement.md` gives the commands that measure them.
//!
//! - VM flavors (vCPUs, GB) and their shares: [`FLAVORS`];
//! - tenant batches: 53,109 batches, 57.9 % of one VM, mean 4.88 VMs; one flavor per batch
//!   (92 % of the real batches are single-flavor);
//! - batch arrivals: Poisson, 53,109 / 300,000 s = 0.177 batches/s;
//! - lifetimes: 5.5 % of the VMs outlive the window (censored: no departure); the others draw a
//!   duration bin from [`LIFETIME_BINS`] and a uniform lifetime inside it.

use super::merge::{DepartureMerger, VmTraceRecord};
use crate::event::{Event, VmTraceError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Geometric, WeightedAliasIndex};

/// Azure V1 flavors: (vCPUs, memory in MiB, number of VMs of that flavor in the dev split).
pub const FLAVORS: [(u32, u64, u32); 16] = [
    (1, 768, 4108),
    (1, 1792, 156_437),
    (1, 2048, 10),
    (16, 114_688, 9),
    (2, 14_336, 49),
    (2, 16_384, 3),
    (2, 3584, 48_008),
    (2, 4096, 22),
    (4, 28_672, 49),
    (4, 32_768, 1),
    (4, 7168, 25_700),
    (4, 8192, 15),
    (8, 14_336, 23_315),
    (8, 16_384, 5),
    (8, 57_344, 1427),
    (8, 65_536, 1),
];

/// Number of uncensored dev-split VMs whose lifetime falls in duration bin k (k = 0..=38).
pub const LIFETIME_BINS: [u32; 39] = [
    7029, 22_661, 29_862, 28_505, 27_448, 21_444, 11_749, 7928, 7320, 6134, 2869, 2673, 2590,
    19_869, 7856, 5201, 3439, 3162, 2960, 2424, 2259, 1992, 1822, 2006, 1908, 1407, 1363, 1348,
    1247, 495, 714, 455, 442, 323, 432, 398, 2781, 315, 12,
];

/// Share of VMs still running at the dev split's cut-off (14,239 of 259,159).
pub const CENSORED_SHARE: f64 = 14_239.0 / 259_159.0;

/// Lower edge in seconds of Azure-rnn duration bin `k`: 5-minute bins up to 3,900 s, hourly up
/// to 86,700 s, then daily (the shape of `v1.interval_map.txt`).
pub fn bin_lower(k: u64) -> u64 {
    match k {
        0..=13 => 300 * k,
        14..=36 => 3900 + (k - 13) * 3600,
        _ => 86_700 + (k - 36) * 86_400,
    }
}

/// Generator settings.
#[derive(Clone, Debug)]
pub struct SyntheticConfig {
    /// Number of VMs to generate.
    pub vms: u64,
    /// Seed of every draw.
    pub seed: u64,
    /// Mean tenant-batch arrivals per second.
    pub batch_rate: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            vms: 20_000,
            seed: compromis_types::DEFAULT_SEED,
            batch_rate: 53_109.0 / 300_000.0,
        }
    }
}

/// VM records in arrival order.
pub struct SyntheticRecords {
    cfg: SyntheticConfig,
    rng: ChaCha8Rng,
    flavor: WeightedAliasIndex<u32>,
    life: WeightedAliasIndex<u32>,
    gap: Exp<f64>,
    extra: Geometric,
    time: f64,
    next_vm: u64,
    batch_left: u64,
    batch_flavor: usize,
}

/// The synthetic trace as a stream of events.
pub struct SyntheticTrace {
    merger: DepartureMerger<SyntheticRecords>,
}

impl SyntheticTrace {
    /// A new generator; fails only on a non-positive rate.
    pub fn new(cfg: SyntheticConfig) -> Result<SyntheticTrace, VmTraceError> {
        let bad = |reason: String| VmTraceError::Layout {
            path: "synthetic".into(),
            reason,
        };
        let gap = Exp::new(cfg.batch_rate)
            .map_err(|e| bad(format!("bad batch rate {}: {e}", cfg.batch_rate)))?;
        let recs = SyntheticRecords {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            flavor: WeightedAliasIndex::new(FLAVORS.iter().map(|f| f.2).collect())
                .map_err(|e| bad(e.to_string()))?,
            life: WeightedAliasIndex::new(LIFETIME_BINS.to_vec())
                .map_err(|e| bad(e.to_string()))?,
            gap,
            // Batches of two or more VMs: 2 + Geometric, mean 2 + 8.2 = 10.2 so the overall mean is 4.88.
            extra: Geometric::new(1.0 / 9.2).map_err(|e| bad(e.to_string()))?,
            time: 0.0,
            next_vm: 0,
            batch_left: 0,
            batch_flavor: 0,
            cfg,
        };
        Ok(SyntheticTrace {
            merger: DepartureMerger::new(recs, "synthetic".into()),
        })
    }
}

impl Iterator for SyntheticRecords {
    type Item = Result<(u64, VmTraceRecord), VmTraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next_vm >= self.cfg.vms {
            return None;
        }
        if self.batch_left == 0 {
            self.time += self.gap.sample(&mut self.rng);
            self.batch_left = if self.rng.gen_bool(0.579) {
                1
            } else {
                2 + self.extra.sample(&mut self.rng)
            };
            self.batch_flavor = self.flavor.sample(&mut self.rng);
        }
        self.batch_left -= 1;
        let (vcpus, mib, _) = FLAVORS[self.batch_flavor];
        let arrival = super::f64_to_u64(self.time.floor());
        let departure = if self.rng.gen_bool(CENSORED_SHARE) {
            None
        } else {
            let k = self.life.sample(&mut self.rng) as u64;
            Some(arrival + self.rng.gen_range(bin_lower(k)..bin_lower(k + 1)))
        };
        let vm = self.next_vm;
        self.next_vm += 1;
        Some(Ok((
            vm + 1,
            VmTraceRecord {
                vm,
                arrival,
                departure,
                mem_bytes: mib << 20,
                vcpus,
                initial: false,
            },
        )))
    }
}

impl Iterator for SyntheticTrace {
    type Item = Result<Event, VmTraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.merger.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_sorted_and_calibrated() {
        let cfg = SyntheticConfig {
            vms: 20_000,
            seed: 3,
            ..SyntheticConfig::default()
        };
        let a: Vec<Event> = SyntheticTrace::new(cfg.clone())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let b: Vec<Event> = SyntheticTrace::new(cfg)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].time() <= w[1].time()));
        let arrivals: Vec<&Event> = a
            .iter()
            .filter(|e| matches!(e, Event::Arrival { .. }))
            .collect();
        assert_eq!(arrivals.len(), 20_000);
        let small = arrivals
            .iter()
            .filter(|e| matches!(e, Event::Arrival { mem_bytes, .. } if *mem_bytes == 1792 << 20))
            .count();
        // 1.75 GB VMs are 60.4 % of the dev split; batches make the share noisy.
        assert!((0.5..0.7).contains(&(small as f64 / 20_000.0)), "{small}");
        let deps = a.len() - 20_000;
        assert!((0.9..0.98).contains(&(deps as f64 / 20_000.0)), "{deps}");
    }

    #[test]
    fn bins_match_interval_map_shape() {
        assert_eq!(bin_lower(1), 300);
        assert_eq!(bin_lower(12), 3600);
        assert_eq!(bin_lower(13), 3900);
        assert_eq!(bin_lower(14), 7500);
        assert_eq!(bin_lower(36), 86_700);
        assert_eq!(bin_lower(37), 173_100);
    }
}
