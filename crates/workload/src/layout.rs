//! Address layout shared by every workload, the small op buffer the generators fill, and the
//! code-fetch helper.
//!
//! Layout (per process; every process has its own address space, so all processes use the same
//! virtual addresses):
//! - code: [`CODE_BASE`] (`0x40_0000`, the classic non-PIE x86-64 text start), [`CODE_LEN`] bytes;
//! - long-lived heap (churn only): from [`HEAP_BASE`] (`0x5555_0000_0000`) upward;
//! - large data regions (what `malloc` of a big array gets from `mmap`): 2 MiB aligned, from
//!   [`MMAP_TOP`] (`0x7f00_0000_0000`) downward, one 2 MiB guard gap between regions.

use compromis_types::{AccessKind, Address, Gva, Op, PageSize};

/// Start of the code (text) region.
pub const CODE_BASE: Gva = Gva(0x40_0000);
/// Length of the code region (64 KiB: a small program's hot text).
pub const CODE_LEN: u64 = 64 << 10;
/// Start of the long-lived heap (churn).
pub const HEAP_BASE: Gva = Gva(0x5555_0000_0000);
/// Top (exclusive end) of the mmap area; data regions are placed below it.
pub const MMAP_TOP: Gva = Gva(0x7f00_0000_0000);
/// 2 MiB.
pub const HUGE: u64 = PageSize::Size2M.bytes();
/// 4 KiB.
pub const PAGE: u64 = PageSize::Size4K.bytes();
/// Largest data footprint one process may ask for (keeps every region inside the user half).
pub const MAX_PROCESS_FOOTPRINT: u64 = 64 << 40;

/// A mapped region of one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte (4 KiB aligned; 2 MiB aligned for data regions).
    pub start: Gva,
    /// Length in bytes (a multiple of 4 KiB).
    pub len: u64,
}

impl Region {
    /// The `Op::Map` of this region.
    pub fn map(self) -> Op {
        Op::Map {
            start: self.start,
            len: self.len,
        }
    }
    /// The `Op::Unmap` of this region.
    pub fn unmap(self) -> Op {
        Op::Unmap {
            start: self.start,
            len: self.len,
        }
    }
    /// The address `off` bytes into the region (`off < len`, checked in debug builds).
    #[inline]
    pub fn at(self, off: u64) -> Gva {
        debug_assert!(
            off < self.len,
            "offset {off:#x} outside region of {:#x} bytes",
            self.len
        );
        Gva(self.start.raw() + off)
    }
    /// The code region.
    pub const fn code() -> Region {
        Region {
            start: CODE_BASE,
            len: CODE_LEN,
        }
    }
}

/// The mapped length for a data array of `bytes` bytes: rounded down to a multiple of 2 MiB when
/// at least 2 MiB (so the guest can back it with huge pages), else rounded down to 4 KiB.
/// Returns 0 when `bytes < 4 KiB`.
pub fn data_len(bytes: u64) -> u64 {
    if bytes >= HUGE {
        bytes & !(HUGE - 1)
    } else {
        bytes & !(PAGE - 1)
    }
}

/// Places data regions of the given lengths from [`MMAP_TOP`] downward, each 2 MiB aligned with a
/// 2 MiB guard gap. The caller guarantees the total is at most [`MAX_PROCESS_FOOTPRINT`].
pub fn place_down(lens: &[u64]) -> Vec<Region> {
    let mut top = MMAP_TOP;
    let mut out = Vec::with_capacity(lens.len());
    for &len in lens {
        let span = len.div_ceil(HUGE) * HUGE;
        let start = top
            .checked_sub(span)
            .expect("data footprint is bounded by MAX_PROCESS_FOOTPRINT")
            .align_down(PageSize::Size2M);
        out.push(Region { start, len });
        top = start.checked_sub(HUGE).expect("bounded footprint");
    }
    out
}

/// Capacity of an [`OpBuf`].
pub const BUF_CAP: usize = 16;

/// A tiny fixed-capacity queue of ops that a generator fills one step at a time (no allocation
/// per op).
#[derive(Clone, Debug)]
pub struct OpBuf {
    ops: [Op; BUF_CAP],
    len: u8,
    pos: u8,
}

impl Default for OpBuf {
    fn default() -> Self {
        OpBuf {
            ops: [Op::Switch { pid: 0 }; BUF_CAP],
            len: 0,
            pos: 0,
        }
    }
}

impl OpBuf {
    /// Appends an op (panics in debug builds if the buffer is full: a generator bug).
    #[inline]
    pub fn push(&mut self, op: Op) {
        debug_assert!(usize::from(self.len) < BUF_CAP, "OpBuf overflow");
        self.ops[usize::from(self.len)] = op;
        self.len += 1;
    }
    /// Appends an access.
    #[inline]
    pub fn access(&mut self, gva: Gva, kind: AccessKind, instrs: u32) {
        self.push(Op::Access {
            gva,
            kind,
            instrs,
            dep: false,
        });
    }
    /// Appends a load whose address comes from the previous load's data (pointer chasing).
    #[inline]
    pub fn load_dep(&mut self, gva: Gva, instrs: u32) {
        self.push(Op::Access {
            gva,
            kind: AccessKind::Load,
            instrs,
            dep: true,
        });
    }
    /// Appends a load.
    #[inline]
    pub fn load(&mut self, gva: Gva, instrs: u32) {
        self.access(gva, AccessKind::Load, instrs);
    }
    /// Appends a store.
    #[inline]
    pub fn store(&mut self, gva: Gva, instrs: u32) {
        self.access(gva, AccessKind::Store, instrs);
    }
    /// Appends an instruction fetch at `CODE_BASE + offset`.
    #[inline]
    pub fn fetch(&mut self, code_offset: u64, instrs: u32) {
        debug_assert!(code_offset < CODE_LEN);
        self.access(
            Gva(CODE_BASE.raw() + code_offset),
            AccessKind::Fetch,
            instrs,
        );
    }
    /// Free slots left.
    #[inline]
    pub fn room(&self) -> usize {
        BUF_CAP - usize::from(self.len)
    }
    /// Takes the next buffered op, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<Op> {
        if self.pos < self.len {
            let op = self.ops[usize::from(self.pos)];
            self.pos += 1;
            Some(op)
        } else {
            self.pos = 0;
            self.len = 0;
            None
        }
    }
}

/// `floor(r * n / 2^64)`: maps a uniform 64-bit value onto `[0, n)` without division
/// (Lemire's multiply-shift).
#[inline]
pub fn below(r: u64, n: u64) -> u64 {
    let wide = (u128::from(r) * u128::from(n)) >> 64;
    // The product of two u64 shifted right by 64 is < n, so it fits.
    u64::try_from(wide).unwrap_or(u64::MAX)
}

/// SplitMix64 finaliser: a fast, well-mixing 64-bit hash.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_len_rounding() {
        assert_eq!(data_len(0), 0);
        assert_eq!(data_len(4095), 0);
        assert_eq!(data_len(4096 + 17), 4096);
        assert_eq!(data_len(HUGE - 1), HUGE - PAGE);
        assert_eq!(data_len(3 * HUGE + 5), 3 * HUGE);
    }

    #[test]
    fn placement_is_aligned_and_disjoint() {
        let r = place_down(&[3 * HUGE, PAGE * 3, HUGE]);
        assert_eq!(r[0].start, Gva(0x7f00_0000_0000 - 3 * HUGE));
        // 3 pages take one 2 MiB slot below a 2 MiB guard gap.
        assert_eq!(r[1].start, Gva(r[0].start.raw() - HUGE - HUGE));
        assert_eq!(r[2].start, Gva(r[1].start.raw() - HUGE - HUGE));
        for x in &r {
            assert!(x.start.is_aligned(PageSize::Size2M));
        }
    }

    #[test]
    fn below_is_in_range() {
        assert_eq!(below(0, 10), 0);
        assert_eq!(below(u64::MAX, 10), 9);
        assert_eq!(below(1 << 63, 10), 5);
    }

    #[test]
    fn opbuf_fifo() {
        let mut b = OpBuf::default();
        b.load(Gva(8), 1);
        b.store(Gva(16), 0);
        assert_eq!(
            b.pop(),
            Some(Op::Access {
                gva: Gva(8),
                kind: AccessKind::Load,
                instrs: 1,
                dep: false
            })
        );
        assert_eq!(
            b.pop(),
            Some(Op::Access {
                gva: Gva(16),
                kind: AccessKind::Store,
                instrs: 0,
                dep: false
            })
        );
        assert_eq!(b.pop(), None);
        assert_eq!(b.room(), BUF_CAP);
    }
}
