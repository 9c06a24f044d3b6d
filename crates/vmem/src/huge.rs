//! Arrays of words that the simulator reads at random (the data caches' line tags), laid out so
//! that the kernel can back them with 2 MiB transparent huge pages where it offers them on
//! request (`madvise` mode). Speed only: with 4 KiB pages a random access over
//! megabytes also misses the host's TLBs (and, in a virtual machine, pays a two-dimensional walk).
//! The contents and every result are the same either way.

/// A 2 MiB huge page.
const HUGE: usize = 2 << 20;

/// A fixed-length array of `u64`, 2 MiB-aligned and advised for huge pages when it spans at
/// least one huge page. Dereferences to `[u64]`.
pub struct HugeWords {
    /// Holds the words at `start..start + len`; its capacity leaves room for the alignment.
    buf: Vec<u64>,
    start: usize,
    len: usize,
}

impl HugeWords {
    /// `len` words, each `fill`.
    pub fn new(len: usize, fill: u64) -> HugeWords {
        let mut w = HugeWords::reserve(len);
        // Within the capacity: the buffer does not move, so `start` stays aligned.
        w.buf.resize(w.start + len, fill);
        w.len = len;
        w
    }

    /// No words, room for `cap` (advised for huge pages if that spans one). Nothing is touched.
    fn reserve(cap: usize) -> HugeWords {
        if cap.saturating_mul(8) < HUGE {
            return HugeWords {
                buf: Vec::with_capacity(cap),
                start: 0,
                len: 0,
            };
        }
        let buf: Vec<u64> = Vec::with_capacity(cap + HUGE / 8);
        let addr = buf.as_ptr() as usize;
        let start = (addr.next_multiple_of(HUGE) - addr) / 8;
        advise_huge(addr + start * 8, cap * 8);
        HugeWords { buf, start, len: 0 }
    }
}

/// Makes room in `v` for `extra` more words, as `Vec::reserve` does (at least doubling), but
/// when the new buffer spans a huge page, into a fresh allocation whose 2 MiB-aligned interior is
/// advised for huge pages before the words are copied in (so the kernel backs it with huge pages
/// as the copy first writes it). For arrays that grow and are read at random (radix tables'
/// entries). Contents are unchanged.
pub fn reserve_huge(v: &mut Vec<u64>, extra: usize) {
    let need = v.len() + extra;
    if need <= v.capacity() {
        return;
    }
    let cap = need.max(v.capacity() * 2);
    if cap.saturating_mul(8) < HUGE {
        v.reserve(extra);
        return;
    }
    let mut fresh: Vec<u64> = Vec::with_capacity(cap);
    let addr = fresh.as_ptr() as usize;
    let start = addr.next_multiple_of(HUGE);
    let end = addr + cap * 8;
    if end > start {
        advise_huge(start, end - start);
    }
    fresh.extend_from_slice(v);
    *v = fresh;
}

/// Asks the kernel to back `len` bytes at `addr` (2 MiB-aligned, inside an allocation of ours)
/// with huge pages. A hint: failure (no transparent huge pages) changes nothing.
#[allow(unsafe_code)]
fn advise_huge(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: `madvise(MADV_HUGEPAGE)` only changes how the kernel backs the pages of the range;
    // it reads and writes nothing. The range (rounded down to whole 4 KiB pages) lies inside the
    // capacity of a live allocation, so it is mapped memory of this process.
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len & !4095, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}

impl std::ops::Deref for HugeWords {
    type Target = [u64];
    #[inline(always)]
    fn deref(&self) -> &[u64] {
        // `buf` ends where the words do (`new` and `Clone` size it so): one bound to check.
        debug_assert_eq!(self.buf.len(), self.start + self.len);
        &self.buf[self.start..]
    }
}

impl std::ops::DerefMut for HugeWords {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [u64] {
        debug_assert_eq!(self.buf.len(), self.start + self.len);
        &mut self.buf[self.start..]
    }
}

impl Clone for HugeWords {
    fn clone(&self) -> HugeWords {
        let mut c = HugeWords::new(self.len, 0);
        c.copy_from_slice(self);
        c
    }
}

impl std::fmt::Debug for HugeWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeWords({} words)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_huge_keeps_the_words_and_makes_room() {
        let mut v: Vec<u64> = Vec::new();
        let mut want = Vec::new();
        // Past several huge pages, 512 words at a time (a radix table page).
        for t in 0..2000u64 {
            reserve_huge(&mut v, 512);
            assert!(v.capacity() >= v.len() + 512);
            v.extend((0..512).map(|i| t * 512 + i));
            want.extend((0..512).map(|i| t * 512 + i));
        }
        assert_eq!(v, want);
    }

    #[test]
    fn holds_its_words_aligned_and_clones() {
        for len in [0, 1, 1000, HUGE / 8, HUGE / 8 + 3, 3 * HUGE / 8 + 5] {
            let mut w = HugeWords::new(len, 7);
            assert_eq!(w.len(), len);
            assert!(w.iter().all(|&x| x == 7));
            if len >= HUGE / 8 {
                assert_eq!(w.as_ptr() as usize % HUGE, 0, "{len}");
            }
            if len > 0 {
                w[len - 1] = 9;
                w[0] = 1;
            }
            let c = w.clone();
            assert_eq!(&c[..], &w[..]);
        }
    }
}
