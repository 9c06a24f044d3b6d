//! Temporary paths to remove if the process is stopped by a signal.
//!
//! Writers that create a temporary file or folder next to their destination (renamed into place
//! on success) register it here while it exists; the command's signal handler calls
//! [`remove_registered`] before exiting, so an interrupted run leaves no `.compromis-*` file
//! behind. Normal drops remove the temporaries themselves and unregister them.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Records that `path` (a file or a folder) is temporary until [`unregister`]ed.
pub fn register(path: &Path) {
    TEMPS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(path.to_path_buf());
}

/// Forgets `path` (renamed into place, or removed by its owner).
pub fn unregister(path: &Path) {
    let mut t = TEMPS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(i) = t.iter().rposition(|p| p == path) {
        t.swap_remove(i);
    }
}

/// A registration that ends when dropped: keep it beside the temporary (after it in a struct's
/// fields, so the temporary is removed or renamed first).
#[derive(Debug)]
pub struct Registered(PathBuf);

impl Registered {
    /// Registers `path` until the returned value is dropped.
    pub fn new(path: &Path) -> Registered {
        register(path);
        Registered(path.to_path_buf())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        unregister(&self.0);
    }
}

/// Removes every registered path still there (files, and folders with their contents).
/// Returns how many were removed.
pub fn remove_registered() -> usize {
    let paths = std::mem::take(&mut *TEMPS.lock().unwrap_or_else(PoisonError::into_inner));
    let mut removed = 0;
    for p in paths {
        let gone = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).is_ok(),
            Ok(_) => std::fs::remove_file(&p).is_ok(),
            Err(_) => false,
        };
        removed += usize::from(gone);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_paths_are_removed_once() {
        let dir = std::env::temp_dir().join(format!("compromis-cleanup-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let f = dir.join("f.tmp");
        std::fs::write(&f, b"x").unwrap();
        let kept = dir.join("kept.tmp");
        std::fs::write(&kept, b"x").unwrap();
        register(&f);
        register(&dir.join("sub"));
        register(&kept);
        unregister(&kept);
        assert_eq!(remove_registered(), 2);
        assert!(!f.exists() && !dir.join("sub").exists() && kept.exists());
        assert_eq!(remove_registered(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
