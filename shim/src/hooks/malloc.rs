//! The malloc family: `malloc`, `free`, `calloc`, `realloc`, `memalign`, `posix_memalign`,
//! `aligned_alloc`, `valloc`, `pvalloc`, in one file because they share one job. Each forwards
//! to glibc's exported `__libc_*` entry point and then looks at the chunk it returned
//! ([`crate::know::arena`]) to see what glibc did with its internal mmap and sbrk:
//! - the first chunk a thread gets from an arena heap it was not using before: glibc created
//!   or attached that arena inside this call (`ArenaAttach`, with this call's stack);
//! - a chunk that is its own mapping (`MallocLarge`), and its free (`FreeLarge`);
//! - a main-arena chunk past the highest break seen so far (`BrkGrow`).
//!
//! A thread's first malloc-family call may be a `free` (Go's cgo thread entry only frees):
//! glibc attaches its arena in tcache_init, and no chunk shows it; after such a free the hook
//! probes once with an allocation too large for the tcache, which the thread's arena serves.
//! The same probe settles what a small chunk means: the tcache also hands out chunks this thread
//! freed for other threads' arenas, so a small chunk from an unfamiliar heap proves nothing.
//!
//! If another allocator (jemalloc, tcmalloc as a shared library) follows the shim in lookup
//! order, these hooks forward to it untouched and inspect nothing: its chunks have no glibc
//! header, and the target must keep the allocator it chose.
//!
//! The fast path (no event) is a thread-local read, one load of the chunk's size word and a
//! compare: it must stay that way, since every allocation pays for it.

use crate::know::arena::{
    Chunk, HEAP_MAX, IS_MMAPPED, NON_MAIN_ARENA, classify, heap_info, main_chunk_end, size_word,
};
use crate::os::guard::Guard;
use crate::os::syscall as sys;
use crate::os::tls::{self, Slot};
use crate::record::call;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering::*};
use libc::{c_int, size_t};
use vmshim_trace::CallKind;

unsafe extern "C" {
    fn __libc_malloc(size: size_t) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
    fn __libc_calloc(n: size_t, size: size_t) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: size_t) -> *mut c_void;
    fn __libc_memalign(align: size_t, size: size_t) -> *mut c_void;
    fn __libc_valloc(size: size_t) -> *mut c_void;
    fn __libc_pvalloc(size: size_t) -> *mut c_void;
}

/// The `via` argument of malloc events: an index into `vmshim_trace::MALLOC_FUNCTIONS`.
#[derive(Clone, Copy)]
enum Via {
    Malloc = 0,
    Free = 1,
    Calloc = 2,
    Realloc = 3,
    Memalign = 4,
    PosixMemalign = 5,
    AlignedAlloc = 6,
    Valloc = 7,
    Pvalloc = 8,
}

const UNKNOWN: u8 = 0;
const GLIBC: u8 = 1;
const FOREIGN: u8 = 2;
/// dlsym is running; a malloc it makes goes to glibc (only possible before the answer is known).
const RESOLVING: u8 = 3;
/// Whether the malloc that follows the shim is glibc's (then chunks can be read).
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_KIND: AtomicU8 = AtomicU8::new(UNKNOWN);
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_MALLOC: AtomicUsize = AtomicUsize::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_FREE: AtomicUsize = AtomicUsize::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_CALLOC: AtomicUsize = AtomicUsize::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_REALLOC: AtomicUsize = AtomicUsize::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_MEMALIGN: AtomicUsize = AtomicUsize::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_POSIX_MEMALIGN: AtomicUsize = AtomicUsize::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_ALIGNED_ALLOC: AtomicUsize = AtomicUsize::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_VALLOC: AtomicUsize = AtomicUsize::new(0);
#[unsafe(link_section = ".data.vmshim_hot")]
static NEXT_PVALLOC: AtomicUsize = AtomicUsize::new(0);

/// The highest program break a main-arena chunk has reached so far.
#[unsafe(link_section = ".data.vmshim_hot")]
static BRK_SEEN: AtomicUsize = AtomicUsize::new(0);

const MAIN_ARENA: usize = 1;

/// The heap this thread's last inspected chunk came from: 0 unknown, MAIN_ARENA, or a non-main
/// heap's base.
#[inline(always)]
fn seen_heap() -> usize {
    tls::get(Slot::SeenHeap)
}
/// Another arena's heap this thread's tcache last handed out (not news: no probe again).
#[inline(always)]
fn seen_foreign() -> usize {
    tls::get(Slot::SeenForeign)
}

/// Decides, once, whether the next malloc is glibc's. Called from the constructor; a hook that
/// runs earlier decides for itself.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn resolve() {
    if NEXT_KIND.compare_exchange(UNKNOWN, RESOLVING, AcqRel, Acquire).is_err() {
        return;
    }
    let m = crate::os::real::next(c"malloc", &NEXT_MALLOC);
    let glibc = m == 0 || m == __libc_malloc as *const () as usize;
    if !glibc {
        for (name, cache) in [
            (c"free", &NEXT_FREE),
            (c"calloc", &NEXT_CALLOC),
            (c"realloc", &NEXT_REALLOC),
            (c"memalign", &NEXT_MEMALIGN),
            (c"posix_memalign", &NEXT_POSIX_MEMALIGN),
            (c"aligned_alloc", &NEXT_ALIGNED_ALLOC),
            (c"valloc", &NEXT_VALLOC),
            (c"pvalloc", &NEXT_PVALLOC),
        ] {
            crate::os::real::next(name, cache);
        }
    }
    NEXT_KIND.store(if glibc { GLIBC } else { FOREIGN }, Release);
}

#[inline(always)]
fn foreign() -> bool {
    match NEXT_KIND.load(Relaxed) {
        GLIBC => false,
        FOREIGN => true,
        RESOLVING => false,
        _ => {
            resolve();
            NEXT_KIND.load(Acquire) == FOREIGN
        }
    }
}

/// The foreign allocator's function stored in `slot`.
///
/// # Safety
/// `F` is that function's exact type.
unsafe fn next_fn<F: Copy>(slot: &AtomicUsize) -> F {
    let p = slot.load(Relaxed);
    // SAFETY: the caller names the type; `p` came from dlsym for that very symbol.
    unsafe { core::mem::transmute_copy::<usize, F>(&p) }
}

/// Looks at a chunk just returned by `via`; records what it reveals. The fast path reads the
/// size word and compares without building a [`Chunk`]: a value kept for the slow path cost
/// two stores on every allocation.
#[inline(always)]
fn inspect(ptr: *mut c_void, request: usize, via: Via) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: glibc's malloc family just returned `ptr` (foreign allocators never get here);
    // its size word precedes it.
    let word = unsafe { size_word(ptr as usize) };
    if word & IS_MMAPPED == 0 {
        if word & NON_MAIN_ARENA != 0 {
            let heap = ptr as usize & !(HEAP_MAX - 1);
            if seen_heap() == heap || seen_foreign() == heap {
                return;
            }
        } else if seen_heap() == MAIN_ARENA && main_chunk_end(ptr as usize, word) <= BRK_SEEN.load(Relaxed) {
            return;
        }
    }
    inspect_slowly(ptr as usize, request, via);
}

#[cold]
#[inline(never)]
fn inspect_slowly(ptr: usize, request: usize, via: Via) {
    // On a shim stack: the caller's may be a small thread's, already deep in printf.
    // SAFETY: as in inspect(), which passes only such pointers.
    if !crate::os::ownstack::run(|| slow_path(unsafe { classify(ptr) }, ptr, request, via)) {
        crate::out::writer::count_dropped();
    }
}

/// Requests above this never come from the tcache (glibc's largest tcache chunk is 1032 bytes).
const TCACHE_MAX_REQUEST: usize = 1032;
/// A probe's size: past the tcache, below the mmap threshold, so the thread's own arena serves it.
const PROBE_SIZE: usize = 2 * TCACHE_MAX_REQUEST;

#[cold]
#[inline(never)]
fn slow_path(chunk: Chunk, ptr: usize, request: usize, via: Via) {
    let Some(g) = Guard::enter() else { return };
    let saved = sys::errno();
    match chunk {
        Chunk::Mapped { block, size } => {
            call::note(
                &g,
                CallKind::MallocLarge,
                [block as u64, size as u64, ptr as u64, request as u64, via as u64, 0],
            );
            // A thread's first call attaches its arena even when the chunk is mapped: glibc
            // attaches before it decides to mmap.
            if seen_heap() == 0
                && let Some(own) = probe()
            {
                note_arena(&g, own, via);
            }
        }
        Chunk::Heap { .. } | Chunk::Main { .. } => {
            // A small chunk may come from the tcache, which also holds chunks this thread freed
            // for other threads' arenas: only a chunk past the tcache shows the thread's own arena.
            let own = if request > TCACHE_MAX_REQUEST && matches!(via, Via::Malloc | Via::Calloc) {
                Some(chunk)
            } else if heap_key(chunk) == seen_foreign() {
                None
            } else {
                let probed = probe();
                if probed.is_some_and(|p| heap_key(p) != heap_key(chunk)) {
                    tls::set(Slot::SeenForeign, heap_key(chunk));
                }
                probed
            };
            if let Some(own) = own {
                note_arena(&g, own, via);
            }
            if let Chunk::Main { end } = chunk {
                note_brk(&g, end, via);
            }
        }
    }
    sys::set_errno(saved);
}

/// The SEEN_HEAP value for a chunk.
fn heap_key(c: Chunk) -> usize {
    match c {
        Chunk::Heap { heap, .. } => heap,
        Chunk::Main { .. } => MAIN_ARENA,
        Chunk::Mapped { .. } => 0,
    }
}

/// The chunk a fresh allocation from this thread's arena lands in (the probe is freed at once).
fn probe() -> Option<Chunk> {
    // SAFETY: a plain allocation from the thread's (already attached) arena, freed at once.
    unsafe {
        let q = __libc_malloc(PROBE_SIZE);
        if q.is_null() {
            return None;
        }
        let c = classify(q as usize);
        __libc_free(q);
        Some(c)
    }
}

/// Records that this thread now uses the arena of `own`, if that is news.
fn note_arena(g: &Guard, own: Chunk, via: Via) {
    let key = heap_key(own);
    if key == 0 || seen_heap() == key {
        return;
    }
    tls::set(Slot::SeenHeap, key);
    let args = match own {
        Chunk::Heap { heap } => {
            // SAFETY: `own` came from classify() of a chunk allocated just now, so its heap is live.
            let (arena, heap_size) = unsafe { heap_info(heap) };
            [heap as u64, heap_size as u64, arena as u64, via as u64, 0, 0]
        }
        _ => [0, 0, 0, via as u64, 0, 0],
    };
    call::note(g, CallKind::ArenaAttach, args);
}

/// Records main-arena growth past the highest break seen so far.
fn note_brk(g: &Guard, end: usize, via: Via) {
    let seen = BRK_SEEN.load(Relaxed);
    if end <= seen {
        return;
    }
    let now = sys::brk_now();
    if BRK_SEEN.compare_exchange(seen, now.max(end), AcqRel, Relaxed).is_ok() {
        // The first main-arena chunk (seen == 0) records the break as it stands: the heap up
        // to there is in the start-up map or was grown by this very call.
        call::note(g, CallKind::BrkGrow, [seen as u64, now as u64, via as u64, 0, 0, 0]);
    }
}

/// The mapping of a live chunk that is its own mapping, or None.
#[inline(always)]
fn mapped_chunk(ptr: *mut c_void) -> Option<(usize, usize)> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` is a live chunk the program is handing back to glibc.
    match unsafe { classify(ptr as usize) } {
        Chunk::Mapped { block, size } => Some((block, size)),
        _ => None,
    }
}

/// Records that the mapped chunk at `ptr` (`[block, block + size)`) is gone.
#[cold]
fn record_free_large(ptr: *mut c_void, (block, size): (usize, usize), via: Via) {
    if !crate::os::ownstack::run(|| record_free_large_here(ptr, (block, size), via)) {
        crate::out::writer::count_dropped();
    }
}

fn record_free_large_here(ptr: *mut c_void, (block, size): (usize, usize), via: Via) {
    if let Some(g) = Guard::enter() {
        let saved = sys::errno();
        call::note(&g, CallKind::FreeLarge, [block as u64, size as u64, ptr as u64, via as u64, 0, 0]);
        sys::set_errno(saved);
    }
}

/// After a thread's free of a heap chunk: if the thread has not yet shown its arena, glibc
/// attached one in this call (tcache_init); a probe allocation shows which. (A mapped
/// chunk's free returns before tcache_init, so it attaches nothing and is not probed.)
#[inline(always)]
#[unsafe(link_section = ".text.hot.vmshim")]
fn after_heap_free(ptr: *mut c_void) {
    if ptr.is_null() || seen_heap() != 0 {
        return;
    }
    probe_arena();
}

#[cold]
#[inline(never)]
fn probe_arena() {
    if !crate::os::ownstack::run(probe_arena_here) {
        crate::out::writer::count_dropped();
    }
}

fn probe_arena_here() {
    let Some(g) = Guard::enter() else { return };
    let saved = sys::errno();
    if let Some(own) = probe() {
        note_arena(&g, own, Via::Free);
    }
    sys::set_errno(saved);
}

/// # Safety
/// As for malloc(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
#[unsafe(link_section = ".text.hot.vmshim")]
pub unsafe extern "C" fn malloc(size: size_t) -> *mut c_void {
    if foreign() {
        // SAFETY: forwarding to the allocator the program linked, with its prototype.
        return unsafe { next_fn::<unsafe extern "C" fn(size_t) -> *mut c_void>(&NEXT_MALLOC)(size) };
    }
    // SAFETY: glibc's malloc.
    let p = unsafe { __libc_malloc(size) };
    inspect(p, size, Via::Malloc);
    p
}

/// # Safety
/// As for free(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
#[unsafe(link_section = ".text.hot.vmshim")]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    if foreign() {
        // SAFETY: as in malloc.
        return unsafe { next_fn::<unsafe extern "C" fn(*mut c_void)>(&NEXT_FREE)(ptr) };
    }
    let mapped = mapped_chunk(ptr);
    if let Some(m) = mapped {
        // Recorded before the call: the range may be reused by another thread at once.
        record_free_large(ptr, m, Via::Free);
    }
    // The common case, a thread whose arena is known, ends in a tail call: the hook adds no
    // frame of its own to the hottest path a program has.
    if mapped.is_some() || seen_heap() != 0 {
        // SAFETY: glibc's free of a pointer glibc gave out.
        return unsafe { __libc_free(ptr) };
    }
    // SAFETY: as above.
    unsafe { __libc_free(ptr) };
    after_heap_free(ptr);
}

/// # Safety
/// As for calloc(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
#[unsafe(link_section = ".text.hot.vmshim")]
pub unsafe extern "C" fn calloc(n: size_t, size: size_t) -> *mut c_void {
    if foreign() {
        // SAFETY: as in malloc.
        return unsafe {
            next_fn::<unsafe extern "C" fn(size_t, size_t) -> *mut c_void>(&NEXT_CALLOC)(n, size)
        };
    }
    // SAFETY: glibc's calloc.
    let p = unsafe { __libc_calloc(n, size) };
    inspect(p, n.saturating_mul(size), Via::Calloc);
    p
}

/// # Safety
/// As for realloc(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
#[unsafe(link_section = ".text.hot.vmshim")]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: size_t) -> *mut c_void {
    if foreign() {
        // SAFETY: as in malloc.
        return unsafe {
            next_fn::<unsafe extern "C" fn(*mut c_void, size_t) -> *mut c_void>(&NEXT_REALLOC)(ptr, size)
        };
    }
    let old = mapped_chunk(ptr);
    // SAFETY: glibc's realloc.
    let p = unsafe { __libc_realloc(ptr, size) };
    // A failed realloc leaves the old chunk as it was; otherwise a mapped old chunk is gone
    // (freed, copied out, or moved by glibc's internal mremap) and any new one is reported anew.
    if let Some(m) = old
        && !(p.is_null() && size != 0)
    {
        record_free_large(ptr, m, Via::Realloc);
    }
    if ptr.is_null() {
        // realloc(NULL, n) is malloc(n).
        inspect(p, size, Via::Realloc);
    } else if !p.is_null() {
        // Growing a chunk in place or within its own arena says nothing about this thread's
        // arena; only a new mapped chunk is news.
        // SAFETY: realloc just returned `p`.
        let chunk = unsafe { classify(p as usize) };
        if let Chunk::Mapped { .. } = chunk {
            slow_path(chunk, p as usize, size, Via::Realloc);
        }
    } else if size == 0 && old.is_none() {
        // realloc(p, 0) freed a heap chunk.
        after_heap_free(ptr);
    }
    p
}

/// # Safety
/// As for memalign(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memalign(align: size_t, size: size_t) -> *mut c_void {
    if foreign() {
        // SAFETY: as in malloc.
        return unsafe {
            next_fn::<unsafe extern "C" fn(size_t, size_t) -> *mut c_void>(&NEXT_MEMALIGN)(align, size)
        };
    }
    // SAFETY: glibc's memalign.
    let p = unsafe { __libc_memalign(align, size) };
    inspect(p, size, Via::Memalign);
    p
}

/// # Safety
/// As for aligned_alloc(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn aligned_alloc(align: size_t, size: size_t) -> *mut c_void {
    if foreign() {
        // SAFETY: as in malloc.
        return unsafe {
            next_fn::<unsafe extern "C" fn(size_t, size_t) -> *mut c_void>(&NEXT_ALIGNED_ALLOC)(align, size)
        };
    }
    // SAFETY: glibc 2.36's aligned_alloc is memalign under another name.
    let p = unsafe { __libc_memalign(align, size) };
    inspect(p, size, Via::AlignedAlloc);
    p
}

/// # Safety
/// As for posix_memalign(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: size_t, size: size_t) -> c_int {
    if foreign() {
        // SAFETY: as in malloc.
        return unsafe {
            next_fn::<unsafe extern "C" fn(*mut *mut c_void, size_t, size_t) -> c_int>(&NEXT_POSIX_MEMALIGN)(
                out, align, size,
            )
        };
    }
    // glibc's checks, in its order: a power of two that is a multiple of sizeof(void *).
    if !align.is_multiple_of(core::mem::size_of::<usize>())
        || !(align / core::mem::size_of::<usize>()).is_power_of_two()
    {
        return libc::EINVAL;
    }
    // SAFETY: glibc's memalign, which posix_memalign wraps.
    let p = unsafe { __libc_memalign(align, size) };
    if p.is_null() {
        // Like glibc's, the failure is the return value; errno is what the failed allocation
        // left (ENOMEM).
        return libc::ENOMEM;
    }
    // SAFETY: `out` is the caller's result slot.
    unsafe { *out = p };
    inspect(p, size, Via::PosixMemalign);
    0
}

/// # Safety
/// As for valloc(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn valloc(size: size_t) -> *mut c_void {
    if foreign() {
        // SAFETY: as in malloc.
        return unsafe { next_fn::<unsafe extern "C" fn(size_t) -> *mut c_void>(&NEXT_VALLOC)(size) };
    }
    // SAFETY: glibc's valloc.
    let p = unsafe { __libc_valloc(size) };
    inspect(p, size, Via::Valloc);
    p
}

/// # Safety
/// As for pvalloc(3).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn pvalloc(size: size_t) -> *mut c_void {
    if foreign() {
        // SAFETY: as in malloc.
        return unsafe { next_fn::<unsafe extern "C" fn(size_t) -> *mut c_void>(&NEXT_PVALLOC)(size) };
    }
    // SAFETY: glibc's pvalloc.
    let p = unsafe { __libc_pvalloc(size) };
    inspect(p, size, Via::Pvalloc);
    p
}
