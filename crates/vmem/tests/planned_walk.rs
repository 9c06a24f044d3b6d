//! A walk planned ahead ([`RadixTable::plan_walk`]) and finished later ([`RadixTable::finish_last`],
//! [`RadixTable::finish_two`]) gives what a new descent gives, while the table is unchanged; once
//! the table is written, it gives nothing.

use compromis_vmem::RadixTable;
use proptest::prelude::*;

proptest! {
    /// Tables of 4 and 5 levels with 4 KiB, 2 MiB and 1 GiB leaves (and absent entries at every
    /// level): for every address asked, `finish_last` of its plan is `last_entry` (the last
    /// entry's address and the leaf) and agrees with `walk`; a plan is not finished for another
    /// page, nor after any later write to the table (a map or an unmap).
    #[test]
    fn finished_plans_are_walks(
        five in any::<bool>(),
        maps in prop::collection::vec((0u64..(1 << 34), 1u8..4), 0..60),
        asks in prop::collection::vec(0u64..(1 << 34), 1..60),
        unmap in any::<u64>(),
    ) {
        let mut next = 1u64 << 40;
        let mut alloc = || {
            next += 4096;
            next
        };
        let mut t = RadixTable::new(if five { 5 } else { 4 }, 0x1000);
        for (va, level) in maps {
            // Spread over a few upper tables.
            let va = (va % 4) << 39 | va;
            let _ = t.map(va, va.wrapping_mul(3) & !0xfff, level, &mut alloc);
        }
        let asks: Vec<u64> = asks.into_iter().map(|a| (a % 4) << 39 | a).collect();
        let plans: Vec<_> = asks.iter().map(|&va| t.plan_walk(va)).collect();
        for (&va, plan) in asks.iter().zip(&plans) {
            let walk = t.walk(va);
            let got = t.finish_last(plan, va).expect("planned at this version");
            prop_assert_eq!(got, t.last_entry(va));
            prop_assert_eq!(Some(got.0), walk.last_entry());
            prop_assert_eq!(got.1, walk.leaf);
            // `finish_two`: the path's last two entries (one when the walk reads one).
            let (above, last, leaf) = t.finish_two(plan, va).expect("planned at this version");
            let n = usize::from(walk.len);
            prop_assert_eq!((last, leaf), got);
            prop_assert_eq!(above, n.checked_sub(2).map(|k| walk.entry_addrs[k]));
            // Another page of the same 2 MiB region: not this plan's.
            let other = va ^ 0x1000;
            prop_assert!(t.finish_last(plan, other).is_none());
            prop_assert!(t.finish_two(plan, other).is_none());
        }
        // Any write ends every plan made before it.
        let va = asks[usize::try_from(unmap % asks.len() as u64).unwrap()];
        if t.unmap(va).is_none() {
            t.map(va, 0x5000_0000, 1, &mut alloc).unwrap();
        }
        for (&va, plan) in asks.iter().zip(&plans) {
            prop_assert!(t.finish_last(plan, va).is_none());
            prop_assert!(t.finish_two(plan, va).is_none());
        }
        prop_assert!(t.finish_last(&Default::default(), asks[0]).is_none());
    }
}
