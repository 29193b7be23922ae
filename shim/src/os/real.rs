//! The real functions behind the hooks that are not system calls (`pthread_create`, `dlopen`,
//! the resolver functions): the next definition in lookup order, found once with
//! `dlsym(RTLD_NEXT)` and cached. The constructor resolves the hot ones eagerly; a cache left
//! empty resolves on first use (dlsym never calls a hooked mmap: ld.so maps with its internal
//! mmap, so there is no dlsym -> mmap -> dlsym loop).

use core::ffi::CStr;
use core::sync::atomic::{AtomicUsize, Ordering::*};

/// The address of the next definition of `name`, cached in `cache`; 0 if there is none.
pub fn next(name: &CStr, cache: &AtomicUsize) -> usize {
    let p = cache.load(Acquire);
    if p != 0 {
        return p;
    }
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name only reads loader state.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    cache.store(f, Release);
    f
}

/// The next definition of `$name` as a function of type `$ty`, with its address (0: none, and
/// then the function must not be called).
macro_rules! real {
    ($name:literal, $ty:ty) => {{
        #[unsafe(link_section = ".data.vmshim_hot")]
        static CACHE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        let p = $crate::os::real::next(
            // SAFETY: the literal gets its NUL here and has none inside.
            unsafe { core::ffi::CStr::from_bytes_with_nul_unchecked(concat!($name, "\0").as_bytes()) },
            &CACHE,
        );
        // SAFETY: `p` is the address of the next `$name`, whose prototype is `$ty`; callers check
        // `p != 0` before calling.
        (p, unsafe { core::mem::transmute::<usize, $ty>(p.max(1)) })
    }};
}
pub(crate) use real;
