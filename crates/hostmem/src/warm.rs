//! Cache hints: start loading memory a later step will read (a hint, no architectural effect).
//! The placement engine uses them to overlap the cache misses on a host's cold state with other
//! work: a replay on a large fleet touches state spread over every host.

use compromis_types::hint::prefetch_line;

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
