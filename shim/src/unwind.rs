//! Stack capture inside a hook: DWARF unwinding through C and glibc frames with libgcc's
//! `_Unwind_Backtrace` (which finds unwind tables with `_dl_find_object`: no lock, no malloc),
//! continued with frame pointers where a frame has no unwind information — Go code has no
//! `.eh_frame`, so a cgo call such as `x_cgo_mmap` unwinds by DWARF up to `runtime.asmcgocall`
//! and by frame pointers from there to `runtime.rt0_go` or `runtime.mstart`.
//!
//! Frame-pointer reads go through `process_vm_readv` on this process: a stale or garbage frame
//! pointer makes a read fail, never a SIGSEGV in the target. Frames inside the shim itself are
//! left out, so `frames[0]` is the return address into the hook's caller.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const URC_NO_REASON: c_int = 0;
const URC_END_OF_STACK: c_int = 5;

#[cfg(target_arch = "x86_64")]
const FP_REG: c_int = 6; // DWARF number of rbp
#[cfg(target_arch = "aarch64")]
const FP_REG: c_int = 29; // x29

unsafe extern "C" {
    fn _Unwind_Backtrace(cb: extern "C" fn(*mut c_void, *mut c_void) -> c_int, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
    fn _Unwind_GetGR(ctx: *mut c_void, reg: c_int) -> usize;
    fn _Unwind_GetCFA(ctx: *mut c_void) -> usize;
}

/// Absolute address range of the shim's own code, set once at start.
static SELF_LO: AtomicUsize = AtomicUsize::new(0);
static SELF_HI: AtomicUsize = AtomicUsize::new(0);

pub fn set_self_range(lo: usize, hi: usize) {
    SELF_LO.store(lo, Relaxed);
    SELF_HI.store(hi, Relaxed);
}

fn in_self(ip: usize) -> bool {
    ip >= SELF_LO.load(Relaxed) && ip < SELF_HI.load(Relaxed)
}

struct Walk<'a> {
    frames: &'a mut [u64],
    n: usize,
    started: bool,
    /// The frame pointer as restored in the last frame DWARF reached.
    last_fp: usize,
    /// What libgcc reports as the CFA in the last frame's context: the CFA of the frame it
    /// unwound from, i.e. the last frame's stack pointer above its call's return address, where
    /// a scan for its saved frame pointer starts.
    cfa: usize,
}

extern "C" fn on_frame(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `&mut Walk` that capture() passed to _Unwind_Backtrace, alive for the
    // whole walk; `ctx` is libgcc's context for the current frame.
    let (w, ip, fp) = unsafe { (&mut *(arg as *mut Walk), _Unwind_GetIP(ctx), _Unwind_GetGR(ctx, FP_REG)) };
    if ip == 0 {
        return URC_END_OF_STACK;
    }
    // SAFETY: as above.
    w.cfa = unsafe { _Unwind_GetCFA(ctx) };
    if !w.started && in_self(ip) {
        return URC_NO_REASON;
    }
    w.started = true;
    w.frames[w.n] = ip as u64;
    w.n += 1;
    w.last_fp = fp;
    if w.n == w.frames.len() { URC_END_OF_STACK } else { URC_NO_REASON }
}

/// Whether `fp` looks like a frame pointer: it points at a stack, not into a loaded image (a
/// register used for data often holds an image address), and its saved return address lies in
/// a loaded image's code.
fn plausible_frame(fp: usize) -> bool {
    let mut pair = [0u8; 16];
    fp != 0
        && fp.is_multiple_of(8)
        && !crate::modules::in_image(fp as u64)
        && crate::syscall::read_own_memory(fp, &mut pair)
        && crate::modules::in_text(u64::from_le_bytes(pair[8..].try_into().unwrap_or_default()))
}

/// A frame without unwind information that used the frame-pointer register for itself (a cgo
/// C wrapper compiled with -O2 and linked without .eh_frame, as Go's internal linker does)
/// leaves no chain to follow; it did save the caller's frame pointer in its own small frame.
/// Looks at the first words above `sp` for a value that is a plausible frame pointer.
fn scan_for_frame_pointer(sp: usize) -> usize {
    if sp == 0 {
        return 0;
    }
    let mut words = [0u8; 32 * 8];
    if !crate::syscall::read_own_memory(sp, &mut words) {
        return 0;
    }
    words
        .chunks(8)
        .map(|w| usize::from_le_bytes(w.try_into().unwrap_or_default()))
        .find(|&v| plausible_frame(v))
        .unwrap_or(0)
}

/// Fills `frames` with return addresses, innermost first; returns how many.
pub fn capture(frames: &mut [u64]) -> usize {
    if frames.is_empty() {
        return 0;
    }
    let mut w = Walk { frames, n: 0, started: false, last_fp: 0, cfa: 0 };
    // SAFETY: the callback only touches `w` through the pointer given here, which outlives the call.
    unsafe { _Unwind_Backtrace(on_frame, &mut w as *mut Walk as *mut c_void) };
    let mut n = w.n;
    let frames = w.frames;
    if n == 0 || n == frames.len() {
        return n;
    }
    // DWARF stopped: either at the true root (_start and clone3 zero the frame pointer) or at a
    // frame without unwind information. Follow the frame-pointer chain from there.
    let mut fp = w.last_fp;
    if !plausible_frame(fp) {
        fp = scan_for_frame_pointer(w.cfa);
    }
    let mut backwards = 0;
    while n < frames.len() && fp != 0 && fp.is_multiple_of(8) {
        let mut pair = [0u8; 16];
        if !crate::syscall::read_own_memory(fp, &mut pair) {
            break;
        }
        let next = usize::from_le_bytes(pair[..8].try_into().unwrap_or_default());
        let ret = u64::from_le_bytes(pair[8..].try_into().unwrap_or_default());
        if ret < 4096 {
            break;
        }
        frames[n] = ret;
        n += 1;
        // Stacks grow down, so callers' frames sit higher; a jump down is a stack switch (Go's
        // g0 and goroutine stacks). Allow a few, never a loop.
        if next <= fp {
            backwards += 1;
            if backwards > 4 {
                break;
            }
        }
        fp = next;
    }
    n
}
