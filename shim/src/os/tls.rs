//! Per-thread state for the hooks, in initial-exec TLS. Rust's `thread_local!` in a shared
//! library goes through `__tls_get_addr` on every access; the malloc hooks read their state
//! twice per malloc/free pair, and that call alone cost more than glibc's tcache fast path
//! (1.9x on a malloc(32)/free loop). The shim is loaded at start-up (LD_PRELOAD), so its TLS
//! is in the static TLS block and the initial-exec model applies: one `fs`-relative load.
//!
//! The block is fourteen words: the reentrancy flag (the guard's), the malloc hooks'
//! `SEEN_HEAP` and `SEEN_FOREIGN`, the stack range the unwinder has found readable, the
//! thread's id, a second readable range with the generation it was found in, and what the
//! thread noted as it called fork. Zero at thread start. The slots are named here, at the
//! bottom, and their users above name them; this module knows none of its users.

#[derive(Clone, Copy)]
#[repr(usize)]
pub enum Slot {
    InHook = 0,
    SeenHeap = 1,
    SeenForeign = 2,
    /// The current thread's stack range known readable, for the unwinder.
    StackLo = 3,
    StackHi = 4,
    /// The thread's id, once asked (`syscall::gettid`); cleared in a fork child.
    Tid = 5,
    /// A second range known readable (a Go goroutine stack), and the unwinder's shrink
    /// generation (bumped by each hooked call that may take memory away) it was found in.
    AltLo = 6,
    AltHi = 7,
    AltGen = 8,
    /// Written by the fork prepare handler in the forking thread, read in the child (whose one
    /// thread has a copy of this block): the forking thread's id, the fork's monotonic time,
    /// and 1 + the index of the note holding the forking call's stack (0: none).
    ForkTid = 9,
    ForkNs = 10,
    ForkNote = 11,
    /// The forking process's pid: the child's parent, whatever getppid says by the time the
    /// child asks (a daemon's intermediate child may be gone already).
    ForkPid = 12,
    /// The fork's real (wall-clock) time, beside ForkNs.
    ForkRealNs = 13,
}

/// Words in the block.
const WORDS: usize = 14;

const _: () = assert!(WORDS * 8 == 112, "the block's size in the assembly below");

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    // Global (but hidden) so that code in any codegen unit of the crate links to it.
    ".globl vmshim_tls_block",
    ".hidden vmshim_tls_block",
    ".type vmshim_tls_block, @object",
    ".size vmshim_tls_block, 112",
    "vmshim_tls_block:",
    ".zero 112",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block() -> *mut usize {
    let p: *mut usize;
    // SAFETY: reads the thread pointer (fs:0 holds its own address on x86_64 glibc) and adds
    // the block's static TLS offset, which the loader filled in the GOT (R_X86_64_TPOFF64).
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr fs:0",
            "add {p}, qword ptr [rip + vmshim_tls_block@GOTTPOFF]",
            p = out(reg) p,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    p
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn block() -> *mut usize {
    thread_local! {
        static BLOCK: [core::cell::Cell<usize>; WORDS] = const { [const { core::cell::Cell::new(0) }; WORDS] };
    }
    BLOCK.with(|b| b.as_ptr() as *mut usize)
}

#[inline(always)]
pub fn get(s: Slot) -> usize {
    // SAFETY: the block is this thread's own, WORDS words long, and only this thread touches it.
    unsafe { *block().add(s as usize) }
}

#[inline(always)]
pub fn set(s: Slot, v: usize) {
    // SAFETY: as in get().
    unsafe { *block().add(s as usize) = v }
}
