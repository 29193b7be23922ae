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
use core::ptr::null_mut;
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
    fn _Unwind_Find_FDE(pc: *mut c_void, bases: *mut DwarfBases) -> *const c_void;
}

/// libgcc's `struct dwarf_eh_bases`, filled by _Unwind_Find_FDE.
#[repr(C)]
struct DwarfBases {
    tbase: *mut c_void,
    dbase: *mut c_void,
    func: *mut c_void,
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

/// Bounds-checked reads of this process's memory for one stack walk. Each miss copies up to a
/// page-sized window starting at the address with one `process_vm_readv` (a short read stops at
/// the first unmapped page); frames that follow in the same window cost nothing. The window
/// lives only for one capture: the stacks being walked belong to the running thread and cannot
/// be unmapped under it meanwhile.
struct SafeReader {
    base: usize,
    len: usize,
    buf: [u8; 4096],
}

impl SafeReader {
    fn new() -> SafeReader {
        SafeReader { base: 0, len: 0, buf: [0; 4096] }
    }

    /// The two words at `addr`, or None if they are not mapped readable.
    fn pair(&mut self, addr: usize) -> Option<(usize, usize)> {
        let end = addr.checked_add(16)?;
        if !(addr >= self.base && end <= self.base + self.len) {
            let n = crate::syscall::read_own_memory_partial(addr, &mut self.buf);
            if n < 16 {
                self.len = 0;
                return None;
            }
            (self.base, self.len) = (addr, n);
        }
        let at = addr - self.base;
        let word = |i: usize| usize::from_le_bytes(self.buf[i..i + 8].try_into().unwrap_or_default());
        Some((word(at), word(at + 8)))
    }
}

/// Whether `fp` looks like a frame pointer: it points at a stack, not into a loaded image (a
/// register used for data often holds an image address), and its saved return address lies in
/// a loaded image's code.
fn plausible_frame(mem: &mut SafeReader, fp: usize) -> bool {
    fp != 0
        && fp.is_multiple_of(8)
        && !crate::modules::in_image(fp as u64)
        && mem.pair(fp).is_some_and(|(_, ret)| crate::modules::in_text(ret as u64))
}

/// A frame without unwind information that used the frame-pointer register for itself (a cgo
/// C wrapper compiled with -O2 and linked without .eh_frame, as Go's internal linker does)
/// leaves no chain to follow; it did save the caller's frame pointer in its own small frame.
/// Looks at the first words above `sp` for a value that is a plausible frame pointer.
fn scan_for_frame_pointer(mem: &mut SafeReader, sp: usize) -> usize {
    if sp == 0 {
        return 0;
    }
    let mut words = [0usize; 32];
    for i in (0..words.len()).step_by(2) {
        let Some((a, b)) = mem.pair(sp + i * 8) else { break };
        (words[i], words[i + 1]) = (a, b);
    }
    words.into_iter().find(|&v| plausible_frame(mem, v)).unwrap_or(0)
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
    // DWARF stopped. A last frame with unwind information is the true root (_start, clone3:
    // their CFI ends the stack): nothing to continue. Only a frame without any (Go code) goes
    // on by frame pointers.
    let mut bases = DwarfBases { tbase: null_mut(), dbase: null_mut(), func: null_mut() };
    let last = frames[n - 1] as usize;
    // SAFETY: _Unwind_Find_FDE only looks the address up; `bases` is a valid out-parameter.
    // The address is a return address, so its call instruction lies at `last - 1`.
    if !unsafe { _Unwind_Find_FDE((last - 1) as *mut c_void, &mut bases) }.is_null() {
        return n;
    }
    let mut mem = SafeReader::new();
    let mut fp = w.last_fp;
    if !plausible_frame(&mut mem, fp) {
        fp = scan_for_frame_pointer(&mut mem, w.cfa);
    }
    let mut backwards = 0;
    while n < frames.len() && fp != 0 && fp.is_multiple_of(8) {
        let Some((next, ret)) = mem.pair(fp) else { break };
        if ret < 4096 {
            break;
        }
        frames[n] = ret as u64;
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
