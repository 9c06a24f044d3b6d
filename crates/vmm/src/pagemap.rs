//! Host-physical frames of a mapping, from `/proc/self/pagemap`.
//!
//! Source: Linux `Documentation/admin-guide/mm/pagemap.rst`: one little-endian 64-bit entry per
//! virtual 4 KiB page; bit 63 "page present", bits 0-54 the page frame number when present (zero
//! unless the reader has `CAP_SYS_ADMIN`), bit 62 "swapped". The entries of a mapping, read in
//! virtual order, give its frames; [`extents`] merges frames that follow each other into the
//! physically contiguous extents a Compromis hypervisor needs (one extent = one segment).
//!
//! Note: on a machine that is itself a VM (nested virtualization) these "host-physical" frames
//! are the guest-physical frames of that VM as the outer hypervisor gave them.

use compromis_hostmem::Extent;
use compromis_types::{Address, Hpa, PageSize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use thiserror::Error;

/// Bit 63: the page is present in RAM.
const PRESENT: u64 = 1 << 63;
/// Bit 62: the page is swapped out.
const SWAPPED: u64 = 1 << 62;
/// Bits 0-54: the page frame number.
const PFN_MASK: u64 = (1 << 55) - 1;

/// Pagemap errors.
#[derive(Debug, Error)]
pub enum PagemapError {
    /// The file cannot be opened or read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The input is not a whole number of 8-byte entries.
    #[error("pagemap input of {len} bytes is not a whole number of 8-byte entries")]
    Truncated {
        /// Bytes read.
        len: usize,
    },
    /// A page of the range is not present (not populated, or swapped out).
    #[error("page {index} of the mapping is not present in RAM (entry {entry:#018x})")]
    NotPresent {
        /// Index of the 4 KiB page in the mapping.
        index: usize,
        /// The raw entry.
        entry: u64,
    },
    /// Present pages read with frame number 0: the reader lacks `CAP_SYS_ADMIN`.
    #[error("pagemap hides frame numbers (run as root to see host-physical frames)")]
    Hidden,
}

/// The frame of one raw pagemap entry: `Some(pfn)` when present and not swapped.
pub fn frame_of(entry: u64) -> Option<u64> {
    (entry & PRESENT != 0 && entry & SWAPPED == 0).then_some(entry & PFN_MASK)
}

/// Decodes raw little-endian pagemap bytes into the frames of consecutive 4 KiB pages.
pub fn parse(bytes: &[u8]) -> Result<Vec<u64>, PagemapError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(PagemapError::Truncated { len: bytes.len() });
    }
    let mut frames = Vec::with_capacity(bytes.len() / 8);
    let mut all_zero = true;
    for (index, chunk) in bytes.chunks_exact(8).enumerate() {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(chunk);
        let entry = u64::from_le_bytes(raw);
        let pfn = frame_of(entry).ok_or(PagemapError::NotPresent { index, entry })?;
        all_zero &= pfn == 0;
        frames.push(pfn);
    }
    if all_zero && !frames.is_empty() {
        return Err(PagemapError::Hidden);
    }
    Ok(frames)
}

/// Physically contiguous extents of a mapping whose 4 KiB pages have `frames`, in virtual order:
/// a new extent starts wherever a frame does not follow its predecessor.
pub fn extents(frames: &[u64]) -> Vec<Extent> {
    let page = PageSize::Size4K.bytes();
    let mut out: Vec<Extent> = Vec::new();
    for &pfn in frames {
        let hpa = Hpa(pfn << PageSize::Size4K.shift());
        match out.last_mut() {
            Some(e) if e.start.checked_add(e.len) == Some(hpa) => e.len += page,
            _ => out.push(Extent {
                start: hpa,
                len: page,
            }),
        }
    }
    out
}

/// Reads the frames of `len` bytes of this process's memory at virtual address `addr` (both 4 KiB
/// aligned; every page must be populated).
pub fn read_self(addr: usize, len: usize) -> Result<Vec<u64>, PagemapError> {
    const PATH: &str = "/proc/self/pagemap";
    let io = |source| PagemapError::Io {
        path: PATH.to_owned(),
        source,
    };
    let file = File::open(PATH).map_err(io)?;
    let page = 4096usize;
    let mut bytes = vec![0u8; len / page * 8];
    let offset = (addr / page * 8) as u64;
    file.read_exact_at(&mut bytes, offset).map_err(io)?;
    parse(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(entries: &[u64]) -> Vec<u8> {
        entries.iter().flat_map(|e| e.to_le_bytes()).collect()
    }

    #[test]
    fn crafted_entries_decode() {
        // present with pfn 0x1234; present + soft-dirty (bit 55) + exclusive (bit 56) pfn 0x1235.
        let e = [PRESENT | 0x1234, PRESENT | (1 << 55) | (1 << 56) | 0x1235];
        assert_eq!(parse(&bytes(&e)).unwrap(), vec![0x1234, 0x1235]);
    }

    #[test]
    fn absent_swapped_truncated_and_hidden_are_errors() {
        assert!(matches!(
            parse(&bytes(&[PRESENT | 5, 0])),
            Err(PagemapError::NotPresent { index: 1, .. })
        ));
        assert!(matches!(
            parse(&bytes(&[PRESENT | SWAPPED | 5])),
            Err(PagemapError::NotPresent { index: 0, .. })
        ));
        assert!(matches!(
            parse(&[0u8; 12]),
            Err(PagemapError::Truncated { len: 12 })
        ));
        assert!(matches!(
            parse(&bytes(&[PRESENT, PRESENT])),
            Err(PagemapError::Hidden)
        ));
        assert_eq!(parse(&[]).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn extents_merge_consecutive_frames_only() {
        let ex = extents(&[10, 11, 12, 20, 21, 5]);
        let got: Vec<(u64, u64)> = ex.iter().map(|e| (e.start.raw(), e.len)).collect();
        assert_eq!(
            got,
            vec![(10 << 12, 3 << 12), (20 << 12, 2 << 12), (5 << 12, 1 << 12)]
        );
        // A 2 MiB huge page appears as 512 consecutive frames: one extent.
        let huge: Vec<u64> = (0x400..0x600).collect();
        assert_eq!(extents(&huge).len(), 1);
        assert!(extents(&[]).is_empty());
    }
}
