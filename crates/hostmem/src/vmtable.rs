//! A host's VMs by id: a vector sorted by id. A host holds tens of VMs and new ids mostly come in
//! increasing order, so an insert is usually a push and a lookup a short binary search; a B-tree
//! map cost several times more per create and destroy in placement replays. Iteration is in id
//! order, as a `BTreeMap`'s was.

use crate::host::VmRecord;
use compromis_types::VmId;

/// VM records sorted by id (ids unique).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VmTable {
    v: Vec<(VmId, VmRecord)>,
}

impl VmTable {
    pub(crate) fn new() -> Self {
        VmTable { v: Vec::new() }
    }

    /// Starts loading the first `max_lines` cache lines of the records (see [`crate::warm`]).
    #[inline]
    pub(crate) fn prefetch(&self, max_lines: usize) {
        crate::warm::prefetch_slice(&self.v, max_lines);
    }

    fn pos(&self, vm: VmId) -> Result<usize, usize> {
        // Fast path: the newest VM (the usual insert and a frequent lookup).
        match self.v.last() {
            None => Err(0),
            Some((last, _)) if *last < vm => Err(self.v.len()),
            Some((last, _)) if *last == vm => Ok(self.v.len() - 1),
            _ => self.v.binary_search_by_key(&vm, |e| e.0),
        }
    }

    pub(crate) fn get(&self, vm: &VmId) -> Option<&VmRecord> {
        self.pos(*vm).ok().map(|i| &self.v[i].1)
    }

    pub(crate) fn get_mut(&mut self, vm: &VmId) -> Option<&mut VmRecord> {
        self.pos(*vm).ok().map(|i| &mut self.v[i].1)
    }

    pub(crate) fn contains_key(&self, vm: &VmId) -> bool {
        self.pos(*vm).is_ok()
    }

    /// Inserts or replaces; returns the stored record.
    pub(crate) fn insert(&mut self, vm: VmId, rec: VmRecord) -> &mut VmRecord {
        let i = match self.pos(vm) {
            Ok(i) => {
                self.v[i].1 = rec;
                i
            }
            Err(i) => {
                self.v.insert(i, (vm, rec));
                i
            }
        };
        &mut self.v[i].1
    }

    /// Where `vm` is, for [`VmTable::at`] and [`VmTable::remove_at`] (one search for both).
    pub(crate) fn index_of(&self, vm: VmId) -> Option<usize> {
        self.pos(vm).ok()
    }

    pub(crate) fn at(&self, i: usize) -> &VmRecord {
        &self.v[i].1
    }

    pub(crate) fn remove_at(&mut self, i: usize) -> VmRecord {
        self.v.remove(i).1
    }

    #[cfg(test)]
    pub(crate) fn remove(&mut self, vm: &VmId) -> Option<VmRecord> {
        self.pos(*vm).ok().map(|i| self.v.remove(i).1)
    }

    /// `(id, record)` in id order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&VmId, &VmRecord)> + '_ {
        self.v.iter().map(|(id, r)| (id, r))
    }

    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &VmId> + '_ {
        self.v.iter().map(|(id, _)| id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &VmRecord> + '_ {
        self.v.iter().map(|(_, r)| r)
    }
}

impl<'a> IntoIterator for &'a VmTable {
    type Item = (&'a VmId, &'a VmRecord);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (VmId, VmRecord)>,
        fn(&'a (VmId, VmRecord)) -> (&'a VmId, &'a VmRecord),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.v.iter().map(|(id, r)| (id, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::VmMapping;
    use compromis_types::{Extent, PageSize};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn rec(n: u64) -> VmRecord {
        VmRecord {
            extents: smallvec::smallvec![Extent::new(n << 21, 1 << 21)],
            align: PageSize::Size2M,
            backing: VmMapping::Segments,
            max_extents: 1,
        }
    }

    proptest! {
        /// Against a `BTreeMap` oracle: inserts (mostly increasing ids), removes, lookups and
        /// the iteration order.
        #[test]
        fn behaves_like_a_btreemap(ops in prop::collection::vec((0u8..4, 0u64..40), 0..200)) {
            let (mut t, mut o) = (VmTable::new(), BTreeMap::new());
            for (op, k) in ops {
                let id = VmId(k);
                match op {
                    0 | 1 => {
                        t.insert(id, rec(k));
                        o.insert(id, rec(k));
                    }
                    2 => prop_assert_eq!(t.remove(&id), o.remove(&id)),
                    _ => {
                        prop_assert_eq!(t.get(&id), o.get(&id));
                        prop_assert_eq!(t.contains_key(&id), o.contains_key(&id));
                    }
                }
                prop_assert!(t.iter().map(|(a, b)| (*a, b.clone())).eq(o.iter().map(|(a, b)| (*a, b.clone()))));
                prop_assert_eq!(t.keys().next_back(), o.keys().next_back());
            }
        }
    }
}
