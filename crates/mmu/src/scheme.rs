//! The translation-scheme interface and the driver every scheme shares.
//!
//! A scheme is a [`Walker`]: what happens on a second-level TLB miss (which tables are read, how
//! each guest-physical address is turned into a host-physical one) and how the scheme reacts to
//! guest events (faults, unmaps, CR3 loads). [`Mmu`] wraps a walker with the TLBs and statistics
//! common to all schemes and implements [`Scheme`]. Adding a scheme is adding a file with a
//! `Walker` and a line in [`SchemeKind`].

use crate::config::MachineConfig;
use crate::mem::Mem;
use crate::pagecache::PageCache;
use crate::seen::{FrameMemo, SeenPages};
use crate::stats::Stats;
use crate::timing::{AccessTime, Timeline};
use crate::tlb::Tlbs;
use compromis_types::{AccessKind, Address, Gva, Hpa, Op, PageSize};
use compromis_vmem::{Backing, Fault, GuestOs, Unmapped, Writes};

/// Linux flushes the whole TLB rather than page by page above this many pages
/// (`tlb_single_page_flush_ceiling`, mm/tlb.c).
pub const FLUSH_CEILING: usize = 33;

/// Everything a walker may read: the guest's tables and the hypervisor's backing.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The guest OS (the running process's page table).
    pub guest: &'a GuestOs,
    /// The hypervisor's gPA -> hPA backing.
    pub backing: &'a Backing,
}

/// The result of a walk: the final page and its size as the TLB will hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkResult {
    /// Host-physical base of the page.
    pub frame: Hpa,
    /// Size of the TLB entry (for virtualized schemes, the smaller of the guest and host pages).
    pub size: PageSize,
}

/// What a scheme does on a TLB miss and on guest events.
pub trait Walker: Send {
    /// Walks for `gva`. `None` when the guest has no mapping (the guest then takes a page fault
    /// and the access is retried); such a failed walk is not counted.
    /// Every memory reference goes through `mem` (data caches, walk-cache latencies).
    fn walk(
        &mut self,
        ctx: Ctx<'_>,
        gva: Gva,
        asid: u16,
        mem: &mut Mem,
        stats: &mut Stats,
    ) -> Option<WalkResult>;
    /// The translation this scheme's structures give, without side effects or statistics.
    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa>;
    /// Speed hint for an access `stage` steps before it happens (see [`Prefetch`]): start loading
    /// the host memory the walk will read. Must not change any simulated state.
    /// Default: at [`Prefetch::Far`], the guest table's leaf, when [`Walker::far_hints`].
    fn prefetch(&self, ctx: Ctx<'_>, gva: Gva, stage: Prefetch) {
        if stage == Prefetch::Far && self.far_hints(ctx) {
            ctx.guest.table().prefetch_leaf(gva.raw());
        }
    }
    /// Whether [`Walker::prefetch`] does anything at [`Prefetch::Far`] for the running process
    /// now (when not, [`Mmu`] gives no such hint for the accesses it runs in one call). Default
    /// (the default `prefetch`): only for a guest table of more than [`SMALL_TABLE_PAGES`]; a
    /// smaller one stays in the host's caches, and finding its leaf (a walk of the simulator's
    /// own radix tree) would cost more than the miss it avoids. A walker with its own `prefetch`
    /// says what that does.
    fn far_hints(&self, ctx: Ctx<'_>) -> bool {
        ctx.guest.table().table_pages() > SMALL_TABLE_PAGES
    }
    /// Whether [`Walker::prefetch`] does anything at [`Prefetch::Mid`] (when not, [`Mmu`] gives
    /// no such hint). Default: no (the default `prefetch` acts at the far stage only).
    fn mid_hints(&self) -> bool {
        false
    }
    /// Speed hint at [`Prefetch::Near`]: the host addresses of the table entries a walk for `gva`
    /// reads that likely miss the simulator's own caches (the leaf entries), whose data-cache sets
    /// [`Mmu`] then prefetches. Default: the guest table's leaf entry at the host address the
    /// backing gives it. No state changes; a wrong answer only makes the hint useless.
    fn leaf_entries(&self, ctx: Ctx<'_>, gva: Gva) -> [Option<Hpa>; 2] {
        let e = ctx.guest.table().walk(gva.raw()).last_entry();
        [
            e.and_then(|e| ctx.backing.translate(compromis_types::Gpa(e))),
            None,
        ]
    }
    /// Speed hint at [`Prefetch::Near`], in one call: the translation [`Walker::probe`] gives
    /// and, when `leaves`, the entries [`Walker::leaf_entries`] gives, so that a walker can share
    /// the table walks of the two. Default: the two calls. No state changes.
    fn near(&self, ctx: Ctx<'_>, gva: Gva, leaves: bool) -> (Option<Hpa>, [Option<Hpa>; 2]) {
        let entries = if leaves {
            self.leaf_entries(ctx, gva)
        } else {
            [None; 2]
        };
        (self.probe(ctx, gva), entries)
    }
    /// The guest handled a page fault (installed a leaf).
    fn on_fault(&mut self, _ctx: Ctx<'_>, _fault: &Fault, _stats: &mut Stats) {}
    /// The guest unmapped pages (`writes` entries written); `flushed` when it reloaded CR3
    /// instead of issuing one INVLPG per page.
    fn on_unmap(
        &mut self,
        _ctx: Ctx<'_>,
        _pages: &[Unmapped],
        _writes: Writes,
        _flushed: bool,
        _stats: &mut Stats,
    ) {
    }
    /// The guest loaded CR3 (context switch, or a full TLB flush).
    fn on_cr3_load(&mut self, _ctx: Ctx<'_>, _stats: &mut Stats) {}
    /// Flush of the walker's own caches (untagged context switch).
    fn flush(&mut self) {}
}

/// Guest tables of at most this many pages (256 KiB of the simulator's radix entries, the size
/// of a host L2) get no far hint from [`Walker::prefetch`]'s default: they stay in the host's
/// caches. A speed choice only (hints change no simulated state).
pub const SMALL_TABLE_PAGES: usize = 64;

/// How far ahead of an access a prefetch hint is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefetch {
    /// Far ahead: the first table the walk reads at its leaf level.
    Far,
    /// Closer: what needs the far prefetch to have arrived (the EPT leaf of the data page).
    Mid,
    /// Nearest: what needs the translation (the data-cache sets the data access will look at).
    /// Handled by [`Mmu`] for every scheme; walkers ignore it.
    Near,
}

/// What [`Scheme::run_accesses`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Accesses run to completion from the start of the slice (counted and translated).
    pub done: usize,
    /// The op right after them is an access that was counted (`accesses`, `instructions`, its
    /// kind) but not translated: the guest must take a page fault first, and the caller retries
    /// it with [`Scheme::access`] after [`Scheme::on_fault`].
    pub fault: bool,
}

/// Pages hinted recently, per [`Prefetch`] stage: a page that was just hinted (a TLB-friendly
/// stream) needs no hint again; the check costs far less than the hint. The far and mid stages
/// remember about a thousand pages each ([`SeenPages`]: a page reused that soon is most likely
/// held by the TLBs, and hinting its walk again and again cost EPT a seventh of its time on a
/// trace with a hot working set); the near stage (the data line's sets, different for every
/// line of a page) the last four. Hints only: the state changes no simulated result.
#[derive(Clone, Debug)]
pub struct Hints {
    /// The far and mid stages' pages.
    seen: [SeenPages; 2],
    /// The near stage's last four pages, and the slot the next one takes.
    near: [u64; 4],
    next: usize,
}

impl Default for Hints {
    fn default() -> Hints {
        Hints {
            seen: Default::default(),
            near: [u64::MAX; 4],
            next: 0,
        }
    }
}

impl Hints {
    /// How far ahead each stage's hint is given (ops).
    const STAGES: [(usize, Prefetch); 3] =
        [(8, Prefetch::Far), (4, Prefetch::Mid), (2, Prefetch::Near)];

    /// Gives `hint` the accesses 8, 4 and 2 ops after `ops[i]` (those not hinted recently).
    #[inline(always)]
    pub fn give(&mut self, ops: &[Op], i: usize, hint: impl FnMut(Gva, Prefetch)) {
        self.give_stages(ops, i, [true; 3], hint);
    }

    /// [`Hints::give`] for the stages marked in `active` only (in the order far, mid, near): a
    /// stage whose hint does nothing costs nothing.
    #[inline(always)]
    pub fn give_stages(
        &mut self,
        ops: &[Op],
        i: usize,
        active: [bool; 3],
        mut hint: impl FnMut(Gva, Prefetch),
    ) {
        for (s, (ahead, stage)) in Hints::STAGES.into_iter().enumerate() {
            if !active[s] {
                continue;
            }
            if let Some(Op::Access { gva, .. }) = ops.get(i + ahead) {
                let page = gva.raw() >> 12;
                if s < 2 {
                    if !self.seen[s].check_insert(page) {
                        hint(*gva, stage);
                    }
                } else if !self.near.contains(&page) {
                    self.near[self.next] = page;
                    self.next = (self.next + 1) % 4;
                    hint(*gva, stage);
                }
            }
        }
    }
}

/// The perfect TLB's translation: its page cache, else the walker's functional probe (then
/// cached); `None` when the guest must take a page fault first.
#[inline(always)]
fn perfect_translate<W: Walker>(
    pages: &mut PageCache,
    walker: &W,
    ctx: Ctx<'_>,
    gva: Gva,
) -> Option<Hpa> {
    let pid = ctx.guest.current_pid();
    if let Some(h) = pages.get(gva, pid) {
        return Some(h);
    }
    let h = walker.probe(ctx, gva)?;
    pages.put(gva, pid, h);
    Some(h)
}

/// How many ops ahead the perfect TLB's page-cache slot is prefetched: far enough that the slot
/// arrives from beyond the host's L2 (the streamed trace evicts it there) before its access
/// (8 ops, about four data accesses of a trace, left most of the stall; 24 and 48 about halved
/// it).
const PAGES_AHEAD: usize = 48;

/// Counts an access in `stats` (what the engine counts before translating it).
#[inline(always)]
pub fn count_access(stats: &mut Stats, kind: AccessKind, instrs: u32) {
    stats.accesses += 1;
    stats.instructions += u64::from(instrs);
    match kind {
        AccessKind::Load => stats.loads += 1,
        AccessKind::Store => stats.stores += 1,
        AccessKind::Fetch => stats.fetches += 1,
    }
}

/// What [`count_access`] counts, kept in locals through a loop of accesses and added to the
/// statistics once at its end (nothing in such a loop reads them but the instruction position,
/// which [`Counts::add`] returns).
struct Counts {
    /// Loads, stores, fetches.
    kinds: [u64; 3],
    /// The statistics' `instructions` as of the last access counted.
    instructions: u64,
}

impl Counts {
    /// Nothing counted yet, from `stats`' instruction position on.
    #[inline(always)]
    fn of(stats: &Stats) -> Counts {
        Counts {
            kinds: [0; 3],
            instructions: stats.instructions,
        }
    }

    /// Counts an access of `kind` after `instrs` instructions; returns the instruction position.
    #[inline(always)]
    fn add(&mut self, kind: AccessKind, instrs: u32) -> u64 {
        self.kinds[match kind {
            AccessKind::Load => 0,
            AccessKind::Store => 1,
            AccessKind::Fetch => 2,
        }] += 1;
        self.instructions += u64::from(instrs);
        self.instructions
    }

    /// Adds what was counted to `stats` (as [`count_access`] of each access would have).
    #[inline(always)]
    fn store(&self, stats: &mut Stats) {
        let k = self.kinds;
        stats.accesses += k[0] + k[1] + k[2];
        stats.instructions = self.instructions;
        stats.loads += k[0];
        stats.stores += k[1];
        stats.fetches += k[2];
    }
}

/// A translation scheme: timed translation, side-effect-free probe, invalidation, statistics.
pub trait Scheme: Send {
    /// The scheme's name.
    fn name(&self) -> &'static str;
    /// Translates an access of the running process; `None` if the guest must fault first.
    fn translate(&mut self, ctx: Ctx<'_>, gva: Gva, kind: AccessKind) -> Option<Hpa>;
    /// Translates, then performs the program's data access through the data caches, and places
    /// the access on the memory timeline; `dep` when its address depends on the previous load's
    /// data ([`crate::timing`]). `None` (the guest must fault first) leaves no trace.
    fn access(&mut self, ctx: Ctx<'_>, gva: Gva, kind: AccessKind, dep: bool) -> Option<Hpa>;
    /// The translation, without changing any state.
    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa>;
    /// Speed hint for a coming access (no simulated state changes).
    fn prefetch(&self, ctx: Ctx<'_>, gva: Gva, stage: Prefetch);
    /// A guest page fault was handled.
    fn on_fault(&mut self, ctx: Ctx<'_>, fault: &Fault);
    /// Pages were unmapped by the running process.
    fn on_unmap(&mut self, ctx: Ctx<'_>, pages: &[Unmapped], writes: Writes);
    /// The guest switched to another process.
    fn on_switch(&mut self, ctx: Ctx<'_>);
    /// Every access in flight completes before the next one starts (a serializing event: the
    /// end of a populate, whose zeroing stores must not overlap the program's first accesses).
    fn drain(&mut self) {}
    /// Runs the accesses at the start of `ops`, at most `limit` of them, as the engine runs an
    /// access when it verifies nothing: [`count_access`], then [`Scheme::access`]; with prefetch
    /// hints for the accesses 8, 4 and 2 ops ahead in `ops` ([`Hints`]). Stops before the first op
    /// that is not an access, and at an access that needs a page fault (see [`Batch`]). One
    /// dynamic call per run of accesses instead of several per access. The default runs none.
    fn run_accesses(
        &mut self,
        _ctx: Ctx<'_>,
        _ops: &[Op],
        _limit: u64,
        _hints: &mut Hints,
    ) -> Batch {
        Batch {
            done: 0,
            fault: false,
        }
    }
    /// Counters so far.
    fn stats(&self) -> &Stats;
    /// Counters so far, mutable (for instruction counts kept by the engine).
    fn stats_mut(&mut self) -> &mut Stats;
}

/// A walker with TLBs and statistics.
pub struct Mmu<W: Walker> {
    name: &'static str,
    tlbs: Tlbs,
    walker: W,
    mem: Mem,
    stats: Stats,
    /// `Some` for a perfect TLB (every access translated at no cost, see [`perfect_tlb`]): its
    /// memory of the translations it found (a simulator speed-up only).
    pages: Option<PageCache>,
    timeline: Timeline,
    stlb_hit: u64,
    walk_start: u64,
    /// The data frames the near hints found lately (speed only, see [`FrameMemo`]).
    memo: FrameMemo,
}

impl<W: Walker> Mmu<W> {
    /// Wraps `walker`.
    pub fn new(name: &'static str, cfg: &MachineConfig, walker: W) -> Mmu<W> {
        Mmu {
            name,
            tlbs: Tlbs::new(cfg),
            walker,
            mem: Mem::new(cfg),
            stats: Stats::default(),
            pages: None,
            timeline: Timeline::new(&cfg.core),
            stlb_hit: cfg.latency.stlb_hit,
            walk_start: cfg.latency.walk_start,
            memo: FrameMemo::default(),
        }
    }

    /// Wraps `walker` behind a perfect TLB.
    pub fn perfect(name: &'static str, cfg: &MachineConfig, walker: W) -> Mmu<W> {
        Mmu {
            pages: Some(PageCache::new()),
            ..Mmu::new(name, cfg, walker)
        }
    }
}

impl<W: Walker> Mmu<W> {
    /// [`Scheme::run_accesses`] of the perfect TLB (`self.pages` is `Some`), at most `ops.len()`
    /// accesses: what [`Scheme::access`] does for it, without what it cannot need. No TLB and no
    /// walk, so the STLB and walk parts of every access's time are 0 (the timeline is given
    /// them as constants); and the page of the last fetch (for a fetch) or of the last data
    /// access (for a load or store), when it is the same page, needs no look-up: within one call
    /// the process does not change (a context switch is not an access) and no translation goes
    /// away (an unmap is not an access, and a fault ends the call), so a page translated earlier
    /// in the call still translates the same (whatever the access's kind). Same counters, same timeline,
    /// same faults as [`Scheme::access`] (proptested against the op-by-op path in
    /// `crates/sim/tests/sim/fast_path.rs`).
    fn run_perfect(&mut self, ctx: Ctx<'_>, ops: &[Op]) -> Batch {
        let pid = ctx.guest.current_pid();
        // The page of the last fetch and of the last data access (`u64::MAX`: none yet) and
        // their host pages: code and data are mostly on different pages, and a program's
        // fetches come again and again from one code page while its data moves.
        let mut last_vpn = [u64::MAX; 2];
        let mut last_frame = [0u64; 2];
        let mut counts = Counts::of(&self.stats);
        // Accesses placed on the timeline (the statistics' clock follows it).
        let mut timed = false;
        let mut batch = Batch {
            done: ops.len(),
            fault: false,
        };
        for (i, op) in ops.iter().enumerate() {
            let Op::Access {
                gva,
                kind,
                instrs,
                dep,
            } = *op
            else {
                batch = Batch {
                    done: i,
                    fault: false,
                };
                break;
            };
            let Some(pages) = self.pages.as_mut() else {
                unreachable!("run_perfect is the perfect TLB's")
            };
            if let Some(Op::Access { gva, .. }) = ops.get(i + PAGES_AHEAD) {
                // The perfect TLB's one memory access: its page-cache slot.
                pages.prefetch(*gva, pid);
            }
            // The access that faults is counted too, as before its retry.
            let instructions = counts.add(kind, instrs);
            let vpn = gva.raw() >> 12;
            let m = usize::from(kind != AccessKind::Fetch);
            if vpn != last_vpn[m] {
                let Some(hpa) = perfect_translate(pages, &self.walker, ctx, gva) else {
                    batch = Batch {
                        done: i,
                        fault: true,
                    };
                    break;
                };
                last_vpn[m] = vpn;
                last_frame[m] = hpa.raw() & !0xfff;
            }
            let hpa = Hpa(last_frame[m] | (gva.raw() & 0xfff));
            let data0 = self.stats.data_cycles;
            self.mem.data(hpa, &mut self.stats);
            self.timeline.access(AccessTime {
                stlb: 0,
                walk: 0,
                walked: false,
                data: self.stats.data_cycles - data0,
                instr: instructions,
                dep,
                load: kind != AccessKind::Store,
            });
            timed = true;
        }
        counts.store(&mut self.stats);
        let s = &mut self.stats;
        if timed {
            s.mem_cycles = self.timeline.end();
        }
        batch
    }

    /// [`Scheme::translate`], inlined into the loop of [`Scheme::run_accesses`]. `D`, `I`, `S`:
    /// the TLBs' way counts when known at compile time, else 0 ([`Tlbs::lookup_s`]).
    #[inline(always)]
    fn translate_one<const D: usize, const I: usize, const S: usize>(
        &mut self,
        ctx: Ctx<'_>,
        gva: Gva,
        kind: AccessKind,
    ) -> Option<Hpa> {
        if let Some(pages) = &mut self.pages {
            return perfect_translate(pages, &self.walker, ctx, gva);
        }
        let asid = ctx.guest.current_pid();
        if kind == AccessKind::Fetch
            && let Some(hpa) = self.tlbs.fetch_repeat(gva.raw(), asid, &mut self.stats)
        {
            return Some(Hpa(hpa));
        }
        if let Some(hit) = self
            .tlbs
            .lookup_s::<D, I, S>(gva.raw(), asid, kind, &mut self.stats)
        {
            return Some(Hpa(hit.frame + gva.page_offset(hit.size)));
        }
        let r = self
            .walker
            .walk(ctx, gva, asid, &mut self.mem, &mut self.stats)?;
        self.stats.walk_cycles += self.walk_start;
        self.tlbs
            .fill_s::<D, I, S>(gva.raw(), asid, kind, r.frame.raw(), r.size);
        Some(Hpa(r.frame.raw() + gva.page_offset(r.size)))
    }

    /// [`Scheme::access`], inlined into the loop of [`Scheme::run_accesses`] (`D`, `I`, `S`: as
    /// [`Mmu::translate_one`]'s).
    #[inline(always)]
    fn access_one<const D: usize, const I: usize, const S: usize>(
        &mut self,
        ctx: Ctx<'_>,
        gva: Gva,
        kind: AccessKind,
        dep: bool,
    ) -> Option<Hpa> {
        let instr = self.stats.instructions;
        let hpa = self.access_timed::<D, I, S>(ctx, gva, kind, dep, instr)?;
        self.stats.mem_cycles = self.timeline.end();
        Some(hpa)
    }

    /// [`Mmu::access_one`] but for the statistics' clock (`mem_cycles`), left to the caller:
    /// the loop of [`Scheme::run_accesses`] sets it once per run (it is the timeline's end after
    /// every access, and nothing in between reads it). A fetch from the ITLB's way used last
    /// (nearly every fetch of a trace) is placed on the timeline with its STLB and walk parts as
    /// the constants they are (no statistics read before and compared after).
    #[inline(always)]
    fn access_timed<const D: usize, const I: usize, const S: usize>(
        &mut self,
        ctx: Ctx<'_>,
        gva: Gva,
        kind: AccessKind,
        dep: bool,
        instr: u64,
    ) -> Option<Hpa> {
        if kind == AccessKind::Fetch
            && self.pages.is_none()
            && let Some(pa) =
                self.tlbs
                    .fetch_repeat(gva.raw(), ctx.guest.current_pid(), &mut self.stats)
        {
            // What `translate_one` gives (its first check), then the data access and the
            // timeline as below: no STLB hit, no walk.
            let hpa = Hpa(pa);
            let data0 = self.stats.data_cycles;
            self.mem.data(hpa, &mut self.stats);
            let s = &self.stats;
            self.timeline.access(AccessTime {
                stlb: 0,
                walk: 0,
                walked: false,
                data: s.data_cycles - data0,
                instr,
                dep,
                load: true,
            });
            return Some(hpa);
        }
        let (stlb0, walks0, walk0) = (
            self.stats.stlb_hits,
            self.stats.walks,
            self.stats.walk_cycles,
        );
        let hpa = self.translate_one::<D, I, S>(ctx, gva, kind)?;
        let data0 = self.stats.data_cycles;
        self.mem.data(hpa, &mut self.stats);
        let s = &mut self.stats;
        self.timeline.access(AccessTime {
            stlb: (s.stlb_hits - stlb0) * self.stlb_hit,
            walk: s.walk_cycles - walk0,
            walked: s.walks > walks0,
            data: s.data_cycles - data0,
            instr,
            dep,
            load: kind != AccessKind::Store,
        });
        Some(hpa)
    }

    /// The loop of [`Scheme::run_accesses`] (not a perfect TLB's) over the first `n` ops, the
    /// TLBs' way counts `D`, `I`, `S` as [`Mmu::translate_one`]'s.
    fn run_loop<const D: usize, const I: usize, const S: usize>(
        &mut self,
        ctx: Ctx<'_>,
        ops: &[Op],
        n: usize,
        hints: &mut Hints,
    ) -> Batch {
        // The perfect TLB reads no table: no hints. Nor stages that do nothing: the near hint
        // without data caches to prefetch, the mid hint of a walker that ignores it, the far
        // hint of a walker that has nothing to prefetch now (a small guest table).
        let stages = [
            self.walker.far_hints(ctx),
            self.walker.mid_hints(),
            self.mem.prefetches(),
        ];
        let hinted = self.pages.is_none() && stages.contains(&true);
        let mut counts = Counts::of(&self.stats);
        let mut batch = Batch {
            done: n,
            fault: false,
        };
        for (i, op) in ops[..n].iter().enumerate() {
            let Op::Access {
                gva,
                kind,
                instrs,
                dep,
            } = *op
            else {
                batch = Batch {
                    done: i,
                    fault: false,
                };
                break;
            };
            if hinted {
                let me = &*self;
                hints.give_stages(ops, i, stages, |g, stage| me.prefetch(ctx, g, stage));
            }
            // The access that faults is counted too, as before its retry.
            let instructions = counts.add(kind, instrs);
            if self
                .access_timed::<D, I, S>(ctx, gva, kind, dep, instructions)
                .is_none()
            {
                batch = Batch {
                    done: i,
                    fault: true,
                };
                break;
            }
        }
        counts.store(&mut self.stats);
        let s = &mut self.stats;
        // The accesses before `batch.done` were placed on the timeline.
        if batch.done > 0 {
            s.mem_cycles = self.timeline.end();
        }
        batch
    }
}

impl<W: Walker> Scheme for Mmu<W> {
    fn name(&self) -> &'static str {
        self.name
    }

    #[inline]
    fn translate(&mut self, ctx: Ctx<'_>, gva: Gva, kind: AccessKind) -> Option<Hpa> {
        self.translate_one::<0, 0, 0>(ctx, gva, kind)
    }

    #[inline]
    fn access(&mut self, ctx: Ctx<'_>, gva: Gva, kind: AccessKind, dep: bool) -> Option<Hpa> {
        self.access_one::<0, 0, 0>(ctx, gva, kind, dep)
    }

    fn run_accesses(&mut self, ctx: Ctx<'_>, ops: &[Op], limit: u64, hints: &mut Hints) -> Batch {
        let n = usize::try_from(limit).map_or(ops.len(), |l| l.min(ops.len()));
        if self.pages.is_some() {
            return self.run_perfect(ctx, &ops[..n]);
        }
        // The TLBs' shape, once per run of accesses: the presets' (Skylake-SP's, Ice Lake-SP's)
        // get a loop with their way counts known at compile time; any other the generic one.
        match self.tlbs.shape() {
            [4, 8, 12] => self.run_loop::<4, 8, 12>(ctx, ops, n, hints),
            [4, 8, 16] => self.run_loop::<4, 8, 16>(ctx, ops, n, hints),
            _ => self.run_loop::<0, 0, 0>(ctx, ops, n, hints),
        }
    }

    fn probe(&self, ctx: Ctx<'_>, gva: Gva) -> Option<Hpa> {
        self.walker.probe(ctx, gva)
    }

    #[inline]
    fn prefetch(&self, ctx: Ctx<'_>, gva: Gva, stage: Prefetch) {
        // The perfect TLB reads no table.
        if self.pages.is_none() {
            // The near hint of an access the second-level TLB holds now (a side-effect-free
            // probe): its data address is the TLB's, with no table walk of the simulator's own
            // to find it and no leaf entries (it will not walk). The far hint loads the TLB's
            // set for that probe (a probe of a set not in the host's caches would stall). The
            // far and mid hints are given as before: so far ahead a probe would stall and cost
            // as much as the walks it saves. Only while the second level hits more often than it
            // misses: where nearly every access that leaves the L1 TLB walks (and hints are
            // given for those), a probe would nearly always miss and only cost.
            //
            // Before either, the near hint looks for the page in the frames its hints found
            // lately ([`FrameMemo`]): a page of a hot working set needs no probe or walk to have
            // its data-cache sets prefetched.
            let asid = ctx.guest.current_pid();
            let probe = self.stats.stlb_hits > self.stats.stlb_misses;
            let page = gva.raw() >> 12;
            let offset = gva.page_offset(PageSize::Size4K);
            match stage {
                Prefetch::Far if probe => self.tlbs.prefetch(gva.raw(), asid),
                Prefetch::Near if self.mem.prefetches() => {
                    if let Some(frame) = self.memo.get(page) {
                        self.mem.prefetch(Hpa(frame + offset));
                        return;
                    }
                    if probe && let Some((frame, size)) = self.tlbs.probe(gva.raw(), asid) {
                        let hpa = frame + gva.page_offset(size);
                        self.memo.put(page, hpa - offset);
                        self.mem.prefetch(Hpa(hpa));
                        return;
                    }
                }
                _ => {}
            }
            if stage == Prefetch::Near {
                // Nothing to prefetch without an L2 or LLC (a translation-only model).
                if !self.mem.prefetches() {
                    return;
                }
                // Finding the leaf entries costs a table walk of the simulator's own: worth it
                // only when walks read entries far out in the simulated caches (one walk in four
                // so far reads one from the LLC or DRAM), whose sets miss the host's caches too;
                // the L1D's and L2's few sets stay in the host's caches.
                let far = self.stats.walk_ref_levels[2] + self.stats.walk_ref_levels[3];
                let (data, entries) = self.walker.near(ctx, gva, far * 4 > self.stats.walks);
                if let Some(hpa) = data {
                    self.memo.put(page, hpa.raw() - offset);
                }
                for hpa in std::iter::once(data).chain(entries).flatten() {
                    self.mem.prefetch(hpa);
                }
            } else {
                self.walker.prefetch(ctx, gva, stage);
            }
        }
    }

    fn on_fault(&mut self, ctx: Ctx<'_>, fault: &Fault) {
        self.stats.page_faults += 1;
        self.stats.zeroed_4k += fault.leaf.bytes() / PageSize::Size4K.bytes();
        self.timeline.drain();
        self.walker.on_fault(ctx, fault, &mut self.stats);
    }

    fn on_unmap(&mut self, ctx: Ctx<'_>, pages: &[Unmapped], writes: Writes) {
        let asid = ctx.guest.current_pid();
        self.timeline.drain();
        if let Some(p) = &mut self.pages {
            p.invalidate();
        }
        let flushed = pages.len() > FLUSH_CEILING;
        if flushed {
            self.tlbs.flush();
            self.walker.flush();
            self.stats.tlb_flushes += 1;
        } else {
            for p in pages {
                self.tlbs
                    .invalidate_range(p.page.raw(), p.leaf.bytes(), asid);
            }
        }
        self.walker
            .on_unmap(ctx, pages, writes, flushed, &mut self.stats);
    }

    fn on_switch(&mut self, ctx: Ctx<'_>) {
        self.stats.context_switches += 1;
        self.timeline.drain();
        if !self.tlbs.tagged {
            self.tlbs.flush();
            self.walker.flush();
            self.stats.tlb_flushes += 1;
        }
        self.walker.on_cr3_load(ctx, &mut self.stats);
    }

    fn drain(&mut self) {
        self.timeline.drain();
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }
}

/// The schemes this crate knows.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeKind {
    /// No virtualization: the guest table walked directly (the baseline).
    Native,
    /// Hardware nested paging (Intel EPT / AMD NPT).
    Ept,
    /// Shadow paging.
    Shadow,
    /// Compromis: guest paging, hypervisor segment.
    Compromis,
}

impl SchemeKind {
    /// Every scheme, in display order.
    pub const ALL: [SchemeKind; 4] = [
        SchemeKind::Native,
        SchemeKind::Ept,
        SchemeKind::Shadow,
        SchemeKind::Compromis,
    ];

    /// The scheme's name.
    pub fn name(self) -> &'static str {
        match self {
            SchemeKind::Native => "native",
            SchemeKind::Ept => "ept",
            SchemeKind::Shadow => "shadow",
            SchemeKind::Compromis => "compromis",
        }
    }
}

impl std::fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SchemeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SchemeKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = SchemeKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown scheme '{s}': valid values are {}",
                    valid.join(", ")
                )
            })
    }
}
