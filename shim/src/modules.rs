//! Loaded ELF images: recorded once each, at start and whenever a watched call (dlopen, a
//! resolver call that pulls in NSS modules) may have loaded more. The loader maps images with
//! its internal mmap, so this is how the trace learns of run-time loads and who caused them.

use crate::guard::Guard;
use crate::{record, startup::find_build_id, syscall as sys, unwind, writer};
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use vmshim_trace::{CallKind, Encoder, Kind};

/// Spans `[lo, hi)` of the images already recorded.
const KNOWN_MAX: usize = 1024;
static KNOWN: [(AtomicU64, AtomicU64); KNOWN_MAX] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; KNOWN_MAX];
/// The executable (PF_X) part of each, by the same index.
static TEXT: [(AtomicU64, AtomicU64); KNOWN_MAX] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; KNOWN_MAX];
static KNOWN_LEN: AtomicUsize = AtomicUsize::new(0);
/// What a fork child needs to write each known image's record again without asking the loader
/// (whose lock another thread of the parent may have held at the fork, and no fork handler
/// resets): the load bias, where the build id lies in the image and its length, and the
/// loader's name string. Read back with [`sys::read_own_memory_partial`], never dereferenced:
/// an image the parent unloaded before the fork is gone.
static INFO: [[AtomicU64; 4]; KNOWN_MAX] = [const { [const { AtomicU64::new(0) }; 4] }; KNOWN_MAX];

fn known() -> &'static [(AtomicU64, AtomicU64)] {
    &KNOWN[..KNOWN_LEN.load(Acquire).min(KNOWN_MAX)]
}

fn is_known(lo: u64) -> bool {
    known().iter().any(|k| k.0.load(Relaxed) == lo)
}

/// Whether `addr` lies in a recorded image (code or data).
pub fn in_image(addr: u64) -> bool {
    known().iter().any(|(lo, hi)| (lo.load(Relaxed)..hi.load(Relaxed)).contains(&addr))
}

/// The span of the executable segment of the recorded image that holds `addr`.
pub fn text_of(addr: u64) -> Option<(u64, u64)> {
    TEXT[..known().len()]
        .iter()
        .map(|(lo, hi)| (lo.load(Relaxed), hi.load(Relaxed)))
        .find(|(lo, hi)| (*lo..*hi).contains(&addr))
}

/// Whether `addr` lies in a recorded image's executable segment (a plausible return address).
pub fn in_text(addr: u64) -> bool {
    TEXT[..known().len()].iter().any(|(lo, hi)| (lo.load(Relaxed)..hi.load(Relaxed)).contains(&addr))
}

fn remember(f: &Found) {
    let i = KNOWN_LEN.load(Acquire);
    if let (Some(slot), Some(text), Some(info)) = (KNOWN.get(i), TEXT.get(i), INFO.get(i)) {
        for (w, v) in info.iter().zip([f.base, f.build_id.0 as u64, f.build_id.1 as u64, f.name as u64]) {
            w.store(v, Relaxed);
        }
        text.0.store(f.text.0, Relaxed);
        text.1.store(f.text.1, Relaxed);
        slot.1.store(f.hi, Relaxed);
        slot.0.store(f.lo, Relaxed);
        KNOWN_LEN.store(i + 1, Release);
    }
}

/// What dl_iterate_phdr's callback found, kept until the loader's lock is released.
#[derive(Clone, Copy)]
struct Found {
    base: u64,
    lo: u64,
    hi: u64,
    /// The span of its executable segments.
    text: (u64, u64),
    build_id: (*const u8, usize),
    name: *const libc::c_char,
}

struct Scan {
    found: [Found; 64],
    n: usize,
}

unsafe extern "C" fn on_module(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: glibc passes a valid info whose program headers are mapped for the call's
    // duration; `data` is the Scan that record_new passed.
    let (info, scan) = unsafe { (&*info, &mut *(data as *mut Scan)) };
    let base = info.dlpi_addr;
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers of a loaded object.
    let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let mut text = (u64::MAX, 0u64);
    let mut build_id: &[u8] = &[];
    for ph in phdrs {
        if ph.p_type == libc::PT_LOAD {
            lo = lo.min(base + ph.p_vaddr);
            hi = hi.max(base + ph.p_vaddr + ph.p_memsz);
            if ph.p_flags & libc::PF_X != 0 {
                text = (text.0.min(base + ph.p_vaddr), text.1.max(base + ph.p_vaddr + ph.p_memsz));
            }
        } else if ph.p_type == libc::PT_NOTE && build_id.is_empty() {
            // SAFETY: a PT_NOTE segment lies inside a loaded PT_LOAD segment of this object.
            let notes =
                unsafe { core::slice::from_raw_parts((base + ph.p_vaddr) as *const u8, ph.p_memsz as usize) };
            build_id = find_build_id(notes);
        }
    }
    if lo >= hi || is_known(lo) || scan.n == scan.found.len() {
        return 0;
    }
    let me = on_module as *const () as u64;
    if (lo..hi).contains(&me) {
        unwind::set_self_range(lo as usize, hi as usize);
    }
    scan.found[scan.n] =
        Found { base, lo, hi, text, build_id: (build_id.as_ptr(), build_id.len()), name: info.dlpi_name };
    scan.n += 1;
    0
}

/// Records every loaded image not recorded yet. `via` (a guard and an index into
/// `vmshim_trace::LOADING_FUNCTIONS`) says which watched call loaded them: each new image then
/// also gets a ModuleLoad event with the current call stack.
pub fn record_new(via: Option<(&Guard, usize)>) {
    let empty = Found {
        base: 0,
        lo: 0,
        hi: 0,
        text: (0, 0),
        build_id: (core::ptr::null(), 0),
        name: core::ptr::null(),
    };
    let mut scan = Scan { found: [empty; 64], n: 0 };
    // SAFETY: dl_iterate_phdr calls on_module synchronously with the Scan passed here.
    unsafe { libc::dl_iterate_phdr(Some(on_module), &mut scan as *mut Scan as *mut c_void) };
    if scan.n > 0 {
        // A new image may sit where an unloaded one lay: its addresses' cached rules are stale.
        crate::cfi::invalidate();
    }
    for f in &scan.found[..scan.n] {
        remember(f);
        write_module(f);
        if let Some((g, via)) = via {
            record::note(g, CallKind::ModuleLoad, [f.base, f.lo, f.hi, via as u64, 0, 0]);
        }
    }
}

/// In a fork child, whose trace is new: writes a Module record for every image the parent
/// knew, from what [`INFO`] kept (the parent's records are in the parent's file).
pub fn record_known() {
    let mut build_id = [0u8; 64];
    let mut name = [0u8; 4096];
    for (i, (lo, hi)) in known().iter().enumerate() {
        let [base, bid, bid_len, name_at] = &INFO[i];
        let (base, bid, bid_len, name_at) =
            (base.load(Relaxed), bid.load(Relaxed), bid_len.load(Relaxed), name_at.load(Relaxed));
        let b = if bid == 0 {
            0
        } else {
            sys::read_own_memory_partial(bid as usize, &mut build_id[..(bid_len as usize).min(64)])
        };
        let n =
            if name_at == 0 { 0 } else { sys::read_own_memory_partial(name_at as usize, &mut name[..4095]) };
        let n = name[..n].iter().position(|&c| c == 0).unwrap_or(n);
        let f = Found {
            base,
            lo: lo.load(Relaxed),
            hi: hi.load(Relaxed),
            text: (0, 0),
            build_id: (build_id.as_ptr(), b),
            name: core::ptr::null(),
        };
        write_module_with(&f, &build_id[..b], &name[..n]);
    }
}

fn write_module(f: &Found) {
    // SAFETY: both point into a loaded image, which a dlclose could only remove after the
    // watched call returned to the program; dlpi_name is NUL-terminated (empty for the program).
    let (build_id, name) = unsafe {
        let b = if f.build_id.0.is_null() {
            &[][..]
        } else {
            core::slice::from_raw_parts(f.build_id.0, f.build_id.1)
        };
        let n = if f.name.is_null() { &[][..] } else { core::ffi::CStr::from_ptr(f.name).to_bytes() };
        (b, n)
    };
    write_module_with(f, build_id, name);
}

/// Writes the record of image `f` with its build id and loader name (empty for the program).
fn write_module_with(f: &Found, build_id: &[u8], name: &[u8]) {
    let mut exe = [0u8; 4096];
    let path = if name.is_empty() {
        let n = sys::readlink(b"/proc/self/exe\0", &mut exe).max(0) as usize;
        &exe[..n]
    } else {
        name
    };
    let mut buf = [0u8; 8192 + 256];
    let mut e = Encoder::new(&mut buf, Kind::Module);
    e.put_u64(f.base);
    e.put_u64(f.lo);
    e.put_u64(f.hi);
    e.put_str(build_id, 64);
    e.put_str(path, 8192);
    if let Some(len) = e.finish() {
        writer::append(&buf[..len]);
    }
}
