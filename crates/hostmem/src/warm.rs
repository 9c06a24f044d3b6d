//! Cache hints: start loading memory a later step will read (a hint, no architectural effect).
//! The placement engine uses them to overlap the cache misses on a host's cold state with other
//! work: a replay on a large fleet touches state spread over every host.

/// Starts loading the cache lines of `*r` (all of them, `size_of::<T>()` bytes from `r`).
#[inline]
pub fn prefetch<T>(r: &T) {
    let p = std::ptr::from_ref(r).cast::<u8>();
    let mut off = 0;
    while off < size_of::<T>().max(1) {
        prefetch_line(p.wrapping_add(off));
        off += 64;
    }
}

/// Starts loading the cache lines of the first `max_lines` lines of `s` (at most).
#[inline]
pub fn prefetch_slice<T>(s: &[T], max_lines: usize) {
    let p = s.as_ptr().cast::<u8>();
    let bytes = size_of_val(s).min(max_lines * 64);
    let mut off = 0;
    while off < bytes {
        prefetch_line(p.wrapping_add(off));
        off += 64;
    }
}

#[inline]
#[allow(unsafe_code)]
fn prefetch_line(p: *const u8) {
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
