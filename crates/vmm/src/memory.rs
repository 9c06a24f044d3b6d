//! Memory the measured code runs over: the VM's guest RAM and the native baseline's buffer,
//! backed by 4 KiB pages, transparent huge pages, or hugetlbfs 2 MiB / 1 GiB pages.
//!
//! Both are `vm-memory` mappings ([`GuestMemoryMmap`]) so the VMM fills them through its checked
//! `Bytes` API; the raw host pointer is used only to register the guest RAM with KVM and to run
//! the native kernel.

use crate::hugepages::Reservation;
use crate::pagemap::{self, PagemapError};
use compromis_hostmem::Extent;
use compromis_types::PageSize;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// How host memory backs a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum HostBacking {
    /// 4 KiB pages (THP disabled on the range).
    #[serde(rename = "4k")]
    Page4K,
    /// Transparent huge pages (`madvise(MADV_HUGEPAGE)`; the kernel may still use 4 KiB pages).
    #[serde(rename = "thp")]
    Thp,
    /// hugetlbfs 2 MiB pages (reserved from the kernel's pool).
    #[serde(rename = "2m")]
    Huge2M,
    /// hugetlbfs 1 GiB pages (reserved from the kernel's pool).
    #[serde(rename = "1g")]
    Huge1G,
}

impl HostBacking {
    /// The values `--backing` accepts.
    pub const ALL: [HostBacking; 4] = [
        HostBacking::Page4K,
        HostBacking::Thp,
        HostBacking::Huge2M,
        HostBacking::Huge1G,
    ];

    /// Short name (`4k`, `thp`, `2m`, `1g`).
    pub fn name(self) -> &'static str {
        match self {
            HostBacking::Page4K => "4k",
            HostBacking::Thp => "thp",
            HostBacking::Huge2M => "2m",
            HostBacking::Huge1G => "1g",
        }
    }

    /// The page size the host maps with (the granularity sizes are rounded to).
    pub fn page(self) -> PageSize {
        match self {
            HostBacking::Page4K => PageSize::Size4K,
            HostBacking::Thp | HostBacking::Huge2M => PageSize::Size2M,
            HostBacking::Huge1G => PageSize::Size1G,
        }
    }
}

impl fmt::Display for HostBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HostBacking {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HostBacking::ALL
            .into_iter()
            .find(|b| b.name() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown backing '{s}': valid values are 4k, thp, 2m, 1g"))
    }
}

/// Why a range could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The backing is not available on this host (a note, not a failure of the run).
    #[error("{0}")]
    Unavailable(String),
    /// mmap or madvise failed.
    #[error("{what} failed")]
    Os {
        /// The call.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The host-physical frames could not be read.
    #[error(transparent)]
    Pagemap(#[from] PagemapError),
}

/// A populated memory range.
pub struct Ram {
    mem: GuestMemoryMmap,
    ptr: *mut u8,
    len: usize,
    backing: HostBacking,
    // Keeps the huge-page pool raised while the range is mapped; declared after `mem` so the
    // range is unmapped first.
    _reservation: Option<Reservation>,
}

impl fmt::Debug for Ram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ram")
            .field("len", &self.len)
            .field("backing", &self.backing)
            .finish()
    }
}

fn madvise(ptr: *mut u8, len: usize, advice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `ptr..ptr+len` is a mapping this module created and still owns; madvise does not
    // change its contents' validity for Rust (populate/THP hints only).
    let rc = unsafe { libc::madvise(ptr.cast(), len, advice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Ram {
    /// Maps and populates `len` bytes (a multiple of the backing's page) with `backing`.
    pub fn new(backing: HostBacking, len: u64) -> Result<Ram, MemoryError> {
        let page = backing.page().bytes();
        let len = usize::try_from(len.div_ceil(page) * page)
            .map_err(|_| MemoryError::Unavailable(format!("{len} bytes do not fit in memory")))?;
        let reservation = match backing {
            HostBacking::Huge2M | HostBacking::Huge1G => Some(
                Reservation::reserve(backing.page(), len as u64 / page)
                    .map_err(MemoryError::Unavailable)?,
            ),
            _ => None,
        };
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        match backing {
            HostBacking::Huge2M => flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
            HostBacking::Huge1G => flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_1GB,
            _ => flags |= libc::MAP_NORESERVE,
        }
        // THP needs 2 MiB-aligned virtual addresses: Linux aligns large anonymous mappings.
        let region = MmapRegion::build(None, len, libc::PROT_READ | libc::PROT_WRITE, flags)
            .map_err(|e| match backing {
                HostBacking::Huge2M | HostBacking::Huge1G => MemoryError::Unavailable(format!(
                    "mmap of {len} bytes of {} hugetlbfs pages failed: {e}",
                    backing.page().name()
                )),
                _ => MemoryError::Os {
                    what: "mmap",
                    source: std::io::Error::other(e.to_string()),
                },
            })?;
        let ptr = region.as_ptr();
        let os = |what| move |source| MemoryError::Os { what, source };
        match backing {
            HostBacking::Page4K => {
                madvise(ptr, len, libc::MADV_NOHUGEPAGE).map_err(os("madvise"))?
            }
            HostBacking::Thp => madvise(ptr, len, libc::MADV_HUGEPAGE).map_err(os("madvise"))?,
            _ => {}
        }
        madvise(ptr, len, libc::MADV_POPULATE_WRITE).map_err(|e| match backing {
            HostBacking::Huge2M | HostBacking::Huge1G => {
                MemoryError::Unavailable(format!("populating the hugetlbfs range failed: {e}"))
            }
            _ => MemoryError::Os {
                what: "madvise(MADV_POPULATE_WRITE)",
                source: e,
            },
        })?;
        let guest = GuestRegionMmap::new(region, GuestAddress(0)).ok_or_else(|| {
            MemoryError::Unavailable("the mapping does not fit the address space".into())
        })?;
        let mem = GuestMemoryMmap::from_regions(vec![guest])
            .map_err(|e| MemoryError::Unavailable(e.to_string()))?;
        Ok(Ram {
            mem,
            ptr,
            len,
            backing,
            _reservation: reservation,
        })
    }

    /// The memory, addressed from 0.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The host virtual address of byte 0.
    pub fn host_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the range is empty (never: a range has at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing.
    pub fn backing(&self) -> HostBacking {
        self.backing
    }

    /// The host-physical frames of every 4 KiB page, from pagemap.
    pub fn frames(&self) -> Result<Vec<u64>, MemoryError> {
        Ok(pagemap::read_self(self.ptr as usize, self.len)?)
    }

    /// The physically contiguous extents of the range, in virtual order.
    pub fn extents(&self) -> Result<Vec<Extent>, MemoryError> {
        Ok(pagemap::extents(&self.frames()?))
    }
}
