//! `mprotect`. Changes permissions, not ownership: the report keeps a region's cause.

use crate::guard::Guard;
use crate::record::{Order, traced};
use crate::syscall as sys;
use libc::{c_int, c_void, size_t};
use vmshim_trace::CallKind;

/// # Safety
/// As for mprotect(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, length: size_t, prot: c_int) -> c_int {
    if prot & libc::PROT_READ == 0 {
        // Memory that stops being readable.
        crate::unwind::address_space_shrinks();
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
