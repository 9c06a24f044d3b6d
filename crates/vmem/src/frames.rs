//! The guest OS's physical frame allocator.
//!
//! Guest RAM is cut into 2 MiB blocks. A 2 MiB page takes a whole free block; 4 KiB frames are
//! carved from a current block. Two policies:
//! - `Contiguous` (a freshly booted guest): blocks in address order, frames in address order;
//! - `Scattered` (an aged guest): blocks in a seeded random order, and the frames of each block in
//!   a seeded random order, so consecutive virtual pages land on unrelated frames.
//!
//! Freed 4 KiB frames are reused first (LIFO); a freed 2 MiB page returns its block.

use compromis_types::GuestLayout;
use compromis_types::{Address, Gpa, PageSize};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How the guest hands out frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FramePolicy {
    /// Address order (freshly booted guest).
    Contiguous,
    /// Seeded random order (aged guest).
    Scattered,
}

impl std::str::FromStr for FramePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "contiguous" => Ok(FramePolicy::Contiguous),
            "scattered" => Ok(FramePolicy::Scattered),
            _ => Err(format!(
                "unknown frame policy '{s}': valid values are contiguous, scattered"
            )),
        }
    }
}

/// The allocator.
#[derive(Clone, Debug)]
pub struct GuestFrames {
    /// Free 2 MiB blocks, next to hand out at the end.
    blocks: Vec<Gpa>,
    /// Frames of the current block still to hand out, next at the end.
    pool: Vec<Gpa>,
    /// Freed 4 KiB frames.
    freed: Vec<Gpa>,
    policy: FramePolicy,
    rng: ChaCha8Rng,
    free_bytes: u64,
}

impl GuestFrames {
    /// An allocator over the RAM of `layout`.
    pub fn new(layout: &GuestLayout, policy: FramePolicy, seed: u64) -> GuestFrames {
        let mut blocks: Vec<Gpa> = layout
            .ram
            .iter()
            .flat_map(|r| {
                let first = r.start.align_up(PageSize::Size2M).unwrap_or(r.start).raw();
                let end = r.end().raw();
                (first..end)
                    .step_by(1 << 21)
                    .filter(move |b| b + (1 << 21) <= end)
                    .map(Gpa)
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6672_616d_6573);
        match policy {
            FramePolicy::Contiguous => blocks.reverse(),
            FramePolicy::Scattered => blocks.shuffle(&mut rng),
        }
        let free_bytes = blocks.len() as u64 * PageSize::Size2M.bytes();
        GuestFrames {
            blocks,
            pool: Vec::new(),
            freed: Vec::new(),
            policy,
            rng,
            free_bytes,
        }
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// A 4 KiB frame, or `None` when RAM is exhausted.
    pub fn alloc_4k(&mut self) -> Option<Gpa> {
        if let Some(f) = self.freed.pop().or_else(|| self.pool.pop()) {
            self.free_bytes -= PageSize::Size4K.bytes();
            return Some(f);
        }
        let block = self.blocks.pop()?;
        self.pool
            .extend((0..512u64).rev().map(|i| Gpa(block.raw() + (i << 12))));
        if self.policy == FramePolicy::Scattered {
            self.pool.shuffle(&mut self.rng);
        }
        self.alloc_4k()
    }

    /// A 2 MiB-aligned 2 MiB frame, or `None` when no free block is left.
    pub fn alloc_2m(&mut self) -> Option<Gpa> {
        let b = self.blocks.pop()?;
        self.free_bytes -= PageSize::Size2M.bytes();
        Some(b)
    }

    /// Returns a frame of `size`.
    pub fn free(&mut self, frame: Gpa, size: PageSize) {
        match size {
            PageSize::Size4K => self.freed.push(frame),
            _ => self.blocks.push(frame),
        }
        self.free_bytes += size.bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn frames_are_distinct_ram_and_aligned() {
        for policy in [FramePolicy::Contiguous, FramePolicy::Scattered] {
            let layout = GuestLayout::for_ram(16 << 20);
            let mut f = GuestFrames::new(&layout, policy, 7);
            let mut seen = BTreeSet::new();
            let big = f.alloc_2m().unwrap();
            assert!(big.is_aligned(PageSize::Size2M));
            for off in (0..(2 << 20)).step_by(4096) {
                seen.insert(big.raw() + off);
            }
            while let Some(g) = f.alloc_4k() {
                assert!(layout.is_ram(g) && g.is_aligned(PageSize::Size4K));
                assert!(seen.insert(g.raw()), "{g:?} handed out twice");
            }
            assert_eq!(seen.len() as u64 * 4096, 16 << 20);
            assert_eq!(f.free_bytes(), 0);
        }
    }

    #[test]
    fn contiguous_is_in_order_and_scattered_is_not() {
        let layout = GuestLayout::for_ram(64 << 20);
        let mut c = GuestFrames::new(&layout, FramePolicy::Contiguous, 1);
        let a: Vec<u64> = (0..600).map(|_| c.alloc_4k().unwrap().raw()).collect();
        assert!(a.windows(2).all(|w| w[1] == w[0] + 4096));
        let mut s = GuestFrames::new(&layout, FramePolicy::Scattered, 1);
        let b: Vec<u64> = (0..600).map(|_| s.alloc_4k().unwrap().raw()).collect();
        assert!(b.windows(2).filter(|w| w[1] == w[0] + 4096).count() < 100);
    }
}
