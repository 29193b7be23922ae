//! The exported libc symbols, one file each. A hook enters the guard, runs the real call through
//! [`crate::record::call::traced`] and gives the caller exactly what the real call gave: the same
//! return value and, on failure, the same errno; on success errno is left as it was.

pub mod credentials;
pub mod dlopen;
pub mod malloc;
pub mod mmap;
pub mod mprotect;
pub mod mremap;
pub mod munmap;
pub mod pthread_create;
pub mod ptrace;
pub mod resolver;

use crate::os::syscall as sys;

/// Restores `saved` (errno at entry) on success, sets the kernel's error on failure; returns the
/// value libc's wrapper would have returned (`-1` / `MAP_FAILED` on failure).
pub(crate) fn finish(ret: isize, saved_errno: i32) -> usize {
    let (value, err) = sys::split(ret);
    sys::set_errno(if err != 0 { err } else { saved_errno });
    value
}
