//! Every policy's choice, made through the scheduler's indexes (segment trees, ordered sets, the
//! global extent index), equals a naive linear scan over the hosts' memory managers.

use compromis_cluster::hm::{HostMemory, Policy, VmId};
use compromis_cluster::index::ClusterIndex;
use compromis_cluster::{PolicyKind, VM_GRANULE};
use compromis_types::PageSize;
use proptest::prelude::*;

struct Naive {
    hosts: Vec<(HostMemory, u32)>,
}

impl Naive {
    fn free_lens(&self, h: usize) -> Vec<u64> {
        self.hosts[h]
            .0
            .allocator()
            .free_extents()
            .map(|e| e.len)
            .collect()
    }

    /// The policy's rule written as a scan over hosts (ties as documented).
    fn choose(&self, p: PolicyKind, mem: u64, vcpus: u32) -> Option<u32> {
        let ok: Vec<usize> = (0..self.hosts.len())
            .filter(|&h| self.hosts[h].1 >= vcpus)
            .collect();
        let free = |h: usize| self.hosts[h].0.free_bytes();
        let largest = |h: usize| self.hosts[h].0.largest_free();
        let fit = |h: usize| self.free_lens(h).into_iter().filter(|&l| l >= mem).min();
        let pick = match p {
            PolicyKind::FirstFit => ok.iter().copied().find(|&h| free(h) >= mem),
            PolicyKind::BestFit => ok
                .iter()
                .copied()
                .filter(|&h| free(h) >= mem)
                .min_by_key(|&h| (free(h), h)),
            PolicyKind::WorstFit => ok
                .iter()
                .copied()
                .filter(|&h| free(h) >= mem)
                .max_by_key(|&h| (free(h), h)),
            PolicyKind::ContigFirstFit => ok.iter().copied().find(|&h| largest(h) >= mem),
            PolicyKind::SegmentBestFit => ok
                .iter()
                .copied()
                .filter_map(|h| fit(h).map(|l| (l, h)))
                .min()
                .map(|x| x.1),
            PolicyKind::FragAware => ok
                .iter()
                .copied()
                .find(|&h| self.free_lens(h).contains(&mem))
                .or_else(|| {
                    ok.iter()
                        .copied()
                        .filter(|&h| largest(h) >= mem)
                        .min_by_key(|&h| (largest(h), h))
                }),
            PolicyKind::Random => return None,
        };
        pick.map(|h| u32::try_from(h).unwrap())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn index_choices_equal_naive_scan(
        hosts in prop::collection::vec((1u64..64, 0u32..8), 1..12),
        ops in prop::collection::vec((0usize..12, 1u64..24, 0u32..3, any::<bool>()), 0..80),
        queries in prop::collection::vec((1u64..40, 0u32..8), 1..10),
    ) {
        let mut ix = ClusterIndex::new(hosts.iter().map(|&(g, c)| (g * VM_GRANULE, c)));
        let mut naive = Naive { hosts: hosts.iter().map(|&(g, c)| (HostMemory::new(g * VM_GRANULE, Policy::BestFit), c)).collect() };
        let mut live: Vec<(usize, u64, u32)> = Vec::new();
        for (i, &(h, len, vcpus, free_one)) in ops.iter().enumerate() {
            if free_one && !live.is_empty() {
                let (h, vm, vcpus) = live.remove(i % live.len());
                let ext = naive.hosts[h].0.extents(VmId(vm)).unwrap().to_vec();
                ix.on_destroy(u32::try_from(h).unwrap(), &ext, vcpus);
                naive.hosts[h].0.destroy(VmId(vm)).unwrap();
                naive.hosts[h].1 += vcpus;
                continue;
            }
            let h = h % hosts.len();
            if naive.hosts[h].1 < vcpus {
                continue;
            }
            let vm = i as u64;
            if let Ok(ext) = naive.hosts[h].0.create(VmId(vm), len * VM_GRANULE, PageSize::Size2M, 3) {
                ix.on_create(u32::try_from(h).unwrap(), ext, vcpus);
                naive.hosts[h].1 -= vcpus;
                live.push((h, vm, vcpus));
            }
        }
        for h in 0..hosts.len() {
            let mut mine: Vec<u64> = ix.host(u32::try_from(h).unwrap()).free_lengths().collect();
            let mut theirs = naive.free_lens(h);
            mine.sort_unstable();
            theirs.sort_unstable();
            prop_assert_eq!(mine, theirs);
        }
        for &(g, vcpus) in &queries {
            for p in PolicyKind::ALL {
                if p == PolicyKind::Random {
                    continue;
                }
                prop_assert_eq!(p.build(0).choose(&ix, g * VM_GRANULE, vcpus), naive.choose(p, g * VM_GRANULE, vcpus), "{} {} GRANULES {} vcpus", p, g, vcpus);
            }
        }
    }
}
