//! Huge-page reservations for hugetlbfs backings, released when dropped, on error and (through
//! [`restore_all`], called from a Ctrl-C handler) on interruption.
//!
//! The kernel keeps a pool per huge-page size (`/proc/sys/vm/nr_hugepages` for 2 MiB,
//! `/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages` for 1 GiB). A reservation raises
//! the pool by what the run needs, and at the end lowers it by what it added, which restores the
//! previous value when it ran alone and stays right when two runs (e.g. parallel tests) overlap.
//! Lowering the pool while our pages are still mapped is safe: the kernel turns the excess into
//! surplus pages and frees them when they are unmapped.

use compromis_types::PageSize;
use std::sync::Mutex;

/// Pages added to pools and not yet given back: (path, pages). Shared with the Ctrl-C path.
static SAVED: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// The sysfs/procfs file holding the pool size of `page`.
pub fn pool_path(page: PageSize) -> Option<&'static str> {
    match page {
        PageSize::Size4K => None,
        PageSize::Size2M => Some("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
        PageSize::Size1G => Some("/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"),
    }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Free pages in the pool of `page`.
pub fn free_pages(page: PageSize) -> Option<u64> {
    let dir = pool_path(page)?.trim_end_matches("/nr_hugepages");
    read_u64(&format!("{dir}/free_hugepages"))
}

/// `MemAvailable` of `/proc/meminfo` in bytes (0 when unreadable).
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// A raised huge-page pool; dropping it gives back the pages it added.
#[derive(Debug)]
pub struct Reservation {
    path: &'static str,
    added: u64,
}

/// Lowers the pool at `path` by `added` pages.
fn give_back(path: &str, added: u64) {
    if added > 0
        && let Some(now) = read_u64(path)
    {
        let _ = std::fs::write(path, now.saturating_sub(added).to_string());
    }
}

impl Reservation {
    /// Makes at least `pages` free pages of size `page` available. Returns the reservation, or a
    /// note saying why it is impossible (the pool is restored before returning).
    pub fn reserve(page: PageSize, pages: u64) -> Result<Reservation, String> {
        let path = pool_path(page).ok_or_else(|| "4 KiB pages need no reservation".to_owned())?;
        let previous = read_u64(path).ok_or_else(|| format!("{path} is not readable"))?;
        let free = free_pages(page).unwrap_or(0);
        if free >= pages {
            return Ok(Reservation { path, added: 0 });
        }
        let want = previous + (pages - free);
        // Never ask the kernel for more than the memory available now: it would take every
        // huge page it can find (squeezing other processes) before failing.
        let need = (pages - free).saturating_mul(page.bytes());
        let available = mem_available();
        if need > available {
            return Err(format!(
                "{pages} {} pages need {} MiB more of huge pages, but only {} MiB of memory is available",
                page.name(),
                need >> 20,
                available >> 20
            ));
        }
        let added = want - previous;
        if let Ok(mut s) = SAVED.lock() {
            s.push((path.to_owned(), added));
        }
        let r = Reservation { path, added };
        std::fs::write(path, want.to_string())
            .map_err(|e| format!("cannot raise {path} to {want}: {e}"))?;
        let got = free_pages(page).unwrap_or(0);
        if got < pages {
            // `r` is dropped here and restores the pool.
            return Err(format!(
                "the kernel found {got} free {} pages of the {pages} needed (physical memory too fragmented or too small)",
                page.name()
            ));
        }
        Ok(r)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut s) = SAVED.lock()
            && let Some(i) = s
                .iter()
                .position(|(p, a)| p == self.path && *a == self.added)
        {
            s.remove(i);
            give_back(self.path, self.added);
        }
    }
}

/// Gives back every page this process added to the pools (for a signal handler; idempotent).
pub fn restore_all() {
    if let Ok(mut s) = SAVED.lock() {
        for (path, added) in s.drain(..) {
            give_back(&path, added);
        }
    }
}
