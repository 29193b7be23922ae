//! `pthread_create`. glibc maps thread stacks with its internal mmap and reuses cached stacks,
//! so the mmap hook never sees them; instead the new thread reports where it runs. The hook
//! records the call with the creator's stack, then starts the thread in [`trampoline`], which
//! writes a ThreadStart record (its tid, an address on its stack, its creator) before calling
//! the program's start routine. The creator's data crosses over in a fixed pool of slots: no
//! malloc anywhere, in particular none in the new thread (that alone would create a 64 MiB arena).

use crate::os::guard::Guard;
use crate::os::ownstack::hook_entry;
use crate::record::call::{Order, traced};
use crate::{os::syscall as sys, out::writer, unwind::walk};
use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use libc::{c_int, pthread_attr_t, pthread_t};
use vmshim_trace::CallKind;
use vmshim_trace::record::thread_start::{self, ThreadStartRecord};

type StartRoutine = extern "C-unwind" fn(*mut c_void) -> *mut c_void;
type RealCreate =
    unsafe extern "C" fn(*mut pthread_t, *const pthread_attr_t, StartRoutine, *mut c_void) -> c_int;

#[unsafe(link_section = ".data.vmshim_hot")]
static REAL: AtomicUsize = AtomicUsize::new(0);

/// Looks up the next `pthread_create` (libc's) once; called from the constructor.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn resolve() -> usize {
    crate::os::real::next(c"pthread_create", &REAL)
}

const SLOTS: usize = 256;
const SLOT_FRAMES: usize = 64;
const FREE: u32 = 0;
const TAKEN: u32 = 1;

/// What the creator hands to its new thread.
struct Handoff {
    state: AtomicU32,
    start: AtomicUsize,
    arg: AtomicUsize,
    creator: AtomicU32,
    stack_size: AtomicU64,
    guard_size: AtomicU64,
    nframes: AtomicU32,
    frames: [AtomicU64; SLOT_FRAMES],
}

static POOL: [Handoff; SLOTS] = [const {
    Handoff {
        state: AtomicU32::new(FREE),
        start: AtomicUsize::new(0),
        arg: AtomicUsize::new(0),
        creator: AtomicU32::new(0),
        stack_size: AtomicU64::new(0),
        guard_size: AtomicU64::new(0),
        nframes: AtomicU32::new(0),
        frames: [const { AtomicU64::new(0) }; SLOT_FRAMES],
    }
}; SLOTS];

fn take_slot() -> Option<usize> {
    let hint = sys::gettid() as usize % SLOTS;
    (0..SLOTS)
        .map(|i| (hint + i) % SLOTS)
        .find(|&i| POOL[i].state.compare_exchange(FREE, TAKEN, Acquire, Relaxed).is_ok())
}

hook_entry!(
    "pthread_create",
    fn pthread_create_entry(t: *mut pthread_t, a: *const pthread_attr_t, s: StartRoutine, g: *mut c_void) -> c_int,
    pthread_create,
    pthread_create_bare
);

/// The hook, on a shim stack ([`crate::os::ownstack`]): glibc's pthread_create runs there too.
///
/// # Safety
/// As for pthread_create(3).
#[cfg_attr(all(not(test), not(target_arch = "x86_64")), unsafe(no_mangle))]
pub unsafe extern "C" fn pthread_create(
    thread: *mut pthread_t,
    attr: *const pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let saved = sys::errno();
    let real = resolve();
    if real == 0 {
        return libc::EAGAIN;
    }
    // SAFETY: `real` is libc's pthread_create, found by dlsym, with this exact prototype.
    let real: RealCreate = unsafe { core::mem::transmute::<usize, RealCreate>(real) };
    let Some(g) = Guard::enter() else {
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { real(thread, attr, start, arg) };
    };
    crate::record::start::ensure_started();
    let (stack_size, guard_size) = attr_sizes(attr);
    let slot = if writer::is_ready() { take_slot() } else { None };
    let args = [thread as u64, attr as u64, start as usize as u64, arg as u64, stack_size, guard_size];
    let ret = traced(&g, CallKind::PthreadCreate, args, Order::After, || match slot {
        Some(i) => {
            let h = &POOL[i];
            h.start.store(start as usize, Relaxed);
            h.arg.store(arg as usize, Relaxed);
            h.creator.store(sys::gettid(), Relaxed);
            h.stack_size.store(stack_size, Relaxed);
            h.guard_size.store(guard_size, Relaxed);
            let mut frames = [0u64; SLOT_FRAMES];
            let n = walk::capture(&mut frames[..crate::record::start::depth().min(SLOT_FRAMES)]);
            for (dst, &f) in h.frames.iter().zip(&frames[..n]) {
                dst.store(f, Relaxed);
            }
            h.nframes.store(n as u32, Release);
            // SAFETY: the trampoline takes ownership of slot `i` and calls `start(arg)`.
            let r = unsafe { real(thread, attr, trampoline_addr(), i as *mut c_void) };
            if r != 0 {
                h.state.store(FREE, Release);
            }
            r as isize
        }
        // SAFETY: no slot: start the thread untracked, exactly as asked.
        None => unsafe { real(thread, attr, start, arg) as isize },
    });
    sys::set_errno(saved);
    ret as c_int
}

/// [`pthread_create`] when no shim stack is free: the real call, untracked, its record dropped.
///
/// # Safety
/// As for pthread_create(3).
#[cfg_attr(test, allow(dead_code))]
unsafe extern "C" fn pthread_create_bare(
    thread: *mut pthread_t,
    attr: *const pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let real = resolve();
    if real == 0 {
        return libc::EAGAIN;
    }
    crate::out::writer::count_dropped();
    // SAFETY: as in pthread_create: libc's function, the caller's arguments unchanged.
    unsafe { core::mem::transmute::<usize, RealCreate>(real)(thread, attr, start, arg) }
}

/// Stack and guard sizes from the attribute, or (0, u64::MAX) for "glibc's defaults".
fn attr_sizes(attr: *const pthread_attr_t) -> (u64, u64) {
    if attr.is_null() {
        return (0, u64::MAX);
    }
    let (mut stack, mut guard) = (0usize, 0usize);
    // SAFETY: `attr` is the caller's initialised attribute; these getters only read it.
    unsafe {
        libc::pthread_attr_getstacksize(attr, &mut stack);
        libc::pthread_attr_getguardsize(attr, &mut guard);
    }
    (stack as u64, guard as u64)
}

// The new thread's first function. It calls [`thread_prep`] (record, free the slot) and then
// jumps to the program's start routine as a tail call, so no frame of the shim stays on the
// thread's stack: pthread_exit and cancellation unwind (forced unwinding) straight from the
// program's frames into glibc's start_thread, never through a Rust frame.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.vmshim_trampoline,\"ax\",@progbits",
    ".p2align 4",
    ".globl vmshim_thread_trampoline",
    ".hidden vmshim_thread_trampoline",
    "vmshim_thread_trampoline:",
    ".cfi_startproc",
    "sub rsp, 8",
    ".cfi_adjust_cfa_offset 8",
    "call {prep}",
    "add rsp, 8",
    ".cfi_adjust_cfa_offset -8",
    "mov rdi, rdx",
    "jmp rax",
    ".cfi_endproc",
    ".popsection",
    prep = sym thread_prep,
);
#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".pushsection .text.vmshim_trampoline,\"ax\",%progbits",
    ".p2align 4",
    ".globl vmshim_thread_trampoline",
    ".hidden vmshim_thread_trampoline",
    "vmshim_thread_trampoline:",
    ".cfi_startproc",
    "stp x29, x30, [sp, -16]!",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset 29, -16",
    ".cfi_offset 30, -8",
    "mov x29, sp",
    "bl {prep}",
    "mov x16, x0",
    "mov x0, x1",
    "ldp x29, x30, [sp], 16",
    ".cfi_def_cfa_offset 0",
    "br x16",
    ".cfi_endproc",
    ".popsection",
    prep = sym thread_prep,
);

unsafe extern "C" {
    #[link_name = "vmshim_thread_trampoline"]
    fn trampoline_symbol();
}

fn trampoline_addr() -> StartRoutine {
    // SAFETY: the assembly above has the start-routine ABI: one pointer argument (the slot),
    // and it ends by jumping to the program's routine, whose return value it returns.
    unsafe { core::mem::transmute::<unsafe extern "C" fn(), StartRoutine>(trampoline_symbol) }
}

/// The program's start routine and its argument, returned in two registers (rax:rdx, x0:x1).
#[repr(C)]
pub struct StartPair {
    start: usize,
    arg: usize,
}

/// Runs on the new thread before the program's start routine: records where the thread runs
/// and who created it, frees the slot, and hands back the routine to jump to.
extern "C" fn thread_prep(slot: *mut c_void) -> StartPair {
    let h = &POOL[slot as usize % SLOTS];
    let pair = StartPair { start: h.start.load(Relaxed), arg: h.arg.load(Relaxed) };
    // The new thread's stack may be small (PTHREAD_STACK_MIN): the record is built on a shim stack.
    let sp = &pair as *const StartPair as u64;
    if let Some(_g) = Guard::enter()
        && !crate::os::ownstack::run(|| write_thread_start(h, sp, pair.start))
    {
        crate::out::writer::count_dropped();
    }
    h.state.store(FREE, Release);
    pair
}

/// The ThreadStart record of the thread that runs on `sp`, from its handoff slot.
fn write_thread_start(h: &Handoff, sp: u64, start: usize) {
    {
        let mut buf = [0u8; thread_start::MAX_LEN];
        let mut frames = [0u64; SLOT_FRAMES];
        let n = (h.nframes.load(Acquire) as usize).min(SLOT_FRAMES);
        for (to, f) in frames.iter_mut().zip(&h.frames[..n]) {
            *to = f.load(Relaxed);
        }
        let t = ThreadStartRecord {
            tid: sys::gettid(),
            creator_tid: h.creator.load(Relaxed),
            time_ns: sys::monotonic_ns(),
            sp,
            stack_size: h.stack_size.load(Relaxed),
            guard_size: h.guard_size.load(Relaxed),
            start_routine: start as u64,
            creator_stack: &frames[..n],
        };
        if let Some(len) = thread_start::encode(&mut buf, &t) {
            writer::append(&buf[..len]);
        }
    }
}
