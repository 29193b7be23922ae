//! Loaded ELF images: recorded once each, at start and whenever a watched call (dlopen, a
//! resolver call that pulls in NSS modules) may have loaded more. The loader maps images with
//! its internal mmap, so this is how the trace learns of run-time loads and who caused them.

use crate::os::syscall as sys;
use crate::out::writer;
use crate::unwind::{images, walk};
use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering::*};
use vmshim_trace::record::module::{self, ModuleRecord};

/// What a fork child needs to write each known image's record again without asking the loader
/// (whose lock another thread of the parent may have held at the fork, and no fork handler
/// resets), kept as the image's facts in the unwinder's table ([`images::facts`]): the load
/// bias, and where in [`NAMES`] its build id and loader name were copied (offset, build-id
/// length, name length). Copies, not the loader's strings: an image the parent unloaded before
/// the fork is gone, and reading it safely cost a system call each.
const NAMES_BYTES: usize = 64 << 10;
struct Names(core::cell::UnsafeCell<[u8; NAMES_BYTES]>);
// SAFETY: each copy's bytes are reserved by one fetch_add on NAMES_LEN and written once, by the
// thread that reserved them, before the facts that point at them are published (Release
// in images::publish); readers read only entries of published images (Acquire).
unsafe impl Sync for Names {}
static NAMES: Names = Names(core::cell::UnsafeCell::new([0; NAMES_BYTES]));
#[unsafe(link_section = ".data.vmshim_hot")]
static NAMES_LEN: AtomicUsize = AtomicUsize::new(0);

/// Copies `build_id` then `name` into NAMES; (offset, build-id length, name length), or lengths
/// of 0 when the copy does not fit (the image is then written without them in a fork child).
fn keep_names(build_id: &[u8], name: &[u8]) -> (u64, u64, u64) {
    let (b, n) = (build_id.len().min(64), name.len().min(4096));
    let at = NAMES_LEN.fetch_add(b + n, Relaxed);
    if at + b + n > NAMES_BYTES {
        return (0, 0, 0);
    }
    // SAFETY: `at..at + b + n` was reserved above for this copy alone (see Names).
    let dst = unsafe { &mut (&mut *NAMES.0.get())[at..at + b + n] };
    dst[..b].copy_from_slice(&build_id[..b]);
    dst[b..].copy_from_slice(&name[..n]);
    (at as u64, b as u64, n as u64)
}

#[unsafe(link_section = ".text.hot.vmshim")]
fn remember(f: &Found) {
    let Some(i) = images::next_index() else { return };
    if let Some(info) = images::facts(i) {
        let (build_id, name) = f.strings();
        let (at, b, n) = keep_names(build_id, name);
        for (w, v) in info.iter().zip([f.base, at, b, n]) {
            w.store(v, Relaxed);
        }
        images::publish(i, f.lo, f.hi, f.text);
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

#[unsafe(link_section = ".text.hot.vmshim")]
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
    if lo >= hi || images::is_known(lo) || scan.n == scan.found.len() {
        return 0;
    }
    let me = on_module as *const () as u64;
    if (lo..hi).contains(&me) {
        walk::set_self_range(lo as usize, hi as usize);
    }
    scan.found[scan.n] =
        Found { base, lo, hi, text, build_id: (build_id.as_ptr(), build_id.len()), name: info.dlpi_name };
    scan.n += 1;
    0
}

/// Records every loaded image not recorded yet, and calls `loaded(base, lo, hi)` after each
/// one's Module record: a watched call's hook (dlopen, a resolver call that pulls in NSS
/// modules) records there which call loaded it, through the recording layer above.
pub fn record_new(mut loaded: impl FnMut(u64, u64, u64)) {
    let scan = list_new();
    for f in &scan.found[..scan.n] {
        remember(f);
        write_module(f);
        loaded(f.base, f.lo, f.hi);
    }
}

/// Learns the loaded images (for the unwinder, and for [`record_known`]) without writing their
/// records: start-up, whose Module records may wait for the first recorded call, asks the
/// loader here, in the constructor, and never later from a hook (which may run in a signal
/// handler that interrupted the loader).
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn scan() {
    let scan = list_new();
    for f in &scan.found[..scan.n] {
        remember(f);
    }
}

/// The loaded images not known yet, from the loader.
#[unsafe(link_section = ".text.hot.vmshim")]
fn list_new() -> Scan {
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
        crate::unwind::cfi::invalidate();
    }
    scan
}

/// Writes a Module record for every image known, from the facts kept: in a fork child, whose
/// trace is new, the images the parent knew (the parent's records are in the parent's file);
/// in an image whose start-up deferred them, the images [`scan`] found.
pub fn record_known() {
    // SAFETY: the entries of published images were written before they were (see Names).
    let names = unsafe { &*NAMES.0.get() };
    for image in images::spans() {
        let [base, at, b, n] = image.facts.each_ref().map(|w| w.load(Relaxed) as usize);
        let Some(copy) = names.get(at..at + b + n) else { continue };
        let f = Found {
            base: base as u64,
            lo: image.lo.load(Relaxed),
            hi: image.hi.load(Relaxed),
            text: (0, 0),
            build_id: (core::ptr::null(), 0),
            name: core::ptr::null(),
        };
        write_module_with(&f, &copy[..b], &copy[b..]);
    }
}

fn write_module(f: &Found) {
    let (build_id, name) = f.strings();
    write_module_with(f, build_id, name);
}

impl Found {
    /// The build id and the loader's name (empty for the program).
    fn strings(&self) -> (&[u8], &[u8]) {
        // SAFETY: both point into a loaded image, which a dlclose could only remove after the
        // watched call returned to the program; dlpi_name is NUL-terminated.
        unsafe {
            let b = if self.build_id.0.is_null() {
                &[][..]
            } else {
                core::slice::from_raw_parts(self.build_id.0, self.build_id.1)
            };
            let n =
                if self.name.is_null() { &[][..] } else { core::ffi::CStr::from_ptr(self.name).to_bytes() };
            (b, n)
        }
    }
}

/// Writes the record of image `f` with its build id and loader name (empty for the program).
fn write_module_with(f: &Found, build_id: &[u8], name: &[u8]) {
    let mut exe = [0u8; 4096];
    let path = if name.is_empty() {
        let n = exe_path(&mut exe);
        &exe[..n]
    } else {
        name
    };
    let mut buf = [0u8; 8192 + 256];
    let m = ModuleRecord { base: f.base, lo: f.lo, hi: f.hi, build_id, path };
    if let Some(len) = module::encode(&mut buf, &m) {
        writer::append(&buf[..len]);
    }
}

/// The executable's path as start-up read it ([`keep_exe_path`]), for its Module record (one
/// readlink less) and a fork child's Start record. Kept here, with the images, so that
/// start-up (which reads it) and this module (which names the program's image by it) do not
/// call each other.
struct ExePath(UnsafeCell<[u8; 4096]>);
// SAFETY: written by start-up's single initialiser (keep_exe_path) before EXE_LEN is published
// (Release), read after an Acquire load; a fork child rewrites it single-threaded.
unsafe impl Sync for ExePath {}
static EXE: ExePath = ExePath(UnsafeCell::new([0; 4096]));
#[unsafe(link_section = ".data.vmshim_hot")]
static EXE_LEN: AtomicUsize = AtomicUsize::new(0);

/// Keeps `path` as the executable's path. Only start-up's single initialiser calls this.
pub fn keep_exe_path(path: &[u8]) {
    let n = path.len().min(4096);
    // SAFETY: the single initialiser (see ExePath).
    unsafe { (&mut *EXE.0.get())[..n].copy_from_slice(&path[..n]) };
    EXE_LEN.store(n, Release);
}

/// Copies the path [`keep_exe_path`] kept into `buf`; its length, 0 when none was kept.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn kept_exe_path(buf: &mut [u8]) -> usize {
    let n = EXE_LEN.load(Acquire).min(4096).min(buf.len());
    if n > 0 {
        // SAFETY: EXE[..n] was written before EXE_LEN was published (see ExePath).
        buf[..n].copy_from_slice(unsafe { &(&*EXE.0.get())[..n] });
    }
    n
}

/// The executable's path (`/proc/self/exe`), as read at start-up if it was.
pub fn exe_path(buf: &mut [u8]) -> usize {
    match kept_exe_path(buf) {
        0 => sys::readlink(b"/proc/self/exe\0", buf).max(0) as usize,
        n => n,
    }
}

/// The NT_GNU_BUILD_ID descriptor in a run of ELF notes, or an empty slice.
pub fn find_build_id(mut notes: &[u8]) -> &[u8] {
    let word = |b: &[u8], i: usize| {
        b.get(i..i + 4).map(|w| u32::from_le_bytes(w.try_into().unwrap_or_default()) as usize)
    };
    while let (Some(namesz), Some(descsz), Some(kind)) = (word(notes, 0), word(notes, 4), word(notes, 8)) {
        let name_end = 12 + namesz.next_multiple_of(4);
        let desc_end = name_end + descsz.next_multiple_of(4);
        if desc_end > notes.len() {
            break;
        }
        if kind == 3 && notes.get(12..12 + namesz) == Some(b"GNU\0") {
            return &notes[name_end..name_end + descsz];
        }
        notes = &notes[desc_end..];
    }
    &[]
}
