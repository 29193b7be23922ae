//! `munmap`. Recorded in the order it was called, before the range can be reused.

use crate::os::guard::Guard;
use crate::os::ownstack::hook_entry;
use crate::os::syscall as sys;
use crate::record::call::{Order, traced};
use libc::{c_int, c_void, size_t};
use vmshim_trace::CallKind;

hook_entry!("munmap", fn munmap_entry(a: *mut c_void, l: size_t) -> c_int, munmap, munmap_bare);

/// The hook, on a shim stack ([`crate::os::ownstack`]).
///
/// # Safety
/// As for munmap(2).
#[cfg_attr(all(not(test), not(target_arch = "x86_64")), unsafe(no_mangle))]
pub unsafe extern "C" fn munmap(addr: *mut c_void, length: size_t) -> c_int {
    crate::unwind::reader::address_space_shrinks();
    let saved = sys::errno();
    let real = || sys::munmap(addr as usize, length);
    let ret = match Guard::enter() {
        Some(g) => {
            traced(&g, CallKind::Munmap, [addr as u64, length as u64, 0, 0, 0, 0], Order::Before, real)
        }
        None => real(),
    };
    super::finish(ret, saved) as c_int
}

/// [`munmap`] when no shim stack is free: the real call, its record dropped.
///
/// # Safety
/// As for munmap(2).
#[cfg_attr(test, allow(dead_code))]
unsafe extern "C" fn munmap_bare(addr: *mut c_void, length: size_t) -> c_int {
    crate::unwind::reader::address_space_shrinks();
    let saved = sys::errno();
    crate::out::writer::count_dropped();
    super::finish(sys::munmap(addr as usize, length), saved) as c_int
}
