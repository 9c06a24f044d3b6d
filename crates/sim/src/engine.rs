//! The simulation engine: one access stream, every scheme, and the perfect-TLB baseline.
//!
//! The stream is read in chunks; each chunk is run through every scheme in parallel (rayon). Each
//! scheme owns a replica of the guest OS (page tables change as the guest runs, and every replica
//! makes the same deterministic choices) and shares the immutable hypervisor backing, so every
//! scheme sees the same guest and host mappings. Memory use is bounded by the chunk size and the
//! simulated machine's state, not by the stream length.
//!
//! With [`SimConfig::baseline`] the same stream also runs behind a perfect TLB (every access
//! translated at no cost, the data caches as usual): the reference of the cycle model's
//! overheads, returned in [`SimResults::baseline`] beside the schemes.

use compromis_mmu::scheme::{Ctx, Hints, count_access};
use compromis_mmu::{ConfigError, MachineConfig, Scheme, SchemeKind, Stats, perfect_tlb};
use compromis_types::{AccessKind, Address, Gva, Hpa, Op};
use compromis_vmem::{Backing, GuestConfig, GuestCounters, GuestError, GuestOs, Unmapped};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use thiserror::Error;

/// Ops per chunk handed to the schemes at once.
pub const CHUNK: usize = 1 << 16;

/// Why a simulation failed.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The guest OS could not do what the stream asked.
    #[error("guest: {0}")]
    Guest(#[from] GuestError),
    /// An op of the stream asked the guest what it cannot do (an address beyond the address
    /// space, more memory than the VM has, a bad region): an error about the stream's content,
    /// located by its op number (the caller names the file and record, see
    /// `compromis_trace::locate_op`). Such ops are skipped instead with
    /// [`simulate_skipping`].
    #[error("op #{index} of the stream: {source}")]
    BadOp {
        /// 0-based index of the op in the stream.
        index: u64,
        /// What the guest said.
        source: GuestError,
    },
    /// The op source failed (a trace reader's error, with its file and line).
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// The machine configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Verification found a scheme disagreeing with the reference translation.
    #[error("{scheme}: access #{index} at {gva} translated to {got:?}, reference says {want:?}")]
    Mismatch {
        /// The scheme.
        scheme: &'static str,
        /// Index of the access in the stream.
        index: u64,
        /// The address.
        gva: Gva,
        /// What the scheme answered.
        got: Option<Hpa>,
        /// The reference composition.
        want: Option<Hpa>,
    },
    /// A simulation thread could not be started.
    #[error("cannot start a simulation thread: {0}")]
    Thread(std::io::Error),
    /// No scheme to simulate.
    #[error("no scheme selected")]
    NoScheme,
    /// The caller needs the perfect-TLB baseline but did not ask the engine to run it.
    #[error("the perfect-TLB baseline was not run (SimConfig::baseline is false)")]
    NoBaseline,
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The machine model.
    pub machine: MachineConfig,
    /// The guest OS.
    pub guest: GuestConfig,
    /// Schemes to run, in output order.
    pub schemes: Vec<SchemeKind>,
    /// Accesses excluded from the measured statistics (page faults of populated regions before
    /// the first access are always in the warm-up phase).
    pub warmup: u64,
    /// Populate regions when they are mapped (as `mmap(MAP_POPULATE)`, or a benchmark that
    /// initializes its memory first): every page is faulted in at `Op::Map` and then zeroed by
    /// the guest (one store per page through the scheme, so that whatever the first touch of a
    /// page fills, such as an out-of-sync shadow entry, is filled there and not in the run).
    /// These stores are not counted as accesses or instructions.
    pub populate: bool,
    /// Check every translation against the reference composition (slower; for tests).
    pub verify: bool,
    /// Also run the stream behind a perfect TLB (the baseline of overheads); its result is
    /// [`SimResults::baseline`].
    pub baseline: bool,
}

/// The perfect-TLB baseline: the stream at no translation cost (named `ideal` in output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Baseline {
    /// Every access hits a TLB of unbounded size at no cost; data accesses go through the data
    /// caches as in every scheme.
    #[serde(rename = "ideal")]
    PerfectTlb,
}

impl Baseline {
    /// The baseline's name in output.
    pub fn name(self) -> &'static str {
        "ideal"
    }
}

/// What one run simulated: a translation scheme or the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// A translation scheme.
    Scheme(SchemeKind),
    /// The perfect-TLB baseline.
    Baseline,
}

impl RunKind {
    /// The run's name in output and errors.
    pub fn name(self) -> &'static str {
        match self {
            RunKind::Scheme(k) => k.name(),
            RunKind::Baseline => Baseline::PerfectTlb.name(),
        }
    }
}

/// The outcome of one run, labelled `K` (a [`SchemeKind`], or [`Baseline`]).
#[derive(Clone, Debug, Serialize)]
pub struct RunResult<K> {
    /// What was simulated.
    pub scheme: K,
    /// Counters of the warm-up phase.
    pub warmup: Stats,
    /// Counters of the measured phase.
    pub measured: Stats,
    /// Guest OS counters at the end (whole run).
    pub guest: GuestCounters,
}

/// The outcome of one scheme.
pub type SchemeResult = RunResult<SchemeKind>;

/// The outcome of the perfect-TLB baseline.
pub type BaselineResult = RunResult<Baseline>;

/// Everything a simulation produced.
#[derive(Clone, Debug)]
pub struct SimResults {
    /// One per scheme, in the order of [`SimConfig::schemes`].
    pub schemes: Vec<SchemeResult>,
    /// The perfect-TLB run, when [`SimConfig::baseline`] asked for it.
    pub baseline: Option<BaselineResult>,
    /// Ops the guest refused and that were skipped ([`simulate_skipping`]; 0 otherwise).
    pub skipped: u64,
}

/// One scheme running over the stream.
pub struct SchemeRun {
    kind: RunKind,
    scheme: Box<dyn Scheme>,
    guest: GuestOs,
    backing: Arc<Backing>,
    unmapped: Vec<Unmapped>,
    accesses: u64,
    warmup: u64,
    warm: Option<Stats>,
    verify: bool,
    populate: bool,
    /// Ops run before the current chunk.
    done: u64,
    /// Skip (and count) ops the guest refuses instead of failing ([`simulate_skipping`]).
    skip_bad: bool,
    skipped: u64,
}

/// Whether a guest error is about the op stream's content (not the configuration).
fn is_content_error(e: &GuestError) -> bool {
    matches!(
        e,
        GuestError::OutOfMemory { .. }
            | GuestError::BadRegion { .. }
            | GuestError::NonCanonical { .. }
    )
}

impl SchemeRun {
    /// A run of `kind` over a fresh guest.
    pub fn new(
        kind: SchemeKind,
        cfg: &SimConfig,
        backing: &Arc<Backing>,
    ) -> Result<SchemeRun, EngineError> {
        SchemeRun::of(RunKind::Scheme(kind), cfg, backing)
    }

    /// A run of the perfect-TLB baseline over a fresh guest.
    pub fn baseline(cfg: &SimConfig, backing: &Arc<Backing>) -> Result<SchemeRun, EngineError> {
        SchemeRun::of(RunKind::Baseline, cfg, backing)
    }

    fn of(
        kind: RunKind,
        cfg: &SimConfig,
        backing: &Arc<Backing>,
    ) -> Result<SchemeRun, EngineError> {
        let guest = GuestOs::new(cfg.guest.clone(), backing.layout().clone())?;
        let scheme = match kind {
            RunKind::Scheme(k) => k.build(&cfg.machine),
            RunKind::Baseline => perfect_tlb(&cfg.machine),
        };
        Ok(SchemeRun {
            kind,
            scheme,
            guest,
            backing: Arc::clone(backing),
            unmapped: Vec::new(),
            accesses: 0,
            warmup: cfg.warmup,
            warm: None,
            verify: cfg.verify,
            populate: cfg.populate,
            done: 0,
            skip_bad: false,
            skipped: 0,
        })
    }

    /// The reference translation of `gva` in the running process: guest table, then the
    /// hypervisor's mapping (native: the guest-physical address itself).
    pub fn reference(&self, gva: Gva) -> Option<Hpa> {
        let gpa = self.guest.translate(gva)?;
        match self.kind {
            RunKind::Scheme(SchemeKind::Native) => Some(Hpa(gpa.raw())),
            _ => self.backing.translate(gpa),
        }
    }

    /// The guest OS of this run.
    pub fn guest(&self) -> &GuestOs {
        &self.guest
    }

    /// The scheme.
    pub fn scheme(&self) -> &dyn Scheme {
        self.scheme.as_ref()
    }

    /// Runs one op; for an access, returns its translation.
    #[inline]
    pub fn step(&mut self, op: &Op) -> Result<Option<Hpa>, EngineError> {
        match *op {
            Op::Access {
                gva,
                kind,
                instrs,
                dep,
            } => {
                if self.accesses == self.warmup && self.warm.is_none() {
                    self.warm = Some(self.scheme.stats().clone());
                }
                self.accesses += 1;
                count_access(self.scheme.stats_mut(), kind, instrs);
                let ctx = Ctx {
                    guest: &self.guest,
                    backing: &self.backing,
                };
                let hpa = match self.scheme.access(ctx, gva, kind, dep) {
                    Some(h) => h,
                    None => self.fault_and_retry(gva, kind, dep)?,
                };
                if self.verify {
                    let want = self.reference(gva);
                    let probe = self.scheme.probe(
                        Ctx {
                            guest: &self.guest,
                            backing: &self.backing,
                        },
                        gva,
                    );
                    if want != Some(hpa) || probe != want {
                        return Err(EngineError::Mismatch {
                            scheme: self.kind.name(),
                            index: self.accesses - 1,
                            gva,
                            got: if want != Some(hpa) { Some(hpa) } else { probe },
                            want,
                        });
                    }
                }
                Ok(Some(hpa))
            }
            Op::Map { start, len } => {
                self.guest.map(start, len)?;
                if self.populate {
                    let end = start.raw() + len;
                    let mut va = start.raw();
                    while va < end {
                        let leaf = match self.guest.table().lookup(va) {
                            Some(l) => l,
                            None => {
                                let fault = self.guest.fault(Gva(va))?;
                                let ctx = Ctx {
                                    guest: &self.guest,
                                    backing: &self.backing,
                                };
                                self.scheme.on_fault(ctx, &fault);
                                // The guest zeroes the page right after its fault: one store to
                                // the page, translated like any access (a TLB fill, and under
                                // out-of-sync shadow paging the hidden fault that fills the
                                // shadow entry). Every scheme and the baseline do it alike.
                                self.scheme
                                    .access(ctx, fault.page, AccessKind::Store, false)
                                    .ok_or_else(|| {
                                        GuestError::Config(format!(
                                            "{}: no translation for {} right after its page fault",
                                            self.kind.name(),
                                            fault.page
                                        ))
                                    })?;
                                fault.leaf
                            }
                        };
                        va = (va & !(leaf.bytes() - 1)) + leaf.bytes();
                    }
                    // The populate returns to the program only once its stores are done.
                    self.scheme.drain();
                }
                Ok(None)
            }
            Op::Unmap { start, len } => {
                self.unmapped.clear();
                let writes = self.guest.unmap(start, len, &mut self.unmapped)?;
                let ctx = Ctx {
                    guest: &self.guest,
                    backing: &self.backing,
                };
                self.scheme.on_unmap(ctx, &self.unmapped, writes);
                Ok(None)
            }
            Op::Switch { pid } => {
                if pid != self.guest.current_pid() {
                    self.guest.switch(pid)?;
                    let ctx = Ctx {
                        guest: &self.guest,
                        backing: &self.backing,
                    };
                    self.scheme.on_switch(ctx);
                }
                Ok(None)
            }
        }
    }

    /// The access at `gva` found no translation: the guest takes its page fault, the scheme is
    /// told, and the access is retried (it must translate now).
    fn fault_and_retry(
        &mut self,
        gva: Gva,
        kind: AccessKind,
        dep: bool,
    ) -> Result<Hpa, EngineError> {
        let fault = self.guest.fault(gva)?;
        let ctx = Ctx {
            guest: &self.guest,
            backing: &self.backing,
        };
        self.scheme.on_fault(ctx, &fault);
        Ok(self.scheme.access(ctx, gva, kind, dep).ok_or_else(|| {
            // Built only when needed: a `format!` per page fault was 2% of a run's work.
            GuestError::Config(format!(
                "{}: no translation for {gva} right after its page fault",
                self.kind.name()
            ))
        })?)
    }

    /// Runs a chunk of ops.
    ///
    /// Simulating a random access reads random entries of the simulated machine's tables and
    /// caches, likely misses in the host's own caches; so each scheme is told, a few ops ahead,
    /// what accesses are coming (see [`compromis_mmu::scheme::Prefetch`]) and starts loading that
    /// memory. Hints only: they change no simulated state, and a hint for an op after a context
    /// switch or a fault is merely useless.
    ///
    /// Without verification, runs of accesses go to the scheme in one call
    /// ([`Scheme::run_accesses`]: one dynamic call per run, not several per access); the engine
    /// steps the other ops, the page faults and the access at the end of the warm-up itself,
    /// exactly as [`SchemeRun::step`] would.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), EngineError> {
        let mut hints = Hints::default();
        // The perfect TLB ignores hints (it walks nothing): its run skips them.
        let hinted = self.kind != RunKind::Baseline;
        let mut i = 0;
        while i < ops.len() {
            if !self.verify {
                // The access at which the warm-up ends is stepped here (it takes the snapshot).
                let limit = match self.warm {
                    None => self.warmup.saturating_sub(self.accesses),
                    Some(_) => u64::MAX,
                };
                let ctx = Ctx {
                    guest: &self.guest,
                    backing: &self.backing,
                };
                let b = self.scheme.run_accesses(ctx, &ops[i..], limit, &mut hints);
                self.accesses += b.done as u64;
                i += b.done;
                if b.fault {
                    let Op::Access { gva, kind, dep, .. } = ops[i] else {
                        unreachable!("run_accesses stops at a fault of an access only")
                    };
                    self.accesses += 1;
                    let r = self.fault_and_retry(gva, kind, dep).map(|_| ());
                    self.or_skip(r, i)?;
                    i += 1;
                    continue;
                }
                if i == ops.len() {
                    break;
                }
            }
            if hinted {
                let ctx = Ctx {
                    guest: &self.guest,
                    backing: &self.backing,
                };
                let scheme = &self.scheme;
                hints.give(ops, i, |g, stage| scheme.prefetch(ctx, g, stage));
            }
            let r = self.step(&ops[i]).map(|_| ());
            self.or_skip(r, i)?;
            i += 1;
        }
        self.done += ops.len() as u64;
        Ok(())
    }

    /// The outcome `r` of the `i`-th op of the current chunk; an op the guest refuses is
    /// [`EngineError::BadOp`] (located by its index in the stream), or skipped and counted with
    /// `skip_bad`.
    #[inline]
    fn or_skip(&mut self, r: Result<(), EngineError>, i: usize) -> Result<(), EngineError> {
        match r {
            Ok(()) => Ok(()),
            Err(EngineError::Guest(g)) if is_content_error(&g) => {
                if !self.skip_bad {
                    return Err(EngineError::BadOp {
                        index: self.done + i as u64,
                        source: g,
                    });
                }
                self.skipped += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Ops skipped because the guest refused them ([`simulate_skipping`]).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// What this run simulates.
    pub fn kind(&self) -> RunKind {
        self.kind
    }

    /// The final result, labelled `label`.
    pub fn finish<K>(self, label: K) -> RunResult<K> {
        let total = self.scheme.stats().clone();
        let warm = self.warm.unwrap_or_else(|| total.clone());
        RunResult {
            scheme: label,
            measured: total.since(&warm),
            warmup: warm,
            guest: self.guest.counters(),
        }
    }
}

/// A stream of ops read in chunks: what the engine simulates.
pub trait OpChunks {
    /// Appends the next ops to `buf`, up to `max` of them (fewer only at the end of the
    /// stream); an error of the source ends the stream.
    fn read_ops(&mut self, buf: &mut Vec<Op>, max: usize) -> Result<(), EngineError>;
}

/// Any iterator of ops as [`OpChunks`].
pub struct IterChunks<I>(pub I);

impl<I, E> OpChunks for IterChunks<I>
where
    I: Iterator<Item = Result<Op, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    fn read_ops(&mut self, buf: &mut Vec<Op>, max: usize) -> Result<(), EngineError> {
        for item in self.0.by_ref().take(max) {
            buf.push(item.map_err(|e| EngineError::Source(Box::new(e)))?);
        }
        Ok(())
    }
}

/// Up to `max` ops of `source`, into `buf` (cleared first).
fn read_chunk(
    source: &mut dyn OpChunks,
    mut buf: Vec<Op>,
    max: usize,
) -> Result<Vec<Op>, EngineError> {
    buf.clear();
    source.read_ops(&mut buf, max)?;
    Ok(buf)
}

/// The first error of a set of runs that failed in the same chunk, as every path reports it:
/// every run fails at the same op (same guest), so the first op in stream order is reported;
/// an error without an op index (a verification mismatch) first.
fn first_error(errors: impl IntoIterator<Item = EngineError>) -> Option<EngineError> {
    errors.into_iter().min_by_key(|e| match e {
        EngineError::BadOp { index, .. } => *index,
        _ => 0,
    })
}

/// Runs `source` through `runs` chunk by chunk: every run simulates a chunk (in parallel, on
/// the current rayon pool), then the next chunk is read.
fn simulate_in_pool(
    runs: &mut [SchemeRun],
    source: &mut dyn OpChunks,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), EngineError> {
    let mut chunk = read_chunk(source, Vec::with_capacity(CHUNK), CHUNK)?;
    let mut done = 0u64;
    while !chunk.is_empty() {
        let errors: Vec<EngineError> = runs
            .par_iter_mut()
            .filter_map(|r| r.run(&chunk).err())
            .collect();
        if let Some(e) = first_error(errors) {
            return Err(e);
        }
        done += chunk.len() as u64;
        progress(done);
        chunk = read_chunk(source, chunk, CHUNK)?;
    }
    Ok(())
}

/// Ops per chunk of the pipeline: small enough that the chunks in flight stay in the host's
/// caches between the reader writing them and the runs reading them.
const PIPE_CHUNK: usize = CHUNK / 8;

/// Chunks read ahead of the slowest run (16 x 8 Ki ops of 24 bytes: 3 MiB in flight, in the
/// host's L3). A reader blocked on a full lane is woken once per `AHEAD - RESUME_AT` chunks its
/// run takes: at 8 chunks (4 per wake-up) `sim-native` made ~240 wake-up calls per 8 M ops.
const AHEAD: usize = 16;

/// A reader blocked on a full [`Lane`] is woken only once its run has this many chunks left:
/// it then reads several chunks in one go instead of one per chunk its run takes (a wake-up,
/// two context switches, per chunk on a machine with fewer cores than threads).
const RESUME_AT: usize = AHEAD / 2;

/// The reader runs the baseline on a chunk it has read only while every run's lane holds at
/// least this many chunks (or the baseline is [`AHEAD`] chunks behind): a run whose lane runs
/// low (at the start, when the first chunks' page faults make the baseline slow, or after the
/// reader's thread lost its core for a while) is given chunks first.
const LOW_WATER: usize = AHEAD / 2;

/// A chunk of the pipeline: its index in the stream and its ops (shared, read-only).
type Piece = (u64, Arc<Vec<Op>>);

/// The chunks on their way from the reader to one run's thread: at most [`AHEAD`] of them.
#[derive(Default)]
struct Lane {
    state: std::sync::Mutex<LaneState>,
    /// Signalled when a chunk comes in or the reader is done.
    filled: std::sync::Condvar,
    /// Signalled when the run has taken the lane down to [`RESUME_AT`] chunks, or left.
    drained: std::sync::Condvar,
}

#[derive(Default)]
struct LaneState {
    queue: std::collections::VecDeque<Piece>,
    /// The reader sends no more.
    closed: bool,
    /// The run takes no more (it stopped or failed): sending drops the chunk.
    left: bool,
    reader_waits: bool,
    run_waits: bool,
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        // A panic while the lock is held leaves the state consistent (every update is one
        // field at a time), and is re-raised when the thread is joined.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `piece`, waiting while the lane is full; dropped if the run has left.
    fn send(&self, piece: Piece) {
        let mut st = self.lock();
        while st.queue.len() >= AHEAD && !st.left {
            st.reader_waits = true;
            st = self
                .drained
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if st.left {
            return;
        }
        st.queue.push_back(piece);
        let wake = std::mem::take(&mut st.run_waits);
        // Woken after the lock is released: a run woken while it is held would at once sleep
        // again on the lock (two more system calls and a switch per wake-up).
        drop(st);
        if wake {
            self.filled.notify_one();
        }
    }

    /// The next chunk, waiting for it; `None` once the reader is done and the lane is empty.
    fn recv(&self) -> Option<Piece> {
        let mut st = self.lock();
        loop {
            if let Some(p) = st.queue.pop_front() {
                let wake = st.reader_waits && st.queue.len() <= RESUME_AT;
                if wake {
                    st.reader_waits = false;
                }
                // As in `send`: the reader is woken once the lock is free.
                drop(st);
                if wake {
                    self.drained.notify_one();
                }
                return Some(p);
            }
            if st.closed {
                return None;
            }
            st.run_waits = true;
            st = self
                .filled
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Whether the run has at least `n` chunks queued, or takes no more.
    fn holds(&self, n: usize) -> bool {
        let st = self.lock();
        st.left || st.queue.len() >= n
    }

    /// The reader is done.
    fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        if st.run_waits {
            st.run_waits = false;
            self.filled.notify_one();
        }
    }
}

/// Marks its lane left when the run's thread ends, however it ends (a reader waiting on the
/// lane must not wait for a run that is gone).
struct Leaving<'a>(&'a Lane);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.left = true;
        st.queue.clear();
        if st.reader_waits {
            st.reader_waits = false;
            self.0.drained.notify_one();
        }
    }
}

/// Closes every lane when the reader is done, however it ends: a panic on the reader's thread
/// (in the reader or the baseline run there) must not leave the runs' threads waiting for
/// chunks while the thread scope waits for them (a hang instead of the panic).
struct Closing<'a>(&'a [Lane]);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        for lane in self.0 {
            lane.close();
        }
    }
}

/// Runs `source` through `runs` as a pipeline: each scheme's run simulates on its own thread,
/// taking the chunks this thread reads (shared, read-only) as they come, up to [`AHEAD`] chunks
/// behind the reader; no run waits for another. The perfect-TLB baseline, when there is one
/// beside the schemes, runs on this thread right after each chunk is read and handed out: it is
/// the cheapest run, and there it takes the chunk while the chunk is in this core's caches, with
/// no thread of its own to wake and to share a core with the reader; except while a run's lane
/// holds fewer than [`LOW_WATER`] chunks, when the reader reads on first (the baseline then
/// catches up, at most [`AHEAD`] chunks behind). The result is the same as
/// [`simulate_in_pool`]'s: each run sees the same ops in the same order, and errors are the same:
/// the pipeline's chunks are an eighth of [`CHUNK`], and errors are placed in the [`CHUNK`] they
/// fall in (runs stop at the end of the first such chunk in which any of them failed, every run
/// runs up to there, and the reported error is the one chunk-by-chunk simulation reports; a read
/// error counts only if no run failed in an earlier such chunk). `progress` is called as the
/// slowest run completes chunks.
fn simulate_pipelined(
    runs: &mut [SchemeRun],
    source: &mut dyn OpChunks,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), EngineError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // The first chunk of `CHUNK` ops (0-based) in which a run failed; u64::MAX while none did.
    let big = |index: u64| index / (CHUNK / PIPE_CHUNK) as u64;
    let failed = AtomicU64::new(u64::MAX);
    // Ops each run has completed.
    let completed: Vec<AtomicU64> = runs.iter().map(|_| AtomicU64::new(0)).collect();
    let slowest = || completed.iter().map(|c| c.load(Ordering::Acquire)).min();
    let mut reported = 0u64;
    let mut report = |done: u64| {
        if done > reported {
            reported = done;
            progress(done);
        }
    };
    // The run on this thread: the baseline, if there is a scheme's run beside it.
    let local = runs
        .iter()
        .position(|r| r.kind() == RunKind::Baseline)
        .filter(|_| runs.len() > 1);
    let lanes: Vec<Lane> = runs.iter().map(|_| Lane::default()).collect();
    std::thread::scope(|s| {
        // Before any run's thread starts: a failed spawn returns early, and the threads started
        // must then see their lanes closed.
        let closing = Closing(&lanes);
        let mut workers = Vec::with_capacity(runs.len());
        let mut here = None;
        for (i, ((run, done), lane)) in runs.iter_mut().zip(&completed).zip(&lanes).enumerate() {
            if Some(i) == local {
                lane.lock().left = true;
                here = Some((run, done));
                continue;
            }
            let failed = &failed;
            // Named after the run (profiles tell the runs apart).
            let thread = std::thread::Builder::new().name(format!("sim-{}", run.kind().name()));
            workers.push(
                thread
                    .spawn_scoped(s, move || -> Option<(u64, EngineError)> {
                        let _leaving = Leaving(lane);
                        while let Some((index, chunk)) = lane.recv() {
                            if big(index) > failed.load(Ordering::Acquire) {
                                break;
                            }
                            if let Err(e) = run.run(&chunk) {
                                failed.fetch_min(big(index), Ordering::AcqRel);
                                return Some((big(index), e));
                            }
                            done.fetch_add(chunk.len() as u64, Ordering::AcqRel);
                        }
                        None
                    })
                    .map_err(EngineError::Thread)?,
            );
        }
        // Chunks sent and maybe still read by a run: a chunk no run holds any more is reused.
        let mut in_flight: std::collections::VecDeque<Arc<Vec<Op>>> =
            std::collections::VecDeque::new();
        let mut read_error = None;
        let mut local_error = None;
        let has_local = here.is_some();
        // Chunks read and handed out that this thread's run has not taken yet, in order.
        let mut pending: std::collections::VecDeque<Piece> = std::collections::VecDeque::new();
        // This thread's run takes the next pending chunk, as a run's thread would take it.
        let mut run_here = |pending: &mut std::collections::VecDeque<Piece>| {
            let Some((index, chunk)) = pending.pop_front() else {
                return;
            };
            if local_error.is_none()
                && big(index) <= failed.load(Ordering::Acquire)
                && let Some((run, done)) = &mut here
            {
                if let Err(e) = run.run(&chunk) {
                    failed.fetch_min(big(index), Ordering::AcqRel);
                    local_error = Some((big(index), e));
                } else {
                    done.fetch_add(chunk.len() as u64, Ordering::AcqRel);
                }
            }
        };
        let mut index = 0u64;
        while big(index) <= failed.load(Ordering::Acquire) {
            let spare = match in_flight.front_mut().map(Arc::get_mut) {
                Some(Some(_)) => in_flight
                    .pop_front()
                    .and_then(|a| Arc::try_unwrap(a).ok())
                    .unwrap_or_default(),
                _ => Vec::with_capacity(PIPE_CHUNK),
            };
            let chunk = match read_chunk(source, spare, PIPE_CHUNK) {
                Ok(c) => c,
                Err(e) => {
                    read_error = Some((big(index), e));
                    break;
                }
            };
            if chunk.is_empty() {
                break;
            }
            let chunk = Arc::new(chunk);
            for lane in &lanes {
                // A run that stopped (it failed) has left its lane: nothing to send.
                lane.send((index, Arc::clone(&chunk)));
            }
            if has_local {
                pending.push_back((index, Arc::clone(&chunk)));
            }
            in_flight.push_back(chunk);
            index += 1;
            // This thread's run takes its chunks right after they are read (they are still in
            // this core's caches), unless a run's lane is running low: then the next chunk is
            // read first.
            while !pending.is_empty()
                && (pending.len() >= AHEAD || lanes.iter().all(|l| l.holds(LOW_WATER)))
            {
                run_here(&mut pending);
            }
            if let Some(d) = slowest() {
                report(d);
            }
        }
        // The chunks read that this thread's run has not taken yet (the reader stopped: end of
        // the stream, a read error, or a run failed).
        while !pending.is_empty() {
            run_here(&mut pending);
        }
        drop(closing);
        let mut run_errors: Vec<(u64, EngineError)> = local_error.into_iter().collect();
        for w in workers {
            match w.join() {
                Ok(Some(e)) => run_errors.push(e),
                Ok(None) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if let Some(d) = slowest() {
            report(d);
        }
        // The runs' errors of the first chunk in which any failed, unless the read failed
        // in an earlier chunk.
        let first = run_errors
            .iter()
            .map(|(i, _)| *i)
            .min()
            .filter(|&f| read_error.as_ref().is_none_or(|(i, _)| f < *i));
        let run_error = first.and_then(|f| {
            first_error(
                run_errors
                    .into_iter()
                    .filter(|(i, _)| *i == f)
                    .map(|(_, e)| e),
            )
        });
        match (run_error, read_error) {
            (Some(e), _) | (None, Some((_, e))) => Err(e),
            (None, None) => Ok(()),
        }
    })
}

/// Runs `source` through every scheme of `cfg` (and the baseline if asked) on a VM backed by
/// `backing`. `progress` is called with the number of ops done after each chunk. An op the
/// guest refuses stops the run with [`EngineError::BadOp`].
pub fn simulate<I, E>(
    cfg: &SimConfig,
    backing: &Arc<Backing>,
    source: I,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<SimResults, EngineError>
where
    I: IntoIterator<Item = Result<Op, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    simulate_skipping(cfg, backing, source, progress, false)
}

/// [`simulate`]; with `skip_bad`, ops the guest refuses (an address beyond the address space,
/// more memory than the VM has) are skipped and counted in [`SimResults::skipped`] instead.
/// Every run keeps its own guest, and every guest makes the same choices, so every run skips
/// the same ops.
pub fn simulate_skipping<I, E>(
    cfg: &SimConfig,
    backing: &Arc<Backing>,
    source: I,
    progress: &(dyn Fn(u64) + Sync),
    skip_bad: bool,
) -> Result<SimResults, EngineError>
where
    I: IntoIterator<Item = Result<Op, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    simulate_chunks(
        cfg,
        backing,
        &mut IterChunks(source.into_iter()),
        progress,
        skip_bad,
    )
}

/// [`simulate_skipping`] of a stream read in chunks.
pub fn simulate_chunks(
    cfg: &SimConfig,
    backing: &Arc<Backing>,
    source: &mut dyn OpChunks,
    progress: &(dyn Fn(u64) + Sync),
    skip_bad: bool,
) -> Result<SimResults, EngineError> {
    cfg.machine.validate()?;
    if cfg.schemes.is_empty() {
        return Err(EngineError::NoScheme);
    }
    let mut runs = cfg
        .schemes
        .iter()
        .map(|&k| SchemeRun::new(k, cfg, backing))
        .collect::<Result<Vec<_>, _>>()?;
    if cfg.baseline {
        runs.push(SchemeRun::baseline(cfg, backing)?);
    }
    for r in &mut runs {
        r.skip_bad = skip_bad;
    }
    // Called from a rayon worker (several simulations run in parallel, as `reproduce` does), a
    // worker blocked joining plain threads could not run the pool's jobs, and with every worker
    // so blocked the pool would deadlock: there the runs simulate chunk by chunk through rayon.
    if rayon::current_thread_index().is_some() {
        simulate_in_pool(&mut runs, source, progress)?;
    } else {
        simulate_pipelined(&mut runs, source, progress)?;
    }
    let mut out = SimResults {
        schemes: Vec::with_capacity(cfg.schemes.len()),
        baseline: None,
        skipped: runs.first().map_or(0, SchemeRun::skipped),
    };
    for r in runs {
        match r.kind() {
            RunKind::Scheme(k) => out.schemes.push(r.finish(k)),
            RunKind::Baseline => out.baseline = Some(r.finish(Baseline::PerfectTlb)),
        }
    }
    Ok(out)
}
