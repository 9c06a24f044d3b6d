//! The baseline: the kernel's machine code run in this process, over a [`Ram`] range laid out
//! like the guest's data region.

use crate::code::Params;
use std::time::{Duration, Instant};

/// Machine code mapped executable in this process.
pub struct Executable {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Executable {
    /// Maps `code` read+execute.
    pub fn new(code: &[u8]) -> std::io::Result<Executable> {
        let len = code.len().div_ceil(4096).max(1) * 4096;
        // SAFETY: an anonymous private mapping at an address the kernel chooses: no existing
        // memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let exe = Executable { ptr, len };
        // SAFETY: the mapping is `len >= code.len()` writable bytes that nothing else references.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), ptr.cast::<u8>(), code.len()) };
        // SAFETY: changes the protection of our own mapping only.
        if unsafe { libc::mprotect(ptr, len, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(exe)
    }

    /// Calls the code as `extern "C" fn(*mut Params)` and returns the parameters afterwards and
    /// the wall-clock time of the call.
    ///
    /// # Safety
    /// The code must be a kernel from [`crate::code::kernel`] and `params` must describe memory
    /// of this process that the kernel may read and write: `data` the start of a mapping holding
    /// the table or node pool, `aux` (gups) an index array of `count` in-range byte offsets, or
    /// (pointer-chase) a node offset whose chain of `count` successors stays in the pool.
    pub unsafe fn call(&self, mut params: Params) -> (Params, Duration) {
        // SAFETY: the mapping holds the kernel's code, a System V function of one pointer
        // argument that preserves callee-saved registers (it uses only rax, rcx, rdx, rsi, rdi,
        // r8-r11) and returns; the caller guarantees the memory it touches (see above).
        let f: extern "C" fn(*mut Params) = unsafe { std::mem::transmute(self.ptr) };
        let start = Instant::now();
        f(&mut params);
        (params, start.elapsed())
    }
}

impl Drop for Executable {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping this value owns; no reference to it outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
