//! Host cache hints: start loading memory that a later step will read. A hint has no
//! architectural effect (it reads nothing into a result and never faults), so it changes speed
//! only. The simulator uses it to overlap its own misses on the simulated machine's tables
//! (`compromis_vmem::radix::prefetch`), the placement engine on a host's cold state
//! (`compromis_hostmem::warm`).

/// Starts loading the host cache line holding the byte at `p`. Safe for any pointer, valid or
/// not: a prefetch never dereferences it architecturally.
#[inline]
#[allow(unsafe_code)]
pub fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache hierarchy: it never faults, even on an address
    // that is not mapped, and reads nothing architecturally. SSE is part of the x86_64 baseline,
    // so the target feature is always present.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
