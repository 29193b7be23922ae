//! `dlopen`. The loader maps the image (and its dependencies) with its internal mmap; after the
//! real call the hook records every image that appeared, with the call stack that loaded it.

use crate::os::guard::Guard;
use crate::os::syscall as sys;
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::AtomicUsize;

type RealDlopen = unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void;
#[unsafe(link_section = ".data.vmshim_hot")]
static REAL: AtomicUsize = AtomicUsize::new(0);

/// Looks up the next `dlopen` (libc's) once; called from the constructor.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn resolve() -> usize {
    crate::os::real::next(c"dlopen", &REAL)
}

/// # Safety
/// As for dlopen(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void {
    let real = resolve();
    if real == 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: libc's dlopen, found by dlsym, with this prototype.
    let real: RealDlopen = unsafe { core::mem::transmute::<usize, RealDlopen>(real) };
    // Not guarded during the real call: the library's constructors may map memory or start
    // threads, and those are the program's own calls to record.
    // SAFETY: forwarding the caller's arguments unchanged.
    let handle = unsafe { real(file, mode) };
    if !handle.is_null()
        && let Some(g) = Guard::enter()
    {
        let saved = sys::errno();
        if !crate::os::ownstack::run(|| crate::record::call::new_modules(&g, 0)) {
            crate::out::writer::count_dropped();
        }
        sys::set_errno(saved);
    }
    handle
}
