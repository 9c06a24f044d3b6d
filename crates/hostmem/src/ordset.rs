//! An ordered set of `(u64, u64)` pairs for the allocator's free-extent indexes: a sorted vector
//! while small (binary search and a short `memmove`: a placement host holds tens of free extents,
//! where this is several times cheaper than a B-tree and allocates nothing in a steady state),
//! a `BTreeSet` once large (an aged 1 TiB host holds ten thousand, where a `memmove` per update
//! would cost more than the B-tree's O(log n)). The switch has hysteresis, and neither form shows
//! outside: equality and iteration are by contents.

use std::collections::BTreeSet;
use std::collections::btree_set;
use std::ops::Bound::{Excluded, Included, Unbounded};

/// Above this many keys the set becomes a B-tree.
const GROW: usize = 512;
/// Below this many keys a B-tree set becomes a vector again.
const SHRINK: usize = 128;

type Key = (u64, u64);

#[derive(Clone, Debug)]
pub(crate) enum OrdSet {
    Small(Vec<Key>),
    Large(BTreeSet<Key>),
}

impl Default for OrdSet {
    fn default() -> Self {
        OrdSet::Small(Vec::new())
    }
}

impl PartialEq for OrdSet {
    fn eq(&self, o: &Self) -> bool {
        self.len() == o.len() && self.iter().eq(o.iter())
    }
}

impl Eq for OrdSet {}

/// Iterator over a range of an [`OrdSet`], in order (both ends).
pub(crate) enum Iter<'a> {
    Small(std::slice::Iter<'a, Key>),
    Large(btree_set::Range<'a, Key>),
}

impl Iterator for Iter<'_> {
    type Item = Key;
    #[inline]
    fn next(&mut self) -> Option<Key> {
        match self {
            Iter::Small(i) => i.next().copied(),
            Iter::Large(i) => i.next().copied(),
        }
    }
}

impl DoubleEndedIterator for Iter<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Key> {
        match self {
            Iter::Small(i) => i.next_back().copied(),
            Iter::Large(i) => i.next_back().copied(),
        }
    }
}

impl OrdSet {
    /// Starts loading the first `max_lines` cache lines of a small set's keys (see
    /// [`crate::warm`]; a large set is left alone).
    #[inline]
    pub(crate) fn prefetch(&self, max_lines: usize) {
        if let OrdSet::Small(v) = self {
            crate::warm::prefetch_slice(v, max_lines);
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            OrdSet::Small(v) => v.len(),
            OrdSet::Large(s) => s.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `k` (no effect when present).
    #[inline]
    pub(crate) fn insert(&mut self, k: Key) {
        match self {
            OrdSet::Small(v) => {
                if let Err(i) = v.binary_search(&k) {
                    v.insert(i, k);
                    if v.len() > GROW {
                        *self = OrdSet::Large(v.iter().copied().collect());
                    }
                }
            }
            OrdSet::Large(s) => {
                s.insert(k);
            }
        }
    }

    /// Removes `k` (no effect when absent).
    #[inline]
    pub(crate) fn remove(&mut self, k: Key) {
        match self {
            OrdSet::Small(v) => {
                if let Ok(i) = v.binary_search(&k) {
                    v.remove(i);
                }
            }
            OrdSet::Large(s) => {
                s.remove(&k);
                if s.len() < SHRINK {
                    *self = OrdSet::Small(s.iter().copied().collect());
                }
            }
        }
    }

    /// Replaces `old` (which must be present) by `new`, which must take `old`'s place in the
    /// order (no other key lies between them): one binary search and no `memmove`.
    #[inline]
    pub(crate) fn replace_in_place(&mut self, old: Key, new: Key) {
        match self {
            OrdSet::Small(v) => match v.binary_search(&old) {
                Ok(i) => {
                    debug_assert!(
                        i == 0 || v[i - 1] < new,
                        "replace_in_place breaks the order"
                    );
                    debug_assert!(
                        v.get(i + 1).is_none_or(|&n| new < n),
                        "replace_in_place breaks the order"
                    );
                    v[i] = new;
                }
                Err(_) => debug_assert!(false, "replace_in_place of a missing key"),
            },
            OrdSet::Large(s) => {
                s.remove(&old);
                s.insert(new);
            }
        }
    }

    /// Replaces `old` (which must be present) by `new` (which must not be), wherever `new` goes:
    /// one `memmove` of the keys between the two places instead of a removal and an insertion.
    #[inline]
    pub(crate) fn replace(&mut self, old: Key, new: Key) {
        match self {
            OrdSet::Small(v) => {
                let Ok(i) = v.binary_search(&old) else {
                    debug_assert!(false, "replace of a missing key");
                    return;
                };
                if new > old {
                    // The keys in (old, new) move down one place.
                    let j = i + 1 + v[i + 1..].partition_point(|&x| x < new);
                    v.copy_within(i + 1..j, i);
                    v[j - 1] = new;
                } else {
                    // The keys in (new, old) move up one place.
                    let j = v[..i].partition_point(|&x| x < new);
                    v.copy_within(j..i, j + 1);
                    v[j] = new;
                }
            }
            OrdSet::Large(s) => {
                s.remove(&old);
                s.insert(new);
            }
        }
    }

    pub(crate) fn contains(&self, k: Key) -> bool {
        match self {
            OrdSet::Small(v) => v.binary_search(&k).is_ok(),
            OrdSet::Large(s) => s.contains(&k),
        }
    }

    pub(crate) fn last(&self) -> Option<Key> {
        match self {
            OrdSet::Small(v) => v.last().copied(),
            OrdSet::Large(s) => s.last().copied(),
        }
    }

    /// Every key, in order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        match self {
            OrdSet::Small(v) => Iter::Small(v.iter()),
            OrdSet::Large(s) => Iter::Large(s.range(..)),
        }
    }

    /// The keys `>= k`, in order.
    #[inline]
    pub(crate) fn from(&self, k: Key) -> Iter<'_> {
        match self {
            OrdSet::Small(v) => Iter::Small(v[v.partition_point(|&x| x < k)..].iter()),
            OrdSet::Large(s) => Iter::Large(s.range((Included(k), Unbounded))),
        }
    }

    /// The largest key `<= k`.
    #[inline]
    pub(crate) fn at_or_before(&self, k: Key) -> Option<Key> {
        match self {
            OrdSet::Small(v) => v.partition_point(|&x| x <= k).checked_sub(1).map(|i| v[i]),
            OrdSet::Large(s) => s.range((Unbounded, Included(k))).next_back().copied(),
        }
    }

    /// `(at_or_before(k), after(k))` with one search.
    #[inline]
    pub(crate) fn around(&self, k: Key) -> (Option<Key>, Option<Key>) {
        match self {
            OrdSet::Small(v) => {
                let i = v.partition_point(|&x| x <= k);
                (i.checked_sub(1).map(|i| v[i]), v.get(i).copied())
            }
            OrdSet::Large(_) => (self.at_or_before(k), self.after(k)),
        }
    }

    /// The smallest key `> k`.
    #[inline]
    pub(crate) fn after(&self, k: Key) -> Option<Key> {
        match self {
            OrdSet::Small(v) => v.get(v.partition_point(|&x| x <= k)).copied(),
            OrdSet::Large(s) => s.range((Excluded(k), Unbounded)).next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a `BTreeSet` oracle, across the vector / B-tree switch both ways.
        #[test]
        fn behaves_like_a_btreeset(
            ops in prop::collection::vec((0u8..8, 0u64..2000, 0u64..3), 0..3000),
        ) {
            let (mut s, mut o) = (OrdSet::default(), BTreeSet::new());
            let half = ops.len() / 2;
            for (i, (op, a, b)) in ops.into_iter().enumerate() {
                let k = (a, b);
                match op {
                    // Grow while most operations insert, then shrink while most remove.
                    0..=4 if i < half => {
                        s.insert(k);
                        o.insert(k);
                    }
                    0..=5 => {
                        let k = o
                            .iter()
                            .nth(usize::try_from(a).unwrap_or(0) % o.len().max(1))
                            .copied()
                            .unwrap_or(k);
                        s.remove(k);
                        o.remove(&k);
                    }
                    6 if b == 2 => {
                        // Replace an existing key by an absent one (anywhere), or by one that
                        // keeps its place.
                        if let Some(&old) = o.iter().nth(usize::try_from(a).unwrap_or(0) % o.len().max(1)) {
                            let next = o.range((Excluded(old), Unbounded)).next().copied();
                            let in_place = (old.0, old.1 + 1);
                            if a % 2 == 0 && next.is_none_or(|n| in_place < n) {
                                s.replace_in_place(old, in_place);
                                o.remove(&old);
                                o.insert(in_place);
                            } else if !o.contains(&k) {
                                s.replace(old, k);
                                o.remove(&old);
                                o.insert(k);
                            }
                        }
                    }
                    6 => {
                        prop_assert_eq!(s.at_or_before(k), o.range(..=k).next_back().copied());
                        prop_assert_eq!(s.after(k), o.range((Excluded(k), Unbounded)).next().copied());
                        prop_assert_eq!(s.around(k), (s.at_or_before(k), s.after(k)));
                    }
                    _ => {
                        prop_assert!(s.from(k).eq(o.range(k..).copied()));
                        prop_assert!(s.from(k).rev().eq(o.range(k..).rev().copied()));
                        prop_assert_eq!(s.contains(k), o.contains(&k));
                    }
                }
                prop_assert_eq!(s.len(), o.len());
                prop_assert_eq!(s.last(), o.last().copied());
            }
            prop_assert!(s.iter().eq(o.iter().copied()));
        }
    }
}
