//! `mremap`. Its C prototype is variadic (`new_address` is read only with MREMAP_FIXED). Rust
//! cannot define a C-variadic function on stable, so the hook takes five fixed arguments: on
//! the x86_64 and aarch64 calling conventions a variadic argument travels in the same register
//! as a fixed one, and, like glibc, the hook reads `new_address` only when MREMAP_FIXED is set.

use crate::os::guard::Guard;
use crate::os::ownstack::hook_entry;
use crate::os::syscall as sys;
use crate::record::call::{Order, traced};
use libc::{c_int, c_void, size_t};
use vmshim_trace::CallKind;

hook_entry!(
    "mremap",
    fn mremap_entry(o: *mut c_void, os: size_t, ns: size_t, f: c_int, na: *mut c_void) -> *mut c_void,
    mremap,
    mremap_bare
);

/// The hook, on a shim stack ([`crate::os::ownstack`]).
///
/// # Safety
/// As for mremap(2).
#[cfg_attr(all(not(test), not(target_arch = "x86_64")), unsafe(no_mangle))]
pub unsafe extern "C" fn mremap(
    old_address: *mut c_void,
    old_size: size_t,
    new_size: size_t,
    flags: c_int,
    new_address: *mut c_void,
) -> *mut c_void {
    crate::unwind::reader::address_space_shrinks();
    let saved = sys::errno();
    let new_address = if flags & libc::MREMAP_FIXED != 0 { new_address as usize } else { 0 };
    let real = || sys::mremap(old_address as usize, old_size, new_size, flags, new_address);
    let ret = match Guard::enter() {
        Some(g) => {
            let args =
                [old_address as u64, old_size as u64, new_size as u64, flags as u64, new_address as u64, 0];
            traced(&g, CallKind::Mremap, args, Order::Before, real)
        }
        None => real(),
    };
    super::finish(ret, saved) as *mut c_void
}

/// [`mremap`] when no shim stack is free: the real call, its record dropped.
///
/// # Safety
/// As for mremap(2).
#[cfg_attr(test, allow(dead_code))]
unsafe extern "C" fn mremap_bare(
    old_address: *mut c_void,
    old_size: size_t,
    new_size: size_t,
    flags: c_int,
    new_address: *mut c_void,
) -> *mut c_void {
    crate::unwind::reader::address_space_shrinks();
    let saved = sys::errno();
    let new_address = if flags & libc::MREMAP_FIXED != 0 { new_address as usize } else { 0 };
    crate::out::writer::count_dropped();
    super::finish(sys::mremap(old_address as usize, old_size, new_size, flags, new_address), saved)
        as *mut c_void
}
