//! Memory-level parallelism: when each access of a scheme's stream starts and ends.
//!
//! Every access has a latency made of its STLB-hit cost, its page walk (a dependent chain of
//! references, plus the walk's fixed cost) and its data access. Accesses are issued in program
//! order; access `i` starts at the latest of
//!
//! - the start of access `i - 1` (in-order issue);
//! - when one of the `max_outstanding` slots is free: the `max_outstanding`-th latest completion
//!   among earlier accesses (L1D fill buffers / MSHRs; hits take a slot too, a simplification);
//! - when it is dependent ([`compromis_types::Op`]'s `dep`): the completion of the previous load
//!   (pointer chasing: the address comes from that load's data);
//! - the completion of every access at least `window` instructions older, or `window` accesses
//!   older (the reorder buffer is full);
//! - the last serialising event (a guest page fault, a VM exit on unmap or CR3 load drains the
//!   pipeline: [`Timeline::drain`]).
//!
//! Its walk, if any, starts after its STLB lookup and when one of `page_walkers` walkers is free
//! (the `page_walkers`-th latest walk end); the data access follows the walk. The timeline's clock
//! is the latest completion so far ([`Timeline::end`]), monotone, so warm-up is a subtraction.
//!
//! Every constraint is a maximum of earlier completions, each non-decreasing in the latencies and
//! in the constraints; so a dependent access is never faster than the same access independent,
//! more slots or walkers never slow a stream down, and with `max_outstanding = 1` every access
//! starts when the previous one ends: the end is the sum of the latencies (the serial model).
//! Exit and fault costs are not on this clock: they are added to it by the cycle account.

use crate::config::CoreConfig;

/// The latency of one access, by part (cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessTime {
    /// STLB-hit latency (0 on an L1 TLB hit or an STLB miss).
    pub stlb: u64,
    /// The page walk (0 when there was none).
    pub walk: u64,
    /// Whether a walk happened (it takes a walker even when every reference hit a cache).
    pub walked: bool,
    /// The data access.
    pub data: u64,
    /// Position of the access in the instruction stream (instructions retired so far).
    pub instr: u64,
    /// Waits for the previous load's data.
    pub dep: bool,
    /// A load or fetch (a later dependent access waits for it); stores produce no data.
    pub load: bool,
}

/// The `k` latest times seen: the `k`-th latest is when one of `k` resources is free.
///
/// The `k` times in ascending order in `k` consecutive slots (cyclically) of a ring of
/// [`MAX_K`] slots: [`Latest::free_at`] reads the first. A push of a time later than every
/// other (a long access: a walk, a miss) drops the first, the window moves up by one slot and
/// the time is its new last: one compare with the last. Any other push goes in from the nearer
/// end: above the window's middle time it moves down from the last slot (the window moving up
/// by one), else (a short access ending before the long ones in flight: a hit) it takes the
/// first's slot and rises past the few times below it. Moving every push down from the last
/// slot moved every hit past every miss in flight; rising every push moved nearly-in-order
/// completions past all the others (section 2k of `docs/performance.md` and the lead's note
/// after it); a binary heap's sift-down branched on every
/// level and was half the timeline's time. The ring's size is a power of two whatever `k`, so
/// every index wraps with one mask (a ring of exactly `k` slots compared and moved at every
/// step). Only the multiset of times matters, never which resource holds which.
#[derive(Clone, Debug)]
struct Latest {
    /// The `k` slots from `head` (cyclically) are ascending; the others are unused. Start as
    /// zeros: the `k`-th latest of the times pushed (0 while fewer than `k`) is the `k`-th
    /// largest of them and `k` zeros, all times being at least 0. [`MAX_K`] long, so that an
    /// index taken modulo [`MAX_K`] needs no bounds check.
    times: Box<[u64; MAX_K]>,
    /// Where the smallest time is (below [`MAX_K`]).
    head: usize,
    k: usize,
}

/// The most resources (slots, walkers) and window entries a [`Timeline`] models (a power of
/// two: [`Latest`]'s ring).
const MAX_K: usize = 4096;

impl Latest {
    fn new(k: u64) -> Latest {
        let k = usize::try_from(k.max(1)).unwrap_or(usize::MAX).min(MAX_K);
        Latest {
            times: Box::new([0; MAX_K]),
            head: 0,
            k,
        }
    }

    /// When a resource is free: the `k`-th latest time (0 while fewer than `k` were used).
    #[inline(always)]
    fn free_at(&self) -> u64 {
        self.times[self.head % MAX_K]
    }

    /// Records a use ending at `t`: it replaces the smallest time if it is later.
    #[inline(always)]
    fn push(&mut self, t: u64) {
        let head = self.head % MAX_K;
        if t <= self.times[head] {
            return;
        }
        let last = (head + self.k - 1) % MAX_K;
        if self.times[last] <= t {
            // The latest time so far (a long access): the smallest time goes, the window moves
            // up by one slot and `t` is its new last.
            let head = (head + 1) % MAX_K;
            self.head = head;
            self.times[(head + self.k - 1) % MAX_K] = t;
            return;
        }
        // Below the latest: `t` goes in from the nearer end of the window. Above its middle
        // time (nearly the latest: without data caches completions come nearly in order) the
        // smallest time goes, the window moves up by one slot and `t` moves down from the new
        // last slot; else (a short access ending before the long ones in flight: a hit) `t`
        // takes the smallest time's slot and rises past the few times below it.
        if t > self.times[(head + self.k / 2) % MAX_K] {
            let head = (head + 1) % MAX_K;
            self.head = head;
            self.sink((head + self.k - 1) % MAX_K, t);
        } else {
            self.rise(head, t);
        }
    }

    /// `t` moves down from slot `p` (the window's last, unused) past the times above it; the
    /// window's first time is below `t`, so it stops after the first slot.
    #[inline(always)]
    fn sink(&mut self, mut p: usize, t: u64) {
        let times = &mut self.times;
        for _ in 1..self.k {
            let q = p.wrapping_sub(1) % MAX_K;
            if times[q] <= t {
                break;
            }
            times[p] = times[q];
            p = q;
        }
        times[p] = t;
    }

    /// `t` replaces the smallest time (slot `p`, the window's first) and moves up past the times
    /// below it; the window's last time is above `t`, so it stops before the last slot.
    #[inline(always)]
    fn rise(&mut self, mut p: usize, t: u64) {
        let times = &mut self.times;
        for _ in 1..self.k {
            let q = (p + 1) % MAX_K;
            if times[q] >= t {
                break;
            }
            times[p] = times[q];
            p = q;
        }
        times[p] = t;
    }
}

/// One scheme's memory timeline (see the module docs).
#[derive(Clone, Debug)]
pub struct Timeline {
    /// `max_outstanding == 1`: every access starts when the previous one ends, the end is the
    /// sum of the latencies (the module docs), so [`Timeline::access`] only adds.
    serial: bool,
    slots: Latest,
    walkers: Latest,
    window: u64,
    /// Accesses still in the window, oldest first: (instruction position, completion), a ring
    /// of a power-of-two size above `window` (at most `window` are held).
    in_window: Box<[(u64, u64); MAX_K]>,
    /// The ring's size minus one (a power of two at most [`MAX_K`]).
    mask: usize,
    /// Index of the oldest access in `in_window`.
    oldest: usize,
    /// How many accesses `in_window` holds.
    held: usize,
    /// The earliest start of the next access from in-order issue, the window and serialising
    /// events: the start of the previous access, raised to the completion of each access that
    /// leaves the window and to [`Timeline::end`] at a [`Timeline::drain`]. One maximum instead
    /// of three: those constraints enter every later start the same way, and each start is at
    /// least the previous one.
    last_start: u64,
    /// Completion of the previous load.
    last_load: u64,
    /// Latest completion so far.
    end: u64,
}

impl Timeline {
    /// An empty timeline for `core`.
    pub fn new(core: &CoreConfig) -> Timeline {
        let window = core.window.clamp(1, 4096);
        Timeline {
            serial: core.max_outstanding <= 1,
            slots: Latest::new(core.max_outstanding),
            walkers: Latest::new(core.page_walkers),
            window,
            // `window` is at most 4096.
            in_window: Box::new([(0, 0); MAX_K]),
            mask: (window as usize).next_power_of_two() - 1,
            oldest: 0,
            held: 0,
            last_start: 0,
            last_load: 0,
            end: 0,
        }
    }

    /// Schedules one access; returns its completion time. Inlined into the scheme's loop, the
    /// access's parts stay in registers (a call took them through memory).
    #[inline(always)]
    pub fn access(&mut self, a: AccessTime) -> u64 {
        if self.serial {
            // One slot: the access starts at the latest completion so far (every other
            // constraint is an earlier completion), and its walk finds a walker free.
            self.end += a.stlb + a.walk + a.data;
            return self.end;
        }
        let mask = self.mask;
        while self.held > 0 {
            let (pos, done) = self.in_window[self.oldest % MAX_K];
            if pos + self.window <= a.instr || self.held as u64 >= self.window {
                self.last_start = self.last_start.max(done);
                self.oldest = (self.oldest + 1) & mask;
                self.held -= 1;
            } else {
                break;
            }
        }
        let mut start = self.last_start.max(self.slots.free_at());
        if a.dep {
            start = start.max(self.last_load);
        }
        let mut t = start + a.stlb;
        if a.walked {
            t = t.max(self.walkers.free_at()) + a.walk;
            self.walkers.push(t);
        }
        let done = t + a.data;
        self.slots.push(done);
        self.in_window[((self.oldest + self.held) & mask) % MAX_K] = (a.instr, done);
        self.held += 1;
        self.last_start = start;
        if a.load {
            self.last_load = done;
        }
        self.end = self.end.max(done);
        done
    }

    /// A serialising event: later accesses start after every access so far has completed.
    #[inline]
    pub fn drain(&mut self) {
        // `end` is at least every start so far.
        self.last_start = self.end;
    }

    /// The latest completion so far (non-decreasing).
    #[inline]
    pub fn end(&self) -> u64 {
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn core(slots: u64, walkers: u64, window: u64) -> CoreConfig {
        CoreConfig {
            base_cpi: 0.5,
            max_outstanding: slots,
            window,
            page_walkers: walkers,
        }
    }

    fn run(c: &CoreConfig, accesses: &[AccessTime]) -> u64 {
        let mut t = Timeline::new(c);
        for &a in accesses {
            t.access(a);
        }
        t.end()
    }

    fn serial(accesses: &[AccessTime]) -> u64 {
        accesses.iter().map(|a| a.stlb + a.walk + a.data).sum()
    }

    prop_compose! {
        fn arb_access()(stlb in 0u64..10, walked in any::<bool>(), walk in 0u64..300,
                        data in 0u64..250, instrs in 0u64..40, dep in any::<bool>(),
                        load in any::<bool>()) -> (AccessTime, u64) {
            (AccessTime { stlb, walk: if walked { walk } else { 0 }, walked, data, instr: 0, dep,
                          load }, instrs)
        }
    }

    fn stream(v: &[(AccessTime, u64)]) -> Vec<AccessTime> {
        let mut pos = 0;
        v.iter()
            .map(|&(a, n)| {
                pos += n;
                AccessTime { instr: pos, ..a }
            })
            .collect()
    }

    #[test]
    fn independent_misses_overlap_up_to_the_slots() {
        let a = AccessTime {
            data: 200,
            instr: 1,
            load: true,
            ..AccessTime::default()
        };
        let ten: Vec<AccessTime> = (0..10).map(|i| AccessTime { instr: i, ..a }).collect();
        assert_eq!(run(&core(10, 2, 224), &ten), 200);
        assert_eq!(run(&core(5, 2, 224), &ten), 400);
        assert_eq!(run(&core(1, 2, 224), &ten), 2000);
        let chain: Vec<AccessTime> = ten.iter().map(|&x| AccessTime { dep: true, ..x }).collect();
        assert_eq!(run(&core(10, 2, 224), &chain), 2000);
    }

    #[test]
    fn walks_are_limited_by_the_walkers_and_the_window_by_instructions() {
        let a = AccessTime {
            walk: 100,
            walked: true,
            load: true,
            ..AccessTime::default()
        };
        let four: Vec<AccessTime> = (0..4).map(|i| AccessTime { instr: i, ..a }).collect();
        assert_eq!(run(&core(10, 2, 224), &four), 200);
        assert_eq!(run(&core(10, 4, 224), &four), 100);
        // 100 instructions apart with a 100-instruction window: one at a time.
        let far: Vec<AccessTime> = (0..4)
            .map(|i| AccessTime {
                instr: 100 * i,
                ..a
            })
            .collect();
        assert_eq!(run(&core(10, 4, 100), &far), 400);
    }

    #[test]
    fn a_drain_serialises() {
        let a = AccessTime {
            data: 50,
            load: true,
            ..AccessTime::default()
        };
        let mut t = Timeline::new(&core(10, 2, 224));
        t.access(a);
        t.drain();
        t.access(a);
        assert_eq!(t.end(), 100);
    }

    /// The timeline of the module docs, written plainly: every completion and walk end kept,
    /// the k-th latest found by sorting, the window a queue. The oracle of [`Timeline`].
    struct Naive {
        c: CoreConfig,
        done: Vec<u64>,
        walk_ends: Vec<u64>,
        queue: std::collections::VecDeque<(u64, u64)>,
        retired: u64,
        last_start: u64,
        last_load: u64,
        floor: u64,
        end: u64,
    }

    fn kth_latest(v: &[u64], k: u64) -> u64 {
        let mut s = v.to_vec();
        s.sort_unstable_by(|a, b| b.cmp(a));
        s.get(usize::try_from(k.max(1)).unwrap() - 1)
            .copied()
            .unwrap_or(0)
    }

    impl Naive {
        fn new(c: &CoreConfig) -> Naive {
            Naive {
                c: c.clone(),
                done: Vec::new(),
                walk_ends: Vec::new(),
                queue: std::collections::VecDeque::new(),
                retired: 0,
                last_start: 0,
                last_load: 0,
                floor: 0,
                end: 0,
            }
        }

        fn access(&mut self, a: AccessTime) -> u64 {
            let window = self.c.window.clamp(1, 4096);
            while let Some(&(pos, done)) = self.queue.front() {
                if pos + window <= a.instr || self.queue.len() as u64 >= window {
                    self.retired = self.retired.max(done);
                    self.queue.pop_front();
                } else {
                    break;
                }
            }
            let mut start = self
                .last_start
                .max(self.floor)
                .max(self.retired)
                .max(kth_latest(&self.done, self.c.max_outstanding));
            if a.dep {
                start = start.max(self.last_load);
            }
            let mut t = start + a.stlb;
            if a.walked {
                t = t.max(kth_latest(&self.walk_ends, self.c.page_walkers)) + a.walk;
                self.walk_ends.push(t);
            }
            let done = t + a.data;
            self.done.push(done);
            self.queue.push_back((a.instr, done));
            self.last_start = start;
            if a.load {
                self.last_load = done;
            }
            self.end = self.end.max(done);
            done
        }
    }

    proptest! {
        #[test]
        fn the_timeline_is_the_plain_model(
            v in prop::collection::vec(arb_access(), 0..300), slots in 2u64..12,
            walkers in 1u64..4, window in 1u64..40,
            drains in prop::collection::vec(0u8..40, 300)) {
            let s = stream(&v);
            let c = core(slots, walkers, window);
            let mut fast = Timeline::new(&c);
            let mut naive = Naive::new(&c);
            for (a, d) in s.into_iter().zip(drains) {
                prop_assert_eq!(fast.access(a), naive.access(a));
                prop_assert_eq!(fast.end(), naive.end);
                if d == 0 {
                    fast.drain();
                    naive.floor = naive.end;
                }
            }
        }

        #[test]
        fn latest_is_the_kth_latest_time(v in prop::collection::vec(0u64..50, 0..120),
                                         k in 1u64..24,
                                         start in prop_oneof![Just(0usize), (MAX_K - 40)..MAX_K]) {
            let mut l = Latest::new(k);
            // The window of zeros placed anywhere in the ring, across its end too.
            l.head = start;
            let mut all = Vec::new();
            for &t in &v {
                l.push(t);
                all.push(t);
                let mut sorted = all.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                let want = sorted.get(usize::try_from(k).unwrap() - 1).copied().unwrap_or(0);
                prop_assert_eq!(l.free_at(), want);
            }
        }

        #[test]
        fn the_serial_shortcut_is_the_general_path_with_one_slot(
            v in prop::collection::vec(arb_access(), 0..60), walkers in 1u64..4,
            window in 1u64..300, drains in prop::collection::vec(any::<bool>(), 60)) {
            let s = stream(&v);
            let c = core(1, walkers, window);
            let mut fast = Timeline::new(&c);
            let mut general = Timeline { serial: false, ..Timeline::new(&c) };
            prop_assert!(fast.serial);
            for (&a, &d) in s.iter().zip(&drains) {
                prop_assert_eq!(fast.access(a), general.access(a));
                if d {
                    fast.drain();
                    general.drain();
                }
                prop_assert_eq!(fast.end(), general.end());
            }
        }

        #[test]
        fn one_slot_is_the_serial_model(v in prop::collection::vec(arb_access(), 0..60),
                                        walkers in 1u64..4, window in 1u64..300) {
            let s = stream(&v);
            prop_assert_eq!(run(&core(1, walkers, window), &s), serial(&s));
        }

        #[test]
        fn a_dependent_chain_is_never_faster(v in prop::collection::vec(arb_access(), 0..60),
                                             slots in 1u64..16, walkers in 1u64..4,
                                             window in 1u64..300) {
            let s = stream(&v);
            let c = core(slots, walkers, window);
            let indep: Vec<AccessTime> = s.iter().map(|&a| AccessTime { dep: false, ..a }).collect();
            let chain: Vec<AccessTime> =
                s.iter().map(|&a| AccessTime { dep: true, load: true, ..a }).collect();
            let mixed = run(&c, &s);
            prop_assert!(run(&c, &indep) <= mixed);
            prop_assert!(mixed <= run(&c, &chain));
            prop_assert!(run(&c, &chain) <= serial(&s));
        }

        #[test]
        fn more_slots_walkers_or_window_never_slow_down(
            v in prop::collection::vec(arb_access(), 0..60), slots in 1u64..16,
            walkers in 1u64..4, window in 1u64..300) {
            let s = stream(&v);
            let base = run(&core(slots, walkers, window), &s);
            prop_assert!(run(&core(slots + 1, walkers, window), &s) <= base);
            prop_assert!(run(&core(slots, walkers + 1, window), &s) <= base);
            prop_assert!(run(&core(slots, walkers, window + 1), &s) <= base);
        }
    }
}
