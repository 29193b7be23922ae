//! `mprotect`. Changes permissions, not ownership: the report keeps a region's cause.

use crate::os::guard::Guard;
use crate::os::ownstack::hook_entry;
use crate::os::syscall as sys;
use crate::record::call::{Order, traced};
use libc::{c_int, c_void, size_t};
use vmshim_trace::CallKind;

hook_entry!(
    "mprotect",
    fn mprotect_entry(a: *mut c_void, l: size_t, p: c_int) -> c_int,
    mprotect,
    mprotect_bare
);

/// The hook, on a shim stack ([`crate::os::ownstack`]).
///
/// # Safety
/// As for mprotect(2).
#[cfg_attr(all(not(test), not(target_arch = "x86_64")), unsafe(no_mangle))]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, length: size_t, prot: c_int) -> c_int {
    if prot & libc::PROT_READ == 0 {
        // Memory that stops being readable.
        crate::unwind::reader::address_space_shrinks();
    }
    let saved = sys::errno();
    let real = || sys::mprotect(addr as usize, length, prot);
    let ret = match Guard::enter() {
        Some(g) => traced(
            &g,
            CallKind::Mprotect,
            [addr as u64, length as u64, prot as u64, 0, 0, 0],
            Order::After,
            real,
        ),
        None => real(),
    };
    super::finish(ret, saved) as c_int
}

/// [`mprotect`] when no shim stack is free: the real call, its record dropped.
///
/// # Safety
/// As for mprotect(2).
#[cfg_attr(test, allow(dead_code))]
unsafe extern "C" fn mprotect_bare(addr: *mut c_void, length: size_t, prot: c_int) -> c_int {
    if prot & libc::PROT_READ == 0 {
        crate::unwind::reader::address_space_shrinks();
    }
    let saved = sys::errno();
    crate::out::writer::count_dropped();
    super::finish(sys::mprotect(addr as usize, length, prot), saved) as c_int
}
