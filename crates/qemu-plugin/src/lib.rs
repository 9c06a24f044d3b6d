//! A QEMU user-mode TCG plugin that streams a program's memory accesses to `compromis record
//! --tracer qemu` as compact binary records (the protocol is specified in `docs/traces.md`, section
//! "QEMU plugin stream", and read by `compromis_trace::qemu`).
//!
//! QEMU loads it with `qemu-x86_64 -plugin libcompromis_qemu_plugin.so,out=PATH[,fetches=on]
//! [,exec=stop|run] -- PROGRAM ARGS`. At every translated instruction it registers a memory
//! callback whose user data is the instruction's index in its translation block (TB); each call
//! appends one 8-byte record (address, size, kind, index) to the buffer of the executing vCPU
//! (one vCPU per guest thread in user mode). A full buffer is written to `out` as one chunk whose
//! header names the process and the vCPU, so the streams of different threads and processes stay
//! apart and marked.
//!
//! Instruction fetches (`fetches=on`): each TB is described once, when it is translated (a TB
//! chunk: its number and its instructions' addresses and lengths), and each execution of it
//! pushes a start marker and a "reached instruction i" marker before each further instruction.
//! With `fetches=tb` only the start and a marker just before the last instruction are pushed
//! (for TBs of two or more instructions): 43% fewer stream words on `sort`, but not exact on
//! QEMU 7.2 (see below). The reader (`compromis_trace::qemu`) expands the
//! fetches between the data records in program order: before a data record of instruction `i`,
//! and at a marker of instruction `i`, come the fetches up to `i`. A TB left early (a fault: no
//! end marker before the next start) gets the fetches up to its last data record's instruction
//! (at least its first instruction).
//!
//! QEMU 7.2's x86 translator drops an instruction that crosses into the next page when it is not
//! the TB's first (it ends the TB before it), but the plugin API still lists it, with the bytes
//! read up to the page end: that ghost never runs and its callbacks never fire (and, measured,
//! neither did markers on the instructions before it, in one TB of a `sort` run, while they did
//! when every TB had a marker per instruction). With `fetches=tb`, when the last listed instruction
//! ends exactly at a page end (a ghost, or a real instruction that ends there: 19 of 5,375 TBs of
//! a `sort` run), every instruction of the TB gets a marker; one such TB of that run still lost
//! the fetches of its 3 instructions after the first (25,056,255 records against 25,056,258). The
//! default, a marker per instruction, gave the same records as protocol 1 on that run.
//!
//! # The QEMU API, declared by hand
//!
//! The distribution's QEMU 7.2 (`qemu-user`) speaks plugin API version 1 (`QEMU_PLUGIN_VERSION`).
//! The `qemu-plugin-sys` bindings (10.1.0-v2, feature `plugin-api-v1`) would do, but this library
//! is compiled by `compromis-trace`'s build script with a bare `rustc` (so that `cargo run -p
//! compromis-cli` embeds a fresh plugin without a nested cargo build), which cannot take crate
//! dependencies. The dozen functions used here are therefore declared below, transcribed from
//! QEMU 7.2's `include/qemu/qemu-plugin.h` (GPL-2.0-or-later, hence this crate's licence); all of
//! them exist unchanged in API versions 1 to 4.
//!
//! # Threads, fork and exec
//!
//! - Buffers are indexed by vCPU. QEMU runs a vCPU on one host thread and gives its index to a new
//!   vCPU only after the old one exited (the exit callback flushes the buffer first), so a buffer
//!   is only ever touched by one thread at a time.
//! - At `fork` the child discards the parent's pending records (the parent writes them) and
//!   announces itself with a fork chunk; its records carry its own pid.
//! - At `execve`/`execveat` the new program would run natively (QEMU does not follow exec), so the
//!   plugin writes an exec chunk and, with `exec=stop` (what compromis passes), ends the process
//!   with status 127 before the system call runs.
#![allow(unsafe_code)] // FFI with QEMU: every block carries a SAFETY comment.

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::fs::File;
use std::io::Write;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

#[cfg(not(all(target_arch = "x86_64", target_endian = "little", target_os = "linux")))]
compile_error!("the compromis QEMU plugin targets x86_64 Linux (little-endian records)");

// ---------------------------------------------------------------------------------------------
// QEMU plugin API version 1 (QEMU 7.2 `include/qemu/qemu-plugin.h`).

type PluginId = u64;
/// `qemu_plugin_meminfo_t`.
type MemInfo = u32;

/// The head of `qemu_info_t` (a union follows, which this plugin never reads).
#[repr(C)]
struct QemuInfo {
    target_name: *const c_char,
    version_min: c_int,
    version_cur: c_int,
    system_emulation: bool,
}

/// `struct qemu_plugin_tb` (opaque).
#[repr(C)]
struct Tb {
    _private: [u8; 0],
}

/// `struct qemu_plugin_insn` (opaque).
#[repr(C)]
struct Insn {
    _private: [u8; 0],
}

/// `QEMU_PLUGIN_CB_NO_REGS` of `enum qemu_plugin_cb_flags`.
const CB_NO_REGS: c_int = 0;
/// `QEMU_PLUGIN_MEM_RW` of `enum qemu_plugin_mem_rw`.
const MEM_RW: c_int = 3;

type TbTransCb = extern "C" fn(PluginId, *mut Tb);
type InsnCb = extern "C" fn(c_uint, *mut c_void);
type MemCb = extern "C" fn(c_uint, MemInfo, u64, *mut c_void);
type VcpuCb = extern "C" fn(PluginId, c_uint);
type SyscallCb = extern "C" fn(PluginId, c_uint, i64, u64, u64, u64, u64, u64, u64, u64, u64);
type ExitCb = extern "C" fn(PluginId, *mut c_void);

unsafe extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TbTransCb);
    fn qemu_plugin_register_vcpu_exit_cb(id: PluginId, cb: VcpuCb);
    fn qemu_plugin_register_vcpu_syscall_cb(id: PluginId, cb: SyscallCb);
    fn qemu_plugin_register_atexit_cb(id: PluginId, cb: ExitCb, userdata: *mut c_void);
    fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    fn qemu_plugin_tb_get_insn(tb: *const Tb, idx: usize) -> *mut Insn;
    fn qemu_plugin_insn_vaddr(insn: *const Insn) -> u64;
    fn qemu_plugin_insn_size(insn: *const Insn) -> usize;
    fn qemu_plugin_register_vcpu_insn_exec_cb(
        insn: *mut Insn,
        cb: InsnCb,
        flags: c_int,
        userdata: *mut c_void,
    );
    fn qemu_plugin_register_vcpu_mem_cb(
        insn: *mut Insn,
        cb: MemCb,
        flags: c_int,
        rw: c_int,
        userdata: *mut c_void,
    );
    fn qemu_plugin_mem_size_shift(info: MemInfo) -> c_uint;
    fn qemu_plugin_mem_is_store(info: MemInfo) -> bool;
}

// From the C library QEMU is linked with.
unsafe extern "C" {
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> c_int;
    fn _exit(status: c_int) -> !;
}

/// The plugin API version this library is written against (checked by QEMU at load time).
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = 1;

// ---------------------------------------------------------------------------------------------
// The stream format (mirrored by `compromis_trace::qemu`; specified in docs/traces.md).

/// First 32 bits of every chunk: "CQP1" little endian.
const MAGIC: u64 = 0x3150_5143;
/// Protocol version, in the hello chunk.
const PROTOCOL: u64 = 2;
/// Chunk kinds (bits 56-63 of the second header word).
const CHUNK_RECORDS: u64 = 0;
const CHUNK_HELLO: u64 = 1;
const CHUNK_EXEC: u64 = 2;
const CHUNK_EXIT: u64 = 3;
const CHUNK_FORK: u64 = 4;
const CHUNK_TBS: u64 = 5;
/// Header words before a chunk's payload.
const HEADER: usize = 2;
/// Records a chunk holds at most (64 KiB chunks).
const CHUNK_RECORDS_MAX: usize = 8192 - HEADER;
/// TB chunk words buffered before they are written on their own.
const TBS_WORDS_MAX: usize = 8190;
/// Payload words of a chunk that fits in `PIPE_BUF` (4,096 bytes), which the kernel writes to a
/// pipe atomically.
const ATOMIC_WORDS: usize = 512 - HEADER;
/// Most payload words per chunk now: [`CHUNK_RECORDS_MAX`], or [`ATOMIC_WORDS`] once the process
/// forked or was forked: then two processes write to the same pipe, and only writes of at most
/// `PIPE_BUF` bytes cannot interleave.
static CHUNK_LIMIT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(CHUNK_RECORDS_MAX);
/// Record kinds (bits 62-63): a TB marker, a load, a store, a data record whose address does
/// not fit in 48 bits (the next word is the address).
const KIND_MARK: u64 = 0;
const KIND_LOAD: u64 = 1;
const KIND_STORE: u64 = 2;
const KIND_WIDE: u64 = 3;
/// A TB marker's bit 61: "reached instruction i" (i in bits 48-58), else the start marker.
const MARK_REACH: u64 = 1 << 61;
/// Bits 0-47 of a TB marker: the TB number.
const TB_NUMBER_MASK: u64 = (1 << 48) - 1;
/// Bits 0-47 of a data record: the guest-virtual address.
const ADDR_BITS: u32 = 48;
/// The most instructions QEMU puts in a TB (`TCG_MAX_INSNS`); the index field has 11 bits.
const MAX_TB_INSNS: usize = 2047;
/// vCPUs with their own buffer; records of higher vCPU indices are counted as lost.
const MAX_VCPUS: usize = 4096;
/// x86-64 Linux system call numbers.
const SYS_EXECVE: i64 = 59;
const SYS_EXECVEAT: i64 = 322;

/// One data record: kind in bits 62-63, log2 of the access size in bits 59-61, the index of
/// the instruction in its TB in bits 48-58, the address in bits 0-47.
#[inline(always)]
fn record(kind: u64, addr: u64, shift: u64, index: u64) -> u64 {
    (kind << 62) | ((shift & 7) << 59) | ((index & 0x7ff) << ADDR_BITS) | addr
}

/// This process's id (refreshed in a forked child): read per chunk, so not a system call.
static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The two header words of a chunk.
fn header(kind: u64, vcpu: u32, count: usize) -> [u64; 2] {
    let pid = u64::from(PID.load(Ordering::Relaxed));
    [
        MAGIC | ((count as u64) << 32),
        pid | ((u64::from(vcpu) & 0xff_ffff) << 32) | (kind << 56),
    ]
}

// ---------------------------------------------------------------------------------------------
// State.

/// Where chunks go (the trace pipe), with the TB descriptions not written yet.
struct Out {
    file: File,
    /// TB chunk payload: per TB its number, its instruction count, then per instruction
    /// `address | length << 56`. Written before any record chunk (under the same lock), so a
    /// TB is always described before a record of its execution reaches the reader.
    tbs: Vec<u64>,
}

/// The output, and whether writing failed (the reader is gone: stop).
static OUT: OnceLock<Mutex<Out>> = OnceLock::new();
/// The next TB number of this process.
static NEXT_TB: AtomicU64 = AtomicU64::new(0);
static BROKEN: AtomicBool = AtomicBool::new(false);
static FETCHES: AtomicBool = AtomicBool::new(false);
/// `fetches=tb`: markers at TB starts and ends only (else one per instruction: exact).
static TB_FETCHES: AtomicBool = AtomicBool::new(false);
static STOP_AT_EXEC: AtomicBool = AtomicBool::new(true);
/// Records dropped because their vCPU index was at or above [`MAX_VCPUS`].
static LOST: AtomicU64 = AtomicU64::new(0);

/// One vCPU's buffer: header space, then records.
struct Stream {
    words: std::cell::UnsafeCell<Vec<u64>>,
}

// SAFETY: a Stream is only touched by the thread running its vCPU (QEMU runs one vCPU per host
// thread and reuses an index only after the exit callback, on the exiting thread, flushed it),
// or at exit/fork when every other vCPU is stopped (QEMU's exclusive section / a fresh child).
unsafe impl Sync for Stream {}

static STREAMS: [AtomicPtr<Stream>; MAX_VCPUS] = [const { AtomicPtr::new(null_mut()) }; MAX_VCPUS];

/// The buffer of `vcpu`, created on first use (never freed: indices are reused).
#[inline(always)]
fn stream(vcpu: c_uint) -> Option<&'static mut Vec<u64>> {
    let slot = STREAMS.get(vcpu as usize)?;
    let mut p = slot.load(Ordering::Acquire);
    if p.is_null() {
        let mut words = Vec::with_capacity(HEADER + CHUNK_RECORDS_MAX);
        words.resize(HEADER, 0);
        let fresh = Box::into_raw(Box::new(Stream {
            words: std::cell::UnsafeCell::new(words),
        }));
        slot.store(fresh, Ordering::Release);
        p = fresh;
    }
    // SAFETY: `p` comes from `Box::into_raw` and is never freed; only this vCPU's thread uses it
    // now (see `impl Sync for Stream`), so the exclusive reference does not alias.
    Some(unsafe { &mut *(*p).words.get() })
}

/// Writes `words` (a chunk: header and payload) to `file` in one call.
fn write_to(file: &mut File, words: &[u64]) {
    if BROKEN.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: u64 has no padding and any byte is a valid u8; the slice covers exactly the
    // words' memory, borrowed for this call only. Records are little endian (checked above).
    let bytes = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) };
    if file.write_all(bytes).is_err() {
        BROKEN.store(true, Ordering::Relaxed);
    }
}

/// Writes the pending TB descriptions as one chunk (the caller holds the output lock).
fn write_tbs(out: &mut Out) {
    if out.tbs.is_empty() {
        return;
    }
    let mut words = header(CHUNK_TBS, 0, out.tbs.len()).to_vec();
    words.extend_from_slice(&out.tbs);
    write_to(&mut out.file, &words);
    out.tbs.clear();
}

/// Writes `words` (a chunk: header and payload) to the output, after the pending TB
/// descriptions.
fn write_words(words: &[u64]) {
    let Some(out) = OUT.get() else { return };
    let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
    write_tbs(&mut out);
    write_to(&mut out.file, words);
}

/// Writes the records buffered in `words` as a chunk of `vcpu` and empties the buffer.
fn flush(vcpu: u32, words: &mut Vec<u64>) {
    let count = words.len() - HEADER;
    if count == 0 {
        return;
    }
    let limit = CHUNK_LIMIT.load(Ordering::Relaxed);
    if count <= limit {
        let [h0, h1] = header(CHUNK_RECORDS, vcpu, count);
        words[0] = h0;
        words[1] = h1;
        write_words(words);
    } else {
        // Buffered before a fork: written in chunks small enough to be atomic.
        let mut small = [0u64; HEADER + ATOMIC_WORDS];
        for part in words[HEADER..].chunks(limit.min(ATOMIC_WORDS)) {
            let [h0, h1] = header(CHUNK_RECORDS, vcpu, part.len());
            small[0] = h0;
            small[1] = h1;
            small[HEADER..HEADER + part.len()].copy_from_slice(part);
            write_words(&small[..HEADER + part.len()]);
        }
    }
    words.truncate(HEADER);
}

/// Writes a control chunk (no records) with `payload`.
fn control(kind: u64, vcpu: u32, payload: &[u64]) {
    let mut words = header(kind, vcpu, payload.len()).to_vec();
    words.extend_from_slice(payload);
    write_words(&words);
}

/// Flushes every vCPU's buffer (at exit, when the other vCPUs are stopped).
fn flush_all() {
    for (vcpu, slot) in STREAMS.iter().enumerate() {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: called when no other vCPU runs callbacks (see `impl Sync for Stream`).
            let words = unsafe { &mut *(*p).words.get() };
            flush(u32::try_from(vcpu).unwrap_or(u32::MAX), words);
        }
    }
}

#[inline(always)]
fn push(vcpu: c_uint, word: u64) {
    match stream(vcpu) {
        Some(words) => {
            words.push(word);
            if words.len() >= HEADER + CHUNK_LIMIT.load(Ordering::Relaxed) {
                flush(vcpu, words);
            }
        }
        None => {
            LOST.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Pushes a data record, in two words when the address does not fit in 48 bits.
#[inline(always)]
fn push_data(vcpu: c_uint, kind: u64, addr: u64, shift: u64, index: u64) {
    if addr >> ADDR_BITS == 0 {
        push(vcpu, record(kind, addr, shift, index));
        return;
    }
    match stream(vcpu) {
        Some(words) => {
            if words.len() + 2 > HEADER + CHUNK_LIMIT.load(Ordering::Relaxed) {
                flush(vcpu, words);
            }
            words.push(record(KIND_WIDE, 0, shift, index) | ((kind - 1) << 47));
            words.push(addr);
        }
        None => {
            LOST.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Callbacks.

/// A TB marker: the word was encoded at translation time and travels as the user-data pointer.
extern "C" fn on_mark(vcpu: c_uint, userdata: *mut c_void) {
    push(vcpu, userdata as u64);
}

/// QEMU 7.2 packs a `qemu_plugin_meminfo_t` as `MemOpIdx | rw << 16` with `MemOpIdx = memop
/// << 4 | mmu_idx` and the size's log2 in the memop's low 3 bits: decoded here without two calls
/// into QEMU per access, once [`check_meminfo`] found that QEMU's functions agree.
static FAST_MEMINFO: AtomicBool = AtomicBool::new(false);

#[inline(always)]
fn meminfo_fast(info: MemInfo) -> (u32, bool) {
    ((info >> 4) & 7, (info >> 16) & 2 != 0)
}

/// Compares [`meminfo_fast`] with QEMU's decoding on every memop, several MMU indices and each
/// direction (pure functions of the integer in every API version), and enables it if they agree.
fn check_meminfo() {
    let agree = (0..256u32).all(|memop| {
        [0u32, 1, 2, 15].iter().all(|&mmu| {
            [1u32, 2, 3].iter().all(|&rw| {
                let info = (memop << 4) | mmu | (rw << 16);
                // SAFETY: the functions only decode the integer they are given.
                let api = unsafe {
                    (
                        qemu_plugin_mem_size_shift(info),
                        qemu_plugin_mem_is_store(info),
                    )
                };
                api == meminfo_fast(info)
            })
        })
    });
    FAST_MEMINFO.store(agree, Ordering::Relaxed);
}

/// A data access of the instruction whose index in its TB is the user data.
extern "C" fn on_mem(vcpu: c_uint, info: MemInfo, vaddr: u64, userdata: *mut c_void) {
    let (shift, store) = if FAST_MEMINFO.load(Ordering::Relaxed) {
        meminfo_fast(info)
    } else {
        // SAFETY: `info` is the handle QEMU passed to this callback, valid during it.
        unsafe {
            (
                qemu_plugin_mem_size_shift(info),
                qemu_plugin_mem_is_store(info),
            )
        }
    };
    let kind = if store { KIND_STORE } else { KIND_LOAD };
    push_data(vcpu, kind, vaddr, u64::from(shift), userdata as u64);
}

extern "C" fn on_translate(_id: PluginId, tb: *mut Tb) {
    let fetches = FETCHES.load(Ordering::Relaxed);
    // SAFETY: `tb` and the instruction handles are valid during this translation callback; the
    // callbacks registered are `extern "C"` functions with the signatures QEMU expects.
    unsafe {
        let n = qemu_plugin_tb_n_insns(tb).min(MAX_TB_INSNS);
        if n == 0 {
            return;
        }
        if fetches {
            let number = NEXT_TB.fetch_add(1, Ordering::Relaxed) & TB_NUMBER_MASK;
            let Some(out) = OUT.get() else { return };
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            let limit = CHUNK_LIMIT.load(Ordering::Relaxed).min(TBS_WORDS_MAX);
            if out.tbs.len() + 2 + n > limit {
                write_tbs(&mut out);
            }
            out.tbs.push(number);
            out.tbs.push(n as u64);
            let mut last_end = 0;
            for i in 0..n {
                let insn = qemu_plugin_tb_get_insn(tb, i);
                let size = qemu_plugin_insn_size(insn) as u64;
                let vaddr = qemu_plugin_insn_vaddr(insn);
                last_end = vaddr.wrapping_add(size);
                out.tbs.push((vaddr & ((1 << 56) - 1)) | (size << 56));
            }
            if out.tbs.len() >= limit {
                write_tbs(&mut out);
            }
            drop(out);
            // Markers: start before the first instruction, "reached" before the last (none for
            // a TB of one instruction: its start is its end); before every instruction when the
            // last may be a ghost (it ends at a page end; see the crate documentation).
            let mark = |i: usize, word: u64| {
                qemu_plugin_register_vcpu_insn_exec_cb(
                    qemu_plugin_tb_get_insn(tb, i),
                    on_mark,
                    CB_NO_REGS,
                    word as *mut c_void,
                );
            };
            let reach = |i: usize| KIND_MARK << 62 | MARK_REACH | (i as u64) << 48 | number;
            mark(0, KIND_MARK << 62 | number);
            if !TB_FETCHES.load(Ordering::Relaxed) || last_end & 0xfff == 0 {
                for i in 1..n {
                    mark(i, reach(i));
                }
            } else if n > 1 {
                mark(n - 1, reach(n - 1));
            }
        }
        for i in 0..n {
            let insn = qemu_plugin_tb_get_insn(tb, i);
            qemu_plugin_register_vcpu_mem_cb(insn, on_mem, CB_NO_REGS, MEM_RW, i as *mut c_void);
        }
    }
}

extern "C" fn on_vcpu_exit(_id: PluginId, vcpu: c_uint) {
    if let Some(words) = stream(vcpu) {
        flush(vcpu, words);
    }
}

#[allow(clippy::too_many_arguments)]
extern "C" fn on_syscall(
    _id: PluginId,
    vcpu: c_uint,
    num: i64,
    _a1: u64,
    _a2: u64,
    _a3: u64,
    _a4: u64,
    _a5: u64,
    _a6: u64,
    _a7: u64,
    _a8: u64,
) {
    if num != SYS_EXECVE && num != SYS_EXECVEAT {
        return;
    }
    if let Some(words) = stream(vcpu) {
        flush(vcpu, words);
    }
    control(CHUNK_EXEC, vcpu, &[num.unsigned_abs()]);
    if STOP_AT_EXEC.load(Ordering::Relaxed) {
        // SAFETY: ends the process before the exec runs; nothing of ours is left to write.
        unsafe { _exit(127) }
    }
}

extern "C" fn on_exit(_id: PluginId, _userdata: *mut c_void) {
    flush_all();
    control(CHUNK_EXIT, 0, &[LOST.load(Ordering::Relaxed)]);
}

thread_local! {
    /// The output lock held across a fork by the forking thread (prepare -> parent/child).
    static FORK_GUARD: RefCell<Option<MutexGuard<'static, Out>>> = const { RefCell::new(None) };
}

extern "C" fn before_fork() {
    if let Some(out) = OUT.get() {
        let mut g = out.lock().unwrap_or_else(PoisonError::into_inner);
        // The TBs described so far are the child's too: the reader gives the child a copy of
        // the parent's TB table when the child's fork chunk arrives, after these.
        write_tbs(&mut g);
        FORK_GUARD.with(|s| *s.borrow_mut() = Some(g));
    }
}

extern "C" fn after_fork_parent() {
    CHUNK_LIMIT.store(ATOMIC_WORDS, Ordering::Relaxed);
    FORK_GUARD.with(|s| drop(s.borrow_mut().take()));
}

extern "C" fn after_fork_child() {
    PID.store(std::process::id(), Ordering::Relaxed);
    CHUNK_LIMIT.store(ATOMIC_WORDS, Ordering::Relaxed);
    FORK_GUARD.with(|s| drop(s.borrow_mut().take()));
    // The pending records belong to the parent, which writes them itself.
    for slot in &STREAMS {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: the child has a single thread right after fork.
            unsafe { (*(*p).words.get()).truncate(HEADER) };
        }
    }
    control(
        CHUNK_FORK,
        0,
        &[u64::from(std::os::unix::process::parent_id())],
    );
}

/// Parses `key=value` options; returns (out path, fetches, TB fetches, stop at exec).
fn parse_args(args: &[&str]) -> Result<(String, bool, bool, bool), String> {
    let mut out = None;
    let mut fetches = false;
    let mut tb = false;
    let mut stop = true;
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("option {a:?} is not key=value"))?;
        let on = |v: &str| match v {
            "on" | "yes" | "true" => Ok(true),
            "off" | "no" | "false" => Ok(false),
            _ => Err(format!("option {k}={v}: expected on or off")),
        };
        match k {
            "out" => out = Some(v.to_owned()),
            "fetches" if v == "tb" => (fetches, tb) = (true, true),
            "fetches" => fetches = on(v)?,
            "exec" => {
                stop = match v {
                    "stop" => true,
                    "run" => false,
                    _ => return Err(format!("option exec={v}: expected stop or run")),
                }
            }
            _ => return Err(format!("unknown option {k:?} (valid: out, fetches, exec)")),
        }
    }
    let out = out.ok_or("missing option out=PATH")?;
    Ok((out, fetches, tb, stop))
}

/// Called by QEMU when it loads the plugin. Returns 0 on success.
///
/// # Safety
/// QEMU passes a valid `info` (a `qemu_info_t`) and `argc` valid NUL-terminated strings in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: QEMU's contract for this entry point (see the function's safety section).
    let (system, args) = unsafe {
        let system = info
            .cast::<QemuInfo>()
            .as_ref()
            .is_some_and(|i| i.system_emulation);
        let n = usize::try_from(argc).unwrap_or(0);
        let args: Vec<&str> = (0..n)
            .filter_map(|i| CStr::from_ptr(*argv.add(i)).to_str().ok())
            .collect();
        (system, args)
    };
    if system {
        eprintln!("compromis qemu plugin: user-mode emulation only (qemu-x86_64)");
        return -1;
    }
    let (out, fetches, tb, stop) = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("compromis qemu plugin: {e}");
            return -1;
        }
    };
    // O_CLOEXEC (std's default): a program started by exec must not hold the pipe open.
    let file = match std::fs::OpenOptions::new().write(true).open(&out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("compromis qemu plugin: cannot open {out}: {e}");
            return -1;
        }
    };
    PID.store(std::process::id(), Ordering::Relaxed);
    if OUT
        .set(Mutex::new(Out {
            file,
            tbs: Vec::with_capacity(TBS_WORDS_MAX + 2 * MAX_TB_INSNS),
        }))
        .is_err()
    {
        eprintln!("compromis qemu plugin: loaded twice");
        return -1;
    }
    FETCHES.store(fetches, Ordering::Relaxed);
    TB_FETCHES.store(tb, Ordering::Relaxed);
    check_meminfo();
    STOP_AT_EXEC.store(stop, Ordering::Relaxed);
    control(CHUNK_HELLO, u32::from(fetches), &[PROTOCOL]);
    // SAFETY: registering `extern "C"` callbacks with the signatures the API declares; `id` is
    // ours. pthread_atfork takes plain functions and cannot fail except on memory exhaustion.
    unsafe {
        if pthread_atfork(
            Some(before_fork),
            Some(after_fork_parent),
            Some(after_fork_child),
        ) != 0
        {
            eprintln!("compromis qemu plugin: pthread_atfork failed");
            return -1;
        }
        qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
        qemu_plugin_register_vcpu_exit_cb(id, on_vcpu_exit);
        qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
        qemu_plugin_register_atexit_cb(id, on_exit, null_mut());
    }
    0
}
