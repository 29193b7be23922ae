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

/// The `shadowed.*` lines [`find`] made, for [`record`] (start-up's single initialiser writes
/// them, then reads them).
struct Found(core::cell::UnsafeCell<[u8; 1024]>);
// SAFETY: written by start-up's single initialiser in `find`, read by the same thread (or the
// one initialiser of a waiting image's first record, after the constructor finished) in `record`.
unsafe impl Sync for Found {}
static FOUND: Found = Found(core::cell::UnsafeCell::new([0; 1024]));
#[unsafe(link_section = ".data.vmshim_hot")]
static FOUND_LEN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Asks the loader which definitions the hooked functions' calls reach and keeps a line for each
/// that another library takes; true when there is one. Start-up only (it calls the loader).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn find() -> bool {
    // SAFETY: the single initialiser (see Found).
    let n = lines(unsafe { &mut *FOUND.0.get() });
    FOUND_LEN.store(n, core::sync::atomic::Ordering::Release);
    n > 0
}

/// Writes the lines [`find`] kept as a Config record, if there are any. Never inlined: its
/// buffer stays out of the callers' frames when there is nothing to write.
#[inline(never)]
pub fn record() {
    let n = FOUND_LEN.load(core::sync::atomic::Ordering::Acquire);
    if n == 0 {
        return;
    }
    // SAFETY: see Found.
    let text = unsafe { &(&*FOUND.0.get())[..n.min(1024)] };
    let mut buf = [0u8; 1024 + 64];
    if let Some(len) = config::encode(&mut buf, text) {
        writer::append(&buf[..len]);
    }
}

fn lines(text: &mut [u8; 1024]) -> usize {
    // The crate's own tests export no hooks: every name would look taken.
    if cfg!(test) {
        return 0;
    }
    let mut n = 0;
    // Before libc set `environ`, a sanitizer runtime's early initialiser is running (it comes
    // first, as it must) and holds its locks: ask the loader nothing then.
    if !crate::config::environ_ready() {
        return 0;
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
    // The shim's own definitions are told by its address range, which the start-up's scan of
    // the images learnt just before: dladdr searches the symbol table of the image it lands
    // in, eight searches at every start for the usual answer "ours" (issue 12). Without that
    // range (no scan found the shim), its base from dladdr, as before.
    let own_base = (!crate::unwind::walk::knows_self()).then(|| image_of(record as *const () as usize).0);
    for name in HOOKED {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads loader state.
        let first = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
        if first == 0 || crate::unwind::walk::in_self(first) {
            continue;
        }
        let (base, fname) = image_of(first);
        if own_base == Some(base) {
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
    n
}

fn empty_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: core::ptr::null(),
        dli_fbase: core::ptr::null_mut(),
        dli_sname: core::ptr::null(),
        dli_saddr: core::ptr::null_mut(),
    }
}
