//! `kv-zipf`: zipfian GETs against an open-addressing (linear probing) hash table, as in a
//! memcached/Redis-like key-value store under a YCSB-style skewed workload.
//!
//! Layout: a bucket array (16-byte buckets: key hash and value pointer) taking a fifth of the
//! footprint, and a value slab (128-byte values) taking the rest, so the table holds half as
//! many keys as buckets (load factor ~0.5).
//!
//! Each lookup draws a popularity rank from a Zipf distribution (`rand_distr::Zipf`, exponent
//! [`ZIPF_EXPONENT`] = 0.99, YCSB's default "zipfian constant"; Cooper et al., SoCC 2010),
//! maps the rank to a key through a seeded bijection (so popular keys are scattered over the
//! slab, as insertion order would scatter them), loads the key's home bucket, then 0, 1 or 2
//! further buckets (linear probing; probability 5/8, 1/4, 1/8 derived from the key's hash, a mean
//! of 1.5 bucket loads: Knuth's expected successful-search cost `(1 + 1/(1-a))/2` at a = 0.5),
//! then the value.
//!
//! Instructions per lookup: a Fetch at the lookup function (30: request handling and hashing
//! since the previous access), the home-bucket Load (4), each further probe Load (5: compare,
//! branch, advance, wrap), the value Load (6: key compare and pointer follow). 40 to 50 in all.
//! The bucket loads are independent (the home bucket comes from the key's hash); the value load
//! depends on the last bucket load (it follows the bucket's value pointer).

use crate::Proc;
use crate::feistel::Feistel;
use crate::layout::{CODE_LEN, OpBuf, PAGE, Region, below, data_len, mix64, place_down};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};

/// The Zipf exponent (YCSB's 0.99).
pub const ZIPF_EXPONENT: f64 = 0.99;
/// Bucket size in bytes.
pub const BUCKET: u64 = 16;
/// Value size in bytes.
pub const VALUE: u64 = 128;
/// A page of buckets and a page of values at least (fp / 5 >= 4 KiB).
pub const MIN_FOOTPRINT: u64 = 5 * PAGE;
/// Code offset of the lookup function.
const LOOKUP_PC: u64 = 0x4200;
/// Code offset of the value copy.
const VALUE_PC: u64 = 0x4380;
/// Ops per lookup at most.
const OPS: usize = 6;

/// Bucket array and value slab for a footprint.
fn regions(fp: u64) -> (Region, Region) {
    let buckets = data_len(fp / 5);
    let slab = data_len(fp - buckets);
    let r = place_down(&[buckets, slab]);
    (r[0], r[1])
}

/// Bytes mapped by one process.
pub fn mapped(fp: u64) -> u64 {
    let (b, s) = regions(fp);
    CODE_LEN + b.len + s.len
}

/// Maps a Zipf sample (a float in `[1, n]`) to a rank in `[0, n)`.
fn rank(sample: f64, n: u64) -> u64 {
    let x = sample.floor();
    if x.is_nan() || x < 1.0 {
        return 0;
    }
    // Clamped to [1, n] with n < 2^53, so the value is an exact non-negative integer that fits.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let r = x as u64;
    r.min(n) - 1
}

/// One process serving lookups.
pub struct KvZipf {
    buckets: Region,
    slab: Region,
    nbuckets: u64,
    keys: u64,
    zipf: Zipf<f64>,
    scatter: Feistel,
    salt: u64,
    rng: ChaCha8Rng,
    started: bool,
}

impl KvZipf {
    /// A process over a `fp`-byte table (at least [`MIN_FOOTPRINT`]).
    pub fn new(fp: u64, seed: u64) -> Self {
        let (buckets, slab) = regions(fp);
        let keys = slab.len / VALUE;
        let zipf = Zipf::new(keys, ZIPF_EXPONENT).expect("keys >= 1 and a positive exponent");
        KvZipf {
            buckets,
            slab,
            nbuckets: buckets.len / BUCKET,
            keys,
            zipf,
            scatter: Feistel::new(keys, seed ^ 0x6b76),
            salt: mix64(seed ^ 0x7a69_7066),
            rng: ChaCha8Rng::seed_from_u64(seed),
            started: false,
        }
    }

    /// The key looked up for a popularity rank.
    fn key_of_rank(&self, rank: u64) -> u64 {
        self.scatter.apply(rank)
    }
}

impl Proc for KvZipf {
    #[inline]
    fn step(&mut self, buf: &mut OpBuf) {
        if !self.started {
            self.started = true;
            buf.push(Region::code().map());
            buf.push(self.buckets.map());
            buf.push(self.slab.map());
            return;
        }
        while buf.room() >= OPS {
            let r = rank(self.zipf.sample(&mut self.rng), self.keys);
            let key = self.key_of_rank(r);
            let h = mix64(key ^ self.salt);
            let home = below(h, self.nbuckets);
            let extra = match h & 7 {
                0..=4 => 0,
                5 | 6 => 1,
                _ => 2,
            };
            buf.fetch(LOOKUP_PC, 30);
            buf.load(self.buckets.at(home * BUCKET), 4);
            let mut b = home;
            for _ in 0..extra {
                b += 1;
                if b == self.nbuckets {
                    b = 0;
                }
                buf.load(self.buckets.at(b * BUCKET), 5);
            }
            buf.fetch(VALUE_PC, 2);
            // The value's address is the bucket's value pointer: it waits for the bucket load.
            buf.load_dep(self.slab.at(key * VALUE), 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compromis_types::{AccessKind, Op};

    #[test]
    fn rank_mapping() {
        assert_eq!(rank(1.0, 10), 0);
        assert_eq!(rank(1.9, 10), 0);
        assert_eq!(rank(10.0, 10), 9);
        assert_eq!(rank(11.0, 10), 9);
        assert_eq!(rank(f64::NAN, 10), 0);
    }

    #[test]
    fn popular_keys_dominate_and_layout_splits() {
        let fp = 10 << 20;
        let mut kv = KvZipf::new(fp, 3);
        assert_eq!(kv.buckets.len, 2 << 20);
        assert_eq!(kv.slab.len, 8 << 20);
        let hot = kv.slab.at(kv.key_of_rank(0) * VALUE);
        let mut buf = OpBuf::default();
        kv.step(&mut buf);
        while buf.pop().is_some() {}
        let (mut values, mut hot_hits, mut bucket_loads) = (0u64, 0u64, 0u64);
        while values < 20_000 {
            kv.step(&mut buf);
            while let Some(op) = buf.pop() {
                if let Op::Access {
                    gva,
                    kind: AccessKind::Load,
                    ..
                } = op
                {
                    if gva >= kv.slab.start && gva.0 < kv.slab.start.0 + kv.slab.len {
                        values += 1;
                        hot_hits += u64::from(gva == hot);
                    } else {
                        bucket_loads += 1;
                    }
                }
            }
        }
        // 65536 keys, s = 0.99: P(rank 1) = 1 / H(65536, 0.99) ~ 1/11.9 ~ 8.4%.
        assert!(
            (1300..2100).contains(&hot_hits),
            "hot key hit {hot_hits} times of 20000"
        );
        // Mean 1.5 bucket loads per lookup.
        assert!(
            (28_000..32_000).contains(&bucket_loads),
            "{bucket_loads} bucket loads"
        );
    }
}
