//! `mmap` and `mmap64` (the same function on 64-bit glibc). Go's runtime in a cgo binary calls
//! this through `x_cgo_mmap`, so its heap and arena reservations are seen here; glibc's own
//! mappings (thread stacks, malloc arenas) use its internal mmap and are not.

use crate::os::guard::Guard;
use crate::os::ownstack::hook_entry;
use crate::os::syscall as sys;
use crate::record::call::{Order, traced};
use libc::{c_int, c_void, off_t, size_t};
use vmshim_trace::CallKind;

hook_entry!(
    "mmap",
    fn mmap_entry(a: *mut c_void, l: size_t, p: c_int, f: c_int, d: c_int, o: off_t) -> *mut c_void,
    mmap,
    mmap_bare
);
hook_entry!(
    "mmap64",
    fn mmap64_entry(a: *mut c_void, l: size_t, p: c_int, f: c_int, d: c_int, o: off_t) -> *mut c_void,
    mmap,
    mmap_bare
);

/// The hook, on a shim stack ([`crate::os::ownstack`]).
///
/// # Safety
/// As for mmap(2): the caller owns the consequences of the mapping it asks for.
#[cfg_attr(all(not(test), not(target_arch = "x86_64")), unsafe(no_mangle))]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    length: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: off_t,
) -> *mut c_void {
    if flags & libc::MAP_FIXED != 0 {
        // A fixed mapping replaces whatever lay there.
        crate::unwind::reader::address_space_shrinks();
    }
    let saved = sys::errno();
    let real = || sys::mmap(addr as usize, length, prot, flags, fd, offset);
    let ret = match Guard::enter() {
        Some(g) => {
            let args =
                [addr as u64, length as u64, prot as u64, flags as u64, fd as i64 as u64, offset as u64];
            traced(&g, CallKind::Mmap, args, Order::After, real)
        }
        None => real(),
    };
    super::finish(ret, saved) as *mut c_void
}

/// [`mmap`] when no shim stack is free: the real call, its record dropped.
///
/// # Safety
/// As for [`mmap`].
#[cfg_attr(test, allow(dead_code))]
unsafe extern "C" fn mmap_bare(
    addr: *mut c_void,
    length: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: off_t,
) -> *mut c_void {
    if flags & libc::MAP_FIXED != 0 {
        crate::unwind::reader::address_space_shrinks();
    }
    let saved = sys::errno();
    crate::out::writer::count_dropped();
    super::finish(sys::mmap(addr as usize, length, prot, flags, fd, offset), saved) as *mut c_void
}

/// # Safety
/// As for [`mmap`].
#[cfg(not(target_arch = "x86_64"))]
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    length: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: off_t,
) -> *mut c_void {
    // SAFETY: the same contract as mmap, which this forwards to unchanged.
    unsafe { mmap(addr, length, prot, flags, fd, offset) }
}
