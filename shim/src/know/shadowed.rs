//! Libraries whose own definitions of the hooked functions come before the shim's in the
//! loader's lookup order (`LD_PRELOAD=libtcmalloc.so:libvmshim.so`: tcmalloc exports `mmap`
//! and `munmap`), so that the program's calls reach them and never the shim. Nothing can bring
//! those calls back; what this module does is make the blind spot visible: at start-up it asks
//! the loader which definition a call would reach and writes a `Config` record with one
//! `shadowed.NAME=PATH` line per hooked function another library takes, which the report turns
//! into a warning. Runs once, from the start-up, with stack buffers of 2 KiB; it calls dlsym and
//! dladdr only (never dlopen: a sanitizer intercepts it and may hold its own lock then).

use crate::out::writer;
use vmshim_trace::record::config;

/// The hooked functions a program calls directly.
const HOOKED: [&core::ffi::CStr; 7] =
    [c"mmap", c"mmap64", c"munmap", c"mremap", c"mprotect", c"malloc", c"pthread_create"];

/// Writes the `shadowed.*` lines, if any function is taken by another library.
pub fn record() {
    // The crate's own tests export no hooks: every name would look taken.
    if cfg!(test) {
        return;
    }
    let mut text = [0u8; 1024];
    let mut n = 0;
    // Before libc set `environ`, a sanitizer runtime's early initialiser is running (it comes
    // first, as it must) and holds its locks: ask the loader nothing then.
    if !crate::config::environ_ready() {
        return;
    }
    // Which image a definition lies in, by its base address. (The address of the shim's own
    // exported `mmap`, taken here, would itself bind to the first definition in the global
    // scope: a local function names the shim's image.)
    let image_of = |addr: usize| -> (usize, *const core::ffi::c_char) {
        let mut info = empty_info();
        // SAFETY: dladdr fills `info` for an address and reads only loader state.
        if unsafe { libc::dladdr(addr as *const _, &mut info) } == 0 {
            return (0, core::ptr::null());
        }
        (info.dli_fbase as usize, info.dli_fname)
    };
    let (own_base, _) = image_of(record as *const () as usize);
    for name in HOOKED {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads loader state.
        let first = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
        if first == 0 {
            continue;
        }
        let (base, fname) = image_of(first);
        if base == own_base {
            continue;
        }
        let path: &[u8] = if fname.is_null() {
            b"?"
        } else {
            // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
            unsafe { core::ffi::CStr::from_ptr(fname) }.to_bytes()
        };
        for part in [b"shadowed.".as_slice(), name.to_bytes(), b"=", path, b"\n"] {
            let take = part.len().min(text.len() - n);
            text[n..n + take].copy_from_slice(&part[..take]);
            n += take;
        }
    }
    if n == 0 {
        return;
    }
    let mut buf = [0u8; 1024 + 64];
    if let Some(len) = config::encode(&mut buf, &text[..n]) {
        writer::append(&buf[..len]);
    }
}

fn empty_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: core::ptr::null(),
        dli_fbase: core::ptr::null_mut(),
        dli_sname: core::ptr::null(),
        dli_saddr: core::ptr::null_mut(),
    }
}
