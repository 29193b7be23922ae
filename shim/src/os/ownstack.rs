//! The shim's own stacks: a fixed pool in .bss on which hooks do their recording, so that a hook
//! needs (almost) nothing of its caller's stack. A thread with a 16 KiB stack, or a signal handler
//! on the smallest alternate stack that works without vmshim, has no room for an unwinder's
//! window, an encoder's buffer or the start-up's reads (issue 11).
//!
//! The system-call hooks (`mmap`, `mmap64`, `munmap`, `mremap`, `mprotect`, `pthread_create`)
//! enter through [`hook_entry!`]: a few instructions that claim a stack with one `lock bts` on
//! the free mask, switch `rsp` to it and call the Rust hook there, writing nothing to the
//! caller's stack (its `call` already pushed the return address, as for glibc's own function).
//! The other hooks run their real call on the caller's stack (dlopen and the resolver run
//! program code: library constructors, NSS modules) and switch only for the recording, with
//! [`run`].
//!
//! Each stack's top holds where its user came from: the caller's stack pointer (pointing at
//! its return address) and frame pointer. The unwinder starts there ([`caller`]), never on the
//! shim stack; the switch code's CFI says the same to libgcc (the CFA is read from that slot).
//!
//! When every stack is taken, a hook runs the real call on the caller's stack and counts its
//! record as dropped: it never waits and never crashes. A signal handler that interrupts a hook
//! runs on the shim stack (unless it asked for its own with SA_ONSTACK): [`HEADROOM`] bytes are
//! left for it. The pool is .bss of this library's image, which the report files under
//! `vmshim`; no page of it is touched before a hook first uses that stack.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering::*};

/// Stacks in the pool: one bit each in [`TAKEN`]. As many as threads that may be inside a hook
/// at once before records are dropped (tests/robust.rs runs 64 threads that map at once).
pub const STACKS: usize = 64;
/// Bytes per stack (a power of two).
pub const STACK_BYTES: usize = 64 << 10;
const STACK_SHIFT: u32 = STACK_BYTES.trailing_zeros();
/// The most the recording work may take of a shim stack. Measured in a debug build (the pool's
/// lowest non-zero byte under gdb): 23,264 bytes after a dlopen (the module records), 15,568
/// for start-up in a fork child from a signal handler (libgcc unwinds through the signal
/// frame), 14,784 for that handler's mmap alone. The rest is the headroom.
pub const RECORDING_MAX: usize = 32 << 10;
/// What is left for a signal handler that interrupts a hook on a shim stack.
pub const HEADROOM: usize = STACK_BYTES - RECORDING_MAX;
/// The words at each stack's top: the caller's stack pointer, its frame pointer, the stack's
/// index, a pad (the call below it must find `rsp` 16-aligned).
const HEADER: usize = 32;

#[repr(C, align(4096))]
pub(crate) struct Pool(UnsafeCell<[[u8; STACK_BYTES]; STACKS]>);
// SAFETY: a stack is used only by the thread that set its bit in TAKEN, until it clears it.
unsafe impl Sync for Pool {}

#[doc(hidden)]
#[unsafe(link_section = ".sbss.vmshim")]
pub(crate) static POOL: Pool = Pool(UnsafeCell::new([[0; STACK_BYTES]; STACKS]));
/// Bit `i` set: stack `i` is in use. The bits past the pool are set for good, so that the
/// entry code finds a free stack with one `not` and `bsf`.
#[doc(hidden)]
#[unsafe(link_section = ".data.vmshim_hot")]
pub(crate) static TAKEN: AtomicU64 = AtomicU64::new(NOT_A_STACK);
const NOT_A_STACK: u64 = if STACKS == 64 { 0 } else { !(u64::MAX >> (64 - STACKS)) };

const _: () = assert!(STACKS <= 64 && STACK_BYTES.is_power_of_two() && HEADROOM >= 32 << 10);

fn base() -> usize {
    POOL.0.get() as usize
}

/// The top (one past the highest byte) of stack `i`.
fn top(i: usize) -> usize {
    base() + ((i + 1) << STACK_SHIFT)
}

/// Claims a free stack; None when all are taken.
fn claim() -> Option<usize> {
    loop {
        let free = !TAKEN.load(Relaxed);
        if free == 0 {
            return None;
        }
        let i = free.trailing_zeros() as usize;
        if TAKEN.fetch_or(1 << i, Acquire) & (1 << i) == 0 {
            return Some(i);
        }
    }
}

fn release(i: usize) {
    TAKEN.fetch_and(!(1 << i), Release);
}

#[inline(always)]
fn current_sp() -> usize {
    let sp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads the stack pointer.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "x86_64"))]
    {
        let here = 0u8;
        sp = &here as *const u8 as usize;
    }
    sp
}

/// The pool stack `sp` lies on.
fn stack_of(sp: usize) -> Option<usize> {
    let off = sp.checked_sub(base())?;
    let i = off >> STACK_SHIFT;
    (i < STACKS).then_some(i)
}

/// Where the current thread came from if it runs on a shim stack: the caller's stack pointer
/// (pointing at the return address of its call into the shim) and frame pointer.
#[inline(always)]
pub fn caller() -> Option<(usize, usize)> {
    let i = stack_of(current_sp())?;
    let t = top(i);
    // SAFETY: the header words of the stack this thread runs on, written when it switched here.
    let (sp, fp) = unsafe { (*((t - 8) as *const usize), *((t - 16) as *const usize)) };
    (sp != 0).then_some((sp, fp))
}

/// Runs `f` on a shim stack (on the current one if the thread is on a shim stack already).
/// Returns false, without running `f`, when every stack is taken.
#[inline(never)]
pub fn run<F: FnOnce()>(f: F) -> bool {
    if stack_of(current_sp()).is_some() {
        f();
        return true;
    }
    let Some(i) = claim() else { return false };
    let mut slot = Some(f);
    extern "C" fn call<F: FnOnce()>(p: *mut core::ffi::c_void) {
        // SAFETY: `p` is the `Option<F>` that run() passed, alive until vmshim_run_on returns.
        if let Some(f) = unsafe { &mut *(p as *mut Option<F>) }.take() {
            f();
        }
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: stack `i` is this thread's until released; run_on switches to it, calls `call`
    // with the slot, and switches back.
    unsafe {
        vmshim_run_on(&mut slot as *mut Option<F> as *mut core::ffi::c_void, call::<F>, top(i))
    };
    #[cfg(not(target_arch = "x86_64"))]
    call::<F>(&mut slot as *mut Option<F> as *mut core::ffi::c_void);
    release(i);
    true
}

/// Runs `f` where it has at least a shim stack's room: on the current stack when that is the
/// main thread's, less than [`MAIN_DEPTH`] deep and with RLIMIT_STACK leaving [`STACK_BYTES`]
/// more below (the kernel grows the main stack on demand), else as [`run`] does. The fork
/// handlers use it: a shim stack's pages are written by the parent and the child of every fork,
/// a copy-on-write fault each in both (issue 12: five of the faults a shell's fork paid). A
/// signal handler on an alternate stack, or a thread's stack, is never within the main stack's
/// range, so it goes to a shim stack as before. `stack_limit`: RLIMIT_STACK's soft value.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn run_roomy<F: FnOnce()>(stack_limit: u64, f: F) -> bool {
    unsafe extern "C" {
        static __libc_stack_end: *const core::ffi::c_void;
    }
    // SAFETY: glibc's loader sets __libc_stack_end once, before any constructor, to the main
    // stack's top as the process began; it is read here and never written.
    let top = unsafe { __libc_stack_end } as usize;
    let sp = current_sp();
    let depth = top.wrapping_sub(sp);
    if top != 0 && sp < top && depth < MAIN_DEPTH && (depth + STACK_BYTES) as u64 <= stack_limit {
        f();
        return true;
    }
    run(f)
}

/// How deep into the main stack [`run_roomy`] still runs on it (the range it takes for the main
/// stack: no other stack lies within it).
pub const MAIN_DEPTH: usize = 256 << 10;

/// In a fork child: the threads that held stacks are gone. Only a stack the forking thread runs
/// on (a signal handler that interrupted a hook and forked) stays taken.
#[unsafe(link_section = ".text.hot.vmshim")]
pub fn reset_after_fork() {
    let mine = stack_of(current_sp()).map_or(0, |i| 1u64 << i);
    TAKEN.store(mine | NOT_A_STACK, Release);
}

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    fn vmshim_run_on(arg: *mut core::ffi::c_void, f: extern "C" fn(*mut core::ffi::c_void), top: usize);
}

// vmshim_run_on(arg, f, top): writes the header below `top`, switches to it, calls f(arg), and
// switches back. While f runs, the CFA of this frame (the caller's stack pointer after the
// return) is read from the header: DW_CFA_def_cfa_expression(DW_OP_breg7 24, DW_OP_deref,
// DW_OP_plus_uconst 8), so libgcc unwinds from the shim stack into the caller's frames.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.vmshim_run_on,\"ax\",@progbits",
    ".p2align 4",
    ".globl vmshim_run_on",
    ".hidden vmshim_run_on",
    ".type vmshim_run_on,@function",
    "vmshim_run_on:",
    ".cfi_startproc",
    "mov qword ptr [rdx - 8], rsp",
    "mov qword ptr [rdx - 16], rbp",
    "mov qword ptr [rdx - 24], -1",
    "lea rsp, [rdx - {header}]",
    ".cfi_escape 0x0f, 0x05, 0x77, 0x18, 0x06, 0x23, 0x08",
    "call rsi",
    "mov rsp, qword ptr [rsp + 24]",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size vmshim_run_on, .-vmshim_run_on",
    ".popsection",
    header = const HEADER,
);

/// Defines the exported symbol `$export` as a naked function `$entry` that switches to a shim
/// stack and calls `$hook` (the Rust hook, same prototype) there; when no stack is free it jumps
/// to `$bare` (same prototype: the real call, its record dropped). The caller's stack gets
/// nothing beyond the return address its `call` pushed, as for glibc's own function. Registers:
/// only rax, r10 and r11 (scratch in the C ABI, never argument registers) before the call; rax
/// (the result) is left alone after it. x86_64 only, and never in the crate's tests (its
/// exports would hook the test harness); elsewhere `$hook` itself is exported.
macro_rules! hook_entry {
    ($export:literal, fn $entry:ident($($arg:ident: $ty:ty),*) -> $ret:ty, $hook:path, $bare:path) => {
        /// The exported entry: switches to a shim stack ([`crate::os::ownstack`]) and runs the hook there.
        ///
        /// # Safety
        /// As for the libc function of the same name.
        #[cfg(all(not(test), target_arch = "x86_64"))]
        #[unsafe(naked)]
        #[unsafe(export_name = $export)]
        pub unsafe extern "C" fn $entry($($arg: $ty),*) -> $ret {
            core::arch::naked_asm!(
                ".cfi_startproc",
                concat!(".Lvmshim_claim_", $export, ":"),
                "mov rax, qword ptr [rip + {taken}]",
                "not rax",
                // ZF: no bit clear, no stack free.
                "bsf rax, rax",
                concat!("jz .Lvmshim_full_", $export),
                "lock bts qword ptr [rip + {taken}], rax",
                concat!("jc .Lvmshim_claim_", $export),
                "mov r11, rax",
                "shl r11, {shift}",
                "lea r10, [rip + {pool}]",
                "lea r11, [r10 + r11 + {bytes}]",
                "mov qword ptr [r11 - 8], rsp",
                "mov qword ptr [r11 - 16], rbp",
                "mov qword ptr [r11 - 24], rax",
                "lea rsp, [r11 - {header}]",
                // The CFA is the caller's stack pointer (saved at rsp + 24) plus the return address.
                ".cfi_escape 0x0f, 0x05, 0x77, 0x18, 0x06, 0x23, 0x08",
                "call {hook}",
                "mov r10, qword ptr [rsp + 8]",
                "mov rsp, qword ptr [rsp + 24]",
                ".cfi_def_cfa rsp, 8",
                "lock btr qword ptr [rip + {taken}], r10",
                "ret",
                concat!(".Lvmshim_full_", $export, ":"),
                "jmp {bare}",
                ".cfi_endproc",
                taken = sym $crate::os::ownstack::TAKEN,
                pool = sym $crate::os::ownstack::POOL,
                shift = const $crate::os::ownstack::SHIFT,
                bytes = const $crate::os::ownstack::STACK_BYTES,
                header = const $crate::os::ownstack::HEADER_BYTES,
                hook = sym $hook,
                bare = sym $bare,
            )
        }
    };
}
pub(crate) use hook_entry;

#[doc(hidden)]
pub const SHIFT: u32 = STACK_SHIFT;
#[doc(hidden)]
pub const HEADER_BYTES: usize = HEADER;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_switches_stacks_names_the_caller_and_refuses_when_the_pool_is_full() {
        let outer = current_sp();
        let mut seen = (0usize, None);
        assert!(run(|| {
            seen = (current_sp(), caller());
        }));
        let (inner, from) = seen;
        assert!(stack_of(inner).is_some(), "ran on a pool stack");
        let (sp, _fp) = from.expect("the header is set");
        assert!(sp < outer && outer - sp < 4096, "the caller's sp {sp:#x} is just below {outer:#x}");
        assert_eq!(caller(), None, "back on the thread's own stack");

        // Take every free stack, then ask for one more.
        let mut mine = vec![];
        while let Some(i) = claim() {
            mine.push(i);
        }
        let mut ran = false;
        assert!(!run(|| ran = true));
        assert!(!ran, "nothing runs when no stack is free");
        for i in mine {
            release(i);
        }
    }
}
