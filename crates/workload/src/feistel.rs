//! A seeded bijection on `[0, n)` in constant memory: a 4-round Feistel network on the smallest
//! number of bits `b` covering `n` (halves of `floor(b/2)` and `ceil(b/2)` bits that swap widths
//! each round, so any `b` works), with cycle walking (re-apply until the value falls below `n`;
//! terminates because the network is a permutation of `[0, 2^b)`, and takes fewer than 2
//! applications on average since `2^b < 2n`).
//!
//! Source: Black and Rogaway, "Ciphers with Arbitrary Finite Domains" (CT-RSA 2002), cycle walking.

use crate::layout::mix64;

/// A keyed permutation of `[0, n)`.
#[derive(Clone, Debug)]
pub struct Feistel {
    n: u64,
    /// Width of the high part `a` and of the low part `b` of a value (`a + b` bits in all).
    a: u32,
    b: u32,
    keys: [u64; 4],
}

impl Feistel {
    /// A permutation of `[0, n)` (`n >= 1`, `n <= 2^62`) keyed by `seed`.
    pub fn new(n: u64, seed: u64) -> Self {
        debug_assert!(n >= 1);
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let mut k = seed;
        let mut keys = [0; 4];
        for key in &mut keys {
            k = mix64(k.wrapping_add(0x9e37_79b9_7f4a_7c15));
            *key = k;
        }
        Feistel {
            n,
            a: bits / 2,
            b: bits - bits / 2,
            keys,
        }
    }

    /// The size of the domain.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// One pass of the network over `[0, 2^(a+b))`. A round maps `(l, r)` (widths `w_l`, `w_r`)
    /// to `(r, l ^ F(r) mod 2^w_l)` (widths `w_r`, `w_l`), which is invertible; after an even
    /// number of rounds the widths are back to `(a, b)`.
    #[inline]
    fn pass(&self, x: u64) -> u64 {
        let (mut wl, mut wr) = (self.a, self.b);
        let mut l = x >> wr;
        let mut r = x & ((1u64 << wr) - 1);
        for &k in &self.keys {
            let t = l ^ (mix64(r ^ k) & ((1u64 << wl) - 1));
            l = r;
            r = t;
            std::mem::swap(&mut wl, &mut wr);
        }
        (l << wr) | r
    }

    /// The image of `x < n`.
    #[inline]
    pub fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < self.n);
        let mut y = self.pass(x);
        while y >= self.n {
            y = self.pass(y);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn is_a_bijection(n in 1u64..3000, seed in any::<u64>()) {
            let f = Feistel::new(n, seed);
            let mut seen = vec![false; usize::try_from(n).unwrap()];
            for x in 0..n {
                let y = f.apply(x);
                prop_assert!(y < n);
                let y = usize::try_from(y).unwrap();
                prop_assert!(!seen[y], "{} hit twice", y);
                seen[y] = true;
            }
        }
    }

    #[test]
    fn depends_on_seed() {
        let a = Feistel::new(1000, 1);
        let b = Feistel::new(1000, 2);
        assert!((0..1000).any(|x| a.apply(x) != b.apply(x)));
    }
}
